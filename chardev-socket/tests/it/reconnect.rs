//! `reconnect-ms` clients while nobody listens: the loop thread stays idle between attempts
//! (no busy loop), the client keeps trying and connects once a server appears, and the
//! deprecated `reconnect=S` counts seconds.

use std::net::TcpListener;
use std::os::unix::net::UnixListener;
use std::sync::mpsc::{channel, RecvTimeoutError};
use std::time::{Duration, Instant};

use chardev::{Event, EventLoop, LoopHandle, Registry};
use chardev_testkit::*;

/// How long the loop is watched while nobody listens.
const WINDOW: Duration = Duration::from_secs(2);
/// The most of the loop thread's time the retries may use: 5% of the window.
const MAX_CPU: Duration = Duration::from_millis(100);

/// An event loop on a thread whose CPU time the test can read.
struct MeasuredLoop {
    handle: LoopHandle,
    tid: i32,
    join: Option<std::thread::JoinHandle<()>>,
}

impl MeasuredLoop {
    fn start() -> MeasuredLoop {
        let mut lp = EventLoop::new().unwrap();
        let handle = lp.handle();
        let (tx, rx) = channel();
        let join = std::thread::spawn(move || {
            tx.send(nix::unistd::gettid().as_raw()).unwrap();
            lp.run().unwrap();
        });
        let tid = rx.recv_timeout(DEADLINE).unwrap();
        MeasuredLoop { handle, tid, join: Some(join) }
    }

    /// User plus system CPU time the loop thread has used so far.
    fn cpu(&self) -> Duration {
        let stat = std::fs::read_to_string(format!("/proc/self/task/{}/stat", self.tid)).unwrap();
        // Fields after "(comm)": state is field 3, utime 14 and stime 15, in clock ticks.
        let fields: Vec<&str> = stat.rsplit_once(')').unwrap().1.split_whitespace().collect();
        let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
        let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK).unwrap().unwrap() as u64;
        Duration::from_millis(ticks * 1000 / hz)
    }
}

impl Drop for MeasuredLoop {
    fn drop(&mut self) {
        self.handle.stop();
        if let Some(join) = self.join.take() {
            let _ = join.join();
        }
    }
}

/// Waits for the frontend's next event for at most `wait`, failing on data or a timeout.
fn event_within(rec: &Record, wait: Duration) -> Event {
    match rec.rx.recv_timeout(wait) {
        Ok(Seen::Event(e)) => e,
        Ok(Seen::Data(d, _)) => panic!("expected an event, got data {d:?}"),
        Err(RecvTimeoutError::Timeout) => panic!("no event within {wait:?}"),
        Err(RecvTimeoutError::Disconnected) => panic!("frontend dropped"),
    }
}

/// Adds the client `spec`, watches the loop for [`WINDOW`] while nobody listens, then calls
/// `listen` and expects the client to connect within reconnect-ms (plus the deadline).
fn retries_cheaply_then_connects<L>(spec: &str, reconnect: Duration, listen: impl FnOnce() -> L) {
    let lp = MeasuredLoop::start();
    let reg = Registry::new(&lp.handle);
    chardev_socket::register(&reg);
    reg.add_str(spec).unwrap();
    let h = reg.connect("c").unwrap();
    let rec = record(&h, 64);
    settle(&lp.handle);

    let before = lp.cpu();
    rec.quiet(WINDOW); // nothing opens while nobody listens; meanwhile the loop is measured
    let used = lp.cpu() - before;
    assert!(used < MAX_CPU, "the loop thread used {used:?} of {WINDOW:?} retrying: busy loop?");

    let _server = listen();
    assert_eq!(event_within(&rec, reconnect + DEADLINE), Event::Opened);
    assert!(h.is_open());
}

#[test]
fn a_unix_client_retries_without_spinning_and_connects_when_the_server_appears() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("later.sock");
    retries_cheaply_then_connects(
        &format!("socket,id=c,path={},reconnect-ms=100", path.display()),
        Duration::from_millis(100),
        || UnixListener::bind(&path).unwrap(),
    );
}

#[test]
fn a_tcp_client_retries_without_spinning_and_connects_when_the_server_appears() {
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    retries_cheaply_then_connects(
        &format!("socket,id=c,host=127.0.0.1,port={port},reconnect-ms=100"),
        Duration::from_millis(100),
        || TcpListener::bind(("127.0.0.1", port)).expect("the test's port was taken meanwhile"),
    );
}

#[test]
fn the_deprecated_reconnect_counts_seconds() {
    let lp = MeasuredLoop::start();
    let reg = Registry::new(&lp.handle);
    chardev_socket::register(&reg);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("slow.sock");
    let created = Instant::now();
    reg.add_str(&format!("socket,id=c,path={},reconnect=1", path.display())).unwrap();
    let h = reg.connect("c").unwrap();
    let rec = record(&h, 64);
    settle(&lp.handle); // the first attempt has failed: the next one is due a second later
    let listening = Instant::now();
    let _server = UnixListener::bind(&path).unwrap();
    assert_eq!(event_within(&rec, Duration::from_secs(1) + DEADLINE), Event::Opened);
    let opened = Instant::now();
    assert!(
        opened - created >= Duration::from_secs(1),
        "connected {:?} after creation: reconnect=1 is not 1000 ms",
        opened - created
    );
    assert!(
        opened - listening < Duration::from_secs(3),
        "connected {:?} after the server appeared: reconnect=1 is not 1000 ms",
        opened - listening
    );
}

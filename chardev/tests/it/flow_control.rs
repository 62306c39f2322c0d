//! Flow control: a frontend that takes one byte at a time gets every byte, in order, then
//! exactly one Closed; while it takes nothing the loop does not spin.

use std::io::Write;
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicUsize, Ordering};
use std::sync::mpsc::{channel, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chardev::{Event, EventLoop, Frontend, Registry};
use chardev_testkit::DEADLINE;

/// Bytes moved at `CHARDEV_SOAK=1`.
const MIB_64: usize = 64 << 20;

fn pattern(i: usize) -> u8 {
    (i % 251) as u8 ^ (i >> 16) as u8
}

/// Takes one byte per `can_receive` while `open`, checks the pattern as it goes.
///
/// It runs once per byte on the loop thread, so it costs no syscall and no allocation per
/// byte: the loop thread's id is taken once, the pattern is kept incrementally.
struct OneByte {
    open: Arc<AtomicBool>,
    tid: Arc<AtomicI32>,
    /// Bytes taken so far, for the test thread to watch progress.
    progress: Arc<AtomicUsize>,
    got: usize,
    /// `got % 251`, kept without a division per byte.
    mod_251: u8,
    bad_at: Option<usize>,
    tx: Sender<(Event, usize, Option<usize>)>,
}

impl Frontend for OneByte {
    fn can_receive(&mut self) -> usize {
        if self.tid.load(Ordering::Relaxed) == 0 {
            self.tid.store(nix::unistd::gettid().as_raw(), Ordering::Relaxed);
        }
        usize::from(self.open.load(Ordering::Acquire))
    }
    fn receive(&mut self, data: &[u8], _fds: Vec<OwnedFd>) {
        assert!(data.len() <= 1, "frontend got {} bytes after can_receive() == 1", data.len());
        for &b in data {
            if b != self.mod_251 ^ (self.got >> 16) as u8 && self.bad_at.is_none() {
                self.bad_at = Some(self.got);
            }
            self.got += 1;
            self.mod_251 = if self.mod_251 == 250 { 0 } else { self.mod_251 + 1 };
        }
        self.progress.store(self.got, Ordering::Relaxed);
    }
    fn event(&mut self, event: Event) {
        let _ = self.tx.send((event, self.got, self.bad_at));
    }
}

/// CPU time (user + system) of one thread of this process.
fn thread_cpu(tid: i32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/self/task/{tid}/stat")).expect("thread stat");
    // Fields after the command name, which is in parentheses and may contain spaces.
    let rest = &stat[stat.rfind(')').expect("stat format") + 2..];
    let fields: Vec<&str> = rest.split(' ').collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK).unwrap().unwrap() as u64;
    Duration::from_millis(ticks * 1000 / hz)
}

#[test]
fn one_byte_frontend_gets_64_mib_in_order_then_one_closed_and_loop_idles_while_stalled() {
    let total = MIB_64 * chardev_testkit::soak_scale();
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("in.fifo");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();

    let lp = EventLoop::spawn().unwrap();
    let reg = Registry::new(lp.handle());
    reg.add_str(&format!(
        "file,id=in,path={},input-path={}",
        dir.path().join("out").display(),
        fifo.display()
    ))
    .unwrap();
    let h = reg.connect("in").unwrap();
    let open = Arc::new(AtomicBool::new(false));
    let tid = Arc::new(AtomicI32::new(0));
    let progress = Arc::new(AtomicUsize::new(0));
    let (tx, rx) = channel();
    h.set_frontend(OneByte {
        open: Arc::clone(&open),
        tid: Arc::clone(&tid),
        progress: Arc::clone(&progress),
        got: 0,
        mod_251: 0,
        bad_at: None,
        tx,
    });
    assert_eq!(rx.recv_timeout(DEADLINE).unwrap().0, Event::Opened);

    // The peer: writes everything, then closes. It blocks while the fifo is full. It makes
    // the stream a MiB at a time, so a long soak does not hold it all in memory.
    let writer = std::thread::spawn({
        let fifo = fifo.clone();
        move || {
            let mut f = std::fs::OpenOptions::new().write(true).open(&fifo).unwrap();
            let mut chunk = vec![0u8; 1 << 20];
            for at in (0..total).step_by(chunk.len()) {
                let n = chunk.len().min(total - at);
                chunk[..n].iter_mut().enumerate().for_each(|(j, b)| *b = pattern(at + j));
                f.write_all(&chunk[..n]).unwrap();
            }
        }
    });

    // Stalled: the fifo fills up and the frontend takes nothing. The loop must sleep.
    chardev_testkit::wait_until("the loop to ask the frontend", || {
        tid.load(Ordering::Relaxed) != 0
    });
    let loop_tid = tid.load(Ordering::Relaxed);
    let (cpu0, wall0) = (thread_cpu(loop_tid), Instant::now());
    std::thread::sleep(Duration::from_millis(1500)); // a measuring window, not a synchronisation
    let (cpu, wall) = (thread_cpu(loop_tid) - cpu0, wall0.elapsed());
    eprintln!("loop thread while stalled: {cpu:?} of CPU in {wall:.2?}");
    assert!(cpu * 20 < wall, "loop thread used {cpu:?} of CPU in {wall:?} while stalled");

    open.store(true, Ordering::Release);
    let start = Instant::now();
    h.accept_input();
    // However long the whole run takes (it scales with CHARDEV_SOAK), it may not stop
    // making progress for longer than the deadline.
    let mut last = 0;
    let (event, got, bad_at) = loop {
        match rx.recv_timeout(DEADLINE) {
            Ok(seen) => break seen,
            Err(RecvTimeoutError::Timeout) => {
                let now = progress.load(Ordering::Relaxed);
                assert!(now > last, "no byte delivered in {DEADLINE:?}, stuck at {now} of {total}");
                last = now;
            }
            Err(RecvTimeoutError::Disconnected) => panic!("frontend dropped"),
        }
    };
    let took = start.elapsed();
    eprintln!(
        "{got} bytes one at a time in {took:.1?} ({:.2} MB/s), first bad byte {bad_at:?}",
        got as f64 / took.as_secs_f64() / 1e6
    );
    assert_eq!(event, Event::Closed);
    assert_eq!(got, total, "bytes delivered before Closed");
    assert_eq!(bad_at, None, "first out-of-order byte");
    writer.join().unwrap();
    assert!(rx.recv_timeout(Duration::from_millis(200)).is_err(), "a second event after Closed");
}

//! pty chardevs against real terminal programs (pyserial, picocom driven by pexpect, and
//! the test's own terminal on the slave): what a terminal sees of output written before it
//! came, `Opened` and `Closed`, a MiB each way, and what an idle pty costs.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc::{channel, Sender};
use std::time::{Duration, Instant};

use chardev::{Event, EventLoop, Frontend, FrontendHandle, LoopHandle, LoopThread, Registry};
use chardev_pty::pty::{Pty, Watch};
use chardev_testkit::*;

const MIB: usize = 1 << 20;

fn setup() -> (LoopThread, Registry, tempfile::TempDir) {
    let lp = EventLoop::spawn().unwrap();
    let reg = Registry::new(lp.handle());
    chardev_pty::register(&reg);
    (lp, reg, tempfile::tempdir().unwrap())
}

/// Adds a pty chardev; returns its slave.
fn add_pty(reg: &Registry, spec: &str) -> PathBuf {
    reg.add_str(spec).unwrap().pty.expect("a pty reports its slave")
}

fn filename(reg: &Registry, id: &str) -> String {
    reg.query().into_iter().find(|c| c.label == id).unwrap().filename
}

fn pattern(seed: u8, len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8 ^ (i >> 12) as u8 ^ seed).collect()
}

/// The test's own terminal on a pty's slave, opened as terminal programs open it.
struct Term {
    file: File,
}

impl Term {
    fn open(slave: &Path) -> Term {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(nix::libc::O_NOCTTY)
            .open(slave)
            .unwrap_or_else(|e| panic!("open {}: {e}", slave.display()));
        Term { file }
    }

    /// Exactly `n` bytes, each read waiting at most the deadline.
    fn read_exact(&mut self, n: usize) -> Vec<u8> {
        let mut got = Vec::with_capacity(n);
        let mut buf = [0u8; 4096];
        while got.len() < n {
            let ready = chardev::fd::wait_readable(self.file.as_fd(), Some(DEADLINE)).unwrap();
            assert!(ready, "the terminal got {} of {n} bytes within {DEADLINE:?}", got.len());
            let want = (n - got.len()).min(buf.len());
            let k = self.file.read(&mut buf[..want]).unwrap();
            assert!(k > 0, "the pty hung up after {} of {n} bytes", got.len());
            got.extend_from_slice(&buf[..k]);
        }
        got
    }
}

/// Runs a Python peer from `tests/peers` (in the virtualenv `scripts/test` made).
fn peer(script: &str, args: &[&str]) -> Child {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/peers").join(script);
    python()
        .arg(path)
        .args(args)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("run {script}: {e}"))
}

/// Waits for a child to exit, at most the deadline; it must succeed.
fn finish(child: Child) -> Output {
    let out = wait_output(child, "the peer");
    assert!(out.status.success(), "peer failed: {:?}", out.status);
    out
}

/// Runs `pyserial_client.py` on `path` to its end: it opens the port (flushing the pty's
/// input, as pyserial does), reads `expect` bytes, answers "ack", and closes when the guest
/// says "bye". Returns what it read.
fn pyserial_reads(h: &FrontendHandle, rec: &Record, path: &Path, expect: usize) -> Vec<u8> {
    let client = peer("pyserial_client.py", &[path.to_str().unwrap(), &expect.to_string(), "ack"]);
    rec.expect_event(Event::Opened);
    assert_eq!(rec.data(3), b"ack");
    h.write_all(b"bye").unwrap();
    rec.expect_event(Event::Closed);
    finish(client).stdout
}

/// The id of the thread running `lp`.
fn loop_tid(lp: &LoopHandle) -> i32 {
    let (tx, rx) = channel();
    lp.run_on_loop(move || {
        let _ = tx.send(nix::unistd::gettid().as_raw());
    });
    rx.recv_timeout(DEADLINE).unwrap()
}

/// CPU time of one thread of this process, to the nanosecond.
fn thread_cpu(tid: i32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/self/task/{tid}/schedstat")).unwrap();
    Duration::from_nanos(stat.split_whitespace().next().unwrap().parse().unwrap())
}

#[test]
fn a_pty_reports_its_slave_and_waits_for_a_terminal() {
    let (lp, reg, _dir) = setup();
    let slave = add_pty(&reg, "pty,id=p0");
    assert!(slave.starts_with("/dev/pts/"), "{}", slave.display());
    assert!(std::fs::metadata(&slave).unwrap().file_type().is_char_device());
    assert_eq!(filename(&reg, "p0"), format!("pty:{}", slave.display()));
    let h = reg.connect("p0").unwrap();
    let rec = record(&h, 4096);
    // Nobody is attached: no Opened, and output is taken at once, without blocking.
    h.write_all(&pattern(0, 3 * MIB)).unwrap();
    assert_eq!(h.write(b"more").unwrap(), 4);
    settle(lp.handle());
    rec.nothing_yet();
    assert!(!h.is_open());
    // Ptys are not serial lines.
    assert!(matches!(h.send_break(), Err(chardev::Error::Unsupported { .. })));
    assert!(matches!(h.modem_lines(), Err(chardev::Error::Unsupported { .. })));
}

#[test]
#[ignore = "the child process of a_pty_tells_the_embedder_its_slave_and_label_and_prints_nothing"]
fn banner_child() {
    if std::env::var_os("CHARDEV_PTY_BANNER_CHILD").is_none() {
        return;
    }
    let (_lp, reg, _dir) = setup();
    let (tx, notices) = channel();
    let tx = std::sync::Mutex::new(tx);
    reg.on_build_notice(move |notice| {
        let _ = chardev::sync::lock(&tx).send(format!("{notice:?}"));
    });
    let slave = add_pty(&reg, "pty,id=console7");
    println!("the slave is {}", slave.display());
    for notice in notices.try_iter() {
        println!("notice {notice}");
    }
}

/// QEMU prints `char device redirected to /dev/pts/N (label ID)`; the library tells the
/// embedder instead (`BuildNotice::PtyOpened`, which the demos print as QEMU does) and
/// prints nothing itself. Run in a child, to see its whole stdout.
#[test]
fn a_pty_tells_the_embedder_its_slave_and_label_and_prints_nothing() {
    let child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "pty::banner_child", "--ignored", "--nocapture", "--test-threads=1"])
        .env("CHARDEV_PTY_BANNER_CHILD", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let out = wait_output(child, "the banner child");
    assert!(out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    // The test harness's "test pty::banner_child ... " may come first on the line.
    let slave = stdout
        .lines()
        .find_map(|l| l.split_once("the slave is ").map(|(_, slave)| slave))
        .unwrap_or_else(|| panic!("no slave in {stdout:?}"));
    let notice = format!("notice PtyOpened {{ id: \"console7\", path: {slave:?} }}\n");
    assert!(stdout.contains(&notice), "{notice:?} not in {stdout:?}");
    assert!(!stdout.contains("char device redirected"), "the library printed: {stdout:?}");
}

#[test]
fn pyserial_gets_what_was_written_before_it_came_then_talks_both_ways() {
    require_python_module("serial", "pyserial");
    let (_lp, reg, dir) = setup();
    let link = dir.path().join("ttyGuest");
    add_pty(&reg, &format!("pty,id=ps,path={}", link.display()));
    let h = reg.connect("ps").unwrap();
    let rec = record(&h, 4096);
    let early: Vec<u8> =
        (0..200).flat_map(|i| format!("boot log line {i}\r\n").into_bytes()).collect();
    h.write_all(&early).unwrap();

    // pyserial opens the symlink, and flushes the pty's input as it does.
    let live = b"written after you came\r\n";
    let expect = (early.len() + live.len()).to_string();
    let client = peer("pyserial_client.py", &[link.to_str().unwrap(), &expect, "ping\n"]);
    rec.expect_event(Event::Opened);
    h.write_all(live).unwrap();
    assert_eq!(rec.data(5), b"ping\n");
    h.write_all(b"bye").unwrap();
    rec.expect_event(Event::Closed);
    let out = finish(client);
    assert_eq!(out.stdout, [&early[..], live].concat(), "what pyserial read");
}

/// A guest that answers each line typed at it with `echo: LINE`.
struct LineEcho {
    handle: FrontendHandle,
    line: Vec<u8>,
    events: Sender<Event>,
}

impl Frontend for LineEcho {
    fn can_receive(&mut self) -> usize {
        4096
    }
    fn receive(&mut self, data: &[u8], _fds: Vec<OwnedFd>) {
        for &b in data {
            if b == b'\r' {
                let reply = format!("\r\necho: {}\r\n", String::from_utf8_lossy(&self.line));
                self.handle.write_all_blocking(reply.as_bytes()).unwrap();
                self.line.clear();
            } else {
                self.line.push(b);
            }
        }
    }
    fn event(&mut self, event: Event) {
        let _ = self.events.send(event);
    }
}

#[test]
fn picocom_through_pexpect_sees_earlier_output_and_types_to_the_guest() {
    require_python_module("pexpect", "pexpect");
    require_program("picocom", "picocom");
    let (_lp, reg, _dir) = setup();
    let slave = add_pty(&reg, "pty,id=pc");
    let h = reg.connect("pc").unwrap();
    let (tx, events) = channel();
    h.set_frontend(LineEcho { handle: h.clone(), line: Vec::new(), events: tx });
    h.write_all(b"Welcome to the guest, written before picocom started\r\n").unwrap();
    let session = peer(
        "picocom_session.py",
        &[slave.to_str().unwrap(), "before picocom started", "hello from picocom"],
    );
    assert_eq!(events.recv_timeout(DEADLINE).unwrap(), Event::Opened);
    let out = finish(session);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "picocom session ok\n");
    assert_eq!(events.recv_timeout(DEADLINE).unwrap(), Event::Closed);
}

#[test]
fn a_terminal_that_takes_its_time_to_set_up_still_gets_the_earlier_output() {
    let (_lp, reg, _dir) = setup();
    let slave = add_pty(&reg, "pty,id=slow");
    let h = reg.connect("slow").unwrap();
    let rec = record(&h, 4096);
    h.write_all(b"written before the terminal came").unwrap();
    // It opens the slave, and only 50 ms later discards the pty's input as it makes the
    // line raw: output handed over at the open would be lost (QEMU's first second).
    let client = peer("slow_setup_client.py", &[slave.to_str().unwrap(), "32", "50"]);
    rec.expect_event(Event::Opened);
    assert_eq!(finish(client).stdout, b"written before the terminal came");
    rec.expect_event(Event::Closed);
}

#[test]
fn a_terminal_that_never_flushes_gets_the_earlier_output_too() {
    let (_lp, reg, _dir) = setup();
    let slave = add_pty(&reg, "pty,id=cat");
    let h = reg.connect("cat").unwrap();
    let rec = record(&h, 4096);
    h.write_all(b"for whoever comes, ").unwrap();
    // Like `cat /dev/pts/N`: no flush, no keystroke; the output follows all the same.
    let mut term = Term::open(&slave);
    rec.expect_event(Event::Opened);
    h.write_all(b"then live").unwrap();
    assert_eq!(term.read_exact(28), b"for whoever comes, then live");
}

#[test]
fn the_backlog_keeps_the_newest_output_up_to_its_size() {
    require_python_module("serial", "pyserial");
    let (_lp, reg, _dir) = setup();
    let slave = add_pty(&reg, "pty,id=bl,backlog=4K");
    let h = reg.connect("bl").unwrap();
    let rec = record(&h, 4096);
    let written = pattern(7, 10_000);
    h.write_all(&written).unwrap();
    let got = pyserial_reads(&h, &rec, &slave, 4096);
    assert!(got == written[written.len() - 4096..], "not the newest 4096 bytes, in order");
}

#[test]
fn backlog_0_drops_output_while_nobody_is_attached_as_qemu_does() {
    require_python_module("serial", "pyserial");
    let (_lp, reg, _dir) = setup();
    let slave = add_pty(&reg, "pty,id=b0,backlog=0");
    let h = reg.connect("b0").unwrap();
    let rec = record(&h, 4096);
    h.write_all(b"nobody sees this").unwrap();
    let client = peer("pyserial_client.py", &[slave.to_str().unwrap(), "4", "ack"]);
    rec.expect_event(Event::Opened);
    // Without a backlog, output goes straight to the terminal, and pyserial's flush at open
    // may throw it away (QEMU's behaviour): write until pyserial has some.
    let (stop, stopped) = channel::<()>();
    let writer = {
        let h = h.clone();
        std::thread::spawn(move || {
            while stopped.recv_timeout(Duration::from_millis(20))
                == Err(std::sync::mpsc::RecvTimeoutError::Timeout)
            {
                h.write_all(b"late").unwrap();
            }
        })
    };
    assert_eq!(rec.data(3), b"ack");
    drop(stop);
    writer.join().unwrap();
    h.write_all(b"bye").unwrap();
    rec.expect_event(Event::Closed);
    assert_eq!(finish(client).stdout, b"late");
}

#[test]
fn output_a_terminal_left_unread_goes_to_the_next_one() {
    require_python_module("serial", "pyserial");
    let (_lp, reg, _dir) = setup();
    let slave = add_pty(&reg, "pty,id=un");
    let h = reg.connect("un").unwrap();
    let rec = record(&h, 4096);
    let first = Term::open(&slave);
    rec.expect_event(Event::Opened);
    h.write_all(b"unread by the first terminal\r\n").unwrap();
    // It reaches the terminal's input queue; the terminal goes away without reading it.
    assert!(chardev::fd::wait_readable(first.file.as_fd(), Some(DEADLINE)).unwrap());
    drop(first);
    rec.expect_event(Event::Closed);
    // pyserial flushes the input as it opens: the bytes must have been taken back.
    assert_eq!(pyserial_reads(&h, &rec, &slave, 30), b"unread by the first terminal\r\n");
}

#[test]
fn opened_when_the_first_terminal_comes_closed_when_the_last_goes_once_each() {
    let (lp, reg, _dir) = setup();
    let slave = add_pty(&reg, "pty,id=oc");
    let h = reg.connect("oc").unwrap();
    let rec = record(&h, 4096);
    let a = Term::open(&slave);
    rec.expect_event(Event::Opened);
    assert!(h.is_open());
    let b = Term::open(&slave);
    settle(lp.handle());
    rec.nothing_yet();
    drop(a);
    settle(lp.handle());
    rec.nothing_yet();
    drop(b);
    rec.expect_event(Event::Closed);
    assert!(!h.is_open());
    // A program that opens and closes the slave in a blink (stty -F) is seen too.
    drop(Term::open(&slave));
    rec.expect_event(Event::Opened);
    rec.expect_event(Event::Closed);
    // Input typed just before the last close comes before Closed, even when the guest
    // only takes it after the close.
    let mut c = Term::open(&slave);
    rec.expect_event(Event::Opened);
    rec.room.store(0, std::sync::atomic::Ordering::SeqCst);
    c.file.write_all(b"last words").unwrap();
    drop(c);
    settle(lp.handle());
    rec.room.store(4096, std::sync::atomic::Ordering::SeqCst);
    h.accept_input();
    assert_eq!(rec.data(10), b"last words");
    rec.expect_event(Event::Closed);
    settle(lp.handle());
    rec.nothing_yet();
}

/// inotify merges two identical events queued one after the other: two terminals that close
/// while the loop is busy make one `IN_CLOSE_WRITE`. The last terminal must still be seen to
/// go (and the next to come), not counted as staying for good.
#[test]
fn two_terminals_that_close_within_one_loop_turn_are_both_seen_to_go() {
    let (lp, reg, _dir) = setup();
    let slave = add_pty(&reg, "pty,id=two");
    let h = reg.connect("two").unwrap();
    let rec = record(&h, 4096);
    let a = Term::open(&slave);
    rec.expect_event(Event::Opened);
    let b = Term::open(&slave);
    settle(lp.handle());
    rec.nothing_yet();
    // Both close while the loop is held: their events queue unread and merge.
    let release = hold_loop(lp.handle());
    drop(a);
    drop(b);
    drop(release);
    rec.expect_event(Event::Closed);
    assert!(!h.is_open());
    // The count is right again: the next terminal comes and goes.
    drop(Term::open(&slave));
    rec.expect_event(Event::Opened);
    rec.expect_event(Event::Closed);
    settle(lp.handle());
    rec.nothing_yet();
}

#[test]
fn a_mib_each_way_with_slow_readers_loses_nothing() {
    let (_lp, reg, _dir) = setup();
    let slave = add_pty(&reg, "pty,id=big");
    let h = reg.connect("big").unwrap();
    // A slow guest: 512 bytes at a time.
    let rec = record(&h, 512);
    let mut term = Term::open(&slave);
    rec.expect_event(Event::Opened);

    let to_term = pattern(1, MIB);
    let to_guest = pattern(2, MIB);
    let guest = {
        let (h, data) = (h.clone(), to_term.clone());
        std::thread::spawn(move || data.chunks(3000).for_each(|c| h.write_all(c).unwrap()))
    };
    let typist = {
        let (mut file, data) = (term.file.try_clone().unwrap(), to_guest.clone());
        std::thread::spawn(move || file.write_all(&data).unwrap())
    };
    // A slow terminal: small reads, and a pause every 64 KiB.
    let reader = std::thread::spawn(move || {
        let mut got = Vec::with_capacity(MIB);
        while got.len() < MIB {
            got.extend(term.read_exact((MIB - got.len()).min(512)));
            if got.len() % (64 << 10) == 0 {
                std::thread::sleep(Duration::from_millis(5)); // load shaping, not a wait
            }
        }
        got
    });
    let got = rec.data(MIB);
    assert!(got == to_guest, "terminal -> guest differs");
    assert!(reader.join().unwrap() == to_term, "guest -> terminal differs");
    guest.join().unwrap();
    typist.join().unwrap();
}

/// How many times a thread of this process went to sleep (each wake-up ends one).
fn thread_sleeps(tid: i32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/self/task/{tid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("voluntary_ctxt_switches:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// CPU time (user + system) of the whole process so far, every thread of it.
fn process_cpu() -> Duration {
    use nix::sys::resource::{getrusage, UsageWho};
    let usage = getrusage(UsageWho::RUSAGE_SELF).unwrap();
    let micros = |t: nix::sys::time::TimeVal| {
        Duration::from_secs(t.tv_sec() as u64) + Duration::from_micros(t.tv_usec() as u64)
    };
    micros(usage.user_time()) + micros(usage.system_time())
}

/// What an idle pty cost over the measuring window.
struct Idle {
    /// Wake-ups of the loop thread.
    wakeups: u64,
    /// CPU time of the whole process (meaningful when the process runs nothing else).
    process_cpu: Duration,
    /// The window's length.
    wall: Duration,
}

/// Measures an idle pty: the loop thread's CPU and wake-ups, and the whole process's CPU,
/// over `window` with nobody attached, then how long a terminal opening the slave waits for
/// `Opened`.
fn idle_cpu_and_open_latency(
    lp: &LoopThread,
    reg: &Registry,
    id: &str,
    slave: &Path,
    window: Duration,
) -> Idle {
    let h = reg.connect(id).unwrap();
    let rec = record(&h, 4096);
    settle(lp.handle());
    let tid = loop_tid(lp.handle());
    let (cpu0, sleeps0, process0, wall0) =
        (thread_cpu(tid), thread_sleeps(tid), process_cpu(), Instant::now());
    std::thread::sleep(window); // a measuring window, not a synchronisation
    let (cpu, process_cpu, wall) =
        (thread_cpu(tid) - cpu0, process_cpu() - process0, wall0.elapsed());
    let wakeups = thread_sleeps(tid) - sleeps0;
    let share = cpu.as_secs_f64() / wall.as_secs_f64() * 100.0;
    eprintln!(
        "{id}: idle loop thread: {cpu:?} of CPU in {wall:?} ({share:.4}%), {wakeups} wake-ups"
    );
    assert!(cpu * 100 < wall, "idle pty used {cpu:?} of CPU in {wall:?}");

    let mut worst = Duration::ZERO;
    for _ in 0..10 {
        let opened_at = Instant::now();
        let term = Term::open(slave);
        rec.expect_event(Event::Opened);
        worst = worst.max(opened_at.elapsed());
        drop(term);
        rec.expect_event(Event::Closed);
    }
    eprintln!("{id}: Opened at most {worst:?} after a terminal opened the slave (10 opens)");
    assert!(worst < Duration::from_millis(50), "Opened came {worst:?} after the open");
    Idle { wakeups, process_cpu, wall }
}

/// How long the idle pty is watched.
const IDLE_WINDOW: Duration = Duration::from_secs(10);

#[test]
#[ignore = "the child process of an_idle_pty_sleeps_and_notices_a_terminal_at_once"]
fn idle_child() {
    if std::env::var_os("CHARDEV_PTY_IDLE_CHILD").is_none() {
        return;
    }
    let (lp, reg, _dir) = setup();
    let slave = add_pty(&reg, "pty,id=idle");
    // Not a timer that is merely cheap: the loop does not wake up at all.
    let idle = idle_cpu_and_open_latency(&lp, &reg, "idle", &slave, IDLE_WINDOW);
    assert!(idle.wakeups < 5, "the idle loop woke up {} times in {IDLE_WINDOW:?}", idle.wakeups);
    // Nor does anything else of the process: no helper thread polls on the pty's behalf.
    let (cpu, wall) = (idle.process_cpu, idle.wall);
    let share = cpu.as_secs_f64() / wall.as_secs_f64() * 100.0;
    eprintln!("idle: whole process: {cpu:?} of CPU in {wall:?} ({share:.4}%)");
    assert!(cpu * 100 < wall, "the process used {cpu:?} of CPU in {wall:?} with an idle pty");
}

#[test]
fn an_idle_pty_sleeps_and_notices_a_terminal_at_once() {
    // In a process of its own: the whole process's CPU is measured, and the other tests of
    // this binary run alongside in this one.
    let child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "pty::idle_child", "--ignored", "--nocapture", "--test-threads=1"])
        .env("CHARDEV_PTY_IDLE_CHILD", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let out = wait_output_for(child, "the idle child", IDLE_WINDOW + 2 * DEADLINE);
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprint!("{stderr}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "the idle child failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains("1 passed"), "the idle child ran no test:\n{stdout}");
}

#[test]
fn a_polling_pty_costs_little_and_notices_a_terminal_within_50_ms() {
    let (lp, reg, _dir) = setup();
    let pty = Pty::open("idlepoll", None, 64 << 10, Watch::Poll).unwrap();
    assert_eq!(pty.watch(), Watch::Poll);
    let slave = pty.slave_path().to_path_buf();
    reg.add_chardev("idlepoll", Box::new(pty)).unwrap();
    let wakeups =
        idle_cpu_and_open_latency(&lp, &reg, "idlepoll", &slave, Duration::from_secs(5)).wakeups;
    assert!(wakeups < 5 * 1000 / 20 * 2, "{wakeups} wake-ups in 5 s, polling every 20 ms");
}

#[test]
fn a_polling_pty_keeps_the_backlog_too() {
    require_python_module("serial", "pyserial");
    let (_lp, reg, _dir) = setup();
    let pty = Pty::open("poll", None, 64 << 10, Watch::Poll).unwrap();
    let slave = pty.slave_path().to_path_buf();
    reg.add_chardev("poll", Box::new(pty)).unwrap();
    let h = reg.connect("poll").unwrap();
    let rec = record(&h, 4096);
    h.write_all(b"while nobody listened\r\n").unwrap();
    assert_eq!(pyserial_reads(&h, &rec, &slave, 23), b"while nobody listened\r\n");
}

#[test]
fn inotify_is_the_default_watch() {
    let pty = Pty::open("w", None, 0, Watch::Inotify).unwrap();
    assert_eq!(pty.watch(), Watch::Inotify);
}

#[test]
fn the_path_symlink_is_made_replaced_and_removed_but_never_over_a_file() {
    let (_lp, reg, dir) = setup();
    let link = dir.path().join("console");
    let slave = add_pty(&reg, &format!("pty,id=l1,path={}", link.display()));
    assert_eq!(std::fs::read_link(&link).unwrap(), slave);
    reg.remove("l1").unwrap();
    assert!(std::fs::symlink_metadata(&link).is_err(), "the symlink outlived its chardev");

    // A stale link (a killed QEMU leaves one behind) is replaced.
    std::os::unix::fs::symlink("/dev/pts/does-not-exist", &link).unwrap();
    let slave = add_pty(&reg, &format!("pty,id=l2,path={}", link.display()));
    assert_eq!(std::fs::read_link(&link).unwrap(), slave);
    reg.remove("l2").unwrap();

    // A file is not, and the chardev is not made.
    std::fs::write(&link, b"precious").unwrap();
    let e = reg.add_str(&format!("pty,id=l3,path={}", link.display())).unwrap_err();
    let text = e.to_string();
    assert!(text.contains(&link.display().to_string()), "{text}");
    assert!(text.contains("not a symlink"), "{text}");
    assert_eq!(std::fs::read(&link).unwrap(), b"precious");
    assert!(!reg.contains("l3"));
}

#[test]
fn removing_the_chardev_hangs_up_the_terminal() {
    let (_lp, reg, _dir) = setup();
    let slave = add_pty(&reg, "pty,id=gone");
    let mut term = Term::open(&slave);
    reg.remove("gone").unwrap();
    assert!(chardev::fd::wait_readable(term.file.as_fd(), Some(DEADLINE)).unwrap());
    let mut buf = [0u8; 16];
    match term.file.read(&mut buf) {
        Ok(0) => {}
        Err(e) if e.raw_os_error() == Some(nix::libc::EIO) => {}
        other => panic!("the terminal should see a hang-up, got {other:?}"),
    }
}

#[test]
fn a_fast_terminal_reaches_the_frontend_in_pieces_bigger_than_one_pty_read() {
    // The kernel hands out at most 4 KiB per read of a pty master; what the terminal typed
    // meanwhile is read on in the same turn, so that the frontend (a relay writing to a
    // socket) gets bigger pieces. Nothing may be lost or reordered on the way.
    const PTY_READ: usize = 4096;
    let (_lp, reg, _dir) = setup();
    let slave = add_pty(&reg, "pty,id=fast");
    let h = reg.connect("fast").unwrap();
    let rec = record(&h, 64 << 10);
    let term = Term::open(&slave);
    rec.expect_event(Event::Opened);
    let typed = pattern(3, 4 * MIB);
    let typist = {
        let (mut file, data) = (term.file.try_clone().unwrap(), typed.clone());
        std::thread::spawn(move || file.write_all(&data).unwrap())
    };
    let mut got = Vec::with_capacity(typed.len());
    let mut pieces = Vec::new();
    while got.len() < typed.len() {
        match rec.next() {
            Seen::Data(d, _) => {
                pieces.push(d.len());
                got.extend_from_slice(&d);
            }
            Seen::Event(e) => panic!("{e:?} after {} bytes", got.len()),
        }
    }
    typist.join().unwrap();
    assert!(got == typed, "what the terminal typed arrived changed");
    let biggest = pieces.iter().max().copied().unwrap_or(0);
    let big = pieces.iter().filter(|&&n| n > PTY_READ).count();
    eprintln!("{} pieces, {big} over {PTY_READ} bytes, the biggest {biggest}", pieces.len());
    assert!(biggest > PTY_READ, "every piece was one read of the pty ({} pieces)", pieces.len());
}

/// Asks for `writable` from inside its `Opened` callback, on the loop thread, without having
/// written anything; reports each `writable` call.
struct AsksOnOpen {
    handle: FrontendHandle,
    tx: Sender<&'static str>,
}

impl Frontend for AsksOnOpen {
    fn can_receive(&mut self) -> usize {
        0
    }
    fn receive(&mut self, _data: &[u8], _fds: Vec<OwnedFd>) {}
    fn event(&mut self, event: Event) {
        if event == Event::Opened {
            self.handle.notify_writable();
        }
    }
    fn writable(&mut self) {
        let _ = self.tx.send("writable");
    }
}

#[test]
fn asking_for_writability_on_the_loop_thread_without_a_short_write_is_answered_at_once() {
    // A pty waits for its next writable edge only after a write came back short in the same
    // turn; an idle pty with room raises no edge, so anything else must look first.
    let (_lp, reg, _dir) = setup();
    let slave = add_pty(&reg, "pty,id=ask");
    let h = reg.connect("ask").unwrap();
    let (tx, rx) = channel();
    h.set_frontend(AsksOnOpen { handle: h.clone(), tx });
    let _term = Term::open(&slave);
    assert_eq!(rx.recv_timeout(DEADLINE), Ok("writable"), "no writable() for an empty pty");
}

#[test]
fn every_terminal_that_opens_gets_the_history_first_then_live_output() {
    let (_lp, reg, _dir) = setup();
    let slave = add_pty(&reg, "pty,id=hist,history=16");
    let h = reg.connect("hist").unwrap();
    let rec = record(&h, 4096);
    h.write_all(b"boot: 0123456789abcdef").unwrap();
    // The first terminal: the last 16 bytes, then live output, nothing twice.
    let mut first = Term::open(&slave);
    rec.expect_event(Event::Opened);
    h.write_all(b"+live1").unwrap();
    assert_eq!(first.read_exact(22), b"0123456789abcdef+live1");
    drop(first);
    rec.expect_event(Event::Closed);
    // The second, after the first read it all: the history again (a backlog would be
    // empty now), the newest 16 bytes.
    let mut second = Term::open(&slave);
    rec.expect_event(Event::Opened);
    h.write_all(b"+live2").unwrap();
    assert_eq!(second.read_exact(22), b"6789abcdef+live1+live2");
    assert_eq!(
        reg.with_backend::<Pty, _>("hist", |pty| pty.history()).unwrap(),
        b"abcdef+live1+live2"[2..],
        "reading the history drains nothing"
    );
}

#[test]
fn history_replaces_the_backlog_and_says_so() {
    let (_lp, reg, _dir) = setup();
    for (spec, key) in [
        ("pty,id=p,history=1K,backlog=4K", "backlog=4K"),
        ("pty,id=p,history=1K,backlog-full=wait", "backlog-full=wait"),
    ] {
        let e = reg.add_str(spec).unwrap_err().to_string();
        assert!(e.contains(key) && e.contains("'history'"), "{e}");
    }
    let e = reg.add_str("pty,id=p,history=65M").unwrap_err().to_string();
    assert!(e.contains("is larger than the maximum history, 64M"), "{e}");
    assert!(!reg.contains("p"));
}

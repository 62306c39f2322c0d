//! serial-console on a real terminal, as a user runs it with no options (`-nographic`: the
//! guest and the monitor on a mux on stdio, the terminal raw), ended from outside by SIGTERM,
//! SIGINT or the terminal's hang-up (a SIGHUP from the kernel), or by a panic (a SIGHUP from
//! a process reopens the logfiles instead, and the demo goes on): the terminal's attributes come back exactly as they were
//! (every field `stty -g` shows), O_NONBLOCK never shows on the terminal's open file
//! description, and the exit status is QEMU's for a signal (0, after "terminating on signal
//! N from pid P (CMD)") or Rust's for a panic (101, with the message).
//!
//! The test opens the pty itself; the demo gets the slave as stdin, stdout, stderr and as the
//! controlling terminal of a session of its own. The test keeps its own fd on the slave: it
//! shares the open file description with the demo's fds 0, 1 and 2, which is where a leaked
//! O_NONBLOCK would show.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::{Command, ExitStatus, Stdio};
use std::time::Instant;

use chardev_testkit::{KillOnDrop, DEADLINE};
use nix::fcntl::{fcntl, FcntlArg, OFlag};
use nix::libc;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{kill, Signal};
use nix::sys::termios::{tcgetattr, LocalFlags};
use nix::unistd::Pid;

const BIN: &str = env!("CARGO_BIN_EXE_serial-console");

/// The guest's prompt: by then the terminal is raw and the machine runs.
const PROMPT: &str = "guest$ ";

/// serial-console on a pty of the test's.
struct Console {
    master: File,
    /// The test's own fd on the slave's open file description.
    slave: OwnedFd,
    child: KillOnDrop,
    /// Everything read from the master so far.
    seen: Vec<u8>,
    /// Where [`Console::expect`] looks next.
    at: usize,
    /// `stty -g` of the slave before the demo started.
    before: String,
}

impl Console {
    fn start(args: &[&str], env: &[(&str, &str)]) -> Console {
        let pty = nix::pty::openpty(None, None).expect("openpty");
        // Not into other tests' children (openpty makes inheritable fds).
        chardev::fd::set_cloexec(&pty.master, true).expect("close-on-exec master");
        chardev::fd::set_cloexec(&pty.slave, true).expect("close-on-exec slave");
        let before = stty_g(&pty.slave);
        assert!(before.contains(":icanon:echo:"), "a fresh pty is cooked: {before}");
        let mut cmd = Command::new(BIN);
        cmd.args(args)
            .envs(env.iter().copied())
            // A short panic message whatever the environment says.
            .env("RUST_BACKTRACE", "0")
            .stdin(Stdio::from(pty.slave.try_clone().expect("dup the slave")))
            .stdout(Stdio::from(pty.slave.try_clone().expect("dup the slave")))
            .stderr(Stdio::from(pty.slave.try_clone().expect("dup the slave")));
        // SAFETY: setsid(2) and ioctl(2) are async-signal-safe, and the closure touches
        // nothing else between fork and exec. Std has put the slave on fd 0 by then.
        unsafe {
            cmd.pre_exec(|| {
                if libc::setsid() < 0 || libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = KillOnDrop(cmd.spawn().expect("start serial-console"));
        Console {
            master: File::from(pty.master),
            slave: pty.slave,
            child,
            seen: Vec::new(),
            at: 0,
            before,
        }
    }

    fn pid(&self) -> Pid {
        Pid::from_raw(self.child.0.id() as i32)
    }

    /// Reads what the master has now, waiting up to `wait` for it; false if nothing came.
    fn fill(&mut self, wait: std::time::Duration) -> bool {
        if !chardev::fd::wait_readable(self.master.as_fd(), Some(wait)).expect("poll the pty") {
            return false;
        }
        let mut buf = [0u8; 4096];
        match self.master.read(&mut buf) {
            Ok(n) => self.seen.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => panic!("read the pty: {e}; got so far {:?}", self.text()),
        }
        true
    }

    /// Waits until `needle` appears after what the previous expect matched.
    fn expect(&mut self, needle: &str) {
        let end = Instant::now() + DEADLINE;
        loop {
            let rest = &self.seen[self.at..];
            if let Some(i) = rest.windows(needle.len()).position(|w| w == needle.as_bytes()) {
                self.at += i + needle.len();
                return;
            }
            let left = end.saturating_duration_since(Instant::now());
            assert!(self.fill(left), "no {needle:?} within {DEADLINE:?}; got {:?}", self.text());
        }
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.seen).into_owned()
    }

    /// The terminal is raw now: what the test checks afterwards could fail.
    fn assert_raw(&self) {
        let now = tcgetattr(&self.slave).expect("tcgetattr");
        assert!(
            !now.local_flags.intersects(LocalFlags::ICANON | LocalFlags::ECHO),
            "the demo runs but the terminal is not raw: {}",
            stty_g(&self.slave)
        );
    }

    /// Waits (bounded) for the demo to exit, reading its output meanwhile so that it never
    /// blocks on a full pty.
    fn wait_exit(&mut self) -> ExitStatus {
        let pid = self.child.0.id() as libc::pid_t;
        // SAFETY: pidfd_open(2) takes a pid and flags and returns a new fd, or -1.
        let raw = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
        assert!(raw >= 0, "pidfd_open: {}", std::io::Error::last_os_error());
        // SAFETY: the fd was just made for us and nothing else owns it.
        let pidfd = unsafe { OwnedFd::from_raw_fd(raw as i32) };
        let end = Instant::now() + DEADLINE;
        loop {
            let left = end.saturating_duration_since(Instant::now());
            assert!(!left.is_zero(), "still running after {DEADLINE:?}; output {:?}", self.text());
            let mut fds = [
                PollFd::new(pidfd.as_fd(), PollFlags::POLLIN),
                PollFd::new(self.master.as_fd(), PollFlags::POLLIN),
            ];
            let timeout = PollTimeout::try_from(left).unwrap_or(PollTimeout::MAX);
            match poll(&mut fds, timeout) {
                Err(nix::errno::Errno::EINTR) => continue,
                r => r.expect("poll"),
            };
            let exited = fds[0].any().unwrap_or(false);
            if fds[1].any().unwrap_or(false) {
                self.fill(std::time::Duration::ZERO);
            }
            if exited {
                break;
            }
        }
        let status = self.child.0.wait().expect("reap serial-console");
        // What it wrote last is in the pty already.
        while self.fill(std::time::Duration::ZERO) {}
        status
    }

    /// The terminal is as it was, and its description is not non-blocking.
    fn assert_restored(&self) {
        assert_eq!(
            stty_g(&self.slave),
            self.before,
            "terminal attributes not restored; output {:?}",
            self.text()
        );
        let flags = fcntl(self.slave.as_fd(), FcntlArg::F_GETFL).expect("F_GETFL");
        assert!(
            !OFlag::from_bits_truncate(flags).contains(OFlag::O_NONBLOCK),
            "O_NONBLOCK left on the terminal's open file description (fd {})",
            self.slave.as_raw_fd()
        );
    }
}

/// Every terminal attribute, as `stty -g` prints them (flags and control characters in hex),
/// plus the line discipline and both speeds; named flags are added so that a failure reads.
fn stty_g(fd: &impl AsFd) -> String {
    let termios = tcgetattr(fd).expect("tcgetattr");
    let named =
        [(LocalFlags::ICANON, "icanon"), (LocalFlags::ECHO, "echo")]
            .iter()
            .map(|&(f, name)| {
                if termios.local_flags.contains(f) {
                    name.to_string()
                } else {
                    format!("-{name}")
                }
            })
            .collect::<Vec<_>>()
            .join(":");
    let t: libc::termios = termios.into();
    let cc = t.c_cc.iter().map(|c| format!("{c:x}")).collect::<Vec<_>>().join(":");
    format!(
        "{:x}:{:x}:{:x}:{:x}:{cc}:line={:x}:ispeed={}:ospeed={}:{named}:",
        t.c_iflag, t.c_oflag, t.c_cflag, t.c_lflag, t.c_line, t.c_ispeed, t.c_ospeed
    )
}

/// The demo with no options, up and raw, then `signal` from this process.
fn ended_by(signal: Signal) {
    let mut console = Console::start(&[], &[]);
    console.expect(PROMPT);
    console.assert_raw();
    kill(console.pid(), signal).expect("kill");
    let status = console.wait_exit();
    // QEMU: "qemu-system-x86_64: terminating on signal 15 from pid N (CMD)", then exit 0.
    let me = std::env::args().next().expect("argv[0]");
    console.expect(&format!(
        "serial-console: terminating on signal {} from pid {} ({me})",
        signal as i32,
        std::process::id()
    ));
    assert_eq!(status.code(), Some(0), "{status:?}; output {:?}", console.text());
    console.assert_restored();
}

#[test]
fn sigterm_restores_the_terminal_and_exits_as_qemu_does() {
    ended_by(Signal::SIGTERM);
}

#[test]
fn sigint_from_outside_restores_the_terminal_and_exits_as_qemu_does() {
    // -nographic's mux has signal=off (Ctrl-C goes to the guest); kill(1) still works.
    ended_by(Signal::SIGINT);
}

/// A SIGHUP from the kernel (the terminal hung up: its master side closed) still ends the
/// demo as QEMU does; nothing of the terminal is left to restore.
#[test]
fn a_terminal_hang_up_still_ends_it_as_qemu_does() {
    let mut console = Console::start(&[], &[]);
    console.expect(PROMPT);
    console.assert_raw();
    let Console { master, mut child, .. } = console;
    drop(master);
    let status = chardev_testkit::wait_exit(&mut child.0, "serial-console");
    assert_eq!(status.code(), Some(0), "{status:?}");
}

/// A SIGHUP that a process sends (`kill -HUP`, logrotate's `postrotate`) reopens the
/// logfiles, as daemons do, and the demo goes on: the guest still answers on the raw
/// terminal. SIGTERM then ends it as before.
#[test]
fn sighup_from_a_process_reopens_the_logs_and_the_demo_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("console.log");
    let chardev = format!("null,id=logged,logfile={}", log.display());
    let mut console = Console::start(&["-chardev", &chardev], &[]);
    console.expect(PROMPT);
    console.assert_raw();
    std::fs::rename(&log, dir.path().join("console.log.1")).unwrap();
    kill(console.pid(), Signal::SIGHUP).expect("kill");
    // Reopening opens the path again, which creates the file.
    chardev_testkit::wait_until("the logfile reopened", || log.exists());
    console.master.write_all(b"echo still-here\r").unwrap();
    console.expect("echo still-here");
    console.expect("still-here");
    console.assert_raw();
    assert!(!console.text().contains("terminating"), "{:?}", console.text());
    kill(console.pid(), Signal::SIGTERM).expect("kill");
    let status = console.wait_exit();
    assert_eq!(status.code(), Some(0), "{status:?}; output {:?}", console.text());
    console.assert_restored();
}

/// `CHARDEV_DEMO_PANIC_AFTER_MS` with `thread` (`loop` or `worker`): the demo panics a
/// while after it is up; `label` is the thread name in the message.
fn panics_on(thread: &str, label: &str) {
    // Far longer than the demo takes to greet (a few ms), so the prompt comes first.
    let env = [("CHARDEV_DEMO_PANIC_AFTER_MS", "1000"), ("CHARDEV_DEMO_PANIC_THREAD", thread)];
    let mut console = Console::start(&[], &env);
    console.expect(PROMPT);
    console.assert_raw();
    let status = console.wait_exit();
    console.expect(&format!("thread '{label}'"));
    console.expect("panicked at");
    console.expect(&format!(
        "CHARDEV_DEMO_PANIC_AFTER_MS: test panic on {}",
        match thread {
            "worker" => "a worker thread",
            _ => "the loop thread",
        }
    ));
    assert_eq!(status.code(), Some(101), "{status:?}; output {:?}", console.text());
    console.assert_restored();
}

#[test]
fn a_panic_on_the_loop_thread_which_is_the_main_thread_restores_the_terminal() {
    panics_on("loop", "main");
}

#[test]
fn a_panic_on_another_thread_ends_the_demo_and_restores_the_terminal() {
    panics_on("worker", "test-panic");
}

#[test]
fn a_signal_while_a_chardev_waits_for_its_client_exits_at_once_restoring_the_terminal() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("wait.sock");
    // stdio (raw) first, then a server that waits for its first client: no loop runs yet.
    let chardev = format!("socket,id=w,path={},server=on", path.display());
    let mut console = Console::start(&["-serial", "mon:stdio", "-chardev", &chardev], &[]);
    console.expect("QEMU waiting for connection on: disconnected:unix:");
    console.assert_raw();
    kill(console.pid(), Signal::SIGTERM).expect("kill");
    let status = console.wait_exit();
    console.expect(&format!(
        "serial-console: terminating on signal 15 from pid {}",
        std::process::id()
    ));
    assert_eq!(status.code(), Some(0), "{status:?}; output {:?}", console.text());
    console.assert_restored();
}

/// serial-console with its serial port on a unix socket server and stderr a pipe whose reader
/// has gone (as when the terminal or the log reader it wrote to left), up and running, then
/// `signal`: the "terminating on signal" line cannot be written, and the shutdown goes on as
/// ever (issue 15, point 6): status 0, the socket file removed. It was a panic on the signal
/// thread (eprintln! on EPIPE), status 101 and the file left behind.
fn ended_by_with_stderr_gone(signal: Signal) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.sock");
    // Close-on-exec, or the demo (or another test's child) would hold a reader.
    let (reader, writer) = nix::unistd::pipe2(OFlag::O_CLOEXEC).expect("pipe2");
    let serial = format!("unix:{},server=on,wait=off", path.display());
    // The Command, and with it the test's copy of the write end, is gone after this line.
    let mut child = KillOnDrop(
        Command::new(BIN)
            .args(["-nodefaults", "-serial", &serial])
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(writer))
            .spawn()
            .expect("start serial-console"),
    );
    drop(reader);
    // The guest answers on the socket: the loop runs, so the signal stops it (one before the
    // loop runs exits at once).
    let mut guest = chardev_testkit::connect_unix(&path);
    guest.write_all(b"\r").expect("write to the guest");
    read_until(&mut guest, PROMPT);
    kill(Pid::from_raw(child.0.id() as i32), signal).expect("kill");
    let status = chardev_testkit::wait_exit(&mut child.0, "serial-console");
    assert_eq!(status.code(), Some(0), "{status:?}: a write to the gone stderr must not panic");
    assert!(!path.exists(), "{} left behind", path.display());
}

/// Reads `r` (its reads bounded by a timeout) until `needle` has come.
fn read_until(r: &mut impl Read, needle: &str) {
    let mut got = Vec::new();
    let mut buf = [0u8; 256];
    while !got.windows(needle.len()).any(|w| w == needle.as_bytes()) {
        match r.read(&mut buf) {
            Ok(0) => panic!("closed before {needle:?}; got {:?}", String::from_utf8_lossy(&got)),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => panic!("no {needle:?}: {e}; got {:?}", String::from_utf8_lossy(&got)),
        }
    }
}

#[test]
fn sigterm_with_stderr_gone_still_exits_0_and_removes_the_socket_file() {
    ended_by_with_stderr_gone(Signal::SIGTERM);
}

#[test]
fn sigint_with_stderr_gone_still_exits_0_and_removes_the_socket_file() {
    // SIGHUP from a process no longer ends the demo (it reopens the logs); SIGINT is the
    // other ending signal a process sends.
    ended_by_with_stderr_gone(Signal::SIGINT);
}

/// Sets the pty's window size from the master side: the kernel sends SIGWINCH to the
/// demo, the session leader on its slave.
fn set_window(master: &File, cols: u16, rows: u16) {
    let size = libc::winsize { ws_row: rows, ws_col: cols, ws_xpixel: 0, ws_ypixel: 0 };
    // SAFETY: TIOCSWINSZ reads one winsize through the valid pointer given.
    let rc = unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSWINSZ, &size) };
    assert_eq!(rc, 0, "TIOCSWINSZ: {}", std::io::Error::last_os_error());
}

#[test]
fn a_resized_terminal_is_a_resize_event_and_the_guest_sees_its_size() {
    let mut console = Console::start(&[], &[]);
    console.expect(PROMPT);
    // A fresh pty has no size (0x0): the guest says so.
    console.master.write_all(b"size\r").unwrap();
    console.expect("size unknown");
    set_window(&console.master, 132, 43);
    // SIGWINCH goes through a self-pipe to the loop; ask until the new size is in.
    let end = Instant::now() + DEADLINE;
    loop {
        console.master.write_all(b"size\r").unwrap();
        console.expect(PROMPT);
        if console.text().contains("132x43\r") {
            break;
        }
        assert!(Instant::now() < end, "no 132x43; got {:?}", console.text());
    }
    set_window(&console.master, 90, 20);
    let end = Instant::now() + DEADLINE;
    loop {
        console.master.write_all(b"size\r").unwrap();
        console.expect(PROMPT);
        if console.text().contains("90x20\r") {
            break;
        }
        assert!(Instant::now() < end, "no 90x20; got {:?}", console.text());
    }
}

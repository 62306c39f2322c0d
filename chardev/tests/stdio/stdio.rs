//! `stdio` on real ptys, files, pipes and sockets: raw mode while it runs, the terminal restored
//! after exit, SIGTERM and panic, and O_NONBLOCK never leaked onto the shell's description.
//!
//! Each test runs the backend in a child process (this test binary again, `stdio::child_main`
//! with `CHARDEV_STDIO_CHILD` set), whose stdin/stdout/stderr the test sets up, because a
//! process has one stdio and the one of `cargo test` may be a developer's terminal.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, ExitStatus, Stdio};
use std::time::Instant;

use chardev::fd::{is_nonblocking, set_cloexec, wait_readable};
use nix::sys::signal::{kill, Signal};
use nix::sys::termios::{
    tcgetattr, ControlFlags, InputFlags, LocalFlags, OutputFlags, SpecialCharacterIndices, Termios,
};
use nix::unistd::Pid;

use chardev_testkit::{wait_exit, DEADLINE};

const CHILD_ENV: &str = "CHARDEV_STDIO_CHILD";

/// Not a test by itself: the body of the child processes that the other tests start.
#[test]
fn child_main() {
    if let Ok(scenario) = std::env::var(CHILD_ENV) {
        child::run(&scenario);
    }
}

// ---- The child: a stdio chardev, a recording frontend, and commands typed as lines ----

mod child {
    use std::time::Duration;

    use nix::libc;

    use chardev::{Event, EventLoop, Registry};
    use nix::sys::termios::tcgetattr;

    use chardev_testkit::{record, Record, Seen, DEADLINE};

    pub fn run(scenario: &str) {
        // A program started the usual way: whoever ran the tests may have had SIGHUP ignored
        // (nohup), which the child would inherit, and the library rightly leaves an ignored
        // signal alone.
        for signal in [libc::SIGHUP, libc::SIGUSR1, libc::SIGALRM, libc::SIGTERM] {
            // SAFETY: signal(2) restoring the default action; nothing else in this child
            // process handles these signals.
            unsafe { libc::signal(signal, libc::SIG_DFL) };
        }
        match scenario {
            "echo" => echo("stdio,id=s0"),
            "echo-nosignal" => echo("stdio,id=s0,signal=off"),
            "twice" => twice(),
            "file" => file(),
            other => panic!("unknown child scenario {other}"),
        }
    }

    /// Says "[ready]" once open, answers each line with "[got LINE]", and obeys `quit` (exit
    /// without destructors, as a mux's Ctrl-A x), `panic` (panic, then abort as with
    /// panic=abort) and `big` (100000 bytes of output in brackets). Says "[closed]" at the end of input.
    fn echo(spec: &str) {
        let lp = EventLoop::spawn().unwrap();
        let registry = Registry::new(lp.handle());
        registry.add_str(spec).unwrap();
        let handle = registry.connect("s0").unwrap();
        let rec = record(&handle, 4096);
        let mut line = Vec::new();
        loop {
            let seen = match rec.rx.recv_timeout(DEADLINE) {
                Ok(seen) => seen,
                Err(_) => std::process::exit(3), // never outlive a test that gave up
            };
            let data = match seen {
                Seen::Event(Event::Opened) => {
                    handle.write_all(b"[ready]\n").unwrap();
                    continue;
                }
                Seen::Event(Event::Closed) => {
                    handle.write_all(b"[closed]\n").unwrap();
                    std::process::exit(0);
                }
                Seen::Event(e) => panic!("unexpected {e:?}"),
                Seen::Data(data, _) => data,
            };
            for b in data {
                if b != b'\r' && b != b'\n' {
                    line.push(b);
                    continue;
                }
                match &line[..] {
                    b"quit" => std::process::exit(0),
                    b"panic" => {
                        let _ = std::thread::spawn(|| panic!("stdio child panics")).join();
                        std::process::abort();
                    }
                    b"big" => {
                        handle.write_all(b"[big:").unwrap();
                        handle.write_all(&vec![b'x'; 100_000]).unwrap();
                        handle.write_all(b"]\n").unwrap();
                    }
                    _ => {
                        let reply = format!("[got {}]\n", line.escape_ascii());
                        handle.write_all(reply.as_bytes()).unwrap();
                    }
                }
                line.clear();
            }
        }
    }

    /// One stdio chardev at a time; removing it restores the terminal and frees stdio.
    fn twice() {
        let stdin = std::io::stdin();
        let before = tcgetattr(&stdin).unwrap();
        let lp = EventLoop::spawn().unwrap();
        let registry = Registry::new(lp.handle());
        registry.add_str("stdio,id=s0").unwrap();
        assert_ne!(tcgetattr(&stdin).unwrap(), before, "stdio did not make the terminal raw");
        let info = registry.query();
        assert_eq!(info.len(), 1);
        assert_eq!(info[0].filename, "stdio");

        let err = registry.add_str("stdio,id=s1").unwrap_err();
        assert!(
            err.to_string().contains("cannot use stdio by multiple character devices"),
            "unexpected error: {err}"
        );
        assert!(!registry.contains("s1"));

        registry.remove("s0").unwrap();
        assert_eq!(tcgetattr(&stdin).unwrap(), before, "removing stdio did not restore");

        registry.add_str("stdio,id=s1").unwrap();
        let handle = registry.connect("s1").unwrap();
        let rec = record(&handle, 4096);
        rec.expect_event(Event::Opened);
        handle.write_all(b"[twice ok]\n").unwrap();
        std::process::exit(0);
    }

    /// stdin is a regular file: all of it arrives (in 5-byte reads), then `Closed`, once.
    fn file() {
        let lp = EventLoop::spawn().unwrap();
        let registry = Registry::new(lp.handle());
        registry.add_str("stdio,id=s0").unwrap();
        let handle = registry.connect("s0").unwrap();
        let rec: Record = record(&handle, 5);
        rec.expect_event(Event::Opened);
        let mut data = Vec::new();
        loop {
            match rec.next() {
                Seen::Data(d, _) => data.extend_from_slice(&d),
                Seen::Event(Event::Closed) => break,
                Seen::Event(e) => panic!("unexpected {e:?}"),
            }
        }
        rec.quiet(Duration::from_millis(300));
        let reply = format!("[file {}|closed once]\n", data.escape_ascii());
        handle.write_all(reply.as_bytes()).unwrap();
        std::process::exit(0);
    }
}

// ---- The parent: processes, ptys and transcripts ----

/// A child process running one scenario; killed if the test fails before it ends.
struct Child {
    process: std::process::Child,
    /// Where the child's output arrives (pty master, pipe or socket).
    output: File,
    /// Everything read from `output` so far.
    transcript: Vec<u8>,
    /// Where `expect` looks next.
    seen: usize,
}

impl Child {
    fn spawn(scenario: &str, stdin: Stdio, stdout: Stdio, stderr: Stdio, output: File) -> Child {
        let process = Command::new(std::env::current_exe().unwrap())
            .args(["stdio::child_main", "--exact", "--nocapture", "--test-threads=1", "--quiet"])
            .env(CHILD_ENV, scenario)
            .env_remove("RUST_LOG")
            .stdin(stdin)
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .unwrap();
        Child { process, output, transcript: Vec::new(), seen: 0 }
    }

    /// A child whose stdin, stdout and stderr are the slave of `pty`.
    fn on_pty(scenario: &str, pty: &Pty) -> Child {
        let slave = || Stdio::from(pty.slave.try_clone().unwrap());
        Child::spawn(scenario, slave(), slave(), slave(), pty.master.try_clone().unwrap())
    }

    fn pid(&self) -> Pid {
        Pid::from_raw(self.process.id() as i32)
    }

    /// Reads output until `marker` appears, failing after the deadline; returns what came
    /// before it.
    fn expect(&mut self, marker: &str) -> Vec<u8> {
        let end = Instant::now() + DEADLINE;
        loop {
            let rest = &self.transcript[self.seen..];
            if let Some(at) = rest.windows(marker.len()).position(|w| w == marker.as_bytes()) {
                let before = rest[..at].to_vec();
                self.seen += at + marker.len();
                return before;
            }
            let left = end.saturating_duration_since(Instant::now());
            let ready = wait_readable(self.output.as_fd(), Some(left)).unwrap();
            let mut buf = [0u8; 65536];
            let n = if ready { self.output.read(&mut buf).unwrap_or(0) } else { 0 };
            assert!(
                n > 0,
                "no {marker:?} from the child within {DEADLINE:?}; it wrote {:?}",
                String::from_utf8_lossy(&self.transcript)
            );
            self.transcript.extend_from_slice(&buf[..n]);
        }
    }

    /// Waits (with the deadline) for the child to end.
    fn wait(&mut self) -> ExitStatus {
        wait_exit(&mut self.process, "the stdio child")
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        if let Ok(None) = self.process.try_wait() {
            let _ = self.process.kill();
            let _ = self.process.wait();
        }
    }
}

/// A pty pair; the test keeps the slave open to read its attributes and status flags.
struct Pty {
    master: File,
    slave: OwnedFd,
}

impl Pty {
    fn open() -> Pty {
        let pty = nix::pty::openpty(None, None).unwrap();
        // Not into other tests' children (openpty makes inheritable fds).
        set_cloexec(&pty.master, true).unwrap();
        set_cloexec(&pty.slave, true).unwrap();
        Pty { master: File::from(pty.master), slave: pty.slave }
    }

    /// Types `text` on the terminal.
    fn type_in(&self, text: &[u8]) {
        (&self.master).write_all(text).unwrap();
    }

    fn attributes(&self) -> Termios {
        tcgetattr(&self.slave).unwrap()
    }

    /// Asserts that O_NONBLOCK is clear on the description the child shares with us.
    fn assert_blocking(&self, when: &str) {
        assert!(!is_nonblocking(&self.slave).unwrap(), "O_NONBLOCK leaked onto the pty {when}");
    }
}

/// How a terminal child ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    /// Types `quit`: `std::process::exit(0)` with the chardev alive.
    Exit,
    /// A signal from the test, whose default action ends the process.
    Signal(Signal),
    /// Types `panic`: a thread panics, then the process aborts (panic=abort).
    Panic,
    /// SIGKILL from the test: nothing can restore the terminal, and nothing needs to be
    /// undone on the file description.
    Kill,
}

/// Runs `scenario` on a pty, checks raw mode and data both ways, ends it as `end`, and checks
/// the terminal afterwards.
fn terminal_session(scenario: &str, end: End) {
    let pty = Pty::open();
    let before = pty.attributes();
    assert!(before.local_flags.contains(LocalFlags::ECHO | LocalFlags::ICANON | LocalFlags::ISIG));
    pty.assert_blocking("before the child started");

    let mut child = Child::on_pty(scenario, &pty);
    child.expect("[ready]");
    let raw = pty.attributes();
    assert!(!raw.local_flags.contains(LocalFlags::ECHO), "ECHO still on while stdio runs");
    assert!(!raw.local_flags.contains(LocalFlags::ICANON), "ICANON still on while stdio runs");
    let signals = scenario != "echo-nosignal";
    assert_eq!(raw.local_flags.contains(LocalFlags::ISIG), signals, "ISIG against signal=");
    // The rest of QEMU's term_init.
    assert!(!raw.local_flags.intersects(LocalFlags::ECHONL | LocalFlags::IEXTEN));
    assert!(!raw.input_flags.intersects(InputFlags::ICRNL | InputFlags::IXON | InputFlags::ISTRIP));
    assert!(raw.output_flags.contains(OutputFlags::OPOST));
    assert_eq!(raw.control_flags & ControlFlags::CSIZE, ControlFlags::CS8);
    assert_eq!(raw.control_chars[SpecialCharacterIndices::VMIN as usize], 1);
    assert_eq!(raw.control_chars[SpecialCharacterIndices::VTIME as usize], 0);
    pty.assert_blocking("while the child runs");

    // Typed bytes reach the frontend unchanged (no line editing, no echo); its answer comes
    // back on the terminal.
    pty.type_in(b"ping\r");
    assert!(!child.expect("[got ping]").contains(&b'p'), "the terminal echoed the input");
    if !signals {
        pty.type_in(b"a\x03b\r");
        child.expect("[got a\\x03b]");
    }

    let status = match end {
        End::Exit => {
            pty.type_in(b"quit\r");
            let status = child.wait();
            assert_eq!(status.code(), Some(0), "{status:?}");
            status
        }
        End::Signal(signal) => {
            kill(child.pid(), signal).unwrap();
            let status = child.wait();
            assert_eq!(status.signal(), Some(signal as i32), "{status:?}");
            status
        }
        End::Panic => {
            pty.type_in(b"panic\r");
            child.expect("stdio child panics");
            let status = child.wait();
            assert_eq!(status.signal(), Some(nix::libc::SIGABRT), "{status:?}");
            status
        }
        End::Kill => {
            kill(child.pid(), Signal::SIGKILL).unwrap();
            let status = child.wait();
            assert_eq!(status.signal(), Some(nix::libc::SIGKILL), "{status:?}");
            status
        }
    };
    pty.assert_blocking(&format!("after the child ended ({status:?})"));
    if end != End::Kill {
        assert_eq!(pty.attributes(), before, "terminal not restored after {end:?}");
    }
}

#[test]
fn exit_restores_the_terminal() {
    terminal_session("echo", End::Exit);
}

#[test]
fn sigterm_restores_the_terminal_and_still_kills() {
    terminal_session("echo", End::Signal(Signal::SIGTERM));
}

#[test]
fn other_deadly_signals_restore_the_terminal_too() {
    // Their default action ends the process as SIGTERM's does.
    for signal in [Signal::SIGUSR1, Signal::SIGALRM, Signal::SIGHUP] {
        terminal_session("echo", End::Signal(signal));
    }
}

#[test]
fn panic_restores_the_terminal_even_with_abort() {
    terminal_session("echo", End::Panic);
}

#[test]
fn sigkill_leaves_o_nonblock_clear() {
    terminal_session("echo", End::Kill);
}

#[test]
fn signal_off_passes_ctrl_c_as_a_byte() {
    terminal_session("echo-nosignal", End::Exit);
}

#[test]
fn large_output_reaches_the_terminal() {
    let pty = Pty::open();
    let mut child = Child::on_pty("echo", &pty);
    child.expect("[ready]");
    pty.type_in(b"big\r");
    child.expect("[big:");
    let out = child.expect("]");
    assert_eq!(out.len(), 100_000);
    assert!(out.iter().all(|&b| b == b'x'));
    pty.type_in(b"quit\r");
    assert_eq!(child.wait().code(), Some(0));
}

#[test]
fn one_stdio_at_a_time() {
    let pty = Pty::open();
    let before = pty.attributes();
    let mut child = Child::on_pty("twice", &pty);
    child.expect("[twice ok]");
    let status = child.wait();
    assert_eq!(
        status.code(),
        Some(0),
        "{status:?}: {}",
        String::from_utf8_lossy(&child.transcript)
    );
    assert_eq!(pty.attributes(), before);
    pty.assert_blocking("after the child ended");
}

#[test]
fn regular_file_stdin_is_read_then_closed_once() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("stdin");
    std::fs::write(&path, b"file content 0123456789").unwrap();
    let (read_end, write_end) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap();
    let out = || Stdio::from(write_end.try_clone().unwrap());
    let mut child = Child::spawn(
        "file",
        Stdio::from(File::open(&path).unwrap()),
        out(),
        out(),
        read_end.into(),
    );
    child.expect("[file file content 0123456789|closed once]");
    assert_eq!(child.wait().code(), Some(0));
    // The pipe was reopened, not made non-blocking under the writer we share it with.
    assert!(!is_nonblocking(&write_end).unwrap(), "O_NONBLOCK leaked onto stdout's pipe");
}

#[test]
fn socket_stdio_works_blocking_behind_poll() {
    use std::os::unix::net::UnixStream;
    let (ours, theirs) = UnixStream::pair().unwrap();
    let end = || Stdio::from(OwnedFd::from(theirs.try_clone().unwrap()));
    let output = File::from(OwnedFd::from(ours.try_clone().unwrap()));
    let mut child = Child::spawn("echo", end(), end(), end(), output);
    child.expect("[ready]");
    (&ours).write_all(b"ping\r").unwrap();
    child.expect("[got ping]");
    // More than the socket buffer holds: writes are cut to PIPE_BUF and wait for POLLOUT.
    (&ours).write_all(b"big\r").unwrap();
    child.expect("[big:");
    let out = child.expect("]");
    assert_eq!(out.len(), 100_000);
    ours.shutdown(std::net::Shutdown::Write).unwrap();
    child.expect("[closed]");
    assert_eq!(child.wait().code(), Some(0));
    assert!(!is_nonblocking(&theirs).unwrap(), "O_NONBLOCK leaked onto the socket");
}

/// The process state letter in /proc/PID/stat (`T` stopped, `S` sleeping, ...).
fn process_state(pid: Pid) -> char {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // The command may hold spaces and parentheses: the state follows the last ')'.
    stat[stat.rfind(')').unwrap() + 2..].chars().next().unwrap()
}

/// Issue 15, point 10: stopped (Ctrl-Z, SIGSTOP), the terminal reset to cooked meanwhile (as
/// a shell does when a job stops), continued: raw mode comes back, as QEMU's stdio does it.
#[test]
fn sigcont_puts_raw_mode_back_after_the_terminal_was_reset() {
    use nix::sys::termios::{tcsetattr, SetArg};
    let pty = Pty::open();
    let before = pty.attributes();
    let mut child = Child::on_pty("echo", &pty);
    child.expect("[ready]");
    let raw = pty.attributes();
    assert_ne!(raw, before);

    kill(child.pid(), Signal::SIGSTOP).unwrap();
    chardev_testkit::wait_until("the child to stop", || process_state(child.pid()) == 'T');
    tcsetattr(&pty.slave, SetArg::TCSANOW, &before).unwrap();
    assert_eq!(pty.attributes(), before);
    kill(child.pid(), Signal::SIGCONT).unwrap();
    chardev_testkit::wait_until("raw mode after SIGCONT", || pty.attributes() == raw);

    // Still raw for the data too: no echo, no line discipline.
    pty.type_in(b"ping\r");
    assert!(!child.expect("[got ping]").contains(&b'p'), "the terminal echoed the input");
    pty.type_in(b"quit\r");
    assert_eq!(child.wait().code(), Some(0));
    assert_eq!(pty.attributes(), before, "terminal not restored at exit");
}

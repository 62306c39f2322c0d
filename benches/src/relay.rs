//! P2 and P3: a relay process between two endpoints, `chardev-relay` or `socat -b 65536`,
//! with a writer on one end and a reader on the other, both in this process.
//!
//! The writer first sends a 64 KiB warm-up and the clock starts when it has come out the
//! other end, so that start-up (a pty's settling, socat's accept order) is not measured;
//! it stops when the last byte has. The writer closes only after that, so no relay's exit
//! path is measured either. A watchdog kills the relay if the transfer outlives its
//! deadline, which ends a stuck read or write with an error.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc::{channel, RecvTimeoutError};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::sys::termios::{cfmakeraw, tcgetattr, tcsetattr, SetArg};
use nix::unistd::Pid;

use crate::pattern::{Checker, Pattern, Verify, CHUNK};
use crate::peer::{self, retry, Process, STARTUP};
use crate::proc_status::{cpu_time, Who};
use crate::{transfer_deadline, Context, Result, Transfer};

/// Bytes sent before the clock starts.
pub const WARMUP: u64 = 64 * 1024;

/// The socat buffer size the baseline uses (`socat -b 65536`).
pub const SOCAT_BUFFER: &str = "65536";

/// The program that relays.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Relayer {
    /// `chardev-relay [FLAGS] SPEC SPEC`, at this path (`--no-fds`: splice, as socat passes
    /// no fds either).
    Chardev(PathBuf, Vec<&'static str>),
    /// `socat -b 65536 ADDRESS ADDRESS`.
    Socat,
}

/// The two endpoints and which way the bytes go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// A unix socket server to another unix socket server.
    UnixToUnix,
    /// From a pty's slave to a unix socket server.
    PtyToUnix,
    /// From a unix socket server to a pty's slave.
    UnixToPty,
}

impl Route {
    fn has_pty(self) -> bool {
        self != Route::UnixToUnix
    }
}

impl Relayer {
    fn name(&self) -> &'static str {
        match self {
            Relayer::Chardev(..) => "chardev-relay",
            Relayer::Socat => "socat",
        }
    }

    /// The relay's command line: side `a` (a unix server, or a pty linked at `a`), side `b`
    /// (a unix server).
    fn command(&self, route: Route, a: &Path, b: &Path) -> Command {
        let (a, b) = (a.display(), b.display());
        match self {
            Relayer::Chardev(bin, flags) => {
                let mut cmd = Command::new(bin);
                cmd.args(flags);
                if route.has_pty() {
                    cmd.arg(format!("pty,path={a}"));
                } else {
                    cmd.arg(format!("socket,path={a},server=on,wait=off"));
                }
                cmd.arg(format!("socket,path={b},server=on,wait=off"));
                cmd
            }
            Relayer::Socat => {
                let mut cmd = Command::new("socat");
                cmd.args(["-b", SOCAT_BUFFER]);
                if route.has_pty() {
                    cmd.arg(format!("PTY,link={a},rawer"));
                } else {
                    cmd.arg(format!("UNIX-LISTEN:{a}"));
                }
                cmd.arg(format!("UNIX-LISTEN:{b}"));
                cmd
            }
        }
    }
}

/// Opens a pty's slave through the link at `path`, raw (both relays make it raw already;
/// this makes sure line discipline never touches the bytes).
fn open_pty(path: &Path) -> Result<File> {
    let file = retry(&format!("open the pty at {}", path.display()), STARTUP, || {
        OpenOptions::new().read(true).write(true).custom_flags(nix::libc::O_NOCTTY).open(path)
    })?;
    let mut t = tcgetattr(&file).context("read the pty's line settings")?;
    cfmakeraw(&mut t);
    tcsetattr(&file, SetArg::TCSANOW, &t).context("make the pty raw")?;
    Ok(file)
}

fn unix(path: &Path) -> Result<File> {
    let s: UnixStream = peer::connect(path)?;
    Ok(File::from(std::os::fd::OwnedFd::from(s)))
}

/// Kills a process if not disarmed (dropped) before its deadline.
struct Watchdog {
    disarm: Option<std::sync::mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Watchdog {
    fn arm(pid: u32, timeout: Duration) -> Watchdog {
        let (disarm, armed) = channel::<()>();
        let thread = std::thread::spawn(move || {
            if let Err(RecvTimeoutError::Timeout) = armed.recv_timeout(timeout) {
                let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
            }
        });
        Watchdog { disarm: Some(disarm), thread: Some(thread) }
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        drop(self.disarm.take());
        // Joined before the relay is reaped, so the pid cannot have been reused.
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Moves `bytes` (after the warm-up) through `relayer` on `route`, with its sockets (and pty
/// link) in `dir`.
pub fn run(
    relayer: &Relayer,
    route: Route,
    dir: &Path,
    bytes: u64,
    verify: Verify,
) -> Result<Transfer> {
    let a = dir.join(if route.has_pty() { "a.pty" } else { "a.sock" });
    let b = dir.join("b.sock");
    for stale in [&a, &b] {
        let _ = std::fs::remove_file(stale);
    }
    let log_path = dir.join(format!("{}.log", relayer.name()));
    let log = File::create(&log_path).context(format!("create {}", log_path.display()))?;
    let cpu = cpu_time(Who::Children)?;
    let child = relayer
        .command(route, &a, &b)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .context(format!("start {}", relayer.name()))?;
    let mut relay = Process::new(child, relayer.name());
    let watchdog = Watchdog::arm(relay.child().id(), STARTUP + transfer_deadline(bytes));
    let result = transfer(route, &a, &b, bytes, verify);
    drop(watchdog);
    let exited = relay.exited();
    let finished = relay.finish(Duration::from_secs(5));
    // The relay has been reaped (by `finish`, or by its drop if it had to be killed).
    let cpu = cpu_time(Who::Children)? - cpu;
    result
        .map(|t| Transfer { cpu, ..t })
        .map_err(|e| {
            let log = std::fs::read_to_string(&log_path).unwrap_or_default();
            let tail: String = log.lines().rev().take(5).collect::<Vec<_>>().join(" | ");
            match exited {
                Some(status) => {
                    format!("{e} ({} had ended: {status}; its last words: {tail})", relayer.name())
                }
                None => format!("{e} ({}'s last words: {tail})", relayer.name()),
            }
        })
        .and_then(|t| finished.map(|_| t))
}

fn transfer(route: Route, a: &Path, b: &Path, bytes: u64, verify: Verify) -> Result<Transfer> {
    // Side a first: socat opens its addresses in order.
    let side_a = if route.has_pty() { open_pty(a)? } else { unix(a)? };
    let side_b = unix(b)?;
    let (writer, reader) = match route {
        Route::UnixToUnix | Route::PtyToUnix => (side_a, side_b),
        Route::UnixToPty => (side_b, side_a),
    };
    stream(writer, reader, bytes, verify)
}

/// A new pty of this process, raw: (master, slave).
fn raw_pty() -> Result<(File, File)> {
    let pty = nix::pty::openpty(None, None).context("open a pty")?;
    let (master, slave) = (File::from(pty.master), File::from(pty.slave));
    let mut t = tcgetattr(&slave).context("read the pty's line settings")?;
    cfmakeraw(&mut t);
    tcsetattr(&slave, SetArg::TCSANOW, &t).context("make the pty raw")?;
    Ok((master, slave))
}

/// The ceiling for P3: the same transfer through a pty with no relay at all, the writer on
/// one end and the reader on the other, both raw (for `PtyToUnix`, into the slave and out of
/// the master, where a relay would read; for `UnixToPty` the other way). Every relay between
/// a pty and a socket does at least this much work on the pty's side, so no relay can be
/// faster; `cpu` is zero (there is no relay process).
pub fn pty_alone(route: Route, bytes: u64, verify: Verify) -> Result<Transfer> {
    let (master, slave) = raw_pty()?;
    let (writer, reader) = match route {
        Route::PtyToUnix => (slave, master),
        Route::UnixToPty => (master, slave),
        Route::UnixToUnix => return Err("pty_alone: this route has no pty".into()),
    };
    stream(writer, reader, bytes, verify)
}

/// The best a relay can do between a pty and a unix socket: a thread of this process in a
/// bare blocking loop, `read` 64 KiB from one, `write_all` to the other, no poll, no
/// buffering, nothing else. It does what any relay must do for each byte and nothing more,
/// so it is the yardstick for "close to the syscall limit"; `cpu` is that thread's alone.
pub fn bare(route: Route, bytes: u64, verify: Verify) -> Result<Transfer> {
    let (master, slave) = raw_pty()?;
    let (near, far) = UnixStream::pair().context("socketpair")?;
    let (near, far) = (File::from(OwnedFd::from(near)), File::from(OwnedFd::from(far)));
    // `from` and `to` are the relay's; `writer` and `reader` the test's ends.
    let (mut from, mut to, writer, reader) = match route {
        Route::PtyToUnix => (master, near, slave, far),
        Route::UnixToPty => (near, master, far, slave),
        Route::UnixToUnix => return Err("bare: this route has no pty".into()),
    };
    let relaying = std::thread::spawn(move || -> std::io::Result<Duration> {
        let start = cpu_time(Who::Thread).map_err(std::io::Error::other)?;
        let mut buf = vec![0u8; CHUNK];
        loop {
            match from.read(&mut buf) {
                // A pty master whose slave closed reads EIO: the end, as for a relay.
                Ok(0) => break,
                Err(e) if e.raw_os_error() == Some(nix::libc::EIO) => break,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
                Ok(n) => match to.write_all(&buf[..n]) {
                    Ok(()) => {}
                    // The reader has gone: everything it wanted arrived.
                    Err(e) if e.raw_os_error() == Some(nix::libc::EIO) => break,
                    Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => break,
                    Err(e) => return Err(e),
                },
            }
        }
        Ok(cpu_time(Who::Thread).map_err(std::io::Error::other)? - start)
    });
    let moved = stream(writer, reader, bytes, verify);
    let cpu = relaying.join().map_err(|_| "the bare relay panicked")?;
    let moved = moved?;
    Ok(Transfer { cpu: cpu.context("the bare relay")?, ..moved })
}

/// Writes the warm-up and then `bytes` of the pattern into `writer` on a thread of its own,
/// reads and checks them from `reader`; the clock runs from the warm-up's arrival to the
/// last byte's (P2, P3, P16).
pub(crate) fn stream<W, R>(
    mut writer: W,
    mut reader: R,
    bytes: u64,
    verify: Verify,
) -> Result<Transfer>
where
    W: Write + Send + 'static,
    R: Read,
{
    let (go, wait_go) = channel::<()>();
    let (close, wait_close) = channel::<()>();
    let writing = std::thread::spawn(move || -> std::io::Result<()> {
        let pattern = Pattern::default();
        pattern.write(&mut writer, 0, WARMUP)?;
        writer.flush()?;
        if wait_go.recv().is_ok() {
            pattern.write(&mut writer, WARMUP, bytes)?;
            writer.flush()?;
            let _ = wait_close.recv();
        }
        Ok(())
    });
    let total = WARMUP + bytes;
    let mut checker = Checker::new(verify);
    let mut buf = vec![0u8; CHUNK];
    let mut start = None;
    let read = (|| -> Result<Instant> {
        while checker.received() < total {
            if start.is_none() && checker.received() >= WARMUP {
                start = Some(Instant::now());
                go.send(()).map_err(|_| "the writer stopped after the warm-up")?;
            }
            match reader.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => checker.consume(&buf[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(format!("read after {} bytes: {e}", checker.received())),
            }
        }
        Ok(Instant::now())
    })();
    let _ = close.send(());
    drop((go, close));
    drop(reader);
    let written = writing.join().map_err(|_| "the writer panicked")?;
    let at = read?;
    checker.finish(total)?;
    written.context("write into the relay")?;
    let start = start.ok_or("the warm-up never arrived")?;
    Ok(Transfer { units: bytes, elapsed: at - start, cpu: Duration::ZERO })
}

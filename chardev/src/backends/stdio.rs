//! `stdio`: the process's standard input and output (QEMU's `-chardev stdio`, `-serial stdio`,
//! `-nographic`). One per process. If stdin is a terminal it goes raw (QEMU's settings,
//! Ctrl-C still a signal unless `signal=off`) and is restored on drop, exit, panic and fatal
//! signals (see [`term`](crate::term)). `Opened` at once, `Closed` once at the end of stdin.
//!
//! Non-blocking I/O without touching fd 0 and fd 1 (QEMU #2423): O_NONBLOCK lives on the open
//! file description, which stdin and stdout share with the shell and every sibling; QEMU sets
//! it and leaves it set after exit, and the next program in the shell gets EAGAIN. We open
//! descriptions of our own instead, through `/proc/self/fd/N`, for ttys, fifos and pipes, so
//! even SIGKILL leaks nothing. Where that is wrong or impossible we duplicate the fd and keep
//! it blocking: regular files (a new description would start at offset 0 and lose
//! `O_APPEND`; they never block anyway) and sockets (which cannot be reopened). A blocking
//! duplicate is read only after poll(2) says POLLIN, and written at most `PIPE_BUF` bytes
//! after POLLOUT, so the loop is not held up. (A terminal we may not open, after `su`, also
//! ends up here; POLLOUT on a tty promises less room than on a pipe, so a write to one that
//! is not being drained can still wait.)

use std::fs::{File, OpenOptions};
use std::io::{self, IsTerminal};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};

use nix::errno::Errno;
use nix::libc;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::stat::{fstat, SFlag};

use crate::backend::{Chardev, Input, Io};
use crate::backends::fd_stream::{FdStream, Output};
use crate::error::{Error, Result};
use crate::options::{BackendSpec, ChardevSpec};
use crate::registry::BuildContext;
use crate::term::RawTerminal;

/// Builds a `stdio` backend; fails while another one exists in this process.
pub fn build(spec: &ChardevSpec, _cx: &BuildContext<'_>) -> Result<Box<dyn Chardev>> {
    let BackendSpec::Stdio { signal } = spec.backend else {
        return Err(Error::UnknownBackend(spec.backend.kind().into()));
    };
    let claim = Claim::take()?;
    let stdin = io::stdin();
    let stdout = io::stdout();
    let input = StdFd::open(stdin.as_fd(), "/proc/self/fd/0", Direction::Read)?;
    let output = StdFd::open(stdout.as_fd(), "/proc/self/fd/1", Direction::Write)?;
    let input_gate = input.gate()?;
    let output_gate = output.gate()?;
    // Last, after everything that can fail (QEMU 1507bd13: a failed open left the terminal
    // raw); if something after this failed, dropping the guard would restore it.
    let terminal = if stdin.as_fd().is_terminal() {
        Some(RawTerminal::enter(stdin.as_fd(), signal)?)
    } else {
        None
    };
    // A terminal's size, at start and on every SIGWINCH (an extension: `Event::Resize`).
    let winch = if terminal.is_some() { Winch::watch() } else { None };
    Ok(Box::new(Stdio {
        stream: FdStream::new("stdio", Some(input.fd), Output::Fd(File::from(output.fd))),
        input_gate,
        output_gate,
        winch,
        _terminal: terminal,
        _claim: claim,
    }))
}

/// The loop source of the SIGWINCH pipe (`FdStream` uses the first ones).
const WINCH: usize = 3;

/// The write end of the SIGWINCH pipe while a `stdio` on a terminal exists, -1 otherwise:
/// what the signal handler writes a byte to.
static WINCH_FD: AtomicI32 = AtomicI32::new(-1);

/// A self-pipe that SIGWINCH writes to, so that the loop reads the terminal's new size.
#[derive(Debug)]
struct Winch {
    read: OwnedFd,
    _write: OwnedFd,
}

impl Winch {
    /// The pipe and the handler (installed once, and only if SIGWINCH has its default
    /// disposition: an embedder's own handler stays). `None` if the pipe cannot be made.
    fn watch() -> Option<Winch> {
        let (read, write) = match nix::unistd::pipe2(
            nix::fcntl::OFlag::O_NONBLOCK | nix::fcntl::OFlag::O_CLOEXEC,
        ) {
            Ok(pair) => pair,
            Err(e) => {
                log::warn!("stdio: no terminal size updates: {e}");
                return None;
            }
        };
        WINCH_FD.store(std::os::fd::AsRawFd::as_raw_fd(&write), Ordering::SeqCst);
        crate::term::install_signal_handler(libc::SIGWINCH, on_winch);
        Some(Winch { read, _write: write })
    }
}

impl Drop for Winch {
    fn drop(&mut self) {
        // Before the pipe closes: the handler must not write to a reused fd number.
        WINCH_FD.store(-1, Ordering::SeqCst);
    }
}

extern "C" fn on_winch(_signal: libc::c_int) {
    let fd = WINCH_FD.load(Ordering::SeqCst);
    if fd >= 0 {
        // SAFETY: __errno_location, write(2) are async-signal-safe; errno is put back.
        unsafe {
            let errno = *libc::__errno_location();
            let _ = libc::write(fd, b"w".as_ptr().cast(), 1);
            *libc::__errno_location() = errno;
        }
    }
}

/// The terminal's size (TIOCGWINSZ), if it has one.
fn terminal_size(fd: BorrowedFd<'_>) -> Option<(u16, u16)> {
    // SAFETY: an all-zero winsize is a valid value of this plain C struct.
    let mut size: libc::winsize = unsafe { std::mem::zeroed() };
    // SAFETY: TIOCGWINSZ writes one winsize through the valid pointer given.
    let rc =
        unsafe { libc::ioctl(std::os::fd::AsRawFd::as_raw_fd(&fd), libc::TIOCGWINSZ, &mut size) };
    (rc == 0 && size.ws_col > 0 && size.ws_row > 0).then_some((size.ws_col, size.ws_row))
}

impl Stdio {
    /// Raises the terminal's size now (at registration, and after each SIGWINCH).
    fn tell_size(&self, io: &mut Io<'_>) {
        if let Some((cols, rows)) = terminal_size(io::stdin().as_fd()) {
            io.event(crate::Event::Resize { cols, rows });
        }
    }
}

/// The `stdio` backend: an [`FdStream`] over private descriptions of stdin and stdout, with
/// poll(2) gates where they had to stay blocking, and the terminal's raw-mode guard.
///
/// Fields drop in order: the fds close, the terminal is restored, then the claim is released.
#[derive(Debug)]
pub struct Stdio {
    stream: FdStream,
    /// Set when the input is a blocking duplicate: read only after POLLIN.
    input_gate: Option<OwnedFd>,
    /// Set when the output is a blocking duplicate: write only after POLLOUT.
    output_gate: Option<OwnedFd>,
    /// On a terminal: the SIGWINCH self-pipe.
    winch: Option<Winch>,
    /// Held for its drop, which restores the terminal (before the claim goes).
    _terminal: Option<RawTerminal>,
    _claim: Claim,
}

impl Chardev for Stdio {
    fn register(&mut self, io: &mut Io<'_>) -> Result<()> {
        self.stream.register(io)?;
        if let Some(winch) = &self.winch {
            let raw = std::os::fd::AsRawFd::as_raw_fd(&winch.read);
            io.register(&mut mio::unix::SourceFd(&raw), WINCH, mio::Interest::READABLE)
                .map_err(|e| Error::io("watch for terminal size changes", e))?;
            self.tell_size(io);
        }
        Ok(())
    }

    fn deregister(&mut self, registry: &mio::Registry) {
        self.stream.deregister(registry);
        if let Some(winch) = &self.winch {
            let raw = std::os::fd::AsRawFd::as_raw_fd(&winch.read);
            let _ = registry.deregister(&mut mio::unix::SourceFd(&raw));
        }
    }

    fn ready(&mut self, io: &mut Io<'_>, source: usize, event: &mio::event::Event) {
        if source == WINCH {
            if let Some(winch) = &self.winch {
                let mut buf = [0u8; 64];
                while matches!(nix::unistd::read(&winch.read, &mut buf), Ok(n) if n > 0) {}
            }
            self.tell_size(io);
            return;
        }
        self.stream.ready(io, source, event);
    }

    fn read(&mut self, io: &mut Io<'_>, buf: &mut [u8], fds: &mut Vec<OwnedFd>) -> Input {
        if let Some(gate) = &self.input_gate {
            if !poll_ready(gate.as_fd(), PollFlags::POLLIN) {
                // Edge-triggered readiness stays correct: nothing is pending, so the next
                // byte makes a new edge.
                return Input::WouldBlock;
            }
        }
        self.stream.read(io, buf, fds)
    }

    fn write(&mut self, buf: &[u8], fds: &[BorrowedFd<'_>]) -> io::Result<usize> {
        let Some(gate) = &self.output_gate else { return self.stream.write(buf, fds) };
        crate::backend::refuse_fds("stdio", fds)?;
        if !poll_ready(gate.as_fd(), PollFlags::POLLOUT) {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        // POLLOUT on a pipe promises room for PIPE_BUF bytes, so this write does not wait.
        self.stream.write(&buf[..buf.len().min(libc::PIPE_BUF)], fds)
    }

    fn write_fd(&self) -> Option<BorrowedFd<'_>> {
        self.stream.write_fd()
    }

    fn kind(&self) -> &'static str {
        "stdio"
    }

    fn filename(&self) -> String {
        "stdio".into()
    }
}

/// Whether `fd` has one of `flags` (or an error or hang-up, which the I/O call will report)
/// right now.
fn poll_ready(fd: BorrowedFd<'_>, flags: PollFlags) -> bool {
    loop {
        let mut fds = [PollFd::new(fd, flags)];
        match poll(&mut fds, PollTimeout::ZERO) {
            Ok(0) => return false,
            Ok(_) => return true,
            Err(Errno::EINTR) => continue,
            // Let the read or write itself fail with the real error.
            Err(_) => return true,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Direction {
    Read,
    Write,
}

/// Our own fd on stdin or stdout.
struct StdFd {
    fd: OwnedFd,
    /// A blocking duplicate, to be gated with poll(2).
    blocking: bool,
}

impl StdFd {
    fn open(std: BorrowedFd<'_>, proc_path: &'static str, direction: Direction) -> Result<StdFd> {
        let name = match direction {
            Direction::Read => "stdin",
            Direction::Write => "stdout",
        };
        let stat = fstat(std).map_err(|e| Error::io_path("inspect", name, e.into()))?;
        let kind = SFlag::from_bits_truncate(stat.st_mode) & SFlag::S_IFMT;
        let dup = || std.try_clone_to_owned().map_err(|e| Error::io_path("duplicate", name, e));
        if kind == SFlag::S_IFREG || kind == SFlag::S_IFBLK {
            // Shares the offset and O_APPEND with the shell; a disk never blocks for long.
            return Ok(StdFd { fd: dup()?, blocking: false });
        }
        let reopened = OpenOptions::new()
            .read(direction == Direction::Read)
            .write(direction == Direction::Write)
            // std adds O_CLOEXEC. O_NOCTTY: a daemon's stdin must not become its terminal.
            .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
            .open(proc_path);
        match reopened {
            Ok(file) => Ok(StdFd { fd: file.into(), blocking: false }),
            Err(e) => {
                // Sockets answer ENXIO; a fifo without a reader, a tty we may not open, or no
                // /proc land here too.
                log::debug!("stdio: cannot reopen {name} ({e}); using it blocking behind poll");
                Ok(StdFd { fd: dup()?, blocking: true })
            }
        }
    }

    /// A second fd on the same description to poll, if this one must be gated.
    fn gate(&self) -> Result<Option<OwnedFd>> {
        if !self.blocking {
            return Ok(None);
        }
        self.fd.try_clone().map(Some).map_err(|e| Error::io("duplicate a stdio fd", e))
    }
}

/// Set while a `stdio` backend exists: there is one stdin per process.
static CLAIMED: AtomicBool = AtomicBool::new(false);

/// This process's stdio, taken by one backend until it is dropped.
#[derive(Debug)]
struct Claim;

impl Claim {
    fn take() -> Result<Claim> {
        if CLAIMED.swap(true, Ordering::AcqRel) {
            return Err(Error::option(
                "backend",
                "stdio",
                "cannot use stdio by multiple character devices",
            ));
        }
        Ok(Claim)
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        CLAIMED.store(false, Ordering::Release);
    }
}

//! A byte stream over plain fds (QEMU's `char-fd`): an input fd and an output fd, which may
//! be the same. `file`, `pipe` and `stdio` are built on it.
//!
//! Input that epoll cannot watch (regular files, `/dev/null`) is always ready: the loop reads
//! it while the frontend has room, up to the end. The end of input is `Closed`, once, and the
//! input is not read again (QEMU removes the watch too).

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

use mio::unix::SourceFd;
use mio::Interest;

use crate::backend::{refuse_fds, Chardev, Input, Io};
use crate::error::{Error, Result};
use crate::frontend::callbacks::Event;

const INPUT: usize = 0;

/// Where output goes.
#[derive(Debug)]
pub enum Output {
    /// Nowhere: writes are accepted and dropped.
    None,
    /// Its own fd.
    Fd(File),
    /// The input fd, opened read-write.
    Input,
}

/// A chardev over an input fd and an output fd.
#[derive(Debug)]
pub struct FdStream {
    kind: &'static str,
    input: Option<File>,
    output: Output,
    /// The input is registered with epoll (false: always ready, or not registered yet).
    polled: bool,
    ended: bool,
}

impl FdStream {
    /// A stream of backend type `kind` (for errors and `query-chardev`).
    pub fn new(kind: &'static str, input: Option<OwnedFd>, output: Output) -> FdStream {
        FdStream { kind, input: input.map(File::from), output, polled: false, ended: false }
    }

    fn out(&self) -> Option<&File> {
        match &self.output {
            Output::None => None,
            Output::Fd(f) => Some(f),
            Output::Input => self.input.as_ref(),
        }
    }

    fn end(&mut self, io: &mut Io<'_>) -> Input {
        self.ended = true;
        if let Some(input) = &self.input {
            if self.polled {
                // Best effort: the fd may already be gone from epoll with its last holder.
                let _ = io.registry().deregister(&mut SourceFd(&input.as_raw_fd()));
                self.polled = false;
            }
        }
        io.event(Event::Closed);
        Input::End
    }
}

impl Chardev for FdStream {
    fn register(&mut self, io: &mut Io<'_>) -> Result<()> {
        if let Some(input) = &self.input {
            let raw = input.as_raw_fd();
            match io.register(&mut SourceFd(&raw), INPUT, Interest::READABLE) {
                Ok(()) => self.polled = true,
                // epoll refuses regular files and the like: they are always readable.
                Err(e) if e.raw_os_error() == Some(nix::libc::EPERM) => io.input_ready(),
                Err(e) => return Err(Error::io("watch the input of a chardev", e)),
            }
        }
        io.event(Event::Opened);
        Ok(())
    }

    fn deregister(&mut self, registry: &mio::Registry) {
        if let (Some(input), true) = (&self.input, self.polled) {
            let _ = registry.deregister(&mut SourceFd(&input.as_raw_fd()));
            self.polled = false;
        }
    }

    fn read(&mut self, io: &mut Io<'_>, buf: &mut [u8], _fds: &mut Vec<OwnedFd>) -> Input {
        if self.ended {
            return Input::End;
        }
        let Some(mut input) = self.input.as_ref() else { return Input::End };
        match input.read(buf) {
            Ok(0) => self.end(io),
            Ok(n) => Input::Data(n),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Input::WouldBlock,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Input::Data(0),
            Err(e) => {
                log::info!("{} chardev input ended: {e}", self.kind);
                self.end(io)
            }
        }
    }

    fn write(&mut self, buf: &[u8], fds: &[BorrowedFd<'_>]) -> io::Result<usize> {
        refuse_fds(self.kind, fds)?;
        match self.out() {
            Some(mut out) => out.write(buf),
            None => Ok(buf.len()),
        }
    }

    fn write_fd(&self) -> Option<BorrowedFd<'_>> {
        self.out().map(AsFd::as_fd)
    }

    fn kind(&self) -> &'static str {
        self.kind
    }
}

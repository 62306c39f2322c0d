//! Writing a stream to an fd: a buffered `Write` that blocks, whatever `O_NONBLOCK` says,
//! and raises no SIGPIPE on a socket whose reader left.
//!
//! ```no_run
//! use std::os::unix::net::UnixStream;
//! use qevm::{BlockingWriter, Progress, Snapshot};
//! # fn run(socket: UnixStream, ram: &std::sync::Mutex<Vec<u8>>) -> Result<(), qevm::Error> {
//! // A migration fd (`getfd`, then `migrate fd:NAME`), whatever mode its sender left it in.
//! let out = BlockingWriter::new(socket.into()).map_err(|e| qevm::Error::io("use the fd", 0, e))?;
//! let progress = Progress::new(); // shared with `query-migrate` and `migrate_cancel`
//! qevm::save(out, &Snapshot { machine_type: "pc", ram, devices: &[] }, &progress)?;
//! # Ok(()) }
//! ```

use std::fs::File;
use std::io::{self, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::FileTypeExt;

/// A buffered `Write` to an fd that blocks, whatever `O_NONBLOCK` says.
///
/// `O_NONBLOCK` lives on the open file description, which a peer holding the same
/// description (a parent's socket, a passed fd) can change at any time. So a write that
/// answers `EAGAIN` waits for the fd to become writable with poll(2), then writes the rest:
/// no byte is lost or repeated, and no time is slept. `EINTR` is retried. Sockets are
/// written with `sendmsg(MSG_NOSIGNAL)`, so a vanished peer is an `EPIPE` error, not a
/// SIGPIPE; files and pipes with write(2) (Rust programs ignore SIGPIPE from the start, so
/// a pipe whose reader left gives `EPIPE` too).
///
/// Bytes are gathered in a buffer (64 KiB unless told otherwise) and written when it
/// fills, on [`flush`](Write::flush), and by [`into_inner`](BlockingWriter::into_inner);
/// writes larger than the buffer go straight to the fd. Dropping the writer does not flush,
/// so that dropping a cancelled migration never waits on a stuck reader.
#[derive(Debug)]
pub struct BlockingWriter {
    file: File,
    socket: bool,
    buf: Vec<u8>,
    capacity: usize,
}

impl BlockingWriter {
    /// The default buffer size.
    pub const DEFAULT_CAPACITY: usize = 64 * 1024;

    /// Writes to `fd`, with a 64 KiB buffer.
    pub fn new(fd: OwnedFd) -> io::Result<BlockingWriter> {
        BlockingWriter::with_capacity(fd, BlockingWriter::DEFAULT_CAPACITY)
    }

    /// Writes to `fd`, with a buffer of `capacity` bytes (at least 1).
    pub fn with_capacity(fd: OwnedFd, capacity: usize) -> io::Result<BlockingWriter> {
        let file = File::from(fd);
        let socket = file.metadata()?.file_type().is_socket();
        let capacity = capacity.max(1);
        Ok(BlockingWriter { file, socket, buf: Vec::with_capacity(capacity), capacity })
    }

    /// The fd written to.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }

    /// Flushes, then gives the fd back.
    pub fn into_inner(mut self) -> io::Result<OwnedFd> {
        self.flush()?;
        Ok(OwnedFd::from(self.file))
    }

    /// One write(2) or send(2) of some of `data`, waiting while the fd would block.
    fn write_some(&self, data: &[u8]) -> io::Result<usize> {
        loop {
            let r = if self.socket {
                send(self.file.as_fd(), &[io::IoSlice::new(data)])
            } else {
                (&self.file).write(data)
            };
            match r {
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    // Someone made the description non-blocking: wait as a blocking
                    // write would, on the kernel's word that there is room.
                    wait_writable(self.file.as_fd())?;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Writes all of `data` to the fd.
    fn write_raw(&self, mut data: &[u8]) -> io::Result<()> {
        while !data.is_empty() {
            match self.write_some(data)? {
                0 => return Err(io::ErrorKind::WriteZero.into()),
                n => data = &data[n..],
            }
        }
        Ok(())
    }

    fn flush_buf(&mut self) -> io::Result<()> {
        // On an error the unwritten bytes stay buffered: they are not lost, and none that
        // were written will be written again.
        let mut done = 0;
        let r = loop {
            if done == self.buf.len() {
                break Ok(());
            }
            match self.write_some(&self.buf[done..]) {
                Ok(0) => break Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => done += n,
                Err(e) => break Err(e),
            }
        };
        self.buf.drain(..done);
        r
    }
}

impl Write for BlockingWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if self.buf.len() + data.len() > self.capacity {
            self.flush_buf()?;
        }
        if data.len() >= self.capacity {
            // Large writes skip the buffer; report each partial write so that callers
            // counting progress see it move.
            let n = self.write_some(data)?;
            if n == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
            return Ok(n);
        }
        self.buf.extend_from_slice(data);
        Ok(data.len())
    }

    fn write_all(&mut self, data: &[u8]) -> io::Result<()> {
        if self.buf.len() + data.len() > self.capacity {
            self.flush_buf()?;
        }
        if data.len() >= self.capacity {
            return self.write_raw(data);
        }
        self.buf.extend_from_slice(data);
        Ok(())
    }

    /// Vectored writes go straight to the fd (after what is buffered), so that pages are
    /// sent from the RAM without a copy into the buffer.
    fn write_vectored(&mut self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        self.flush_buf()?;
        loop {
            let r = if self.socket {
                send(self.file.as_fd(), bufs)
            } else {
                (&self.file).write_vectored(bufs)
            };
            match r {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    wait_writable(self.file.as_fd())?;
                }
                r => return r,
            }
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        self.flush_buf()
    }
}

/// The most slices one sendmsg(2) or writev(2) takes: more is `EMSGSIZE` (`EINVAL`). The
/// RAM section's writes are cut to this size.
pub(crate) const IOV_MAX: usize = 1024;

/// One sendmsg(2) of (the first [`IOV_MAX`] of) `bufs` with `MSG_NOSIGNAL`: a peer that has
/// gone is `EPIPE`, not a SIGPIPE. The caller retries `EINTR`.
fn send(socket: BorrowedFd<'_>, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
    use nix::sys::socket::{sendmsg, MsgFlags};
    // A caller with more slices writes the rest next.
    let bufs = &bufs[..bufs.len().min(IOV_MAX)];
    sendmsg::<()>(socket.as_raw_fd(), bufs, &[], MsgFlags::MSG_NOSIGNAL, None)
        .map_err(io::Error::from)
}

/// Waits, for as long as it takes, until `fd` is writable (or has failed: the next write
/// says how).
fn wait_writable(fd: BorrowedFd<'_>) -> io::Result<()> {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    loop {
        match poll(&mut [PollFd::new(fd, PollFlags::POLLOUT)], PollTimeout::NONE) {
            Ok(_) => return Ok(()),
            Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
}

//! Output a frontend answers with from its callbacks, queued so that the loop never waits.
//!
//! A frontend that writes from [`Frontend::receive`] or [`Frontend::event`] (a monitor, a
//! line protocol, an echo) runs on the loop thread: if it waited there for a peer that does
//! not read, every other chardev of the loop would wait with it. An [`OutputQueue`] writes
//! what the backend takes now, keeps the rest in order, and writes it when the loop reports
//! room ([`FrontendHandle::notify_writable`], then [`Frontend::writable`]). Its fill level
//! feeds back into [`Frontend::can_receive`], so a peer that does not read stops being read:
//! it is slowed down by its own socket, and nobody else is.
//!
//! ```
//! use chardev::{Event, Frontend, FrontendHandle, OutputQueue};
//! use std::os::fd::OwnedFd;
//!
//! /// Answers every line with its length, without ever blocking the loop.
//! struct Lengths { out: OutputQueue, line: Vec<u8> }
//!
//! impl Frontend for Lengths {
//!     fn can_receive(&mut self) -> usize { self.out.can_receive(4096) }
//!     fn receive(&mut self, data: &[u8], _fds: Vec<OwnedFd>) {
//!         for &b in data {
//!             if b != b'\n' { self.line.push(b); continue }
//!             let reply = format!("{}\n", self.line.len());
//!             self.line.clear();
//!             if self.out.write(reply.as_bytes()).is_err() {
//!                 // Over the bound: the peer reads nothing. Here the reply is dropped.
//!             }
//!         }
//!     }
//!     fn event(&mut self, event: Event) {
//!         if event == Event::Closed { self.out.clear() } // nothing is owed to a new peer
//!     }
//!     fn writable(&mut self) { let _ = self.out.flush(); }
//! }
//!
//! # let lp = chardev::EventLoop::spawn()?;
//! # let registry = chardev::Registry::new(lp.handle());
//! # registry.add_str("null,id=n0")?;
//! let handle: FrontendHandle = registry.connect("n0")?;
//! handle.set_frontend(Lengths { out: OutputQueue::new(handle.clone()), line: Vec::new() });
//! # Ok::<(), chardev::Error>(())
//! ```
//!
//! A frontend that does not use a queue pays nothing for it: the loop knows nothing of it.
//!
//! [`Frontend::receive`]: crate::Frontend::receive
//! [`Frontend::event`]: crate::Frontend::event
//! [`Frontend::writable`]: crate::Frontend::writable
//! [`Frontend::can_receive`]: crate::Frontend::can_receive

use std::fmt;
use std::io;

use crate::frontend::FrontendHandle;

/// Default [`OutputQueue::pause_at`]: 64 KiB waiting stops input from the peer.
pub const DEFAULT_PAUSE_AT: usize = 64 * 1024;

/// Default [`OutputQueue::limit`]: 1 MiB waiting refuses further output.
pub const DEFAULT_LIMIT: usize = 1 << 20;

/// A write refused because the queue is at its bound: the peer reads nothing, and nothing of
/// the refused write was queued (output is never cut in the middle of a write).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Full {
    /// Bytes waiting for the peer.
    pub queued: usize,
    /// The queue's bound ([`OutputQueue::limit`]).
    pub limit: usize,
}

impl fmt::Display for Full {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "output queue full: {} bytes wait for a peer that does not read (limit {})",
            self.queued, self.limit
        )
    }
}

impl std::error::Error for Full {}

/// A bounded queue of one frontend's output, written without ever blocking (see the
/// [module docs](self)).
///
/// Bytes go out in the order they were given, whole: a write is taken entirely or refused.
/// Two bounds shape it:
///
/// - at [`pause_at`](Self::pause_at) bytes waiting, [`can_receive`](Self::can_receive) says
///   0, so the loop stops reading the peer; once the queue drains below it,
///   [`flush`](Self::flush) lets input in again ([`FrontendHandle::accept_input`]);
/// - at [`limit`](Self::limit) bytes waiting, a write is refused with [`Full`], and the caller
///   decides: drop that output, disconnect the peer, or stop producing. The bound is looked
///   at before a write, so one write is never cut, and a write larger than the limit still
///   goes out into an emptier queue: the queue holds at most `limit` bytes plus one write.
///
/// When the backend refuses for good (no peer, the peer went away, the handle detached), what
/// waits is dropped (it was for a connection that is gone; the frontend gets `Closed`), and
/// [`flush`](Self::flush) returns the error.
///
/// The frontend must call [`flush`](Self::flush) from its [`Frontend::writable`]: that is the
/// call the queue asks the loop for when the backend is full. The queue is `Send`, so other
/// threads may [`push`](Self::push) into it behind a mutex (events, say).
///
/// [`Frontend::writable`]: crate::Frontend::writable
pub struct OutputQueue {
    handle: FrontendHandle,
    buf: Vec<u8>,
    /// How much of `buf` is written.
    sent: usize,
    pause_at: usize,
    limit: usize,
    /// A `writable` call was asked for and no flush came since: do not ask again.
    armed: bool,
    /// `can_receive` said 0: input waits for `accept_input`.
    paused: bool,
}

impl fmt::Debug for OutputQueue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OutputQueue")
            .field("label", &self.handle.label())
            .field("pending", &self.pending())
            .field("pause_at", &self.pause_at)
            .field("limit", &self.limit)
            .field("paused", &self.paused)
            .finish()
    }
}

impl OutputQueue {
    /// A queue for output to `handle`'s chardev, with the default bounds
    /// ([`DEFAULT_PAUSE_AT`], [`DEFAULT_LIMIT`]).
    pub fn new(handle: FrontendHandle) -> OutputQueue {
        OutputQueue::with_bounds(handle, DEFAULT_PAUSE_AT, DEFAULT_LIMIT)
    }

    /// A queue that stops input at `pause_at` bytes waiting and refuses writes at `limit`
    /// bytes waiting (a `pause_at` of 0 counts as 1, a `limit` below `pause_at` is raised to
    /// it).
    pub fn with_bounds(handle: FrontendHandle, pause_at: usize, limit: usize) -> OutputQueue {
        let pause_at = pause_at.max(1);
        OutputQueue {
            handle,
            buf: Vec::new(),
            sent: 0,
            pause_at,
            limit: limit.max(pause_at),
            armed: false,
            paused: false,
        }
    }

    /// The handle the queue writes through.
    pub fn handle(&self) -> &FrontendHandle {
        &self.handle
    }

    /// At this many bytes waiting, [`can_receive`](Self::can_receive) says 0.
    pub fn pause_at(&self) -> usize {
        self.pause_at
    }

    /// At this many bytes waiting, writes are refused with [`Full`].
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Bytes waiting for the peer.
    pub fn pending(&self) -> usize {
        self.buf.len() - self.sent
    }

    /// Whether nothing waits.
    pub fn is_empty(&self) -> bool {
        self.pending() == 0
    }

    /// Whether [`pause_at`](Self::pause_at) bytes or more wait: input should wait too.
    pub fn is_backed_up(&self) -> bool {
        self.pending() >= self.pause_at
    }

    /// Whether [`limit`](Self::limit) bytes or more wait: the next write is refused.
    pub fn is_full(&self) -> bool {
        self.pending() >= self.limit
    }

    /// What the frontend's [`can_receive`](crate::Frontend::can_receive) should answer when
    /// it could take `room` bytes: `room` while the queue is below
    /// [`pause_at`](Self::pause_at), else 0, and the queue lets input in again once it has
    /// drained below that.
    pub fn can_receive(&mut self, room: usize) -> usize {
        if self.is_backed_up() {
            self.paused = true;
            0
        } else {
            room
        }
    }

    /// Writes `data` behind what waits, never blocking: what the backend takes now goes at
    /// once (straight from `data` when nothing waits), the rest is queued and written when
    /// the loop reports room. Refused with [`Full`], nothing queued, at the
    /// [`limit`](Self::limit). Call it on the loop thread (from a callback); other threads
    /// use [`push`](Self::push).
    pub fn write(&mut self, data: &[u8]) -> Result<(), Full> {
        self.check_room()?;
        if !self.is_empty() {
            self.buf.extend_from_slice(data);
            self.arm();
            return Ok(());
        }
        let mut rest = data;
        while !rest.is_empty() {
            match self.handle.write(rest) {
                Ok(0) => break,
                Ok(n) => rest = &rest[n.min(rest.len())..],
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => {
                    // No peer (a server without a client): output is lost, as QEMU loses it.
                    log::debug!("chardev '{}': output lost: {e}", self.handle.label());
                    return Ok(());
                }
            }
        }
        if !rest.is_empty() {
            self.buf.extend_from_slice(rest);
            self.arm();
        }
        Ok(())
    }

    /// Queues `data` without writing any of it here, and asks the loop to call the
    /// frontend's [`writable`](crate::Frontend::writable), which flushes it. For producers
    /// that are not the frontend (another thread emitting events); refused with [`Full`],
    /// nothing queued, at the [`limit`](Self::limit).
    pub fn push(&mut self, data: &[u8]) -> Result<(), Full> {
        self.check_room()?;
        self.buf.extend_from_slice(data);
        self.arm();
        Ok(())
    }

    /// Writes what waits as far as the backend takes it now, and asks for another
    /// [`writable`](crate::Frontend::writable) call if some remains. Lets input in again once
    /// the queue is below [`pause_at`](Self::pause_at). Call it from the frontend's
    /// `writable`. An error other than a full backend drops what waits and is returned.
    pub fn flush(&mut self) -> io::Result<()> {
        self.armed = false;
        let mut result = Ok(());
        while !self.is_empty() {
            match self.handle.write(&self.buf[self.sent..]) {
                Ok(0) => {
                    self.arm();
                    break;
                }
                Ok(n) => self.sent += n.min(self.pending()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.arm();
                    break;
                }
                Err(e) => {
                    log::debug!(
                        "chardev '{}': {} bytes of output lost: {e}",
                        self.handle.label(),
                        self.pending()
                    );
                    self.sent = self.buf.len();
                    result = Err(e);
                }
            }
        }
        self.compact();
        self.resume_input();
        result
    }

    /// Drops what waits (a new peer is owed nothing of the old one's output), and lets input
    /// in again if the queue held it back.
    pub fn clear(&mut self) {
        self.buf.clear();
        self.sent = 0;
        self.compact();
        // A `writable` call may still come; a later write asks again if it needs one.
        self.armed = false;
        self.resume_input();
    }

    fn check_room(&self) -> Result<(), Full> {
        if self.is_full() {
            return Err(Full { queued: self.pending(), limit: self.limit });
        }
        Ok(())
    }

    fn arm(&mut self) {
        if !self.armed {
            self.armed = true;
            self.handle.notify_writable();
        }
    }

    fn resume_input(&mut self) {
        if self.paused && !self.is_backed_up() {
            self.paused = false;
            self.handle.accept_input();
        }
    }

    /// Moves what waits to the front once as much has been written (amortised: each byte
    /// moves at most once per byte written before it), and gives a burst's memory back.
    fn compact(&mut self) {
        if self.is_empty() {
            self.buf.clear();
            self.sent = 0;
            if self.buf.capacity() > self.pause_at {
                self.buf = Vec::new();
            }
        } else if self.sent >= self.pending() {
            self.buf.drain(..self.sent);
            self.sent = 0;
        }
    }
}

//! The backend side: what a byte-and-fd endpoint must do to live on an [`EventLoop`].
//!
//! A backend registers its sources with the loop, turns readiness into input that the loop
//! hands to the frontend (never more than the frontend said it can take), takes output from
//! the frontend handle, and raises events. The loop owns flow control, event ordering and
//! delivery; a backend only moves bytes.
//!
//! [`EventLoop`]: crate::EventLoop

use std::any::Any;
use std::io;
use std::os::fd::{BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use mio::{Interest, Token};

use crate::cell::Cell;
use crate::error::{Error, Result};
use crate::event_loop::request::Request;
use crate::frontend::callbacks::Event;
use crate::serial::SerialLine;
use crate::sessions::Sessions;
use crate::token::SourceToken;

pub use crate::token::SOURCES_PER_CHARDEV;

/// What one [`Chardev::read`] produced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Input {
    /// This many bytes were placed at the start of the buffer (0 is fine: all were filtered).
    Data(usize),
    /// This many bytes, and they emptied the source: the loop reads again only after the next
    /// readiness edge. Saves the read that would only say `WouldBlock` after a short read on a
    /// stream (epoll(7)); only for sources where a short read really means empty.
    Drained(usize),
    /// Nothing more to read until the next readiness event.
    WouldBlock,
    /// The input side ended (EOF, hang-up or error). The backend has already raised `Closed`
    /// if a connection ended; the loop stops reading until the backend reports input again.
    End,
}

/// A character device backend (QEMU's `Chardev`): the host side of a guest's byte stream.
///
/// Loop-side methods (`register`, `ready`, `read`, `timer`, `disconnect`) run on the loop
/// thread; `write` and the control methods run on whatever thread holds the frontend handle,
/// serialised with the loop by a lock. No method is called while a frontend callback runs.
pub trait Chardev: Any + Send {
    /// Registers this backend's sources with the loop, and raises the events that hold from
    /// the start (`Opened` for a backend that is connected as soon as it exists).
    fn register(&mut self, io: &mut Io<'_>) -> Result<()>;

    /// Removes every source from the loop before the backend is dropped or swapped out.
    fn deregister(&mut self, registry: &mio::Registry);

    /// Readiness on source `source` (the index given to [`Io::token`]). A backend that now
    /// has input to read calls [`Io::input_ready`].
    fn ready(&mut self, io: &mut Io<'_>, source: usize, event: &mio::event::Event) {
        let _ = source;
        if event.is_readable() || event.is_read_closed() || event.is_error() {
            io.input_ready();
        }
    }

    /// Reads at most `buf.len()` bytes of input (and the fds that came with them).
    fn read(&mut self, io: &mut Io<'_>, buf: &mut [u8], fds: &mut Vec<OwnedFd>) -> Input {
        let _ = (io, buf, fds);
        Input::End
    }

    /// Writes what it can of `buf` without blocking; `WouldBlock` when nothing fits now.
    /// `fds` go with the first byte written.
    fn write(&mut self, buf: &[u8], fds: &[BorrowedFd<'_>]) -> io::Result<usize>;

    /// The fd whose writability tells when [`Chardev::write`] can take more, if it can block.
    fn write_fd(&self) -> Option<BorrowedFd<'_>> {
        None
    }

    /// A frontend waits for the output to take more, and [`Chardev::write_fd`] is not
    /// writable now: a backend that can report the next writable edge with
    /// [`Io::output_ready`] (from its own registration: one that always watches writability,
    /// or one that turns it on now) returns true. Otherwise the loop watches a duplicate of
    /// the output fd itself, which costs a dup, two `epoll_ctl`s and a close per wait.
    fn watch_output(&mut self, io: &mut Io<'_>) -> bool {
        let _ = io;
        false
    }

    /// Whether this backend's own registration reports writable edges of
    /// [`Chardev::write_fd`] at all times, with nothing to turn on. After a write came back
    /// short on the loop thread, the loop then waits for the next edge instead of looking
    /// for room first: a pty reports room as soon as a few bytes have gone, and each look
    /// would cost a poll and a small write. (Watches turned on at need are checked as they
    /// are armed, so looking first only saves the arming.)
    fn output_always_watched(&self) -> bool {
        false
    }

    /// A [`Waker`] of this backend was woken (see [`Io::waker`]). The default says that
    /// input can be read.
    fn woken(&mut self, io: &mut Io<'_>) {
        io.input_ready();
    }

    /// A timer set with [`Io::add_timer`] has fired.
    fn timer(&mut self, io: &mut Io<'_>, id: u64) {
        let _ = (io, id);
    }

    /// Drops the current connection (a server listens again, a client may reconnect).
    fn disconnect(&mut self, io: &mut Io<'_>) {
        let _ = io;
    }

    /// The serial line this backend drives, for a backend on a host tty: breaks, line
    /// parameters and modem lines. `None` (the default): a frontend's requests for them
    /// fail with `Unsupported`.
    fn serial_line(&mut self) -> Option<&mut dyn SerialLine> {
        None
    }

    /// The backend's splice(2) paths, for one whose input and output can move through a
    /// pipe without entering user space (a plain socket connection). `None` (the default):
    /// the loop reads input as usual, and [`FrontendHandle::write_from_pipe`] fails with
    /// `Unsupported`. Asked once per read while a frontend offers a pipe.
    ///
    /// [`FrontendHandle::write_from_pipe`]: crate::FrontendHandle::write_from_pipe
    fn splice(&mut self) -> Option<&mut dyn Splice> {
        None
    }

    /// Adds what only the backend knows to `counters`: connections, output its viewers or
    /// its backlog dropped (see [`Counters`](crate::Counters)). The default adds nothing.
    fn counters(&self, counters: &mut crate::Counters) {
        let _ = counters;
    }

    /// The sessions of a backend that serves many connections at once (a `socket` server
    /// with `clients=` or `history=`). `None` (the default): it has none to show.
    fn sessions(&mut self) -> Option<&mut dyn Sessions> {
        None
    }

    /// The last `max` bytes of output (all it keeps for `None`) of a backend that keeps a
    /// history (`history=`), without draining it. `None`: it keeps none.
    fn history(&self, max: Option<usize>) -> Option<Vec<u8>> {
        let _ = max;
        None
    }

    /// The slave path of a pty backend (QMP's `chardev-add` returns it).
    fn pty_path(&self) -> Option<std::path::PathBuf> {
        None
    }

    /// Whether this backend can carry file descriptors.
    fn can_pass_fds(&self) -> bool {
        false
    }

    /// The backend type as QEMU names it (`file`, `socket`, ...).
    fn kind(&self) -> &'static str;

    /// The filename that `query-chardev` shows, in QEMU's format.
    fn filename(&self) -> String {
        self.kind().to_string()
    }
}

/// Rejects fds on a backend that cannot pass them (contract point 5).
pub fn refuse_fds(kind: &'static str, fds: &[BorrowedFd<'_>]) -> io::Result<()> {
    if fds.is_empty() {
        Ok(())
    } else {
        Err(Error::Unsupported { what: kind.into(), operation: "pass file descriptors" }.into())
    }
}

/// Moving bytes with splice(2): a capability that a backend offers through
/// [`Chardev::splice`], for relays that join two chardevs without copying through user space
/// ([`Frontend::splice_pipe`]).
///
/// [`Frontend::splice_pipe`]: crate::Frontend::splice_pipe
pub trait Splice {
    /// Moves up to `len` bytes of input straight into `pipe`, for a frontend that offers one
    /// ([`Frontend::splice_pipe`]). `None`: the input cannot be moved that way now (no
    /// connection, a telnet or websocket layer), and the loop reads it as usual.
    /// `Some(Ok(0))` is the end of the stream: the loop then reads as usual, which reports it.
    /// Fds that came with the bytes are lost (splice cannot carry them).
    ///
    /// [`Frontend::splice_pipe`]: crate::Frontend::splice_pipe
    fn splice_input(
        &mut self,
        io: &mut Io<'_>,
        pipe: BorrowedFd<'_>,
        len: usize,
    ) -> Option<io::Result<usize>>;

    /// Writes up to `len` bytes out of `pipe` without blocking
    /// ([`FrontendHandle::write_from_pipe`]); `Unsupported` where output cannot be spliced
    /// now (a telnet or websocket layer frames it).
    ///
    /// [`FrontendHandle::write_from_pipe`]: crate::FrontendHandle::write_from_pipe
    fn write_from_pipe(&mut self, pipe: BorrowedFd<'_>, len: usize) -> io::Result<usize>;
}

/// A pending timer of one chardev.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct TimerEntry {
    pub(crate) at: Instant,
    pub(crate) key: usize,
    pub(crate) generation: u32,
    pub(crate) id: u64,
}

/// An event raised by a backend, placed after `offset` bytes of the current read's data.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RaisedEvent {
    pub(crate) offset: usize,
    pub(crate) event: Event,
}

/// The loop's side of one backend call: how to register sources, raise events, set timers.
pub struct Io<'a> {
    pub(crate) registry: &'a mio::Registry,
    pub(crate) cell: &'a Arc<Cell>,
    pub(crate) key: usize,
    pub(crate) generation: u32,
    pub(crate) input_ready: bool,
    pub(crate) output_ready: bool,
    pub(crate) events: &'a mut Vec<RaisedEvent>,
    pub(crate) timers: &'a mut Vec<TimerEntry>,
}

impl std::fmt::Debug for Io<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Io")
            .field("key", &self.key)
            .field("generation", &self.generation)
            .field("input_ready", &self.input_ready)
            .field("output_ready", &self.output_ready)
            .field("events", &self.events)
            .field("timers", &self.timers)
            .finish_non_exhaustive()
    }
}

impl<'a> Io<'a> {
    pub(crate) fn new(
        registry: &'a mio::Registry,
        cell: &'a Arc<Cell>,
        generation: u32,
        events: &'a mut Vec<RaisedEvent>,
        timers: &'a mut Vec<TimerEntry>,
    ) -> Io<'a> {
        let key = cell.key();
        Io {
            registry,
            cell,
            key,
            generation,
            input_ready: false,
            output_ready: false,
            events,
            timers,
        }
    }

    /// A [`Waker`] for this backend: how it makes the loop call [`Chardev::woken`] later,
    /// from any thread or from another chardev's callback (a `hub` whose member received
    /// input). Wakes meant for an earlier backend of the chardev (before `chardev-change`)
    /// are dropped.
    pub fn waker(&self) -> Waker {
        Waker {
            cell: Arc::downgrade(self.cell),
            generation: self.generation,
            queued: Arc::new(AtomicBool::new(false)),
        }
    }

    /// The mio registry to register sources with.
    pub fn registry(&self) -> &mio::Registry {
        self.registry
    }

    /// The token for this chardev's source number `source` (below [`SOURCES_PER_CHARDEV`]).
    pub fn token(&self, source: usize) -> Token {
        SourceToken::new(self.key, source).into()
    }

    /// Registers `src` as source number `source` with `interest`.
    pub fn register(
        &self,
        src: &mut (impl mio::event::Source + ?Sized),
        source: usize,
        interest: Interest,
    ) -> io::Result<()> {
        self.registry.register(src, self.token(source), interest)
    }

    /// Says that input can be read now; the loop calls [`Chardev::read`] while the frontend
    /// has room. Needed once per readiness edge, and for sources that never poll (regular
    /// files), once at registration.
    pub fn input_ready(&mut self) {
        self.input_ready = true;
    }

    /// Says that the output fd became writable (or failed): frontends waiting in
    /// `notify_writable` may write again. For backends that watch their output fd themselves
    /// (see [`Chardev::watch_output`]).
    pub fn output_ready(&mut self) {
        self.output_ready = true;
    }

    /// Raises `event` for the frontend, after all data read so far.
    pub fn event(&mut self, event: Event) {
        self.events.push(RaisedEvent { offset: usize::MAX, event });
    }

    /// Raises `event` after the first `offset` bytes of the data this read returns (a telnet
    /// break in the middle of a buffer).
    pub fn event_at(&mut self, offset: usize, event: Event) {
        self.events.push(RaisedEvent { offset, event });
    }

    /// Calls [`Chardev::timer`] with `id` after `delay`, once.
    pub fn add_timer(&mut self, delay: Duration, id: u64) {
        self.timers.push(TimerEntry {
            at: Instant::now() + delay,
            key: self.key,
            generation: self.generation,
            id,
        });
    }
}

/// Asks the loop to call [`Chardev::woken`] on its backend, from any thread: for backends
/// whose input is made ready by something other than their own sources (another chardev's
/// callback, a thread of their own). Cheap to clone; wakes before the loop has run the first
/// one are merged into it.
#[derive(Clone)]
pub struct Waker {
    cell: Weak<Cell>,
    generation: u32,
    queued: Arc<AtomicBool>,
}

impl std::fmt::Debug for Waker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Waker")
            .field("generation", &self.generation)
            .field("queued", &self.queued.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl Waker {
    /// Makes the loop call [`Chardev::woken`] soon (once for any number of wakes before it
    /// does). Does nothing once the chardev is gone.
    pub fn wake(&self) {
        if self.queued.swap(true, Ordering::AcqRel) {
            return;
        }
        let Some(cell) = self.cell.upgrade() else { return };
        let lp = cell.lp.clone();
        lp.post(Request::Wake {
            cell,
            generation: self.generation,
            queued: Arc::clone(&self.queued),
        });
    }
}

/// Downcasts a backend to its concrete type (for management commands such as `ringbuf-read`).
pub(crate) fn downcast_mut<T: Chardev>(chardev: &mut dyn Chardev) -> Option<&mut T> {
    let any: &mut dyn Any = chardev;
    any.downcast_mut::<T>()
}

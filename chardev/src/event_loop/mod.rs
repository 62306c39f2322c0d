//! The event loop: one mio `Poll` that serves many chardevs, their frontends and timers.
//!
//! Input flows backend -> loop -> frontend, never more than the frontend said it can take:
//! while `can_receive()` is 0 the chardev is simply not read (readiness is edge-triggered,
//! so nothing spins) until the frontend calls `accept_input`. A hang-up is acted on only when
//! the backend's read reports the end, after every byte before it (QEMU #1264). All reads go
//! through one buffer that the loop owns, so an idle chardev costs no buffer memory.
//!
//! Other threads (and callbacks on the loop thread itself) talk to the loop through a
//! [`LoopHandle`]: requests are queued and a `Waker` interrupts the poll.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::io;
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::{self, ThreadId};
use std::time::{Duration, Instant};

use mio::{Events, Poll, Token, Waker};
use slab::Slab;

use crate::backend::{Input, Io, RaisedEvent, TimerEntry, SOURCES_PER_CHARDEV, WRITE_WATCH};
use crate::cell::{Cell, NO_KEY};
use crate::error::{Error, Result};
use crate::frontend::{Event, Frontend};
use crate::mux::{self, MuxAction, ESCAPE};

/// Default size of the loop's one read buffer: the most a single read hands a frontend.
pub const DEFAULT_READ_BUFFER: usize = 64 * 1024;

/// Reads one chardev may do per loop iteration before others get their turn.
const READS_PER_TURN: usize = 64;

const WAKER_TOKEN: Token = Token(usize::MAX);

/// A request run on the loop thread.
pub(crate) enum Request {
    /// Anything that needs the loop's state.
    Run(Box<dyn FnOnce(&mut Core) + Send>),
    /// The frontend of this cell can take input again (the hot path, so no allocation).
    AcceptInput(Arc<Cell>),
}

struct Queue {
    requests: Vec<Request>,
    /// The thread inside `poll_once` right now: posts from it need no wake-up.
    loop_thread: Option<ThreadId>,
    woken: bool,
    /// Counts `poll_once` calls, each one epoll wait: see [`Core::turn`].
    turn: u64,
}

struct Shared {
    queue: Mutex<Queue>,
    waker: Waker,
    registry: mio::Registry,
    stop: AtomicBool,
    /// The loop is gone: requests are dropped instead of queued, so that a request holding
    /// a cell cannot keep that cell (and, through its handle, this queue) alive for ever.
    closed: AtomicBool,
}

/// A cheap, cloneable, `Send + Sync` way to reach an [`EventLoop`] from any thread.
#[derive(Clone)]
pub struct LoopHandle {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for LoopHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoopHandle").finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl LoopHandle {
    pub(crate) fn post(&self, request: Request) {
        let wake = {
            let mut q = lock(&self.shared.queue);
            if self.shared.closed.load(Ordering::Acquire) {
                return;
            }
            q.requests.push(request);
            let on_loop = q.loop_thread == Some(thread::current().id());
            let wake = !on_loop && !q.woken;
            q.woken |= wake;
            wake
        };
        if wake {
            if let Err(e) = self.shared.waker.wake() {
                log::error!("cannot wake the chardev event loop: {e}");
            }
        }
    }

    /// Runs `f` on the loop thread with the cell's slab key, if the cell is still there.
    pub(crate) fn post_cell(cell: &Arc<Cell>, f: impl FnOnce(&mut Core, usize) + Send + 'static) {
        let target = Arc::clone(cell);
        cell.lp.post(Request::Run(Box::new(move |core: &mut Core| {
            if let Some(key) = core.key_of(&target) {
                f(core, key);
            }
        })));
    }

    /// The mio registry of the loop, for sources registered or removed outside the loop.
    pub fn registry(&self) -> &mio::Registry {
        &self.shared.registry
    }

    /// Asks [`EventLoop::run`] to return after the current iteration.
    pub fn stop(&self) {
        self.shared.stop.store(true, Ordering::Release);
        if let Err(e) = self.shared.waker.wake() {
            log::error!("cannot wake the chardev event loop: {e}");
        }
    }

    /// The loop's current turn (see [`Core::turn`]) if the calling thread is the one
    /// running the loop right now.
    pub(crate) fn turn_on_loop_thread(&self) -> Option<u64> {
        let q = lock(&self.shared.queue);
        (q.loop_thread == Some(thread::current().id())).then_some(q.turn)
    }

    /// Whether the calling thread is the one running the loop right now.
    pub fn is_loop_thread(&self) -> bool {
        self.turn_on_loop_thread().is_some()
    }

    /// What a mux's `Ctrl-A x` does on this loop, for loops started with
    /// [`EventLoop::spawn`] (see [`EventLoop::set_exit_handler`]).
    pub fn set_exit_handler(&self, handler: impl FnMut() + Send + 'static) {
        self.post(Request::Run(Box::new(move |core: &mut Core| {
            core.exit = Some(Box::new(handler))
        })));
    }

    /// Runs `f` on the loop thread (a way for embedders to serialise with callbacks).
    pub fn run_on_loop(&self, f: impl FnOnce() + Send + 'static) {
        self.post(Request::Run(Box::new(move |_core: &mut Core| f())));
    }
}

/// How a frontend waiting for writability will be told.
enum Watch {
    /// Now: the backend can take output (or never blocks).
    Now,
    /// By the backend's [`Io::output_ready`] (see [`Chardev::watch_output`]).
    ///
    /// [`Chardev::watch_output`]: crate::Chardev::watch_output
    Backend,
    /// By the loop's own watch on this duplicate of the backend's output fd.
    Dup(OwnedFd),
}

/// One chardev on the loop.
struct Entry {
    cell: Arc<Cell>,
    /// Bumped when the backend is swapped, so the old backend's timers are ignored.
    generation: u32,
    frontends: [Option<Box<dyn Frontend>>; crate::cell::MAX_MUX],
    /// Bit per slot: this frontend has seen `Opened` for the current connection.
    seen_open: u8,
    focus: usize,
    /// The backend has input (or an end) to read.
    input_ready: bool,
    /// Listed in `Core::pending`.
    queued: bool,
    /// Listed in `Core::stalled`: input waits for the frontend to make room.
    stalled: bool,
    /// Which generation of each slot's callbacks `frontends` holds (see `Cell::frontend_gen`).
    gens: [u32; crate::cell::MAX_MUX],
    /// Present on a mux.
    mux: Option<Box<MuxInput>>,
    /// Bit per slot: this frontend waits for the backend to take output.
    want_writable: u8,
    /// The loop's own writability watch, for backends that do not report writability: a
    /// duplicate of the backend's output fd, so the watch is ours whatever the backend does.
    write_watch: Option<OwnedFd>,
}

/// Input-side state of a mux.
#[derive(Default)]
struct MuxInput {
    /// The escape character was seen; the next byte is a command.
    escape: bool,
    /// Per frontend: bytes read for it that it could not take yet (QEMU's 32-byte buffers).
    carry: [Vec<u8>; crate::cell::MAX_MUX],
}

/// How much a mux reads for a frontend that cannot take anything, so that `Ctrl-A` escapes
/// still work while a guest is not reading (QEMU's `MUX_BUFFER_SIZE`).
const MUX_BUFFER: usize = 32;

impl Entry {
    /// The frontend in `slot`, unless it has been replaced or cleared since it was installed.
    fn frontend(&mut self, slot: usize) -> Option<&mut Box<dyn Frontend>> {
        let current = self.cell.frontend_gen.get(slot)?.load(Ordering::Acquire);
        if self.gens[slot] != current {
            return None;
        }
        self.frontends.get_mut(slot).and_then(Option::as_mut)
    }

    fn focused(&mut self) -> Option<&mut Box<dyn Frontend>> {
        self.frontend(self.focus)
    }

    fn carry_len(&self) -> usize {
        self.mux.as_ref().map_or(0, |m| m.carry[self.focus].len())
    }

    /// How many bytes to read now: what the focused frontend can take, and on a mux at least
    /// enough to keep reading escapes while the frontend takes nothing.
    fn room(&mut self) -> usize {
        let Some(carry) = self.mux.as_ref().map(|m| m.carry[self.focus].len()) else {
            return self.focused().map_or(0, |fe| fe.can_receive());
        };
        let fe_room = match self.focused() {
            _ if carry > 0 => 0,
            Some(fe) => fe.can_receive(),
            None => MUX_BUFFER,
        };
        fe_room.max(MUX_BUFFER.saturating_sub(carry))
    }

    /// Whether draining now would move anything.
    fn can_progress(&mut self) -> bool {
        let carried = self.carry_len() > 0;
        (carried && self.focused().is_some_and(|fe| fe.can_receive() > 0))
            || (self.input_ready && self.room() > 0)
    }
}

type ExitHandler = Box<dyn FnMut() + Send>;

/// The loop's state that requests work on.
pub(crate) struct Core {
    registry: mio::Registry,
    entries: Slab<Entry>,
    timers: BinaryHeap<Reverse<TimerEntry>>,
    pending: VecDeque<usize>,
    stalled: Vec<usize>,
    buf: Box<[u8]>,
    raised: Vec<RaisedEvent>,
    new_timers: Vec<TimerEntry>,
    fds: Vec<OwnedFd>,
    exit: Option<ExitHandler>,
    /// Muxes whose newly installed frontends still owe an `Opened`.
    open_due: Vec<usize>,
    /// The current `poll_once`, counted from 1. A write that came back short on the loop
    /// thread in this turn is followed by no epoll wait yet, so every edge raised after it
    /// is still to be seen (see [`Core::watch_writable`]).
    turn: u64,
}

/// A chardev event loop on mio: register chardevs through a [`Registry`], then
/// [`run`](EventLoop::run) it on a thread of its own ([`EventLoop::spawn`]) or step it from
/// your own loop with [`poll_once`](EventLoop::poll_once).
///
/// [`Registry`]: crate::Registry
pub struct EventLoop {
    poll: Poll,
    events: Events,
    core: Core,
    shared: Arc<Shared>,
    requests: Vec<Request>,
}

impl std::fmt::Debug for EventLoop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventLoop").field("chardevs", &self.core.entries.len()).finish()
    }
}

impl EventLoop {
    /// A new loop with the default read buffer.
    pub fn new() -> Result<EventLoop> {
        Self::with_read_buffer(DEFAULT_READ_BUFFER)
    }

    /// A new loop whose reads hand a frontend at most `size` bytes at a time.
    pub fn with_read_buffer(size: usize) -> Result<EventLoop> {
        let poll = Poll::new().map_err(|e| Error::io("create an epoll instance", e))?;
        let waker = Waker::new(poll.registry(), WAKER_TOKEN)
            .map_err(|e| Error::io("create the loop's waker", e))?;
        let registry =
            poll.registry().try_clone().map_err(|e| Error::io("clone the mio registry", e))?;
        let core_registry =
            poll.registry().try_clone().map_err(|e| Error::io("clone the mio registry", e))?;
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue {
                requests: Vec::new(),
                loop_thread: None,
                woken: false,
                turn: 0,
            }),
            waker,
            registry,
            stop: AtomicBool::new(false),
            closed: AtomicBool::new(false),
        });
        Ok(EventLoop {
            poll,
            events: Events::with_capacity(1024),
            core: Core {
                registry: core_registry,
                entries: Slab::new(),
                timers: BinaryHeap::new(),
                pending: VecDeque::new(),
                stalled: Vec::new(),
                buf: vec![0; size.max(1)].into_boxed_slice(),
                raised: Vec::new(),
                new_timers: Vec::new(),
                fds: Vec::new(),
                exit: None,
                open_due: Vec::new(),
                turn: 0,
            },
            shared,
            requests: Vec::new(),
        })
    }

    /// Starts a loop on a thread of its own; stop it with [`LoopThread::stop`].
    pub fn spawn() -> Result<LoopThread> {
        let mut lp = EventLoop::new()?;
        let handle = lp.handle();
        let join = thread::Builder::new()
            .name("chardev-loop".into())
            .spawn(move || lp.run())
            .map_err(|e| Error::io("start the event loop thread", e))?;
        Ok(LoopThread { handle, join: Some(join) })
    }

    /// A handle for registries, frontends and other threads.
    pub fn handle(&self) -> LoopHandle {
        LoopHandle { shared: Arc::clone(&self.shared) }
    }

    /// What a mux's `Ctrl-A x` does. Without a handler the process exits with status 0, as
    /// QEMU does (terminals are restored by the stdio backend's exit hook).
    pub fn set_exit_handler(&mut self, handler: impl FnMut() + Send + 'static) {
        self.core.exit = Some(Box::new(handler));
    }

    /// How many chardevs this loop serves.
    pub fn len(&self) -> usize {
        self.core.entries.len()
    }

    /// Whether the loop serves no chardev.
    pub fn is_empty(&self) -> bool {
        self.core.entries.is_empty()
    }

    /// Runs until [`LoopHandle::stop`].
    pub fn run(&mut self) -> Result<()> {
        while !self.shared.stop.swap(false, Ordering::AcqRel) {
            self.poll_once(None)?;
        }
        lock(&self.shared.queue).loop_thread = None;
        Ok(())
    }

    /// Waits for at most `timeout` (`None`: until something happens), then handles all that
    /// is ready: I/O, requests from other threads, timers, and input for frontends.
    pub fn poll_once(&mut self, timeout: Option<Duration>) -> Result<()> {
        let busy = {
            let mut q = lock(&self.shared.queue);
            q.loop_thread = Some(thread::current().id());
            q.turn += 1;
            self.core.turn = q.turn;
            !q.requests.is_empty()
        };
        let timeout = if busy || !self.core.pending.is_empty() {
            Some(Duration::ZERO)
        } else {
            let next_timer = self
                .core
                .timers
                .peek()
                .map(|Reverse(t)| t.at.saturating_duration_since(Instant::now()));
            match (timeout, next_timer) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            }
        };
        match self.poll.poll(&mut self.events, timeout) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(Error::io("poll", e)),
        }
        for event in self.events.iter() {
            if event.token() == WAKER_TOKEN {
                continue;
            }
            let key = event.token().0 / SOURCES_PER_CHARDEV;
            let source = event.token().0 % SOURCES_PER_CHARDEV;
            if source == WRITE_WATCH {
                self.core.writable_ready(key);
            } else {
                self.core.ready(key, source, event);
            }
        }
        // Requests may queue more requests (a callback that writes, or accepts input); a few
        // rounds settle the common chains, the rest waits for the next (zero-timeout) poll.
        for _ in 0..4 {
            self.run_requests();
            self.core.deliver_due_opens();
            self.core.fire_timers();
            self.core.drain_pending();
            self.core.recheck_stalled();
            if lock(&self.shared.queue).requests.is_empty() {
                break;
            }
        }
        Ok(())
    }

    fn run_requests(&mut self) {
        {
            let mut q = lock(&self.shared.queue);
            std::mem::swap(&mut q.requests, &mut self.requests);
            q.woken = false;
        }
        for request in self.requests.drain(..) {
            match request {
                Request::Run(f) => f(&mut self.core),
                Request::AcceptInput(cell) => {
                    cell.accept_queued.store(false, Ordering::Release);
                    if let Some(key) = self.core.key_of(&cell) {
                        self.core.wake_input(key);
                    }
                }
            }
        }
    }
}

impl Drop for EventLoop {
    fn drop(&mut self) {
        // Requests nobody will run hold cells, whose handles hold this queue: drop them (outside
        // the lock: a cell's drop may post) and refuse new ones.
        let pending = {
            let mut q = lock(&self.shared.queue);
            self.shared.closed.store(true, Ordering::Release);
            std::mem::take(&mut q.requests)
        };
        drop(pending);
        // Backends stay in their cells (handles may still write); the loop only lets go of
        // its registrations and frontends.
        for (_, entry) in self.core.entries.iter_mut() {
            entry.cell.key.store(NO_KEY, Ordering::Release);
            entry.cell.backend().deregister(&self.core.registry);
        }
    }
}

/// A loop running on its own thread; dropping it stops the loop and joins the thread.
#[derive(Debug)]
pub struct LoopThread {
    handle: LoopHandle,
    join: Option<thread::JoinHandle<Result<()>>>,
}

impl LoopThread {
    /// The handle of the running loop.
    pub fn handle(&self) -> &LoopHandle {
        &self.handle
    }

    /// Stops the loop and waits for its thread; returns the loop's error, if it failed.
    pub fn stop(mut self) -> Result<()> {
        self.stop_and_join()
    }

    fn stop_and_join(&mut self) -> Result<()> {
        self.handle.stop();
        match self.join.take().map(thread::JoinHandle::join) {
            Some(Ok(r)) => r,
            Some(Err(_)) => Err(Error::LoopGone),
            None => Ok(()),
        }
    }
}

impl Drop for LoopThread {
    fn drop(&mut self) {
        if let Err(e) = self.stop_and_join() {
            log::error!("chardev event loop: {e}");
        }
    }
}

impl Core {
    pub(crate) fn key_of(&self, cell: &Arc<Cell>) -> Option<usize> {
        let key = cell.key();
        match self.entries.get(key) {
            Some(e) if Arc::ptr_eq(&e.cell, cell) => Some(key),
            _ => None,
        }
    }

    /// Puts a new cell on the loop and registers its backend.
    pub(crate) fn place(&mut self, cell: Arc<Cell>) {
        let entry = self.entries.vacant_entry();
        let key = entry.key();
        cell.key.store(key, Ordering::Release);
        let mux = cell.mux.is_some().then(Box::default);
        entry.insert(Entry {
            cell,
            generation: 0,
            frontends: Default::default(),
            seen_open: 0,
            focus: 0,
            input_ready: false,
            queued: false,
            stalled: false,
            gens: [0; crate::cell::MAX_MUX],
            mux,
            want_writable: 0,
            write_watch: None,
        });
        self.register(key);
    }

    fn register(&mut self, key: usize) {
        self.with_backend(key, |be, io| {
            if let Err(e) = be.register(io) {
                log::error!("{} chardev: cannot register with the event loop: {e}", be.kind());
            }
        });
    }

    /// Takes a cell off the loop (its backend was already dropped by the registry).
    pub(crate) fn unplace(&mut self, key: usize) {
        if let Some(mut entry) = self.entries.try_remove(key) {
            Self::drop_write_watch(&self.registry, &mut entry);
            entry.cell.key.store(NO_KEY, Ordering::Release);
            entry.cell.backend().deregister(&self.registry);
        }
    }

    /// After a hot swap: the old connection is closed for the frontend, the new backend
    /// registers and reports its own state.
    pub(crate) fn swapped(&mut self, key: usize) {
        let Some(entry) = self.entries.get_mut(key) else { return };
        Self::deliver_event(entry, Event::Closed);
        // The old backend's fd is gone; a frontend waiting to write may try the new one.
        Self::drop_write_watch(&self.registry, entry);
        Self::tell_writable(entry);
        entry.generation = entry.generation.wrapping_add(1);
        entry.input_ready = false;
        if let Some(m) = &mut entry.mux {
            m.carry.iter_mut().for_each(Vec::clear);
        }
        self.register(key);
    }

    /// Closes the connection for the frontends and drops them (forced removal).
    pub(crate) fn evict(&mut self, key: usize) {
        if let Some(entry) = self.entries.get_mut(key) {
            Self::deliver_event(entry, Event::Closed);
        }
        self.unplace(key);
    }

    pub(crate) fn install(
        &mut self,
        key: usize,
        slot: usize,
        frontend: Option<Box<dyn Frontend>>,
        generation: u32,
    ) {
        let Some(entry) = self.entries.get_mut(key) else { return };
        if slot >= entry.cell.slots() {
            return;
        }
        entry.seen_open &= !(1u8 << slot);
        let installing = frontend.is_some();
        // The old frontend is dropped here, on the loop thread.
        entry.frontends[slot] = frontend;
        entry.gens[slot] = generation;
        if !installing || entry.frontend(slot).is_none() {
            return;
        }
        if entry.mux.is_some() {
            // QEMU: installing handlers on a mux takes the focus; its OPENED waits until the
            // frontends of this batch are all in.
            Self::move_focus_quietly(entry, slot);
            self.open_due.push(key);
        } else if entry.cell.is_open() {
            // Late subscribers learn the state (QEMU's sync_state).
            if let Some(fe) = entry.frontend(slot) {
                fe.event(Event::Opened);
                entry.seen_open |= 1 << slot;
            }
        }
        self.wake_input(key);
    }

    /// Moves a mux's focus to `slot`: `MuxOut` to the old, `Opened` (if the new one has not
    /// seen it yet) and `MuxIn` to the new.
    pub(crate) fn set_focus(&mut self, key: usize, slot: usize) {
        let Some(entry) = self.entries.get_mut(key) else { return };
        if entry.mux.is_none() || slot >= entry.cell.slots() {
            return;
        }
        Self::move_focus(entry, slot);
        self.wake_input(key);
    }

    /// `MuxOut` to the old focus, `MuxIn` to the new, then `Opened` if the new one has not
    /// seen the current connection yet (QEMU's order: take_focus, then sync_state).
    fn move_focus(entry: &mut Entry, slot: usize) {
        Self::move_focus_quietly(entry, slot);
        Self::open_focused(entry);
    }

    fn move_focus_quietly(entry: &mut Entry, slot: usize) {
        if entry.focus != slot {
            if let Some(fe) = entry.focused() {
                fe.event(Event::MuxOut);
            }
            entry.focus = slot;
        }
        if let Some(fe) = entry.focused() {
            fe.event(Event::MuxIn);
        }
    }

    /// Tells the focused frontend the chardev is open, once per connection.
    fn open_focused(entry: &mut Entry) {
        let bit = 1u8 << entry.focus;
        if !entry.cell.is_open() || entry.seen_open & bit != 0 {
            return;
        }
        if let Some(fe) = entry.focused() {
            fe.event(Event::Opened);
            entry.seen_open |= bit;
        }
    }

    /// Delivers the `Opened` that mux frontends installed in the last batch of requests
    /// were owed, to whichever has the focus now. An embedder that attaches a monitor and
    /// then a serial port in one go shows only the serial port's greeting (QEMU #fffbd9cf:
    /// `mon:stdio` printed the monitor banner though the serial port had the focus).
    fn deliver_due_opens(&mut self) {
        for key in std::mem::take(&mut self.open_due) {
            if let Some(entry) = self.entries.get_mut(key) {
                Self::open_focused(entry);
            }
        }
    }

    /// Tells `slot`'s frontend once when the backend can take output (see `notify_writable`).
    pub(crate) fn watch_writable(&mut self, key: usize, slot: usize) {
        let Some(entry) = self.entries.get_mut(key) else { return };
        entry.want_writable |= 1 << slot;
        if entry.write_watch.is_some() {
            return; // armed already; it tells every waiting slot
        }
        let (cell, generation) = (Arc::clone(&entry.cell), entry.generation);
        let mut io =
            Io::new(&self.registry, key, generation, &mut self.raised, &mut self.new_timers);
        let mut backend = cell.backend();
        // Room may have come before this request (the write may have failed on another
        // thread, and the edge gone by): look first. No fd: writes never block (a ringbuf).
        // But a write that came back short on this thread in this turn had no epoll wait
        // since: on a backend that always watches, any room after it raises an edge still
        // to be seen, while looking now would find a sliver (a pty reports room as soon as
        // a few bytes have gone) and spend a write and a wake-up on it.
        let fresh = cell.short_write_turn() == self.turn && backend.output_always_watched();
        let now = backend.write_fd().is_none_or(|fd| {
            !fresh && crate::fd::wait_writable(fd, Some(Duration::ZERO)).unwrap_or(true)
        });
        let watch = if now {
            Watch::Now
        } else if backend.watch_output(&mut io) {
            Watch::Backend
        } else {
            match backend.write_fd().map(|fd| fd.try_clone_to_owned()) {
                Some(Ok(dup)) => Watch::Dup(dup),
                Some(Err(e)) => {
                    log::warn!("chardev '{}': cannot watch for writability: {e}", cell.label);
                    Watch::Now
                }
                None => Watch::Now,
            }
        };
        drop(backend);
        let (input_ready, output_ready) = (io.input_ready, io.output_ready);
        self.after_backend(key, input_ready, output_ready);
        let Some(entry) = self.entries.get_mut(key) else { return };
        match watch {
            Watch::Now => Self::tell_writable(entry),
            Watch::Backend => {}
            Watch::Dup(fd) => {
                // A duplicate, so the watch is ours whatever the backend does with its fd.
                let raw = std::os::fd::AsRawFd::as_raw_fd(&fd);
                let token = Token(key * SOURCES_PER_CHARDEV + WRITE_WATCH);
                let interest = mio::Interest::WRITABLE;
                match self.registry.register(&mut mio::unix::SourceFd(&raw), token, interest) {
                    Ok(()) => entry.write_watch = Some(fd),
                    Err(e) => {
                        log::warn!("chardev '{}': cannot watch for writability: {e}", cell.label);
                        Self::tell_writable(entry);
                    }
                }
            }
        }
    }

    fn writable_ready(&mut self, key: usize) {
        let Some(entry) = self.entries.get_mut(key) else { return };
        Self::drop_write_watch(&self.registry, entry);
        Self::tell_writable(entry);
    }

    /// Removes the loop's writability watch. Closing the duplicate alone would not: epoll
    /// keeps a registration while any fd refers to the file.
    fn drop_write_watch(registry: &mio::Registry, entry: &mut Entry) {
        if let Some(fd) = entry.write_watch.take() {
            let raw = std::os::fd::AsRawFd::as_raw_fd(&fd);
            let _ = registry.deregister(&mut mio::unix::SourceFd(&raw));
        }
    }

    /// Tells every frontend waiting for writability, once.
    fn tell_writable(entry: &mut Entry) {
        let mut waiting = std::mem::take(&mut entry.want_writable);
        while waiting != 0 {
            let slot = waiting.trailing_zeros() as usize;
            waiting &= waiting - 1;
            if let Some(fe) = entry.frontend(slot) {
                fe.writable();
            }
        }
    }

    pub(crate) fn disconnect(&mut self, key: usize) {
        self.with_backend(key, |be, io| be.disconnect(io));
    }

    /// Sends `event` to the chardev's frontend (management's `chardev-send-break`).
    pub(crate) fn raise(&mut self, key: usize, event: Event) {
        if let Some(entry) = self.entries.get_mut(key) {
            Self::deliver_event(entry, event);
        }
    }

    fn with_backend(&mut self, key: usize, f: impl FnOnce(&mut dyn crate::Chardev, &mut Io<'_>)) {
        let Some(entry) = self.entries.get(key) else { return };
        let cell = Arc::clone(&entry.cell);
        let mut io =
            Io::new(&self.registry, key, entry.generation, &mut self.raised, &mut self.new_timers);
        f(&mut **cell.backend(), &mut io);
        let (ready, writable) = (io.input_ready, io.output_ready);
        self.after_backend(key, ready, writable);
    }

    fn ready(&mut self, key: usize, source: usize, event: &mio::event::Event) {
        self.with_backend(key, |be, io| be.ready(io, source, event));
    }

    fn fire_timers(&mut self) {
        let now = Instant::now();
        while let Some(Reverse(t)) = self.timers.peek().copied() {
            if t.at > now {
                break;
            }
            self.timers.pop();
            let current = self.entries.get(t.key).is_some_and(|e| e.generation == t.generation);
            if current {
                self.with_backend(t.key, |be, io| be.timer(io, t.id));
            }
        }
    }

    /// Applies what a backend call asked for: timers, events, and input to read.
    fn after_backend(&mut self, key: usize, input_ready: bool, output_ready: bool) {
        for t in self.new_timers.drain(..) {
            self.timers.push(Reverse(t));
        }
        let Some(entry) = self.entries.get_mut(key) else {
            self.raised.clear();
            return;
        };
        for raised in self.raised.drain(..) {
            Self::deliver_event(entry, raised.event);
        }
        if output_ready && entry.want_writable != 0 {
            Self::tell_writable(entry);
        }
        if input_ready {
            entry.input_ready = true;
            self.wake_input(key);
        }
    }

    /// Queues the chardev for reading if it has input or carried bytes.
    fn wake_input(&mut self, key: usize) {
        let Some(entry) = self.entries.get_mut(key) else { return };
        if (entry.input_ready || entry.carry_len() > 0) && !entry.queued {
            entry.queued = true;
            self.pending.push_back(key);
        }
    }

    fn recheck_stalled(&mut self) {
        // A frontend that made room without calling accept_input still gets its input on the
        // next wake-up of the loop (QEMU #4389 starved such frontends).
        let mut i = 0;
        while i < self.stalled.len() {
            let key = self.stalled[i];
            let progress = match self.entries.get_mut(key) {
                Some(e) if e.stalled => e.can_progress(),
                _ => {
                    self.stalled.swap_remove(i);
                    continue;
                }
            };
            if progress {
                self.stalled.swap_remove(i);
                if let Some(e) = self.entries.get_mut(key) {
                    e.stalled = false;
                }
                self.wake_input(key);
            } else {
                i += 1;
            }
        }
    }

    fn drain_pending(&mut self) {
        for _ in 0..self.pending.len() {
            let Some(key) = self.pending.pop_front() else { break };
            let more = self.drain(key);
            let Some(entry) = self.entries.get_mut(key) else { continue };
            entry.queued = more;
            if more {
                self.pending.push_back(key);
            } else if entry.carry_len() > 0 {
                // Carried bytes wait for the frontend's room, like unread input does.
                self.stall(key);
            }
        }
    }

    /// Moves input from one backend to its frontend; returns whether it should run again.
    fn drain(&mut self, key: usize) -> bool {
        for _ in 0..READS_PER_TURN {
            let Some(entry) = self.entries.get_mut(key) else { return false };
            Self::deliver_carry(entry);
            if !entry.input_ready {
                if entry.carry_len() > 0 {
                    self.stall(key);
                }
                return false;
            }
            let room = entry.room();
            if room == 0 {
                self.stall(key);
                return false;
            }
            let cell = Arc::clone(&entry.cell);
            if entry.mux.is_none() {
                match self.splice_input(key, &cell, room) {
                    Some(true) => continue,
                    Some(false) => return false,
                    None => {}
                }
            }
            let Some(entry) = self.entries.get_mut(key) else { return false };
            let len = room.min(self.buf.len());
            let mut io = Io::new(
                &self.registry,
                key,
                entry.generation,
                &mut self.raised,
                &mut self.new_timers,
            );
            let input = cell.backend().read(&mut io, &mut self.buf[..len], &mut self.fds);
            let (again, writable) = (io.input_ready, io.output_ready);
            for t in self.new_timers.drain(..) {
                self.timers.push(Reverse(t));
            }
            let Some(entry) = self.entries.get_mut(key) else { return false };
            let n = match input {
                Input::Data(n) => n.min(len),
                Input::Drained(n) => {
                    entry.input_ready = again;
                    n.min(len)
                }
                Input::WouldBlock | Input::End => {
                    entry.input_ready = again;
                    0
                }
            };
            if writable && entry.want_writable != 0 {
                Self::tell_writable(entry);
            }
            let fds = passed_fds(&entry.cell.label, std::mem::take(&mut self.fds));
            Self::dispatch(entry, &self.buf[..n], fds, &mut self.raised, &mut self.exit);
            if !matches!(input, Input::Data(_)) {
                return entry.input_ready;
            }
        }
        true
    }

    /// Moves input straight into the focused frontend's pipe, if it offers one and the
    /// backend can ([`Frontend::splice_pipe`]). `Some(true)`: bytes moved; `Some(false)`:
    /// nothing to read until the next readiness; `None`: read as usual (no pipe, the end of
    /// the stream or an error, which the usual read reports).
    fn splice_input(&mut self, key: usize, cell: &Arc<Cell>, room: usize) -> Option<bool> {
        let entry = self.entries.get_mut(key)?;
        let mut io =
            Io::new(&self.registry, key, entry.generation, &mut self.raised, &mut self.new_timers);
        let fe = entry.focused()?;
        let result = match fe.splice_pipe() {
            Some((pipe, take)) if take > 0 => {
                cell.backend().splice_input(&mut io, pipe, room.min(take))
            }
            _ => None,
        };
        let again = io.input_ready;
        for t in self.new_timers.drain(..) {
            self.timers.push(Reverse(t));
        }
        let moved = match result? {
            Ok(0) => return None,
            Ok(n) => {
                fe.spliced(n);
                Some(true)
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Some(true),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                entry.input_ready = again;
                Some(false)
            }
            Err(_) => None,
        };
        if !self.raised.is_empty() {
            Self::dispatch(entry, &[], Vec::new(), &mut self.raised, &mut self.exit);
        }
        moved
    }

    fn stall(&mut self, key: usize) {
        if let Some(entry) = self.entries.get_mut(key) {
            if !entry.stalled {
                entry.stalled = true;
                self.stalled.push(key);
            }
        }
    }

    /// Hands one read's bytes, fds and events to the frontends, in order.
    fn dispatch(
        entry: &mut Entry,
        data: &[u8],
        fds: Vec<OwnedFd>,
        raised: &mut Vec<RaisedEvent>,
        exit: &mut Option<ExitHandler>,
    ) {
        let mut fds = Some(fds);
        let mut pos = 0;
        for ev in raised.drain(..) {
            let at = ev.offset.clamp(pos, data.len());
            Self::feed(entry, &data[pos..at], &mut fds, exit);
            pos = at;
            Self::deliver_event(entry, ev.event);
        }
        Self::feed(entry, &data[pos..], &mut fds, exit);
        if let Some(fds) = fds.filter(|f| !f.is_empty()) {
            // Every byte was filtered out; the fds still reach the frontend.
            if let Some(fe) = entry.focused() {
                fe.receive(&[], fds);
            } else {
                log::warn!(
                    "chardev '{}': {} fds dropped: no frontend",
                    entry.cell.label,
                    fds.len()
                );
            }
        }
    }

    /// Passes bytes to the focused frontend, through the mux's escape filter on a mux.
    fn feed(
        entry: &mut Entry,
        data: &[u8],
        fds: &mut Option<Vec<OwnedFd>>,
        exit: &mut Option<ExitHandler>,
    ) {
        if data.is_empty() {
            return;
        }
        if entry.mux.is_none() {
            Self::to_focus(entry, data, fds);
            return;
        }
        let mut run_start = 0;
        let mut i = 0;
        while i < data.len() {
            let Some(m) = entry.mux.as_mut() else { return };
            let action = if m.escape {
                m.escape = false;
                mux::command(data[i])
            } else {
                // Plain bytes up to the next escape go to the focus in one piece.
                let Some(k) = data[i..].iter().position(|&b| b == ESCAPE) else { break };
                i += k;
                m.escape = true;
                MuxAction::Swallow
            };
            Self::to_focus(entry, &data[run_start..i], fds);
            i += 1;
            run_start = i;
            Self::mux_action(entry, action, exit);
        }
        Self::to_focus(entry, &data[run_start..], fds);
    }

    fn mux_action(entry: &mut Entry, action: MuxAction, exit: &mut Option<ExitHandler>) {
        match action {
            MuxAction::Swallow => {}
            MuxAction::Literal => Self::to_focus(entry, &[ESCAPE], &mut None),
            MuxAction::Help => mux::print_help(&entry.cell),
            MuxAction::Break => {
                if let Some(fe) = entry.focused() {
                    fe.event(Event::Break);
                }
            }
            MuxAction::Timestamps => mux::toggle_timestamps(&entry.cell),
            MuxAction::SwitchFocus => {
                let slots = entry.cell.slots();
                let focus = entry.focus;
                let next =
                    (1..=slots).map(|d| (focus + d) % slots).find(|&s| entry.frontend(s).is_some());
                if let Some(next) = next {
                    Self::move_focus(entry, next);
                }
            }
            MuxAction::Exit => {
                mux::print_terminated(&entry.cell);
                match exit {
                    Some(handler) => handler(),
                    None => std::process::exit(0),
                }
            }
        }
    }

    /// Gives bytes to the focused frontend. On a mux, what it cannot take waits in its own
    /// carry buffer; elsewhere reads never exceed its room.
    fn to_focus(entry: &mut Entry, data: &[u8], fds: &mut Option<Vec<OwnedFd>>) {
        if data.is_empty() {
            return;
        }
        let focus = entry.focus;
        if entry.mux.as_ref().is_some_and(|m| !m.carry[focus].is_empty()) {
            if let Some(m) = entry.mux.as_mut() {
                m.carry[focus].extend_from_slice(data);
            }
            return;
        }
        let is_mux = entry.mux.is_some();
        let Some(fe) = entry.focused() else {
            // QEMU: input for a mux slot without handlers is dropped.
            log::debug!(
                "chardev '{}': {} bytes dropped: no frontend",
                entry.cell.label,
                data.len()
            );
            return;
        };
        let room = if is_mux { fe.can_receive().min(data.len()) } else { data.len() };
        let fds = fds.take().unwrap_or_default();
        if room > 0 || !fds.is_empty() {
            fe.receive(&data[..room], fds);
        }
        if room < data.len() {
            if let Some(m) = entry.mux.as_mut() {
                m.carry[focus].extend_from_slice(&data[room..]);
            }
        }
    }

    /// Hands the focused frontend what was carried for it, as far as it has room.
    fn deliver_carry(entry: &mut Entry) {
        let focus = entry.focus;
        let carried = entry.carry_len();
        if carried == 0 {
            return;
        }
        let room = entry.focused().map_or(0, |fe| fe.can_receive()).min(carried);
        if room == 0 {
            return;
        }
        let Some(m) = entry.mux.as_mut() else { return };
        let rest = m.carry[focus].split_off(room);
        let now = std::mem::replace(&mut m.carry[focus], rest);
        if let Some(fe) = entry.focused() {
            fe.receive(&now, Vec::new());
        }
    }

    /// Delivers a backend event: `Opened`/`Closed` once per connection, to the frontends
    /// that should see them.
    fn deliver_event(entry: &mut Entry, event: Event) {
        match event {
            Event::Opened => {
                if !entry.cell.set_open(true) {
                    return;
                }
                let bit = 1u8 << entry.focus;
                if let Some(fe) = entry.focused() {
                    fe.event(Event::Opened);
                    entry.seen_open |= bit;
                }
            }
            Event::Closed => {
                if !entry.cell.set_open(false) {
                    return;
                }
                let seen = std::mem::take(&mut entry.seen_open);
                for slot in 0..entry.frontends.len() {
                    if seen & (1 << slot) != 0 {
                        if let Some(fe) = entry.frontend(slot) {
                            fe.event(Event::Closed);
                        }
                    }
                }
                // Whoever waits to write learns now (its write fails: not connected) rather
                // than never: a closed connection reports no more writability.
                if entry.want_writable != 0 {
                    Self::tell_writable(entry);
                }
            }
            Event::Break | Event::MuxIn | Event::MuxOut => {
                if let Some(fe) = entry.focused() {
                    fe.event(event);
                }
            }
        }
    }
}

/// Applies the fd contract to fds a backend received, at the one place all input passes:
/// blocking and close-on-exec before any frontend sees them, whatever the backend. An fd
/// whose flags cannot be set is logged and closed, never handed on in the wrong mode; the
/// bytes are delivered all the same.
fn passed_fds(label: &str, mut fds: Vec<OwnedFd>) -> Vec<OwnedFd> {
    fds.retain(|fd| match crate::fd::make_passed_fd_blocking(std::os::fd::AsFd::as_fd(fd)) {
        Ok(()) => true,
        Err(e) => {
            log::warn!("chardev '{label}': received fd {} closed: {e}", crate::fd::number(fd));
            false
        }
    });
    fds
}

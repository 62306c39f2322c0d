//! The event loop: one mio `Poll` that serves many chardevs, their frontends and timers.
//!
//! Input flows backend -> loop -> frontend, never more than the frontend said it can take:
//! while `can_receive()` is 0 the chardev is simply not read (readiness is edge-triggered,
//! so nothing spins) until the frontend calls `accept_input`. A hang-up is acted on only when
//! the backend's read reports the end, after every byte before it (QEMU #1264). All reads go
//! through one buffer that the loop owns, so an idle chardev costs no buffer memory.
//!
//! Other threads (and callbacks on the loop thread itself) talk to the loop through a
//! [`LoopHandle`]: typed requests are queued and a `Waker` interrupts the poll.
//!
//! The loop can run on a thread of its own ([`EventLoop::spawn`]), or inside an embedder's
//! own loop: [`EventLoop`] is [`AsFd`] (its epoll fd, readable when
//! something is ready), so it joins the embedder's epoll set and is stepped with
//! [`poll_once`](EventLoop::poll_once)`(Some(Duration::ZERO))`, within
//! [`next_timeout`](EventLoop::next_timeout) at the latest.
//!
//! One concept per file: `handle.rs` (the handle and its queue), `request.rs` (every way
//! into the core), `core.rs` (the chardevs and what requests and backends change),
//! `entry.rs` (one chardev: frontends and mux), `input.rs` (reading and dispatch),
//! `writable.rs` (writability watches and the short-write rule).

mod core;
mod entry;
mod handle;
mod input;
pub(crate) mod request;
mod writable;

use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use mio::{Events, Poll, Waker};

use self::core::Core;
pub use self::handle::LoopHandle;
use self::handle::{Queue, Shared};
pub(crate) use self::request::Request;
use crate::error::{Error, Result};
use crate::sync::lock;
use crate::token::{SourceToken, WAKER};

/// Default size of the loop's one read buffer: the most a single read hands a frontend.
pub const DEFAULT_READ_BUFFER: usize = 64 * 1024;

/// How many rounds of requests one [`EventLoop::poll_once`] runs after its poll: requests
/// that requests queue (a callback that writes or accepts input) run in the same turn up to
/// this depth; the rest wait for the next, zero-timeout, poll. So a chain of more than this
/// many requests posted one after another spans a poll (the test kit's `settle` uses that).
pub const REQUEST_ROUNDS_PER_TURN: usize = 4;

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
        let waker = Waker::new(poll.registry(), WAKER)
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
        // Without a handler of the embedder's, `Ctrl-A x` stops the loop: `run` returns.
        let stopper = LoopHandle { shared: Arc::clone(&shared) };
        let exit = Box::new(move || stopper.stop());
        Ok(EventLoop {
            poll,
            events: Events::with_capacity(1024),
            core: Core::new(core_registry, size, exit),
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

    /// What a mux's `Ctrl-A x` does, after the mux has printed `QEMU: Terminated`.
    ///
    /// Without a handler the loop stops: [`run`](EventLoop::run) returns `Ok(())` after the
    /// current iteration (an embedder that steps the loop with
    /// [`poll_once`](EventLoop::poll_once) sets a handler instead). The library never exits
    /// the process; a program that wants QEMU's behaviour (exit at once) exits from here or
    /// after `run` returns, and removes its chardevs first so that socket files go and the
    /// terminal is restored.
    pub fn set_exit_handler(&mut self, handler: impl FnMut() + Send + 'static) {
        self.core.exit = Box::new(handler);
    }

    /// How many chardevs this loop serves.
    pub fn len(&self) -> usize {
        self.core.entries.len()
    }

    /// Whether the loop serves no chardev.
    pub fn is_empty(&self) -> bool {
        self.core.entries.is_empty()
    }

    /// Runs until [`LoopHandle::stop`] (or a mux's `Ctrl-A x`, without an exit handler).
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
            let next_timer =
                self.core.next_timer().map(|at| at.saturating_duration_since(Instant::now()));
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
            let Some(token) = SourceToken::of(event.token()) else { continue };
            if token.is_write_watch() {
                self.core.writable_ready(token.key);
            } else {
                self.core.ready(token.key, token.source, event);
            }
        }
        // Requests may queue more requests (a callback that writes, or accepts input); a few
        // rounds settle the common chains, the rest waits for the next (zero-timeout) poll.
        for _ in 0..REQUEST_ROUNDS_PER_TURN {
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

    /// How long an embedder that steps this loop from its own may wait for the loop's fd
    /// ([`AsFd`]) before it calls [`poll_once`](EventLoop::poll_once) all the same:
    /// `Some(Duration::ZERO)` while work is left over (requests that callbacks posted, input
    /// still to read), the time to the next timer (a reconnect, a pty's hang-up check), or
    /// `None` when only the fd can bring news.
    pub fn next_timeout(&self) -> Option<Duration> {
        let busy = !lock(&self.shared.queue).requests.is_empty();
        if busy || !self.core.pending.is_empty() {
            return Some(Duration::ZERO);
        }
        self.core.next_timer().map(|at| at.saturating_duration_since(Instant::now()))
    }

    fn run_requests(&mut self) {
        {
            let mut q = lock(&self.shared.queue);
            std::mem::swap(&mut q.requests, &mut self.requests);
            q.woken = false;
        }
        for request in self.requests.drain(..) {
            self.core.handle(request);
        }
    }
}

/// The loop's epoll fd: readable while the loop has something to handle (I/O on any
/// chardev, a request from another thread). Add it to your own epoll set (level-triggered)
/// and call [`EventLoop::poll_once`]`(Some(Duration::ZERO))` when it is readable, and when
/// [`EventLoop::next_timeout`] has passed.
impl AsFd for EventLoop {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.poll.registry().as_fd()
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
        self.core.release_all();
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

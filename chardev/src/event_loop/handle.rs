//! [`LoopHandle`]: the way into a loop from any thread, and the request queue behind it.
//!
//! Requests are queued under a lock and a mio `Waker` interrupts the poll, unless the poster
//! is the loop thread itself (a callback), whose requests run before the loop waits again.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, ThreadId};

use mio::Waker;

use super::request::Request;
use crate::sync::lock;

/// The queue of requests and what the loop thread tells posters about itself.
pub(super) struct Queue {
    pub(super) requests: Vec<Request>,
    /// The thread inside `poll_once` right now: posts from it need no wake-up.
    pub(super) loop_thread: Option<ThreadId>,
    pub(super) woken: bool,
    /// Counts `poll_once` calls, each one epoll wait: see `Core::turn`.
    pub(super) turn: u64,
}

/// What the loop and its handles share.
pub(super) struct Shared {
    pub(super) queue: Mutex<Queue>,
    pub(super) waker: Waker,
    pub(super) registry: mio::Registry,
    pub(super) stop: AtomicBool,
    /// The loop is gone: requests are dropped instead of queued, so that a request holding
    /// a cell cannot keep that cell (and, through its handle, this queue) alive for ever.
    pub(super) closed: AtomicBool,
}

/// A cheap, cloneable, `Send + Sync` way to reach an [`EventLoop`] from any thread.
///
/// [`EventLoop`]: super::EventLoop
#[derive(Clone)]
pub struct LoopHandle {
    pub(super) shared: Arc<Shared>,
}

impl std::fmt::Debug for LoopHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoopHandle").finish_non_exhaustive()
    }
}

impl LoopHandle {
    /// Queues `request` for the loop thread, waking the loop if it waits in the poll.
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
            self.wake();
        }
    }

    fn wake(&self) {
        if let Err(e) = self.shared.waker.wake() {
            log::error!("cannot wake the chardev event loop: {e}");
        }
    }

    /// The mio registry of the loop, for sources registered or removed outside the loop.
    pub fn registry(&self) -> &mio::Registry {
        &self.shared.registry
    }

    /// Asks [`EventLoop::run`] to return after the current iteration.
    ///
    /// [`EventLoop::run`]: super::EventLoop::run
    pub fn stop(&self) {
        self.shared.stop.store(true, Ordering::Release);
        self.wake();
    }

    /// The loop's current turn (see `Core::turn`) if the calling thread is the one running
    /// the loop right now.
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
    ///
    /// [`EventLoop::spawn`]: super::EventLoop::spawn
    /// [`EventLoop::set_exit_handler`]: super::EventLoop::set_exit_handler
    pub fn set_exit_handler(&self, handler: impl FnMut() + Send + 'static) {
        self.post(Request::SetExitHandler(Box::new(handler)));
    }

    /// Runs `f` on the loop thread (a way for embedders to serialise with callbacks).
    pub fn run_on_loop(&self, f: impl FnOnce() + Send + 'static) {
        self.post(Request::Run(Box::new(f)));
    }
}

//! Every way into the loop's core, as one list: what other threads, frontend handles, the
//! registry and callbacks ask of the loop. [`Core::handle`](super::core::Core::handle) is
//! the one `match` that carries them out, on the loop thread, in the order they were posted.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use crate::cell::Cell;
use crate::frontend::callbacks::{Event, Frontend};

/// What a mux's `Ctrl-A x` runs (see [`EventLoop::set_exit_handler`]).
///
/// [`EventLoop::set_exit_handler`]: super::EventLoop::set_exit_handler
pub(crate) type ExitHandler = Box<dyn FnMut() + Send>;

/// A request to the loop. Those that name a chardev are dropped quietly if it has left the
/// loop by the time they run (removed, or its loop is gone).
pub(crate) enum Request {
    /// Put a new chardev on the loop and register its backend (`Registry::add`).
    Place(Arc<Cell>),
    /// Set (or, with `None`, clear) the frontend of `slot`; `generation` is the slot's
    /// generation that the frontend belongs to (see `Cell::frontend_gen`).
    Install { cell: Arc<Cell>, slot: usize, frontend: Option<Box<dyn Frontend>>, generation: u32 },
    /// Give a mux's focus to `slot` (`FrontendHandle::take_focus`).
    Focus { cell: Arc<Cell>, slot: usize },
    /// The frontend can take input again (`FrontendHandle::accept_input`; the hot path,
    /// coalesced by `Cell::accept_queued`).
    AcceptInput(Arc<Cell>),
    /// Tell `slot`'s frontend once when the backend can take output
    /// (`FrontendHandle::notify_writable`).
    WatchWritable { cell: Arc<Cell>, slot: usize },
    /// Drop the backend's current connection (`FrontendHandle::disconnect`).
    Disconnect(Arc<Cell>),
    /// The backend was replaced under the frontend (`Registry::change`): the old connection
    /// is closed for the frontend, the new backend registers.
    Swapped(Arc<Cell>),
    /// Take the chardev off the loop after `Closed` to its frontends (`Registry::remove`).
    Evict(Arc<Cell>),
    /// Deliver `event` to the chardev's frontend (`Registry::send_break`).
    Raise { cell: Arc<Cell>, event: Event },
    /// Replace what `Ctrl-A x` does (`LoopHandle::set_exit_handler`).
    SetExitHandler(ExitHandler),
    /// Call the backend's `woken` (a backend's [`Waker`](crate::Waker)); `generation` is the
    /// backend's, so that a wake for a backend since swapped out is dropped. `queued` is
    /// cleared first, so that wakes during the call post again.
    Wake { cell: Arc<Cell>, generation: u32, queued: Arc<AtomicBool> },
    /// Run a closure on the loop thread (`LoopHandle::run_on_loop`): embedders' own work,
    /// serialised with the callbacks. It cannot reach the core.
    Run(Box<dyn FnOnce() + Send>),
}

//! Character devices for emulators: byte streams (and passed fds) between a guest device
//! and the host, on a mio event loop.
//!
//! A *backend* ([`Chardev`]) is the host end: a file, a pipe, a socket, a pty, the terminal.
//! A *frontend* ([`Frontend`]) is the device model that consumes it: a UART, a monitor. The
//! [`Registry`] creates backends from QEMU's `-chardev` syntax and hands out
//! [`FrontendHandle`]s; the [`EventLoop`] moves input to frontends with flow control.
//!
//! ```
//! use chardev::{Event, EventLoop, Frontend, OutputQueue, Registry};
//! use std::os::fd::OwnedFd;
//!
//! // Answers from its callback through a queue: a peer that does not read stalls nobody.
//! struct Echo(OutputQueue);
//! impl Frontend for Echo {
//!     fn can_receive(&mut self) -> usize { self.0.can_receive(4096) }
//!     fn receive(&mut self, data: &[u8], _fds: Vec<OwnedFd>) { let _ = self.0.write(data); }
//!     fn event(&mut self, event: Event) { println!("{event:?}"); }
//!     fn writable(&mut self) { let _ = self.0.flush(); }
//! }
//!
//! let lp = EventLoop::spawn()?;
//! let registry = Registry::new(lp.handle());
//! registry.add_str("ringbuf,id=rb0,size=1024")?;
//! let handle = registry.connect("rb0")?;
//! handle.set_frontend(Echo(OutputQueue::new(handle.clone())));
//! handle.write_all(b"hello")?;
//! assert_eq!(registry.ringbuf_read("rb0", 100)?, b"hello");
//! # Ok::<(), chardev::Error>(())
//! ```
//!
//! The fd contract (the seed): fds received from a peer reach the frontend blocking and
//! close-on-exec, as [`OwnedFd`](std::os::fd::OwnedFd)s that close when dropped; code that
//! wants non-blocking I/O sets it with [`fd::set_nonblocking`].

// Library code never unwraps what a peer or a user controls.
#![cfg_attr(not(test), warn(clippy::unwrap_used))]
// Every public item says what it is for, and can be printed in an embedder's debug output.
#![deny(missing_docs, missing_debug_implementations)]

pub mod backend; // the backend trait, its view of the loop, the Splice capability
pub mod backends; // null, file, pipe, ringbuf, stdio
pub mod backlog; // a bounded queue of output with gap markers: overflow=drop, backlog=
mod cell; // one chardev as the loop, the registry and handles share it
pub mod compat; // legacy -serial/-monitor strings (stdio, tcp:H:P, mon:...) -> ChardevSpec
pub mod counters; // bytes in/out, drops, waits, connections, fds: per chardev
pub mod error; // the one error type
pub mod event_loop; // mio loop: readiness, flow control, timers, typed requests; AsFd to nest it
pub mod fanout; // recent output kept once, a cursor per viewer: history and viewer queues as one
pub mod fd; // the fd contract: blocking/non-blocking, cloexec, ownership
pub mod fdset; // fds from management: getfd names, add-fd sets, /dev/fdset/N opens
pub mod frontend; // the device side: callbacks and the handle
mod logfile; // logfile=: O_APPEND, rotation by size, reopen, timestamps, its own writer thread
pub mod mux; // Ctrl-A escapes for one backend shared by up to four frontends, as a pure filter
pub mod objects; // -object / object-add: TLS credentials and authz lists that chardevs name
pub mod options; // QEMU `-chardev` syntax -> ChardevSpec
pub mod output; // a frontend's bounded output queue: answers from callbacks never block
pub mod registry; // chardevs by id: add, remove, change, query
pub mod serial; // serial line parameters, and the SerialLine capability of a tty backend
pub mod sessions; // many connections on one chardev: listing, steering, events
pub mod sync; // the one poison-tolerant lock helper
pub mod term; // raw terminal mode, restored on drop, exit, panic and fatal signals
mod token; // what a mio token of the loop means: chardev and source

pub use crate::backend::{Chardev, Input, Io, Splice, Waker};
pub use crate::counters::Counters;
pub use crate::error::{Error, Result};
pub use crate::event_loop::{EventLoop, LoopHandle, LoopThread};
pub use crate::frontend::{Event, Frontend, FrontendHandle};
pub use crate::mux::MAX_MUX;
pub use crate::options::{BackendSpec, ChardevSpec};
pub use crate::output::{Full, OutputQueue};
pub use crate::registry::{Added, BuildNotice, ChardevInfo, Registry};
pub use crate::serial::{ModemLines, Parity, SerialLine, SerialParams};
pub use crate::sessions::{SessionEvent, SessionInfo, SessionRole, Sessions};

//! QMP, QEMU's JSON monitor, on any chardev: the greeting and capabilities negotiation, a
//! streaming JSON parser (a command runs when its closing brace arrives), QEMU's error
//! classes and texts, events, fds passed with `getfd` and `add-fd`, and the chardev commands
//! (`chardev-add`/`-change`/`-remove`, `query-chardev`, ringbufs, `query-fdsets`, ...). The
//! embedder adds the commands of its own machine.
//!
//! A QMP monitor on a unix socket, with commands of the machine's own (the same as a
//! program: `cargo run -p chardev-qmp --example qmp_unix_socket -- /tmp/vm-qmp.sock`):
//!
//! ```no_run
//! use chardev::{EventLoop, Registry};
//! use chardev_qmp::{Qmp, QmpError};
//! use serde_json::json;
//!
//! let lp = EventLoop::spawn()?;
//! let registry = Registry::new(lp.handle());
//! chardev_socket::register(&registry);
//! registry.add_str("socket,id=qmp0,path=/tmp/vm-qmp.sock,server=on,wait=off")?;
//!
//! let qmp = Qmp::builder(&registry)
//!     .version(7, 2, 0, "my-vmm")
//!     .command("query-status", |_call| Ok(json!({"status": "running", "running": true})))
//!     .command("system_powerdown", |call| {
//!         call.events().emit("POWERDOWN", None);
//!         Ok(json!({}))
//!     })
//!     .command("my-vmm-fail", |_call| Err(QmpError::generic("not today")))
//!     .build();
//! qmp.attach("qmp0", false)?;
//!
//! // `socat - UNIX-CONNECT:/tmp/vm-qmp.sock`, then {"execute": "qmp_capabilities"},
//! // {"execute": "query-chardev"}, {"execute": "add-fd"} with an fd attached, ...
//! std::thread::park(); // the loop thread serves the monitor meanwhile
//! lp.stop()?;
//! # Ok::<(), chardev::Error>(())
//! ```
//!
//! Fd sets are the registry's ([`chardev::Registry::fd_sets`]): a chardev added with
//! `"out": "/dev/fdset/3"` opens a member of set 3, as in QEMU. Named fds (`getfd`) belong to
//! one monitor, and a socket address of type `fd` names one of them.

// Library code never unwraps what a peer or a user controls.
#![cfg_attr(not(test), warn(clippy::unwrap_used))]
// Every public item says what it is for, and can be printed in an embedder's debug output.
#![deny(missing_docs, missing_debug_implementations)]

pub mod args; // a command's arguments, checked as QEMU checks them
pub mod commands; // the command table, what a handler sees, the built-in commands
pub mod error; // QEMU's error classes
pub mod events; // events to every negotiated monitor, never blocking
pub mod json; // the JSON stream in, QEMU's spacing out
pub mod monitor; // the server and the per-chardev monitor
pub mod objects; // object-add / object-del: TLS credentials and authz objects
pub mod qapi; // QAPI's ChardevBackend JSON -> ChardevSpec
pub mod vendor; // session control and history, under the embedder's __RFQDN_ prefix

pub use crate::args::Args;
pub use crate::commands::{Call, CommandTable, Handler};
pub use crate::error::{ErrorClass, QmpError, QmpResult};
pub use crate::events::EventBus;
pub use crate::monitor::{Monitor, Qmp, QmpBuilder};
pub use crate::objects::{object_from_json, parse_object_arg};
pub use crate::qapi::backend_spec;

//! Pseudo-terminals and serial lines for the [`chardev`] registry: QEMU's `pty` and
//! `serial` (alias `tty`) chardevs.
//!
//! ```no_run
//! let lp = chardev::EventLoop::spawn()?;
//! let registry = chardev::Registry::new(lp.handle());
//! chardev_pty::register(&registry);
//! // QEMU prints "char device redirected to /dev/pts/N (label console)"; a library does not:
//! // `added.pty` has the path, and `Registry::on_build_notice` hears of it (`PtyOpened`).
//! let added = registry.add_str("pty,id=console,path=/tmp/console")?;
//! let console = registry.connect("console")?;
//! // Kept (up to `backlog=`, 64 KiB) until a terminal attaches, then shown to it; past
//! // that the oldest is dropped, or with `backlog-full=wait` the writer waits.
//! console.write_all(b"guest booting...\r\n")?;
//! if let Some(slave) = added.pty {
//!     eprintln!("attach with: picocom {} (or /tmp/console)", slave.display());
//! }
//! # Ok::<(), chardev::Error>(())
//! ```
//!
//! A pty costs no CPU while nobody is attached and notices a terminal as it opens the slave
//! (inotify, see [`pty`]); output written meanwhile waits for it. A serial line takes its
//! speed, framing, breaks and modem lines from the frontend handle
//! ([`set_serial_params`](chardev::FrontendHandle::set_serial_params),
//! [`send_break`](chardev::FrontendHandle::send_break),
//! [`modem_lines`](chardev::FrontendHandle::modem_lines)).

// Library code never unwraps what a peer or a user controls.
#![cfg_attr(not(test), warn(clippy::unwrap_used))]
// Every public item says what it is for, and can be printed in an embedder's debug output.
#![deny(missing_docs, missing_debug_implementations)]

mod backlog; // output kept for a terminal to come: bounded, oldest dropped first
pub mod pty; // the `pty` backend
pub mod serial; // the `serial` (`tty`) backend
mod termios; // terminal attributes and tty ioctls: the crate's only unsafe code
mod watch; // who has a pty's slave open, from inotify events

use chardev::Registry;

/// Makes `pty` and `serial` (alias `tty`) chardevs buildable by `registry`.
pub fn register(registry: &Registry) {
    registry.register_backend("pty", pty::build);
    registry.register_backend("serial", serial::build);
}

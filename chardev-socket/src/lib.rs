//! Socket chardevs: unix and tcp streams (server or client, telnet, reconnect, fd passing)
//! and connected udp sockets, for the [`chardev`] registry.
//!
//! ```no_run
//! let lp = chardev::EventLoop::spawn()?;
//! let registry = chardev::Registry::new(lp.handle());
//! chardev_socket::register(&registry);
//! registry.add_str("socket,id=mon0,path=/tmp/mon0.sock,server=on,wait=off")?;
//! # Ok::<(), chardev::Error>(())
//! ```
//!
//! Fds received on unix sockets reach the frontend blocking and close-on-exec, at most 16
//! per message (the rest are closed with a warning), with the bytes they came with.

// Library code never unwraps what a peer or a user controls.
#![cfg_attr(not(test), warn(clippy::unwrap_used))]
// Every public item says what it is for, and can be printed in an embedder's debug output.
#![deny(missing_docs, missing_debug_implementations)]

pub mod address; // unix paths, abstract names, tcp hosts and ports, inherited fds
pub mod socket; // the `socket` backend
pub mod telnet; // telnet negotiation and IAC filtering
pub mod udp; // the `udp` backend
pub mod web; // the web console's page and HTTP answers, for `websocket=on` servers
pub mod websocket; // RFC 6455 for `websocket=on` servers, by tungstenite

use chardev::Registry;

/// Makes `socket` and `udp` chardevs buildable by `registry`.
pub fn register(registry: &Registry) {
    registry.register_backend("socket", socket::build);
    registry.register_backend("udp", udp::build);
}

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
//! TLS (`tls-creds=`, `tls-authz=`) comes from `tls-creds-x509` and `authz-*` objects added
//! to the registry ([`Registry::add_object`]): see [`tls`].
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
pub mod tls; // tls-creds-x509 on rustls: credentials, sessions on the loop, tls-authz names
pub mod udp; // the `udp` backend
pub mod web; // the web console's page and HTTP answers, for `websocket=on` servers
pub mod websocket; // RFC 6455 for `websocket=on` servers, by tungstenite

use chardev::Registry;

/// Makes `socket` and `udp` chardevs buildable by `registry`. Web console servers
/// (`websocket=on` with `clients=` or `history=`) serve their page without xterm.js (it says
/// what to install): see [`register_with_web_assets`].
pub fn register(registry: &Registry) {
    register_with_web_assets(registry, None);
}

/// Makes `socket` and `udp` chardevs buildable by `registry`, with web console servers
/// serving xterm.js from `assets`, the folder of the `@xterm/xterm` npm package
/// (`scripts/setup-web` puts it in [`web::XTERM_PACKAGE`] under the repository's top). Its
/// files are read at each request, so it may be installed while the servers run.
pub fn register_with_web_assets(registry: &Registry, assets: Option<std::path::PathBuf>) {
    let assets: Option<std::sync::Arc<std::path::Path>> = assets.map(Into::into);
    registry.register_backend("socket", move |spec, cx| {
        socket::build_with_web_assets(spec, cx, assets.clone())
    });
    registry.register_backend("udp", udp::build);
    // `-object tls-creds-x509` and `object-add` load the directory, as QEMU's do.
    registry.register_object_check("tls-creds-x509", tls::check_object);
}

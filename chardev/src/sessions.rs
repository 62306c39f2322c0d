//! Sessions: the connections of a chardev that serves many at once (a `socket` server with
//! `clients=` or `history=`), as an operator sees and steers them. QEMU has nothing of the
//! kind; the QMP commands over this are vendor-prefixed (see `chardev-qmp`).
//!
//! A backend offers the [`Sessions`] capability through [`Chardev::sessions`]; the
//! [`Registry`](crate::Registry) reaches it by id (`Registry::sessions`,
//! `Registry::disconnect_session`, `Registry::set_session_writer`, `Registry::history`), and
//! an embedder hears about sessions opening and closing with
//! `Registry::on_session_event`.
//!
//! [`Chardev::sessions`]: crate::Chardev::sessions

use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use crate::error::Result;
use crate::sync::lock;

/// Whose input a session's bytes are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionRole {
    /// Its input reaches the frontend (one session at a time).
    Writer,
    /// It sees the output; its input is dropped and counted.
    Viewer,
}

impl SessionRole {
    /// `writer` or `viewer`, as QMP and the human monitor show it.
    pub fn as_str(self) -> &'static str {
        match self {
            SessionRole::Writer => "writer",
            SessionRole::Viewer => "viewer",
        }
    }
}

/// One session as a listing shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionInfo {
    /// Its number on this chardev, counted from 1 and never reused while the chardev lives.
    pub id: u64,
    /// Who is connected: `127.0.0.1:40512` for tcp, `unix:pid=1234` (the peer's process,
    /// from `SO_PEERCRED`) for a unix socket.
    pub peer: String,
    /// Writer or viewer.
    pub role: SessionRole,
    /// When it connected.
    pub since: SystemTime,
    /// Output bytes it was sent.
    pub sent: u64,
    /// Output bytes it is behind: due but not sent yet.
    pub queued: u64,
    /// Output bytes it lost by falling behind (each gap shown to it with a marker).
    pub dropped: u64,
    /// Bytes it sent while a viewer, dropped.
    pub input_dropped: u64,
    /// Send calls that carried its output (history and live), to see that output goes out
    /// in large pieces.
    pub writes: u64,
    /// The terminal size (columns, rows) the session last reported: a web console page's
    /// resize message. `None` if it never said.
    pub size: Option<(u16, u16)>,
}

/// What the sessions of a backend can be asked (a capability, see the module docs).
pub trait Sessions {
    /// The sessions open now, oldest first.
    fn list(&self) -> Vec<SessionInfo>;

    /// Ends session `id` (its peer sees the connection close); the loop raises the
    /// session's close event as for any other. `Error::NoSession` if there is no such
    /// session.
    fn disconnect(&mut self, id: u64) -> Result<()>;

    /// Makes session `id` the writer: its input reaches the frontend from now on, and the
    /// writer before it becomes a viewer.
    fn make_writer(&mut self, id: u64) -> Result<()>;
}

/// A session opened or closed (see `Registry::on_session_event`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionEvent {
    /// The chardev's id.
    pub chardev: String,
    /// The session's number.
    pub session: u64,
    /// Who it is (as [`SessionInfo::peer`]).
    pub peer: String,
    /// Its role when it opened or closed.
    pub role: SessionRole,
    /// Opened, or closed and why.
    pub change: SessionChange,
}

/// What happened to a session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionChange {
    /// It connected (after its handshake, for websocket).
    Opened,
    /// It went: `reason` is `peer` (the peer closed or the connection broke), `disconnect`
    /// (asked for), or `removed` (the chardev went).
    Closed {
        /// Why it closed.
        reason: &'static str,
    },
}

/// What `Registry::on_session_event` keeps.
pub(crate) type SessionFn = dyn Fn(&SessionEvent) + Send + Sync;

/// Where a backend reports its sessions' events: the embedder's handler, if it set one
/// (`BuildContext::session_events`; a handler set later reaches chardevs built before).
/// Called on the loop thread; the handler must not block.
#[derive(Clone, Default)]
pub struct SessionEvents(pub(crate) Arc<Mutex<Option<Arc<SessionFn>>>>);

impl std::fmt::Debug for SessionEvents {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let set = lock(&self.0).is_some();
        f.write_str(if set { "SessionEvents(set)" } else { "SessionEvents(none)" })
    }
}

impl SessionEvents {
    /// Tells the embedder about `event` (nothing if it did not ask).
    pub fn emit(&self, event: &SessionEvent) {
        let handler = lock(&self.0).clone();
        if let Some(handler) = handler {
            handler(event);
        }
    }

    pub(crate) fn set(&self, handler: Arc<SessionFn>) {
        *lock(&self.0) = Some(handler);
    }
}

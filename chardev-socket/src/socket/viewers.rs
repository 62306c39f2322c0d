//! A server with many clients at once (`clients=N` above 1, or `history=`): one console,
//! many viewers.
//!
//! Output is appended once to a [`Ring`] and every connection has its own [`Reader`] cursor
//! into it, so that no byte is copied per viewer and a viewer's queue is just how far its
//! cursor is behind. A write from the frontend never waits: it appends, sends at once to the
//! connections that are caught up, and arms writability for the others, which catch up from
//! the loop. A connection that falls behind by more than the ring holds loses the oldest
//! output and sees a gap marker before what comes next ([`gap_marker`]); nobody else
//! notices.
//!
//! Input comes from one connection at a time, the *writer*: the first to open, then the
//! oldest one left when it goes. The others are viewers: what they send is read (so that
//! their socket never fills and websocket pings are answered), counted and dropped. The
//! frontend sees one `Opened` when the first connection opens and one `Closed` after the
//! last one goes, and flow control of its input is the usual one, on the writer.
//!
//! A connection beyond `clients` is told why in one line and closed at once, never left in
//! the listen queue. Websocket connections still in their handshake do not take a client's
//! place; at most [`HANDSHAKES_MAX`] of them wait at once, each for at most the handshake
//! timeout.

use std::io::{self, IoSlice, Read};
use std::os::fd::{BorrowedFd, OwnedFd};
use std::time::{Instant, SystemTime};

use chardev::error::{Error, Result};
use chardev::fanout::{gap_marker, Reader, Ring};
use chardev::sessions::{SessionChange, SessionEvent, SessionEvents};
use chardev::{fd, Event, Input, Io, SessionInfo, SessionRole, Sessions, Waker};
use mio::{Interest, Token};

use super::{Conn, Socket, Stream, HANDSHAKE_TIMEOUT, HANDSHAKE_TIMER, TELNET_CHUNK};
use crate::telnet::telnet_event;
use crate::websocket::Step;

/// Connections that may be in their handshake at once, beside the clients: websocket
/// handshakes, and a web console's page requests (a browser opens several at once for the
/// page, its script and xterm.js).
pub const HANDSHAKES_MAX: usize = 16;

/// A web console: a `websocket=on` server with viewers also answers page requests
/// ([`crate::web`]).
pub(super) struct Web {
    /// The `@xterm/xterm` package's folder, if the embedder gave one.
    pub(super) assets: Option<std::sync::Arc<std::path::Path>>,
    /// The page's title: the chardev's id.
    pub(super) title: String,
}

/// Where a web console's connection is before it is a websocket.
enum WebPhase {
    /// Reading the request head (at most [`crate::web::HEAD_MAX`]).
    Head(Vec<u8>),
    /// Sending a page (or a refusal), from this offset; closed once it is sent.
    Answer(Vec<u8>, usize),
}

/// The most output one websocket message to a viewer carries: tungstenite holds a message
/// whole until it is sent, so this bounds what a slow websocket viewer holds beside the ring.
const WS_CHUNK: usize = 64 * 1024;

/// The loop source of connection slot `slot` (0 is the listener).
fn source(slot: usize) -> usize {
    1 + slot
}

/// The connections of a server with `clients` above 1 (or with `history`), and the output
/// they share.
pub(super) struct Viewers {
    /// One slot per connection, `clients + HANDSHAKES_MAX` of them.
    slots: Vec<Option<Session>>,
    /// `clients=`: open connections at most.
    max: usize,
    /// The slot whose input reaches the frontend.
    writer: Option<usize>,
    ring: Ring,
    /// `history=`: what a new connection gets first.
    history: usize,
    /// How far a connection may fall behind: the ring's capacity (`max(history, queue)`).
    limit: u64,
    /// The loop's registry, to ask for writability from a frontend's thread.
    registry: Option<mio::Registry>,
    /// Tokens of the slots' sources (fixed once the socket is on the loop).
    tokens: Vec<Token>,
    /// `Opened` was raised and `Closed` is owed.
    announced: bool,
    /// The first client of `wait=on`, made while the socket was built.
    pub(super) made: Option<Conn>,
    next_id: u64,
    /// Where sessions opening and closing are reported.
    events: SessionEvents,
    /// A web console (`websocket=on`): connections start with an HTTP request head.
    pub(super) web: Option<Web>,
    /// Output bytes lost by sessions that have closed since (counters).
    dropped_closed: u64,
    /// Makes the loop read the writer chosen from another thread.
    waker: Option<Waker>,
}

/// One connection of a [`Viewers`] server.
struct Session {
    /// Counts connections from 1, for session control and logs.
    id: u64,
    conn: Conn,
    /// Its websocket handshake is still to complete by this time.
    handshake_deadline: Option<Instant>,
    reader: Reader,
    /// When it opened (session listings).
    since: SystemTime,
    /// Bytes it sent that were dropped: it was not the writer.
    input_dropped: u64,
    /// Output bytes sent to it, and the send calls that took them.
    sent: u64,
    writes: u64,
    /// Registered for writability: it is behind.
    armed: bool,
    /// Who it is (see `SessionInfo::peer`).
    peer: String,
    /// A web console's connection before it is a websocket (or while a page goes out).
    web: Option<WebPhase>,
    /// It was ended on request (`disconnect`), not by its peer.
    ended: bool,
}

impl Session {
    fn open(&self) -> bool {
        self.handshake_deadline.is_none()
    }
}

impl Viewers {
    pub(super) fn new(clients: u32, history: u64, queue: u64, events: SessionEvents) -> Viewers {
        let max = clients.max(1) as usize;
        let history = usize::try_from(history).unwrap_or(usize::MAX);
        let cap = history.max(usize::try_from(queue).unwrap_or(usize::MAX));
        Viewers {
            slots: (0..max + HANDSHAKES_MAX).map(|_| None).collect(),
            max,
            writer: None,
            ring: Ring::new(cap),
            history,
            limit: cap as u64,
            registry: None,
            tokens: Vec::new(),
            announced: false,
            made: None,
            next_id: 1,
            events,
            waker: None,
            web: None,
            dropped_closed: 0,
        }
    }

    /// Whether appending `len` bytes would push out output an open session has not had.
    fn would_drop(&self, len: usize) -> bool {
        let keep_from =
            (self.ring.total() + len as u64).saturating_sub(self.ring.capacity() as u64);
        self.slots.iter().flatten().any(|s| s.open() && s.reader.pos() < keep_from)
    }

    /// Output bytes every session ever lost by falling behind.
    pub(super) fn dropped(&self) -> u64 {
        self.dropped_closed + self.slots.iter().flatten().map(|s| s.reader.dropped()).sum::<u64>()
    }

    fn slot_of(&self, label: &str, id: u64) -> Result<usize> {
        self.slots
            .iter()
            .position(|s| s.as_ref().is_some_and(|s| s.id == id && s.open()))
            .ok_or_else(|| Error::NoSession { id: label.to_string(), session: id })
    }

    fn role(&self, slot: usize) -> SessionRole {
        if self.writer == Some(slot) {
            SessionRole::Writer
        } else {
            SessionRole::Viewer
        }
    }

    fn tell(&self, label: &str, slot: usize, session: &Session, change: SessionChange) {
        self.events.emit(&SessionEvent {
            chardev: label.to_string(),
            session: session.id,
            peer: session.peer.clone(),
            role: self.role(slot),
            change,
        });
    }

    fn open_count(&self) -> usize {
        self.slots.iter().flatten().filter(|s| s.open()).count()
    }

    fn handshake_count(&self) -> usize {
        self.slots.iter().flatten().filter(|s| !s.open()).count()
    }

    /// The oldest open connection, which becomes the writer when the writer goes.
    fn oldest_open(&self) -> Option<usize> {
        self.slots
            .iter()
            .enumerate()
            .filter_map(|(i, s)| s.as_ref().filter(|s| s.open()).map(|s| (s.id, i)))
            .min()
            .map(|(_, i)| i)
    }
}

/// Sets whether a connection is registered for writability too.
fn arm(registry: &mio::Registry, token: Token, session: &mut Session, on: bool) {
    if session.armed == on {
        return;
    }
    let interest = if on { Interest::READABLE | Interest::WRITABLE } else { Interest::READABLE };
    match registry.reregister(session.conn.stream.source(), token, interest) {
        Ok(()) => session.armed = on,
        Err(e) => log::debug!("cannot change a viewer registration: {e}"),
    }
}

/// Sends a connection what it is due, in as few calls as the socket allows: what its
/// telnet or websocket layer still holds, then a gap marker if it fell behind, then its part
/// of the ring, as one vectored write on a plain connection. Whether it caught up; an error
/// other than `WouldBlock` means the connection is broken.
fn catch_up(session: &mut Session, ring: &Ring, limit: u64) -> io::Result<bool> {
    session.reader.enforce(ring, limit);
    loop {
        match session.conn.flush() {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
            Err(e) => return Err(e),
        }
        if let Some(ws) = &mut session.conn.ws {
            // One message at a time waits in tungstenite's buffer.
            if !ws.flush_output()? {
                return Ok(false);
            }
        }
        let (a, b) = session.reader.due(ring);
        let lost = session.reader.gap();
        if lost > 0 {
            // The marker is taken only once the socket takes some of it: while it takes
            // nothing, later drops add to the same count, so a viewer that was stopped sees
            // one marker however long it was away.
            let marker = gap_marker(lost);
            let n = match &mut session.conn.ws {
                // A websocket message carries the marker and the data after it.
                Some(ws) => {
                    let take = a.len().min(WS_CHUNK);
                    ws.write(&[marker.as_bytes(), &a[..take]].concat())?;
                    session.reader.advance(take);
                    session.sent += take as u64;
                    marker.len()
                }
                None => match session.conn.send(marker.as_bytes()) {
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                    Err(e) => return Err(e),
                },
            };
            session.reader.take_gap();
            session.writes += 1;
            session.conn.pending.extend_from_slice(&marker.as_bytes()[n..]);
            continue;
        }
        if a.is_empty() {
            return Ok(true);
        }
        let taken = if let Some(ws) = &mut session.conn.ws {
            ws.write(&a[..a.len().min(WS_CHUNK)])?
        } else if session.conn.telnet.is_some() {
            let take = a.len().min(TELNET_CHUNK);
            crate::telnet::escape_into(&a[..take], &mut session.conn.pending);
            take
        } else if session.conn.tls.is_some() {
            // TLS takes what fits its buffer; the records go out with the next flush above.
            match session.conn.send(a) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) => return Err(e),
            }
        } else {
            match fd::send_vectored(session.conn.stream.fd(), &[IoSlice::new(a), IoSlice::new(b)]) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) => return Err(e),
            }
        };
        session.writes += 1;
        session.sent += taken as u64;
        session.reader.advance(taken);
    }
}

/// Who is at the other end: the tcp peer's address, or the unix peer's process.
fn peer_of(stream: &Stream) -> String {
    match stream {
        Stream::Tcp(s) => s.peer_addr().map_or_else(|_| "tcp:unknown".into(), |a| a.to_string()),
        Stream::Unix(s) => {
            use nix::sys::socket::{getsockopt, sockopt::PeerCredentials};
            match getsockopt(s, PeerCredentials) {
                Ok(cred) => format!("unix:pid={}", cred.pid()),
                Err(_) => "unix".into(),
            }
        }
    }
}

impl Sessions for Socket {
    fn list(&self) -> Vec<SessionInfo> {
        let Some(v) = self.viewers.as_ref() else { return Vec::new() };
        let mut list: Vec<SessionInfo> = v
            .slots
            .iter()
            .enumerate()
            .filter_map(|(slot, s)| s.as_ref().filter(|s| s.open()).map(|s| (slot, s)))
            .map(|(slot, s)| SessionInfo {
                id: s.id,
                peer: s.peer.clone(),
                role: v.role(slot),
                since: s.since,
                sent: s.sent,
                queued: s.reader.behind(&v.ring).min(v.limit),
                dropped: s.reader.dropped(),
                input_dropped: s.input_dropped,
                writes: s.writes,
                size: s.conn.ws.as_ref().and_then(|ws| ws.size()),
            })
            .collect();
        list.sort_by_key(|s| s.id);
        list
    }

    fn disconnect(&mut self, id: u64) -> Result<()> {
        let label = self.label.clone();
        let v = self.viewers();
        let slot = v.slot_of(&label, id)?;
        if let Some(session) = v.slots[slot].as_mut() {
            // The loop sees the hang-up and closes it as any other.
            session.ended = true;
            session.conn.stream.shutdown();
        }
        Ok(())
    }

    fn make_writer(&mut self, id: u64) -> Result<()> {
        let label = self.label.clone();
        let v = self.viewers();
        let slot = v.slot_of(&label, id)?;
        if v.writer != Some(slot) {
            v.writer = Some(slot);
            // Its input may be waiting already: the loop reads it now.
            if let Some(waker) = &v.waker {
                waker.wake();
            }
        }
        Ok(())
    }
}

impl Socket {
    pub(super) fn viewers(&mut self) -> &mut Viewers {
        self.viewers.as_mut().expect("a server with viewers")
    }

    /// `register` of a server with viewers: the listener is registered already.
    pub(super) fn viewers_register(&mut self, io: &mut Io<'_>) {
        let registry = match io.registry().try_clone() {
            Ok(r) => Some(r),
            Err(e) => {
                log::warn!("chardev '{}': cannot share the loop's registry: {e}", self.label);
                None
            }
        };
        let waker = io.waker();
        let v = self.viewers();
        v.registry = registry;
        v.waker = Some(waker);
        v.tokens = (0..v.slots.len()).map(|i| io.token(source(i))).collect();
        if let Some(conn) = v.made.take() {
            self.add_session(io, conn);
        }
        self.accept_viewers(io);
    }

    /// Accepts every queued connection: each gets a slot, or is told why not and closed.
    pub(super) fn accept_viewers(&mut self, io: &mut Io<'_>) {
        loop {
            let super::Role::Server(listener) = &self.role else { return };
            let stream = match listener.accept() {
                Ok(stream) => stream,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    log::warn!("chardev '{}': accept failed: {e}", self.label);
                    io.add_timer(std::time::Duration::from_millis(100), super::ACCEPT_RETRY_TIMER);
                    return;
                }
            };
            // TLS and websocket connections hold a handshake place before a client's.
            let websocket = self.websocket || self.tls.is_some();
            let v = self.viewers();
            let full = if v.web.is_some() {
                // A page request is served even when every client place is taken (the page
                // then hears why its websocket is refused): only the handshake places count.
                v.handshake_count() >= HANDSHAKES_MAX
            } else if websocket {
                v.handshake_count() >= HANDSHAKES_MAX || v.open_count() >= v.max
            } else {
                v.open_count() >= v.max
            };
            if full {
                self.refuse(stream);
                continue;
            }
            match self.accepted(stream) {
                Ok(conn) => self.add_session(io, conn),
                Err(e) => log::info!("chardev '{}': client dropped: {e}", self.label),
            }
        }
    }

    /// Tells a connection beyond `clients` why it is closed, in one line (an HTTP 503 to a
    /// websocket client), as far as its socket takes it without waiting.
    fn refuse(&mut self, stream: Stream) {
        let max = self.viewers().max;
        let line = format!("chardev '{}': too many clients (clients={max})\r\n", self.label);
        log::info!("{}", line.trim_end());
        if self.tls.is_some() {
            // A TLS client would take a line in clear text for a broken handshake: it is
            // closed without one (the log says why).
            stream.shutdown();
            return;
        }
        let msg = if self.websocket {
            format!(
                "HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\n\
                 Content-Length: {}\r\nConnection: close\r\n\r\n{line}",
                line.len()
            )
        } else {
            line
        };
        if let Err(e) = fd::send_with_fds(stream.fd(), msg.as_bytes(), &[]) {
            log::debug!("chardev '{}': refusal not sent: {e}", self.label);
        }
        stream.shutdown();
    }

    /// Puts a new connection in a free slot and on the loop; it opens now, or when its
    /// websocket handshake completes.
    fn add_session(&mut self, io: &mut Io<'_>, mut conn: Conn) {
        let label = self.label.clone();
        let v = self.viewers();
        let Some(slot) = v.slots.iter().position(Option::is_none) else {
            self.refuse(conn.stream);
            return;
        };
        let web = v.web.is_some().then(|| WebPhase::Head(Vec::new()));
        let handshake = conn.needs_handshake() || web.is_some();
        let watch = conn.needs_handshake() || !conn.pending.is_empty();
        let interest =
            if watch { Interest::READABLE | Interest::WRITABLE } else { Interest::READABLE };
        if let Err(e) = io.register(conn.stream.source(), source(slot), interest) {
            log::warn!("chardev '{label}': cannot watch a connection: {e}");
            return;
        }
        let id = v.next_id;
        v.next_id += 1;
        let handshake_deadline = handshake.then(|| Instant::now() + HANDSHAKE_TIMEOUT);
        if handshake {
            io.add_timer(HANDSHAKE_TIMEOUT, HANDSHAKE_TIMER);
        }
        conn.watching_output = watch;
        let peer = peer_of(&conn.stream);
        v.slots[slot] = Some(Session {
            web,
            peer,
            ended: false,
            id,
            conn,
            handshake_deadline,
            reader: Reader::default(),
            since: SystemTime::now(),
            input_dropped: 0,
            sent: 0,
            writes: 0,
            armed: watch,
        });
        if !handshake {
            self.open_session(io, slot);
        }
    }

    /// A connection is open: it gets the history and then live output; the first one is
    /// the writer, and the first one opens the chardev for the frontend.
    fn open_session(&mut self, io: &mut Io<'_>, slot: usize) {
        let label = self.label.clone();
        let v = self.viewers();
        let history = v.history;
        let Some(session) = v.slots[slot].as_mut() else { return };
        session.handshake_deadline = None;
        session.reader = Reader::new(&v.ring, history);
        session.since = SystemTime::now();
        log::info!("chardev '{label}': client {} connected: {}", session.id, session.conn.name);
        if v.writer.is_none() {
            v.writer = Some(slot);
            io.input_ready();
        }
        if !v.announced {
            v.announced = true;
            io.event(Event::Opened);
        }
        if let Some(session) = v.slots[slot].as_ref() {
            v.tell(&label, slot, session, SessionChange::Opened);
        }
        self.flush_session(slot);
    }

    /// Sends a connection what it is due; arms writability while it is behind, and closes it
    /// if it broke (from the loop, [`Socket::viewer_ready`] sees the hang-up).
    fn flush_session(&mut self, slot: usize) -> bool {
        let v = self.viewers.as_mut().expect("viewers");
        let Some(session) = v.slots[slot].as_mut().filter(|s| s.open()) else { return true };
        let (done, broken) = match catch_up(session, &v.ring, v.limit) {
            Ok(done) => (done, false),
            Err(e) => {
                log::debug!("chardev '{}': send to client {} failed: {e}", self.label, session.id);
                (true, true)
            }
        };
        if let (Some(registry), Some(&token)) = (&v.registry, v.tokens.get(slot)) {
            arm(registry, token, session, !done || broken);
        }
        !broken
    }

    /// Takes a connection away: `Closed` for the frontend after the last one, and the
    /// writer's role to the oldest one left.
    fn close_session(&mut self, io: &mut Io<'_>, slot: usize) {
        let label = self.label.clone();
        let v = self.viewers();
        let Some(session) = v.slots[slot].as_ref() else { return };
        if session.open() {
            let reason = if session.ended { "disconnect" } else { "peer" };
            v.tell(&label, slot, session, SessionChange::Closed { reason });
        }
        let Some(mut session) = v.slots[slot].take() else { return };
        v.dropped_closed += session.reader.dropped();
        let _ = io.registry().deregister(session.conn.stream.source());
        session.conn.end();
        log::info!(
            "chardev '{label}': client {} disconnected: {} ({} bytes sent, {} dropped, {} of its input dropped)",
            session.id,
            session.conn.name,
            session.sent,
            session.reader.dropped(),
            session.input_dropped
        );
        if v.writer == Some(slot) {
            v.writer = v.oldest_open();
            if v.writer.is_some() {
                io.input_ready();
            }
        }
        if v.announced && v.open_count() == 0 {
            v.announced = false;
            io.event(Event::Closed);
        }
    }

    /// Readiness on a connection's source.
    pub(super) fn viewer_ready(
        &mut self,
        io: &mut Io<'_>,
        source: usize,
        event: &mio::event::Event,
    ) {
        let slot = source - 1;
        let label = self.label.clone();
        let v = self.viewers();
        let Some(session) = v.slots.get_mut(slot).and_then(Option::as_mut) else { return };
        // TLS first: a web console's request, a websocket's handshake come inside it.
        if session.conn.tls.as_ref().is_some_and(|t| !t.is_open()) {
            match session.conn.advance() {
                Step::Pending => return,
                Step::Failed(why) => {
                    log::info!("chardev '{label}': client dropped: {why}");
                    return self.close_session(io, slot);
                }
                Step::Open => {
                    if let Some(dn) = session.conn.peer_name() {
                        log::info!("chardev '{label}': TLS client '{dn}' authenticated");
                    }
                }
            }
        }
        if session.web.is_some() {
            return self.web_ready(io, slot, event);
        }
        if !session.open() {
            let step = match session.conn.needs_handshake() {
                true => session.conn.advance(),
                false => Step::Open,
            };
            match step {
                Step::Pending => {}
                Step::Open => self.open_session(io, slot),
                Step::Failed(why) => {
                    log::info!("chardev '{}': {why}", self.label);
                    self.close_session(io, slot);
                }
            }
            return;
        }
        if event.is_writable() {
            if let Some(ws) = &mut session.conn.ws {
                // Pongs sent: a writer whose input paused for them is read again.
                if ws.on_writable() && v.writer == Some(slot) {
                    io.input_ready();
                }
            }
            if !self.flush_session(slot) {
                self.close_session(io, slot);
                return;
            }
        }
        let v = self.viewers();
        let Some(session) = v.slots[slot].as_mut() else { return };
        if event.is_read_closed() || event.is_error() {
            session.conn.hung_up = true;
        }
        if !(event.is_readable() || event.is_read_closed() || event.is_error()) {
            return;
        }
        if v.writer == Some(slot) {
            io.input_ready();
            return;
        }
        // A viewer: read what it sent, count it and drop it.
        let mut buf = [0u8; 4096];
        loop {
            let got = match &mut session.conn.ws {
                // 0 bytes: a control frame (a ping, answered); the end comes as an error.
                Some(ws) => match ws.read(&mut buf) {
                    Ok(0) => continue,
                    other => other,
                },
                None if session.conn.tls.is_some() => session
                    .conn
                    .tls
                    .as_mut()
                    .map_or(Ok(0), |t| t.read(session.conn.stream.fd(), &mut buf)),
                None => match &mut session.conn.stream {
                    Stream::Unix(s) => {
                        let mut fds = Vec::new();
                        // fds a viewer sends are closed: only the writer's reach the frontend.
                        fd::recv_with_fds(std::os::fd::AsFd::as_fd(s), &mut buf, &mut fds)
                            .map(|r| r.bytes)
                    }
                    Stream::Tcp(s) => s.read(&mut buf),
                },
            };
            match got {
                Ok(0) => break,
                Ok(n) => session.input_dropped += n as u64,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
        self.close_session(io, slot);
    }

    /// Readiness on a web console's connection before it is a websocket: reads the request
    /// head, then answers a page request (and closes), or starts the websocket handshake
    /// with the head's bytes replayed.
    fn web_ready(&mut self, io: &mut Io<'_>, slot: usize, event: &mio::event::Event) {
        let label = self.label.clone();
        let v = self.viewers();
        let open = v.open_count();
        let max = v.max;
        let Some(web) = v.web.as_ref() else { return };
        let (assets, title) = (web.assets.clone(), web.title.clone());
        let Some(session) = v.slots[slot].as_mut() else { return };
        let fd = session.conn.stream.fd();
        match &mut session.web {
            Some(WebPhase::Head(head)) => {
                let mut buf = [0u8; 2048];
                let mut ended = false;
                while head.len() < crate::web::HEAD_MAX {
                    let room = buf.len().min(crate::web::HEAD_MAX - head.len());
                    let got = match &mut session.conn.tls {
                        Some(tls) => tls.read(fd, &mut buf[..room]),
                        None => fd::recv_with_fds(fd, &mut buf[..room], &mut Vec::new())
                            .map(|r| r.bytes),
                    };
                    match got {
                        Ok(0) => {
                            ended = true;
                            break;
                        }
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(_) => {
                            ended = true;
                            break;
                        }
                    }
                }
                let answer = match crate::web::parse_head(head) {
                    crate::web::Head::Incomplete if !ended => return,
                    crate::web::Head::Incomplete => None,
                    crate::web::Head::Upgrade if open >= max => {
                        log::info!("chardev '{label}': too many clients (clients={max})");
                        Some(crate::web::refusal(
                            503,
                            &format!("chardev '{label}': too many clients (clients={max})"),
                        ))
                    }
                    crate::web::Head::Upgrade => {
                        let prefix = std::mem::take(head);
                        session.web = None;
                        let tls = session.conn.tls.take();
                        match crate::websocket::WsConn::accept_over(fd, prefix, tls) {
                            Ok((mut ws, step)) => {
                                ws.take_resize_messages();
                                session.conn.ws = Some(ws);
                                match step {
                                    Step::Open => self.open_session(io, slot),
                                    Step::Pending => {}
                                    Step::Failed(why) => {
                                        log::info!("chardev '{label}': {why}");
                                        self.close_session(io, slot);
                                    }
                                }
                            }
                            Err(e) => {
                                log::info!("chardev '{label}': cannot start a websocket: {e}");
                                self.close_session(io, slot);
                            }
                        }
                        return;
                    }
                    crate::web::Head::Get { path, head_only } => {
                        log::debug!("chardev '{label}': page request {path}");
                        Some(crate::web::respond(&path, head_only, assets.as_deref(), &title))
                    }
                    crate::web::Head::Refuse { status, reason } => {
                        log::info!("chardev '{label}': HTTP request refused ({status}): {reason}");
                        Some(crate::web::refusal(status, reason))
                    }
                };
                match answer {
                    Some(answer) => session.web = Some(WebPhase::Answer(answer, 0)),
                    None => return self.close_session(io, slot),
                }
            }
            Some(WebPhase::Answer(..)) if !event.is_writable() && !event.is_error() => return,
            _ => {}
        }
        // Send the answer as far as the socket takes it; close once it is all out.
        let v = self.viewers();
        let Some(session) = v.slots[slot].as_mut() else { return };
        let Some(WebPhase::Answer(answer, sent)) = &mut session.web else { return };
        loop {
            if *sent == answer.len() {
                // Under TLS the last records may still wait in the session.
                match session.conn.flush() {
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    _ => return self.close_session(io, slot),
                }
            }
            let part = answer[*sent..].to_vec();
            match session.conn.send(&part) {
                Ok(n) => *sent += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return self.close_session(io, slot),
            }
        }
        if let (Some(registry), Some(&token)) = (&v.registry, v.tokens.get(slot)) {
            arm(registry, token, session, true);
        }
    }

    /// `read` of a server with viewers: the writer's input.
    pub(super) fn viewers_read(
        &mut self,
        io: &mut Io<'_>,
        buf: &mut [u8],
        fds: &mut Vec<OwnedFd>,
    ) -> Input {
        let label = self.label.clone();
        let v = self.viewers();
        let Some(slot) = v.writer else { return Input::WouldBlock };
        let Some(session) = v.slots[slot].as_mut() else { return Input::WouldBlock };
        let conn = &mut session.conn;
        let result = match &mut conn.ws {
            Some(ws) => {
                let before = ws.size();
                let got = ws.read(buf);
                // The writer's page told its terminal size: the frontend hears of it.
                if let Some((cols, rows)) = ws.size().filter(|s| Some(*s) != before) {
                    io.event(Event::Resize { cols, rows });
                }
                match got {
                    Ok(0) if ws.is_open() => return Input::Data(0),
                    other => other,
                }
            }
            None => Socket::recv(conn, buf, fds, &label),
        };
        match result {
            Ok(0) => {}
            Ok(n) => {
                let n = match &mut conn.telnet {
                    Some(telnet) => telnet
                        .filter_events(&mut buf[..n], |at, e| io.event_at(at, telnet_event(e))),
                    None => n,
                };
                return Input::Data(n);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Input::WouldBlock,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return Input::Data(0),
            Err(e) => log::info!("chardev '{label}': connection error: {e}"),
        }
        // The writer's stream ended, after every byte before it (QEMU #1264): the next
        // writer, if any, is read from now on.
        self.close_session(io, slot);
        if self.viewers().writer.is_some() {
            Input::WouldBlock
        } else {
            Input::End
        }
    }

    /// `write` of a server with viewers: taken whole, never waiting for anyone.
    pub(super) fn viewers_write(
        &mut self,
        buf: &[u8],
        fds: &[BorrowedFd<'_>],
    ) -> io::Result<usize> {
        if !fds.is_empty() {
            return Err(Error::Unsupported {
                what: self.label.clone(),
                operation: "pass fds: a server with clients= or history= sends to many clients",
            }
            .into());
        }
        // The writer (a vCPU thread) only appends: the loop sends to the viewers, so that the
        // guest's thread does not pay for N copies into N sockets (P10 in BENCHMARKS.md).
        // Only when appending would push out bytes a viewer has not been sent yet does the
        // writer send first itself, so that a viewer that keeps up never loses output to a
        // loop that has not come round yet (a write larger than the ring goes in pieces).
        let piece = self.viewers().ring.capacity().max(1);
        for chunk in buf.chunks(piece) {
            if self.viewers().would_drop(chunk.len()) {
                self.flush_all();
            }
            self.viewers().ring.append(chunk);
        }
        match &self.viewers().waker {
            Some(waker) => waker.wake(),
            // Not on the loop yet: nobody is connected but a `wait=on` first client, which
            // the loop serves once it registers.
            None => self.flush_all(),
        }
        Ok(buf.len())
    }

    /// Sends every session what it is due (a broken connection is closed by the loop when
    /// it sees the hang-up).
    fn flush_all(&mut self) {
        for slot in 0..self.viewers().slots.len() {
            self.flush_session(slot);
        }
    }

    /// The loop was woken: output was appended (send it), or a new writer was chosen (read
    /// it).
    pub(super) fn viewers_woken(&mut self, io: &mut Io<'_>) {
        self.flush_all();
        io.input_ready();
    }

    /// A handshake timer: websocket connections that did not complete theirs are dropped.
    pub(super) fn viewers_timer(&mut self, io: &mut Io<'_>) {
        let now = Instant::now();
        let late: Vec<usize> = self
            .viewers()
            .slots
            .iter()
            .enumerate()
            .filter(|(_, s)| {
                s.as_ref().and_then(|s| s.handshake_deadline).is_some_and(|d| d <= now)
            })
            .map(|(i, _)| i)
            .collect();
        for slot in late {
            log::info!(
                "chardev '{}': handshake not completed within {} s: client dropped",
                self.label,
                HANDSHAKE_TIMEOUT.as_secs()
            );
            self.close_session(io, slot);
        }
    }

    /// `disconnect`: every connection goes (one `Closed`).
    pub(super) fn viewers_disconnect(&mut self, io: &mut Io<'_>) {
        for slot in 0..self.viewers().slots.len() {
            self.close_session(io, slot);
        }
    }

    /// `deregister`: the connections leave the loop (the chardev is removed or replaced).
    pub(super) fn viewers_deregister(&mut self, registry: &mio::Registry) {
        let label = self.label.clone();
        let v = self.viewers();
        for (slot, session) in v.slots.iter().enumerate() {
            if let Some(session) = session.as_ref().filter(|s| s.open()) {
                v.tell(&label, slot, session, SessionChange::Closed { reason: "removed" });
            }
        }
        for session in v.slots.iter_mut().flatten() {
            let _ = registry.deregister(session.conn.stream.source());
        }
    }

    /// `history`: the last bytes of output kept for new connections, not drained.
    pub(super) fn viewers_history(&self, max: Option<usize>) -> Option<Vec<u8>> {
        let v = self.viewers.as_ref()?;
        (v.history > 0).then(|| v.ring.snapshot(Some(max.unwrap_or(v.history).min(v.history))))
    }

    /// The writer's connection name while there is one.
    pub(super) fn viewers_filename(&self) -> Option<String> {
        let v = self.viewers.as_ref()?;
        let slot = v.writer?;
        v.slots[slot].as_ref().map(|s| s.conn.name.clone())
    }

    /// Every connection's stream, to shut down when the socket goes.
    pub(super) fn viewers_shutdown(&mut self) {
        if let Some(v) = &mut self.viewers {
            for session in v.slots.iter().flatten() {
                session.conn.stream.shutdown();
            }
            if let Some(conn) = &v.made {
                conn.stream.shutdown();
            }
        }
    }
}

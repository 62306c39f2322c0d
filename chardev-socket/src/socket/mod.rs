//! `socket`: a stream socket chardev, unix or tcp, server or client (QEMU's `char-socket`).
//!
//! A server serves one client at a time; the next one waits in the listen backlog and is
//! accepted when the first leaves. With `clients=N` above 1 or `history=` (extensions) it
//! serves many at once instead: see [`viewers`]. A client connects at creation, or with `reconnect-ms`
//! retries on the loop's timer, never in a busy loop and never aborting. Unix sockets carry
//! fds both ways. Writes without a connection fail with `NotConnected` (QEMU's EIO), and a
//! vanished peer never raises SIGPIPE.

use std::io::{self, Read};
use std::net::SocketAddr;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::SocketAddr as UnixAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use chardev::error::{Error, Result};
use chardev::fd::{self, MAX_FDS_PER_MESSAGE};
use chardev::options::{BackendSpec, ChardevSpec, SocketAddrSpec, SocketSpec};
use chardev::registry::BuildContext;
use chardev::{BuildNotice, Chardev, Event, Input, Io, Splice};
use mio::Interest;

use crate::address::{self, host_port};
use crate::telnet::{self, telnet_event, TelnetInput};
use crate::tls::{TlsSession, TlsSetup};
use crate::websocket::{Step, WsConn};

pub mod viewers;
use viewers::Viewers;

const LISTENER: usize = 0;
const CONNECTION: usize = 1;
/// The loop sources of a server's connections still in their handshake (TLS, websocket):
/// `PENDING + slot`. (A server with viewers numbers its connections itself.)
const PENDING: usize = 2;

/// Handshakes a one-client server runs at once: a client that connects and stalls (or a
/// crowd of them) does not keep the console from the next client, whose handshake runs
/// beside theirs; the first to finish gets the console.
const PENDING_MAX: usize = 16;

const RECONNECT_TIMER: u64 = 1;
const ACCEPT_RETRY_TIMER: u64 = 2;
const HANDSHAKE_TIMER: u64 = 3;

/// How long a client may take to complete its TLS or websocket handshake before it is
/// dropped, so that a client that connects and says nothing holds nothing for long.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// How much frontend output one telnet write escapes at a time (bounds the pending buffer).
const TELNET_CHUNK: usize = 16 * 1024;

enum Listener {
    Unix(mio::net::UnixListener),
    Tcp(mio::net::TcpListener),
}

impl Listener {
    fn source(&mut self) -> &mut dyn mio::event::Source {
        match self {
            Listener::Unix(l) => l,
            Listener::Tcp(l) => l,
        }
    }

    fn accept(&self) -> io::Result<Stream> {
        Ok(match self {
            Listener::Unix(l) => Stream::Unix(l.accept()?.0),
            Listener::Tcp(l) => Stream::Tcp(l.accept()?.0),
        })
    }
}

enum Stream {
    Unix(mio::net::UnixStream),
    Tcp(mio::net::TcpStream),
}

impl Stream {
    fn source(&mut self) -> &mut dyn mio::event::Source {
        match self {
            Stream::Unix(s) => s,
            Stream::Tcp(s) => s,
        }
    }

    fn fd(&self) -> BorrowedFd<'_> {
        match self {
            Stream::Unix(s) => s.as_fd(),
            Stream::Tcp(s) => s.as_fd(),
        }
    }

    fn shutdown(&self) {
        let r = match self {
            Stream::Unix(s) => s.shutdown(std::net::Shutdown::Both),
            Stream::Tcp(s) => s.shutdown(std::net::Shutdown::Both),
        };
        if let Err(e) = r {
            log::debug!("socket shutdown: {e}");
        }
    }

    /// The connection's filename, QEMU's `qemu_chr_compute_filename`.
    fn filename(&self, protocol: &str, server: bool) -> String {
        let listen = if server { ",server=on" } else { "" };
        match self {
            Stream::Unix(s) => {
                // QEMU shows the local address: the listening path for a server's client,
                // nothing for a client (its socket is unnamed), exactly as QEMU 7.2 does.
                let path = s
                    .local_addr()
                    .ok()
                    .and_then(|a| a.as_pathname().map(|p| p.display().to_string()));
                format!("unix:{}{listen}", path.unwrap_or_default())
            }
            Stream::Tcp(s) => match (s.local_addr(), s.peer_addr()) {
                (Ok(l), Ok(p)) => {
                    format!("{protocol}:{}{listen} <-> {}", host_port(&l), host_port(&p))
                }
                _ => format!("{protocol}:unknown"),
            },
        }
    }
}

/// One connection and what it still owes the peer.
struct Conn {
    stream: Stream,
    /// The connection's filename (`query-chardev` while it is usable).
    name: String,
    telnet: Option<TelnetInput>,
    /// Bytes accepted from the frontend but not yet sent (telnet escaping, negotiation).
    pending: Vec<u8>,
    /// Position of the unsent part of `pending`.
    sent: usize,
    /// `websocket=on`: the RFC 6455 layer over `stream` (over `tls` if there is one).
    ws: Option<WsConn>,
    /// `tls-creds=`: the TLS layer over `stream`, under telnet. Moved into `ws` once its
    /// handshake is done when the connection is a websocket too.
    tls: Option<Box<TlsSession>>,
    /// `websocket=on` over TLS: the websocket handshake starts when the TLS one is done.
    ws_after_tls: bool,
    /// The peer's end of the stream (or an error) was reported: read until it shows, since
    /// no further readiness edge will come.
    hung_up: bool,
    /// Registered for writability too. A plain connection asks for it only while a frontend
    /// waits to write: otherwise every read by the peer would wake the loop for nothing.
    watching_output: bool,
}

impl Conn {
    fn new(stream: Stream, telnet: bool) -> Conn {
        let mut conn = Conn {
            stream,
            name: String::new(),
            telnet: telnet.then(TelnetInput::default),
            pending: Vec::new(),
            sent: 0,
            ws: None,
            tls: None,
            ws_after_tls: false,
            hung_up: false,
            watching_output: false,
        };
        if telnet {
            conn.pending.extend_from_slice(&telnet::NEGOTIATION);
        }
        conn
    }

    /// No telnet, websocket or TLS layer with output of its own to flush when the socket
    /// allows: bytes go to the socket as they are (and may be spliced).
    fn plain(&self) -> bool {
        self.telnet.is_none() && self.ws.is_none() && self.tls.is_none() && !self.ws_after_tls
    }

    /// Sets the registration's interest: writability only while something needs it.
    fn watch(&mut self, io: &Io<'_>, output: bool) -> io::Result<()> {
        if self.watching_output != output {
            let interest =
                if output { Interest::READABLE | Interest::WRITABLE } else { Interest::READABLE };
            io.registry().reregister(self.stream.source(), io.token(CONNECTION), interest)?;
            self.watching_output = output;
        }
        Ok(())
    }

    /// A TLS or websocket layer whose handshake is not complete: no data may flow yet.
    fn needs_handshake(&self) -> bool {
        self.tls.as_ref().is_some_and(|tls| !tls.is_open())
            || self.ws_after_tls
            || self.ws.as_ref().is_some_and(|ws| !ws.is_open())
    }

    /// Moves the handshakes on: TLS first, then the websocket over it.
    fn advance(&mut self) -> Step {
        if let Some(tls) = &mut self.tls {
            if !tls.is_open() {
                match tls.handshake(self.stream.fd()) {
                    Step::Open => {}
                    other => return other,
                }
            }
        }
        if self.ws_after_tls {
            self.ws_after_tls = false;
            let started = match self.tls.take() {
                Some(tls) => WsConn::accept_over_tls(self.stream.fd(), tls),
                None => WsConn::accept(self.stream.fd()),
            };
            match started {
                Ok((ws, step)) => {
                    self.ws = Some(ws);
                    return step;
                }
                Err(e) => return Step::Failed(format!("cannot start the websocket: {e}")),
            }
        }
        match &mut self.ws {
            Some(ws) if !ws.is_open() => ws.advance(),
            _ => Step::Open,
        }
    }

    /// Who the peer is, for logs: its certificate's name under TLS.
    fn peer_name(&self) -> Option<&str> {
        self.tls.as_ref().and_then(|t| t.peer())
    }

    /// One send of plain bytes (through TLS if there is a layer).
    fn send(&mut self, buf: &[u8]) -> io::Result<usize> {
        match &mut self.tls {
            Some(tls) => tls.write(self.stream.fd(), buf),
            None => fd::send_with_fds(self.stream.fd(), buf, &[]),
        }
    }

    /// Sends what is pending (and TLS records); `WouldBlock` while some is still unsent.
    fn flush(&mut self) -> io::Result<()> {
        while self.sent < self.pending.len() {
            let n = self.send_pending_part()?;
            self.sent += n;
        }
        self.pending.clear();
        self.sent = 0;
        match &mut self.tls {
            Some(tls) => tls.push(self.stream.fd()),
            None => Ok(()),
        }
    }

    fn send_pending_part(&mut self) -> io::Result<usize> {
        let fd = self.stream.fd();
        let part = &self.pending[self.sent..];
        match &mut self.tls {
            Some(tls) => tls.write(fd, part),
            None => fd::send_with_fds(fd, part, &[]),
        }
    }

    /// Ends the connection: TLS says goodbye first, then shutdown wakes anyone still
    /// polling a duplicate of this fd (`write_all`).
    fn end(&mut self) {
        if let Some(tls) = &mut self.tls {
            if tls.is_open() {
                tls.close(self.stream.fd());
            }
        }
        self.stream.shutdown();
    }
}

/// A server's connection in its handshake.
struct Pending {
    conn: Conn,
    deadline: Instant,
    /// The handshake is done, and another client had the console: it waits for its turn
    /// (as a plain client waits in the listen queue).
    done: bool,
}

/// Where a client connects to.
enum Target {
    Unix(UnixAddr, PathBuf),
    Tcp(Vec<SocketAddr>),
}

/// How a socket comes by its connections; settled when it is built.
enum Role {
    /// Listens, and serves one client at a time.
    Server(Listener),
    /// Connects to a target.
    Client(Client),
    /// A connected socket passed in (`fd=N`, or a name from `getfd`): served until it ends.
    Passed,
}

/// What a client connects to, and how it tries again.
struct Client {
    target: Target,
    /// `reconnect-ms`: connect on the loop, and again this long after a failure or a hang-up.
    reconnect: Option<Duration>,
    /// A failed connect was logged: later ones are not, until one succeeds (as QEMU does).
    error_reported: bool,
}

/// Where a socket is with its connection (as `pty.rs`'s `Terminal` is for a pty).
enum State {
    /// No connection: a server waits for its next client, a client with `reconnect-ms` for
    /// its timer, anything else for good.
    Idle,
    /// Made while the socket was built (the first client of `wait=on`, a client without
    /// `reconnect-ms`, a passed connected socket) and not on the loop yet: registering opens
    /// it. Without a handshake to wait for, writes go out already.
    Made(Conn),
    /// On the loop, a non-blocking tcp connect in progress (clients with `reconnect-ms`):
    /// writability tells how it ended.
    Connecting(Conn),
    /// On the loop, a websocket client whose handshake is not complete: dropped if it is
    /// not by `deadline`.
    Handshake { conn: Conn, deadline: Instant },
    /// On the loop and announced: the frontend was told `Opened`, so it is owed a `Closed`.
    Open(Conn),
}

impl State {
    /// The connection in any state.
    fn conn(&self) -> Option<&Conn> {
        match self {
            State::Idle => None,
            State::Made(conn)
            | State::Connecting(conn)
            | State::Handshake { conn, .. }
            | State::Open(conn) => Some(conn),
        }
    }

    fn conn_mut(&mut self) -> Option<&mut Conn> {
        match self {
            State::Idle => None,
            State::Made(conn)
            | State::Connecting(conn)
            | State::Handshake { conn, .. }
            | State::Open(conn) => Some(conn),
        }
    }

    /// Whether data may flow on the connection: open, or made and needing no handshake.
    fn is_usable(&self) -> bool {
        match self {
            State::Open(_) => true,
            State::Made(conn) => !conn.needs_handshake(),
            State::Idle | State::Connecting(_) | State::Handshake { .. } => false,
        }
    }

    /// The connection if data may flow on it.
    fn usable(&self) -> Option<&Conn> {
        self.conn().filter(|_| self.is_usable())
    }

    fn usable_mut(&mut self) -> Option<&mut Conn> {
        if self.is_usable() {
            self.conn_mut()
        } else {
            None
        }
    }
}

/// A `socket` chardev.
pub struct Socket {
    label: String,
    unix: bool,
    nodelay: bool,
    telnet: bool,
    websocket: bool,
    role: Role,
    state: State,
    /// The filename while no client is connected (`disconnected:...`).
    disconnected: String,
    /// A socket file this server created, removed on drop if it is still ours.
    socket_file: Option<(PathBuf, u64, u64)>,
    /// `clients=` above 1 or `history=`: the server serves many connections at once, and
    /// `state` stays `Idle`.
    viewers: Option<Box<Viewers>>,
    /// Connections accepted or made (counters).
    connections: std::cell::Cell<u64>,
    /// `backlog=`: output kept while no peer is connected, for the next one.
    backlog: Option<chardev::backlog::Backlog>,
    /// Output bytes the backlog dropped to its bound (counters).
    backlog_dropped: u64,
    /// `tls-creds=`: what each connection's TLS session is made from.
    tls: Option<TlsSetup>,
    /// A server's connections in their handshake, [`PENDING_MAX`] slots.
    pending: Vec<Option<Pending>>,
}

impl std::fmt::Debug for Socket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Socket")
            .field("label", &self.label)
            .field("filename", &self.filename())
            .finish()
    }
}

/// Builds a `socket` backend; a server with `wait=on` returns once its first client is in.
pub fn build(spec: &ChardevSpec, cx: &BuildContext<'_>) -> Result<Box<dyn Chardev>> {
    build_with_web_assets(spec, cx, None)
}

/// Builds a `socket` backend whose web console (a `websocket=on` server with `clients=` or
/// `history=`) serves xterm.js from `assets` (see [`crate::register_with_web_assets`]).
pub fn build_with_web_assets(
    spec: &ChardevSpec,
    cx: &BuildContext<'_>,
    assets: Option<std::sync::Arc<Path>>,
) -> Result<Box<dyn Chardev>> {
    let BackendSpec::Socket(s) = &spec.backend else {
        return Err(Error::UnknownBackend(spec.backend.kind().into()));
    };

    if s.tn3270 {
        return Err(Error::option("tn3270", "on", "tn3270 is not supported"));
    }
    // The parser checks `mode=`; a spec built by hand must not have it ignored.
    s.check_mode()?;
    let mut socket = Socket {
        label: cx.id.to_string(),
        unix: false,
        nodelay: s.nodelay,
        telnet: s.telnet && s.server,
        websocket: s.websocket && s.server,
        // Settled below; the socket exists already so that its drop removes a socket file
        // made on the way if a later step fails.
        role: Role::Passed,
        state: State::Idle,
        disconnected: String::new(),
        socket_file: None,
        viewers: None,
        connections: std::cell::Cell::new(0),
        backlog: s
            .backlog
            .map(|b| chardev::backlog::Backlog::new(usize::try_from(b).unwrap_or(usize::MAX))),
        backlog_dropped: 0,
        tls: None,
        pending: Vec::new(),
    };
    s.check_viewers()?;
    s.check_tls()?;
    match &s.addr {
        SocketAddrSpec::Fd(name) => socket.adopt_fd(name, cx.take_fd(name)?, s.server)?,
        _ if s.server => socket.role = Role::Server(socket.listen(s)?),
        _ => {
            let target = socket.prepare_client(s)?;
            let reconnect = (s.reconnect_ms > 0).then(|| Duration::from_millis(s.reconnect_ms));
            socket.role = Role::Client(Client { target, reconnect, error_reported: false });
        }
    }
    if let Some(tls) = &s.tls {
        socket.tls = Some(socket.tls_setup(s, tls, cx)?);
    }
    if s.clients > 1 || s.history > 0 {
        if !matches!(socket.role, Role::Server(_)) {
            let (key, value) = if s.clients > 1 {
                ("clients", s.clients.to_string())
            } else {
                ("history", s.history.to_string())
            };
            return Err(Error::option(key, &value, "only for a server (a listening socket)"));
        }
        let queue = s.queue.unwrap_or(chardev::fanout::QUEUE_DEFAULT);
        let mut viewers = Viewers::new(s.clients, s.history, queue, cx.session_events());
        if socket.websocket {
            viewers.web = Some(viewers::Web { assets, title: cx.id.to_string() });
        }
        socket.viewers = Some(Box::new(viewers));
    }
    match &socket.role {
        Role::Server(_) if s.wait => socket.wait_for_client(cx)?,
        Role::Client(Client { reconnect: None, .. }) => socket.connect_now()?,
        _ => {}
    }
    Ok(Box::new(socket))
}

impl Socket {
    fn server(&self) -> bool {
        matches!(self.role, Role::Server(_))
    }

    /// Loads the TLS credentials for this socket's role (settled by now).
    fn tls_setup(
        &self,
        s: &SocketSpec,
        tls: &chardev::options::TlsSpec,
        cx: &BuildContext<'_>,
    ) -> Result<TlsSetup> {
        let endpoint = match self.role {
            Role::Server(_) => chardev::objects::Endpoint::Server,
            Role::Client(_) => chardev::objects::Endpoint::Client,
            Role::Passed => {
                return Err(Error::option(
                    "tls-creds",
                    &tls.creds,
                    "'tls_creds' option is incompatible with 'fd' address type as client",
                ))
            }
        };
        let host = match &s.addr {
            SocketAddrSpec::Inet { host, .. } => Some(host.as_str()),
            _ => None,
        };
        TlsSetup::new(tls, endpoint, host, |key, id| cx.object(key, id))
    }

    /// Gives a new connection its TLS session, if the socket has TLS.
    fn with_tls(&self, mut conn: Conn) -> io::Result<Conn> {
        if let Some(setup) = &self.tls {
            conn.tls = Some(Box::new(setup.session()?));
        }
        Ok(conn)
    }

    /// The protocol word of tcp filenames, as QEMU 7.2 shows them.
    fn protocol(&self) -> &'static str {
        if self.telnet {
            "telnet"
        } else if self.websocket {
            "websocket"
        } else {
            "tcp"
        }
    }

    fn listen(&mut self, s: &SocketSpec) -> Result<Listener> {
        let listen = ",server=on";
        match &s.addr {
            SocketAddrSpec::Unix { path, abstract_, tight } => {
                let addr = address::unix_addr(path, *abstract_, *tight)?;
                if !abstract_ {
                    address::clear_stale_socket(path)?;
                }
                let std_listener = match s.mode {
                    Some(mode) if !abstract_ => self.bind_with_mode(path, mode)?,
                    _ => {
                        let l = std::os::unix::net::UnixListener::bind_addr(&addr)
                            .map_err(|e| Error::io_path("listen on", path, e))?;
                        if !abstract_ {
                            let meta = std::fs::symlink_metadata(path)
                                .map_err(|e| Error::io_path("inspect", path, e))?;
                            self.socket_file = Some((path.clone(), meta.dev(), meta.ino()));
                        }
                        l
                    }
                };
                std_listener
                    .set_nonblocking(true)
                    .map_err(|e| Error::io("make a listener non-blocking", e))?;
                let listener = Listener::Unix(mio::net::UnixListener::from_std(std_listener));
                self.unix = true;
                self.disconnected = format!(
                    "disconnected:unix:{}{}{listen}",
                    path.display(),
                    abstract_flags(*abstract_, *tight)
                );
                Ok(listener)
            }
            SocketAddrSpec::Inet { host, port, to, ipv4, ipv6 } => {
                let first: u16 = port
                    .parse()
                    .map_err(|_| Error::option("port", port, "must be a port number"))?;
                let last = to.unwrap_or(first).max(first);
                let mut listener = None;
                let mut last_err = None;
                'ports: for p in first..=last {
                    for addr in address::inet_addrs(host, &p.to_string(), *ipv4, *ipv6, true)? {
                        match std::net::TcpListener::bind(addr) {
                            Ok(l) => {
                                l.set_nonblocking(true)
                                    .map_err(|e| Error::io("make a listener non-blocking", e))?;
                                let bound = l
                                    .local_addr()
                                    .map_err(|e| Error::io("read the bound address", e))?;
                                // QEMU shows the bound address, unbracketed, in this form.
                                self.disconnected = format!(
                                    "disconnected:{}:{}:{}{listen}",
                                    self.protocol(),
                                    bound.ip(),
                                    bound.port()
                                );
                                listener = Some(Listener::Tcp(mio::net::TcpListener::from_std(l)));
                                break 'ports;
                            }
                            Err(e) => last_err = Some(e),
                        }
                    }
                }
                listener.ok_or_else(|| {
                    let e = last_err
                        .unwrap_or_else(|| io::Error::from(io::ErrorKind::AddrNotAvailable));
                    Error::Io {
                        op: "listen on",
                        path: Some(format!("{host}:{port}").into()),
                        source: e,
                    }
                })
            }
            SocketAddrSpec::Fd(_) => unreachable!("fd sockets are adopted, not bound"),
        }
    }

    /// `mode=`: socket(2), bind(2), set the file's mode, and only then listen(2). Until
    /// listen a unix socket refuses every connect (ECONNREFUSED), so the moment the file has
    /// bind's `0777 & ~umask` permissions is harmless: by the time anyone can connect, the
    /// file has `mode`. (std's `UnixListener::bind` binds and listens in one call, leaving no
    /// room for the chmod.) The permission Linux checks at connect(2) is write permission on
    /// the file. If setting the mode fails, the socket file is removed and creation fails.
    fn bind_with_mode(
        &mut self,
        path: &Path,
        mode: u32,
    ) -> Result<std::os::unix::net::UnixListener> {
        use nix::sys::socket::{self as sock, AddressFamily, Backlog, SockFlag, SockType};
        let fd = sock::socket(
            AddressFamily::Unix,
            SockType::Stream,
            SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
            None,
        )
        .map_err(|e| Error::io("create a unix socket", e.into()))?;
        let addr =
            sock::UnixAddr::new(path).map_err(|e| Error::io_path("listen on", path, e.into()))?;
        sock::bind(fd.as_raw_fd(), &addr)
            .map_err(|e| Error::io_path("listen on", path, e.into()))?;
        let file = match open_bound_socket_file(path) {
            Ok(file) => file,
            // Not our socket any more (replaced, or turned into a symlink): leave it alone.
            Err(e) => return Err(Error::io_path("set the permissions of", path, e)),
        };
        // From here on the file is ours: Drop (or the failure below) removes it.
        self.socket_file = Some((path.to_path_buf(), file.dev, file.ino));
        if let Err(e) = file.chmod(mode) {
            self.remove_socket_file();
            return Err(Error::io_path("set the permissions of", path, e));
        }
        sock::listen(&fd, Backlog::MAXALLOWABLE)
            .map_err(|e| Error::io_path("listen on", path, e.into()))?;
        Ok(std::os::unix::net::UnixListener::from(fd))
    }

    /// Removes the socket file this server created, if it is still that file.
    fn remove_socket_file(&mut self) {
        let Some((path, dev, ino)) = self.socket_file.take() else { return };
        match std::fs::symlink_metadata(&path) {
            Ok(m) if m.dev() == dev && m.ino() == ino => {
                if let Err(e) = std::fs::remove_file(&path) {
                    log::warn!("chardev '{}': cannot remove {}: {e}", self.label, path.display());
                }
            }
            _ => {}
        }
    }

    fn prepare_client(&mut self, s: &SocketSpec) -> Result<Target> {
        match &s.addr {
            SocketAddrSpec::Unix { path, abstract_, tight } => {
                let target =
                    Target::Unix(address::unix_addr(path, *abstract_, *tight)?, path.clone());
                self.unix = true;
                self.disconnected = format!(
                    "disconnected:unix:{}{}",
                    path.display(),
                    abstract_flags(*abstract_, *tight)
                );
                Ok(target)
            }
            SocketAddrSpec::Inet { host, port, ipv4, ipv6, .. } => {
                let target = Target::Tcp(address::inet_addrs(host, port, *ipv4, *ipv6, false)?);
                self.disconnected = format!("disconnected:tcp:{host}:{port}");
                Ok(target)
            }
            SocketAddrSpec::Fd(_) => unreachable!("fd sockets are adopted, not connected"),
        }
    }

    /// `fd=N`: an inherited listening or connected socket, made non-blocking for our loop
    /// (contract point 4: code that needs non-blocking mode sets it itself).
    /// A socket passed as `fd=` (inherited) or by name (`getfd`); closed on any error. A
    /// server needs a listening socket (QEMU calls listen(2), which a connected socket
    /// refuses); a listening socket is served even when `server` is off.
    fn adopt_fd(&mut self, name: &str, owned: OwnedFd, server: bool) -> Result<()> {
        let kind = address::inspect_fd(&owned, name)?;
        if server && !kind.listening {
            return Err(Error::Fd(
                "Failed to listen on fd socket: Invalid argument (a connected socket cannot \
                 listen; pass a listening one)"
                    .into(),
            ));
        }
        fd::set_nonblocking(&owned, true)?;
        self.unix = kind.unix;
        if kind.listening {
            // QEMU 7.2 names a passed listener by the address it is bound to.
            let (listener, bound) = if kind.unix {
                let l = std::os::unix::net::UnixListener::from(owned);
                let path = l.local_addr().ok().and_then(|a| a.as_pathname().map(|p| p.to_owned()));
                let bound = path.map(|p| format!("unix:{}", p.display()));
                (Listener::Unix(mio::net::UnixListener::from_std(l)), bound)
            } else {
                let l = std::net::TcpListener::from(owned);
                let bound = l.local_addr().ok().map(|a| format!("tcp:{}:{}", a.ip(), a.port()));
                (Listener::Tcp(mio::net::TcpListener::from_std(l)), bound)
            };
            let bound = bound.unwrap_or_else(|| format!("fd:{name}"));
            self.disconnected = format!("disconnected:{bound},server=on");
            self.role = Role::Server(listener);
        } else {
            self.disconnected = format!("disconnected:fd:{name}");
            let stream = if kind.unix {
                Stream::Unix(mio::net::UnixStream::from_std(owned.into()))
            } else {
                Stream::Tcp(mio::net::TcpStream::from_std(owned.into()))
            };
            self.role = Role::Passed;
            self.state = State::Made(self.set_up(Conn::new(stream, false)));
        }
        Ok(())
    }

    /// `wait=on`: block until the first client connects. QEMU prints that it waits; a
    /// library does not print, so it logs it and tells the embedder, who may print it.
    fn wait_for_client(&mut self, cx: &BuildContext<'_>) -> Result<()> {
        log::info!("chardev '{}': waiting for connection on: {}", self.label, self.disconnected);
        cx.notify(&BuildNotice::WaitingForClient {
            id: self.label.clone(),
            filename: self.disconnected.clone(),
        });
        let Role::Server(listener) = &self.role else { return Ok(()) };
        loop {
            match listener.accept() {
                Ok(stream) => {
                    let conn = self.accepted(stream)?;
                    match &mut self.viewers {
                        Some(v) => v.made = Some(conn),
                        None => self.state = State::Made(conn),
                    }
                    return Ok(());
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    let fd = match listener {
                        Listener::Unix(l) => l.as_fd(),
                        Listener::Tcp(l) => l.as_fd(),
                    };
                    fd::wait_readable(fd, None).map_err(|e| Error::io("wait for a client", e))?;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(Error::io("accept a client", e)),
            }
        }
    }

    /// A client without `reconnect-ms` connects at creation; failure is a creation error.
    fn connect_now(&mut self) -> Result<()> {
        let Role::Client(client) = &self.role else { return Ok(()) };
        let stream = match &client.target {
            Target::Unix(addr, path) => {
                let s = std::os::unix::net::UnixStream::connect_addr(addr)
                    .map_err(|e| Error::io_path("connect to", path, e))?;
                s.set_nonblocking(true).map_err(|e| Error::io("make a socket non-blocking", e))?;
                Stream::Unix(mio::net::UnixStream::from_std(s))
            }
            Target::Tcp(addrs) => {
                let s = std::net::TcpStream::connect(&addrs[..]).map_err(|e| Error::Io {
                    op: "connect to",
                    path: addrs.first().map(|a| host_port(a).into()),
                    source: e,
                })?;
                s.set_nonblocking(true).map_err(|e| Error::io("make a socket non-blocking", e))?;
                Stream::Tcp(mio::net::TcpStream::from_std(s))
            }
        };
        let conn = self
            .with_tls(Conn::new(stream, false))
            .map_err(|e| Error::io("start a TLS session", e))?;
        self.state = State::Made(self.set_up(conn));
        Ok(())
    }

    /// A client the listener gave: non-blocking, with the server's telnet or websocket layer.
    fn accepted(&self, stream: Stream) -> Result<Conn> {
        if let Stream::Unix(s) = &stream {
            fd::set_nonblocking(s, true)?;
        }
        let mut conn = self
            .with_tls(Conn::new(stream, self.telnet))
            .map_err(|e| Error::io("start a TLS session", e))?;
        // A web console reads the request head itself first (page or websocket).
        let web = self.viewers.as_ref().is_some_and(|v| v.web.is_some());
        if self.websocket && !web && conn.tls.is_some() {
            conn.ws_after_tls = true;
        } else if self.websocket && !web {
            let (ws, step) =
                WsConn::accept(conn.stream.fd()).map_err(|e| Error::io("start a websocket", e))?;
            if let Step::Failed(why) = step {
                return Err(Error::io("accept a websocket client", io::Error::other(why)));
            }
            conn.ws = Some(ws);
        }
        Ok(self.set_up(conn))
    }

    /// Applies `nodelay` to a new connection and names it.
    fn set_up(&self, mut conn: Conn) -> Conn {
        if let (Stream::Tcp(s), true) = (&conn.stream, self.nodelay) {
            if let Err(e) = s.set_nodelay(true) {
                log::warn!("chardev '{}': cannot set TCP_NODELAY: {e}", self.label);
            }
        }
        conn.name = conn.stream.filename(self.protocol(), self.server());
        // A server's connections count when accepted; a client's when they open.
        if self.server() {
            self.connections.set(self.connections.get() + 1);
        }
        conn
    }

    /// Puts a new connection on the loop, and tells the frontend it is open unless a
    /// connect (`connecting`) or a websocket handshake is still to complete.
    fn open_conn(&mut self, io: &mut Io<'_>, mut conn: Conn, connecting: bool) {
        // A connect in progress ends with writability; telnet and websocket flush their own.
        conn.watching_output = connecting || !conn.plain();
        let interest = if conn.watching_output {
            Interest::READABLE | Interest::WRITABLE
        } else {
            Interest::READABLE
        };
        if let Err(e) = io.register(conn.stream.source(), CONNECTION, interest) {
            log::warn!("chardev '{}': cannot watch the connection: {e}", self.label);
            self.state = State::Idle;
            return;
        }
        // Opened comes when the connect or the handshakes complete.
        if connecting {
            self.state = State::Connecting(conn);
            return;
        }
        if conn.needs_handshake() {
            return self.start_handshake(io, conn);
        }
        self.open_now(io, conn);
    }

    /// A connection ready for data: what it owes the peer goes (telnet's negotiation),
    /// and the frontend hears `Opened`.
    fn open_now(&mut self, io: &mut Io<'_>, mut conn: Conn) {
        if let Err(e) = conn.flush() {
            if e.kind() != io::ErrorKind::WouldBlock {
                log::info!("chardev '{}': connection failed at once: {e}", self.label);
            }
        }
        self.announce(io, conn);
    }

    /// A connection on the loop (as `CONNECTION`) whose handshake is to run: a server's
    /// goes to a pending slot beside others, a client's is the state.
    fn start_handshake(&mut self, io: &mut Io<'_>, conn: Conn) {
        let deadline = Instant::now() + HANDSHAKE_TIMEOUT;
        io.add_timer(HANDSHAKE_TIMEOUT, HANDSHAKE_TIMER);
        if !self.server() {
            self.state = State::Handshake { conn, deadline };
            return self.advance_handshake(io);
        }
        let mut conn = conn;
        let Some(slot) = self.free_pending_slot() else {
            log::warn!("chardev '{}': no room for another handshake: client dropped", self.label);
            let _ = io.registry().deregister(conn.stream.source());
            conn.stream.shutdown();
            return;
        };
        let interest = Interest::READABLE | Interest::WRITABLE;
        if let Err(e) =
            io.registry().reregister(conn.stream.source(), io.token(PENDING + slot), interest)
        {
            log::warn!("chardev '{}': cannot watch the connection: {e}", self.label);
            let _ = io.registry().deregister(conn.stream.source());
            return;
        }
        conn.watching_output = true;
        self.pending[slot] = Some(Pending { conn, deadline, done: false });
        self.advance_pending(io, slot);
    }

    fn free_pending_slot(&mut self) -> Option<usize> {
        if self.pending.is_empty() {
            self.pending = (0..PENDING_MAX).map(|_| None).collect();
        }
        self.pending.iter().position(Option::is_none)
    }

    /// Readiness of a server's connection in its handshake: moves it on; the first to
    /// finish gets the console, a failed one is dropped (without `Closed`, as QEMU does).
    fn advance_pending(&mut self, io: &mut Io<'_>, slot: usize) {
        let Some(Some(p)) = self.pending.get_mut(slot) else { return };
        if p.done {
            return; // waits for its turn; its data waits in the socket
        }
        match p.conn.advance() {
            Step::Pending => {}
            Step::Failed(why) => {
                log::info!("chardev '{}': client dropped: {why}", self.label);
                self.drop_pending(io, slot);
                self.accept_next(io);
            }
            Step::Open => {
                p.done = true;
                if let Some(dn) = p.conn.peer_name() {
                    log::info!("chardev '{}': TLS client '{dn}' authenticated", self.label);
                }
                if matches!(self.state, State::Idle) {
                    self.promote(io, slot);
                }
            }
        }
    }

    fn drop_pending(&mut self, io: &mut Io<'_>, slot: usize) {
        if let Some(Some(mut p)) = self.pending.get_mut(slot).map(Option::take) {
            let _ = io.registry().deregister(p.conn.stream.source());
            p.conn.stream.shutdown();
        }
    }

    /// A connection whose handshake is done takes the console.
    fn promote(&mut self, io: &mut Io<'_>, slot: usize) {
        let Some(Some(mut p)) = self.pending.get_mut(slot).map(Option::take) else { return };
        let interest = Interest::READABLE | Interest::WRITABLE;
        if let Err(e) =
            io.registry().reregister(p.conn.stream.source(), io.token(CONNECTION), interest)
        {
            log::warn!("chardev '{}': cannot watch the connection: {e}", self.label);
            let _ = io.registry().deregister(p.conn.stream.source());
            return;
        }
        p.conn.watching_output = true;
        self.open_now(io, p.conn);
    }

    /// Drops the server's handshakes that ran out of time.
    fn pending_timeouts(&mut self, io: &mut Io<'_>) {
        let now = Instant::now();
        let late: Vec<usize> = (0..self.pending.len())
            .filter(|&i| self.pending[i].as_ref().is_some_and(|p| !p.done && p.deadline <= now))
            .collect();
        for slot in late {
            log::info!(
                "chardev '{}': {} handshake not completed within {} s: client dropped",
                self.label,
                if self.tls.is_some() { "TLS" } else { "websocket" },
                HANDSHAKE_TIMEOUT.as_secs()
            );
            self.drop_pending(io, slot);
        }
        self.accept_next(io);
    }

    /// The connection is open for the frontend: `Opened`, and read what came with it.
    fn announce(&mut self, io: &mut Io<'_>, conn: Conn) {
        log::info!("chardev '{}': connected: {}", self.label, conn.name);
        if !self.server() {
            self.connections.set(self.connections.get() + 1);
        }
        io.event(Event::Opened);
        io.input_ready();
        self.state = State::Open(conn);
        // What was kept while nobody was connected goes first; the rest on writability.
        if !self.flush_backlog() {
            if let State::Open(conn) = &mut self.state {
                if let Err(e) = conn.watch(io, true) {
                    log::debug!("chardev '{}': cannot watch output: {e}", self.label);
                }
            }
        }
    }

    /// Drops the connection: `Closed` for the frontend, then the server takes the next
    /// client or the client schedules a reconnect.
    fn close_conn(&mut self, io: &mut Io<'_>) {
        let (mut conn, announced) = match std::mem::replace(&mut self.state, State::Idle) {
            State::Idle => return,
            State::Open(conn) => (conn, true),
            State::Made(conn) | State::Connecting(conn) | State::Handshake { conn, .. } => {
                (conn, false)
            }
        };
        let _ = io.registry().deregister(conn.stream.source());
        conn.end();
        if announced {
            log::info!("chardev '{}': disconnected: {}", self.label, conn.name);
            io.event(Event::Closed);
        }
        drop(conn);
        match &self.role {
            Role::Server(_) => self.accept_next(io),
            Role::Client(Client { reconnect: Some(delay), .. }) => {
                io.add_timer(*delay, RECONNECT_TIMER);
            }
            Role::Client(_) | Role::Passed => {}
        }
    }

    /// Takes the next client from the listen queue. A client that fails at once (a
    /// websocket handshake refused on its first bytes, say) is dropped and the next one is
    /// taken: the listener is edge-triggered, so no new readiness would come for clients
    /// already queued behind it.
    fn accept_next(&mut self, io: &mut Io<'_>) {
        // A client whose handshake finished while another had the console goes first.
        if matches!(self.state, State::Idle) {
            let done = self.pending.iter().position(|p| p.as_ref().is_some_and(|p| p.done));
            if let Some(slot) = done {
                self.promote(io, slot);
            }
        }
        while matches!(self.state, State::Idle) {
            if !self.pending.is_empty() && self.pending.iter().all(Option::is_some) {
                return; // full: the next handshake starts when one ends
            }
            if !self.accept_one(io) {
                return;
            }
        }
    }

    /// One accept(2); whether another may follow at once (this client failed and the
    /// queue may hold more).
    fn accept_one(&mut self, io: &mut Io<'_>) -> bool {
        let Role::Server(listener) = &self.role else { return false };
        match listener.accept() {
            Ok(stream) => match self.accepted(stream) {
                Err(e) => {
                    log::info!("chardev '{}': client dropped: {e}", self.label);
                    true
                }
                Ok(conn) => {
                    self.open_conn(io, conn, false);
                    // Registering the connection failed: it is gone, try the next.
                    matches!(self.state, State::Idle)
                }
            },
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => false,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => true,
            Err(e) => {
                // Out of fds, say: edge-triggered epoll will not tell us again, so retry.
                log::warn!("chardev '{}': accept failed: {e}", self.label);
                io.add_timer(Duration::from_millis(100), ACCEPT_RETRY_TIMER);
                false
            }
        }
    }

    /// Starts a non-blocking connect (clients with `reconnect-ms`).
    fn start_connect(&mut self, io: &mut Io<'_>) {
        if !matches!(self.state, State::Idle) {
            return;
        }
        let Role::Client(client) = &self.role else { return };
        let attempt = match &client.target {
            Target::Unix(addr, _) => mio::net::UnixStream::connect_addr(addr).map(Stream::Unix),
            Target::Tcp(addrs) => mio::net::TcpStream::connect(addrs[0]).map(Stream::Tcp),
        };
        match attempt {
            Ok(stream) => {
                let connecting = matches!(stream, Stream::Tcp(_));
                let conn = match self.with_tls(Conn::new(stream, false)) {
                    Ok(conn) => self.set_up(conn),
                    Err(e) => return self.connect_failed(io, &e),
                };
                self.open_conn(io, conn, connecting);
            }
            Err(e) => self.connect_failed(io, &e),
        }
    }

    fn connect_failed(&mut self, io: &mut Io<'_>, e: &io::Error) {
        let Role::Client(client) = &mut self.role else { return };
        // QEMU reports the first failure only; the timer keeps trying quietly.
        if !client.error_reported {
            log::warn!("Unable to connect character device {}: {e}", self.label);
            client.error_reported = true;
        }
        if let Some(delay) = client.reconnect {
            io.add_timer(delay, RECONNECT_TIMER);
        }
    }

    /// A pending tcp connect finished (writable): established, or failed.
    fn finish_connect(&mut self, io: &mut Io<'_>) {
        let State::Connecting(conn) = &mut self.state else { return };
        let Stream::Tcp(s) = &conn.stream else { return };
        let error = match s.take_error() {
            Ok(Some(e)) | Err(e) => Some(e),
            Ok(None) => s.peer_addr().err().filter(|e| e.kind() != io::ErrorKind::WouldBlock),
        };
        if s.peer_addr().is_err() && error.is_none() {
            return; // not finished yet
        }
        if let Some(e) = error {
            self.close_conn(io);
            self.connect_failed(io, &e);
            return;
        }
        let State::Connecting(mut conn) = std::mem::replace(&mut self.state, State::Idle) else {
            return;
        };
        if conn.plain() {
            if let Err(e) = conn.watch(io, false) {
                log::debug!("chardev '{}': cannot stop watching output: {e}", self.label);
            }
        }
        conn.name = conn.stream.filename("tcp", false);
        if conn.needs_handshake() {
            // The streak of failures ends when the handshake succeeds too.
            return self.start_handshake(io, conn);
        }
        if let Role::Client(client) = &mut self.role {
            client.error_reported = false;
        }
        self.announce(io, conn);
    }

    /// Readiness during a client's TLS handshake: moves it on, and opens or drops the
    /// connection (a client with `reconnect-ms` tries again later).
    fn advance_handshake(&mut self, io: &mut Io<'_>) {
        let State::Handshake { conn, .. } = &mut self.state else { return };
        match conn.advance() {
            Step::Pending => {}
            Step::Open => {
                if let Role::Client(client) = &mut self.role {
                    client.error_reported = false;
                }
                if let State::Handshake { conn, .. } =
                    std::mem::replace(&mut self.state, State::Idle)
                {
                    self.open_now(io, conn);
                }
            }
            Step::Failed(why) => {
                // QEMU: a failed handshake disconnects without CLOSED. Reported once per
                // streak, as failed connects are: `reconnect-ms` tries again quietly.
                match &mut self.role {
                    Role::Client(client) if client.error_reported => {
                        log::debug!("chardev '{}': {why}", self.label);
                    }
                    Role::Client(client) => {
                        log::warn!("chardev '{}': {why}", self.label);
                        client.error_reported = true;
                    }
                    _ => log::warn!("chardev '{}': {why}", self.label),
                }
                self.close_conn(io);
            }
        }
    }

    /// One write to the connection, through its telnet or websocket layer.
    fn write_conn(&mut self, buf: &[u8], fds: &[BorrowedFd<'_>]) -> io::Result<usize> {
        let Some(conn) = self.state.usable_mut() else {
            return Err(Error::NotConnected(self.label.clone()).into());
        };
        if let Some(ws) = &mut conn.ws {
            chardev::backend::refuse_fds("websocket", fds)?;
            return ws.write(buf);
        }
        if conn.telnet.is_some() {
            // Escaped output may go out in pieces; fds have no byte to ride on reliably.
            chardev::backend::refuse_fds("telnet", fds)?;
        }
        if conn.tls.is_some() {
            chardev::backend::refuse_fds("TLS", fds)?;
        }
        conn.flush()?;
        if conn.telnet.is_some() {
            let take = buf.len().min(TELNET_CHUNK);
            telnet::escape_into(&buf[..take], &mut conn.pending);
            match conn.flush() {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
            return Ok(take);
        }
        if conn.tls.is_some() {
            return conn.send(buf);
        }
        fd::send_with_fds(conn.stream.fd(), buf, fds)
    }

    /// `backlog=`: with no connection the output is kept (the oldest dropped beyond the
    /// bound, counted); with one, what was kept goes first, and a write waits
    /// (`WouldBlock`, QEMU's flow control) until it has.
    fn write_with_backlog(&mut self, buf: &[u8], fds: &[BorrowedFd<'_>]) -> io::Result<usize> {
        if !self.state.is_usable() {
            if !fds.is_empty() {
                return Err(Error::NotConnected(self.label.clone()).into());
            }
            if let Some(backlog) = &mut self.backlog {
                self.backlog_dropped += backlog.push(buf);
            }
            return Ok(buf.len());
        }
        if !self.flush_backlog() {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        match self.write_conn(buf, fds) {
            // The peer has just gone (the loop has not seen the hang-up yet): kept for the
            // next connection, like anything written while nobody is connected.
            Err(e) if fds.is_empty() && is_gone(&e) => {
                if let Some(backlog) = &mut self.backlog {
                    self.backlog_dropped += backlog.push(buf);
                }
                Ok(buf.len())
            }
            r => r,
        }
    }

    /// Sends what the backlog holds (a gap marker first if it overflowed) as far as the
    /// connection takes it; whether it is empty now. A connection that fails keeps the rest
    /// for the next one (the loop sees the hang-up and closes it).
    fn flush_backlog(&mut self) -> bool {
        let Some(mut backlog) = self.backlog.take() else { return true };
        let flushed = backlog.flush(
            |piece| match self.write_conn(piece, &[]) {
                Err(e) if e.kind() != io::ErrorKind::Interrupted => {
                    Err(io::ErrorKind::WouldBlock.into())
                }
                r => r,
            },
            |_| {},
        );
        self.backlog = Some(backlog);
        flushed == chardev::backlog::Flushed::Empty
    }

    fn recv(
        conn: &mut Conn,
        buf: &mut [u8],
        fds: &mut Vec<OwnedFd>,
        label: &str,
    ) -> io::Result<usize> {
        if let Some(tls) = &mut conn.tls {
            return tls.read(conn.stream.fd(), buf);
        }
        match &mut conn.stream {
            Stream::Unix(s) => {
                let before = fds.len();
                let got = fd::recv_with_fds(s.as_fd(), buf, fds)?;
                if got.truncated {
                    log::warn!(
                        "chardev '{label}': a peer sent more than {MAX_FDS_PER_MESSAGE} fds in one message \
                         (or too much control data): the extras were closed, {} kept",
                        fds.len() - before
                    );
                }
                Ok(got.bytes)
            }
            Stream::Tcp(s) => s.read(buf),
        }
    }
}

impl Chardev for Socket {
    fn register(&mut self, io: &mut Io<'_>) -> Result<()> {
        if let Role::Server(listener) = &mut self.role {
            io.register(listener.source(), LISTENER, Interest::READABLE)
                .map_err(|e| Error::io("watch a listening socket", e))?;
        }
        if self.viewers.is_some() {
            self.viewers_register(io);
            return Ok(());
        }
        match std::mem::replace(&mut self.state, State::Idle) {
            State::Made(conn) => self.open_conn(io, conn, false),
            State::Idle => match &self.role {
                Role::Server(_) => self.accept_next(io),
                Role::Client(Client { reconnect: Some(_), .. }) => self.start_connect(io),
                Role::Client(_) | Role::Passed => {}
            },
            // A backend is registered once: nothing else is on the loop yet.
            on_loop => self.state = on_loop,
        }
        Ok(())
    }

    fn deregister(&mut self, registry: &mio::Registry) {
        if let Role::Server(listener) = &mut self.role {
            let _ = registry.deregister(listener.source());
        }
        if let Some(conn) = self.state.conn_mut() {
            let _ = registry.deregister(conn.stream.source());
        }
        for p in self.pending.iter_mut().flatten() {
            let _ = registry.deregister(p.conn.stream.source());
        }
        if self.viewers.is_some() {
            self.viewers_deregister(registry);
        }
    }

    fn ready(&mut self, io: &mut Io<'_>, source: usize, event: &mio::event::Event) {
        match source {
            LISTENER if self.viewers.is_some() => self.accept_viewers(io),
            LISTENER => self.accept_next(io),
            _ if self.viewers.is_some() => self.viewer_ready(io, source, event),
            _ if source >= PENDING => self.advance_pending(io, source - PENDING),
            CONNECTION => {
                let conn = match &mut self.state {
                    State::Idle | State::Made(_) => return,
                    State::Connecting(_) => {
                        if event.is_writable() || event.is_error() || event.is_write_closed() {
                            self.finish_connect(io);
                        }
                        return;
                    }
                    State::Handshake { .. } => return self.advance_handshake(io),
                    State::Open(conn) => conn,
                };
                if let Some(ws) = &mut conn.ws {
                    if event.is_writable() && ws.on_writable() {
                        io.input_ready();
                    }
                }
                if event.is_writable() {
                    if let Err(e) = conn.flush() {
                        if e.kind() != io::ErrorKind::WouldBlock {
                            log::debug!("chardev '{}': send failed: {e}", self.label);
                        }
                    }
                }
                // A backlog still going out keeps the writability watch.
                let backlog_left = event.is_writable() && !self.flush_backlog();
                let State::Open(conn) = &mut self.state else { return };
                if event.is_writable() || event.is_write_closed() || event.is_error() {
                    if conn.plain() && !backlog_left {
                        if let Err(e) = conn.watch(io, false) {
                            log::debug!(
                                "chardev '{}': cannot stop watching output: {e}",
                                self.label
                            );
                        }
                    }
                    io.output_ready();
                }
                if event.is_read_closed() || event.is_error() {
                    conn.hung_up = true;
                }
                if event.is_readable() || event.is_read_closed() || event.is_error() {
                    io.input_ready();
                }
            }
            _ => {}
        }
    }

    fn read(&mut self, io: &mut Io<'_>, buf: &mut [u8], fds: &mut Vec<OwnedFd>) -> Input {
        if self.viewers.is_some() {
            return self.viewers_read(io, buf, fds);
        }
        let Some(conn) = self.state.usable_mut() else {
            return Input::WouldBlock;
        };
        let mut drained = false;
        let result = match &mut conn.ws {
            // A websocket read of 0 bytes was a control frame, not the end of the stream.
            Some(ws) => match ws.read(buf) {
                Ok(0) => return Input::Data(0),
                other => other,
            },
            None => {
                let before = fds.len();
                let result = Self::recv(conn, buf, fds, &self.label);
                // A unix stream read stops early only when it is empty or at a message with
                // fds (no SO_PASSCRED here); tcp also stops at urgent data, so it reads on. A
                // hang-up reported with the data has no edge of its own left: read it too.
                if let (Stream::Unix(_), Ok(n), None) = (&conn.stream, &result, &conn.tls) {
                    drained = *n < buf.len() && fds.len() == before && !conn.hung_up;
                }
                result
            }
        };
        match result {
            Ok(0) => {}
            Ok(n) => {
                let n = match &mut conn.telnet {
                    Some(telnet) => telnet
                        .filter_events(&mut buf[..n], |at, e| io.event_at(at, telnet_event(e))),
                    None => n,
                };
                return if drained { Input::Drained(n) } else { Input::Data(n) };
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Input::WouldBlock,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return Input::Data(0),
            Err(e) => log::info!("chardev '{}': connection error: {e}", self.label),
        }
        // The end of the stream, after every byte before it (QEMU #1264).
        self.close_conn(io);
        Input::End
    }

    fn write(&mut self, buf: &[u8], fds: &[BorrowedFd<'_>]) -> io::Result<usize> {
        if !fds.is_empty() && !self.unix {
            return Err(Error::Unsupported {
                what: self.label.clone(),
                operation: "pass fds: tcp does not support fd passing",
            }
            .into());
        }
        if self.viewers.is_some() {
            return self.viewers_write(buf, fds);
        }
        if self.backlog.is_some() {
            return self.write_with_backlog(buf, fds);
        }
        self.write_conn(buf, fds)
    }

    fn write_fd(&self) -> Option<BorrowedFd<'_>> {
        self.state.conn().map(|c| c.stream.fd())
    }

    fn splice(&mut self) -> Option<&mut dyn Splice> {
        // Output to many connections is not one pipe's worth; a backlog must go first.
        // TLS records are not the bytes: nothing goes around the session.
        if self.viewers.is_some() || self.backlog.is_some() || self.tls.is_some() {
            return None;
        }
        Some(self)
    }

    fn watch_output(&mut self, io: &mut Io<'_>) -> bool {
        let Some(conn) = self.state.conn_mut() else { return false };
        // Turning the interest on reports writability at once if it came meanwhile.
        match conn.watch(io, true) {
            Ok(()) => true,
            Err(e) => {
                log::debug!("chardev '{}': cannot watch output: {e}", self.label);
                false
            }
        }
    }

    fn timer(&mut self, io: &mut Io<'_>, id: u64) {
        match id {
            ACCEPT_RETRY_TIMER if self.viewers.is_some() => self.accept_viewers(io),
            HANDSHAKE_TIMER if self.viewers.is_some() => self.viewers_timer(io),
            RECONNECT_TIMER => self.start_connect(io),
            ACCEPT_RETRY_TIMER => self.accept_next(io),
            HANDSHAKE_TIMER => {
                // The timer may be an earlier client's: only a passed deadline counts.
                let late = matches!(
                    self.state,
                    State::Handshake { deadline, .. } if deadline <= Instant::now()
                );
                if late {
                    log::warn!(
                        "chardev '{}': TLS handshake not completed within {} s: connection dropped",
                        self.label,
                        HANDSHAKE_TIMEOUT.as_secs()
                    );
                    self.close_conn(io);
                }
                self.pending_timeouts(io);
            }
            _ => {}
        }
    }

    fn disconnect(&mut self, io: &mut Io<'_>) {
        if self.viewers.is_some() {
            return self.viewers_disconnect(io);
        }
        self.close_conn(io);
    }

    fn can_pass_fds(&self) -> bool {
        self.unix && !self.telnet && !self.websocket && self.viewers.is_none() && self.tls.is_none()
    }

    fn sessions(&mut self) -> Option<&mut dyn chardev::Sessions> {
        if self.viewers.is_some() {
            Some(self)
        } else {
            None
        }
    }

    fn history(&self, max: Option<usize>) -> Option<Vec<u8>> {
        self.viewers_history(max)
    }

    fn woken(&mut self, io: &mut Io<'_>) {
        if self.viewers.is_some() {
            self.viewers_woken(io);
        } else {
            io.input_ready();
        }
    }

    fn counters(&self, counters: &mut chardev::Counters) {
        counters.connections += self.connections.get();
        counters.dropped_backlog += self.backlog_dropped;
        if let Some(v) = &self.viewers {
            counters.dropped_viewers += v.dropped();
        }
    }

    fn kind(&self) -> &'static str {
        "socket"
    }

    fn filename(&self) -> String {
        if self.viewers.is_some() {
            return self.viewers_filename().unwrap_or_else(|| self.disconnected.clone());
        }
        match self.state.usable() {
            Some(conn) => conn.name.clone(),
            None => self.disconnected.clone(),
        }
    }
}

impl Splice for Socket {
    fn splice_input(
        &mut self,
        _io: &mut Io<'_>,
        pipe: BorrowedFd<'_>,
        len: usize,
    ) -> Option<io::Result<usize>> {
        // Telnet and websocket bytes need their filters; a connection still being made has
        // nothing to read.
        let conn = self.state.usable().filter(|c| c.plain())?;
        Some(fd::splice(conn.stream.fd(), pipe, len))
    }

    fn write_from_pipe(&mut self, pipe: BorrowedFd<'_>, len: usize) -> io::Result<usize> {
        let Some(conn) = self.state.usable_mut() else {
            return Err(Error::NotConnected(self.label.clone()).into());
        };
        if !conn.plain() {
            return Err(Error::Unsupported {
                what: self.label.clone(),
                operation: "write from a pipe: telnet and websocket frame their output",
            }
            .into());
        }
        fd::splice(pipe, conn.stream.fd(), len)
    }
}

impl Drop for Socket {
    fn drop(&mut self) {
        if let Some(conn) = self.state.conn_mut() {
            conn.end();
        }
        for p in self.pending.iter().flatten() {
            p.conn.stream.shutdown();
        }
        self.viewers_shutdown();
        // Remove the socket file only if it is still the one this server created.
        self.remove_socket_file();
    }
}

/// The socket file bind(2) just made, held by an `O_PATH` fd so that its mode is set on
/// exactly that inode: never through a symlink or on a file put there since.
struct BoundFile {
    fd: OwnedFd,
    dev: u64,
    ino: u64,
}

/// Opens `path` without following a symlink and checks that it is a socket.
fn open_bound_socket_file(path: &Path) -> io::Result<BoundFile> {
    use nix::fcntl::OFlag;
    let fd = nix::fcntl::open(
        path,
        OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )?;
    let st = nix::sys::stat::fstat(&fd)?;
    if st.st_mode & nix::libc::S_IFMT != nix::libc::S_IFSOCK {
        return Err(io::Error::other("it is no longer the socket just bound (replaced?)"));
    }
    Ok(BoundFile { fd, dev: st.st_dev, ino: st.st_ino })
}

impl BoundFile {
    /// chmod(2) through `/proc/self/fd`, as glibc's `fchmodat(AT_SYMLINK_NOFOLLOW)` does:
    /// fchmod(2) on the socket's own fd would change the socket inode, not the file's.
    fn chmod(&self, mode: u32) -> io::Result<()> {
        let link = format!("/proc/self/fd/{}", self.fd.as_raw_fd());
        std::fs::set_permissions(&link, std::fs::Permissions::from_mode(mode)).map_err(|e| {
            if e.kind() == io::ErrorKind::NotFound {
                io::Error::new(e.kind(), "/proc is needed to set a socket file's mode safely")
            } else {
                e
            }
        })
    }
}

/// QEMU 7.2 names abstract sockets' options in `disconnected:` filenames.
fn abstract_flags(abstract_: bool, tight: bool) -> String {
    if abstract_ {
        format!(",abstract=on,tight={}", if tight { "on" } else { "off" })
    } else {
        String::new()
    }
}

/// A write error that means the peer is gone (its connection will be closed by the loop).
fn is_gone(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::BrokenPipe
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::NotConnected
    )
}

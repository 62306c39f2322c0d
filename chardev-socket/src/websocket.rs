//! `websocket=on`: RFC 6455 on a server socket, as QEMU's chardev speaks it (binary
//! subprotocol, `Server: QEMU VNC`), done by `tungstenite` over the chardev's own
//! non-blocking stream: the handshake resumes on readiness, frames are read as the frontend
//! has room, pings are answered, a close is answered and ends the connection.

use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use tungstenite::handshake::server::{Callback, ErrorResponse, Request, Response, ServerHandshake};
use tungstenite::handshake::{HandshakeError, MidHandshake};
use tungstenite::http::HeaderValue;
use tungstenite::protocol::WebSocketConfig;
use tungstenite::{Message, WebSocket};

use chardev::fd;

/// The socket as tungstenite sees it: a duplicate of the connection's fd (same open file
/// description, so the same non-blocking mode), read with recv(2) and written with
/// `MSG_NOSIGNAL` so that a vanished peer never raises SIGPIPE.
///
/// tungstenite writes its whole output buffer in each call, so the part of the last call
/// that the socket refused is what still waits in that buffer.
#[derive(Debug)]
pub struct SocketIo {
    fd: OwnedFd,
    unsent: usize,
}

impl Read for SocketIo {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut none = Vec::new();
        fd::recv_with_fds(self.fd.as_fd(), buf, &mut none).map(|r| r.bytes)
    }
}

impl Write for SocketIo {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match fd::send_with_fds(self.fd.as_fd(), buf, &[]) {
            Ok(n) => {
                self.unsent = buf.len() - n;
                Ok(n)
            }
            Err(e) => {
                if e.kind() == io::ErrorKind::WouldBlock {
                    self.unsent = buf.len();
                }
                Err(e)
            }
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The most frontend output one message carries.
const MESSAGE_CHUNK: usize = 1024 * 1024;

/// Unsent replies (pongs) above which the client's input is no longer read: a client that
/// does not read our answers to its pings gets no more of them. The frontend output still
/// unsent does not count: it is bounded by [`MESSAGE_CHUNK`] and paced by the frontend.
const PAUSE_INPUT_AT: usize = 64 * 1024;

/// tungstenite's output buffer never grows past this (a pong that does not fit replaces
/// the one waiting, as tungstenite does).
const MAX_OUTPUT: usize = 2 * MESSAGE_CHUNK;

/// The largest message (and frame) a client may send; more ends its connection. QEMU reads
/// frames in pieces; tungstenite holds a whole message, so it is bounded here.
pub const MAX_MESSAGE: usize = 4 * 1024 * 1024;

fn config() -> WebSocketConfig {
    WebSocketConfig::default()
        .write_buffer_size(0)
        .max_write_buffer_size(MAX_OUTPUT)
        .max_message_size(Some(MAX_MESSAGE))
        .max_frame_size(Some(MAX_MESSAGE))
}

/// Adds QEMU's reply headers: `Server: QEMU VNC`, and the `binary` subprotocol when the
/// client offers it (QEMU's test client does; browsers' noVNC-style clients too).
#[derive(Debug, Clone, Copy)]
pub struct QemuHeaders;

impl Callback for QemuHeaders {
    fn on_request(
        self,
        request: &Request,
        mut response: Response,
    ) -> Result<Response, ErrorResponse> {
        let headers = response.headers_mut();
        headers.insert("Server", HeaderValue::from_static("QEMU VNC"));
        let offers_binary = request
            .headers()
            .get_all("Sec-WebSocket-Protocol")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|p| p.trim() == "binary");
        if offers_binary {
            headers.insert("Sec-WebSocket-Protocol", HeaderValue::from_static("binary"));
        }
        Ok(response)
    }
}

type Handshake = MidHandshake<ServerHandshake<SocketIo, QemuHeaders>>;

/// What a step of the websocket connection came to.
#[derive(Debug)]
pub enum Step {
    /// Waiting for the peer.
    Pending,
    /// The handshake is done: the connection is open.
    Open,
    /// The connection failed or was closed.
    Failed(String),
}

/// One websocket connection, from handshake to close.
#[derive(Debug)]
pub struct WsConn {
    state: State,
    /// The unread rest of a message larger than the frontend's room.
    input: Vec<u8>,
    input_at: usize,
    /// Input is not read while the client leaves our replies unread.
    input_paused: bool,
    /// The frame of frontend output that may still be unsent (0 once a flush completed).
    data_unsent: usize,
}

enum State {
    Handshaking(Option<Box<Handshake>>),
    Open(Box<WebSocket<SocketIo>>),
    Closed,
}

impl std::fmt::Debug for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            State::Handshaking(_) => "Handshaking",
            State::Open(_) => "Open",
            State::Closed => "Closed",
        })
    }
}

fn is_would_block(e: &tungstenite::Error) -> bool {
    matches!(e, tungstenite::Error::Io(io) if io.kind() == io::ErrorKind::WouldBlock)
}

impl WsConn {
    /// Starts the server handshake on a connection (`socket` is borrowed and duplicated).
    pub fn accept(socket: BorrowedFd<'_>) -> io::Result<(WsConn, Step)> {
        let io = SocketIo { fd: socket.try_clone_to_owned()?, unsent: 0 };
        let mut conn = WsConn {
            state: State::Closed,
            input: Vec::new(),
            input_at: 0,
            input_paused: false,
            data_unsent: 0,
        };
        let step =
            conn.settle(tungstenite::accept_hdr_with_config(io, QemuHeaders, Some(config())));
        Ok((conn, step))
    }

    fn settle(
        &mut self,
        result: Result<WebSocket<SocketIo>, HandshakeError<ServerHandshake<SocketIo, QemuHeaders>>>,
    ) -> Step {
        match result {
            Ok(ws) => {
                self.state = State::Open(Box::new(ws));
                Step::Open
            }
            Err(HandshakeError::Interrupted(mid)) => {
                self.state = State::Handshaking(Some(Box::new(mid)));
                Step::Pending
            }
            Err(HandshakeError::Failure(e)) => {
                self.state = State::Closed;
                Step::Failed(format!("websocket handshake failed: {e}"))
            }
        }
    }

    /// Whether the handshake is done.
    pub fn is_open(&self) -> bool {
        matches!(self.state, State::Open(_))
    }

    /// Moves a pending handshake on (after readiness).
    pub fn advance(&mut self) -> Step {
        match &mut self.state {
            State::Handshaking(mid) => match mid.take() {
                Some(mid) => {
                    let result = (*mid).handshake();
                    self.settle(result)
                }
                None => Step::Failed("websocket handshake lost".into()),
            },
            State::Open(_) => Step::Open,
            State::Closed => Step::Failed("websocket closed".into()),
        }
    }

    /// Reads message payload into `buf`: `Ok(n)` bytes (0 after a control frame), an error
    /// of kind `WouldBlock` when nothing is there, any other error when the connection ended.
    pub fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.input_at < self.input.len() {
            let n = buf.len().min(self.input.len() - self.input_at);
            buf[..n].copy_from_slice(&self.input[self.input_at..self.input_at + n]);
            self.input_at += n;
            return Ok(n);
        }
        if self.replies_unsent() > PAUSE_INPUT_AT {
            self.input_paused = true;
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let State::Open(ws) = &mut self.state else {
            return Err(io::ErrorKind::WouldBlock.into());
        };
        let payload: Vec<u8> = match ws.read() {
            Ok(Message::Binary(data)) => data.into(),
            Ok(Message::Text(text)) => text.as_bytes().to_vec(),
            // Pings are answered by tungstenite on the next flush; a close is answered too,
            // and the read after it reports the end.
            Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_) | Message::Close(_)) => {
                self.flush_quietly();
                return Ok(0);
            }
            Err(e) if is_would_block(&e) => {
                self.flush_quietly();
                return Err(io::ErrorKind::WouldBlock.into());
            }
            Err(e) => {
                self.state = State::Closed;
                return Err(io::Error::new(io::ErrorKind::ConnectionAborted, e.to_string()));
            }
        };
        let n = buf.len().min(payload.len());
        buf[..n].copy_from_slice(&payload[..n]);
        if n < payload.len() {
            self.input = payload;
            self.input_at = n;
        } else {
            self.input.clear();
            self.input_at = 0;
        }
        Ok(n)
    }

    fn flush_quietly(&mut self) {
        if let State::Open(ws) = &mut self.state {
            match ws.flush() {
                Ok(()) => self.data_unsent = 0,
                Err(e) if is_would_block(&e) => {}
                Err(e) => log::debug!("websocket flush: {e}"),
            }
        }
    }

    /// What waits in tungstenite's buffer beyond frontend output: replies to the client.
    fn replies_unsent(&self) -> usize {
        match &self.state {
            State::Open(ws) => ws.get_ref().unsent.saturating_sub(self.data_unsent),
            _ => 0,
        }
    }

    /// Sends (up to 1 MiB of) `buf` as one binary message. While an earlier message is
    /// still unsent the write fails with `WouldBlock`, so at most one message waits in
    /// tungstenite's buffer.
    pub fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let State::Open(ws) = &mut self.state else {
            return Err(io::ErrorKind::NotConnected.into());
        };
        let broken =
            |e: tungstenite::Error| io::Error::new(io::ErrorKind::BrokenPipe, e.to_string());
        match ws.flush() {
            Ok(()) => {}
            Err(e) if is_would_block(&e) => return Err(io::ErrorKind::WouldBlock.into()),
            Err(e) => return Err(broken(e)),
        }
        let take = buf.len().min(MESSAGE_CHUNK);
        ws.write(Message::binary(buf[..take].to_vec())).map_err(broken)?;
        // A frame header is at most 14 bytes (10 from a server, which does not mask).
        self.data_unsent = take + 14;
        match ws.flush() {
            Ok(()) => {
                self.data_unsent = 0;
                Ok(take)
            }
            Err(e) if is_would_block(&e) => Ok(take),
            Err(e) => Err(broken(e)),
        }
    }

    /// Sends what tungstenite still holds: `Ok(true)` once nothing waits (a message written
    /// now goes straight to the socket), `Ok(false)` while the socket is full.
    pub fn flush_output(&mut self) -> io::Result<bool> {
        let State::Open(ws) = &mut self.state else {
            return Err(io::ErrorKind::NotConnected.into());
        };
        match ws.flush() {
            Ok(()) => {
                self.data_unsent = 0;
                Ok(true)
            }
            Err(e) if is_would_block(&e) => Ok(false),
            Err(e) => Err(io::Error::new(io::ErrorKind::BrokenPipe, e.to_string())),
        }
    }

    /// Sends what is queued (pongs, the rest of a message) when the socket is writable;
    /// true when input paused by unread output may be read again.
    pub fn on_writable(&mut self) -> bool {
        self.flush_quietly();
        let resume = self.input_paused && self.replies_unsent() <= PAUSE_INPUT_AT;
        if resume {
            self.input_paused = false;
        }
        resume
    }
}

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
    /// Bytes the server read from the socket before the handshake began (a web console's
    /// request head, read to tell a page request from an upgrade): read first, then the fd.
    prefix: Vec<u8>,
    /// `tls-creds=`: the TLS session under the websocket (`wss://`), its handshake done.
    tls: Option<Box<crate::tls::TlsSession>>,
}

impl Read for SocketIo {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if !self.prefix.is_empty() {
            let n = buf.len().min(self.prefix.len());
            buf[..n].copy_from_slice(&self.prefix[..n]);
            self.prefix.drain(..n);
            return Ok(n);
        }
        if let Some(tls) = &mut self.tls {
            return tls.read(self.fd.as_fd(), buf);
        }
        let mut none = Vec::new();
        fd::recv_with_fds(self.fd.as_fd(), buf, &mut none).map(|r| r.bytes)
    }
}

impl Write for SocketIo {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let sent = match &mut self.tls {
            Some(tls) => tls.write(self.fd.as_fd(), buf),
            None => fd::send_with_fds(self.fd.as_fd(), buf, &[]),
        };
        match sent {
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

    /// Under TLS, sends the records that wait: `WouldBlock` while some are unsent.
    fn flush(&mut self) -> io::Result<()> {
        match &mut self.tls {
            Some(tls) => tls.push(self.fd.as_fd()),
            None => Ok(()),
        }
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
    /// A web console's page is on the other end: its resize messages are taken here
    /// (`size`), not passed on as input.
    web_page: bool,
    /// The terminal size the page last reported.
    size: Option<(u16, u16)>,
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
        WsConn::accept_with_prefix(socket, Vec::new())
    }

    /// Starts the server handshake on a connection whose first bytes, `prefix`, the server
    /// has already read (a web console reads the request head to choose between a page and
    /// an upgrade): the handshake reads them before anything else on `socket`.
    pub fn accept_with_prefix(
        socket: BorrowedFd<'_>,
        prefix: Vec<u8>,
    ) -> io::Result<(WsConn, Step)> {
        WsConn::accept_over(socket, prefix, None)
    }

    /// Starts the server handshake over a TLS session whose own handshake is done
    /// (`websocket=on` with `tls-creds=`): the websocket reads and writes through it.
    pub fn accept_over_tls(
        socket: BorrowedFd<'_>,
        tls: Box<crate::tls::TlsSession>,
    ) -> io::Result<(WsConn, Step)> {
        WsConn::accept_over(socket, Vec::new(), Some(tls))
    }

    /// Starts the server handshake with bytes already read (`prefix`) over an optional TLS
    /// session: a web console over TLS reads its request head through TLS first.
    pub fn accept_over(
        socket: BorrowedFd<'_>,
        prefix: Vec<u8>,
        tls: Option<Box<crate::tls::TlsSession>>,
    ) -> io::Result<(WsConn, Step)> {
        let io = SocketIo { fd: socket.try_clone_to_owned()?, unsent: 0, prefix, tls };
        let mut conn = WsConn {
            state: State::Closed,
            input: Vec::new(),
            input_at: 0,
            input_paused: false,
            data_unsent: 0,
            web_page: false,
            size: None,
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

    /// Treats text messages that are the web console page's resize message
    /// (`{"type":"resize","cols":C,"rows":R}`, see [`crate::web::parse_resize`]) as the
    /// page's terminal size rather than input: for connections of a web console server.
    pub fn take_resize_messages(&mut self) {
        self.web_page = true;
    }

    /// The terminal size the web console page last reported, if it did.
    pub fn size(&self) -> Option<(u16, u16)> {
        self.size
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
            Ok(Message::Text(text)) => match crate::web::parse_resize(&text) {
                // The web console page's size message (the page sends input as binary).
                Some(size) if self.web_page => {
                    self.size = Some(size);
                    return Ok(0);
                }
                _ => text.as_bytes().to_vec(),
            },
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
        // A frame header is at most 14 bytes (10 from a server, which does not mask).
        self.data_unsent = take + 14;
        match ws.write(Message::binary(buf[..take].to_vec())) {
            Ok(()) => {}
            // tungstenite buffered the frame and then found the socket full: the message is
            // taken (sending it again would duplicate it), the rest goes out on writability.
            Err(e) if is_would_block(&e) => return Ok(take),
            Err(e) => return Err(broken(e)),
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixStream;

    const REQUEST: &[u8] = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n\
        Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
        Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: binary\r\n\r\n";

    /// The server's answer to the handshake, up to its empty line.
    fn read_answer(peer: &mut UnixStream) -> String {
        let mut answer = Vec::new();
        let mut byte = [0u8];
        while !answer.ends_with(b"\r\n\r\n") {
            assert_eq!(peer.read(&mut byte).expect("read the answer"), 1, "{answer:?}");
            answer.push(byte[0]);
        }
        String::from_utf8(answer).expect("an ASCII answer")
    }

    #[test]
    fn a_handshake_reads_the_bytes_already_read_before_the_socket() {
        // Split anywhere: the head's start was read by the server, its rest is on the socket.
        for split in [REQUEST.len(), REQUEST.len() / 2, 1] {
            let (server, mut peer) = UnixStream::pair().expect("a socket pair");
            server.set_nonblocking(true).expect("non-blocking");
            peer.set_read_timeout(Some(chardev_testkit::DEADLINE)).expect("timeout");
            peer.write_all(&REQUEST[split..]).expect("send the head's rest");
            let (mut conn, step) =
                WsConn::accept_with_prefix(server.as_fd(), REQUEST[..split].to_vec())
                    .expect("start the handshake");
            assert!(matches!(step, Step::Open), "split at {split}: {step:?}");
            let answer = read_answer(&mut peer);
            assert!(answer.starts_with("HTTP/1.1 101"), "{answer}");
            // RFC 6455's sample key and its accept value.
            assert!(answer.contains("s3pPLMBiTxaQ9kYGzzhZRbK+xOo="), "{answer}");
            assert!(answer.to_ascii_lowercase().contains("sec-websocket-protocol: binary"));

            // The stream goes on from the socket: a masked binary frame "hi", then output.
            peer.write_all(&[0x82, 0x82, 1, 2, 3, 4, b'h' ^ 1, b'i' ^ 2]).expect("a frame");
            let mut buf = [0u8; 16];
            assert_eq!(conn.read(&mut buf).expect("the frame's payload"), 2);
            assert_eq!(&buf[..2], b"hi");
            assert_eq!(conn.write(b"ok").expect("write"), 2);
            let mut frame = [0u8; 4];
            peer.read_exact(&mut frame).expect("the output frame");
            assert_eq!(frame, [0x82, 2, b'o', b'k']);
        }
    }

    #[test]
    fn without_the_prefix_the_same_split_head_never_completes() {
        // The control for the test above: what the server read is not on the socket again.
        let (server, mut peer) = UnixStream::pair().expect("a socket pair");
        server.set_nonblocking(true).expect("non-blocking");
        peer.write_all(&REQUEST[REQUEST.len() / 2..]).expect("send the head's rest");
        let (_conn, step) = WsConn::accept(server.as_fd()).expect("start the handshake");
        assert!(matches!(step, Step::Failed(_)), "{step:?}");
    }
}

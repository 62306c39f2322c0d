//! A `websocket=on` server connection (`WsConn`) after a valid handshake, fed arbitrary
//! bytes as frames over a real socketpair: reads and writes never panic and end in data,
//! `WouldBlock` or a clean error.
#![no_main]

use std::io::Write;
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;

use chardev_socket::websocket::{Step, WsConn};
use libfuzzer_sys::fuzz_target;

const HANDSHAKE: &[u8] = b"GET / HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n\
Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: binary\r\n\r\n";

fuzz_target!(|data: &[u8]| {
    let (server, mut client) = UnixStream::pair().expect("socketpair");
    server.set_nonblocking(true).expect("non-blocking");
    // The handshake alone first: tungstenite refuses bytes after the request in the same
    // read ("Junk after client request"), and RFC 6455 clients wait for the reply anyway.
    client.write_all(HANDSHAKE).expect("handshake");
    let (mut conn, mut step) = WsConn::accept(server.as_fd()).expect("accept");
    for _ in 0..8 {
        if !matches!(step, Step::Pending) {
            break;
        }
        step = conn.advance();
    }
    assert!(matches!(step, Step::Open), "a valid handshake did not open: {step:?}");
    client.write_all(data).expect("frames");
    client.shutdown(std::net::Shutdown::Write).expect("shutdown");

    // Small reads exercise the carried rest of a large message.
    let mut buf = [0u8; 7];
    for round in 0..(data.len() + 16) {
        match conn.read(&mut buf) {
            Ok(n) => assert!(n <= buf.len()),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(_) => break,
        }
        if round % 4 == 0 {
            let _ = conn.write(&buf);
            let _ = conn.on_writable();
        }
    }
});

//! The parts of the TLS path that are ours (issue 19), fed arbitrary bytes. rustls parses
//! the records; what we add around it is the session over a non-blocking socket
//! (`TlsSession::handshake`/`read`/`write`/`push`), the client's distinguished name for
//! `tls-authz`, the SEC 1 key fix for certtool's EC keys, `-object` parsing and the
//! `authz-list` glob. The first byte picks what the rest is:
//!
//! - `0 mod 4`: a client's first flight to a fresh server session (a TLS server chardev's
//!   state when a client has just connected), written into the peer end of a socketpair;
//!   `handshake` driven until it is pending or failed, then again after the peer's end.
//! - `1 mod 4`: raw records to a server session after a real handshake with a client
//!   session (so after authz too): `read` driven until `WouldBlock`, an error or the end.
//! - `2 mod 4`: the rest as plaintext sent by the client session after a real handshake:
//!   the server's `read` must give exactly those bytes, then the end after close_notify.
//! - `3 mod 4`: only the parsers below.
//!
//! Whatever the first byte, the rest also goes through `distinguished_name` (as DER),
//! `normalize_sec1_key` (as DER), `Object::from_str` and QMP's `parse_object_arg` (as
//! text), and `glob_match` (pattern and text split at the first NUL).
//!
//! Checks: no panic, no hang (every loop is bounded, every call returns), the plaintext
//! arrives intact, the normaliser's output needs no second fix, an escaped pattern matches
//! its text exactly.
//!
//! The certificates are made once per fuzzing process with the test kit's `Pki` (certtool,
//! ECDSA P-256) in a directory under the system's temp dir, loaded into `TlsSetup`s and
//! the directory removed: nothing is read from disk per input.
#![no_main]

use std::io::Write;
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::sync::{Arc, OnceLock};

use chardev::objects::{glob_match, Endpoint, Object};
use chardev::options::TlsSpec;
use chardev_socket::tls::{distinguished_name, normalize_sec1_key, TlsSession, TlsSetup};
use chardev_socket::websocket::Step;
use chardev_testkit::certs::{Dn, Pki};
use libfuzzer_sys::fuzz_target;

/// The server and client setups, loaded once.
struct Creds {
    server: TlsSetup,
    client: TlsSetup,
}

fn creds() -> &'static Creds {
    static CREDS: OnceLock<Creds> = OnceLock::new();
    CREDS.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("chardev-fuzz-tls-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create the fuzz certificates' directory");
        let pki = Pki::new(&dir);
        let dn = Dn { country: Some("GB".into()), ..Dn::cn("client1") };
        let server_dir = pki.server_dir("server");
        let client_dir = pki.client_dir("client", &dn);
        let objects: Vec<Arc<Object>> = [
            format!("tls-creds-x509,id=ts,dir={},endpoint=server", server_dir.display()),
            format!("tls-creds-x509,id=tc,dir={},endpoint=client", client_dir.display()),
            // The client's DN, as QEMU's option syntax writes it (commas doubled).
            format!("authz-simple,id=az,identity={}", dn.qemu_identity_option()),
        ]
        .iter()
        .map(|s| Arc::new(s.parse::<Object>().expect("a valid -object")))
        .collect();
        let lookup = |_key: &str, id: &str| {
            Ok(objects.iter().find(|o| o.id == id).expect("a known object").clone())
        };
        let spec = |creds: &str, authz: Option<&str>| TlsSpec {
            creds: creds.into(),
            authz: authz.map(str::to_string),
            hostname: None,
        };
        let server = TlsSetup::new(&spec("ts", Some("az")), Endpoint::Server, None, lookup)
            .expect("load the server's credentials");
        let client =
            TlsSetup::new(&spec("tc", None), Endpoint::Client, Some("localhost"), lookup)
                .expect("load the client's credentials");
        std::fs::remove_dir_all(&dir).expect("remove the fuzz certificates' directory");
        Creds { server, client }
    })
}

/// A non-blocking socketpair: (the server's end, the client's end).
fn pair() -> (UnixStream, UnixStream) {
    let (server, client) = UnixStream::pair().expect("socketpair");
    server.set_nonblocking(true).expect("non-blocking");
    client.set_nonblocking(true).expect("non-blocking");
    (server, client)
}

/// Writes as much of `data` as the socket takes without blocking (a socketpair holds a
/// few hundred KiB; inputs are at most 128 KiB).
fn feed(to: &mut UnixStream, data: &[u8]) {
    let mut at = 0;
    while at < data.len() {
        match to.write(&data[at..]) {
            Ok(0) | Err(_) => break,
            Ok(n) => at += n,
        }
    }
}

/// A fresh server session, `data` as the client's records.
fn first_flight(data: &[u8]) {
    let (server, mut client) = pair();
    let mut session = creds().server.session().expect("a server session");
    feed(&mut client, data);
    // Every turn either consumes bytes or ends the loop: bounded by the input's length.
    for round in 0..2 {
        for _ in 0..(data.len() + 4) {
            match session.handshake(server.as_fd()) {
                Step::Pending => break,
                // No input can finish a handshake: the client's Finished is keyed by the
                // server's fresh ephemeral key. If one ever did, the session must be open.
                Step::Open => {
                    assert!(session.is_open());
                    return;
                }
                Step::Failed(_) => return,
            }
        }
        if round == 0 {
            // The client's end: the handshake must fail, not wait.
            client.shutdown(std::net::Shutdown::Write).expect("shutdown");
        }
    }
    panic!("the handshake did not end after the peer's end");
}

/// A real handshake between a server and a client session over a socketpair.
fn handshaken() -> (UnixStream, TlsSession, UnixStream, TlsSession) {
    let (server_fd, client_fd) = pair();
    let mut server = creds().server.session().expect("a server session");
    let mut client = creds().client.session().expect("a client session");
    let (mut s, mut c) = (Step::Pending, Step::Pending);
    for _ in 0..32 {
        if matches!(c, Step::Pending) {
            c = client.handshake(client_fd.as_fd());
        }
        if matches!(s, Step::Pending) {
            s = server.handshake(server_fd.as_fd());
        }
        if matches!((&s, &c), (Step::Open, Step::Open)) {
            return (server_fd, server, client_fd, client);
        }
    }
    panic!("the real handshake did not finish: server {s:?}, client {c:?}");
}

/// Reads from the server session until `WouldBlock`, an error or the end; the bytes read.
fn drain(session: &mut TlsSession, fd: &UnixStream, limit: usize) -> Vec<u8> {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    // Each turn reads at least a byte or ends: bounded by what was sent.
    for _ in 0..(limit + 16) {
        match session.read(fd.as_fd(), &mut buf) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(_) => break,
        }
    }
    got
}

/// Raw records to an open server session.
fn records(data: &[u8]) {
    let (server_fd, mut server, mut client_fd, _client) = handshaken();
    feed(&mut client_fd, data);
    drain(&mut server, &server_fd, data.len());
    client_fd.shutdown(std::net::Shutdown::Write).expect("shutdown");
    drain(&mut server, &server_fd, data.len());
    let _ = server.write(server_fd.as_fd(), b"still here");
    server.close(server_fd.as_fd());
}

/// Plaintext through the client session: the server reads exactly it, then the end.
fn plaintext(data: &[u8]) {
    let (server_fd, mut server, client_fd, mut client) = handshaken();
    let mut sent = 0;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    for _ in 0..(data.len() + 64) {
        if sent < data.len() {
            match client.write(client_fd.as_fd(), &data[sent..]) {
                Ok(n) => sent += n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) => panic!("the client's write failed: {e}"),
            }
        }
        let _ = client.push(client_fd.as_fd());
        loop {
            match server.read(server_fd.as_fd(), &mut buf) {
                Ok(0) => panic!("the end before the data"),
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) => panic!("the server's read failed: {e}"),
            }
        }
        if got.len() == data.len() {
            break;
        }
    }
    assert!(got == data, "plaintext arrived changed: {} of {} bytes", got.len(), data.len());
    client.close(client_fd.as_fd());
    match server.read(server_fd.as_fd(), &mut buf) {
        Ok(0) => {}
        other => panic!("after close_notify the server read {other:?}, not the end"),
    }
}

fn parsers(data: &[u8]) {
    let _ = distinguished_name(data);
    if let Some(fixed) = normalize_sec1_key(data) {
        assert!(fixed.len() < data.len(), "the fix made the key longer");
        assert!(normalize_sec1_key(&fixed).is_none(), "the fixed key needs fixing again");
    }
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(object) = text.parse::<Object>() {
            if let chardev::objects::ObjectSpec::Authz(authz) = &object.spec {
                let _ = authz.allows(text);
            }
        }
        let _ = chardev_qmp::objects::parse_object_arg(text);
    }
    // glob_match is fnmatch's O(pattern x text) in the worst case (`*a*a*a...`), as QEMU's
    // is; patterns come from the administrator, names from certificates (a few hundred
    // bytes): 4 KiB each is far beyond both and keeps every input fast.
    let (pattern, text) = match data.iter().position(|&b| b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, data),
    };
    let (pattern, text) = (&pattern[..pattern.len().min(4096)], &text[..text.len().min(4096)]);
    let _ = glob_match(pattern, text);
    // Every byte quoted: the pattern is the text itself.
    let quoted: Vec<u8> = text.iter().flat_map(|&b| [b'\\', b]).collect();
    assert!(glob_match(&quoted, text), "a quoted pattern does not match its own text");
    assert!(glob_match(b"*", text));
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    match mode % 4 {
        0 => first_flight(rest),
        1 => records(rest),
        2 => plaintext(rest),
        _ => {}
    }
    parsers(rest);
});

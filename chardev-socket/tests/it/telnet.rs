//! `telnet=on` servers against a raw-socket Python peer: the exact opening negotiation,
//! `IAC BREAK` as a break between the right bytes (also when the network cuts it in two),
//! `IAC IAC` as one 0xFF, 0xFF escaped on the way out; and fds on a telnet unix socket.

use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::process::Stdio;

use crate::support::*;
use chardev::Event;
use chardev_testkit::*;

/// What the frontend saw, with consecutive data merged.
#[derive(Debug, PartialEq)]
enum Piece {
    Data(Vec<u8>),
    Event(Event),
}

fn data(bytes: &[u8]) -> Piece {
    Piece::Data(bytes.to_vec())
}

/// Collects input until `bytes` data bytes and `events` events have arrived.
fn pieces(rec: &Record, bytes: usize, events: usize) -> Vec<Piece> {
    let (mut out, mut got_bytes, mut got_events) = (Vec::new(), 0, 0);
    while got_bytes < bytes || got_events < events {
        match rec.next() {
            Seen::Data(d, _) => {
                got_bytes += d.len();
                match out.last_mut() {
                    Some(Piece::Data(prev)) => prev.extend_from_slice(&d),
                    _ => out.push(Piece::Data(d)),
                }
            }
            Seen::Event(e) => {
                got_events += 1;
                out.push(Piece::Event(e));
            }
        }
    }
    out
}

#[test]
fn a_raw_peer_sees_the_negotiation_and_its_breaks_and_escapes_arrive_in_place() {
    let (_lp, reg, _dir) = setup();
    reg.add_str("socket,id=tel,host=127.0.0.1,port=0,server=on,wait=off,telnet=on").unwrap();
    let filename = reg.query()[0].filename.clone();
    let port = filename.trim_end_matches(",server=on").rsplit(':').next().unwrap().to_string();
    let h = reg.connect("tel").unwrap();
    let rec = record(&h, 4096);
    let mut peer = KillOnDrop(
        python()
            .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/peers/telnet_peer.py"))
            .arg(&port)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let lines = lines_of(peer.0.stdout.take().unwrap());
    let line = || lines.recv_timeout(DEADLINE).expect("the peer said nothing");

    rec.expect_event(Event::Opened);
    assert_eq!(line(), "negotiation=fffb01fffb03fffb00fffd00fffd1f");

    // ab IAC BREAK cd IAC IAC e
    assert_eq!(pieces(&rec, 6, 1), [data(b"ab"), Piece::Event(Event::Break), data(b"cd\xffe")]);
    h.write_all(b"k").unwrap();
    // x IAC | BREAK y: the break is still placed between x and y.
    assert_eq!(pieces(&rec, 1, 0), [data(b"x")]);
    h.write_all(b"k").unwrap();
    assert_eq!(pieces(&rec, 1, 1), [Piece::Event(Event::Break), data(b"y")]);
    h.write_all(b"k").unwrap();

    h.write_all(b"z\xffz").unwrap();
    assert_eq!(line(), "escaped=7affff7a");
    rec.expect_event(Event::Closed);
    assert!(wait_exit(&mut peer.0, "telnet_peer.py").success());
}

#[test]
fn fds_on_a_telnet_unix_socket_go_with_their_byte_or_are_refused() {
    let (_lp, reg, _dir) = setup();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tel.sock");
    reg.add_str(&format!("socket,id=tu,path={},server=on,wait=off,telnet=on", path.display()))
        .unwrap();
    let h = reg.connect("tu").unwrap();
    let rec = record(&h, 64);
    let peer = UnixStream::connect(&path).unwrap();
    rec.expect_event(Event::Opened);

    let file = tempfile::tempfile().unwrap();
    match h.write_with_fds(b"x", &[file.as_fd()]) {
        Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::Unsupported, "{e}"),
        Ok(n) => {
            assert_eq!(n, 1);
            // The negotiation, then "x" with the fd.
            let (mut got, mut fds) = (Vec::new(), Vec::new());
            while got.len() < 13 {
                assert!(chardev::fd::wait_readable(peer.as_fd(), Some(DEADLINE)).unwrap());
                let mut buf = [0u8; 64];
                let r = chardev::fd::recv_with_fds(peer.as_fd(), &mut buf, &mut fds).unwrap();
                assert!(r.bytes > 0, "the chardev hung up");
                got.extend_from_slice(&buf[..r.bytes]);
            }
            assert_eq!(&got[12..], b"x");
            assert_eq!(fds.len(), 1, "write_with_fds said Ok, but the fd never left");
        }
    }
}

#[test]
fn a_raw_naws_becomes_a_resize_event_and_the_last_size_is_kept() {
    use std::io::{Read, Write};
    let (_lp, reg, _dir) = setup();
    reg.add_str("socket,id=tel,host=127.0.0.1,port=0,server=on,wait=off,telnet=on").unwrap();
    let filename = reg.query()[0].filename.clone();
    let port: u16 =
        filename.trim_end_matches(",server=on").rsplit(':').next().unwrap().parse().unwrap();
    let h = reg.connect("tel").unwrap();
    let rec = record(&h, 4096);
    assert_eq!(h.size(), None);
    let mut peer = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    peer.set_read_timeout(Some(DEADLINE)).unwrap();
    let mut negotiation = [0u8; 15];
    peer.read_exact(&mut negotiation).unwrap();
    assert!(negotiation.ends_with(&[0xff, 0xfd, 31]), "IAC DO NAWS: {negotiation:x?}");
    rec.expect_event(Event::Opened);
    // IAC WILL NAWS, IAC SB NAWS 0 100 0 40 IAC SE, then data.
    peer.write_all(b"\xff\xfb\x1f\xff\xfa\x1f\x00\x64\x00\x28\xff\xf0x").unwrap();
    rec.expect_event(Event::Resize { cols: 100, rows: 40 });
    assert_eq!(rec.data(1), b"x");
    assert_eq!(h.size(), Some((100, 40)));
}

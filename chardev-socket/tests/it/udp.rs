//! `udp` chardevs against a std `UdpSocket` on 127.0.0.1: one write is one datagram, a
//! datagram larger than the frontend's room arrives whole in pieces, only the connected peer
//! is heard, and a datagram socket never "opens".

use std::net::{SocketAddr, UdpSocket};

use chardev::{EventLoop, LoopThread, Registry};
use chardev_testkit::*;

/// A chardev `u` talking to a fresh peer socket; returns the peer and the chardev's port.
fn setup() -> (LoopThread, Registry, UdpSocket, u16) {
    let lp = EventLoop::spawn().unwrap();
    let reg = Registry::new(lp.handle());
    chardev_socket::register(&reg);
    let peer = UdpSocket::bind("127.0.0.1:0").unwrap();
    peer.set_read_timeout(Some(DEADLINE)).unwrap();
    let p = peer.local_addr().unwrap().port();
    // A port that was free a moment ago, for the chardev's own end.
    let q = UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    reg.add_str(&format!("udp,id=u,host=127.0.0.1,port={p},localaddr=127.0.0.1,localport={q}"))
        .unwrap();
    (lp, reg, peer, q)
}

fn recv(peer: &UdpSocket) -> (Vec<u8>, SocketAddr) {
    let mut buf = vec![0u8; 70_000];
    let (n, from) = peer.recv_from(&mut buf).expect("no datagram within the deadline");
    buf.truncate(n);
    (buf, from)
}

/// The next piece of data, failing on an event (a udp chardev raises none).
fn expect_data(rec: &Record) -> Vec<u8> {
    match rec.next() {
        Seen::Data(d, _) => d,
        Seen::Event(e) => panic!("a udp chardev raised {e:?}"),
    }
}

/// Asserts that the frontend's next piece of data is `want`, showing a short excerpt if not.
fn expect_datagram(rec: &Record, want: &[u8]) {
    let got = expect_data(rec);
    assert!(
        got == want,
        "expected {:?}, got {} bytes starting {:?}",
        String::from_utf8_lossy(want),
        got.len(),
        &got[..got.len().min(16)]
    );
}

#[test]
fn each_write_is_one_datagram_from_localaddr_and_localport() {
    let (_lp, reg, peer, q) = setup();
    // QEMU's udp sets no filename, so query-chardev shows the type name.
    assert_eq!(reg.query()[0].filename, "udp");
    let h = reg.connect("u").unwrap();
    let rec = record(&h, 4096);
    assert_eq!(h.write(b"one").unwrap(), 3);
    h.write_all(b"two!").unwrap();
    h.write_all(b"").unwrap();
    h.write_all(b"three").unwrap();
    let from: SocketAddr = format!("127.0.0.1:{q}").parse().unwrap();
    assert_eq!(recv(&peer), (b"one".to_vec(), from));
    assert_eq!(recv(&peer), (b"two!".to_vec(), from));
    assert_eq!(recv(&peer), (b"three".to_vec(), from));
    // And the other way; the first thing the frontend sees is data: no Opened.
    peer.send_to(b"back", from).unwrap();
    expect_datagram(&rec, b"back");
    assert!(!h.is_open(), "a udp chardev is never open");
    assert!(!h.can_pass_fds());
}

#[test]
fn a_datagram_larger_than_the_room_arrives_whole_in_pieces() {
    let (_lp, reg, peer, q) = setup();
    let h = reg.connect("u").unwrap();
    let rec = record(&h, 3);
    let big: Vec<u8> = (0..1000u32).map(|i| (i * 7 % 256) as u8).collect();
    peer.send_to(&big, ("127.0.0.1", q)).unwrap();
    peer.send_to(b"next", ("127.0.0.1", q)).unwrap();
    let mut got = Vec::new();
    while got.len() < big.len() + 4 {
        let piece = expect_data(&rec);
        assert!(piece.len() <= 3, "a piece of {} bytes for a room of 3", piece.len());
        got.extend(piece);
    }
    assert_eq!(&got[..1000], &big[..], "the big datagram, every byte in order");
    assert_eq!(&got[1000..], b"next", "the next datagram after it, not mixed in");
}

#[test]
fn datagrams_that_come_one_at_a_time_each_arrive_intact() {
    let (_lp, reg, peer, q) = setup();
    let h = reg.connect("u").unwrap();
    let rec = record(&h, 4096);
    for word in ["first", "second", "third"] {
        peer.send_to(word.as_bytes(), ("127.0.0.1", q)).unwrap();
        expect_datagram(&rec, word.as_bytes());
    }
}

#[test]
fn only_the_connected_peer_is_heard() {
    let (_lp, reg, peer, q) = setup();
    let h = reg.connect("u").unwrap();
    let rec = record(&h, 4096);
    let stranger = UdpSocket::bind("127.0.0.1:0").unwrap();
    stranger.send_to(b"stranger", ("127.0.0.1", q)).unwrap();
    peer.send_to(b"peer", ("127.0.0.1", q)).unwrap();
    expect_datagram(&rec, b"peer");
}

#[test]
fn the_largest_ipv4_datagram_goes_out_whole_and_a_larger_write_goes_in_datagrams() {
    // 65535 - 20 (IP header) - 8 (UDP header): the most one IPv4 datagram carries.
    const MAX_PAYLOAD: usize = 65_507;
    let (_lp, reg, peer, _q) = setup();
    let h = reg.connect("u").unwrap();
    let _rec = record(&h, 4096);
    let data: Vec<u8> = (0..70_000u32).map(|i| (i % 253) as u8).collect();
    assert_eq!(h.write(&data[..MAX_PAYLOAD]).unwrap(), MAX_PAYLOAD);
    assert_eq!(recv(&peer).0, &data[..MAX_PAYLOAD]);
    // A write larger than a datagram sends what one datagram holds (write_all the rest).
    let n = h.write(&data).expect("a write of 70000 bytes on udp");
    assert!(n > 0 && n <= MAX_PAYLOAD, "{n}");
    assert_eq!(recv(&peer).0, &data[..n]);
}

#[test]
fn a_peer_that_goes_away_and_comes_back_is_heard_again() {
    let (_lp, reg, peer, q) = setup();
    let p = peer.local_addr().unwrap().port();
    let h = reg.connect("u").unwrap();
    let rec = record(&h, 4096);
    drop(peer);
    // Nobody listens: the kernel answers with ICMP port unreachable, which the socket
    // reports as ECONNREFUSED on a later call. Neither that nor the write may wedge it.
    let _ = h.write(b"into the void");
    let peer = UdpSocket::bind(("127.0.0.1", p)).unwrap();
    peer.set_read_timeout(Some(DEADLINE)).unwrap();
    peer.send_to(b"I'm back", ("127.0.0.1", q)).unwrap();
    expect_datagram(&rec, b"I'm back");
    // The pending ICMP error may fail one write; the next ones reach the peer.
    let mut sent = false;
    for _ in 0..3 {
        match h.write(b"welcome back") {
            Ok(_) => {
                sent = true;
                break;
            }
            Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionRefused, "{e}"),
        }
    }
    assert!(sent, "writes keep failing after the peer came back");
    assert_eq!(recv(&peer).0, b"welcome back");
}

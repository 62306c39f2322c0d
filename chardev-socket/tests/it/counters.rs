//! Counters (issue 18, point 2): what a socket chardev moved, lost and accepted, through
//! `Registry::counters`, against real unix clients.

use std::io::{Read, Write};
use std::os::fd::AsFd;

use crate::support::*;
use chardev::Event;
use chardev_testkit::*;

#[test]
fn bytes_connections_and_fds_are_counted() {
    let (lp, reg, dir) = setup();
    let path = dir.path().join("c.sock");
    reg.add_str(&format!("socket,id=c,path={},server=on,wait=off", path.display())).unwrap();
    let h = reg.connect("c").unwrap();
    let rec = record(&h, 4096);
    assert_eq!(reg.counters("c").unwrap(), chardev::Counters::default());
    let mut peer = connect_unix(&path);
    rec.expect_event(Event::Opened);
    peer.write_all(b"12345").unwrap();
    assert_eq!(rec.data(5), b"12345");
    // Two fds with one byte.
    let (r, w) = nix::unistd::pipe().unwrap();
    chardev::fd::send_with_fds(peer.as_fd(), b"x", &[r.as_fd(), w.as_fd()]).unwrap();
    match rec.next() {
        Seen::Data(d, fds) => assert_eq!((d.len(), fds.len()), (1, 2)),
        other => panic!("{other:?}"),
    }
    h.write_all(b"answer").unwrap();
    let mut buf = [0u8; 6];
    peer.read_exact(&mut buf).unwrap();
    settle(lp.handle());
    let c = reg.counters("c").unwrap();
    assert_eq!((c.bytes_in, c.bytes_out, c.connections), (6, 6, 1));
    assert_eq!((c.fds_received, c.fds_closed), (2, 0));
    drop(peer);
    rec.expect_event(Event::Closed);
    let _again = connect_unix(&path);
    rec.expect_event(Event::Opened);
    assert_eq!(reg.counters("c").unwrap().connections, 2);
    assert!(reg.counters("nope").is_err());
}

#[test]
fn viewers_that_fall_behind_are_counted_as_dropped_and_a_waiting_writer_as_blocked() {
    let (lp, reg, dir) = setup();
    let path = dir.path().join("v.sock");
    reg.add_str(&format!(
        "socket,id=v,path={},server=on,wait=off,clients=2,queue=64k",
        path.display()
    ))
    .unwrap();
    let h = reg.connect("v").unwrap();
    let _rec = record(&h, 4096);
    let _stalled = connect_unix(&path);
    wait_until("the viewer to be a session", || reg.sessions("v").unwrap().len() == 1);
    h.write_all(&vec![b'x'; 4 << 20]).unwrap();
    settle(lp.handle());
    let dropped = reg.counters("v").unwrap().dropped_viewers;
    let listed = reg.sessions("v").unwrap()[0].dropped;
    assert!(dropped > 0 && dropped == listed, "counted {dropped}, the session says {listed}");

    // A writer that waits for a full plain server is counted as blocked.
    let path = dir.path().join("b.sock");
    reg.add_str(&format!("socket,id=b,path={},server=on,wait=off", path.display())).unwrap();
    let hb = reg.connect("b").unwrap();
    let recb = record(&hb, 4096);
    let mut slow = connect_unix(&path);
    recb.expect_event(Event::Opened);
    let writer = std::thread::spawn(move || hb.write_all(&vec![b'y'; 4 << 20]));
    std::thread::sleep(QUIET);
    let mut sink = vec![0u8; 1 << 20];
    let mut got = 0;
    while got < 4 << 20 {
        got += slow.read(&mut sink).unwrap();
    }
    writer.join().unwrap().unwrap();
    let blocked = reg.counters("b").unwrap().blocked_ns;
    assert!(blocked >= QUIET.as_nanos() as u64 / 2, "blocked {blocked} ns");
}

#[test]
fn with_overflow_drop_a_writer_never_waits_for_a_peer_that_does_not_read() {
    let (lp, reg, dir) = setup();
    let path = dir.path().join("d.sock");
    reg.add_str(&format!("socket,id=d,path={},server=on,wait=off,overflow=drop", path.display()))
        .unwrap();
    let h = reg.connect("d").unwrap();
    let rec = record(&h, 4096);
    let mut peer = connect_unix(&path);
    rec.expect_event(Event::Opened);
    // 16 MiB through write_all while the peer reads nothing: it returns, it does not wait.
    let pattern: Vec<u8> = (0..16usize << 20).map(|i| (i % 251) as u8).collect();
    for chunk in pattern.chunks(65536) {
        h.write_all(chunk).unwrap();
    }
    let c = reg.counters("d").unwrap();
    assert!(c.dropped_overflow > 0, "{c:?}");
    assert_eq!(c.blocked_ns, 0, "the writer never waited");
    // The peer reads now: its stream, one marker, the count equal to the counter.
    let mut got = Vec::new();
    peer.set_read_timeout(Some(QUIET)).unwrap();
    let mut buf = vec![0; 1 << 20];
    loop {
        match peer.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                if got.ends_with(&pattern[pattern.len() - 16..]) {
                    break;
                }
            }
            Err(e) => panic!("{e}"),
        }
    }
    let lost = one_gap(&got, &pattern);
    settle(lp.handle());
    let c = reg.counters("d").unwrap();
    assert_eq!(c.dropped_overflow, lost, "the counter is what was written minus what arrived");
    assert_eq!(c.bytes_out + c.dropped_overflow, pattern.len() as u64);
}

#[test]
fn a_server_keeps_its_backlog_for_the_next_client_and_says_what_it_dropped() {
    let (_lp, reg, dir) = setup();
    let path = dir.path().join("b.sock");
    reg.add_str(&format!("socket,id=b,path={},server=on,wait=off,backlog=4k", path.display()))
        .unwrap();
    let h = reg.connect("b").unwrap();
    let rec = record(&h, 4096);
    // Nobody is connected: kept, not refused.
    h.write_all(b"while nobody was there\n").unwrap();
    let mut first = connect_unix(&path);
    rec.expect_event(Event::Opened);
    let mut buf = [0u8; 23];
    first.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"while nobody was there\n");
    drop(first);
    rec.expect_event(Event::Closed);
    // More than the backlog while away: the oldest is dropped, the next client is told.
    let pattern: Vec<u8> = (0..10_000usize).map(|i| (i % 251) as u8).collect();
    h.write_all(&pattern).unwrap();
    let mut second = connect_unix(&path);
    rec.expect_event(Event::Opened);
    let mut got = vec![0u8; 4096 + chardev::fanout::gap_marker(10_000 - 4096).len()];
    second.read_exact(&mut got).unwrap();
    let lost = one_gap(&got, &pattern);
    assert_eq!(lost, 10_000 - 4096);
    assert_eq!(reg.counters("b").unwrap().dropped_backlog, lost);
    // Live output after it, in order.
    h.write_all(b"live").unwrap();
    let mut live = [0u8; 4];
    second.read_exact(&mut live).unwrap();
    assert_eq!(&live, b"live");
}

#[test]
fn a_client_keeps_its_backlog_between_reconnects() {
    let (_lp, reg, dir) = setup();
    let path = dir.path().join("server.sock");
    let server = std::os::unix::net::UnixListener::bind(&path).unwrap();
    reg.add_str(&format!("socket,id=c,path={},reconnect-ms=50,backlog=64k", path.display()))
        .unwrap();
    let h = reg.connect("c").unwrap();
    let rec = record(&h, 4096);
    let (mut peer, _) = server.accept().unwrap();
    rec.expect_event(Event::Opened);
    h.write_all(b"one\n").unwrap();
    let mut buf = [0u8; 4];
    peer.read_exact(&mut buf).unwrap();
    // The server goes; what is written meanwhile waits for the next connection.
    drop(peer);
    drop(server);
    std::fs::remove_file(&path).unwrap();
    rec.expect_event(Event::Closed);
    h.write_all(b"two\nthree\n").unwrap();
    let server = std::os::unix::net::UnixListener::bind(&path).unwrap();
    let (mut peer, _) = server.accept().unwrap();
    rec.expect_event(Event::Opened);
    let mut got = [0u8; 10];
    peer.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"two\nthree\n");
    assert_eq!(reg.counters("c").unwrap().dropped_backlog, 0);
}

//! `FrontendHandle::notify_writable`: a frontend whose write came back short is told once when
//! the backend can take more, and not before. Socket and pty backends report writability from
//! their own registration; other backends with an fd (a pipe) get a watch of the loop's own;
//! backends that never block say so at once; a connection that ends ends the wait too.

use std::io::{ErrorKind, Read};
use std::os::fd::OwnedFd;
use std::sync::mpsc::{channel, Receiver, Sender};

use crate::support::*;
use chardev::{Event, Frontend, FrontendHandle};
use chardev_testkit::*;

/// A frontend that reports `writable()` calls (and `Opened`) on a channel.
struct Waiter(Sender<&'static str>);

impl Frontend for Waiter {
    fn can_receive(&mut self) -> usize {
        0
    }
    fn receive(&mut self, _data: &[u8], _fds: Vec<OwnedFd>) {}
    fn event(&mut self, event: Event) {
        match event {
            Event::Opened => drop(self.0.send("opened")),
            Event::Closed => drop(self.0.send("closed")),
            _ => {}
        }
    }
    fn writable(&mut self) {
        let _ = self.0.send("writable");
    }
}

fn waiter(h: &FrontendHandle) -> Receiver<&'static str> {
    let (tx, rx) = channel();
    h.set_frontend(Waiter(tx));
    rx
}

fn expect(rx: &Receiver<&'static str>, what: &str) {
    match rx.recv_timeout(DEADLINE) {
        Ok(got) => assert_eq!(got, what),
        Err(e) => panic!("waiting for {what}: {e}"),
    }
}

fn nothing(rx: &Receiver<&'static str>) {
    if let Ok(got) = rx.recv_timeout(QUIET) {
        panic!("expected nothing yet, got {got}");
    }
}

/// Writes until the backend takes nothing more; returns how much went.
fn fill(h: &FrontendHandle) -> usize {
    let chunk = vec![0x5a; 64 * 1024];
    let mut total = 0;
    loop {
        match h.write(&chunk) {
            Ok(n) => total += n,
            Err(e) if e.kind() == ErrorKind::WouldBlock => return total,
            Err(e) => panic!("write: {e}"),
        }
    }
}

/// Reads exactly `n` bytes from `peer`.
fn drain(peer: &mut impl Read, n: usize) {
    let mut buf = vec![0; 64 * 1024];
    let mut left = n;
    while left > 0 {
        let got = peer.read(&mut buf[..left.min(64 * 1024)]).expect("read");
        assert!(got > 0, "the peer's stream ended with {left} bytes to go");
        left -= got;
    }
}

#[test]
fn a_socket_frontend_is_told_once_when_the_peer_reads_and_not_before() {
    let (_lp, reg, dir) = setup();
    let path = dir.path().join("w.sock");
    add(&reg, &format!("socket,id=s,path={},server=on,wait=off", path.display()));
    let h = connect(&reg, "s");
    let rx = waiter(&h);
    let mut peer = connect_unix(&path);
    expect(&rx, "opened");

    // Written from this thread, not the loop's: the loop learns of the wait by a request.
    let sent = fill(&h);
    h.notify_writable();
    nothing(&rx);
    drain(&mut peer, sent);
    expect(&rx, "writable");
    nothing(&rx);

    // Room came before the request did: told at once, not at the next edge.
    let sent = fill(&h);
    drain(&mut peer, sent);
    h.notify_writable();
    expect(&rx, "writable");
    nothing(&rx);
}

#[test]
fn a_frontend_waiting_when_the_peer_leaves_is_told_and_its_write_fails() {
    let (_lp, reg, dir) = setup();
    let path = dir.path().join("gone.sock");
    add(&reg, &format!("socket,id=s,path={},server=on,wait=off", path.display()));
    let h = connect(&reg, "s");
    let rx = waiter(&h);
    let peer = connect_unix(&path);
    expect(&rx, "opened");
    fill(&h);
    h.notify_writable();
    nothing(&rx);
    drop(peer);
    // The hang-up ends the wait (Closed itself waits until the frontend reads, QEMU #1264).
    expect(&rx, "writable");
    nothing(&rx);
    let err = h.write(b"x").expect_err("nobody to write to");
    assert_eq!(err.kind(), ErrorKind::BrokenPipe, "{err}");
}

#[test]
fn a_frontend_waiting_when_the_connection_is_dropped_is_told_after_closed() {
    let (_lp, reg, dir) = setup();
    let path = dir.path().join("dropped.sock");
    add(&reg, &format!("socket,id=s,path={},server=on,wait=off", path.display()));
    let h = connect(&reg, "s");
    let rx = waiter(&h);
    let _peer = connect_unix(&path);
    expect(&rx, "opened");
    fill(&h);
    h.notify_writable();
    nothing(&rx);
    // Our side ends it: no hang-up edge will come from a deregistered socket.
    h.disconnect();
    expect(&rx, "closed");
    expect(&rx, "writable");
    let err = h.write(b"x").expect_err("nobody to write to");
    assert_eq!(err.kind(), ErrorKind::NotConnected, "{err}");
}

#[test]
fn every_waiting_frontend_of_a_mux_is_told() {
    let (_lp, reg, dir) = setup();
    let path = dir.path().join("m.sock");
    add(&reg, &format!("socket,id=m,path={},server=on,wait=off,mux=on", path.display()));
    let (h0, h1) = (connect(&reg, "m"), connect(&reg, "m"));
    let (rx0, rx1) = (waiter(&h0), waiter(&h1));
    let mut peer = connect_unix(&path);
    // Only the focused frontend hears Opened; wait for it so both are installed.
    let _ = rx1.recv_timeout(DEADLINE);
    let sent = fill(&h0);
    h0.notify_writable();
    h1.notify_writable();
    nothing(&rx0);
    drain(&mut peer, sent);
    let told0 = rx0.recv_timeout(DEADLINE).expect("frontend 0 told");
    let told1 = rx1.recv_timeout(DEADLINE).expect("frontend 1 told");
    assert_eq!((told0, told1), ("writable", "writable"));
}

#[test]
fn a_pipe_backend_gets_the_loops_own_watch() {
    let (_lp, reg, dir) = setup();
    let base = dir.path().join("p");
    let (p_in, p_out) = (dir.path().join("p.in"), dir.path().join("p.out"));
    mkfifo(&p_in);
    mkfifo(&p_out);
    add(&reg, &format!("pipe,id=p,path={}", base.display()));
    let mut reader = FifoReader::open(&p_out);
    let h = connect(&reg, "p");
    let rx = waiter(&h);
    expect(&rx, "opened");
    let sent = fill(&h);
    h.notify_writable();
    nothing(&rx);
    reader.read_exact(sent);
    expect(&rx, "writable");
    nothing(&rx);
}

#[test]
fn a_backend_that_never_blocks_says_so_at_once() {
    let (_lp, reg, _dir) = setup();
    add(&reg, "ringbuf,id=r,size=4096");
    let h = connect(&reg, "r");
    let rx = waiter(&h);
    expect(&rx, "opened");
    h.notify_writable();
    expect(&rx, "writable");
    nothing(&rx);
}

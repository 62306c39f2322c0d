//! splice(2) between socket chardevs and a frontend's pipe (`Frontend::splice_pipe`,
//! `FrontendHandle::write_from_pipe`): bytes in order, the end of the stream still reported,
//! and clear refusals where output must not bypass the chardev.

use std::io::{ErrorKind, Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::mpsc::{channel, Sender};

use crate::support::*;
use chardev::{Event, Frontend, FrontendHandle};
use chardev_testkit::*;

/// Offers a pipe; empties it into `got` after every splice; reports the end.
struct Piped {
    r: OwnedFd,
    w: OwnedFd,
    capacity: usize,
    got: Vec<u8>,
    received: usize,
    tx: Sender<(Vec<u8>, usize)>,
}

impl Frontend for Piped {
    fn can_receive(&mut self) -> usize {
        self.capacity
    }
    fn receive(&mut self, data: &[u8], _fds: Vec<OwnedFd>) {
        // Copied input: counted apart, so the test sees which way the bytes came.
        self.got.extend_from_slice(data);
        self.received += data.len();
    }
    fn event(&mut self, event: Event) {
        if event == Event::Closed {
            let _ = self.tx.send((std::mem::take(&mut self.got), self.received));
        }
    }
    fn splice_pipe(&mut self) -> Option<(BorrowedFd<'_>, usize)> {
        Some((self.w.as_fd(), self.capacity))
    }
    fn spliced(&mut self, n: usize) {
        let mut buf = vec![0; n];
        let mut pipe = std::fs::File::from(self.r.try_clone().expect("dup the pipe"));
        pipe.read_exact(&mut buf).expect("the spliced bytes are in the pipe");
        self.got.extend_from_slice(&buf);
    }
}

fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8).collect()
}

#[test]
fn input_moves_into_a_frontends_pipe_in_order_and_the_end_still_comes() {
    let (_lp, reg, dir) = setup();
    let path = dir.path().join("in.sock");
    add(&reg, &format!("socket,id=s,path={},server=on,wait=off", path.display()));
    let h = connect(&reg, "s");
    let (r, w, capacity) = chardev::fd::splice_pipe(256 << 10).expect("a pipe");
    let (tx, rx) = channel();
    h.set_frontend(Piped { r, w, capacity, got: Vec::new(), received: 0, tx });
    let payload = pattern(8 << 20);
    let mut peer = connect_unix(&path);
    peer.write_all(&payload).expect("send");
    drop(peer);
    let (got, copied) = rx.recv_timeout(DEADLINE).expect("Closed after the data");
    assert_eq!(got.len(), payload.len());
    assert!(got == payload, "spliced bytes differ");
    assert_eq!(copied, 0, "bytes came through receive(), not the pipe");
}

#[test]
fn output_moves_out_of_a_pipe_and_is_refused_where_it_must_not_bypass_the_chardev() {
    let (_lp, reg, dir) = setup();
    let path = dir.path().join("out.sock");
    add(&reg, &format!("socket,id=s,path={},server=on,wait=off", path.display()));
    let h: FrontendHandle = connect(&reg, "s");
    let (r, w, _) = chardev::fd::splice_pipe(64 << 10).expect("a pipe");
    let mut w = std::fs::File::from(w);

    // No client yet.
    w.write_all(b"hello").expect("fill the pipe");
    let err = h.write_from_pipe(r.as_fd(), 5).expect_err("nobody to write to");
    assert_eq!(err.kind(), ErrorKind::NotConnected, "{err}");

    let mut peer = connect_unix(&path);
    wait_until("the connection", || h.is_open());
    assert_eq!(h.write_from_pipe(r.as_fd(), 5).expect("splice out"), 5);
    let mut got = [0u8; 5];
    peer.read_exact(&mut got).expect("read");
    assert_eq!(&got, b"hello");

    // A ringbuf cannot; a chardev with a logfile must see every byte it sends.
    add(&reg, "ringbuf,id=rb");
    let err = connect(&reg, "rb").write_from_pipe(r.as_fd(), 1).expect_err("a ringbuf");
    assert_eq!(err.kind(), ErrorKind::Unsupported, "{err}");
    let logged = dir.path().join("logged.sock");
    let log = dir.path().join("log");
    add(
        &reg,
        &format!(
            "socket,id=l,path={},server=on,wait=off,logfile={}",
            logged.display(),
            log.display()
        ),
    );
    let l = connect(&reg, "l");
    let _peer = connect_unix(&logged);
    wait_until("the logged connection", || l.is_open());
    let err = l.write_from_pipe(r.as_fd(), 1).expect_err("output would go unlogged");
    assert_eq!(err.kind(), ErrorKind::Unsupported, "{err}");
    assert!(err.to_string().contains("logfile"), "{err}");
}

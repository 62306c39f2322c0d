//! Fds on messages that meet a reader in pieces, and peers that close right after sending
//! them (Python's `socket.send_fds`): every fd reaches the frontend once, with the read that
//! holds the first byte of its message, and none stays open in this process afterwards.

use std::io::{Read, Seek};
use std::os::fd::OwnedFd;
use std::path::Path;
use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::Arc;

use chardev::{Event, Frontend, FrontendHandle, Registry};
use chardev_testkit::*;

enum Got {
    Read(Vec<u8>, Vec<OwnedFd>),
    Closed,
}

/// Takes `room` bytes per read (0: nothing yet).
struct Slow {
    room: Arc<AtomicUsize>,
    tx: Sender<Got>,
}

impl Frontend for Slow {
    fn can_receive(&mut self) -> usize {
        self.room.load(Ordering::SeqCst)
    }
    fn receive(&mut self, data: &[u8], fds: Vec<OwnedFd>) {
        let _ = self.tx.send(Got::Read(data.to_vec(), fds));
    }
    fn event(&mut self, event: Event) {
        if event == Event::Closed {
            let _ = self.tx.send(Got::Closed);
        }
    }
}

fn slow(h: &FrontendHandle) -> (Arc<AtomicUsize>, Receiver<Got>) {
    let (tx, rx) = channel();
    let room = Arc::new(AtomicUsize::new(0));
    h.set_frontend(Slow { room: Arc::clone(&room), tx });
    (room, rx)
}

/// Runs `send_fds.py --burst` against `path`: every message is in the socket, and the peer
/// gone, when this returns.
fn burst(path: &Path, messages: &[&str]) {
    let mut cmd = python();
    cmd.arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/peers/send_fds.py"))
        .arg("--burst")
        .arg(path)
        .args(messages)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let out = wait_output(cmd.spawn().expect("run send_fds.py"), "send_fds.py --burst");
    assert!(
        out.status.success() && out.stdout == b"sent\n",
        "the peer failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn content(fd: OwnedFd) -> String {
    let mut f = std::fs::File::from(fd);
    f.rewind().expect("rewind a passed file");
    let mut s = String::new();
    f.read_to_string(&mut s).expect("read a passed file");
    s
}

fn server(reg: &Registry, path: &Path) -> FrontendHandle {
    chardev_socket::register(reg);
    add(reg, &format!("socket,id=s,path={},server=on,wait=off", path.display()));
    connect(reg, "s")
}

#[test]
fn fds_meet_a_reader_that_takes_three_bytes_at_a_time_and_none_is_lost_or_leaked() {
    let _alone = alone(); // counts the whole process's fds: one test at a time
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("burst.sock");
    let (_lp, reg) = spawn_registry();
    let h = server(&reg, &path);
    let (room, rx) = slow(&h);
    let before = open_fds();

    // All four messages wait in the socket, the peer already gone, before the first read.
    let messages = ["1:AAAAAAA", "0:BBBBB", "2:CCCCCCCCC", "1:DD"];
    burst(&path, &messages);
    room.store(3, Ordering::SeqCst);
    h.accept_input();

    let mut data = Vec::new();
    let mut fds_at = Vec::new(); // (content, the read's byte range)
    while let Got::Read(bytes, fds) = rx.recv_timeout(DEADLINE).expect("the next read or Closed") {
        assert!(bytes.len() <= 3, "a read of {} bytes for a frontend with room 3", bytes.len());
        let range = data.len()..data.len() + bytes.len();
        data.extend_from_slice(&bytes);
        fds_at.extend(fds.into_iter().map(|fd| (content(fd), range.clone())));
    }
    assert_eq!(data, b"AAAAAAABBBBBCCCCCCCCCDD", "bytes lost, repeated or reordered");
    let mut names: Vec<&str> = fds_at.iter().map(|(c, _)| c.as_str()).collect();
    names.sort_unstable();
    assert_eq!(names, ["AAAAAAA#0", "CCCCCCCCC#0", "CCCCCCCCC#1", "DD#0"], "each fd once");
    // Each fd comes with the read that holds its message's first byte.
    let starts = [('A', 0), ('C', 12), ('D', 21)];
    for (name, range) in &fds_at {
        let first = name.chars().next().expect("a name");
        let (_, start) = starts.iter().find(|(m, _)| *m == first).expect("a message");
        assert!(range.contains(start), "{name} came with bytes {range:?}, its message at {start}");
    }
    assert!(rx.try_recv().is_err(), "something after Closed");
    drop(fds_at);
    assert_eq!(open_fds(), before, "fds left open after every passed fd was dropped");
}

#[test]
fn fds_still_unread_when_the_chardev_goes_are_not_leaked() {
    let _alone = alone(); // counts the whole process's fds: one test at a time
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("unread.sock");
    let (lp, reg) = spawn_registry();
    let before = open_fds();
    let h = server(&reg, &path);
    let (_room, rx) = slow(&h);

    // The frontend never makes room: the fds stay in the socket, the peer is gone.
    burst(&path, &["2:XX", "3:YYY", "1:Z"]);
    settle(lp.handle());
    reg.remove_forced("s").expect("remove");
    settle(lp.handle());
    drop(h);
    settle(lp.handle());
    match rx.try_recv() {
        Ok(Got::Read(bytes, fds)) => {
            panic!("read {bytes:?} with {} fds for a frontend without room", fds.len())
        }
        Ok(Got::Closed) | Err(_) => {}
    }
    assert_eq!(open_fds(), before, "the chardev or the fds it never read left fds open");
    assert!(!path.exists(), "the socket file outlived the chardev");
}

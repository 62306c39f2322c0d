//! Fd passing over unix socket chardevs, against Python peers using `socket.send_fds`:
//! the seed (passed fds arrive blocking), fds with the right bytes, and the 16-fd limit.

use std::io::{BufRead, BufReader, Read, Seek, Write};
use std::os::fd::OwnedFd;
use std::process::{Command, Stdio};
use std::sync::mpsc::{channel, Sender};

use chardev::{Event, EventLoop, Frontend, FrontendHandle, Registry};
use chardev_testkit::*;

fn peer(script: &str) -> Command {
    let mut cmd = python();
    cmd.arg(format!("{}/tests/peers/{script}", env!("CARGO_MANIFEST_DIR")));
    cmd
}

fn server(reg: &Registry, id: &str, path: &std::path::Path) {
    chardev_socket::register(reg);
    reg.add_str(&format!("socket,id={id},path={},server=on,wait=off", path.display())).unwrap();
}

fn pattern(i: usize) -> u8 {
    (i % 251) as u8 ^ (i >> 16) as u8
}

/// Takes the first fd it is given, says "got it", and reports the fd.
struct TakeFd {
    handle: FrontendHandle,
    tx: Sender<OwnedFd>,
}

impl Frontend for TakeFd {
    fn can_receive(&mut self) -> usize {
        1
    }
    fn receive(&mut self, _data: &[u8], fds: Vec<OwnedFd>) {
        for fd in fds {
            self.handle.write_all_blocking(b"got it").unwrap();
            self.tx.send(fd).unwrap();
        }
    }
    fn event(&mut self, _event: Event) {}
}

#[test]
fn the_seed_a_passed_nonblocking_socket_arrives_blocking_and_carries_64_mib() {
    const TOTAL: usize = 64 << 20;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mon.sock");
    let lp = EventLoop::spawn().unwrap();
    let reg = Registry::new(lp.handle());
    server(&reg, "mon", &path);
    let h = reg.connect("mon").unwrap();
    let (tx, rx) = channel();
    h.set_frontend(TakeFd { handle: h.clone(), tx });

    let mut child = KillOnDrop(
        peer("seed_peer.py")
            .args([path.to_str().unwrap(), &TOTAL.to_string()])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let fd = rx.recv_timeout(DEADLINE).expect("no fd arrived");
    assert!(!chardev::fd::is_nonblocking(&fd).unwrap(), "the fd reached the frontend non-blocking");
    let mut lines = BufReader::new(TimedPipe(child.0.stdout.take().unwrap())).lines();
    assert_eq!(
        lines.next().unwrap().unwrap(),
        "nonblocking-after=False",
        "the peer's copy is blocking too"
    );

    // What migrate fd: does: blocking writes of the whole stream, no EAGAIN handling. The
    // send timeout bounds a stall (no progress for the deadline), not the whole slow stream.
    let mut out = std::os::unix::net::UnixStream::from(fd);
    out.set_write_timeout(Some(DEADLINE)).unwrap();
    let data: Vec<u8> = (0..TOTAL).map(pattern).collect();
    out.write_all(&data).expect("a blocking write failed (the fd is not blocking, or stalled)");
    drop(out);
    assert_eq!(lines.next().unwrap().unwrap(), format!("received={TOTAL} first-bad=-1"));
    assert!(wait_exit(&mut child.0, "seed_peer.py").success());
}

fn content(fd: OwnedFd) -> String {
    let mut f = std::fs::File::from(fd);
    f.rewind().unwrap();
    let mut s = String::new();
    f.read_to_string(&mut s).unwrap();
    s
}

#[test]
fn fds_arrive_with_the_bytes_of_their_message() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fds.sock");
    let lp = EventLoop::spawn().unwrap();
    let reg = Registry::new(lp.handle());
    server(&reg, "s", &path);
    let h = reg.connect("s").unwrap();
    let (tx, rx) = channel();
    h.set_frontend(Acking { handle: h.clone(), tx });
    let mut child = KillOnDrop(
        peer("send_fds.py").args([path.to_str().unwrap(), "1:A", "0:B", "2:C"]).spawn().unwrap(),
    );

    let mut seen = Vec::new();
    loop {
        let (data, fds) = rx.recv_timeout(DEADLINE).unwrap();
        if data == b"<closed>" {
            break;
        }
        let contents: Vec<String> = fds.into_iter().map(content).collect();
        seen.push((String::from_utf8(data).unwrap(), contents));
    }
    assert_eq!(
        seen,
        vec![
            ("A".to_string(), vec!["A#0".to_string()]),
            ("B".to_string(), vec![]),
            ("C".to_string(), vec!["C#0".to_string(), "C#1".to_string()]),
        ]
    );
    assert!(wait_exit(&mut child.0, "send_fds.py").success());
}

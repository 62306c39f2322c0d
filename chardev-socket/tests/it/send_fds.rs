//! Fds from the frontend to the peer (`write_with_fds`): they go with the first byte of the
//! buffer and only there, even when the first sendmsg is partial; the peer can use them and
//! the caller keeps its own.

use std::io::{Read, Seek, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::process::Stdio;

use crate::support::*;
use chardev::{Event, LoopThread, Registry};
use chardev_testkit::*;

fn server(dir: &tempfile::TempDir, name: &str) -> (LoopThread, Registry, std::path::PathBuf) {
    let (lp, reg, _) = setup();
    let path = dir.path().join(name);
    reg.add_str(&format!("socket,id=s,path={},server=on,wait=off", path.display())).unwrap();
    (lp, reg, path)
}

fn pipe() -> (std::fs::File, std::fs::File) {
    // Close-on-exec, so that no other test's child holds it; sendmsg passes it all the same.
    let (r, w): (OwnedFd, OwnedFd) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap();
    (r.into(), w.into())
}

/// Reads from a blocking fd once it has data, failing after the deadline.
fn read_some(f: &mut std::fs::File) -> Vec<u8> {
    assert!(chardev::fd::wait_readable(f.as_fd(), Some(DEADLINE)).unwrap(), "nothing to read");
    let mut buf = [0u8; 256];
    let n = f.read(&mut buf).unwrap();
    buf[..n].to_vec()
}

#[test]
fn fds_go_with_the_first_byte_only_though_the_first_sendmsg_is_partial() {
    const TOTAL: usize = 4 << 20;
    let dir = tempfile::tempdir().unwrap();
    let (_lp, reg, path) = server(&dir, "out.sock");
    let h = reg.connect("s").unwrap();
    let rec = record(&h, 4096);

    let (mut pipe_r, mut pipe_w) = pipe();
    let mut file = tempfile::tempfile().unwrap();
    file.write_all(b"the test's file").unwrap();

    let mut peer = KillOnDrop(
        python()
            .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/peers/recv_fds.py"))
            .args([path.to_str().unwrap(), &TOTAL.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let lines = lines_of(peer.0.stdout.take().unwrap());
    rec.expect_event(Event::Opened);

    let data: Vec<u8> = (0..TOTAL).map(|i| (i % 251) as u8).collect();
    // The peer reads nothing yet: the socket buffer takes only the start of 4 MiB.
    let first = h.write_with_fds(&data, &[pipe_w.as_fd(), file.as_fd()]).unwrap();
    assert!(first > 0 && first < TOTAL, "the first write was not partial: {first} bytes");
    peer.0.stdin.take().unwrap().write_all(b"go\n").unwrap();
    h.write_all(&data[first..]).unwrap();

    let line = || lines.recv_timeout(DEADLINE).expect("the peer said nothing");
    assert_eq!(line(), format!("bytes={TOTAL} first-bad=-1 truncated=False"));
    assert_eq!(line(), "fd-batches=0:2", "the fds came once, with byte 0");
    assert_eq!(line(), "file=the test's file", "the peer read the passed file");
    assert_eq!(read_some(&mut pipe_r), b"written by the peer");
    rec.expect_event(Event::Closed);
    assert!(wait_exit(&mut peer.0, "recv_fds.py").success());

    // The caller's fds were lent, not given: both still work.
    pipe_w.write_all(b"still mine").unwrap();
    assert_eq!(read_some(&mut pipe_r), b"still mine");
    file.rewind().unwrap();
    let mut text = String::new();
    file.read_to_string(&mut text).unwrap();
    assert_eq!(text, "the test's file");
}

#[test]
fn more_than_16_fds_are_refused_before_any_byte_goes() {
    let dir = tempfile::tempdir().unwrap();
    let (_lp, reg, path) = server(&dir, "many.sock");
    let h = reg.connect("s").unwrap();
    let rec = record(&h, 64);
    let mut peer = UnixStream::connect(&path).unwrap();
    peer.set_read_timeout(Some(DEADLINE)).unwrap(); // bounds recv_with_fds below
    rec.expect_event(Event::Opened);

    let file = tempfile::tempfile().unwrap();
    let fds: Vec<OwnedFd> = (0..17).map(|_| chardev::fd::dup(&file).unwrap()).collect();
    let borrowed: Vec<_> = fds.iter().map(|f| f.as_fd()).collect();
    let err = h.write_with_fds(b"refused", &borrowed).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput, "{err}");
    assert!(err.to_string().contains("16"), "{err}");

    // Nothing of the refused write reached the peer: the next bytes are the first it sees.
    h.write_with_fds(b"after", &borrowed[..16]).unwrap();
    let mut buf = [0u8; 5];
    let mut got = Vec::new();
    while got.len() < 5 {
        let r = chardev::fd::recv_with_fds(peer.as_fd(), &mut buf, &mut Vec::new()).unwrap();
        assert!(r.bytes > 0, "the chardev hung up");
        got.extend_from_slice(&buf[..r.bytes]);
    }
    assert_eq!(got, b"after");
    peer.write_all(b"ok").unwrap();
    assert_eq!(rec.data(2), b"ok");
}

#[test]
fn fds_to_a_server_without_a_client_are_not_connected_rather_than_unsupported() {
    let dir = tempfile::tempdir().unwrap();
    let (_lp, reg, _path) = server(&dir, "nobody.sock");
    let h = reg.connect("s").unwrap();
    let file = tempfile::tempfile().unwrap();
    assert!(h.can_pass_fds(), "a unix server can pass fds even before its first client");
    let err = h.write_with_fds(b"x", &[file.as_fd()]).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::NotConnected, "{err}");
}

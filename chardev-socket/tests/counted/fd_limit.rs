//! The 16-fd limit: more fds in one message than a chardev keeps are closed, not leaked.
//! It holds `alone()`, as every test of this binary does, so that the process's fd count is
//! this test's alone.

use std::io::{Read, Seek};
use std::sync::mpsc::channel;

use chardev::{EventLoop, Registry};
use chardev_testkit::*;

#[test]
fn more_than_16_fds_in_one_message_keeps_16_closes_the_rest_and_delivers_the_bytes() {
    let _alone = alone();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("many.sock");
    let lp = EventLoop::spawn().unwrap();
    let reg = Registry::new(lp.handle());
    chardev_socket::register(&reg);
    reg.add_str(&format!("socket,id=s,path={},server=on,wait=off", path.display())).unwrap();
    let h = reg.connect("s").unwrap();
    let (tx, rx) = channel();
    h.set_frontend(Acking { handle: h.clone(), tx });
    let before = open_fds();
    let mut child = KillOnDrop(
        python()
            .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/peers/send_fds.py"))
            .args([path.to_str().unwrap(), "253:M"])
            .spawn()
            .unwrap(),
    );
    let (data, fds) = rx.recv_timeout(DEADLINE).unwrap();
    assert_eq!(data, b"M");
    assert_eq!(fds.len(), 16, "fds kept");
    let mut first = std::fs::File::from(fds.into_iter().next().unwrap());
    first.rewind().unwrap();
    let mut text = String::new();
    first.read_to_string(&mut text).unwrap();
    assert_eq!(text, "M#0");
    drop(first);
    let (closed, _) = rx.recv_timeout(DEADLINE).unwrap();
    assert_eq!(closed, b"<closed>");
    assert!(wait_exit(&mut child.0, "send_fds.py").success());
    wait_until("fds to be closed", || open_fds() <= before);
}

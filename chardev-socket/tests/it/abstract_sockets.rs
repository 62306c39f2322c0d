//! Linux abstract unix socket names (`abstract=on`, `tight=on|off`): a Python peer reaches
//! the server by name, the chardev reaches a std listener by name, the padded and the tight
//! form are different names, and nothing appears on disk.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::AsFd;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixListener};
use std::process::Stdio;

use crate::support::*;
use chardev::Event;
use chardev_testkit::*;

/// `sun_path`'s size on Linux: a `tight=off` name is the name padded with NULs to fill it.
const SUN_PATH: usize = 108;

/// An abstract name that looks like a path in `dir`, so a file made by mistake shows there.
fn name_in(dir: &tempfile::TempDir) -> String {
    dir.path().join("abstract.sock").display().to_string()
}

fn padded(name: &str) -> Vec<u8> {
    let mut bytes = name.as_bytes().to_vec();
    bytes.resize(SUN_PATH - 1, 0);
    bytes
}

fn assert_nothing_on_disk(dir: &tempfile::TempDir) {
    let entries: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert!(entries.is_empty(), "an abstract socket made files: {entries:?}");
}

fn serve_python_peer(tight: bool) {
    let (_lp, reg, dir) = setup();
    let name = name_in(&dir);
    let flag = if tight { "on" } else { "off" };
    reg.add_str(&format!("socket,id=a,path={name},server=on,wait=off,abstract=on,tight={flag}"))
        .unwrap();
    assert!(reg.query()[0].filename.contains(&name), "{}", reg.query()[0].filename);
    let h = reg.connect("a").unwrap();
    let rec = record(&h, 64);
    let mut peer = KillOnDrop(
        python()
            .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/peers/abstract_peer.py"))
            .args([name.as_str(), if tight { "tight" } else { "padded" }])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut lines = BufReader::new(TimedPipe(peer.0.stdout.take().unwrap())).lines();
    rec.expect_event(Event::Opened);
    assert_eq!(rec.data(4), b"ping");
    h.write_all(b"pong").unwrap();
    rec.expect_event(Event::Closed);
    assert_eq!(
        lines.next().unwrap().unwrap(),
        "other-form=refused",
        "the tight and the padded name must be different names"
    );
    assert_eq!(lines.next().unwrap().unwrap(), "got=pong");
    assert!(wait_exit(&mut peer.0, "abstract_peer.py").success());
    assert_nothing_on_disk(&dir);

    // The name lives as long as the chardev's socket: removed, it is free again.
    h.detach();
    reg.remove("a").unwrap();
    let addr = if tight {
        SocketAddr::from_abstract_name(name.as_bytes()).unwrap()
    } else {
        SocketAddr::from_abstract_name(padded(&name)).unwrap()
    };
    UnixListener::bind_addr(&addr).expect("the abstract name is still taken after removal");
}

#[test]
fn a_python_peer_reaches_a_tight_abstract_server() {
    serve_python_peer(true);
}

#[test]
fn a_python_peer_reaches_a_padded_abstract_server_with_tight_off() {
    serve_python_peer(false);
}

fn connect_to_listener(tight: bool) {
    let (_lp, reg, dir) = setup();
    let name = name_in(&dir);
    let bytes = if tight { name.as_bytes().to_vec() } else { padded(&name) };
    let listener =
        UnixListener::bind_addr(&SocketAddr::from_abstract_name(bytes).unwrap()).unwrap();
    let flag = if tight { "on" } else { "off" };
    reg.add_str(&format!("socket,id=c,path={name},abstract=on,tight={flag}")).unwrap();
    let h = reg.connect("c").unwrap();
    let rec = record(&h, 64);
    assert!(
        chardev::fd::wait_readable(listener.as_fd(), Some(DEADLINE)).unwrap(),
        "the chardev did not connect"
    );
    let (mut conn, _) = listener.accept().unwrap();
    conn.set_read_timeout(Some(DEADLINE)).unwrap();
    rec.expect_event(Event::Opened);
    conn.write_all(b"to chardev").unwrap();
    assert_eq!(rec.data(10), b"to chardev");
    h.write_all(b"to listener").unwrap();
    let mut buf = [0u8; 11];
    conn.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"to listener");
    assert_nothing_on_disk(&dir);
}

#[test]
fn a_client_chardev_reaches_a_tight_abstract_listener() {
    connect_to_listener(true);
}

#[test]
fn a_client_chardev_reaches_a_padded_abstract_listener_with_tight_off() {
    connect_to_listener(false);
}

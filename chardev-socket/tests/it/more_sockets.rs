//! Socket corners the first tests leave out: a `to=` port range, an inherited connected
//! `fd=N`, writes without a connection, and a server path left by a crashed server (reused)
//! or held by a live one (refused).

use std::io::{Read, Write};
use std::net::TcpListener;
use std::os::fd::{AsFd, AsRawFd, IntoRawFd};
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::{UnixListener, UnixStream};

use crate::support::*;
use chardev::Event;
use chardev_testkit::*;

/// The port in a `disconnected:tcp:HOST:PORT,server=on` filename.
fn port_in(filename: &str) -> u16 {
    filename
        .trim_end_matches(",server=on")
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no port in {filename}"))
}

fn is_free(port: u16) -> bool {
    TcpListener::bind(("127.0.0.1", port)).is_ok()
}

// ---- to=: a port range -------------------------------------------------------------------

#[test]
fn a_port_range_skips_taken_ports_and_binds_the_next_free_one() {
    let (_lp, reg, _dir) = setup();
    // Take P, and P+1 too if we can, so that the chardev must look further than one port.
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let p = taken.local_addr().unwrap().port();
    assert!(p <= u16::MAX - 5, "ephemeral port {p} too high for a range");
    let also_taken = TcpListener::bind(("127.0.0.1", p + 1)).ok();
    let first_candidate = if also_taken.is_some() { p + 2 } else { p + 1 };

    reg.add_str(&format!("socket,id=r,host=127.0.0.1,port={p},to={},server=on,wait=off", p + 5))
        .unwrap();
    let bound = port_in(&filename(&reg, "r"));
    assert!(
        (first_candidate..=p + 5).contains(&bound),
        "bound {bound}, not in {first_candidate}..={}",
        p + 5
    );
    // Every port it skipped was really taken (by us or by someone else).
    for skipped in first_candidate..bound {
        assert!(!is_free(skipped), "port {skipped} was free but skipped for {bound}");
    }
    // And it serves there.
    let h = reg.connect("r").unwrap();
    let rec = record(&h, 16);
    let mut peer = std::net::TcpStream::connect(("127.0.0.1", bound)).unwrap();
    rec.expect_event(Event::Opened);
    peer.write_all(b"ranged").unwrap();
    assert_eq!(rec.data(6), b"ranged");
    drop(also_taken);
}

#[test]
fn a_port_range_with_every_port_taken_is_an_error_naming_the_address() {
    let (_lp, reg, _dir) = setup();
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let p = taken.local_addr().unwrap().port();
    assert!(p < u16::MAX, "ephemeral port {p} too high for a range");
    let Ok(_next) = TcpListener::bind(("127.0.0.1", p + 1)) else {
        eprintln!("port {} is busy elsewhere; skipped", p + 1);
        return;
    };
    let err = reg
        .add_str(&format!("socket,id=r,host=127.0.0.1,port={p},to={},server=on,wait=off", p + 1))
        .unwrap_err()
        .to_string();
    assert!(err.contains(&format!("127.0.0.1:{p}")) && err.contains("in use"), "{err}");
    assert!(reg.query().is_empty());
}

// ---- fd=N: an inherited connected socket ---------------------------------------------------

/// How many of this process's fds refer to the same socket as `fd` (by its inode link).
fn fds_on_same_socket(fd: impl AsFd) -> usize {
    let target = std::fs::read_link(format!("/proc/self/fd/{}", fd.as_fd().as_raw_fd())).unwrap();
    std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter(|t| *t == target)
        .count()
}

/// The `flags:` line of /proc/self/fdinfo/N (octal open flags, with O_CLOEXEC).
fn fdinfo_flags(n: i32) -> u32 {
    let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{n}")).unwrap();
    let line = info.lines().find(|l| l.starts_with("flags:")).unwrap();
    u32::from_str_radix(line.trim_start_matches("flags:").trim(), 8).unwrap()
}

#[test]
fn an_inherited_connected_socket_carries_data_both_ways_and_is_made_nonblocking() {
    let (lp, reg, _dir) = setup();
    let (ours, mut theirs) = UnixStream::pair().unwrap();
    theirs.set_read_timeout(Some(DEADLINE)).unwrap();
    // A duplicate of the fd we hand over shares its open file description, so it shows
    // the O_NONBLOCK the chardev sets; `theirs` is another description and must not change.
    let kept = ours.try_clone().unwrap();
    assert!(!chardev::fd::is_nonblocking(&kept).unwrap(), "socketpair ends start blocking");
    let n = ours.into_raw_fd();
    reg.add_str(&format!("socket,id=f,fd={n}")).unwrap();
    assert!(chardev::fd::is_nonblocking(&kept).unwrap(), "the chardev left fd {n} blocking");
    assert!(!chardev::fd::is_nonblocking(&theirs).unwrap(), "the other end changed too");
    let flags = fdinfo_flags(n);
    assert_ne!(flags & nix::libc::O_CLOEXEC as u32, 0, "fd {n} would leak into children");
    assert_ne!(flags & nix::libc::O_NONBLOCK as u32, 0);

    let h = reg.connect("f").unwrap();
    assert!(h.can_pass_fds(), "an inherited unix socket can pass fds");
    let rec = record(&h, 64);
    rec.expect_event(Event::Opened);
    theirs.write_all(b"to the chardev").unwrap();
    assert_eq!(rec.data(14), b"to the chardev");
    h.write_all(b"to the test").unwrap();
    let mut buf = [0u8; 11];
    theirs.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"to the test");

    // The chardev owns fd N: the peer's hang-up closes it (only our duplicate is left).
    assert_eq!(fds_on_same_socket(&kept), 2);
    drop(theirs);
    rec.expect_event(Event::Closed);
    settle(lp.handle());
    assert_eq!(fds_on_same_socket(&kept), 1, "fd {n} is still open after Closed");
    assert_eq!(filename(&reg, "f"), format!("disconnected:fd:{n}"));
    let err = h.write(b"gone").unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::NotConnected, "{err}");
}

// ---- writes without a connection ------------------------------------------------------------

#[test]
fn writes_without_a_connection_fail_with_not_connected() {
    let (_lp, reg, dir) = setup();
    let path = dir.path().join("lonely.sock");
    reg.add_str(&format!("socket,id=s,path={},server=on,wait=off", path.display())).unwrap();
    let h = reg.connect("s").unwrap();
    let rec = record(&h, 64);
    let not_connected = |what: &str| {
        let err = h.write(b"x").unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::NotConnected, "{what}: {err}");
        let err = h.write_all(b"x").unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::NotConnected, "{what}: {err}");
        assert!(err.to_string().contains("'s'"), "the error names the chardev: {err}");
    };
    not_connected("before any client");

    let peer = UnixStream::connect(&path).unwrap();
    rec.expect_event(Event::Opened);
    h.write_all(b"ok").unwrap();
    drop(peer);
    rec.expect_event(Event::Closed);
    not_connected("after the client left");

    // A client still trying to reach its server is not connected either.
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    reg.add_str(&format!("socket,id=c,host=127.0.0.1,port={port},reconnect-ms=50")).unwrap();
    let c = reg.connect("c").unwrap();
    let err = c.write(b"x").unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::NotConnected, "{err}");
}

// ---- server=on over an existing socket file ------------------------------------------------

#[test]
fn a_stale_socket_file_left_by_a_crashed_server_is_reused() {
    let (_lp, reg, dir) = setup();
    let path = dir.path().join("stale.sock");
    drop(UnixListener::bind(&path).unwrap());
    assert!(path.exists(), "a dropped std listener leaves its file, like a crash");
    assert!(UnixStream::connect(&path).is_err(), "nobody listens on a stale file");

    reg.add_str(&format!("socket,id=s,path={},server=on,wait=off", path.display())).unwrap();
    let h = reg.connect("s").unwrap();
    let rec = record(&h, 16);
    let mut peer = UnixStream::connect(&path).unwrap();
    rec.expect_event(Event::Opened);
    peer.write_all(b"reused").unwrap();
    assert_eq!(rec.data(6), b"reused");
}

#[test]
fn a_live_servers_socket_is_refused_as_in_use_and_left_alone() {
    let (_lp, reg, dir) = setup();
    let path = dir.path().join("live.sock");
    let live = UnixListener::bind(&path).unwrap();
    let inode = std::fs::metadata(&path).unwrap().ino();

    let err = reg
        .add_str(&format!("socket,id=s,path={},server=on,wait=off", path.display()))
        .unwrap_err();
    assert!(reg.query().is_empty());

    // The live server keeps its file and its clients.
    assert_eq!(std::fs::metadata(&path).unwrap().ino(), inode, "the live socket was replaced");
    live.set_nonblocking(true).unwrap();
    // The chardev's liveness probe (a connect) left a connection in the backlog: take it.
    while live.accept().is_ok() {}
    let mut client = UnixStream::connect(&path).unwrap();
    assert!(chardev::fd::wait_readable(live.as_fd(), Some(DEADLINE)).unwrap());
    let (mut conn, _) = live.accept().unwrap();
    client.write_all(b"still mine").unwrap();
    let mut buf = [0u8; 10];
    conn.set_nonblocking(false).unwrap();
    conn.set_read_timeout(Some(DEADLINE)).unwrap();
    conn.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"still mine");

    // The error tells the user what and where, in the words of EADDRINUSE.
    let text = err.to_string();
    assert_eq!(std::io::Error::from(err).kind(), std::io::ErrorKind::AddrInUse);
    assert!(text.contains(&path.display().to_string()), "the error names the path: {text}");
    assert!(text.to_lowercase().contains("in use"), "the error says 'in use': {text}");
}

#[test]
fn a_server_with_no_host_takes_every_address_of_the_families_allowed() {
    // QEMU resolves an empty host with AI_PASSIVE: 0.0.0.0 and ::, filtered by ipv4=/ipv6=.
    // Resolved only, never bound: tests listen on loopback.
    use chardev_socket::address::inet_addrs;
    let any = |ipv4, ipv6| inet_addrs("", "4444", ipv4, ipv6, true).expect("resolve");
    assert_eq!(any(None, None), vec!["0.0.0.0:4444".parse().unwrap()]);
    assert_eq!(any(Some(true), None), vec!["0.0.0.0:4444".parse().unwrap()]);
    assert_eq!(any(None, Some(true)), vec!["[::]:4444".parse().unwrap()]);
    assert_eq!(any(Some(false), None), vec!["[::]:4444".parse().unwrap()], "ipv4=off alone");
    let client = inet_addrs("", "4444", None, None, false).expect("resolve localhost");
    assert!(client.iter().all(|a| a.ip().is_loopback()), "{client:?}");
}

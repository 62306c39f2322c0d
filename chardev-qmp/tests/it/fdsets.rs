//! Fd sets the way libvirt uses them: a file chardev and a logfile on `/dev/fdset/N`, a
//! virtlogd pipe that must never block the loop, and a socket chardev on a listening socket
//! passed with `getfd`; what the sender sees of its own copies, and what is closed when.

use std::io::Read;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use serde_json::{json, Value};

use crate::support::{Pipe, Server};

/// How many of this process's fds are open on `path`.
fn fds_on(path: &Path) -> usize {
    std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter(|target| target == path)
        .count()
}

fn file_chardev(id: &str, set: i64, append: bool) -> Value {
    json!({"id": id, "backend": {"type": "file",
        "data": {"out": format!("/dev/fdset/{set}"), "append": append}}})
}

fn flags(fd: &OwnedFd) -> nix::fcntl::OFlag {
    let bits = nix::fcntl::fcntl(fd.as_fd(), nix::fcntl::FcntlArg::F_GETFL).unwrap();
    nix::fcntl::OFlag::from_bits_retain(bits)
}

#[test]
fn a_file_chardev_writes_through_a_set_and_the_set_lives_while_it_does() {
    let server = Server::start();
    let mut c = server.client("qmp0");
    let path = server.dir.path().join("console.log");
    std::fs::write(&path, "old contents\n").unwrap();
    let file: OwnedFd = std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(nix::libc::O_NONBLOCK)
        .open(&path)
        .unwrap()
        .into();
    let reply =
        c.cmd_fds("add-fd", json!({"fdset-id": 3, "opaque": "console.log"}), &[file.as_fd()]);
    assert_eq!(reply["return"]["fdset-id"], 3, "{reply}");
    assert_eq!(c.cmd("chardev-add", file_chardev("serial0", 3, true)), json!({"return": {}}));
    // open(2) semantics on the shared description: O_APPEND on, O_NONBLOCK off (the seed).
    assert!(flags(&file).contains(nix::fcntl::OFlag::O_APPEND));
    assert!(!flags(&file).contains(nix::fcntl::OFlag::O_NONBLOCK));

    let guest = server.registry.connect("serial0").unwrap();
    guest.write_all(b"booting\n").unwrap();
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "old contents\nbooting\n");

    // Ours, the set's member and the chardev's duplicate.
    assert_eq!(fds_on(&path), 3);
    // libvirt removes the set at once; the chardev's duplicate keeps it listed, empty.
    assert_eq!(c.cmd("remove-fd", json!({"fdset-id": 3})), json!({"return": {}}));
    assert_eq!(c.cmd("query-fdsets", json!({})), json!({"return": [{"fdset-id": 3, "fds": []}]}));
    assert_eq!(fds_on(&path), 2, "the member is closed; the chardev's duplicate is open");
    guest.write_all(b"still logging\n").unwrap();
    guest.detach();
    assert_eq!(c.cmd("chardev-remove", json!({"id": "serial0"})), json!({"return": {}}));
    assert_eq!(c.cmd("query-fdsets", json!({})), json!({"return": []}));
    assert_eq!(fds_on(&path), 1, "only ours is left");
    drop(file);
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "old contents\nbooting\nstill logging\n");
}

#[test]
fn a_logfile_on_a_set_truncates_unless_logappend() {
    let server = Server::start();
    let mut c = server.client("qmp0");
    let path = server.dir.path().join("serial.log");
    std::fs::write(&path, "previous boot\n").unwrap();
    let log: OwnedFd = std::fs::OpenOptions::new().write(true).open(&path).unwrap().into();
    c.cmd_fds("add-fd", json!({"fdset-id": 0}), &[log.as_fd()]);
    let add = json!({"id": "s", "backend": {"type": "null", "data": {"logfile": "/dev/fdset/0"}}});
    assert_eq!(c.cmd("chardev-add", add), json!({"return": {}}));
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "", "truncated as open(O_TRUNC) would");
    let guest = server.registry.connect("s").unwrap();
    guest.write_all(b"logged\n").unwrap();
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "logged\n");
}

#[test]
fn an_access_mode_no_member_has_is_refused_and_leaves_no_chardev() {
    let server = Server::start();
    let mut c = server.client("qmp0");
    let path = server.dir.path().join("ro");
    std::fs::write(&path, "").unwrap();
    let ro: OwnedFd = std::fs::File::open(&path).unwrap().into();
    c.cmd_fds("add-fd", json!({"fdset-id": 13}), &[ro.as_fd()]);
    let err = c.error("chardev-add", file_chardev("f", 13, false), &[]);
    assert!(
        err.starts_with(
            "Failed to add chardev 'f': Could not open '/dev/fdset/13': Permission denied"
        ),
        "{err}"
    );
    assert!(err.contains("no fd opened O_WRONLY"), "says what is missing: {err}");
    assert_eq!(
        c.cmd("query-chardev", json!({})),
        json!({"return": [
            {"label": "qmp0", "filename": format!("unix:{},server=on", server.path("qmp0").display()), "frontend-open": true}
        ]})
    );
    let err = c.error("chardev-add", file_chardev("f", 99, false), &[]);
    assert!(err.contains("Could not open '/dev/fdset/99': No such file or directory"), "{err}");
}

#[test]
fn a_virtlogd_pipe_never_blocks_the_loop_and_stays_blocking_for_its_sender() {
    let server = Server::start();
    let mut c = server.client("qmp0");
    let pipe = Pipe::new();
    c.cmd_fds("add-fd", json!({"fdset-id": 1}), &[pipe.write.as_fd()]);
    assert_eq!(c.cmd("chardev-add", file_chardev("serial0", 1, true)), json!({"return": {}}));
    let guest = server.registry.connect("serial0").unwrap();
    // Nobody reads the pipe: it fills, and the chardev says so instead of blocking.
    let chunk = [b'x'; 4096];
    let mut written = 0;
    loop {
        match guest.write(&chunk) {
            Ok(n) => written += n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
            Err(e) => panic!("{e}"),
        }
        assert!(written < 64 << 20, "a pipe holds far less than this");
    }
    // The loop still serves the monitor, and the sender's copy is blocking, as it was.
    assert!(c.cmd("query-version", json!({}))["return"].is_object());
    assert!(!chardev::fd::is_nonblocking(&pipe.write).unwrap());
    let mut got = vec![0u8; written];
    let mut read = pipe.read.try_clone().unwrap();
    read.read_exact(&mut got).unwrap();
    assert!(got.iter().all(|&b| b == b'x'));
    guest.detach();
    c.cmd("chardev-remove", json!({"id": "serial0"}));
    c.cmd("remove-fd", json!({"fdset-id": 1}));
    pipe.assert_all_writers_close();
}

#[test]
fn a_socket_chardev_serves_a_listener_passed_with_getfd() {
    let server = Server::start();
    let mut c = server.client("qmp0");
    let path = server.dir.path().join("serial.sock");
    let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
    let reply = c.cmd_fds("getfd", json!({"fdname": "serial0-source"}), &[listener.as_fd()]);
    assert_eq!(reply, json!({"return": {}}));
    drop(listener);
    let add = json!({"id": "serial0", "backend": {"type": "socket", "data": {
        "addr": {"type": "fd", "data": {"str": "serial0-source"}}, "server": true, "wait": false}}});
    assert_eq!(c.cmd("chardev-add", add), json!({"return": {}}));
    let chardevs = c.cmd("query-chardev", json!({}));
    let want = format!("disconnected:unix:{},server=on", path.display());
    assert!(
        chardevs["return"].as_array().unwrap().iter().any(|i| i["filename"] == want.as_str()),
        "{chardevs}"
    );
    // The name was taken by the chardev.
    assert_eq!(
        c.error("closefd", json!({"fdname": "serial0-source"}), &[]),
        "File descriptor named 'serial0-source' not found"
    );
    let guest = server.registry.connect("serial0").unwrap();
    let mut client = std::os::unix::net::UnixStream::connect(&path).unwrap();
    client.set_read_timeout(Some(crate::support::DEADLINE)).unwrap();
    let connected = format!("unix:{},server=on", path.display());
    let deadline = std::time::Instant::now() + crate::support::DEADLINE;
    while !c.cmd("query-chardev", json!({}))["return"]
        .as_array()
        .unwrap()
        .iter()
        .any(|i| i["filename"] == connected.as_str())
    {
        assert!(std::time::Instant::now() < deadline, "the client is accepted");
    }
    guest.write_all(b"login: ").unwrap();
    let mut buf = [0u8; 7];
    client.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"login: ");
}

#[test]
fn a_named_fd_that_cannot_serve_is_closed_and_leaves_no_chardev() {
    let server = Server::start();
    let mut c = server.client("qmp0");
    let socket_add = |name: &str, server: bool| {
        json!({"id": "s", "backend": {"type": "socket", "data": {
            "addr": {"type": "fd", "data": {"str": name}}, "server": server}}})
    };
    // Not a socket.
    let pipe = Pipe::new();
    c.cmd_fds("getfd", json!({"fdname": "p"}), &[pipe.write.as_fd()]);
    let err = c.error("chardev-add", socket_add("p", false), &[]);
    assert_eq!(err, "Failed to add chardev 's': File descriptor 'p' is not a socket");
    pipe.assert_all_writers_close();
    // A connected socket asked to listen.
    let (ours, theirs) = std::os::unix::net::UnixStream::pair().unwrap();
    c.cmd_fds("getfd", json!({"fdname": "conn"}), &[theirs.as_fd()]);
    drop(theirs);
    let err = c.error("chardev-add", socket_add("conn", true), &[]);
    assert!(err.starts_with("Failed to add chardev 's': Failed to listen on fd socket"), "{err}");
    let mut buf = [0u8; 1];
    ours.set_read_timeout(Some(crate::support::DEADLINE)).unwrap();
    assert_eq!((&ours).read(&mut buf).unwrap(), 0, "the passed end is closed: EOF");
    // An unknown name, and a digit string, which is a name over QMP too.
    for name in ["nosuch", "3"] {
        let err = c.error("chardev-add", socket_add(name, false), &[]);
        assert_eq!(
            err,
            format!("Failed to add chardev 's': File descriptor named '{name}' has not been found")
        );
    }
    assert_eq!(c.cmd("query-chardev", json!({}))["return"].as_array().unwrap().len(), 1);
}

//! Socket chardevs against real peers on loopback and unix sockets: socat as client and
//! server, the Debian telnet client, std sockets for the protocol corners.

use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::process::{Command, Stdio};
use std::sync::mpsc::channel;
use std::time::Duration;

use crate::support::*;
use chardev::{BuildNotice, Event, Registry};
use chardev_testkit::*;

/// The port a tcp server bound, from its `disconnected:tcp:HOST:PORT,server=on` filename.
fn bound_port(reg: &Registry, id: &str) -> u16 {
    let f = filename(reg, id);
    let addr = f.trim_end_matches(",server=on");
    addr.rsplit(':').next().unwrap().parse().unwrap_or_else(|_| panic!("no port in {f}"))
}

/// Accepts the next client of `listener`, failing after the deadline.
fn accept_within(listener: &UnixListener) -> (UnixStream, std::os::unix::net::SocketAddr) {
    let ready = chardev::fd::wait_readable(std::os::fd::AsFd::as_fd(listener), Some(DEADLINE));
    assert!(ready.unwrap(), "no client came within {DEADLINE:?}");
    listener.accept().unwrap()
}

/// Reads a child's stdout on a thread until `needle` appears (or the deadline passes).
fn read_until(
    out: impl Read + Send + 'static,
    needle: &'static [u8],
) -> std::sync::mpsc::Receiver<Vec<u8>> {
    let (tx, rx) = channel();
    std::thread::spawn(move || {
        let mut out = out;
        let mut got = Vec::new();
        let mut buf = [0u8; 1024];
        while !got.windows(needle.len()).any(|w| w == needle) {
            match out.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
        let _ = tx.send(got);
    });
    rx
}

#[test]
fn unix_server_with_socat_as_client() {
    require_program("socat", "socat");
    let (_lp, reg, dir) = setup();
    let path = dir.path().join("s.sock");
    reg.add_str(&format!("socket,id=s,path={},server=on,wait=off", path.display())).unwrap();
    assert_eq!(filename(&reg, "s"), format!("disconnected:unix:{},server=on", path.display()));
    let h = reg.connect("s").unwrap();
    let rec = record(&h, 4096);
    let mut socat = KillOnDrop(
        Command::new("socat")
            .args(["-t", "5", "-", &format!("UNIX-CONNECT:{}", path.display())])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    rec.expect_event(Event::Opened);
    assert_eq!(filename(&reg, "s"), format!("unix:{},server=on", path.display()));
    let out = read_until(socat.0.stdout.take().unwrap(), b"welcome\n");
    h.write_all(b"welcome\n").unwrap();
    assert_eq!(out.recv_timeout(DEADLINE).unwrap(), b"welcome\n");
    socat.0.stdin.take().unwrap().write_all(b"hello from socat\n").unwrap();
    assert_eq!(rec.data(17), b"hello from socat\n");
    rec.expect_event(Event::Closed);
    assert_eq!(filename(&reg, "s"), format!("disconnected:unix:{},server=on", path.display()));
    wait_exit(&mut socat.0, "socat");
}

#[test]
fn tcp_server_with_socat_as_client_shows_both_ends_in_its_filename() {
    require_program("socat", "socat");
    let (_lp, reg, _dir) = setup();
    reg.add_str("socket,id=t,host=127.0.0.1,port=0,server=on,wait=off,nodelay=on").unwrap();
    let port = bound_port(&reg, "t");
    assert_eq!(filename(&reg, "t"), format!("disconnected:tcp:127.0.0.1:{port},server=on"));
    let h = reg.connect("t").unwrap();
    let rec = record(&h, 4096);
    let mut socat = KillOnDrop(
        Command::new("socat")
            .args(["-t", "5", "-", &format!("TCP:127.0.0.1:{port}")])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    rec.expect_event(Event::Opened);
    let f = filename(&reg, "t");
    assert!(f.starts_with(&format!("tcp:127.0.0.1:{port},server=on <-> 127.0.0.1:")), "{f}");
    socat.0.stdin.take().unwrap().write_all(b"over tcp").unwrap();
    assert_eq!(rec.data(8), b"over tcp");
    rec.expect_event(Event::Closed);
    wait_exit(&mut socat.0, "socat");
}

#[test]
fn ipv6_filenames_are_bracketed_when_connected() {
    let (_lp, reg, _dir) = setup();
    if std::net::TcpListener::bind("[::1]:0").is_err() {
        eprintln!("no IPv6 loopback here; skipped");
        return;
    }
    reg.add_str("socket,id=t6,host=::1,port=0,server=on,wait=off").unwrap();
    let port = bound_port(&reg, "t6");
    assert_eq!(filename(&reg, "t6"), format!("disconnected:tcp:::1:{port},server=on"));
    let h = reg.connect("t6").unwrap();
    let rec = record(&h, 64);
    let _peer = std::net::TcpStream::connect(("::1", port)).unwrap();
    rec.expect_event(Event::Opened);
    let f = filename(&reg, "t6");
    assert!(f.starts_with(&format!("tcp:[::1]:{port},server=on <-> [::1]:")), "{f}");
}

#[test]
fn unix_client_with_socat_as_server() {
    require_program("socat", "socat");
    let (_lp, reg, dir) = setup();
    let path = dir.path().join("socat.sock");
    let mut socat = KillOnDrop(
        Command::new("socat")
            .args(["-t", "5", &format!("UNIX-LISTEN:{}", path.display()), "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    wait_unix_listening(&path);
    reg.add_str(&format!("socket,id=c,path={}", path.display())).unwrap();
    let h = reg.connect("c").unwrap();
    let rec = record(&h, 4096);
    rec.expect_event(Event::Opened);
    // QEMU 7.2 shows a unix client's own (unnamed) address: just "unix:".
    assert_eq!(filename(&reg, "c"), "unix:");
    let out = read_until(socat.0.stdout.take().unwrap(), b"from chardev");
    h.write_all(b"from chardev").unwrap();
    assert_eq!(out.recv_timeout(DEADLINE).unwrap(), b"from chardev");
    socat.0.stdin.take().unwrap().write_all(b"from socat").unwrap();
    assert_eq!(rec.data(10), b"from socat");
    rec.expect_event(Event::Closed);
    wait_exit(&mut socat.0, "socat");
    // Without reconnect-ms a client stays disconnected, and writes fail instead of vanishing.
    let err = h.write(b"lost?").unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::NotConnected, "{err}");
}

#[test]
fn tcp_client_with_socat_as_server_via_reconnect() {
    require_program("socat", "socat");
    let (_lp, reg, _dir) = setup();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    // The client exists before the server does: reconnect-ms retries until socat listens.
    reg.add_str(&format!("socket,id=c,host=127.0.0.1,port={port},reconnect-ms=50")).unwrap();
    let h = reg.connect("c").unwrap();
    let rec = record(&h, 4096);
    rec.quiet(Duration::from_millis(100));
    assert_eq!(filename(&reg, "c"), format!("disconnected:tcp:127.0.0.1:{port}"));
    let mut socat = KillOnDrop(
        Command::new("socat")
            .args(["-t", "5", &format!("TCP-LISTEN:{port},bind=127.0.0.1,reuseaddr"), "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    rec.expect_event(Event::Opened);
    let f = filename(&reg, "c");
    assert!(
        f.starts_with("tcp:127.0.0.1:") && f.ends_with(&format!(" <-> 127.0.0.1:{port}")),
        "{f}"
    );
    socat.0.stdin.take().unwrap().write_all(b"late server").unwrap();
    assert_eq!(rec.data(11), b"late server");
    rec.expect_event(Event::Closed);
    wait_exit(&mut socat.0, "socat");
}

#[test]
fn telnet_client_against_a_telnet_server() {
    require_program("telnet", "telnet");
    let (_lp, reg, _dir) = setup();
    reg.add_str("socket,id=tel,host=127.0.0.1,port=0,server=on,wait=off,telnet=on").unwrap();
    let port = bound_port(&reg, "tel");
    assert_eq!(filename(&reg, "tel"), format!("disconnected:telnet:127.0.0.1:{port},server=on"));
    let h = reg.connect("tel").unwrap();
    let rec = record(&h, 4096);
    let mut telnet = telnet_client(port);
    rec.expect_event(Event::Opened);
    assert!(filename(&reg, "tel").starts_with("telnet:127.0.0.1:"));
    let out = read_until(telnet.0.stdout.take().unwrap(), b"ready>");
    // 0xFF goes out escaped as IAC IAC and arrives as one byte.
    h.write_all(b"\xffready>").unwrap();
    let shown = out.recv_timeout(DEADLINE).unwrap();
    assert!(shown.windows(7).any(|w| w == b"\xffready>"), "{shown:?}");
    let mut stdin = telnet.0.stdin.take().unwrap();
    stdin.write_all(b"typed\n").unwrap();
    // The client's negotiation replies are filtered out; only the line arrives.
    let mut got = Vec::new();
    while !got.ends_with(b"\n") {
        got.extend(rec.data(1));
    }
    assert!(!got.contains(&0xff), "telnet commands leaked into the data: {got:?}");
    assert_eq!(String::from_utf8_lossy(&got).trim_end(), "typed");
    drop(stdin);
    rec.expect_event(Event::Closed);
    wait_exit(&mut telnet.0, "telnet");
}

#[test]
fn a_second_client_waits_until_the_first_leaves() {
    let (_lp, reg, dir) = setup();
    let path = dir.path().join("one.sock");
    reg.add_str(&format!("socket,id=s,path={},server=on,wait=off", path.display())).unwrap();
    let h = reg.connect("s").unwrap();
    let rec = record(&h, 4096);
    let mut first = UnixStream::connect(&path).unwrap();
    rec.expect_event(Event::Opened);
    let mut second = UnixStream::connect(&path).unwrap(); // accepted by the kernel's backlog
    second.set_read_timeout(Some(DEADLINE)).unwrap();
    second.write_all(b"second").unwrap();
    first.write_all(b"first").unwrap();
    assert_eq!(rec.data(5), b"first");
    rec.quiet(Duration::from_millis(100));
    drop(first);
    rec.expect_event(Event::Closed);
    rec.expect_event(Event::Opened);
    assert_eq!(rec.data(6), b"second");
    h.write_all(b"to second").unwrap();
    let mut buf = [0u8; 9];
    second.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"to second");
}

#[test]
fn data_before_the_hangup_is_delivered_before_closed() {
    // QEMU #1264: the peer writes and closes at once; a slow frontend still gets it all.
    let (_lp, reg, dir) = setup();
    let path = dir.path().join("hup.sock");
    reg.add_str(&format!("socket,id=s,path={},server=on,wait=off", path.display())).unwrap();
    let h = reg.connect("s").unwrap();
    let rec = record(&h, 7);
    let data: Vec<u8> = (0..200_000u32).map(|i| (i % 253) as u8).collect();
    let writer = std::thread::spawn({
        let (path, data) = (path.clone(), data.clone());
        move || {
            let mut peer = UnixStream::connect(path).unwrap();
            peer.write_all(&data).unwrap();
        }
    });
    rec.expect_event(Event::Opened);
    assert_eq!(rec.data(data.len()), data);
    rec.expect_event(Event::Closed);
    writer.join().unwrap();
}

#[test]
fn a_hangup_reported_with_the_last_data_still_closes_after_a_short_read() {
    // The peer's data and its hang-up reach the loop in one readiness event while the
    // frontend takes nothing; the short read that follows must not be taken for "empty, wait
    // for the next edge": no edge comes after a hang-up, and Closed would be lost.
    let (lp, reg, dir) = setup();
    let path = dir.path().join("short.sock");
    reg.add_str(&format!("socket,id=s,path={},server=on,wait=off", path.display())).unwrap();
    let h = reg.connect("s").unwrap();
    let rec = record(&h, 0);
    let mut peer = connect_unix(&path);
    rec.expect_event(Event::Opened);
    peer.write_all(b"hello").unwrap();
    drop(peer);
    settle(lp.handle());
    rec.room.store(4096, std::sync::atomic::Ordering::SeqCst);
    h.accept_input();
    assert_eq!(rec.data(5), b"hello");
    rec.expect_event(Event::Closed);
}

#[test]
fn a_client_reconnects_after_its_server_drops_it() {
    let (_lp, reg, dir) = setup();
    let path = dir.path().join("late.sock");
    reg.add_str(&format!("socket,id=c,path={},reconnect-ms=20", path.display())).unwrap();
    let h = reg.connect("c").unwrap();
    let rec = record(&h, 64);
    let listener = UnixListener::bind(&path).unwrap();
    let (conn, _) = accept_within(&listener);
    rec.expect_event(Event::Opened);
    drop(conn);
    rec.expect_event(Event::Closed);
    let (mut conn, _) = accept_within(&listener);
    rec.expect_event(Event::Opened);
    conn.write_all(b"again").unwrap();
    assert_eq!(rec.data(5), b"again");
}

#[test]
fn disconnect_from_the_frontend_lets_the_server_take_the_next_client() {
    let (_lp, reg, dir) = setup();
    let path = dir.path().join("d.sock");
    reg.add_str(&format!("socket,id=s,path={},server=on,wait=off", path.display())).unwrap();
    let h = reg.connect("s").unwrap();
    let rec = record(&h, 64);
    let mut first = UnixStream::connect(&path).unwrap();
    first.set_read_timeout(Some(DEADLINE)).unwrap();
    rec.expect_event(Event::Opened);
    h.disconnect();
    rec.expect_event(Event::Closed);
    let mut buf = [0u8; 1];
    assert_eq!(first.read(&mut buf).unwrap(), 0, "the client sees the hang-up");
    let _second = UnixStream::connect(&path).unwrap();
    rec.expect_event(Event::Opened);
}

#[test]
fn fds_on_tcp_are_refused_and_the_socket_file_goes_with_the_chardev() {
    let (_lp, reg, dir) = setup();
    reg.add_str("socket,id=t,host=127.0.0.1,port=0,server=on,wait=off").unwrap();
    let h = reg.connect("t").unwrap();
    assert!(!h.can_pass_fds());
    let f = tempfile::tempfile().unwrap();
    let err = h.write_with_fds(b"x", &[std::os::fd::AsFd::as_fd(&f)]).unwrap_err();
    assert!(err.to_string().contains("does not support fd passing"), "{err}");
    h.detach();

    let path = dir.path().join("gone.sock");
    reg.add_str(&format!("socket,id=u,path={},server=on,wait=off", path.display())).unwrap();
    assert!(reg.connect("u").unwrap().can_pass_fds());
    reg.remove_forced("u").unwrap();
    assert!(!path.exists(), "the server's socket file is removed with it");
}

#[test]
fn wait_on_blocks_creation_until_the_first_client() {
    let (_lp, reg, dir) = setup();
    let path = dir.path().join("w.sock");
    // add_str waits in accept(): on a thread, so that a server that never takes its client
    // fails the test instead of hanging it.
    let (added_tx, added) = channel();
    std::thread::spawn({
        let (reg, spec) = (reg.clone(), format!("socket,id=w,path={},server=on", path.display()));
        move || {
            let _ = added_tx.send(reg.add_str(&spec).map_err(|e| e.to_string()));
        }
    });
    let mut peer = connect_unix(&path);
    added.recv_timeout(DEADLINE).expect("add_str still waits with its client in").unwrap();
    // add_str returned: the client is already in.
    assert_eq!(filename(&reg, "w"), format!("unix:{},server=on", path.display()));
    let h = reg.connect("w").unwrap();
    let rec = record(&h, 8);
    rec.expect_event(Event::Opened);
    peer.write_all(b"hi").unwrap();
    assert_eq!(rec.data(2), b"hi");
}

#[test]
fn a_waiting_server_tells_the_embedder_before_it_waits() {
    let (_lp, reg, dir) = setup();
    let path = dir.path().join("w.sock");
    let (notice_tx, notices) = channel();
    reg.on_build_notice(move |notice| {
        let _ = notice_tx.send(notice.clone());
    });
    let (added_tx, added) = channel();
    std::thread::spawn({
        let (reg, spec) = (reg.clone(), format!("socket,id=w,path={},server=on", path.display()));
        move || {
            let _ = added_tx.send(reg.add_str(&spec).map_err(|e| e.to_string()));
        }
    });
    let notice = notices.recv_timeout(DEADLINE).expect("no notice before the wait");
    let filename = format!("disconnected:unix:{},server=on", path.display());
    assert_eq!(notice, BuildNotice::WaitingForClient { id: "w".into(), filename });
    // Told before the wait, not after: no client has come, so the add is still waiting.
    assert!(added.try_recv().is_err(), "add_str returned without a client");
    let _peer = connect_unix(&path);
    added.recv_timeout(DEADLINE).expect("add_str still waits with its client in").unwrap();
    // A server that does not wait has nothing to report.
    reg.add_str(&format!(
        "socket,id=nw,path={},server=on,wait=off",
        dir.path().join("nw").display()
    ))
    .unwrap();
    assert!(notices.try_recv().is_err(), "a wait=off server reported waiting");
}

#[test]
fn bad_addresses_are_clear_errors_that_name_what_is_wrong() {
    let (_lp, reg, dir) = setup();
    let long = format!("{}/{}", dir.path().display(), "x".repeat(120));
    let err = reg
        .add_str(&format!("socket,id=a,path={long},server=on,wait=off"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("path") && err.contains("longer than"), "{err}");

    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let err = reg
        .add_str(&format!("socket,id=b,host=127.0.0.1,port={port},server=on,wait=off"))
        .unwrap_err()
        .to_string();
    assert!(err.contains(&format!("127.0.0.1:{port}")) && err.contains("in use"), "{err}");

    let missing = dir.path().join("no/such/dir.sock");
    let err = reg
        .add_str(&format!("socket,id=c,path={},server=on,wait=off", missing.display()))
        .unwrap_err()
        .to_string();
    assert!(err.contains(&missing.display().to_string()) && err.contains("No such file"), "{err}");

    let regular = dir.path().join("precious.txt");
    std::fs::write(&regular, b"keep me").unwrap();
    let err = reg
        .add_str(&format!("socket,id=d,path={},server=on,wait=off", regular.display()))
        .unwrap_err()
        .to_string();
    assert!(err.contains("is not a socket") && err.contains("precious.txt"), "{err}");
    assert_eq!(std::fs::read(&regular).unwrap(), b"keep me", "QEMU would have unlinked it");

    let file = tempfile::tempfile().unwrap();
    let n = std::os::fd::IntoRawFd::into_raw_fd(file);
    let err = reg.add_str(&format!("socket,id=e,fd={n}")).unwrap_err().to_string();
    assert!(err.contains(&format!("File descriptor '{n}' is not a socket")), "{err}");

    let err = reg
        .add_str(&format!("socket,id=f,path={}", dir.path().join("nobody.sock").display()))
        .unwrap_err()
        .to_string();
    assert!(err.contains("nobody.sock") && err.contains("No such file"), "{err}");
    assert!(reg.query().is_empty(), "nothing was created: {:?}", reg.query());
}

#[test]
fn an_inherited_listening_fd_is_served() {
    let (_lp, reg, dir) = setup();
    let path = dir.path().join("inherited.sock");
    let listener = UnixListener::bind(&path).unwrap();
    let n = std::os::fd::IntoRawFd::into_raw_fd(listener);
    reg.add_str(&format!("socket,id=i,fd={n},server=on,wait=off")).unwrap();
    // QEMU 7.2 names a passed listener by the address it is bound to.
    assert_eq!(filename(&reg, "i"), format!("disconnected:unix:{},server=on", path.display()));
    let h = reg.connect("i").unwrap();
    let rec = record(&h, 8);
    let mut peer = UnixStream::connect(&path).unwrap();
    rec.expect_event(Event::Opened);
    peer.write_all(b"fd").unwrap();
    assert_eq!(rec.data(2), b"fd");
}

#[test]
fn a_host_with_one_bracket_and_a_path_with_a_nul_are_refused_for_what_they_are() {
    let (_lp, reg, _dir) = setup();
    // QEMU 7.2: "address resolution failed for [::1:45001"; it never binds ::1.
    let err = reg.add_str("socket,id=s,host=[::1,port=0,server=on,wait=off").unwrap_err();
    assert!(err.to_string().contains("has '[' without the closing ']'"), "{err}");
    let err = reg.add_str("socket,id=s,host=::1],port=0,server=on,wait=off").unwrap_err();
    assert!(err.to_string().contains("without the opening '['"), "{err}");
    let spec = chardev::ChardevSpec {
        id: "n".into(),
        backend: chardev::BackendSpec::Socket(chardev::options::SocketSpec {
            addr: chardev::options::SocketAddrSpec::Unix {
                path: "/tmp/a\0b".into(),
                abstract_: false,
                tight: true,
            },
            ..chardev::ChardevSpec::parse("socket,id=x,path=/tmp/x,server=on,wait=off")
                .map(|s| match s.backend {
                    chardev::BackendSpec::Socket(s) => s,
                    _ => unreachable!(),
                })
                .unwrap()
        }),
        mux: false,
        log: None,
        overflow: Default::default(),
    };
    let err = reg.add(&spec).unwrap_err();
    assert!(err.to_string().contains("contains a NUL byte"), "{err}");
    assert!(reg.query().is_empty());
}

/// A unix socket server `id` with a logfile, both in `dir`: (socket path, log path).
fn logged_server(
    reg: &Registry,
    dir: &std::path::Path,
    id: &str,
) -> (std::path::PathBuf, std::path::PathBuf) {
    let (path, log) = (dir.join(format!("{id}.sock")), dir.join(format!("{id}.log")));
    let spec = format!(
        "socket,id={id},path={},server=on,wait=off,logfile={}",
        path.display(),
        log.display()
    );
    reg.add_str(&spec).unwrap();
    (path, log)
}

/// Output refused for want of a client goes to the logfile at once from `write` (a guest's
/// frontend drops it, and QEMU logs it), but not from `write_retrying` (a relay keeps it and
/// writes it again): that is logged once, when it is written.
#[test]
fn refused_output_is_logged_at_once_unless_the_frontend_will_write_it_again() {
    let (_lp, reg, dir) = setup();
    let (path, log) = logged_server(&reg, dir.path(), "s");
    let h = reg.connect("s").unwrap();
    let rec = record(&h, 4096);
    let err = h.write(b"dropped\n").unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::NotConnected, "{err}");
    let err = h.write_retrying(b"kept\n", &[]).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::NotConnected, "{err}");
    let mut peer = TimedPipe(UnixStream::connect(&path).unwrap());
    rec.expect_event(Event::Opened);
    assert_eq!(h.write_retrying(b"kept\n", &[]).unwrap(), 5);
    let mut got = [0u8; 5];
    peer.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"kept\n");
    // Removal writes what the log still queues and closes it.
    reg.remove_forced("s").unwrap();
    assert_eq!(String::from_utf8_lossy(&std::fs::read(&log).unwrap()), "dropped\nkept\n");
}

/// A hub's history, replayed to a member's new client, is not logged again by the member:
/// its logfile holds each byte of the hub's output once however often clients come.
#[test]
fn a_hub_members_log_holds_the_output_once_though_history_is_replayed_to_each_client() {
    let (_lp, reg, dir) = setup();
    let (path, log) = logged_server(&reg, dir.path(), "m");
    reg.add_str("ringbuf,id=r,size=1024").unwrap();
    reg.add_str("hub,id=h,chardevs.0=m,chardevs.1=r,history=1k").unwrap();
    let h = reg.connect("h").unwrap();
    let _rec = record(&h, 4096);
    h.write_all(b"before any client\n").unwrap();
    let mut want = b"before any client\n".to_vec();
    for round in 0..2 {
        let mut client = TimedPipe(UnixStream::connect(&path).unwrap());
        let live = format!("live {round}\n");
        // The history first (everything so far), then the live line.
        let mut got = vec![0u8; want.len()];
        client.read_exact(&mut got).unwrap();
        assert_eq!(got, want);
        h.write_all(live.as_bytes()).unwrap();
        let mut got = vec![0u8; live.len()];
        client.read_exact(&mut got).unwrap();
        assert_eq!(got, live.as_bytes());
        want.extend_from_slice(live.as_bytes());
        // The next client is accepted once the member has seen this one go.
        drop(client);
    }
    reg.remove_forced("h").unwrap();
    reg.remove_forced("m").unwrap();
    assert_eq!(
        String::from_utf8_lossy(&std::fs::read(&log).unwrap()),
        String::from_utf8_lossy(&want)
    );
}

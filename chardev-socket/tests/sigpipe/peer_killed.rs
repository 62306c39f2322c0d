//! A peer SIGKILLed while the frontend is `write_all`'ing into it: the write fails with an
//! error instead of hanging, the process survives without ignoring SIGPIPE, `Closed` comes
//! once, and the server takes the next client. In a test binary of its own because it sets
//! SIGPIPE back to its default action (the Rust runtime ignores it), for the whole process.

use std::io::{BufRead, BufReader};
use std::process::{Child, Stdio};
use std::sync::mpsc::channel;

use chardev::{Event, EventLoop, FrontendHandle, Registry};
use chardev_testkit::*;

/// Makes a write to a vanished peer kill the process, as it would in a C program, unless the
/// library suppresses SIGPIPE itself (MSG_NOSIGNAL).
fn default_sigpipe() {
    use nix::sys::signal::{signal, SigHandler, Signal};
    // SAFETY: installs the default disposition, no handler code; every test in this binary
    // wants the same disposition, so concurrent calls agree.
    unsafe { signal(Signal::SIGPIPE, SigHandler::SigDfl) }.unwrap();
}

/// Kills the peer when the test ends early.
struct Peer(Child);

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn kill_the_peer_mid_transfer<S>(
    reg: &Registry,
    id: &str,
    address: &str,
    next_client: impl FnOnce() -> S,
) {
    let h = reg.connect(id).unwrap();
    let rec = record(&h, 64);
    let mut peer = Peer(
        python()
            .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/peers/stalled_reader.py"))
            .arg(address)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut lines = BufReader::new(TimedPipe(peer.0.stdout.take().unwrap())).lines();
    rec.expect_event(Event::Opened);

    let (done_tx, done) = channel();
    let writer: FrontendHandle = h.clone();
    std::thread::spawn(move || {
        let data = vec![0x5a_u8; 64 << 20];
        let _ = done_tx.send(writer.write_all(&data));
    });
    // The peer read 64 KiB and stopped: the writer now waits on a full socket.
    assert_eq!(lines.next().unwrap().unwrap(), "stalled");
    assert!(done.try_recv().is_err(), "64 MiB cannot have fitted into the socket");

    peer.0.kill().unwrap();
    wait_exit(&mut peer.0, "the killed stalled_reader.py");
    let result = done.recv_timeout(DEADLINE).expect("write_all still waits for a dead peer");
    let err = result.expect_err("write_all into a killed peer succeeded");
    // Which error depends on who sees the death first: the write (EPIPE, ECONNRESET) or
    // the loop, which closes the connection, after which writes are NotConnected.
    use std::io::ErrorKind::{BrokenPipe, ConnectionReset, NotConnected};
    assert!(matches!(err.kind(), BrokenPipe | ConnectionReset | NotConnected), "{err:?}");

    rec.expect_event(Event::Closed);
    settle(reg.loop_handle());
    rec.nothing_yet();

    // Still serving.
    let _next = next_client();
    rec.expect_event(Event::Opened);
}

#[test]
fn a_unix_peer_killed_mid_write_all_fails_the_write_and_closes_once() {
    default_sigpipe();
    let lp = EventLoop::spawn().unwrap();
    let reg = Registry::new(lp.handle());
    chardev_socket::register(&reg);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("victim.sock");
    reg.add_str(&format!("socket,id=s,path={},server=on,wait=off", path.display())).unwrap();
    kill_the_peer_mid_transfer(&reg, "s", &format!("unix:{}", path.display()), || {
        std::os::unix::net::UnixStream::connect(&path).unwrap()
    });
}

#[test]
fn a_tcp_peer_killed_mid_write_all_fails_the_write_and_closes_once() {
    default_sigpipe();
    let lp = EventLoop::spawn().unwrap();
    let reg = Registry::new(lp.handle());
    chardev_socket::register(&reg);
    reg.add_str("socket,id=t,host=127.0.0.1,port=0,server=on,wait=off").unwrap();
    let filename = reg.query()[0].filename.clone();
    let port: u16 =
        filename.trim_end_matches(",server=on").rsplit(':').next().unwrap().parse().unwrap();
    kill_the_peer_mid_transfer(&reg, "t", &format!("tcp:{port}"), || {
        std::net::TcpStream::connect(("127.0.0.1", port)).unwrap()
    });
}

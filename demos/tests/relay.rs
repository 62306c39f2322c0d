//! chardev-relay against real peers: socat on both sides with checksummed transfers in both
//! directions at once, a stalled reader that must slow the writer without the relay
//! buffering the difference, and fds passed through from one unix socket to the other.

#[path = "../../chardev/tests/common/mod.rs"]
mod common;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::KillOnDrop as Relay;
use common::*;

const BIN: &str = env!("CARGO_BIN_EXE_chardev-relay");

fn relay(a: &str, b: &str) -> Relay {
    Relay(Command::new(BIN).args([a, b]).stdin(Stdio::null()).spawn().unwrap())
}

fn data(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn server(dir: &std::path::Path, name: &str) -> (std::path::PathBuf, String) {
    let path = dir.join(name);
    let spec = format!("socket,path={},server=on,wait=off", path.display());
    (path, spec)
}

#[test]
fn socat_in_socat_out_checksummed_and_everything_arrives_before_the_relay_ends() {
    let dir = tempfile::tempdir().unwrap();
    let (pa, sa) = server(dir.path(), "a.sock");
    let (pb, sb) = server(dir.path(), "b.sock");
    let mut r = relay(&sa, &sb);
    let payload = data(32 << 20, 1);
    let input = dir.path().join("in");
    std::fs::write(&input, &payload).unwrap();
    let output = dir.path().join("out");
    // Not connect_unix: a probe connection would be the relay's client for good.
    wait_unix_listening(&pa);
    wait_unix_listening(&pb);
    let mut receiver = KillOnDrop(
        Command::new("socat")
            .args([
                "-u",
                &format!("UNIX-CONNECT:{}", pb.display()),
                &format!("CREATE:{}", output.display()),
            ])
            .spawn()
            .unwrap(),
    );
    let mut sender = KillOnDrop(
        Command::new("socat")
            .args([
                "-u",
                &format!("OPEN:{},rdonly", input.display()),
                &format!("UNIX-CONNECT:{}", pa.display()),
            ])
            .spawn()
            .unwrap(),
    );
    assert!(wait_exit(&mut sender.0, "the sending socat").success());
    // The sender's close ends the relay, after the last byte went on to the receiver.
    assert!(
        wait_exit(&mut r.0, "the relay").success(),
        "the relay ends cleanly when a side closes"
    );
    assert!(wait_exit(&mut receiver.0, "the receiving socat").success());
    assert!(std::fs::read(&output).unwrap() == payload, "a -> b differs");
}

#[test]
fn both_directions_at_once_checksummed() {
    let dir = tempfile::tempdir().unwrap();
    let (pa, sa) = server(dir.path(), "a.sock");
    let (pb, sb) = server(dir.path(), "b.sock");
    let _r = relay(&sa, &sb);
    let (mut a, mut b) = (connect_unix(&pa), connect_unix(&pb));
    let (to_b, to_a) = (data(16 << 20, 2), data(16 << 20, 3));
    let exchange = |mut me: UnixStream, send: Vec<u8>, len: usize| {
        std::thread::spawn(move || {
            let mut writer = me.try_clone().unwrap();
            let w = std::thread::spawn(move || writer.write_all(&send).unwrap());
            let mut got = vec![0u8; len];
            me.read_exact(&mut got).unwrap();
            w.join().unwrap();
            got
        })
    };
    let ta = exchange(a.try_clone().unwrap(), to_b.clone(), to_a.len());
    let tb = exchange(b.try_clone().unwrap(), to_a.clone(), to_b.len());
    assert!(ta.join().unwrap() == to_a, "b -> a differs");
    assert!(tb.join().unwrap() == to_b, "a -> b differs");
    let _ = (a.flush(), b.flush());
}

#[test]
fn a_stalled_reader_slows_the_writer_and_nothing_is_lost() {
    let dir = tempfile::tempdir().unwrap();
    let (pa, sa) = server(dir.path(), "a.sock");
    let (pb, sb) = server(dir.path(), "b.sock");
    let r = relay(&sa, &sb);
    let mut writer = connect_unix(&pa);
    let mut reader = connect_unix(&pb);
    let payload = data(64 << 20, 3);
    writer.set_nonblocking(true).unwrap();
    // Write until the whole chain is full: the reader reads nothing yet.
    let mut sent = 0;
    loop {
        match writer.write(&payload[sent..]) {
            Ok(n) => sent += n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                // Full for 200 ms on end: the chain is stalled, not just slow.
                if !chardev::fd::wait_writable(
                    std::os::fd::AsFd::as_fd(&writer),
                    Some(Duration::from_millis(200)),
                )
                .unwrap()
                {
                    break;
                }
            }
            Err(e) => panic!("{e}"),
        }
        assert!(sent < payload.len(), "the relay swallowed all 64 MiB with nobody reading");
    }
    // Kernel buffers on both sockets plus one relay read of 1 MiB: far below 64 MiB.
    assert!(sent < 16 << 20, "the relay buffered {sent} bytes for a stalled reader");
    let rss = std::fs::read_to_string(format!("/proc/{}/status", r.0.id())).unwrap();
    let vm_rss: u64 = rss
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .unwrap()
        .split_whitespace()
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    assert!(vm_rss < 64 * 1024, "relay RSS {vm_rss} kB while stalled");
    // Now read everything: the writer finishes, every byte arrives in order.
    let feeder = std::thread::spawn(move || {
        writer.set_nonblocking(false).unwrap();
        writer.write_all(&payload[sent..]).unwrap();
        payload
    });
    let mut got = vec![0u8; 64 << 20];
    reader.read_exact(&mut got).unwrap();
    let payload = feeder.join().unwrap();
    assert!(got == payload, "data differs after the stall");
}

#[test]
fn fds_pass_through_from_one_unix_socket_to_the_other() {
    let dir = tempfile::tempdir().unwrap();
    let (pa, sa) = server(dir.path(), "a.sock");
    let (pb, sb) = server(dir.path(), "b.sock");
    let _r = relay(&sa, &sb);
    wait_until("the relay's sockets", || pa.exists() && pb.exists());
    let out = output_within(
        python()
            .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/peers/fd_relay_peer.py"))
            .args([&pa, &pb]),
        "fd_relay_peer.py",
    );
    assert_said_ok(&out);
}

#[test]
fn usage_errors() {
    let out = output_within(Command::new(BIN).arg("null"), "chardev-relay null");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("two chardevs are needed, 1 given"));
    let out = output_within(Command::new(BIN).args(["bogus,x=1", "null"]), "chardev-relay bogus");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("bogus"));
}

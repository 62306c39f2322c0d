//! Hostile websocket clients against a human monitor on a `websocket=on` chardev, run
//! against QEMU 7.2 and `serial-console` in the same test: a client that pings without ever
//! reading the pongs (issue 15, point 4), and a queued client whose handshake fails in front
//! of a good one (point 5). A QMP monitor on a unix socket is the bystander that must keep
//! answering, and it tells the tests the websocket's port.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use chardev_testkit::*;
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_serial-console");
const QEMU: &str = "qemu-system-x86_64";
const MIB: u64 = 1 << 20;

/// A QMP connection, past negotiation.
struct Qmp {
    out: UnixStream,
    input: BufReader<UnixStream>,
}

impl Qmp {
    fn connect(path: &Path) -> Qmp {
        let s = UnixStream::connect(path).unwrap();
        s.set_read_timeout(Some(DEADLINE)).unwrap();
        let mut q = Qmp { out: s.try_clone().unwrap(), input: BufReader::new(s) };
        assert!(q.line().get("QMP").is_some(), "greeting");
        q.call("qmp_capabilities");
        q
    }

    fn line(&mut self) -> Value {
        let mut line = String::new();
        assert!(self.input.read_line(&mut line).expect("QMP answers in time") > 0, "QMP hung up");
        serde_json::from_str(line.trim_end()).unwrap()
    }

    fn call(&mut self, command: &str) -> Value {
        writeln!(self.out, r#"{{"execute": "{command}"}}"#).unwrap();
        loop {
            let v = self.line();
            if v.get("event").is_none() {
                return v.get("return").cloned().unwrap_or_else(|| panic!("{command}: {v}"));
            }
        }
    }

    /// The tcp port of chardev `id`, from its `disconnected:websocket:HOST:PORT,server=on`.
    fn port(&mut self, id: &str) -> u16 {
        let list = self.call("query-chardev");
        let info = list.as_array().unwrap().iter().find(|c| c["label"] == id).unwrap();
        let filename = info["filename"].as_str().unwrap();
        let hostport = filename.split(',').next().unwrap();
        hostport.rsplit(':').next().unwrap().parse().unwrap_or_else(|_| panic!("{filename}"))
    }
}

/// `program` with a human monitor on websocket chardev `ws` and QMP on `DIR/q.sock`.
fn start(program: &str, dir: &Path) -> (KillOnDrop, Qmp, u16) {
    std::fs::create_dir_all(dir).unwrap();
    let sock = dir.join("q.sock");
    let child = Command::new(program)
        .args(["-machine", "none", "-nodefaults", "-display", "none", "-qmp"])
        .arg(format!("unix:{},server=on,wait=off", sock.display()))
        .args([
            "-chardev",
            "socket,id=ws,host=127.0.0.1,port=0,server=on,wait=off,websocket=on",
            "-mon",
            "chardev=ws,mode=readline",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("cannot run {program}: {e} (for QEMU: apt-get install qemu-system-x86)")
        });
    let target = KillOnDrop(child);
    wait_until("the QMP socket to listen", || UnixStream::connect(&sock).is_ok());
    let mut qmp = Qmp::connect(&sock);
    let port = qmp.port("ws");
    (target, qmp, port)
}

/// Opens a websocket by hand (RFC 6455's example key) and reads the 101 response.
fn handshake(port: u16) -> TcpStream {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(DEADLINE)).unwrap();
    write!(
        s,
        "GET / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
         Sec-WebSocket-Protocol: binary\r\n\r\n"
    )
    .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let n = s.read(&mut byte).expect("a handshake response in time");
        assert_eq!(n, 1, "closed during the handshake: {:?}", String::from_utf8_lossy(&head));
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head);
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    s
}

/// A masked client frame (the mask is zero, so the payload goes as is).
fn frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    assert!(payload.len() < 126);
    let mut f = vec![0x80 | opcode, 0x80 | payload.len() as u8, 0, 0, 0, 0];
    f.extend_from_slice(payload);
    f
}

fn vm_rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap() * 1024
}

/// What a client that pings and never reads did to `program`.
struct PingFlood {
    /// Bytes of pings the target took before it stopped reading (or all of them).
    taken: usize,
    rss_growth: u64,
    /// A ping sent once the client reads again was answered.
    resumed: bool,
}

/// Sends up to `pings` pings of 125 bytes without reading anything, until the target has
/// taken them all or takes nothing for 2 s; checks that the bystander QMP monitor answers
/// throughout, and whether the connection still works once the client reads again.
fn ping_flood(program: &str, dir: &Path, pings: usize) -> PingFlood {
    let (target, mut qmp, port) = start(program, dir);
    let pid = target.0.id();
    let mut ws = handshake(port);
    let before = vm_rss(pid);
    let one = frame(0x9, &[b'p'; 125]);
    let batch: Vec<u8> = one.iter().copied().cycle().take(one.len() * 500).collect();
    ws.set_write_timeout(Some(Duration::from_secs(2))).unwrap();
    let mut taken = 0;
    let mut peak = before;
    while taken < pings * one.len() {
        // Go on from where a short write stopped, mid-frame as it may be.
        match ws.write(&batch[taken % batch.len()..]) {
            Ok(n) => taken += n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => break,
            Err(e) => panic!("{program}: the flooding client lost its connection: {e}"),
        }
        if taken % (one.len() * 50_000) < batch.len() {
            peak = peak.max(vm_rss(pid));
            assert!(qmp.call("query-status")["status"].is_string(), "{program}");
        }
    }
    peak = peak.max(vm_rss(pid));
    assert!(qmp.call("query-status")["status"].is_string(), "{program}");

    // A partial frame may be on the wire: finish it, then ping with a payload of our own
    // and read until its pong, proving the connection was paused, not wedged.
    ws.set_write_timeout(Some(DEADLINE)).unwrap();
    let (reader, mut writer) = (ws.try_clone().unwrap(), ws);
    let tail = (one.len() - taken % one.len()) % one.len();
    let waiter = std::thread::spawn(move || pong_with(reader, b"last"));
    writer.write_all(&one[one.len() - tail..]).unwrap();
    writer.write_all(&frame(0x9, b"last")).unwrap();
    let resumed = waiter.join().unwrap();
    drop(target);
    PingFlood { taken, rss_growth: peak.saturating_sub(before), resumed }
}

/// Reads server frames until a pong carrying `payload`; false if the connection ends first.
fn pong_with(s: TcpStream, payload: &[u8]) -> bool {
    let mut r = BufReader::with_capacity(1 << 16, s);
    let mut seen = [0usize; 16];
    loop {
        let mut head = [0u8; 2];
        if let Err(e) = r.read_exact(&mut head) {
            eprintln!("frames by opcode before the end ({e}): {seen:?}");
            return false;
        }
        seen[(head[0] & 0xf) as usize] += 1;
        let len = match head[1] & 0x7f {
            126 => {
                let mut l = [0u8; 2];
                r.read_exact(&mut l).unwrap();
                u16::from_be_bytes(l) as usize
            }
            127 => {
                let mut l = [0u8; 8];
                r.read_exact(&mut l).unwrap();
                u64::from_be_bytes(l) as usize
            }
            n => n as usize,
        };
        let mut body = vec![0u8; len];
        r.read_exact(&mut body).unwrap();
        if head[0] & 0x0f == 0xA && body == payload {
            return true;
        }
    }
}

#[test]
fn a_client_that_pings_and_never_reads_the_pongs_gets_bounded_memory_as_in_qemu() {
    require_program("qemu-system-x86_64", "qemu-system-x86");
    let dir = tempfile::tempdir().unwrap();
    let pings = 500_000;
    let qemu = ping_flood(QEMU, &dir.path().join("qemu"), pings);
    let ours = ping_flood(BIN, &dir.path().join("ours"), pings);
    eprintln!(
        "{pings} pings unread: QEMU took {} bytes, +{} KiB RSS, answered after: {}; \
         serial-console took {} bytes, +{} KiB RSS, answered after: {}",
        qemu.taken,
        qemu.rss_growth / 1024,
        qemu.resumed,
        ours.taken,
        ours.rss_growth / 1024,
        ours.resumed
    );
    // Paused, not wedged: QEMU 7.2 never answers again on this connection; we do.
    assert!(ours.resumed, "serial-console answers a ping once the client reads again");
    // Unbounded, 500k pongs were 60 MB here; the bound is 256 KiB of output plus buffers.
    assert!(ours.rss_growth < 4 * MIB, "serial-console grew by {} bytes", ours.rss_growth);
    assert!(
        ours.rss_growth <= qemu.rss_growth.max(MIB) * 2,
        "QEMU +{}, serial-console +{}",
        qemu.rss_growth,
        ours.rss_growth
    );
    // It stopped reading: what it took is what the socket buffers hold, not the 65 MB.
    assert!(ours.taken < 32 * MIB as usize, "serial-console read {} bytes of pings", ours.taken);
}

/// Client 1 is served, client 2 (a plain HTTP GET, no upgrade) and client 3 (the
/// `websockets` library) wait in the listen queue. When client 1 leaves, client 2's
/// handshake fails and client 3 must be served at once, with no further connection.
fn served_after_a_failed_handshake(program: &str, dir: &Path) -> String {
    let (_target, mut qmp, port) = start(program, dir);
    let first = handshake(port);
    let mut plain = TcpStream::connect(("127.0.0.1", port)).unwrap();
    plain.write_all(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").unwrap();
    let mut good = KillOnDrop(
        python()
            .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/peers/ws_late.py"))
            .arg(format!("ws://127.0.0.1:{port}"))
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut lines = BufReader::new(TimedPipe(good.0.stdout.take().unwrap())).lines();
    assert_eq!(lines.next().unwrap().unwrap(), "connecting", "{program}");
    // The good client's connect is queued behind the plain one: its TCP handshake is done
    // by the kernel, so the listener's queue holds both before the served client leaves.
    wait_until("both clients to be queued", || {
        std::fs::read_to_string("/proc/net/tcp")
            .unwrap()
            .lines()
            .filter(|l| l.contains(&format!(":{port:04X} ")) && l.contains(" 01 "))
            .count()
            >= 6
    });
    drop(first);
    let greeting = lines.next().expect("the good client said nothing more").unwrap();
    assert!(qmp.call("query-status")["status"].is_string(), "{program}");
    assert!(wait_exit(&mut good.0, "ws_late.py").success(), "{program}");
    greeting
}

#[test]
fn a_failed_handshake_in_the_queue_does_not_hold_up_the_next_client_as_in_qemu() {
    require_python_module("websockets", "websockets");
    require_program("qemu-system-x86_64", "qemu-system-x86");
    let dir = tempfile::tempdir().unwrap();
    let qemu = served_after_a_failed_handshake(QEMU, &dir.path().join("qemu"));
    let ours = served_after_a_failed_handshake(BIN, &dir.path().join("ours"));
    for (who, greeting) in [("QEMU", &qemu), ("serial-console", &ours)] {
        assert!(greeting.contains(" monitor - type 'help'"), "{who}: {greeting}");
    }
}

/// A client that connects and never sends its handshake is dropped after 10 s, and the client
/// queued behind it is served.
#[test]
fn a_client_that_never_completes_its_handshake_is_dropped_and_the_next_is_served() {
    require_python_module("websockets", "websockets");
    let dir = tempfile::tempdir().unwrap();
    let (_target, mut qmp, port) = start(BIN, dir.path());
    let mut silent = TcpStream::connect(("127.0.0.1", port)).unwrap();
    silent.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let started = std::time::Instant::now();
    let mut good = KillOnDrop(
        python()
            .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/peers/ws_late.py"))
            .arg(format!("ws://127.0.0.1:{port}"))
            .arg("25")
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut lines = BufReader::new(TimedPipe(good.0.stdout.take().unwrap())).lines();
    assert_eq!(lines.next().unwrap().unwrap(), "connecting");
    // The silent client is closed by the server: its read ends.
    assert_eq!(silent.read(&mut [0u8; 16]).expect("closed within 20 s"), 0);
    let waited = started.elapsed();
    assert!(waited >= Duration::from_secs(9), "dropped after {waited:?}, before the 10 s bound");
    let greeting = lines.next().expect("the good client said nothing more").unwrap();
    assert!(greeting.contains(" monitor - type 'help'"), "{greeting}");
    assert!(qmp.call("query-status")["status"].is_string());
    assert!(wait_exit(&mut good.0, "ws_late.py").success());
}

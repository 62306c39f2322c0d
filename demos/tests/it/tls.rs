//! TLS on socket chardevs (issue 19) against real peers, both ways: QEMU 7.2 as a TLS client
//! of chardev-relay's TLS server and as the TLS server of chardev-relay's client (with
//! reconnect-ms too), gnutls-cli and `openssl s_client` with client certificates on
//! serial-console's `-serial`, `socat OPENSSL:` and `OPENSSL-LISTEN:` as peers of
//! chardev-relay (1 MiB each way), QMP over TLS answered at once where QEMU 7.2 is not,
//! websocket (wss) and telnet over TLS, and bad credentials refused at startup as QEMU
//! refuses them. Loopback only; certificates from the testkit's [`Pki`] in a temp dir;
//! every wait bounded and every process reaped (KillOnDrop, wait_output).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::relay::data;
use chardev_testkit::certs::{Dn, Pki};
use chardev_testkit::*;

const RELAY: &str = env!("CARGO_BIN_EXE_chardev-relay");
const CONSOLE: &str = env!("CARGO_BIN_EXE_serial-console");

/// QEMU with nothing but what the test adds: no machine, no default devices, no display.
const QEMU_BASE: [&str; 5] = ["-machine", "none", "-nodefaults", "-display", "none"];

/// One test's certificates: a CA, a server directory and a client directory (subject
/// `CN=client1`), in QEMU's layout.
struct Certs {
    _tmp: tempfile::TempDir,
    /// Scratch space of the test beside the certificates (sockets, logs).
    dir: PathBuf,
    ca: PathBuf,
    server: PathBuf,
    client: PathBuf,
    pki: Pki,
}

impl Certs {
    fn new() -> Certs {
        let tmp = tempfile::tempdir().unwrap();
        let pki = Pki::new(&tmp.path().join("pki"));
        let server = pki.server_dir("server");
        let client = pki.client_dir("client", &Dn::cn("client1"));
        Certs { dir: tmp.path().to_path_buf(), ca: pki.ca_cert(), server, client, pki, _tmp: tmp }
    }

    /// `-object` value of server credentials `id` (verify-peer on: QEMU's default).
    fn server_object(&self, id: &str) -> String {
        format!(
            "tls-creds-x509,id={id},dir={},endpoint=server,verify-peer=on",
            self.server.display()
        )
    }

    /// `-object` value of client credentials `id`.
    fn client_object(&self, id: &str) -> String {
        format!("tls-creds-x509,id={id},dir={},endpoint=client", self.client.display())
    }

    fn client_cert(&self) -> PathBuf {
        self.client.join("client-cert.pem")
    }

    fn client_key(&self) -> PathBuf {
        self.client.join("client-key.pem")
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Whether something listens on 127.0.0.1:`port` (or on every address), from
/// /proc/net/tcp: no probe connection, which a server would take for its client.
fn tcp_listening(port: u16) -> bool {
    let wanted = [format!("0100007F:{port:04X}"), format!("00000000:{port:04X}")];
    let table = std::fs::read_to_string("/proc/net/tcp").expect("read /proc/net/tcp");
    table.lines().skip(1).any(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        // sl local_address rem_address st ...; st 0A is TCP_LISTEN.
        fields.len() > 3 && wanted.iter().any(|w| w == fields[1]) && fields[3] == "0A"
    })
}

fn wait_tcp_listening(port: u16) {
    wait_until(&format!("127.0.0.1:{port} to listen"), || tcp_listening(port));
}

/// A program run as a peer or a demo: killed and reaped when the test ends; its stderr
/// goes to a file the failure messages show.
struct Peer {
    child: KillOnDrop,
    log: PathBuf,
}

impl Peer {
    fn spawn(cmd: &mut Command, log: PathBuf) -> Peer {
        let err = std::fs::File::create(&log).unwrap();
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("run {cmd:?}: {e}"));
        Peer { child: KillOnDrop(child), log }
    }

    /// What it wrote on stderr so far.
    fn said(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

fn relay(certs: &Certs, name: &str, args: &[String]) -> Peer {
    Peer::spawn(Command::new(RELAY).arg("-v").args(args), certs.dir.join(format!("{name}.log")))
}

fn console(certs: &Certs, name: &str, args: &[String]) -> Peer {
    Peer::spawn(Command::new(CONSOLE).args(args), certs.dir.join(format!("{name}.log")))
}

fn qemu(certs: &Certs, name: &str, args: &[String]) -> Peer {
    require_program("qemu-system-x86_64", "qemu-system-x86");
    Peer::spawn(
        Command::new("qemu-system-x86_64").args(QEMU_BASE).args(args),
        certs.dir.join(format!("{name}.log")),
    )
}

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|s| s.to_string()).collect()
}

/// Reads until `needle` has been seen (reads block at most [`DEADLINE`] each, and the whole
/// wait is bounded by it too); returns everything read. `what` names the peer in failures.
fn read_until(r: &mut impl Read, needle: &[u8], what: &str) -> Vec<u8> {
    let end = Instant::now() + DEADLINE;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !got.windows(needle.len()).any(|w| w == needle) {
        assert!(
            Instant::now() < end,
            "{what}: no {:?} within {DEADLINE:?}; got {:?}",
            String::from_utf8_lossy(needle),
            String::from_utf8_lossy(&got)
        );
        match r.read(&mut buf) {
            Ok(0) => panic!(
                "{what}: closed while waiting for {:?}; got {:?}",
                String::from_utf8_lossy(needle),
                String::from_utf8_lossy(&got)
            ),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => panic!(
                "{what}: waiting for {:?}: {e}; got {:?}",
                String::from_utf8_lossy(needle),
                String::from_utf8_lossy(&got)
            ),
        }
    }
    got
}

/// Types `text` into QEMU 7.2's monitor one byte per write. Not pacing for
/// synchronisation: QEMU's monitor over TLS reads one byte per readable event of the socket
/// and the rest of a TLS record stays in GnuTLS until more bytes come (tls-facts.md g), so
/// a line that reaches it in one record is never answered. The relay turns each write into
/// one record, and the pause lets each go out on its own.
fn type_slowly(w: &mut impl Write, text: &[u8]) {
    for b in text {
        w.write_all(&[*b]).unwrap();
        std::thread::sleep(Duration::from_millis(15));
    }
}

/// `info version` through the relay to QEMU 7.2's human monitor: the banner came first,
/// QEMU echoes what was typed (the bytes reached it) and answers with its version.
fn info_version_through(unix: &mut UnixStream, what: &str) {
    let banner = read_until(unix, b"(qemu) ", what);
    let banner = String::from_utf8_lossy(&banner);
    assert!(
        banner.contains("QEMU 7.2")
            && banner.contains("monitor - type 'help' for more information"),
        "{what}: QEMU's banner: {banner:?}"
    );
    type_slowly(unix, b"info version\n");
    let answer = read_until(unix, b"(qemu) ", what);
    let answer = String::from_utf8_lossy(&answer);
    // The line editor redraws the line at each byte: the last redraw is the whole command.
    assert!(answer.contains("info version\x1b[K\r\n"), "{what}: QEMU's echo: {answer:?}");
    assert!(answer.contains("\r\n7.2."), "{what}: QEMU's version line: {answer:?}");
}

#[test]
fn qemu_as_a_tls_client_reaches_the_relays_tls_server() {
    let certs = Certs::new();
    let port = free_port();
    let sock = certs.dir.join("near.sock");
    let _relay = relay(
        &certs,
        "relay",
        &[
            "--object".into(),
            certs.server_object("tls0"),
            format!("socket,host=127.0.0.1,port={port},server=on,wait=off,tls-creds=tls0"),
            format!("unix:{},server=on,wait=off", sock.display()),
        ],
    );
    wait_tcp_listening(port);
    wait_unix_listening(&sock);
    let mut unix = connect_unix(&sock);
    let q = qemu(
        &certs,
        "qemu",
        &[
            "-object".into(),
            certs.client_object("tc"),
            "-chardev".into(),
            format!("socket,id=m0,host=127.0.0.1,port={port},tls-creds=tc"),
            "-mon".into(),
            "chardev=m0,mode=readline".into(),
        ],
    );
    info_version_through(&mut unix, &format!("QEMU -> relay (QEMU said {:?})", q.said()));
}

/// QEMU 7.2 with a TLS server chardev on `port` and its human monitor on it.
fn qemu_tls_monitor_server(certs: &Certs, port: u16) -> Peer {
    qemu(
        certs,
        "qemu",
        &[
            "-object".into(),
            certs.server_object("ts"),
            "-chardev".into(),
            format!("socket,id=m0,host=127.0.0.1,port={port},server=on,wait=off,tls-creds=ts"),
            "-mon".into(),
            "chardev=m0,mode=readline".into(),
        ],
    )
}

/// chardev-relay between a TLS client chardev to `port` (with `extra` options) and a unix
/// server `near.sock`; returns it and a connected unix client.
fn relay_tls_client(certs: &Certs, port: u16, extra: &str) -> (Peer, UnixStream) {
    let sock = certs.dir.join("near.sock");
    let r = relay(
        certs,
        "relay",
        &[
            "--object".into(),
            certs.client_object("tc"),
            format!("socket,host=127.0.0.1,port={port},tls-creds=tc{extra}"),
            format!("unix:{},server=on,wait=off", sock.display()),
        ],
    );
    wait_unix_listening(&sock);
    (r, connect_unix(&sock))
}

#[test]
fn the_relays_tls_client_reaches_qemus_tls_server() {
    let certs = Certs::new();
    let port = free_port();
    let _q = qemu_tls_monitor_server(&certs, port);
    wait_tcp_listening(port);
    let (r, mut unix) = relay_tls_client(&certs, port, "");
    info_version_through(&mut unix, &format!("relay -> QEMU (relay said {:?})", r.said()));
}

#[test]
fn the_relays_tls_client_with_reconnect_ms_connects_when_qemu_appears() {
    let certs = Certs::new();
    let port = free_port();
    let (mut r, mut unix) = relay_tls_client(&certs, port, ",reconnect-ms=100");
    // Nobody listens yet: the relay says so, keeps trying every 100 ms and stays up.
    wait_until("the relay's first failed attempt", || {
        r.said().contains("Unable to connect character device")
    });
    assert!(r.child.0.try_wait().unwrap().is_none(), "the relay ended: {}", r.said());
    let _q = qemu_tls_monitor_server(&certs, port);
    info_version_through(
        &mut unix,
        &format!("relay (reconnect) -> QEMU (relay said {:?})", r.said()),
    );
}

/// serial-console with its serial port on a TLS server chardev on `port` (`opts` added to
/// the chardev), the server verifying clients (QEMU's default).
fn console_tls_serial(certs: &Certs, port: u16, opts: &str) -> Peer {
    let c = console(
        certs,
        "console",
        &[
            "-nodefaults".into(),
            "-object".into(),
            certs.server_object("tls0"),
            "-chardev".into(),
            format!(
                "socket,id=c0,host=127.0.0.1,port={port},server=on,wait=off,tls-creds=tls0{opts}"
            ),
            "-serial".into(),
            "chardev:c0".into(),
        ],
    );
    wait_tcp_listening(port);
    c
}

/// Types `echo hello-tls` into the guest shell through a TLS client program (stdin and
/// stdout piped) and reads the guest's answer from its stdout.
fn echo_through_tls_program(mut cmd: Command, what: &str) -> String {
    let mut p = KillOnDrop(
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("run {what}: {e}")),
    );
    let mut stdin = p.0.stdin.take().unwrap();
    let mut stdout = TimedPipe(p.0.stdout.take().unwrap());
    stdin.write_all(b"echo hello-tls\r").unwrap();
    stdin.flush().unwrap();
    let got = read_until(&mut stdout, b"hello-tls\r\nguest$ ", what);
    let got = String::from_utf8_lossy(&got).into_owned();
    assert!(got.contains("echo hello-tls\r\nhello-tls\r\nguest$ "), "{what}: {got:?}");
    got
}

#[test]
fn gnutls_cli_with_a_client_certificate_talks_to_the_guest() {
    require_program("gnutls-cli", "gnutls-bin");
    let certs = Certs::new();
    let port = free_port();
    let c = console_tls_serial(&certs, port, "");
    let mut cmd = Command::new("gnutls-cli");
    cmd.arg("--logfile")
        .arg(certs.dir.join("gnutls-cli.log"))
        .arg("--x509cafile")
        .arg(&certs.ca)
        .arg("--x509certfile")
        .arg(certs.client_cert())
        .arg("--x509keyfile")
        .arg(certs.client_key())
        .args(["-p", &port.to_string(), "127.0.0.1"]);
    echo_through_tls_program(cmd, &format!("gnutls-cli (console said {:?})", c.said()));
}

#[test]
fn openssl_s_client_with_a_client_certificate_talks_to_the_guest() {
    require_program("openssl", "openssl");
    let certs = Certs::new();
    let port = free_port();
    let c = console_tls_serial(&certs, port, "");
    let mut cmd = Command::new("openssl");
    cmd.args(["s_client", "-quiet", "-verify_return_error", "-verify_ip", "127.0.0.1"])
        .args(["-connect", &format!("127.0.0.1:{port}")])
        .arg("-CAfile")
        .arg(&certs.ca)
        .arg("-cert")
        .arg(certs.client_cert())
        .arg("-key")
        .arg(certs.client_key());
    echo_through_tls_program(cmd, &format!("openssl s_client (console said {:?})", c.said()));
}

/// Accepts one connection on `listener`, waiting at most [`DEADLINE`].
fn accept_within(listener: &UnixListener, what: &str) -> UnixStream {
    listener.set_nonblocking(true).unwrap();
    let mut conn = None;
    wait_until(what, || match listener.accept() {
        Ok((s, _)) => {
            conn = Some(s);
            true
        }
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => false,
        Err(e) => panic!("{what}: {e}"),
    });
    let s = conn.expect("accepted");
    s.set_nonblocking(false).unwrap();
    s.set_read_timeout(Some(DEADLINE)).unwrap();
    s
}

/// 1 MiB each way at once between `a` and `b`, checked byte for byte.
fn exchange_mib(a: UnixStream, b: UnixStream, what: &str) {
    const LEN: usize = 1 << 20;
    let (to_b, to_a) = (data(LEN, 7), data(LEN, 11));
    let side = |mut me: UnixStream, send: Vec<u8>| {
        std::thread::spawn(move || {
            let mut writer = me.try_clone().unwrap();
            let w = std::thread::spawn(move || writer.write_all(&send).map_err(|e| e.to_string()));
            let mut got = vec![0u8; LEN];
            let read = me.read_exact(&mut got).map_err(|e| e.to_string());
            (w.join().unwrap(), read, got)
        })
    };
    let ta = side(a, to_b.clone());
    let tb = side(b, to_a.clone());
    let (wa, ra, got_a) = ta.join().unwrap();
    let (wb, rb, got_b) = tb.join().unwrap();
    assert!(wa.is_ok() && wb.is_ok(), "{what}: writes: {wa:?} {wb:?}");
    assert!(ra.is_ok() && rb.is_ok(), "{what}: reads: {ra:?} {rb:?}");
    assert!(got_b == to_b, "{what}: the 1 MiB towards socat's side differs");
    assert!(got_a == to_a, "{what}: the 1 MiB towards the relay's side differs");
}

#[test]
fn socat_openssl_listen_serves_the_relays_tls_client_a_mib_each_way() {
    require_program("socat", "socat");
    let certs = Certs::new();
    let port = free_port();
    let far = certs.dir.join("far.sock");
    let far_listener = UnixListener::bind(&far).unwrap();
    let server = certs.server.display().to_string();
    let socat = Peer::spawn(
        Command::new("socat")
            .arg(format!(
                "OPENSSL-LISTEN:{port},bind=127.0.0.1,reuseaddr,cert={server}/server-cert.pem,\
             key={server}/server-key.pem,cafile={},verify=1",
                certs.ca.display()
            ))
            .arg(format!("UNIX-CONNECT:{}", far.display())),
        certs.dir.join("socat.log"),
    );
    wait_tcp_listening(port);
    let (r, near) = relay_tls_client(&certs, port, "");
    let far = accept_within(&far_listener, "socat to pass the TLS connection on");
    exchange_mib(
        near,
        far,
        &format!("relay -> socat (relay {:?}, socat {:?})", r.said(), socat.said()),
    );
}

#[test]
fn socat_openssl_client_reaches_the_relays_tls_server_a_mib_each_way() {
    require_program("socat", "socat");
    let certs = Certs::new();
    let port = free_port();
    let sock = certs.dir.join("near.sock");
    let r = relay(
        &certs,
        "relay",
        &[
            "--object".into(),
            certs.server_object("tls0"),
            format!("socket,host=127.0.0.1,port={port},server=on,wait=off,tls-creds=tls0"),
            format!("unix:{},server=on,wait=off", sock.display()),
        ],
    );
    wait_tcp_listening(port);
    wait_unix_listening(&sock);
    let near = connect_unix(&sock);
    let far = certs.dir.join("far.sock");
    let far_listener = UnixListener::bind(&far).unwrap();
    let socat = Peer::spawn(
        Command::new("socat")
            .arg(format!(
                "OPENSSL:127.0.0.1:{port},cert={},key={},cafile={},verify=1",
                certs.client_cert().display(),
                certs.client_key().display(),
                certs.ca.display()
            ))
            .arg(format!("UNIX-CONNECT:{}", far.display())),
        certs.dir.join("socat.log"),
    );
    let far = accept_within(&far_listener, "socat to connect on");
    exchange_mib(
        near,
        far,
        &format!("socat -> relay (relay {:?}, socat {:?})", r.said(), socat.said()),
    );
}

/// A Python `ssl` client of a QMP monitor: reads the greeting, sends
/// `{"execute":"qmp_capabilities"}` in one `sendall` (one TLS record) and waits WAIT
/// seconds for the answer; if none came and NUDGE is 1, sends one more byte (`\n`) and
/// waits again. Prints one JSON line per step. Arguments: PORT CA CERT KEY WAIT NUDGE.
const QMP_TLS_CLIENT: &str = r#"
import json, socket, ssl, sys, time
port, ca, cert, key, wait, nudge = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4], float(sys.argv[5]), sys.argv[6] == "1"
ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=ca)
ctx.load_cert_chain(cert, key)
s = ctx.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=10), server_hostname="127.0.0.1")
buf = b""
def line(limit):
    global buf
    end = time.monotonic() + limit
    while b"\n" not in buf:
        left = end - time.monotonic()
        if left <= 0:
            return None
        s.settimeout(left)
        try:
            chunk = s.recv(65536)
        except (socket.timeout, TimeoutError):
            return None
        if not chunk:
            sys.exit("closed, after %r" % buf)
        buf += chunk
    one, _, buf = buf.partition(b"\n")
    return json.loads(one)
print(json.dumps({"greeting": line(10)}), flush=True)
s.sendall(b'{"execute":"qmp_capabilities"}\n')
start = time.monotonic()
answer = line(wait)
print(json.dumps({"answer": answer, "after": time.monotonic() - start}), flush=True)
if answer is None and nudge:
    s.sendall(b"\n")
    print(json.dumps({"after_nudge": line(10)}), flush=True)
"#;

/// Runs [`QMP_TLS_CLIENT`] against `port`; returns its JSON lines.
fn qmp_over_tls(certs: &Certs, port: u16, wait: &str, nudge: bool) -> Vec<serde_json::Value> {
    let out = output_within(
        python()
            .args(["-c", QMP_TLS_CLIENT, &port.to_string()])
            .arg(&certs.ca)
            .arg(certs.client_cert())
            .arg(certs.client_key())
            .args([wait, if nudge { "1" } else { "0" }]),
        "the Python ssl QMP client",
    );
    assert!(
        out.status.success(),
        "the Python ssl QMP client failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?}: {e}")))
        .collect()
}

/// The arguments of a QMP monitor on a TLS server chardev on `port`, for both programs.
fn qmp_tls_args(certs: &Certs, port: u16) -> Vec<String> {
    vec![
        "-object".into(),
        certs.server_object("tls0"),
        "-chardev".into(),
        format!("socket,id=q0,host=127.0.0.1,port={port},server=on,wait=off,tls-creds=tls0"),
        "-mon".into(),
        "chardev=q0,mode=control".into(),
    ]
}

#[test]
fn qmp_over_tls_answers_a_command_in_one_record_at_once_where_qemu_does_not() {
    let certs = Certs::new();
    let port = free_port();
    let mut args = strings(&["-nodefaults"]);
    args.extend(qmp_tls_args(&certs, port));
    let c = console(&certs, "console", &args);
    wait_tcp_listening(port);
    // Ours: the answer within the deadline (it comes at once).
    let ours = qmp_over_tls(&certs, port, &DEADLINE.as_secs().to_string(), false);
    assert!(ours[0]["greeting"]["QMP"]["version"].is_object(), "{ours:?} ({})", c.said());
    assert_eq!(ours[1]["answer"], serde_json::json!({"return": {}}), "{ours:?} ({})", c.said());
    assert!(ours[1]["after"].as_f64().unwrap() < 2.0, "answered late: {ours:?}");

    // QEMU 7.2, the same command line and the same client: its monitor reads one byte of
    // the record and waits for the socket to be readable again, which it never is; the
    // answer comes only when one more byte arrives (tls-facts.md g). If this part fails
    // because QEMU answered, QEMU was fixed: the difference is gone, not our behaviour.
    let qport = free_port();
    let q = qemu(&certs, "qemu", &qmp_tls_args(&certs, qport));
    wait_tcp_listening(qport);
    let theirs = qmp_over_tls(&certs, qport, "2", true);
    assert_eq!(theirs[0]["greeting"]["QMP"]["version"]["qemu"]["major"], 7, "{theirs:?}");
    assert_eq!(theirs[1]["answer"], serde_json::Value::Null, "{theirs:?} ({})", q.said());
    assert_eq!(theirs[2]["after_nudge"], serde_json::json!({"return": {}}), "{theirs:?}");
}

/// A `websockets` (wss) client of serial-console's guest shell: types `echo hello-wss`
/// and prints "ok" once the guest's answer came. Arguments: URL CA CERT KEY.
const WSS_CLIENT: &str = r#"
import ssl, sys, time
from websockets.sync.client import connect
url, ca, cert, key = sys.argv[1:5]
ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=ca)
ctx.load_cert_chain(cert, key)
with connect(url, ssl=ctx, subprotocols=["binary"], open_timeout=10, close_timeout=5) as ws:
    ws.send(b"echo hello-wss\r")
    got = b""
    end = time.monotonic() + 10
    while b"hello-wss\r\nguest$ " not in got:
        m = ws.recv(timeout=max(0.01, end - time.monotonic()))
        got += m if isinstance(m, bytes) else m.encode()
    print(repr(got), file=sys.stderr)
    assert b"echo hello-wss\r\nhello-wss\r\nguest$ " in got, got
print("ok")
"#;

#[test]
fn a_wss_client_with_python_websockets_talks_to_the_guest() {
    require_python_module("websockets", "websockets");
    let certs = Certs::new();
    let port = free_port();
    let c = console_tls_serial(&certs, port, ",websocket=on");
    let out = output_within(
        python()
            .args(["-c", WSS_CLIENT, &format!("wss://127.0.0.1:{port}/")])
            .arg(&certs.ca)
            .arg(certs.client_cert())
            .arg(certs.client_key()),
        "the wss client",
    );
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).trim() == "ok",
        "the wss client failed:\n{}\n{}\n(console said {:?})",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        c.said()
    );
}

#[test]
fn telnet_over_tls_negotiates_as_qemu_first_then_the_guest() {
    require_program("gnutls-cli", "gnutls-bin");
    let certs = Certs::new();
    let port = free_port();
    let c = console_tls_serial(&certs, port, ",telnet=on");
    let mut cli = KillOnDrop(
        Command::new("gnutls-cli")
            .arg("--logfile")
            .arg(certs.dir.join("gnutls-cli.log"))
            .arg("--x509cafile")
            .arg(&certs.ca)
            .arg("--x509certfile")
            .arg(certs.client_cert())
            .arg("--x509keyfile")
            .arg(certs.client_key())
            .args(["-p", &port.to_string(), "127.0.0.1"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let mut stdin = cli.0.stdin.take().unwrap();
    let mut stdout = TimedPipe(cli.0.stdout.take().unwrap());
    // QEMU's telnet server options, byte for byte (char-socket.c, tcp_chr_telnet_init):
    // IAC WILL ECHO, IAC WILL SUPPRESS-GO-AHEAD, IAC WILL BINARY, IAC DO BINARY.
    const QEMU_TELNET: [u8; 12] =
        [0xff, 0xfb, 0x01, 0xff, 0xfb, 0x03, 0xff, 0xfb, 0x00, 0xff, 0xfd, 0x00];
    let what = format!("gnutls-cli on telnet (console said {:?})", c.said());
    let first = read_until(&mut stdout, &QEMU_TELNET, &what);
    assert!(first.starts_with(&QEMU_TELNET), "{what}: the negotiation comes first: {first:?}");
    stdin.write_all(b"echo hello-telnet\r").unwrap();
    let got = read_until(&mut stdout, b"hello-telnet\r\nguest$ ", &what);
    let got = String::from_utf8_lossy(&got);
    assert!(got.contains("echo hello-telnet\r\nhello-telnet\r\n"), "{what}: {got:?}");
}

/// One bad-input case: the `-object` (if any) and `-chardev` values, what QEMU 7.2 says
/// (exactly, after `qemu-system-x86_64: ` and any `-chardev ...: ` location), what ours
/// must say (substrings: the key and the file).
struct BadInput {
    name: &'static str,
    object: Option<String>,
    chardev: String,
    qemu_says: String,
    ours_says: Vec<String>,
}

fn bad_inputs(certs: &Certs, port: u16) -> Vec<BadInput> {
    let chardev = format!("socket,id=c0,host=127.0.0.1,port={port},server=on,wait=off");
    let creds = format!("{chardev},tls-creds=tls0");
    let server_obj =
        |dir: &Path| format!("tls-creds-x509,id=tls0,dir={},endpoint=server", dir.display());
    let missing = certs.dir.join("no-such-dir");
    let no_ca = certs.pki.server_dir("no-ca");
    std::fs::remove_file(no_ca.join("ca-cert.pem")).unwrap();
    let mismatched = certs.pki.mismatched_server_dir("mismatched");
    let shown = |p: &Path| p.display().to_string();
    vec![
        BadInput {
            name: "a missing directory",
            object: Some(server_obj(&missing)),
            chardev: creds.clone(),
            qemu_says: format!(
                "Unable to access credentials {}/ca-cert.pem: No such file or directory",
                missing.display()
            ),
            ours_says: vec!["-object id=tls0".into(), "'dir=".into(), shown(&missing)],
        },
        BadInput {
            name: "a directory without ca-cert.pem",
            object: Some(server_obj(&no_ca)),
            chardev: creds.clone(),
            qemu_says: format!(
                "Unable to access credentials {}/ca-cert.pem: No such file or directory",
                no_ca.display()
            ),
            ours_says: vec![
                "-object id=tls0".into(),
                "'dir=".into(),
                shown(&no_ca.join("ca-cert.pem")),
            ],
        },
        BadInput {
            name: "a key that does not match its certificate",
            object: Some(server_obj(&mismatched)),
            chardev: creds.clone(),
            qemu_says: format!(
                "Cannot load certificate '{0}/server-cert.pem' & key '{0}/server-key.pem': \
                 The certificate and the given key do not match.",
                mismatched.display()
            ),
            ours_says: vec![
                "-object id=tls0".into(),
                "'dir=".into(),
                shown(&mismatched.join("server-key.pem")),
                shown(&mismatched.join("server-cert.pem")),
                "does not match".into(),
            ],
        },
        BadInput {
            name: "endpoint=client on a server chardev",
            object: Some(certs.client_object("tls0")),
            chardev: creds.clone(),
            qemu_says: "Expected TLS credentials for a server endpoint".into(),
            ours_says: vec![
                "'tls-creds=tls0'".into(),
                "Expected TLS credentials for a server endpoint".into(),
            ],
        },
        BadInput {
            name: "tls-creds naming an unknown id",
            object: Some(certs.server_object("tls0")),
            chardev: format!("{chardev},tls-creds=nosuch"),
            qemu_says: "No TLS credentials with id 'nosuch'".into(),
            ours_says: vec![
                "'tls-creds=nosuch'".into(),
                "No TLS credentials with id 'nosuch'".into(),
            ],
        },
        BadInput {
            name: "tls-authz without tls-creds",
            object: Some("authz-simple,id=au,identity=CN=client1".into()),
            chardev: format!("{chardev},tls-authz=au"),
            qemu_says: "'tls_authz' option requires 'tls_creds' option".into(),
            ours_says: vec![
                "'tls-authz=au'".into(),
                "'tls_authz' option requires 'tls_creds' option".into(),
            ],
        },
    ]
}

/// QEMU's one line of error: `qemu-system-x86_64: [LOCATION: ]TEXT`; returns TEXT.
fn qemu_error_text(stderr: &str) -> String {
    let line = stderr.lines().find(|l| l.starts_with("qemu-system-x86_64: ")).unwrap_or_default();
    let text = line.trim_start_matches("qemu-system-x86_64: ");
    // A -chardev location ends with ": " before the text; object-load errors carry none.
    match text.strip_prefix("-chardev ") {
        Some(rest) => rest.split_once(": ").map(|(_, t)| t).unwrap_or(rest).to_string(),
        None => text.to_string(),
    }
}

#[test]
fn bad_credentials_and_options_fail_at_startup_as_in_qemu_and_nothing_listens() {
    require_program("qemu-system-x86_64", "qemu-system-x86");
    let certs = Certs::new();
    let port = free_port();
    for case in bad_inputs(&certs, port) {
        let mut common = Vec::new();
        if let Some(object) = &case.object {
            common.extend(["-object".to_string(), object.clone()]);
        }
        common.extend(["-chardev".to_string(), case.chardev.clone()]);

        let qemu = output_within(
            Command::new("qemu-system-x86_64").args(QEMU_BASE).args(&common),
            &format!("QEMU with {}", case.name),
        );
        let qemu_err = String::from_utf8_lossy(&qemu.stderr).into_owned();
        assert!(!qemu.status.success(), "{}: QEMU started: {qemu_err}", case.name);
        assert_eq!(
            qemu_error_text(&qemu_err),
            case.qemu_says,
            "{}: QEMU said {qemu_err:?}",
            case.name
        );

        let ours = output_within(
            Command::new(CONSOLE).arg("-nodefaults").args(&common).args(["-serial", "chardev:c0"]),
            &format!("serial-console with {}", case.name),
        );
        let ours_err = String::from_utf8_lossy(&ours.stderr).into_owned();
        assert!(!ours.status.success(), "{}: serial-console started: {ours_err}", case.name);
        assert!(ours_err.starts_with("serial-console: "), "{}: {ours_err:?}", case.name);
        for want in &case.ours_says {
            assert!(ours_err.contains(want.as_str()), "{}: no {want:?} in {ours_err:?}", case.name);
        }
        for (who, out) in [("QEMU", &qemu), ("serial-console", &ours)] {
            assert!(out.stdout.is_empty(), "{}: {who} printed on stdout", case.name);
        }
        // Nothing was started: the port refuses connections.
        match TcpStream::connect(("127.0.0.1", port)) {
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {}
            other => {
                panic!("{}: something listens on {port} after the failures: {other:?}", case.name)
            }
        }
    }
}

//! P16 and P17 (issue 19): TLS on a socket chardev against OpenSSL doing the same.
//!
//! **P16**: a relay between a plain unix socket and a TLS server on 127.0.0.1, either
//! `chardev-relay --no-fds --object tls-creds-x509,... socket,path=A,... socket,host=..,
//! port=..,server=on,tls-creds=ts` or `socat -b 65536 UNIX-LISTEN:A
//! OPENSSL-LISTEN:PORT,cert=..,key=..,cafile=..,verify=1`: the same certificates (the test
//! kit's ECDSA P-256 server, clients verified against the CA), the same peer. The peer is a
//! TLS client in this process (the kit's client certificate, `chardev_socket::tls`'s
//! session, which is rustls, over a blocking socket), the same for both relays; the other
//! end is a plain unix client. Bytes go either way: into the unix side and out of the TLS
//! peer (the relay encrypts) or into the TLS peer and out of the unix side (the relay
//! decrypts). As in P2, a 64 KiB warm-up first, every byte checked (the edges of every read
//! in full runs), and the CPU time is the relay process's alone.
//!
//! **P17**: full TLS handshakes per second against a TLS server chardev in this process (a
//! `Registry` with `tls-creds-x509,endpoint=server` and a `socket,host=127.0.0.1,...,
//! server=on,wait=off,tls-creds=ts` chardev whose frontend counts `Opened`) and against
//! `openssl s_server -Verify 1` with the same certificates. The client for both is a thread
//! of this process (our session code, rustls) in a loop of new connections with the kit's
//! client certificate: each a full mutual-authentication handshake without resumption, then
//! close_notify, then reading to the server's end, so that a handshake counts only once the
//! server has seen it through. (`openssl s_time -new` closes right after sending its
//! Finished; a server that has not yet answered it then meets a reset, so s_time counts
//! handshakes no server finished.) The rate is connections over the loop's wall-clock time;
//! the server's CPU time per handshake is this process's minus the client thread's for ours
//! (the loop and the frontend) and `/proc/PID/stat`'s for s_server.

use std::fs::File;
use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use std::sync::Arc;
use std::time::{Duration, Instant};

use chardev::objects::{Endpoint, Object};
use chardev::options::TlsSpec;
use chardev_socket::tls::{TlsSession, TlsSetup};
use chardev_socket::websocket::Step;
use chardev_testkit::certs::{Dn, Pki};

use crate::fixture::{Chardevs, Idle, OpenCount};
use crate::pattern::Verify;
use crate::peer::{self, retry, Process, STARTUP};
use crate::proc_status::{cpu_time, process_cpu, Who};
use crate::relay::SOCAT_BUFFER;
use crate::{transfer_deadline, Context, Result, Transfer};

/// Why P16/P17 cannot run here, if they cannot: the programs they need.
pub fn missing() -> Option<String> {
    for (program, package, arg) in [
        ("socat", "socat", "-V"),
        ("openssl", "openssl", "version"),
        ("certtool", "gnutls-bin", "--version"),
    ] {
        match Command::new(program).arg(arg).stdout(Stdio::null()).stderr(Stdio::null()).status() {
            Ok(s) if s.success() => {}
            _ => return Some(format!("{program} is not installed (apt-get install {package})")),
        }
    }
    None
}

/// The certificates both sides use: the test kit's CA, a server directory (`localhost`,
/// `127.0.0.1`, `::1`) and a client directory, ECDSA P-256 keys.
#[derive(Debug)]
pub struct Kit {
    /// `ca-cert.pem`, `server-cert.pem`, `server-key.pem`.
    pub server: PathBuf,
    /// `ca-cert.pem`, `client-cert.pem`, `client-key.pem`.
    pub client: PathBuf,
}

impl Kit {
    /// Makes the certificates under `dir` with `certtool` (see [`missing`]).
    pub fn new(dir: &Path) -> Kit {
        let pki = Pki::new(&dir.join("pki"));
        let server = pki.server_dir("server");
        let client = pki.client_dir("client", &Dn::cn("bench client"));
        Kit { server, client }
    }

    fn file(dir: &Path, name: &str) -> String {
        dir.join(name).display().to_string()
    }

    /// A TLS client session's setup for the peer: the kit's client certificate, the
    /// server checked as `127.0.0.1`.
    fn client_setup(&self) -> Result<TlsSetup> {
        let spec = format!("tls-creds-x509,id=tc,dir={},endpoint=client", self.client.display());
        let object = Arc::new(spec.parse::<Object>().map_err(|e| format!("{spec}: {e}"))?);
        let tls = TlsSpec { creds: "tc".into(), authz: None, hostname: None };
        TlsSetup::new(&tls, Endpoint::Client, Some("127.0.0.1"), |_, _| Ok(object.clone()))
            .map_err(|e| format!("load the peer's TLS credentials: {e}"))
    }
}

/// A free TCP port on 127.0.0.1 (the kernel's choice; released for the server to bind).
fn free_port() -> Result<u16> {
    let l = TcpListener::bind("127.0.0.1:0").context("bind 127.0.0.1:0")?;
    Ok(l.local_addr().context("local address")?.port())
}

/// A blocking TLS client connection made with our session code (rustls underneath): the
/// peer of P16, the same for both relays.
struct TlsPeer {
    socket: TcpStream,
    session: TlsSession,
}

impl TlsPeer {
    /// Connects to `port` once something listens there, and completes the handshake.
    fn connect(setup: &TlsSetup, port: u16, timeout: Duration) -> Result<TlsPeer> {
        let socket = retry(&format!("connect to 127.0.0.1:{port}"), STARTUP, || {
            TcpStream::connect(("127.0.0.1", port))
        })?;
        socket.set_nodelay(true).context("TCP_NODELAY")?;
        // A bound on every blocking read: a stuck relay fails the run instead of hanging it.
        socket.set_read_timeout(Some(timeout)).context("SO_RCVTIMEO")?;
        let mut session = setup.session().context("a TLS client session")?;
        // On a blocking socket the handshake runs to its end in one call.
        match session.handshake(socket.as_fd()) {
            Step::Open => Ok(TlsPeer { socket, session }),
            Step::Failed(why) => Err(format!("the peer's TLS handshake: {why}")),
            // Only the read timeout makes a blocking socket's handshake pend.
            Step::Pending => Err(format!("the peer's TLS handshake: no answer in {timeout:?}")),
        }
    }
}

impl Read for TlsPeer {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.session.read(self.socket.as_fd(), buf)
    }
}

impl Write for TlsPeer {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.session.write(self.socket.as_fd(), buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.session.push(self.socket.as_fd())
    }
}

/// The relay of P16.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TlsRelayer {
    /// `chardev-relay --no-fds` at this path.
    Chardev(PathBuf),
    /// `socat -b 65536` with `OPENSSL-LISTEN`.
    Socat,
}

impl TlsRelayer {
    fn name(&self) -> &'static str {
        match self {
            TlsRelayer::Chardev(_) => "chardev-relay",
            TlsRelayer::Socat => "socat",
        }
    }

    fn command(&self, kit: &Kit, unix: &Path, port: u16) -> Command {
        let srv = &kit.server;
        match self {
            TlsRelayer::Chardev(bin) => {
                let mut cmd = Command::new(bin);
                cmd.arg("--no-fds")
                    .arg("--object")
                    .arg(format!("tls-creds-x509,id=ts,dir={},endpoint=server", srv.display()))
                    .arg(format!("socket,path={},server=on,wait=off", unix.display()))
                    .arg(format!(
                        "socket,host=127.0.0.1,port={port},server=on,wait=off,tls-creds=ts"
                    ));
                cmd
            }
            TlsRelayer::Socat => {
                let mut cmd = Command::new("socat");
                cmd.args(["-d", "-d", "-b", SOCAT_BUFFER])
                    .arg(format!("UNIX-LISTEN:{}", unix.display()))
                    .arg(format!(
                        "OPENSSL-LISTEN:{port},bind=127.0.0.1,reuseaddr,cert={},key={},cafile={},verify=1",
                        Kit::file(srv, "server-cert.pem"),
                        Kit::file(srv, "server-key.pem"),
                        Kit::file(srv, "ca-cert.pem"),
                    ));
                cmd
            }
        }
    }
}

/// Which way P16's bytes go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Into the unix side, out of the TLS peer: the relay encrypts.
    UnixToTls,
    /// Into the TLS peer, out of the unix side: the relay decrypts.
    TlsToUnix,
}

/// One P16 transfer: `bytes` (after the warm-up) through `relayer` in `direction`, its
/// unix socket in `dir`. `cpu` is the relay process's.
pub fn relay(
    relayer: &TlsRelayer,
    direction: Direction,
    kit: &Kit,
    dir: &Path,
    bytes: u64,
    verify: Verify,
) -> Result<Transfer> {
    let unix = dir.join("tls-a.sock");
    let _ = std::fs::remove_file(&unix);
    let port = free_port()?;
    let setup = kit.client_setup()?;
    let log_path = dir.join(format!("{}-tls.log", relayer.name()));
    let log = File::create(&log_path).context(format!("create {}", log_path.display()))?;
    let cpu = cpu_time(Who::Children)?;
    let child = relayer
        .command(kit, &unix, port)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .context(format!("start {}", relayer.name()))?;
    let mut process = Process::new(child, relayer.name());
    let timeout = STARTUP + transfer_deadline(bytes);
    let result = (|| {
        // The unix side first: socat opens its addresses in order.
        let plain = peer::connect(&unix)?;
        plain.set_read_timeout(Some(timeout)).context("SO_RCVTIMEO")?;
        let tls = TlsPeer::connect(&setup, port, timeout)?;
        let plain = File::from(OwnedFd::from(plain));
        match direction {
            Direction::UnixToTls => crate::relay::stream(plain, tls, bytes, verify),
            Direction::TlsToUnix => crate::relay::stream(tls, plain, bytes, verify),
        }
    })();
    let exited = process.exited();
    let finished = process.finish(Duration::from_secs(5));
    let cpu = cpu_time(Who::Children)? - cpu;
    result
        .map(|t| Transfer { cpu, ..t })
        .map_err(|e| {
            let log = std::fs::read_to_string(&log_path).unwrap_or_default();
            let tail: String = log.lines().rev().take(5).collect::<Vec<_>>().join(" | ");
            let ended = exited.map(|s| format!(" had ended: {s};")).unwrap_or_default();
            format!("{e} ({}{ended} its last words: {tail})", relayer.name())
        })
        .and_then(|t| finished.map(|_| t))
}

/// What socat said it negotiated (`-d -d`: "SSL connection using ..."), from its log in
/// `dir` after a [`relay`] run.
pub fn socat_cipher(dir: &Path) -> Option<String> {
    let log = std::fs::read_to_string(dir.join("socat-tls.log")).ok()?;
    log.lines()
        .find_map(|l| l.split_once("SSL connection using ").map(|(_, c)| c.trim().to_string()))
}

/// One P17 run: how many handshakes the client completed in how long, the server's CPU
/// time, and how many the server opened (ours: `Opened` events; s_server: none counted).
#[derive(Debug, Clone, Copy)]
pub struct Handshakes {
    /// Connections the client completed.
    pub count: u64,
    /// The client loop's wall-clock time.
    pub elapsed: Duration,
    /// The server's CPU time over the run.
    pub cpu: Duration,
    /// `Opened` events our frontend saw (0 for s_server, which has no such count).
    pub opened: u64,
}

impl Handshakes {
    /// Handshakes per second.
    pub fn rate(&self) -> f64 {
        self.count as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// Server CPU seconds per handshake.
    pub fn cpu_per_handshake(&self) -> f64 {
        self.cpu.as_secs_f64() / self.count.max(1) as f64
    }
}

/// The client of P17, the same for both servers: a thread of this process in a loop for
/// `secs` seconds of new connections to 127.0.0.1:`port`, each a full handshake with the
/// kit's client certificate (our session code, rustls; a new session each time, so no
/// resumption), then close_notify, then reading until the server's end: a connection counts
/// only once the server has seen it through (it answered the client's Finished with its
/// session tickets and the close_notify with its own end). Returns (connections,
/// wall-clock time, the client thread's CPU time).
fn client_loop(kit: &Kit, port: u16, secs: u32) -> Result<(u64, Duration, Duration)> {
    let setup = kit.client_setup()?;
    let run = Duration::from_secs(secs as u64);
    let thread = std::thread::spawn(move || -> Result<(u64, Duration, Duration)> {
        let cpu = cpu_time(Who::Thread)?;
        let start = Instant::now();
        let mut count = 0;
        let mut buf = [0u8; 4096];
        while start.elapsed() < run {
            let mut peer = TlsPeer::connect(&setup, port, STARTUP)
                .map_err(|e| format!("handshake {}: {e}", count + 1))?;
            peer.session.close(peer.socket.as_fd());
            loop {
                match peer.read(&mut buf) {
                    Ok(0) => break,
                    Ok(_) => {}
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    // A reset after close_notify is an end too.
                    Err(e) if e.kind() == io::ErrorKind::ConnectionReset => break,
                    Err(e) => return Err(format!("connection {}: read: {e}", count + 1)),
                }
            }
            count += 1;
        }
        let elapsed = start.elapsed();
        Ok((count, elapsed, cpu_time(Who::Thread)? - cpu))
    });
    thread.join().map_err(|_| "the handshake client panicked")?
}

/// P17, ours: a TLS server chardev on a loop in this process.
pub fn handshakes_chardev(kit: &Kit, secs: u32) -> Result<Handshakes> {
    let chardevs = Chardevs::new()?;
    let object = format!("tls-creds-x509,id=ts,dir={},endpoint=server", kit.server.display());
    chardevs.registry.add_object_str(&object).context(format!("add '{object}'"))?;
    let port = free_port()?;
    let spec = format!("socket,id=hs,host=127.0.0.1,port={port},server=on,wait=off,tls-creds=ts");
    chardevs.registry.add_str(&spec).context(format!("add '{spec}'"))?;
    let handle = chardevs.registry.connect("hs").context("claim chardev 'hs'")?;
    let opens = Arc::new(OpenCount::default());
    handle.set_frontend(Idle(Arc::clone(&opens)));
    let cpu = cpu_time(Who::Process)?;
    let (count, elapsed, client_cpu) = client_loop(kit, port, secs)?;
    // Every Opened came before its connection's end, which the client waited for.
    let opened = opens.wait_for(count, Duration::from_secs(2));
    let cpu = (cpu_time(Who::Process)? - cpu).saturating_sub(client_cpu);
    drop(handle);
    drop(chardevs);
    if opened < count {
        return Err(format!(
            "the client completed {count} handshakes, the chardev opened {opened}"
        ));
    }
    Ok(Handshakes { count, elapsed, cpu, opened })
}

/// P17, the yardstick: `openssl s_server -Verify 1` with the same certificates.
pub fn handshakes_s_server(kit: &Kit, secs: u32) -> Result<Handshakes> {
    let port = free_port()?;
    let srv = &kit.server;
    let child = Command::new("openssl")
        .args(["s_server", "-quiet", "-naccept", "1000000000", "-Verify", "1", "-accept"])
        .arg(format!("127.0.0.1:{port}"))
        .arg("-cert")
        .arg(srv.join("server-cert.pem"))
        .arg("-key")
        .arg(srv.join("server-key.pem"))
        .arg("-CAfile")
        .arg(srv.join("ca-cert.pem"))
        // Held open: s_server reads its stdin as what to send.
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("start openssl s_server")?;
    let mut server = Process::new(child, "openssl s_server");
    let pid = server.child().id();
    let cpu = process_cpu(pid)?;
    let run = client_loop(kit, port, secs);
    let cpu = process_cpu(pid)? - cpu;
    let exited = server.exited();
    drop(server);
    let (count, elapsed, _) = run.map_err(|e| match exited {
        Some(s) => format!("{e} (s_server had ended: {s})"),
        None => e,
    })?;
    Ok(Handshakes { count, elapsed, cpu, opened: 0 })
}

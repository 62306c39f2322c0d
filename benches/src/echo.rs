//! P4 and P5: round trips of 64-byte messages through a chardev whose frontend echoes them,
//! against a blocking echo thread on a socketpair (P4), and the same chardev echo on a loop
//! that also serves thousands of idle unix socket chardevs, against one on a loop of its own
//! (P5), with what those idle chardevs cost in resident memory.
//!
//! The client sends one message, waits for its echo, and sends the next: the latency of each
//! round trip is timed on the client, with the echo on the other core.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc::channel;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chardev::FrontendHandle;

use crate::fixture::{wait_opened, Chardevs, Echo, Idle, OpenCount};
use crate::pattern::Pattern;
use crate::peer::{self, Process, STARTUP};
use crate::proc_status::{open_fds, raise_fd_limit, vm_rss};
use crate::stats::percentile;
use crate::{Context, Result};

/// The message size.
pub const MESSAGE: usize = 64;

/// Fds the crowd's process keeps for everything but the idle chardevs: stdio, two loops
/// (epoll and waker each), the echo chardevs and their clients, the child's pipes, slack.
const FD_RESERVE: u64 = 64;

/// How round trips went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Latencies {
    /// The median round trip.
    pub p50: Duration,
    /// The 99th percentile round trip.
    pub p99: Duration,
    /// How many round trips were timed (after the warm-up).
    pub timed: usize,
}

/// Sends `messages` messages on `client`, each after the previous one's echo came back, and
/// checks every echo. The first tenth (at most 1000) warms up and is not timed.
pub fn round_trips(client: &mut UnixStream, messages: usize) -> Result<Latencies> {
    client.set_read_timeout(Some(Duration::from_secs(10))).context("set a read timeout")?;
    let pattern = Pattern::default();
    let warmup = (messages / 10).min(1000);
    let mut times = Vec::with_capacity(messages);
    let mut back = [0u8; MESSAGE];
    for i in 0..messages {
        let msg = pattern.at((i * MESSAGE) as u64, MESSAGE);
        let start = Instant::now();
        client.write_all(msg).context("send a message")?;
        client.read_exact(&mut back).context(format!("read the echo of message {i}"))?;
        let rtt = start.elapsed();
        if back != msg {
            return Err(format!("the echo of message {i} differs from it"));
        }
        if i >= warmup {
            times.push(rtt);
        }
    }
    times.sort_unstable();
    Ok(Latencies {
        p50: percentile(&times, 50.0),
        p99: percentile(&times, 99.0),
        timed: times.len(),
    })
}

/// An echoing chardev with its connected client.
pub struct ChardevEcho {
    /// The client end, for [`round_trips`].
    pub client: UnixStream,
    _handle: FrontendHandle,
}

impl ChardevEcho {
    /// Adds unix socket server chardev `id` at `path` on `chardevs`, with an [`Echo`]
    /// frontend, and connects a client to it.
    pub fn new(chardevs: &Chardevs, id: &str, path: &Path) -> Result<ChardevEcho> {
        let handle = chardevs.unix_server(id, path, "")?;
        let (tx, notes) = channel();
        handle.set_frontend(Echo::new(handle.clone(), tx));
        let client = peer::connect(path)?;
        wait_opened(&notes, STARTUP)?;
        Ok(ChardevEcho { client, _handle: handle })
    }
}

/// P4 through a chardev on a fresh loop (a socket under `dir`).
pub fn chardev(dir: &Path, messages: usize) -> Result<Latencies> {
    let chardevs = Chardevs::new()?;
    let mut echo = ChardevEcho::new(&chardevs, "p4", &dir.join("p4.sock"))?;
    round_trips(&mut echo.client, messages)
}

/// P4's baseline: a thread that echoes with blocking reads and writes on a socketpair.
pub fn raw(messages: usize) -> Result<Latencies> {
    let (mut client, mut server) = UnixStream::pair().context("socketpair")?;
    let echo = std::thread::spawn(move || -> std::io::Result<()> {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match server.read(&mut buf)? {
                0 => return Ok(()),
                n => server.write_all(&buf[..n])?,
            }
        }
    });
    let latencies = round_trips(&mut client, messages);
    drop(client); // the echo thread reads the end and returns
    let echoed = echo.join().map_err(|_| "the echo thread panicked")?;
    let latencies = latencies?;
    echoed.context("echo")?;
    Ok(latencies)
}

/// Thousands of idle unix socket server chardevs on one loop, each with a frontend and a
/// connected client; the clients live in a child process so that the fds split over two
/// processes (a server costs two fds: its listener and the accepted connection).
pub struct Crowd {
    /// The crowd's loop and registry; add the active chardev here.
    pub chardevs: Chardevs,
    /// How many idle chardevs there are.
    pub idle: usize,
    /// `VmRSS` before the idle chardevs were added, in bytes.
    pub rss_before: u64,
    /// `VmRSS` once every idle chardev had its client, in bytes.
    pub rss_after: u64,
    /// The process's fd limit, which bounds `idle`.
    pub fd_limit: u64,
    _handles: Vec<FrontendHandle>,
    _clients: Process,
}

impl Crowd {
    /// Adds up to `want` idle chardevs (fewer if the fd limit does not allow `want`) with
    /// sockets in `dir`; `clients` is the command that runs [`hold_clients`] in a child,
    /// to which the directory and the count are appended.
    pub fn new(dir: &Path, want: usize, mut clients: Command) -> Result<Crowd> {
        let fd_limit = raise_fd_limit()?;
        let fit = fd_limit.saturating_sub(open_fds()? + FD_RESERVE) / 2;
        let idle = want.min(fit as usize);
        let chardevs = Chardevs::new()?;
        let opens = Arc::new(OpenCount::default());
        let rss_before = vm_rss()?;
        let mut handles = Vec::with_capacity(idle);
        for i in 0..idle {
            let handle = chardevs.unix_server(&format!("idle{i}"), &idle_path(dir, i), "")?;
            handle.set_frontend(Idle(Arc::clone(&opens)));
            handles.push(handle);
        }
        let child = clients
            .arg(dir)
            .arg(idle.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .context("start the clients' process")?;
        let mut child = Process::new(child, "the clients' process");
        let stdout = child.child().stdout.take().ok_or("the clients' process has no stdout")?;
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).context("read from the clients' process")?;
        if line.trim() != "ready" {
            return Err(format!("the clients' process did not connect: {:?}", child.exited()));
        }
        let opened = opens.wait_for(idle as u64, Duration::from_secs(60));
        if opened != idle as u64 {
            return Err(format!("{opened} of {idle} idle chardevs opened"));
        }
        let rss_after = vm_rss()?;
        Ok(Crowd {
            chardevs,
            idle,
            rss_before,
            rss_after,
            fd_limit,
            _handles: handles,
            _clients: child,
        })
    }
}

fn idle_path(dir: &Path, i: usize) -> PathBuf {
    dir.join(format!("idle{i}.sock"))
}

/// The child side of [`Crowd`]: connects a client to each of the `n` idle chardevs under
/// `dir`, prints `ready`, and holds the connections until its standard input closes.
pub fn hold_clients(dir: &Path, n: usize) -> Result<()> {
    raise_fd_limit()?;
    let clients =
        (0..n).map(|i| peer::connect(&idle_path(dir, i))).collect::<Result<Vec<UnixStream>>>()?;
    println!("ready");
    std::io::stdout().flush().context("write to the parent")?;
    let mut sink = Vec::new();
    let _ = std::io::stdin().read_to_end(&mut sink);
    drop(clients);
    Ok(())
}

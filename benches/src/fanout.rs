//! P10-P13, one console and many viewers (issue 17): a socket server with `clients=8` and
//! `history=1M` sends the same output to every connection.
//!
//! - P10 and P11 run serial-console with its serial port such a server; its guest writes
//!   `flood N` (N bytes of a checkable pattern, through its emulated UART) while viewers,
//!   threads of this process each on its own connection, read and check the stream. P11 has
//!   one viewer stop reading during the flood: it must see exactly one gap marker, whose
//!   count is exactly what it missed. P10 also runs an unpaced fan-out in this process: a
//!   frontend handle writing as fast as it can (for information).
//! - P12 fills 1 MiB of history in this process and counts the send calls that replay it
//!   to a new viewer (`SessionInfo::writes`).
//! - P13 reads serial-console's resident memory during a flood to 8 viewers, one stopped.
//!
//! Every viewer checks every byte it receives against the stream's pattern (even in full
//! runs: a gap marker can only be found so) and understands [`gap_marker`]s: where one
//! appears, the stream must go on at the position it says, so a wrong count is caught like a
//! wrong byte.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use chardev::fanout::gap_marker;

use crate::fixture::Chardevs;
use crate::pattern::{Pattern, CHUNK, PERIOD};
use crate::peer::{self, Process, STARTUP};
use crate::proc_status::{cpu_time, process_cpu, reset_peak, status_bytes, Who};
use crate::{transfer_deadline, Context, Result};

/// Viewers of the many-viewers scenarios: `clients=8`.
pub const VIEWERS: usize = 8;

/// The history (and viewer queue) the scenarios configure: `history=1M`.
pub const HISTORY: u64 = 1 << 20;

/// What serial-console's guest prints before waiting for a command.
const PROMPT: &[u8] = b"guest$ ";

/// What follows `flood N`'s last pattern byte: its newline, then the next prompt.
const FLOOD_TRAILER: &[u8] = b"\r\nguest$ ";

/// The byte at position `i` of serial-console's `flood N` output: the formula of
/// `demos::machine::flood_pattern` (not a dependency: `compare --smoke`, which the test
/// suite runs, checks every byte serial-console floods against this one).
pub fn flood_byte(i: u64) -> u8 {
    (i % 251) as u8 ^ (i >> 16) as u8
}

/// Which byte stream a viewer checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    /// serial-console's `flood N` ([`flood_byte`]).
    Flood,
    /// The benchmarks' own pattern ([`crate::pattern`]: `i % 251`).
    Pattern,
}

/// `i % 251` for `i` in `0..CHUNK + 251`: any piece of up to [`CHUNK`] bytes of either stream
/// is a slice of it, XORed with one byte.
fn period_table() -> &'static [u8] {
    static TABLE: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    TABLE.get_or_init(|| (0..CHUNK + PERIOD).map(|i| (i % PERIOD) as u8).collect())
}

impl Stream {
    fn byte(self, i: u64) -> u8 {
        match self {
            Stream::Flood => flood_byte(i),
            Stream::Pattern => (i % PERIOD as u64) as u8,
        }
    }

    /// Whether `data` is the stream from position `at` on. Branch-free over each piece (an
    /// OR of XORs that the compiler vectorises), so that checking every byte costs the
    /// viewers little beside their reads: every byte must be checked to find gap markers.
    fn matches(self, at: u64, data: &[u8]) -> bool {
        let table = period_table();
        let mut pos = at;
        let mut rest = data;
        while !rest.is_empty() {
            // The flood XORs in `i >> 16`, constant within an aligned 64 KiB block.
            let block_end = (pos | 0xffff) + 1;
            let n = rest.len().min((block_end - pos) as usize).min(CHUNK);
            let xor = match self {
                Stream::Flood => (pos >> 16) as u8,
                Stream::Pattern => 0,
            };
            let start = (pos % PERIOD as u64) as usize;
            let expect = &table[start..start + n];
            let diff = rest[..n].iter().zip(expect).fold(0u8, |acc, (&a, &b)| acc | (a ^ b ^ xor));
            if diff != 0 {
                return false;
            }
            pos += n as u64;
            rest = &rest[n..];
        }
        true
    }

    /// The offset in `data` (stream bytes from `at` on) of the first byte that is not the
    /// stream's.
    fn mismatch(self, at: u64, data: &[u8]) -> Option<usize> {
        if self.matches(at, data) {
            return None;
        }
        data.iter().enumerate().find(|&(j, &b)| b != self.byte(at + j as u64)).map(|(j, _)| j)
    }
}

/// What [`parse_marker`] found at the start of some bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Marker {
    /// A whole gap marker of `len` bytes, saying `dropped` bytes are missing.
    Whole { dropped: u64, len: usize },
    /// The bytes so far may be the start of a marker: more are needed.
    Partial,
    /// Not a marker.
    No,
}

/// Whether `buf` starts with a [`gap_marker`], derived from the library's own text.
fn parse_marker(buf: &[u8]) -> Marker {
    let template = gap_marker(0);
    let (prefix, suffix) = template.split_once('0').unwrap_or((&template, ""));
    let (prefix, suffix) = (prefix.as_bytes(), suffix.as_bytes());
    let n = buf.len().min(prefix.len());
    if buf[..n] != prefix[..n] {
        return Marker::No;
    }
    if n < prefix.len() {
        return Marker::Partial;
    }
    let rest = &buf[prefix.len()..];
    let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    if digits > 20 {
        return Marker::No;
    }
    if digits == rest.len() {
        return Marker::Partial;
    }
    let after = &rest[digits..];
    let n = after.len().min(suffix.len());
    if digits == 0 || after[..n] != suffix[..n] {
        return Marker::No;
    }
    if n < suffix.len() {
        return Marker::Partial;
    }
    let dropped = std::str::from_utf8(&rest[..digits]).ok().and_then(|d| d.parse().ok());
    match dropped {
        Some(dropped) => Marker::Whole { dropped, len: prefix.len() + digits + suffix.len() },
        None => Marker::No,
    }
}

/// A viewer's check of the stream positions `from..from + len`: every byte it is given
/// must be the stream's, except where a gap marker says bytes were dropped, after which the
/// stream must go on exactly that many bytes later.
#[derive(Debug, Clone)]
pub struct StreamCheck {
    stream: Stream,
    end: u64,
    at: u64,
    delivered: u64,
    gaps: Vec<u64>,
    /// The last stream bytes taken (at most [`RECENT`]): a marker's first bytes may have
    /// matched the stream by chance (its `\r` where the stream had a `\r`).
    recent: Vec<u8>,
    /// The start of a gap marker split between two reads.
    carry: Vec<u8>,
    error: Option<String>,
}

/// How far back a marker may have started, within bytes that matched the stream.
const RECENT: usize = 16;

impl StreamCheck {
    /// A check of stream bytes `from..from + len`.
    pub fn new(stream: Stream, from: u64, len: u64) -> StreamCheck {
        StreamCheck {
            stream,
            end: from + len,
            at: from,
            delivered: 0,
            gaps: Vec::new(),
            recent: Vec::with_capacity(2 * RECENT),
            carry: Vec::new(),
            error: None,
        }
    }

    /// Whether the last stream byte has been seen (or the check failed).
    pub fn complete(&self) -> bool {
        self.at == self.end || self.error.is_some()
    }

    /// Stream bytes received (not dropped).
    pub fn delivered(&self) -> u64 {
        self.delivered
    }

    /// The count of each gap marker seen, in order.
    pub fn gaps(&self) -> &[u64] {
        &self.gaps
    }

    /// The first thing found wrong, if any.
    pub fn error(&self) -> Option<&str> {
        self.error.as_deref()
    }

    /// Takes the next bytes received; returns how many of them it used (the rest come after
    /// the end of the checked stream).
    pub fn consume(&mut self, data: &[u8]) -> usize {
        if self.complete() {
            return 0;
        }
        if self.carry.is_empty() {
            return self.take(data);
        }
        let carried = self.carry.len();
        let mut buf = std::mem::take(&mut self.carry);
        buf.extend_from_slice(data);
        // What was carried was counted already: count only the new bytes used.
        self.take(&buf).saturating_sub(carried)
    }

    fn remember(&mut self, taken: &[u8]) {
        if taken.len() >= RECENT {
            self.recent.clear();
            self.recent.extend_from_slice(&taken[taken.len() - RECENT..]);
        } else {
            self.recent.extend_from_slice(taken);
            let over = self.recent.len().saturating_sub(RECENT);
            self.recent.drain(..over);
        }
    }

    fn take(&mut self, buf: &[u8]) -> usize {
        let mut i = 0;
        while i < buf.len() && self.at < self.end {
            let rest = &buf[i..];
            let piece = &rest[..rest.len().min((self.end - self.at) as usize)];
            let bad = self.stream.mismatch(self.at, piece);
            let good = bad.unwrap_or(piece.len());
            self.remember(&piece[..good]);
            self.at += good as u64;
            self.delivered += good as u64;
            i += good;
            if bad.is_none() {
                continue;
            }
            // A marker here, or up to RECENT bytes back where it matched the stream.
            let ahead = &buf[i..buf.len().min(i + 256)];
            let found = (0..=self.recent.len()).find_map(|back| {
                let mut candidate = self.recent[self.recent.len() - back..].to_vec();
                candidate.extend_from_slice(ahead);
                match parse_marker(&candidate) {
                    Marker::No => None,
                    m => Some((back, m)),
                }
            });
            let Some((back, marker)) = found else {
                self.error = Some(format!(
                    "stream byte {} is {:#04x}, expected {:#04x}",
                    self.at,
                    buf[i],
                    self.stream.byte(self.at)
                ));
                return buf.len();
            };
            let kept = self.recent.len() - back;
            let replayed = self.recent.split_off(kept);
            self.at -= back as u64;
            self.delivered -= back as u64;
            match marker {
                Marker::Whole { dropped, len } => {
                    if dropped == 0 || self.at + dropped >= self.end {
                        self.error = Some(format!(
                            "a gap marker at stream byte {} says {dropped} bytes were dropped, \
                             of {} left",
                            self.at,
                            self.end - self.at
                        ));
                        return buf.len();
                    }
                    self.gaps.push(dropped);
                    self.at += dropped;
                    self.recent.clear();
                    i += len - back;
                }
                Marker::Partial | Marker::No => {
                    self.carry = replayed;
                    self.carry.extend_from_slice(&buf[i..]);
                    return buf.len();
                }
            }
        }
        i
    }
}

/// What one viewer saw.
#[derive(Debug, Clone)]
pub struct Seen {
    /// Stream bytes it received.
    pub delivered: u64,
    /// The count of each gap marker it saw.
    pub gaps: Vec<u64>,
    /// When the stream's last byte reached it.
    pub done: Instant,
}

/// What a viewer thread does, beyond reading and checking.
struct Plan {
    stream: Stream,
    /// Stream bytes to check (from position 0).
    len: u64,
    /// Read up to and including this, then report ready (serial-console's prompt).
    ready_after: Option<&'static [u8]>,
    /// The stream starts after this text (`flood N` echoed).
    header: Option<Vec<u8>>,
    /// Exactly this follows the stream.
    trailer: &'static [u8],
    deadline: Duration,
}

/// A viewer on a thread of its own: its result when joined.
struct Viewer {
    thread: JoinHandle<Result<Seen>>,
    /// Set for a viewer that stops reading after it is ready: it reads again when sent ().
    resume: Option<Sender<()>>,
}

/// Reads until `text` has arrived (after the bytes `seen` already); returns the bytes after
/// it.
fn read_past(
    s: &mut UnixStream,
    mut seen: Vec<u8>,
    text: &[u8],
    deadline: Instant,
    what: &str,
) -> Result<Vec<u8>> {
    let mut buf = vec![0u8; CHUNK];
    loop {
        if let Some(at) = seen.windows(text.len()).position(|w| w == text) {
            return Ok(seen.split_off(at + text.len()));
        }
        let left = deadline.saturating_duration_since(Instant::now()).max(Duration::from_millis(1));
        s.set_read_timeout(Some(left)).context("set a read timeout")?;
        match s.read(&mut buf).context(format!("read {what}"))? {
            0 => return Err(format!("the console closed before {what}")),
            n => seen.extend_from_slice(&buf[..n]),
        }
    }
}

/// A viewer's thread: ready, maybe paused, then the stream checked to its end.
fn spawn_viewer(
    mut s: UnixStream,
    plan: Plan,
    name: String,
    ready: Sender<()>,
    stop: bool,
) -> Viewer {
    let (resume, resumed) = channel::<()>();
    let thread = std::thread::spawn(move || -> Result<Seen> {
        let deadline = Instant::now() + plan.deadline;
        let mut early = match plan.ready_after {
            Some(text) => read_past(&mut s, Vec::new(), text, deadline, "the prompt")?,
            None => Vec::new(),
        };
        let _ = ready.send(());
        if stop {
            // Stopped: its socket and its queue fill while the others read on.
            resumed.recv_timeout(plan.deadline).map_err(|_| "never resumed".to_string())?;
        }
        if let Some(header) = &plan.header {
            let text = String::from_utf8_lossy(header).escape_debug().to_string();
            early = read_past(&mut s, early, header, deadline, &format!("'{text}'"))?;
        }
        let mut check = StreamCheck::new(plan.stream, 0, plan.len);
        let mut after = Vec::new();
        let mut used = check.consume(&early);
        after.extend_from_slice(&early[used..]);
        let mut buf = vec![0u8; CHUNK];
        let mut done = Instant::now();
        while !check.complete() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(format!(
                    "{name}: {} of {} stream bytes after {:?}",
                    check.delivered(),
                    plan.len,
                    plan.deadline
                ));
            }
            s.set_read_timeout(Some(left)).context("set a read timeout")?;
            let n = s.read(&mut buf).context(format!("{name}: read the stream"))?;
            if n == 0 {
                return Err(format!("{name}: closed after {} stream bytes", check.delivered()));
            }
            used = check.consume(&buf[..n]);
            done = Instant::now();
            after.extend_from_slice(&buf[used..n]);
        }
        if let Some(e) = check.error() {
            return Err(format!("{name}: corrupt stream: {e}"));
        }
        while after.len() < plan.trailer.len() {
            let left =
                deadline.saturating_duration_since(Instant::now()).max(Duration::from_millis(1));
            s.set_read_timeout(Some(left)).context("set a read timeout")?;
            match s.read(&mut buf).context(format!("{name}: read what follows the stream"))? {
                0 => break,
                n => after.extend_from_slice(&buf[..n]),
            }
        }
        if !after.starts_with(plan.trailer) {
            return Err(format!(
                "{name}: after the stream came {:?}, expected {:?}",
                String::from_utf8_lossy(&after[..after.len().min(80)]),
                String::from_utf8_lossy(plan.trailer)
            ));
        }
        Ok(Seen { delivered: check.delivered(), gaps: check.gaps().to_vec(), done })
    });
    Viewer { thread, resume: stop.then_some(resume) }
}

fn join(viewer: Viewer) -> Result<Seen> {
    viewer.thread.join().map_err(|_| "a viewer thread panicked".to_string())?
}

/// Waits for `n` ready reports.
fn wait_ready(ready: &Receiver<()>, n: usize) -> Result<()> {
    let deadline = Instant::now() + STARTUP;
    for i in 0..n {
        let left = deadline.saturating_duration_since(Instant::now());
        ready
            .recv_timeout(left)
            .map_err(|_| format!("{i} of {n} viewers ready after {STARTUP:?}"))?;
    }
    Ok(())
}

/// One flood through serial-console to its viewers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Flood {
    /// Viewers connected (at most [`VIEWERS`]).
    pub viewers: usize,
    /// Bytes the guest writes.
    pub bytes: u64,
    /// The last viewer stops reading when the flood starts, and reads again once the others
    /// have it all.
    pub stop_one: bool,
    /// Also `queue=1M` on the server (P13; the default queue is 1 MiB too).
    pub queue: bool,
}

/// What a flood measured.
#[derive(Debug, Clone)]
pub struct FloodRun {
    /// Each viewer's view, the first (the writer) first; the stopped one last.
    pub seen: Vec<Seen>,
    /// When the command was sent.
    pub start: Instant,
    /// serial-console's CPU time (user and system) from the command to the last running
    /// viewer's last byte.
    pub cpu: Duration,
    /// This process's CPU time over the same span: the viewers' reads and checks (the main
    /// thread only waits).
    pub viewers_cpu: Duration,
    /// serial-console's resident memory before the command, and its peak until the last
    /// running viewer's last byte (`VmRSS`, `VmHWM` after resetting it).
    pub rss: (u64, u64),
}

impl FloodRun {
    /// A viewer's rate: stream bytes it received per second since the command.
    pub fn rate(&self, seen: &Seen) -> f64 {
        seen.delivered as f64 / (seen.done - self.start).as_secs_f64().max(1e-9)
    }
}

/// Starts serial-console with its serial port a unix server of `clients=8,history=1M` in
/// `dir`, connects the viewers, has the first (the writer) type `flood N`, and checks every
/// viewer's stream.
pub fn flood(program: &Path, dir: &Path, f: Flood) -> Result<FloodRun> {
    let path = dir.join("p10-serial.sock");
    let _ = std::fs::remove_file(&path);
    let stderr_path = dir.join("p10-stderr.txt");
    let stderr = std::fs::File::create(&stderr_path).context("create serial-console's stderr")?;
    let queue = if f.queue { format!(",queue={HISTORY}") } else { String::new() };
    let serial = format!(
        "unix:{},server=on,wait=off,clients={VIEWERS},history={HISTORY}{queue}",
        path.display()
    );
    let child = Command::new(program)
        .args(["-nodefaults", "-serial", &serial])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .context(format!("start {}", program.display()))?;
    let process = Process::new(child, "serial-console");
    let said = |e: String| {
        let stderr = std::fs::read_to_string(&stderr_path).unwrap_or_default();
        match stderr.lines().last() {
            Some(last) => format!("{e} (serial-console's stderr ends: {last})"),
            None => e,
        }
    };
    run_flood(process, &path, f).map_err(said)
}

fn run_flood(mut process: Process, path: &Path, f: Flood) -> Result<FloodRun> {
    let pid = process.child().id();
    let header = format!("flood {}\r\n", f.bytes).into_bytes();
    let deadline = transfer_deadline(f.bytes * f.viewers as u64);
    let plan = || Plan {
        stream: Stream::Flood,
        len: f.bytes,
        ready_after: Some(PROMPT),
        header: Some(header.clone()),
        trailer: FLOOD_TRAILER,
        deadline,
    };
    let (ready_tx, ready) = channel();
    let mut viewers = Vec::new();
    let mut writer = None;
    for i in 0..f.viewers {
        let s = peer::connect(path)?;
        if i == 0 {
            writer = Some(s.try_clone().context("clone the writer's connection")?);
        }
        let stop = f.stop_one && i == f.viewers - 1;
        viewers.push(spawn_viewer(s, plan(), format!("viewer {i}"), ready_tx.clone(), stop));
        if i == 0 {
            // The first to connect is the writer: the others come after it.
            wait_ready(&ready, 1)?;
        }
    }
    wait_ready(&ready, f.viewers - 1)?;
    let mut writer = writer.ok_or("no viewers")?;
    let before = status_bytes(pid, "VmRSS")?;
    reset_peak(pid)?;
    let cpu = process_cpu(pid)?;
    let viewers_cpu = cpu_time(Who::Process)?;
    let start = Instant::now();
    writer.write_all(format!("flood {}\r", f.bytes).as_bytes()).context("type the command")?;
    let stopped = if f.stop_one { viewers.pop() } else { None };
    let mut seen = Vec::new();
    for v in viewers {
        seen.push(join(v)?);
    }
    let cpu = process_cpu(pid)? - cpu;
    let viewers_cpu = cpu_time(Who::Process)? - viewers_cpu;
    let peak = status_bytes(pid, "VmHWM")?;
    if let Some(v) = stopped {
        if let Some(resume) = &v.resume {
            let _ = resume.send(());
        }
        seen.push(join(v)?);
    }
    if let Some(status) = process.exited() {
        return Err(format!("serial-console ended: {status}"));
    }
    drop(process);
    Ok(FloodRun { seen, start, cpu, viewers_cpu, rss: (before, peak) })
}

/// What the unpaced fan-out measured.
#[derive(Debug, Clone)]
pub struct Unpaced {
    /// Each viewer's view.
    pub seen: Vec<Seen>,
    /// When the first write began.
    pub start: Instant,
    /// How long the writes took (a write never waits for the viewers).
    pub writing: Duration,
    /// This process's CPU time over the run (writer, loop and viewers).
    pub cpu: Duration,
}

/// Waits until chardev `id` has `n` sessions open.
fn wait_sessions(chardevs: &Chardevs, id: &str, n: usize) -> Result<()> {
    peer::retry(&format!("{n} sessions on '{id}'"), STARTUP, || {
        let open = chardevs.registry.sessions(id).map_err(std::io::Error::other)?.len();
        if open == n {
            Ok(())
        } else {
            Err(std::io::Error::other(format!("{open} open")))
        }
    })
}

/// A frontend handle of a `clients=8,history=1M` unix server in this process writes `bytes`
/// of the pattern as fast as it can (a write never waits for viewers) while `viewers`
/// threads read: what the fan-out costs without a guest to pace it. Viewers that fall more
/// than the ring behind lose the oldest bytes; their gap markers are checked and counted.
pub fn unpaced(dir: &Path, viewers: usize, bytes: u64) -> Result<Unpaced> {
    let chardevs = Chardevs::new()?;
    let path = dir.join("p10-unpaced.sock");
    let handle =
        chardevs.unix_server("p10", &path, &format!(",clients={VIEWERS},history={HISTORY}"))?;
    let (ready_tx, ready) = channel();
    let mut threads = Vec::new();
    for i in 0..viewers {
        let s = peer::connect(&path)?;
        let plan = Plan {
            stream: Stream::Pattern,
            len: bytes,
            ready_after: None,
            header: None,
            trailer: b"",
            deadline: transfer_deadline(bytes * viewers as u64),
        };
        threads.push(spawn_viewer(s, plan, format!("viewer {i}"), ready_tx.clone(), false));
    }
    wait_ready(&ready, viewers)?;
    wait_sessions(&chardevs, "p10", viewers)?;
    let pattern = Pattern::default();
    let cpu = cpu_time(Who::Process)?;
    let start = Instant::now();
    let mut offset = 0;
    while offset < bytes {
        let n = (bytes - offset).min(CHUNK as u64) as usize;
        let took = handle.write(pattern.at(offset, n)).context("write to the viewers")?;
        if took == 0 {
            return Err(format!("the server took nothing at byte {offset}"));
        }
        offset += took as u64;
    }
    let writing = start.elapsed();
    let mut seen = Vec::new();
    for v in threads {
        seen.push(join(v)?);
    }
    let cpu = cpu_time(Who::Process)? - cpu;
    Ok(Unpaced { seen, start, writing, cpu })
}

/// What replaying the history to a new viewer cost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Replay {
    /// Send calls that carried it (the session's `writes`).
    pub writes: u64,
    /// Bytes sent (the session's `sent`).
    pub sent: u64,
}

/// Fills a `clients=8,history=1M` unix server in this process with twice its history of
/// pattern output (so the ring has wrapped), connects one viewer, checks that it gets exactly
/// the last 1 MiB, and reads how many send calls it took from the registry.
pub fn replay(dir: &Path) -> Result<Replay> {
    let chardevs = Chardevs::new()?;
    let path = dir.join("p12.sock");
    let handle =
        chardevs.unix_server("p12", &path, &format!(",clients={VIEWERS},history={HISTORY}"))?;
    let total = 2 * HISTORY + 12_345;
    let pattern = Pattern::default();
    let mut offset = 0;
    while offset < total {
        let n = (total - offset).min(CHUNK as u64) as usize;
        let took = handle.write(pattern.at(offset, n)).context("write the history")?;
        if took == 0 {
            return Err(format!("the server took nothing at byte {offset}"));
        }
        offset += took as u64;
    }
    let mut s = peer::connect(&path)?;
    let deadline = Instant::now() + transfer_deadline(HISTORY);
    let mut check = StreamCheck::new(Stream::Pattern, total - HISTORY, HISTORY);
    let mut buf = vec![0u8; CHUNK];
    while !check.complete() {
        let left = deadline.saturating_duration_since(Instant::now()).max(Duration::from_millis(1));
        s.set_read_timeout(Some(left)).context("set a read timeout")?;
        match s.read(&mut buf).context("read the history")? {
            0 => return Err(format!("closed after {} bytes of history", check.delivered())),
            n => {
                if check.consume(&buf[..n]) != n {
                    return Err("more than the history arrived".into());
                }
            }
        }
    }
    if let Some(e) = check.error() {
        return Err(format!("corrupt history: {e}"));
    }
    if !check.gaps().is_empty() {
        return Err(format!("gap markers in the history: {:?}", check.gaps()));
    }
    let sessions = chardevs.registry.sessions("p12").context("list the sessions of 'p12'")?;
    let [session] = sessions.as_slice() else {
        return Err(format!("{} sessions on 'p12', expected 1", sessions.len()));
    };
    if session.sent != HISTORY {
        return Err(format!("the session was sent {} bytes, expected {HISTORY}", session.sent));
    }
    Ok(Replay { writes: session.writes, sent: session.sent })
}

/// serial-console for P10, P11 and P13: `$SERIAL_CONSOLE`, or next to this program.
pub fn serial_console() -> PathBuf {
    crate::migrate_qemu::serial_console()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flood_bytes(from: u64, len: u64) -> Vec<u8> {
        (from..from + len).map(flood_byte).collect()
    }

    #[test]
    fn a_stream_in_any_split_checks_clean() {
        let data = flood_bytes(0, 300_000);
        for split in [1, 4093, 65536, 300_000] {
            let mut c = StreamCheck::new(Stream::Flood, 0, 300_000);
            for piece in data.chunks(split) {
                assert_eq!(c.consume(piece), piece.len());
            }
            assert!(c.complete() && c.error().is_none(), "{:?}", c.error());
            assert_eq!((c.delivered(), c.gaps()), (300_000, &[][..]));
        }
        let pattern: Vec<u8> = (70_000..200_000u64).map(|i| (i % 251) as u8).collect();
        let mut c = StreamCheck::new(Stream::Pattern, 70_000, 130_000);
        assert_eq!(c.consume(&pattern), pattern.len());
        assert!(c.complete() && c.error().is_none(), "{:?}", c.error());
    }

    #[test]
    fn a_gap_marker_split_across_reads_moves_the_stream_on_by_its_count() {
        let mut data = flood_bytes(0, 100_000);
        data.extend_from_slice(gap_marker(50_000).as_bytes());
        data.extend(flood_bytes(150_000, 50_000));
        data.extend_from_slice(b"\r\nguest$ ");
        for split in [7, 1000, 100_003, 65536] {
            let mut c = StreamCheck::new(Stream::Flood, 0, 200_000);
            let mut used = 0;
            for piece in data.chunks(split) {
                used += c.consume(piece);
            }
            assert!(c.complete() && c.error().is_none(), "{split}: {:?}", c.error());
            assert_eq!((c.delivered(), c.gaps()), (150_000, &[50_000][..]), "{split}");
            assert_eq!(&data[used..], b"\r\nguest$ ", "{split}");
        }
    }

    /// A marker comes where the stream's next bytes happen to be its first ones (`\r`, even
    /// `\r\n`): they matched, and must be given back.
    #[test]
    fn a_marker_whose_first_bytes_match_the_stream_is_found() {
        let cr = (0..1_000_000u64).find(|&i| flood_byte(i) == b'\r').unwrap();
        let mut data = flood_bytes(0, cr);
        data.extend_from_slice(gap_marker(2_000).as_bytes());
        data.extend(flood_bytes(cr + 2_000, 10_000));
        for split in [1, 3, cr as usize, cr as usize + 1, 4096] {
            let mut c = StreamCheck::new(Stream::Flood, 0, cr + 12_000);
            for piece in data.chunks(split) {
                c.consume(piece);
            }
            assert!(c.complete() && c.error().is_none(), "{split}: {:?}", c.error());
            assert_eq!((c.delivered(), c.gaps()), (cr + 10_000, &[2_000][..]), "{split}");
        }
    }

    #[test]
    fn a_marker_with_the_wrong_count_or_a_wrong_byte_is_caught() {
        let mut data = flood_bytes(0, 100_000);
        data.extend_from_slice(gap_marker(49_999).as_bytes());
        data.extend(flood_bytes(150_000, 50_000));
        let mut c = StreamCheck::new(Stream::Flood, 0, 200_000);
        c.consume(&data);
        assert!(c.error().is_some_and(|e| e.contains("expected")), "{:?}", c.error());

        let mut data = flood_bytes(0, 10_000);
        data[5000] ^= 1;
        let mut c = StreamCheck::new(Stream::Flood, 0, 10_000);
        c.consume(&data);
        assert!(c.error().is_some_and(|e| e.contains("stream byte 5000")), "{:?}", c.error());
    }

    #[test]
    fn markers_are_recognised_whole_partial_or_not() {
        let m = gap_marker(1234);
        assert_eq!(parse_marker(m.as_bytes()), Marker::Whole { dropped: 1234, len: m.len() });
        assert_eq!(parse_marker(&m.as_bytes()[..5]), Marker::Partial);
        assert_eq!(parse_marker(&m.as_bytes()[..m.len() - 1]), Marker::Partial);
        assert_eq!(parse_marker(b"\r\n[chardev: x"), Marker::No);
        assert_eq!(parse_marker(b"abc"), Marker::No);
    }
}

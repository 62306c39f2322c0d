//! `syslog` (an extension, as crosvm's `--serial type=syslog`): each line of the frontend's
//! output becomes one syslog record, a datagram to the local syslog socket (`/dev/log`, where
//! journald or rsyslog listens) or to the unix datagram socket at `path=`. This is how a
//! console reaches the collectors that ship logs off the host.
//!
//! ```text
//! -chardev syslog,id=ID[,path=SOCKET][,facility=NAME][,format=rfc3164|rfc5424][,tag=TAG]
//! ```
//!
//! **Records.** The identifier (RFC 3164's TAG, RFC 5424's APP-NAME) is `tag=`, or the
//! chardev id (its first 48 characters); the PID is this process's; the facility is
//! `facility=` (`user` by default, see [`SyslogFacility`]); the severity is always `info`
//! (a console's lines are the guest's ordinary output: nothing here can tell an error from
//! chatter, and `notice` would claim a significance they do not have). RFC 3164 framing, the
//! default, is what glibc's syslog(3) writes to `/dev/log` (`<14>Dec  3 10:20:01
//! vm0[4242]: text`, local time, no hostname): journald parses nothing else on that socket
//! (systemd #19251), and rsyslog's imuxsock parses it with its default special parser.
//! RFC 5424 (`<14>1 2026-12-03T10:20:01.123456+00:00 host vm0 4242 - - text`) keeps the
//! year, microseconds and the zone; rsyslog parses it on an imuxsock input with
//! `useSpecialParser="off"`, and it suits collectors that read RFC 5424 only.
//!
//! **Lines.** `\n` ends a line and a `\r` just before it is dropped (`\r\n` is a console's
//! line end). Empty lines send nothing. A partial line (a prompt) goes out as a record of its
//! own [`PARTIAL_LINE_DELAY`] (200 ms) after its first byte if no newline has come by then
//! (a timer of the loop); the rest of that line, when it comes, is a record of its own. A
//! line longer than [`MAX_RECORD_TEXT`] (1024 bytes) is split into records of at most that
//! much text, never inside a UTF-8 sequence: with the header a record stays below 2048 bytes,
//! the size RFC 5424 asks every receiver to take, and far below rsyslog's default
//! `maxMessageSize` (8k) and journald's limit (48k). NUL bytes are dropped (terminals ignore
//! them, and a collector that handles the text as a C string, journald, would cut the record
//! there); every other byte, control characters and escape sequences included, is sent as
//! the guest wrote it: how to show them is the collector's choice (rsyslog escapes control
//! characters as `#ooo`, `#033` for ESC, by default: `parser.escapeControlCharactersOnReceive`).
//!
//! **Flow.** `write` never blocks and never refuses: it takes every byte at once (a guest's
//! console must not stall because a log collector is slow). A record the socket cannot take
//! now (the collector's queue is full: `EAGAIN`; or the collector is gone: `ECONNREFUSED`,
//! its socket closed by a restart) waits in a queue of at most [`QUEUE_MAX`] (64 KiB of
//! records, oldest dropped first). The queue drains on the socket's next writable edge; a
//! collector that went away is connected to again at once and then every
//! [`RECONNECT_INTERVAL`] (500 ms), while records wait (a timer, never a busy loop). What the
//! queue had to drop is counted ([`SyslogStats`]), logged with `warn!`, and marked in the
//! stream: when records flow again, a record `[chardev: N bytes of output dropped (M
//! lines): ...]` goes first, where the gap is.
//!
//! **Creation.** The socket is connected when the chardev is created, and a socket that is
//! missing, not a socket, a stream socket, or that nobody listens on is an error naming
//! `path` then, and nothing is started: at that moment it is a mistake in the configuration
//! (a typo, the collector not installed or not started), and the operator who is there to
//! read the error is the one who can fix it, while a silent retry would lose the console
//! from its first line with nobody told. An outage after creation is a collector restarting,
//! which the queue and the retries ride out.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::io;
use std::os::fd::BorrowedFd;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use mio::net::UnixDatagram;
use mio::Interest;
use nix::libc;

use crate::backend::{refuse_fds, Chardev, Io, Waker};
use crate::error::{Error, Result};
use crate::frontend::callbacks::Event;
use crate::options::{
    BackendSpec, ChardevSpec, SyslogFacility, SyslogFormat, SyslogSpec, SYSLOG_SOCKET,
    SYSLOG_TAG_MAX,
};
use crate::registry::BuildContext;

/// The most text one record carries: a longer line is split into several records.
pub const MAX_RECORD_TEXT: usize = 1024;

/// How long a partial line waits for the rest of it before it goes out as a record.
pub const PARTIAL_LINE_DELAY: Duration = Duration::from_millis(200);

/// The most that waits (framed records, in bytes) while the collector is slow or away;
/// beyond it the oldest records are dropped and counted.
pub const QUEUE_MAX: usize = 64 * 1024;

/// How often a collector that went away is tried again while records wait for it.
pub const RECONNECT_INTERVAL: Duration = Duration::from_millis(500);

/// syslog(3)'s `LOG_INFO`: every record's severity.
const SEVERITY_INFO: u8 = 6;

/// The source number of the socket on the loop.
const SOCKET: usize = 0;
/// Timer ids: the partial line's delay, and the next try to reach a collector that went away.
const TIMER_PARTIAL: u64 = 1;
const TIMER_RECONNECT: u64 = 2;

/// Builds a `syslog` backend: connects to the socket now (see the module's doc for why an
/// unreachable socket is an error here).
pub fn build(spec: &ChardevSpec, _cx: &BuildContext<'_>) -> Result<Box<dyn Chardev>> {
    let BackendSpec::Syslog(syslog) = &spec.backend else {
        return Err(Error::UnknownBackend(spec.backend.kind().into()));
    };
    Ok(Box::new(Syslog::connect(&spec.id, syslog)?))
}

/// What a `syslog` chardev has done with its output so far, for management and tests
/// ([`Syslog::stats`], through [`Registry::with_backend`](crate::Registry::with_backend)).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SyslogStats {
    /// Records the collector's socket took (gap markers included).
    pub records_sent: u64,
    /// Records dropped: the oldest when the queue was full, or ones the socket refused.
    pub records_dropped: u64,
    /// The text those records carried, in bytes (the output they lost, line ends apart).
    pub bytes_dropped: u64,
    /// Records waiting now for the collector.
    pub queued: usize,
    /// Whether the socket is connected to a collector now.
    pub connected: bool,
}

/// The `syslog` backend: lines of output as records to a unix datagram socket.
#[derive(Debug)]
pub struct Syslog {
    /// The chardev id, for the log.
    id: String,
    path: PathBuf,
    framer: Framer,
    lines: Lines,
    link: Link,
    /// Whether the socket that `link` holds is registered with the loop.
    registered: bool,
    /// Records the socket could not take yet, oldest first; their bytes in `queued_bytes`.
    queue: VecDeque<Queued>,
    queued_bytes: usize,
    /// Output dropped since the last gap marker went out (it goes before the next record).
    gap: Gap,
    stats: SyslogStats,
    /// How this backend asks the loop for a timer from `write`'s thread; set at `register`.
    waker: Option<Waker>,
    partial_timer: Timer,
    reconnect_timer: Timer,
}

/// The socket to the collector.
#[derive(Debug)]
enum Link {
    /// Connected. `blocked`: the last send found the collector's queue full, and records wait
    /// for the socket's next writable edge.
    Up { socket: UnixDatagram, blocked: bool },
    /// The collector went away (its socket refuses): records wait, and the loop connects
    /// again. `stale` is the dead socket, until the loop deregisters it.
    Down { stale: Option<UnixDatagram> },
}

/// A timer that `write` (on any thread) asks the loop for: none, asked for through the
/// waker, or set and still to fire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Timer {
    Idle,
    Asked,
    Armed,
}

/// One framed record waiting in the queue, and how much output text it carries.
#[derive(Debug)]
struct Queued {
    record: Vec<u8>,
    text: usize,
}

/// Output dropped and not yet reported in the stream.
#[derive(Debug, Default, Clone, Copy)]
struct Gap {
    records: u64,
    bytes: u64,
}

/// What one send did.
enum Sent {
    /// The socket took the record.
    Done,
    /// The collector's queue (or our send buffer) is full: wait for a writable edge.
    Full,
    /// The collector is gone (its socket closed or removed): connect again.
    Gone(io::Error),
    /// The record cannot be sent at all (too large, out of memory): drop it.
    Failed(io::Error),
}

impl Syslog {
    /// A `syslog` backend for chardev `id`, connected to the socket `spec` names. An
    /// unreachable socket is an error naming `path`.
    pub fn connect(id: &str, spec: &SyslogSpec) -> Result<Syslog> {
        spec.check()?;
        let path = spec.path.clone().unwrap_or_else(|| PathBuf::from(SYSLOG_SOCKET));
        let socket = connect(&path).map_err(|e| unreachable(&path, &e))?;
        let tag = match &spec.tag {
            Some(tag) => tag.clone(),
            None => id.chars().take(SYSLOG_TAG_MAX).collect(),
        };
        Ok(Syslog {
            id: id.to_string(),
            path,
            framer: Framer::new(spec.format, spec.facility, tag),
            lines: Lines::default(),
            link: Link::Up { socket, blocked: false },
            registered: false,
            queue: VecDeque::new(),
            queued_bytes: 0,
            gap: Gap::default(),
            stats: SyslogStats::default(),
            waker: None,
            partial_timer: Timer::Idle,
            reconnect_timer: Timer::Idle,
        })
    }

    /// What this chardev has sent, dropped and queued so far.
    pub fn stats(&self) -> SyslogStats {
        SyslogStats {
            queued: self.queue.len(),
            connected: matches!(self.link, Link::Up { .. }),
            ..self.stats
        }
    }

    /// Queues a record of `text` (its framing with the time now) and sends what can go.
    fn send_text(&mut self, text: &[u8]) {
        let record = self.framer.frame(text, &self.framer.stamp());
        self.enqueue(record, text.len());
        self.flush();
    }

    /// Puts a record at the end of the queue, dropping the oldest beyond [`QUEUE_MAX`].
    fn enqueue(&mut self, record: Vec<u8>, text: usize) {
        self.queued_bytes += record.len();
        self.queue.push_back(Queued { record, text });
        while self.queued_bytes > QUEUE_MAX {
            let Some(old) = self.queue.pop_front() else { break };
            self.queued_bytes -= old.record.len();
            self.drop_record(old.text, "the queue for it is full");
        }
    }

    /// Counts a record that will never be sent, for the stats and the next gap marker.
    fn drop_record(&mut self, text: usize, why: &str) {
        if self.gap.records == 0 {
            log::warn!(
                "syslog chardev '{}': dropping output for {}: {why} (the count follows when \
                 records flow again)",
                self.id,
                self.path.display()
            );
        }
        self.gap.records += 1;
        self.gap.bytes += text as u64;
        self.stats.records_dropped += 1;
        self.stats.bytes_dropped += text as u64;
    }

    /// Sends the gap marker, if output was dropped, and then the queue, while the socket
    /// takes them.
    fn flush(&mut self) {
        loop {
            let Link::Up { socket, blocked: false } = &mut self.link else { return };
            let marker = (self.gap.records > 0).then(|| {
                let text = gap_marker(self.gap, &self.path);
                self.framer.frame(text.as_bytes(), &self.framer.stamp())
            });
            let Some(record) = marker.as_deref().or(self.queue.front().map(|q| &q.record[..]))
            else {
                return;
            };
            match send(socket, record) {
                Sent::Done => {
                    self.stats.records_sent += 1;
                    if marker.is_some() {
                        log::warn!(
                            "syslog chardev '{}': {} bytes of output ({} lines) were dropped \
                             while {} was away or full",
                            self.id,
                            self.gap.bytes,
                            self.gap.records,
                            self.path.display()
                        );
                        self.gap = Gap::default();
                    } else if let Some(sent) = self.queue.pop_front() {
                        self.queued_bytes -= sent.record.len();
                    }
                }
                Sent::Full => {
                    if let Link::Up { blocked, .. } = &mut self.link {
                        *blocked = true;
                    }
                    return;
                }
                Sent::Gone(e) => {
                    self.go_down(&e);
                    return;
                }
                Sent::Failed(e) => {
                    if marker.is_some() {
                        // The marker alone cannot fail on length; give up on reporting it
                        // in the stream (the log and the stats still have the count).
                        self.gap = Gap::default();
                    } else if let Some(lost) = self.queue.pop_front() {
                        self.queued_bytes -= lost.record.len();
                        self.drop_record(lost.text, &format!("the socket refused a record: {e}"));
                    }
                }
            }
        }
    }

    /// The collector went away: keep the dead socket for the loop to deregister, and ask
    /// the loop to connect again.
    fn go_down(&mut self, e: &io::Error) {
        let old = std::mem::replace(&mut self.link, Link::Down { stale: None });
        if let Link::Up { socket, .. } = old {
            self.link = Link::Down { stale: Some(socket) };
        }
        log::warn!(
            "syslog chardev '{}': {} went away ({e}); output waits (up to {QUEUE_MAX} bytes) \
             while it is tried again every {} ms",
            self.id,
            self.path.display(),
            RECONNECT_INTERVAL.as_millis()
        );
        if self.reconnect_timer == Timer::Idle {
            self.ask_loop(Kind::Reconnect);
        }
    }

    /// Asks the loop (through the waker) to set the timer of `kind`; before `register`,
    /// `register` does it.
    fn ask_loop(&mut self, kind: Kind) {
        let Some(waker) = &self.waker else { return };
        match kind {
            Kind::Partial => self.partial_timer = Timer::Asked,
            Kind::Reconnect => self.reconnect_timer = Timer::Asked,
        }
        waker.wake();
    }

    /// Sets the partial line's timer for the moment its delay ends; sends it if that is now.
    fn arm_partial(&mut self, io: &mut Io<'_>) {
        self.partial_timer = Timer::Idle;
        let Some(since) = self.lines.since else { return };
        match (since + PARTIAL_LINE_DELAY).checked_duration_since(Instant::now()) {
            Some(left) if !left.is_zero() => {
                io.add_timer(left, TIMER_PARTIAL);
                self.partial_timer = Timer::Armed;
            }
            _ => {
                if let Some(text) = self.lines.take_partial() {
                    self.send_text(&text);
                }
            }
        }
    }

    /// Connects to the collector again, on the loop: a new socket replaces the dead one, and
    /// the queue drains; if it is still away, tries again after [`RECONNECT_INTERVAL`] while
    /// records wait.
    fn reconnect(&mut self, io: &mut Io<'_>) {
        self.reconnect_timer = Timer::Idle;
        let Link::Down { stale } = &mut self.link else { return };
        if let Some(mut old) = stale.take() {
            if self.registered {
                // Best effort: closing the socket removes it from epoll anyway.
                let _ = io.registry().deregister(&mut old);
                self.registered = false;
            }
        }
        match connect(&self.path) {
            Ok(mut socket) => {
                match io.register(&mut socket, SOCKET, Interest::WRITABLE) {
                    Ok(()) => self.registered = true,
                    Err(e) => log::warn!(
                        "syslog chardev '{}': cannot watch the socket for room: {e}",
                        self.id
                    ),
                }
                log::info!(
                    "syslog chardev '{}': connected to {} again",
                    self.id,
                    self.path.display()
                );
                self.link = Link::Up { socket, blocked: false };
                self.flush();
            }
            Err(e) if self.queue.is_empty() && self.gap.records == 0 => {
                // Nothing waits: the next record asks again.
                log::debug!(
                    "syslog chardev '{}': {} still away: {e}",
                    self.id,
                    self.path.display()
                );
            }
            Err(e) => {
                log::debug!(
                    "syslog chardev '{}': {} still away: {e}",
                    self.id,
                    self.path.display()
                );
                io.add_timer(RECONNECT_INTERVAL, TIMER_RECONNECT);
                self.reconnect_timer = Timer::Armed;
            }
        }
    }
}

/// Which of the two timers.
#[derive(Debug, Clone, Copy)]
enum Kind {
    Partial,
    Reconnect,
}

impl Chardev for Syslog {
    fn register(&mut self, io: &mut Io<'_>) -> Result<()> {
        self.waker = Some(io.waker());
        if let Link::Up { socket, .. } = &mut self.link {
            io.register(socket, SOCKET, Interest::WRITABLE)
                .map_err(|e| Error::io_path("watch the syslog socket", &self.path, e))?;
            self.registered = true;
        }
        // Writes before registration could not ask for their timers: set them now.
        if self.lines.since.is_some() {
            self.arm_partial(io);
        }
        if matches!(self.link, Link::Down { .. }) {
            self.reconnect(io);
        }
        io.event(Event::Opened);
        Ok(())
    }

    fn deregister(&mut self, registry: &mio::Registry) {
        // The chardev goes (or its backend is swapped): a prompt still waiting goes now, and
        // what the collector cannot take at once is lost, and said so.
        if let Some(text) = self.lines.take_partial() {
            self.send_text(&text);
        }
        if !self.queue.is_empty() {
            let (records, bytes) =
                (self.queue.len(), self.queue.iter().map(|q| q.text).sum::<usize>());
            log::warn!(
                "syslog chardev '{}': {bytes} bytes of output ({records} lines) not sent to {}: \
                 the chardev was removed while it was away or full",
                self.id,
                self.path.display()
            );
            self.stats.records_dropped += records as u64;
            self.stats.bytes_dropped += bytes as u64;
            self.queue.clear();
            self.queued_bytes = 0;
        }
        if self.registered {
            let socket = match &mut self.link {
                Link::Up { socket, .. } => Some(socket),
                Link::Down { stale } => stale.as_mut(),
            };
            if let Some(socket) = socket {
                let _ = registry.deregister(socket);
            }
            self.registered = false;
        }
    }

    fn ready(&mut self, io: &mut Io<'_>, _source: usize, _event: &mio::event::Event) {
        // Room (or an error, which the next send reports): what waits goes now.
        if let Link::Up { blocked, .. } = &mut self.link {
            *blocked = false;
        }
        self.flush();
        if self.reconnect_timer == Timer::Asked {
            self.reconnect(io);
        }
    }

    fn write(&mut self, buf: &[u8], fds: &[BorrowedFd<'_>]) -> io::Result<usize> {
        refuse_fds("syslog", fds)?;
        let mut texts = Vec::new();
        self.lines.push(buf, Instant::now(), &mut |text| texts.push(text.to_vec()));
        if !texts.is_empty() {
            // One timestamp for the lines of one write.
            let stamp = self.framer.stamp();
            for text in &texts {
                let record = self.framer.frame(text, &stamp);
                self.enqueue(record, text.len());
            }
            self.flush();
        }
        if self.lines.since.is_some() && self.partial_timer == Timer::Idle {
            self.ask_loop(Kind::Partial);
        }
        if matches!(self.link, Link::Down { .. }) && self.reconnect_timer == Timer::Idle {
            self.ask_loop(Kind::Reconnect);
        }
        Ok(buf.len())
    }

    fn woken(&mut self, io: &mut Io<'_>) {
        if self.partial_timer == Timer::Asked {
            self.arm_partial(io);
        }
        if self.reconnect_timer == Timer::Asked {
            self.reconnect(io);
        }
    }

    fn timer(&mut self, io: &mut Io<'_>, id: u64) {
        match id {
            TIMER_PARTIAL => self.arm_partial(io),
            TIMER_RECONNECT => self.reconnect(io),
            _ => {}
        }
    }

    fn counters(&self, counters: &mut crate::Counters) {
        // The queue is this backend's backlog: what it lost while the collector was away or
        // full, in text bytes, as the gap marker counts it.
        counters.dropped_backlog += self.stats.bytes_dropped;
    }

    fn kind(&self) -> &'static str {
        "syslog"
    }

    fn filename(&self) -> String {
        format!("syslog:{}", self.path.display())
    }
}

/// A new socket connected to the collector's, non-blocking and close-on-exec.
fn connect(path: &Path) -> io::Result<UnixDatagram> {
    let socket = UnixDatagram::unbound()?;
    socket.connect(path)?;
    Ok(socket)
}

/// The error for a socket that cannot be reached at creation, naming `path` and why.
fn unreachable(path: &Path, e: &io::Error) -> Error {
    let is_socket = std::fs::metadata(path).map(|m| m.file_type().is_socket());
    let reason = match (e.raw_os_error(), is_socket) {
        (Some(libc::ENOENT), _) => {
            "no such socket: is the syslog daemon (journald, rsyslog) running?".to_string()
        }
        (_, Ok(false)) => "is not a socket".to_string(),
        (Some(libc::EPROTOTYPE), _) => {
            "is a stream socket: syslog listens on a datagram socket (SOCK_DGRAM)".to_string()
        }
        (Some(libc::ECONNREFUSED), _) => {
            "nobody listens on this socket (left by a syslog daemon that has stopped?)".to_string()
        }
        _ => format!("cannot connect to it: {e}"),
    };
    Error::option("path", &path.display().to_string(), reason)
}

/// Sends one record; a datagram goes whole or not at all.
fn send(socket: &UnixDatagram, record: &[u8]) -> Sent {
    loop {
        return match socket.send(record) {
            Ok(_) => Sent::Done,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Sent::Full,
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(
                        libc::ECONNREFUSED
                            | libc::ENOTCONN
                            | libc::ECONNRESET
                            | libc::EPIPE
                            | libc::ENOENT
                    )
                ) =>
            {
                Sent::Gone(e)
            }
            Err(e) => Sent::Failed(e),
        };
    }
}

/// The text of the record that marks a gap in the stream.
fn gap_marker(gap: Gap, path: &Path) -> String {
    format!(
        "[chardev: {} bytes of output dropped ({} lines): {} was away or full]",
        gap.bytes,
        gap.records,
        path.display()
    )
}

/// Frames records: the header of the chosen format, then the text.
#[derive(Debug)]
struct Framer {
    format: SyslogFormat,
    /// PRI: facility * 8 + severity.
    pri: u8,
    tag: String,
    pid: u32,
    /// RFC 5424's HOSTNAME (`-` when it cannot be had); RFC 3164 on a local socket has none.
    hostname: String,
}

impl Framer {
    fn new(format: SyslogFormat, facility: SyslogFacility, tag: String) -> Framer {
        let hostname = nix::unistd::gethostname()
            .ok()
            .and_then(|h| h.into_string().ok())
            // RFC 5424: 1 to 255 printable ASCII characters.
            .filter(|h| !h.is_empty() && h.len() <= 255 && h.bytes().all(|b| b.is_ascii_graphic()))
            .unwrap_or_else(|| "-".to_string());
        Framer {
            format,
            pri: facility.code() * 8 + SEVERITY_INFO,
            tag,
            pid: std::process::id(),
            hostname,
        }
    }

    /// The timestamp of a record made now, in local time, as the format writes it.
    fn stamp(&self) -> String {
        self.stamp_of(&jiff::ZonedDateTime::now())
    }

    fn stamp_of(&self, time: &jiff::ZonedDateTime) -> String {
        match self.format {
            SyslogFormat::Rfc3164 => time.strftime("%b %e %H:%M:%S").to_string(),
            SyslogFormat::Rfc5424 => time.strftime("%Y-%m-%dT%H:%M:%S%.6f%:z").to_string(),
        }
    }

    /// The whole datagram for `text`, with the timestamp `stamp`.
    fn frame(&self, text: &[u8], stamp: &str) -> Vec<u8> {
        let mut header = String::with_capacity(64 + self.tag.len());
        // Writing to a String cannot fail.
        let _ = match self.format {
            SyslogFormat::Rfc3164 => {
                write!(header, "<{}>{stamp} {}[{}]: ", self.pri, self.tag, self.pid)
            }
            SyslogFormat::Rfc5424 => write!(
                header,
                "<{}>1 {stamp} {} {} {} - - ",
                self.pri, self.hostname, self.tag, self.pid
            ),
        };
        let mut record = Vec::with_capacity(header.len() + text.len());
        record.extend_from_slice(header.as_bytes());
        record.extend_from_slice(text);
        record
    }
}

/// Output cut into the texts of records: lines, long lines split, partial lines taken out
/// after their delay. No I/O.
#[derive(Debug, Default)]
struct Lines {
    /// The line so far; more than [`MAX_RECORD_TEXT`] bytes only for a moment in `push`.
    text: Vec<u8>,
    /// When the first byte of `text` came; `None` while it is empty.
    since: Option<Instant>,
    /// Part of this line went out already (split off, or sent after the delay): its end
    /// with nothing after that part sends nothing.
    continued: bool,
}

impl Lines {
    /// Takes `data`, written at `now`, and calls `emit` with the text of each record it
    /// completes.
    fn push(&mut self, data: &[u8], now: Instant, emit: &mut dyn FnMut(&[u8])) {
        for piece in data.split_inclusive(|&b| b == b'\n') {
            let (body, ends) = match piece.split_last() {
                Some((b'\n', body)) => (body, true),
                _ => (piece, false),
            };
            // A record's worth at a time (and the 3 bytes that can finish a UTF-8
            // character at the cut), so that a long write is not moved down once per record.
            let mut rest = body;
            while !rest.is_empty() {
                let room = (MAX_RECORD_TEXT + 4).saturating_sub(self.text.len()).max(1);
                let (part, later) = rest.split_at(room.min(rest.len()));
                rest = later;
                let before = self.text.len();
                self.text.extend(part.iter().copied().filter(|&b| b != 0));
                if self.text.len() > before && self.since.is_none() {
                    self.since = Some(now);
                }
                while self.text.len() > MAX_RECORD_TEXT {
                    let cut = split_point(&self.text, MAX_RECORD_TEXT);
                    emit(&self.text[..cut]);
                    self.text.drain(..cut);
                    self.continued = true;
                    // What is left is a partial line of its own, as of now.
                    self.since = (!self.text.is_empty()).then_some(now);
                }
            }
            if ends {
                if self.text.last() == Some(&b'\r') {
                    self.text.pop();
                }
                // An empty line sends nothing; nor does the end of a line sent already.
                if !self.text.is_empty() {
                    emit(&self.text);
                }
                self.text.clear();
                self.since = None;
                self.continued = false;
            }
        }
    }

    /// The partial line, to go out now (its `\r` at the end dropped, as a newline after it
    /// would); the rest of the line will be a record of its own.
    fn take_partial(&mut self) -> Option<Vec<u8>> {
        self.since = None;
        if self.text.last() == Some(&b'\r') {
            self.text.pop();
        }
        if self.text.is_empty() {
            return None;
        }
        self.continued = true;
        Some(std::mem::take(&mut self.text))
    }
}

/// Where to cut `text` (longer than `max`) so that the first record has at most `max`
/// bytes and no UTF-8 sequence is cut in two: before the lead byte of a sequence that
/// `max` would split, or at `max` for text that is not UTF-8 there.
fn split_point(text: &[u8], max: usize) -> usize {
    let is_continuation = |b: u8| b & 0xC0 == 0x80;
    (max.saturating_sub(3)..=max)
        .rev()
        .find(|&i| text.get(i).is_none_or(|&b| !is_continuation(b)))
        .filter(|&i| i > 0 && (i == max || text[i] >= 0xC0))
        .unwrap_or(max)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn records(lines: &mut Lines, data: &[u8]) -> Vec<String> {
        let mut out = Vec::new();
        lines
            .push(data, Instant::now(), &mut |t| out.push(String::from_utf8_lossy(t).into_owned()));
        out
    }

    #[test]
    fn lines_end_at_newline_with_the_cr_before_it_dropped_and_empty_lines_send_nothing() {
        let mut lines = Lines::default();
        assert_eq!(records(&mut lines, b"one\r\ntwo\n\r\n\nthr"), ["one", "two"]);
        assert!(lines.since.is_some());
        assert_eq!(records(&mut lines, b"ee\r"), Vec::<String>::new());
        assert_eq!(records(&mut lines, b"\nfour\0\0 nul\n"), ["three", "four nul"]);
        assert!(lines.since.is_none());
    }

    #[test]
    fn a_partial_line_taken_out_leaves_its_rest_as_a_record_of_its_own() {
        let mut lines = Lines::default();
        assert!(records(&mut lines, b"login: ").is_empty());
        assert_eq!(lines.take_partial().as_deref(), Some(&b"login: "[..]));
        assert_eq!(lines.take_partial(), None);
        // The newline that ends the prompt's line sends nothing more.
        assert!(records(&mut lines, b"\r\n").is_empty());
        assert_eq!(records(&mut lines, b"\n"), Vec::<String>::new());
        records(&mut lines, b"$ ");
        lines.take_partial();
        assert_eq!(records(&mut lines, b"ls\r\n"), ["ls"]);
    }

    #[test]
    fn long_lines_are_split_never_inside_a_utf8_sequence() {
        let mut lines = Lines::default();
        let long = "x".repeat(MAX_RECORD_TEXT * 2 + 10);
        let got = records(&mut lines, format!("{long}\n").as_bytes());
        assert_eq!(got.iter().map(String::len).collect::<Vec<_>>(), [1024, 1024, 10]);
        // A 3-byte character straddling the limit moves whole to the next record.
        let text = format!("{}€tail\n", "y".repeat(MAX_RECORD_TEXT - 1));
        let got = records(&mut lines, text.as_bytes());
        assert_eq!(got, ["y".repeat(MAX_RECORD_TEXT - 1), "€tail".to_string()]);
        // Exactly the limit, then the end of the line: one record.
        let got = records(&mut lines, format!("{}\r\n", "z".repeat(MAX_RECORD_TEXT)).as_bytes());
        assert_eq!(got, ["z".repeat(MAX_RECORD_TEXT)]);
        // Not UTF-8: cut at the limit.
        assert_eq!(split_point(&[0x80; 2000], 1024), 1024);
        // A long write in one go, in pieces of every size: whole characters, all the text.
        let text: String = "aé€😀".repeat(20_000);
        let got = records(&mut lines, format!("{text}\n").as_bytes());
        let (last, full) = got.split_last().expect("records");
        assert!(full.iter().all(|r| r.len() <= MAX_RECORD_TEXT && r.len() > MAX_RECORD_TEXT - 4));
        assert!(last.len() <= MAX_RECORD_TEXT);
        assert!(got.iter().all(|r| !r.contains('\u{fffd}')), "a character was cut");
        assert_eq!(got.concat(), text);
    }

    #[test]
    fn records_are_framed_as_glibc_and_rfc_5424_frame_them() {
        let time: jiff::ZonedDateTime =
            "2026-03-05T07:08:09.123456789+01:00[+01:00]".parse().unwrap();
        let mut framer = Framer::new(SyslogFormat::Rfc3164, SyslogFacility::Local(3), "vm0".into());
        framer.pid = 42;
        framer.hostname = "host".into();
        let stamp = framer.stamp_of(&time);
        assert_eq!(framer.frame(b"hello", &stamp), b"<158>Mar  5 07:08:09 vm0[42]: hello");
        framer.format = SyslogFormat::Rfc5424;
        framer.pri = SyslogFacility::User.code() * 8 + SEVERITY_INFO;
        let stamp = framer.stamp_of(&time);
        assert_eq!(
            String::from_utf8(framer.frame(b"hello", &stamp)).unwrap(),
            "<14>1 2026-03-05T07:08:09.123456+01:00 host vm0 42 - - hello"
        );
    }
}

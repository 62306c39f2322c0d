//! `pty`: a pseudo-terminal that a terminal program attaches to (QEMU's `char-pty`). The
//! guest's serial port shows up as `/dev/pts/N` (and at `path=`, a symlink), for picocom,
//! screen, pyserial or `cat`.
//!
//! QEMU learns that a terminal opened the slave by polling the master once a second, drops
//! what the guest writes while nobody is attached, and loses the first second after someone
//! attaches (QEMU 4f7689f0); cloud-hypervisor watched the master's hang-up with epoll and
//! spun at 100% CPU (its #3170, #4521). Here:
//!
//! - **Terminals are events.** We hold a slave fd of our own, so the master never hangs up,
//!   and learn of opens and closes of the slave from inotify (`src/watch.rs` tells how): the
//!   loop sleeps until a terminal comes or goes and hears of it at once. Without an inotify
//!   instance to spare the pty checks the master for a hang-up every 20 ms instead
//!   ([`Watch::Poll`]).
//! - **Output waits for a reader.** What the guest writes while no terminal is attached is
//!   kept in a bounded backlog (`backlog=`, 64 KiB by default; the oldest bytes are dropped
//!   first, counted and logged), and what the last terminal left unread is taken back into
//!   it. A terminal program flushes the pty's input as it sets the line up (pyserial's open,
//!   picocom's `TCSAFLUSH`), which would throw a backlog written at the open away; the master
//!   runs in packet mode, which reports that flush, and the backlog follows 20 ms after the
//!   last one, at the terminal's first keystroke, or 200 ms after the open, whichever comes
//!   first (at once if waiting would overflow it). After that the pty's own buffer and
//!   `write_all`'s wait for POLLOUT carry the flow, with nothing dropped.
//! - **History for every terminal (`history=SIZE`).** Every output byte also goes into a
//!   ring of the last SIZE bytes ([`chardev::fanout::Ring`]); each terminal that opens the
//!   slave gets that ring first, on the backlog's path (after the terminal settles), then live
//!   output, with no gap or duplicate at the seam, however many terminals came before. It
//!   replaces the backlog (`backlog=` cannot go with it); without it nothing changes.
//! - **Events.** `Opened` when the first terminal opens the slave, `Closed` when the last
//!   one has closed it and everything it typed was delivered; once each.
//!
//! The slave is raw (`cfmakeraw`, as in QEMU), so bytes pass unchanged both ways and
//! nothing is echoed back into the guest's input.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use chardev::backend::refuse_fds;
use chardev::error::{Error, Result};
use chardev::fanout::Ring;
use chardev::options::{BackendSpec, BacklogFull, ChardevSpec, DEFAULT_PTY_BACKLOG};
use chardev::registry::{BuildContext, BuildNotice};
use chardev::{Chardev, Event, Input, Io};
use mio::unix::SourceFd;
use mio::Interest;

use crate::backlog::Backlog;
use crate::termios::{self, TIOCPKT_DATA, TIOCPKT_FLUSHREAD};
use crate::watch::{self, Change, SlaveWatch};

/// The most one read of a pty master returns: n_tty's buffer (`N_TTY_BUF_SIZE`).
const PTY_READ: usize = 4096;

const MASTER: usize = 0;
const WATCH: usize = 1;

/// The id of the [`Watch::Poll`] timer; settle timers count up from 1.
const POLL_TIMER: u64 = 0;

/// How often [`Watch::Poll`] looks for a terminal while none is attached.
pub const POLL_INTERVAL: Duration = Duration::from_millis(20);

/// The backlog goes to a new terminal this long after the last flush of its input...
const SETTLE_AFTER_FLUSH: Duration = Duration::from_millis(20);

/// ... or this long after it opened the slave if it neither flushes nor types.
const SETTLE_MAX: Duration = Duration::from_millis(200);

/// How a pty notices terminals opening and closing its slave.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Watch {
    /// inotify on the slave, with a slave fd of our own open: no wake-ups while idle, notice
    /// at once, and output a terminal left unread is kept for the next one. Falls back to
    /// `Poll` when no inotify instance can be had.
    Inotify,
    /// A look at the master for a hang-up every [`POLL_INTERVAL`] while no terminal is
    /// attached (QEMU looks once a second): 50 cheap wake-ups a second.
    Poll,
}

enum Watching {
    Inotify(SlaveWatch),
    Poll,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Terminal {
    /// Nobody has the slave open: output goes to the backlog.
    Absent,
    /// A terminal opened the slave and is setting the line up: output still waits.
    Settling {
        /// When the backlog goes out even if the terminal never flushes nor types.
        deadline: Instant,
    },
    /// Output goes to the terminal.
    Present,
}

/// A `pty` chardev: a pty master on the loop, its slave for terminals to open.
pub struct Pty {
    label: String,
    /// Non-blocking, in packet mode.
    master: File,
    slave: PathBuf,
    /// Held for its drop, which removes the `path=` symlink.
    _link: Option<Symlink>,
    watching: Watching,
    terminal: Terminal,
    /// The id of the settle timer that ends the current settling (a flush supersedes one).
    settle_timer: u64,
    backlog: Backlog,
    /// Whether a full backlog drops its oldest bytes or makes the writer wait.
    when_full: BacklogFull,
    /// Some output was dropped since the last terminal attached, and that was logged.
    warned_full: bool,
    /// The last terminal left: `Closed` is raised once what it typed has been read.
    close_pending: bool,
    /// `history=`: the last output, for every terminal that opens; `None` without.
    history: Option<Ring>,
}

impl std::fmt::Debug for Pty {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pty")
            .field("label", &self.label)
            .field("slave", &self.slave)
            .field("watch", &self.watch())
            .field("terminal", &self.terminal)
            .field("backlog", &self.backlog.len())
            .finish()
    }
}

/// Builds a `pty` backend, and tells the embedder its slave with
/// [`BuildNotice::PtyOpened`] (QEMU prints `char device redirected to /dev/pts/N (label ID)`;
/// a library does not print, so the program that wants that line prints it: the demos do).
pub fn build(spec: &ChardevSpec, cx: &BuildContext<'_>) -> Result<Box<dyn Chardev>> {
    let BackendSpec::Pty { path, backlog, when_full, history } = &spec.backend else {
        return Err(Error::UnknownBackend(spec.backend.kind().into()));
    };
    let mut pty =
        Pty::open(cx.id, path.as_deref(), *backlog, Watch::Inotify)?.when_full(*when_full);
    if *history > 0 {
        pty = pty.with_history(*history);
    }
    log::info!("char device redirected to {} (label {})", pty.slave.display(), cx.id);
    cx.notify(&BuildNotice::PtyOpened { id: cx.id.to_string(), path: pty.slave.clone() });
    Ok(Box::new(pty))
}

impl Pty {
    /// A new pty for chardev `label`: raw slave, a symlink to it at `link` if given (an
    /// existing symlink there is replaced, anything else is left alone and refused), and a
    /// backlog of `backlog` bytes for output written while no terminal is attached.
    pub fn open(label: &str, link: Option<&Path>, backlog: usize, watch: Watch) -> Result<Pty> {
        let pty = termios::open_pty()?;
        // Watch before unlocking, so that no open of the slave goes unseen.
        let inotify = match watch {
            Watch::Inotify => watch::watch(&pty.slave)
                .map_err(|e| {
                    log::warn!(
                        "chardev '{label}': cannot watch {} with inotify ({e}); looking for \
                         terminals every {POLL_INTERVAL:?} instead",
                        pty.slave.display()
                    )
                })
                .ok(),
            Watch::Poll => None,
        };
        termios::unlock(&pty)?;
        let own = termios::open_tty(&pty.slave, "open")?;
        termios::make_raw(&own, &pty.slave)?;
        termios::set_packet_mode(&pty.master, &pty.slave)?;
        let watching = match inotify {
            Some(inotify) => Watching::Inotify(SlaveWatch::start(inotify, own, &pty.slave)),
            // Closing our only slave fd leaves the master hung up, which the poll looks for
            // (a slave that was never opened does not hang up).
            None => Watching::Poll,
        };
        let link = link.map(|l| Symlink::create(l, &pty.slave)).transpose()?;
        Ok(Pty {
            label: label.to_string(),
            master: File::from(OwnedFd::from(pty.master)),
            slave: pty.slave,
            _link: link,
            watching,
            terminal: Terminal::Absent,
            settle_timer: POLL_TIMER,
            backlog: Backlog::new(backlog),
            when_full: BacklogFull::DropOldest,
            warned_full: false,
            close_pending: false,
            history: None,
        })
    }

    /// Keeps the last `size` bytes of output for every terminal that opens the slave
    /// (`history=`): each gets them first, after it settles, then live output. Replaces the
    /// backlog (whatever `backlog` [`Pty::open`] was given, and a full one drops).
    pub fn with_history(mut self, size: usize) -> Pty {
        self.history = Some(Ring::new(size));
        // Room for the history and for what comes while the terminal settles.
        self.backlog = Backlog::new(size.saturating_add(DEFAULT_PTY_BACKLOG));
        self.when_full = BacklogFull::DropOldest;
        self
    }

    /// A copy of the history (`history=`), oldest first; reading it drains nothing. Empty
    /// without a history.
    pub fn history(&self) -> Vec<u8> {
        self.history.as_ref().map_or_else(Vec::new, |ring| ring.snapshot(None))
    }

    /// What a full backlog does (`backlog-full=`): drop its oldest bytes (the default), or
    /// make the writer wait for a terminal (a relay's back-pressure; nothing is dropped).
    pub fn when_full(mut self, when_full: BacklogFull) -> Pty {
        self.when_full = when_full;
        self
    }

    /// The slave's path, `/dev/pts/N`.
    pub fn slave_path(&self) -> &Path {
        &self.slave
    }

    /// How this pty notices terminals (`Poll` if `Inotify` was asked for but not available).
    pub fn watch(&self) -> Watch {
        match self.watching {
            Watching::Inotify(_) => Watch::Inotify,
            Watching::Poll => Watch::Poll,
        }
    }

    /// Bytes of output dropped so far because the backlog was full.
    pub fn dropped(&self) -> u64 {
        self.backlog.dropped_total()
    }

    /// A terminal opened the slave.
    fn attach(&mut self, io: &mut Io<'_>) {
        // A Closed still owed to the previous terminal goes first.
        self.finish_close(io);
        self.terminal = Terminal::Settling { deadline: Instant::now() + SETTLE_MAX };
        if let Some(ring) = &self.history {
            // This terminal's backlog is the history, whatever earlier ones left unread
            // (that is in the ring too).
            self.backlog.clear();
            self.backlog.push(&ring.snapshot(None));
        }
        self.settle_timer += 1;
        io.add_timer(SETTLE_MAX, self.settle_timer);
        log::info!("chardev '{}': a terminal opened {}", self.label, self.slave.display());
        io.event(Event::Opened);
        if self.when_full == BacklogFull::Wait {
            // A writer may wait for room: the terminal will take the backlog.
            io.output_ready();
        }
        // It may have flushed or typed before we heard of it.
        self.take_status(io);
        io.input_ready();
    }

    /// The last terminal closed the slave.
    fn detach(&mut self, io: &mut Io<'_>) {
        if self.terminal == Terminal::Absent {
            return;
        }
        self.terminal = Terminal::Absent;
        log::info!("chardev '{}': the last terminal closed {}", self.label, self.slave.display());
        // `Closed` comes after whatever it typed (QEMU #1264, for sockets): read that first.
        self.close_pending = true;
        io.input_ready();
        if let Watching::Poll = self.watching {
            io.add_timer(POLL_INTERVAL, POLL_TIMER);
        }
    }

    fn finish_close(&mut self, io: &mut Io<'_>) {
        if std::mem::take(&mut self.close_pending) {
            io.event(Event::Closed);
        }
    }

    /// Handles the inotify events: terminals that came and went, in order.
    fn watch_changed(&mut self, io: &mut Io<'_>) {
        let Watching::Inotify(watch) = &mut self.watching else { return };
        let mut changes = Vec::new();
        watch.changes(&mut changes);
        let mut left = false;
        for change in changes {
            match change {
                Change::Attached => self.attach(io),
                Change::Detached => {
                    self.detach(io);
                    left = true;
                }
            }
        }
        if left && self.terminal == Terminal::Absent {
            self.take_back_unread();
        }
    }

    /// Puts what the last terminal left unread back in front of the backlog.
    fn take_back_unread(&mut self) {
        let Watching::Inotify(watch) = &self.watching else { return };
        // A terminal may leave the line cooked; raw again, so that the bytes we read back are
        // whole and the next terminal finds the pty as we made it.
        if let Err(e) = termios::make_raw(watch.own(), &self.slave) {
            log::warn!("chardev '{}': {e}", self.label);
        }
        let mut unread = Vec::new();
        watch.take_unread(&mut unread);
        if !unread.is_empty() {
            log::debug!(
                "chardev '{}': {} bytes the terminal did not read are kept for the next one",
                self.label,
                unread.len()
            );
            // Waiting writers lost nothing so far: keep all of it (at most what the
            // kernel's pty buffer held), past the limit if need be.
            self.backlog.push_front(&unread, self.when_full == BacklogFull::Wait);
        }
    }

    /// While settling: reads the master's pending status bytes, which come before any data
    /// (a one-byte read in packet mode returns the status, or the bare data header without
    /// taking any data).
    fn take_status(&mut self, io: &mut Io<'_>) {
        while let Terminal::Settling { .. } = self.terminal {
            let mut byte = [0u8; 1];
            match (&self.master).read(&mut byte) {
                Ok(1) if byte[0] != TIOCPKT_DATA => self.status(io, byte[0]),
                // Data waits: the terminal typed, so it is set up.
                Ok(1) => self.settled(),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                _ => return,
            }
        }
    }

    /// A packet-mode status byte from the master.
    fn status(&mut self, io: &mut Io<'_>, status: u8) {
        if status & TIOCPKT_FLUSHREAD != 0 {
            if let Terminal::Settling { .. } = self.terminal {
                log::debug!("chardev '{}': the terminal flushed its input", self.label);
                self.settle_timer += 1;
                io.add_timer(SETTLE_AFTER_FLUSH, self.settle_timer);
            }
        }
    }

    /// The terminal is set up: the backlog goes out, and output after it.
    fn settled(&mut self) {
        self.terminal = Terminal::Present;
        self.warned_full = false;
        let dropped = self.backlog.take_dropped();
        if dropped > 0 {
            log::warn!(
                "chardev '{}': {dropped} bytes of output were dropped while no terminal was \
                 attached (backlog={})",
                self.label,
                self.backlog.limit()
            );
        }
        if !self.backlog.is_empty() {
            log::debug!("chardev '{}': {} bytes of backlog out", self.label, self.backlog.len());
        }
        match self.flush_backlog() {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => log::warn!("chardev '{}': cannot write the backlog: {e}", self.label),
        }
    }

    /// Writes what fits of the backlog; `WouldBlock` while some of it is left.
    fn flush_backlog(&mut self) -> io::Result<()> {
        while !self.backlog.is_empty() {
            let (front, _) = self.backlog.as_slices();
            match (&self.master).write(front) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => self.backlog.consume(n),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Output while no terminal reads it: into the backlog, all of it (the oldest bytes
    /// dropped), or, with `backlog-full=wait`, what fits (`WouldBlock` when nothing does).
    fn hold(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.history.is_some() {
            // The ring keeps it, and the next terminal gets the ring.
            return Ok(buf.len());
        }
        if self.when_full == BacklogFull::DropOldest {
            self.keep(buf);
            return Ok(buf.len());
        }
        let n = buf.len().min(self.backlog.room());
        if n == 0 && !buf.is_empty() {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        self.keep(&buf[..n]);
        Ok(n)
    }

    /// Keeps output for a terminal to come.
    fn keep(&mut self, buf: &[u8]) {
        if self.backlog.push(buf) > 0 && !std::mem::replace(&mut self.warned_full, true) {
            log::warn!(
                "chardev '{}': no terminal reads {} and its backlog is full ({} bytes): \
                 dropping the oldest output",
                self.label,
                self.slave.display(),
                self.backlog.limit()
            );
        }
    }

    /// After a read of `len` bytes into `buf`, reads on while the terminal has more and a
    /// whole read fits: the kernel hands out at most 4 KiB per read of a pty, and one bigger
    /// piece costs the frontend (a relay's socket write, its reader's wake-up) once instead
    /// of once per 4 KiB. Reads only what is there already, so nothing waits.
    fn read_more(&mut self, io: &mut Io<'_>, buf: &mut [u8], mut len: usize) -> Input {
        while buf.len() - len > PTY_READ {
            match (&self.master).read(&mut buf[len..]) {
                Ok(n @ 1..) => {
                    let header = buf[len];
                    if header != TIOCPKT_DATA {
                        self.status(io, header);
                        break;
                    }
                    buf.copy_within(len + 1..len + n, len);
                    len += n - 1;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                // Emptied: the next input raises an edge. A close waiting for the input to
                // end is finished by the next read, after these bytes are delivered.
                Err(e) if e.kind() == io::ErrorKind::WouldBlock && !self.close_pending => {
                    return Input::Drained(len)
                }
                // The end, or an error: the next read sees it.
                _ => break,
            }
        }
        Input::Data(len)
    }

    /// Writes to the terminal, after the backlog.
    fn write_through(&mut self, buf: &[u8]) -> io::Result<usize> {
        if let Watching::Poll = self.watching {
            if termios::hung_up(&self.master) {
                // The terminal left and the loop has not seen it yet; the kernel would take
                // this and throw it away when the next terminal opens the slave.
                return self.hold(buf);
            }
        }
        self.flush_backlog()?;
        (&self.master).write(buf)
    }

    /// Output now: to the terminal, after the backlog, or held for one to come.
    fn write_now(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self.terminal {
            Terminal::Absent => self.hold(buf),
            Terminal::Settling { .. } if self.backlog.room() >= buf.len() => {
                self.keep(buf);
                Ok(buf.len())
            }
            Terminal::Settling { .. } => {
                // A terminal is there, and waiting for it any longer would drop output.
                self.settled();
                self.write_through(buf)
            }
            Terminal::Present => self.write_through(buf),
        }
    }
}

impl Chardev for Pty {
    fn register(&mut self, io: &mut Io<'_>) -> Result<()> {
        let master = self.master.as_raw_fd();
        io.register(&mut SourceFd(&master), MASTER, Interest::READABLE | Interest::WRITABLE)
            .map_err(|e| Error::io_path("watch the master of", &self.slave, e))?;
        match &self.watching {
            Watching::Inotify(watch) => {
                let fd = watch.fd().as_raw_fd();
                io.register(&mut SourceFd(&fd), WATCH, Interest::READABLE)
                    .map_err(|e| Error::io_path("watch", &self.slave, e))?;
                if watch.terminals() > 0 {
                    self.attach(io);
                }
            }
            Watching::Poll => io.add_timer(Duration::ZERO, POLL_TIMER),
        }
        Ok(())
    }

    fn deregister(&mut self, registry: &mio::Registry) {
        // Best effort: the fds may already be gone from epoll.
        let _ = registry.deregister(&mut SourceFd(&self.master.as_raw_fd()));
        if let Watching::Inotify(watch) = &self.watching {
            let _ = registry.deregister(&mut SourceFd(&watch.fd().as_raw_fd()));
        }
    }

    fn ready(&mut self, io: &mut Io<'_>, source: usize, event: &mio::event::Event) {
        match source {
            WATCH => self.watch_changed(io),
            MASTER => {
                let hangup = event.is_read_closed() || event.is_error();
                if hangup
                    && matches!(self.watching, Watching::Poll)
                    && termios::hung_up(&self.master)
                {
                    self.detach(io);
                }
                if event.is_readable() || event.is_priority() || hangup {
                    self.take_status(io);
                    io.input_ready();
                }
                if event.is_writable() && self.terminal == Terminal::Present {
                    match self.flush_backlog() {
                        Ok(()) => {}
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                        Err(e) => {
                            log::warn!("chardev '{}': cannot write the backlog: {e}", self.label)
                        }
                    }
                }
                if event.is_writable() || hangup {
                    io.output_ready();
                }
            }
            _ => {}
        }
    }

    fn read(&mut self, io: &mut Io<'_>, buf: &mut [u8], _fds: &mut Vec<OwnedFd>) -> Input {
        // Packet mode: each read starts with a status byte. A frontend with room for one byte
        // still gets one, through a small buffer of our own.
        let mut small = [0u8; 2];
        let direct = buf.len() >= 2;
        let result = if direct {
            (&self.master).read(buf)
        } else {
            (&self.master).read(&mut small[..buf.len() + 1])
        };
        match result {
            Ok(n @ 1..) => {
                let header = if direct { buf[0] } else { small[0] };
                if header != TIOCPKT_DATA {
                    self.status(io, header);
                    return Input::Data(0);
                }
                let len = n - 1;
                if direct {
                    buf.copy_within(1..n, 0);
                } else {
                    buf[..len].copy_from_slice(&small[1..n]);
                }
                if len > 0 && matches!(self.terminal, Terminal::Settling { .. }) {
                    // The terminal typed: it is set up.
                    self.settled();
                }
                if direct && len > 0 {
                    return self.read_more(io, buf, len);
                }
                Input::Data(len)
            }
            Ok(_) => {
                self.finish_close(io);
                Input::WouldBlock
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                self.finish_close(io);
                Input::WouldBlock
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Input::Data(0),
            Err(e) => {
                // EIO: no process has the slave open (only with `Watch::Poll`: our own fd
                // keeps it open otherwise).
                if e.raw_os_error() != Some(nix::libc::EIO) {
                    log::warn!("chardev '{}': cannot read the pty: {e}", self.label);
                }
                self.detach(io);
                self.finish_close(io);
                Input::End
            }
        }
    }

    fn write(&mut self, buf: &[u8], fds: &[BorrowedFd<'_>]) -> io::Result<usize> {
        refuse_fds("pty", fds)?;
        let written = self.write_now(buf);
        if let (Some(ring), Ok(n)) = (&mut self.history, &written) {
            ring.append(&buf[..(*n).min(buf.len())]);
        }
        written
    }

    fn write_fd(&self) -> Option<BorrowedFd<'_>> {
        Some(self.master.as_fd())
    }

    fn watch_output(&mut self, _io: &mut Io<'_>) -> bool {
        true // the master is registered for writability for its whole life
    }

    fn output_always_watched(&self) -> bool {
        true
    }

    fn timer(&mut self, io: &mut Io<'_>, id: u64) {
        if id == POLL_TIMER {
            if let (Watching::Poll, Terminal::Absent) = (&self.watching, self.terminal) {
                if termios::hung_up(&self.master) {
                    io.add_timer(POLL_INTERVAL, POLL_TIMER);
                } else {
                    self.attach(io);
                }
            }
            return;
        }
        if let Terminal::Settling { deadline } = self.terminal {
            if id == self.settle_timer || Instant::now() >= deadline {
                self.settled();
            }
        }
    }

    fn pty_path(&self) -> Option<PathBuf> {
        Some(self.slave.clone())
    }

    fn counters(&self, counters: &mut chardev::Counters) {
        counters.dropped_backlog += self.backlog.dropped_total();
    }

    fn kind(&self) -> &'static str {
        "pty"
    }

    fn filename(&self) -> String {
        format!("pty:{}", self.slave.display())
    }
}

/// The `path=` symlink to the slave; removed with the chardev if it still points there.
#[derive(Debug)]
struct Symlink {
    path: PathBuf,
    target: PathBuf,
}

impl Symlink {
    /// Links `path` to `target`, replacing a symlink already there (QEMU leaves its link
    /// behind when it is killed) but nothing else.
    fn create(path: &Path, target: &Path) -> Result<Symlink> {
        let op = "create the pty symlink";
        match std::os::unix::fs::symlink(target, path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                let meta =
                    std::fs::symlink_metadata(path).map_err(|e| Error::io_path(op, path, e))?;
                if !meta.file_type().is_symlink() {
                    let why = "something that is not a symlink is there; it is left alone";
                    return Err(Error::io_path(
                        op,
                        path,
                        io::Error::new(io::ErrorKind::AlreadyExists, why),
                    ));
                }
                Self::replace(path, target).map_err(|e| Error::io_path(op, path, e))?;
            }
            Err(e) => return Err(Error::io_path(op, path, e)),
        }
        Ok(Symlink { path: path.to_path_buf(), target: target.to_path_buf() })
    }

    /// Swaps a new link in over an old one in one rename(2): the path never disappears.
    fn replace(path: &Path, target: &Path) -> io::Result<()> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let tmp = path.with_file_name(format!(".{name}.{}.{n}", std::process::id()));
        std::os::unix::fs::symlink(target, &tmp)?;
        std::fs::rename(&tmp, path).inspect_err(|_| {
            let _ = std::fs::remove_file(&tmp);
        })
    }
}

impl Drop for Symlink {
    fn drop(&mut self) {
        // Someone may have pointed it elsewhere since; then it is theirs.
        if std::fs::read_link(&self.path).is_ok_and(|t| t == self.target) {
            if let Err(e) = std::fs::remove_file(&self.path) {
                log::warn!("cannot remove the pty symlink {}: {e}", self.path.display());
            }
        }
    }
}

//! Two chardevs back to back, as socat joins two addresses: what one side reads the other
//! writes, fds included when both sides carry them, with flow control end to end.
//!
//! Where no fd can flow (one side cannot carry fds, or fds are turned off), bytes move by
//! splice(2) through a kernel pipe and never enter user space; this needs plain sockets on
//! both sides, and falls back to copying otherwise.
//!
//! Each side's frontend reads only while the data it last read has been written to the
//! other side. A partial write keeps the rest and asks the loop to say when the other side
//! can take more ([`FrontendHandle::notify_writable`]); nothing blocks the loop, so both
//! directions flow at once, and a slow reader on one side slows the writer on the other.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex, MutexGuard};

use chardev::sync::lock;
use chardev::{Event, Frontend, FrontendHandle};

/// How much one read may hand over: a big bite keeps the syscall count low.
const READ_SIZE: usize = 1 << 20;

/// What the relay tells whoever runs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RelayEvent {
    /// Side 0 or 1 opened.
    Opened(usize),
    /// Side 0 or 1 closed (after all its data was read).
    Closed(usize),
    /// Side 0 or 1 has closed, and everything read from it has now been written to the other
    /// side. Only sent after `Closed` (waking whoever listens on every drained write would
    /// cost two futex calls and a context switch per write).
    Drained(usize),
}

/// Bytes moved in each direction: `[0]` is side 0 to side 1.
#[derive(Debug, Default)]
pub struct Counters {
    moved: [AtomicU64; 2],
    spliced: [AtomicU64; 2],
}

impl Counters {
    /// Bytes moved from `side` to the other one so far.
    pub fn moved(&self, side: usize) -> u64 {
        self.moved[side].load(Ordering::Relaxed)
    }

    /// How many of those moved by splice(2), without entering user space.
    pub fn spliced(&self, side: usize) -> u64 {
        self.spliced[side].load(Ordering::Relaxed)
    }
}

/// Data read from one side, not yet taken by the other.
#[derive(Default)]
struct Backlog {
    data: Vec<u8>,
    /// How much of `data` has been written already. A slow side (a pty takes about 10 KiB
    /// per write) is written in many pieces; moving the rest to the front after each would
    /// copy it again every time.
    sent: usize,
    fds: Vec<OwnedFd>,
    /// Bytes waiting in this side's pipe (see [`Pipe`]); never at the same time as `data`.
    piped: usize,
}

impl Backlog {
    /// The bytes still to be written.
    fn unsent(&self) -> &[u8] {
        &self.data[self.sent..]
    }

    fn has_data(&self) -> bool {
        self.sent < self.data.len()
    }

    /// Forgets the first `n` unsent bytes: they were written.
    fn consume(&mut self, n: usize) {
        self.sent += n.min(self.data.len() - self.sent);
        if self.sent == self.data.len() {
            self.data.clear();
            self.sent = 0;
        }
    }

    /// Replaces the unsent bytes with `data`.
    fn set(&mut self, data: Vec<u8>) {
        self.data = data;
        self.sent = 0;
    }
}

/// A kernel pipe that one side's input is spliced into and the other side's output spliced
/// out of: the bytes never enter user space. Used in a direction where no fd can flow.
struct Pipe {
    r: OwnedFd,
    w: OwnedFd,
    capacity: usize,
    /// The other side cannot take spliced output (a pty): copy from now on.
    off: AtomicBool,
}

/// How the relay moves bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Options {
    /// Move bytes with splice(2), not through user space, in each direction where no fd can
    /// flow (one side cannot carry fds, or `pass_fds` is off) and both sides can (plain
    /// sockets). Otherwise every byte is read into the loop's buffer and written out.
    pub splice: bool,
    /// Pass fds between two unix sockets. Off: fds that arrive are closed, as socat does, and
    /// every direction may splice.
    pub pass_fds: bool,
}

impl Default for Options {
    fn default() -> Options {
        Options { splice: true, pass_fds: true }
    }
}

struct Shared {
    handles: [FrontendHandle; 2],
    /// `[0]`: read from side 0, waiting to be written to side 1.
    backlog: Mutex<[Backlog; 2]>,
    /// `[0]`: the pipe side 0's input is spliced into, if that direction splices.
    pipes: [Option<Pipe>; 2],
    pass_fds: bool,
    counters: Arc<Counters>,
    /// Sends an event on the caller's channel, as the caller's type.
    events: Box<dyn Fn(RelayEvent) + Send + Sync>,
}

impl Shared {
    fn backlog(&self) -> MutexGuard<'_, [Backlog; 2]> {
        lock(&self.backlog)
    }

    /// Writes what side `from` read into the other side; keeps what does not fit.
    fn pass_on(&self, from: usize, data: &[u8], mut fds: Vec<OwnedFd>) {
        let to = 1 - from;
        let fds_go = self.pass_fds && self.handles[to].can_pass_fds();
        if !fds.is_empty() && !fds_go {
            // The bytes still go; the fds cannot (closed here, as socat would).
            log::info!(
                "relay: {} fds from side {from} closed: side {to} cannot take them",
                fds.len()
            );
            fds.clear();
        }
        let borrowed: Vec<_> = fds.iter().map(AsFd::as_fd).collect();
        // A side with no peer refuses with NotConnected; the bytes wait here, and the chardev
        // logs them once they are written (`write_retrying`), not also now.
        let written = match self.handles[to].write_retrying(data, &borrowed) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => 0,
            Err(e) if e.kind() == std::io::ErrorKind::NotConnected => 0,
            Err(e) => {
                log::warn!("relay: side {to} write failed: {e}; {} bytes dropped", data.len());
                return;
            }
        };
        self.counters.moved[from].fetch_add(written as u64, Ordering::Relaxed);
        if written < data.len() {
            let mut backlog = self.backlog();
            let b = &mut backlog[from];
            b.data.extend_from_slice(&data[written..]);
            // Fds went with the first byte written; if nothing was written they still wait.
            if written == 0 {
                b.fds = fds;
            }
            drop(backlog);
            self.handles[to].notify_writable();
        }
    }

    /// Side `to` can take more: flushes the backlog (or the pipe) meant for it, then lets
    /// the other side read again.
    fn flush_into(&self, to: usize) {
        let from = 1 - to;
        let mut backlog = self.backlog();
        let b = &mut backlog[from];
        let piped = !b.has_data();
        let result = match (&self.pipes[from], piped) {
            (_, false) => {
                let borrowed: Vec<_> = b.fds.iter().map(AsFd::as_fd).collect();
                self.handles[to].write_retrying(b.unsent(), &borrowed)
            }
            (Some(pipe), true) if b.piped > 0 => {
                self.handles[to].write_from_pipe(pipe.r.as_fd(), b.piped)
            }
            _ => return,
        };
        let written = match result {
            Ok(n) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::NotConnected
                ) =>
            {
                0
            }
            Err(e) if piped && e.kind() == std::io::ErrorKind::Unsupported => {
                // Side `to` cannot take spliced output: what is in the pipe comes out into
                // the backlog, and input in this direction is copied from now on.
                if let Some(pipe) = &self.pipes[from] {
                    pipe.off.store(true, Ordering::Relaxed);
                    b.set(drain_pipe(pipe, b.piped));
                    b.piped = 0;
                }
                drop(backlog);
                return self.flush_into(to);
            }
            Err(e) => {
                let lost = if piped { b.piped } else { b.unsent().len() };
                log::warn!("relay: side {to} write failed: {e}; {lost} bytes dropped");
                if let (true, Some(pipe)) = (piped, &self.pipes[from]) {
                    drain_pipe(pipe, b.piped);
                    b.piped = 0;
                }
                b.set(Vec::new());
                0
            }
        };
        if piped {
            b.piped -= written.min(b.piped);
        } else {
            if written > 0 {
                b.fds.clear();
            }
            b.consume(written);
        }
        self.counters.moved[from].fetch_add(written as u64, Ordering::Relaxed);
        if piped {
            self.counters.spliced[from].fetch_add(written as u64, Ordering::Relaxed);
        }
        let done = !b.has_data() && b.piped == 0;
        drop(backlog);
        if done {
            // Closed is delivered after the open flag drops, on this same thread: a side that
            // closed with a backlog is reported drained here, and only such a side.
            if !self.handles[from].is_open() {
                (self.events)(RelayEvent::Drained(from));
            }
            self.handles[from].accept_input();
        } else if written > 0 || self.handles[to].is_open() {
            self.handles[to].notify_writable();
        }
    }
}

/// Takes up to `n` bytes out of `pipe` (they are there: the pipe never blocks on them).
fn drain_pipe(pipe: &Pipe, n: usize) -> Vec<u8> {
    let mut out = vec![0; n];
    let mut got = 0;
    while got < n {
        match nix::unistd::read(&pipe.r, &mut out[got..]) {
            Ok(0) | Err(_) => break,
            Ok(k) => got += k,
        }
    }
    out.truncate(got);
    out
}

/// One side's frontend.
struct Side {
    side: usize,
    shared: Arc<Shared>,
}

impl Frontend for Side {
    fn can_receive(&mut self) -> usize {
        let b = &self.shared.backlog()[self.side];
        if !b.has_data() && b.piped == 0 {
            READ_SIZE
        } else {
            0
        }
    }

    fn receive(&mut self, data: &[u8], fds: Vec<OwnedFd>) {
        self.shared.pass_on(self.side, data, fds);
    }

    fn splice_pipe(&mut self) -> Option<(BorrowedFd<'_>, usize)> {
        let pipe = self.shared.pipes[self.side].as_ref()?;
        if pipe.off.load(Ordering::Relaxed) {
            return None;
        }
        let b = &self.shared.backlog()[self.side];
        (!b.has_data()).then(|| (pipe.w.as_fd(), pipe.capacity - b.piped))
    }

    fn spliced(&mut self, n: usize) {
        self.shared.backlog()[self.side].piped += n;
        self.shared.flush_into(1 - self.side);
    }

    fn event(&mut self, event: Event) {
        let report = match event {
            Event::Opened => {
                // Data that waited for this side to connect can go now.
                self.shared.flush_into(self.side);
                RelayEvent::Opened(self.side)
            }
            Event::Closed => RelayEvent::Closed(self.side),
            _ => return,
        };
        (self.shared.events)(report);
    }

    fn writable(&mut self) {
        self.shared.flush_into(self.side);
    }
}

/// A running relay: what [`join`] returns.
pub struct Relay(Arc<Shared>, Arc<Counters>);

impl Relay {
    /// Bytes moved so far.
    pub fn counters(&self) -> &Counters {
        &self.1
    }

    /// Bytes read from `side` and not yet written to the other side.
    pub fn pending(&self, side: usize) -> usize {
        let b = &self.0.backlog()[side];
        b.unsent().len() + b.piped
    }

    /// Whether bytes from `side` move by splice(2) (see [`Options::splice`]).
    pub fn splices(&self, side: usize) -> bool {
        self.0.pipes[side].as_ref().is_some_and(|p| !p.off.load(Ordering::Relaxed))
    }
}

/// Joins the chardevs behind `a` and `b` with the default [`Options`]; returns the byte
/// counters. Events go to `events`, on a channel of [`RelayEvent`]s or of the caller's own
/// type that also carries other news (a signal, say).
pub fn join<E>(a: FrontendHandle, b: FrontendHandle, events: Sender<E>) -> Relay
where
    E: From<RelayEvent> + Send + 'static,
{
    join_with(a, b, events, Options::default())
}

/// How big a splice pipe is asked to be (the kernel's default limit for unprivileged users).
const PIPE_SIZE: usize = 1 << 20;

/// Joins the chardevs behind `a` and `b` as `options` say; returns the byte counters. Events
/// go to `events`, as with [`join`].
pub fn join_with<E>(
    a: FrontendHandle,
    b: FrontendHandle,
    events: Sender<E>,
    options: Options,
) -> Relay
where
    E: From<RelayEvent> + Send + 'static,
{
    let fds_flow = options.pass_fds && a.can_pass_fds() && b.can_pass_fds();
    let pipe = || -> Option<Pipe> {
        if !options.splice || fds_flow {
            return None;
        }
        match chardev::fd::splice_pipe(PIPE_SIZE) {
            Ok((r, w, capacity)) => Some(Pipe { r, w, capacity, off: AtomicBool::new(false) }),
            Err(e) => {
                log::warn!("relay: no pipe to splice through ({e}); copying instead");
                None
            }
        }
    };
    let counters = Arc::new(Counters::default());
    let shared = Arc::new(Shared {
        handles: [a.clone(), b.clone()],
        backlog: Mutex::default(),
        pipes: [pipe(), pipe()],
        pass_fds: options.pass_fds,
        counters: Arc::clone(&counters),
        events: Box::new(move |event| {
            let _ = events.send(event.into());
        }),
    });
    a.set_frontend(Side { side: 0, shared: Arc::clone(&shared) });
    b.set_frontend(Side { side: 1, shared: Arc::clone(&shared) });
    Relay(shared, counters)
}

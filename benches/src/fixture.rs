//! The chardev side of the scenarios: a loop with a registry that builds socket chardevs, and
//! the frontends the scenarios install (a consumer that checks the stream, an echo, an idle
//! device, an fd sink). Frontends report through a channel of [`Note`]s, stamped on the loop
//! thread the moment the last unit arrives, so the main thread's wake-up is not measured.

use std::os::fd::OwnedFd;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant};

use chardev::{Event, EventLoop, Frontend, FrontendHandle, LoopThread, Registry};

use crate::pattern::{Checker, Verify};
use crate::proc_status::{cpu_time, Who};
use crate::{Context, Result, Transfer};

/// What a frontend can take per read: more than the loop's 64 KiB buffer, so the buffer is
/// the limit (as in chardev-relay).
pub const ROOM: usize = 1 << 20;

/// A loop on its own thread and a registry that knows the socket backends. Dropping it
/// stops the loop, which drops the chardevs (closing their fds, removing their socket files)
/// before the drop returns, so the next round can bind the same paths.
pub struct Chardevs {
    /// The registry the scenario adds chardevs to.
    pub registry: Registry,
    _lp: LoopThread,
}

impl Chardevs {
    /// A new loop and registry.
    pub fn new() -> Result<Chardevs> {
        let lp = EventLoop::spawn().context("start a chardev loop")?;
        let registry = Registry::new(lp.handle());
        chardev_socket::register(&registry);
        Ok(Chardevs { registry, _lp: lp })
    }

    /// Adds a unix socket server chardev `id` listening at `path` (`wait=off`, plus the
    /// `extra` options such as `,mux=on`) and claims it for a frontend.
    pub fn unix_server(&self, id: &str, path: &Path, extra: &str) -> Result<FrontendHandle> {
        let spec = format!("socket,id={id},path={},server=on,wait=off{extra}", path.display());
        self.registry.add_str(&spec).context(format!("add '{spec}'"))?;
        self.registry.connect(id).context(format!("claim chardev '{id}'"))
    }
}

/// What a frontend tells the scenario.
#[derive(Debug)]
pub enum Note {
    /// The chardev opened (a client connected).
    Opened,
    /// The chardev closed.
    Closed,
    /// The expected amount arrived.
    Done {
        /// When the last unit reached the frontend.
        at: Instant,
        /// Units received in all (bytes, or fds).
        units: u64,
        /// What was wrong with what arrived, if anything.
        error: Option<String>,
    },
    /// The frontend could not do its job (an echo could not write back).
    Failed(String),
}

/// Waits for `Opened`; anything else first is an error.
pub fn wait_opened(notes: &Receiver<Note>, timeout: Duration) -> Result<()> {
    match notes.recv_timeout(timeout) {
        Ok(Note::Opened) => Ok(()),
        Ok(other) => Err(format!("expected the chardev to open, got {other:?}")),
        Err(e) => Err(format!("the chardev did not open: {e}")),
    }
}

/// Waits for `Done`; returns when it was stamped and how many units arrived.
pub fn wait_done(notes: &Receiver<Note>, timeout: Duration) -> Result<(Instant, u64)> {
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match notes.recv_timeout(left) {
            Ok(Note::Done { at, units, error: None }) => return Ok((at, units)),
            Ok(Note::Done { error: Some(e), .. }) | Ok(Note::Failed(e)) => return Err(e),
            Ok(Note::Opened) => {}
            Ok(Note::Closed) => return Err("the chardev closed before all had arrived".into()),
            Err(RecvTimeoutError::Timeout) => {
                return Err(format!("not all had arrived after {timeout:?}"))
            }
            Err(RecvTimeoutError::Disconnected) => return Err("the frontend went away".into()),
        }
    }
}

/// Times a peer thread feeding a chardev: runs `feed` on a thread of its own, waits up to
/// `timeout` for the frontend's `Done`, and returns the transfer with the process's CPU time
/// over it. `chardevs` is dropped before the peer is joined, so that a peer stuck on a
/// stalled chardev gets an error instead of blocking for ever.
pub fn timed_feed(
    chardevs: Chardevs,
    notes: &Receiver<Note>,
    timeout: Duration,
    feed: impl FnOnce() -> std::io::Result<()> + Send + 'static,
) -> Result<Transfer> {
    let cpu = cpu_time(Who::Process)?;
    let start = Instant::now();
    let peer = std::thread::spawn(feed);
    let done = wait_done(notes, timeout);
    let cpu = cpu_time(Who::Process)? - cpu;
    drop(chardevs);
    let fed = peer.join().map_err(|_| "the peer thread panicked")?;
    let (at, units) = done?;
    fed.context("feed the chardev")?;
    Ok(Transfer { units, elapsed: at - start, cpu })
}

/// Consumes a [`pattern`](crate::pattern) stream and reports `Done` each time the byte count
/// reaches the current mark (a P1 transfer, or one criterion iteration).
pub struct Consumer {
    checker: Checker,
    mark: Arc<AtomicU64>,
    reported: u64,
    notes: Sender<Note>,
}

impl Consumer {
    /// A consumer that reports when `mark` bytes have arrived; raise `mark` for more.
    pub fn new(verify: Verify, mark: Arc<AtomicU64>, notes: Sender<Note>) -> Consumer {
        Consumer { checker: Checker::new(verify), mark, reported: 0, notes }
    }
}

impl Frontend for Consumer {
    fn can_receive(&mut self) -> usize {
        ROOM
    }

    fn receive(&mut self, data: &[u8], _fds: Vec<OwnedFd>) {
        self.checker.consume(data);
        let received = self.checker.received();
        let mark = self.mark.load(Ordering::Acquire);
        if received >= mark && self.reported != mark {
            let at = Instant::now();
            self.reported = mark;
            let error = self.checker.finish(received).err();
            let _ = self.notes.send(Note::Done { at, units: received, error });
        }
    }

    fn event(&mut self, event: Event) {
        report(&self.notes, event);
    }
}

fn report(notes: &Sender<Note>, event: Event) {
    let note = match event {
        Event::Opened => Note::Opened,
        Event::Closed => Note::Closed,
        _ => return,
    };
    let _ = notes.send(note);
}

/// Writes back whatever it receives (P4's device), waiting on the loop thread on purpose
/// (`write_all_blocking`), as it always has: the figures stay comparable.
pub struct Echo {
    handle: FrontendHandle,
    notes: Sender<Note>,
}

impl Echo {
    /// An echo that writes back through `handle`.
    pub fn new(handle: FrontendHandle, notes: Sender<Note>) -> Echo {
        Echo { handle, notes }
    }
}

impl Frontend for Echo {
    fn can_receive(&mut self) -> usize {
        ROOM
    }

    fn receive(&mut self, data: &[u8], _fds: Vec<OwnedFd>) {
        if let Err(e) = self.handle.write_all_blocking(data) {
            let _ = self.notes.send(Note::Failed(format!("echo write: {e}")));
        }
    }

    fn event(&mut self, event: Event) {
        report(&self.notes, event);
    }
}

/// Counts opens, for waiting until thousands of chardevs have their clients.
#[derive(Debug, Default)]
pub struct OpenCount {
    opened: Mutex<u64>,
    changed: Condvar,
}

impl OpenCount {
    fn add(&self) {
        *self.opened.lock().unwrap_or_else(PoisonError::into_inner) += 1;
        self.changed.notify_all();
    }

    /// Waits until `n` chardevs have opened; returns how many had by the deadline.
    pub fn wait_for(&self, n: u64, timeout: Duration) -> u64 {
        let opened = self.opened.lock().unwrap_or_else(PoisonError::into_inner);
        let (opened, _) = self
            .changed
            .wait_timeout_while(opened, timeout, |o| *o < n)
            .unwrap_or_else(PoisonError::into_inner);
        *opened
    }
}

/// A device that is attached but silent (P5's crowd): it only counts its chardev's open.
pub struct Idle(pub Arc<OpenCount>);

impl Frontend for Idle {
    fn can_receive(&mut self) -> usize {
        ROOM
    }

    fn receive(&mut self, _data: &[u8], _fds: Vec<OwnedFd>) {}

    fn event(&mut self, event: Event) {
        if event == Event::Opened {
            self.0.add();
        }
    }
}

/// Drops every fd it receives and reports `Done` once `expect` fds (each with one byte)
/// have arrived (P6's device).
pub struct FdSink {
    expect: u64,
    bytes: u64,
    fds: u64,
    /// Check each fd really is blocking, as the fd contract promises (a syscall per fd).
    check_blocking: bool,
    error: Option<String>,
    notes: Sender<Note>,
}

impl FdSink {
    /// A sink expecting `expect` fds.
    pub fn new(expect: u64, check_blocking: bool, notes: Sender<Note>) -> FdSink {
        FdSink { expect, bytes: 0, fds: 0, check_blocking, error: None, notes }
    }
}

impl Frontend for FdSink {
    fn can_receive(&mut self) -> usize {
        ROOM
    }

    fn receive(&mut self, data: &[u8], fds: Vec<OwnedFd>) {
        self.bytes += data.len() as u64;
        self.fds += fds.len() as u64;
        if self.check_blocking && self.error.is_none() {
            if let Some(fd) = fds.iter().find(|fd| chardev::fd::is_nonblocking(fd).unwrap_or(true))
            {
                self.error =
                    Some(format!("received fd {} is not blocking", chardev::fd::number(fd)));
            }
        }
        drop(fds);
        if self.fds >= self.expect && self.bytes >= self.expect {
            let at = Instant::now();
            let error = self.error.take().or_else(|| {
                (self.fds != self.expect || self.bytes != self.expect).then(|| {
                    format!(
                        "{} fds and {} bytes arrived, {} of each sent",
                        self.fds, self.bytes, self.expect
                    )
                })
            });
            self.expect = u64::MAX;
            let _ = self.notes.send(Note::Done { at, units: self.fds, error });
        }
    }

    fn event(&mut self, event: Event) {
        report(&self.notes, event);
    }
}

//! One chardev as the loop, the registry and frontend handles share it.
//!
//! The backend sits behind a mutex: the loop takes it to read, a handle to write (QEMU's
//! `chr_write_lock`). Neither holds it while a frontend callback runs, so a callback may
//! write. Hot swap replaces the backend inside the same cell, which is why handles survive it.

use std::io;
use std::os::fd::BorrowedFd;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::backend::Chardev;
use crate::backlog::{Backlog as OverflowQueue, Flushed};
use crate::counters::CoreCounters;
use crate::error::{Error, Result};
use crate::event_loop::{LoopHandle, Request};
use crate::fdset::FdSetLease;
use crate::frontend::callbacks::Frontend;
use crate::logfile::Log;
use crate::mux::{Timestamps, MAX_MUX};
use crate::serial::{ModemLines, SerialLine, SerialParams};
use crate::sync::lock;

/// Slab key of a cell that is not (or no longer) on a loop.
pub(crate) const NO_KEY: usize = usize::MAX;

/// What a chardev opened besides its backend: the logfile, and the leases on the fd sets
/// that it or the backend came from.
#[derive(Debug, Default)]
pub(crate) struct Opened {
    pub(crate) log: Option<Log>,
    pub(crate) leases: Vec<FdSetLease>,
    /// `overflow=`: how frontend writes meet a full backend.
    pub(crate) overflow: crate::options::Overflow,
}

/// The frontend slot number that stands for the cell's own overflow queue in writability
/// requests (frontends use 0..MAX_MUX): the loop flushes the queue instead of telling a
/// frontend.
pub(crate) const OVERFLOW_SLOT: usize = 7;

/// How a write of frontend output goes to the chardev's logfile.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum LogAs {
    /// New output: logged as written, and all of it at once when refused for good (no
    /// peer), since the frontend drops it then, as a guest's UART does (QEMU logs it too).
    Output,
    /// New output that the frontend keeps when a backend with no peer refuses it
    /// (`NotConnected`) and writes again once it is open (a relay): logged when written, so
    /// that the log has it once.
    Retried,
    /// Output written before, sent again to a peer that just came (a hub's history): the
    /// log has it already.
    Replay,
}

pub(crate) struct Cell {
    pub(crate) label: String,
    backend: Mutex<Box<dyn Chardev>>,
    /// Slab key on the loop, [`NO_KEY`] until the loop has placed the cell.
    pub(crate) key: AtomicUsize,
    pub(crate) lp: LoopHandle,
    log: Mutex<Option<Log>>,
    /// What keeps the fd sets alive that the backend or its logfile came from (dropped
    /// with them, on remove and on hot swap).
    leases: Mutex<Vec<FdSetLease>>,
    /// `Opened` seen and `Closed` not since (QEMU's `be_open`).
    open: AtomicBool,
    /// Per frontend slot: the id of the handle that claimed it, 0 when free. Clones of a
    /// detached handle keep a stale id and can no longer act on the slot.
    owners: [AtomicU32; MAX_MUX],
    /// Force-removed from its registry: handles that still exist are no longer attached.
    pub(crate) retired: AtomicBool,
    /// Per frontend slot: bumped whenever callbacks are set or cleared, so that the loop
    /// stops calling a frontend the moment it is replaced, even mid-read.
    pub(crate) frontend_gen: [AtomicU32; MAX_MUX],
    /// Bit per frontend slot: callbacks installed (QEMU's `fe_is_open`).
    pub(crate) installed: AtomicU8,
    /// An `accept_input` request is queued and not yet handled (coalesces requests).
    pub(crate) accept_queued: AtomicBool,
    /// Present on a mux: up to [`MAX_MUX`] frontends, `Ctrl-A` escapes; the output side
    /// (`Ctrl-A t` timestamps) is kept here, where every writer thread sees it.
    pub(crate) mux: Option<Mutex<Timestamps>>,
    /// The loop turn in which a write last came back short on the loop thread; 0 when the
    /// last short write was on another thread (or there was none).
    short_write: AtomicU64,
    /// What the core counts (see [`crate::counters`]).
    pub(crate) counters: CoreCounters,
    /// `overflow=drop`: output the backend has not taken yet; `None` for `block`.
    overflow: Mutex<Option<OverflowQueue>>,
    /// The last terminal size a backend reported (`Event::Resize`): columns << 16 | rows,
    /// 0 while none was.
    size: AtomicU32,
}

impl Cell {
    pub(crate) fn new(
        label: String,
        backend: Box<dyn Chardev>,
        lp: LoopHandle,
        opened: Opened,
        mux: bool,
    ) -> Cell {
        Cell {
            label,
            backend: Mutex::new(backend),
            key: AtomicUsize::new(NO_KEY),
            lp,
            log: Mutex::new(opened.log),
            leases: Mutex::new(opened.leases),
            open: AtomicBool::new(false),
            owners: Default::default(),
            retired: AtomicBool::new(false),
            frontend_gen: Default::default(),
            installed: AtomicU8::new(0),
            accept_queued: AtomicBool::new(false),
            short_write: AtomicU64::new(0),
            counters: CoreCounters::default(),
            overflow: Mutex::new(Self::overflow_queue(opened.overflow)),
            size: AtomicU32::new(0),
            mux: mux.then(|| Mutex::new(Timestamps::default())),
        }
    }

    pub(crate) fn backend(&self) -> MutexGuard<'_, Box<dyn Chardev>> {
        lock(&self.backend)
    }

    pub(crate) fn key(&self) -> usize {
        self.key.load(Ordering::Acquire)
    }

    pub(crate) fn is_open(&self) -> bool {
        self.open.load(Ordering::Acquire)
    }

    /// Records the open state; returns whether it changed.
    pub(crate) fn set_open(&self, open: bool) -> bool {
        self.open.swap(open, Ordering::AcqRel) != open
    }

    pub(crate) fn slots(&self) -> usize {
        if self.mux.is_some() {
            MAX_MUX
        } else {
            1
        }
    }

    /// Claims a free frontend slot for a new handle id, or says who is in the way.
    pub(crate) fn claim(&self, id: u32) -> Result<usize> {
        for (slot, owner) in self.owners.iter().enumerate().take(self.slots()) {
            if owner.compare_exchange(0, id, Ordering::AcqRel, Ordering::Acquire).is_ok() {
                return Ok(slot);
            }
        }
        Err(if self.mux.is_some() {
            Error::option(
                "mux",
                "on",
                format!(
                    "too many uses of multiplexed chardev '{}' (maximum is {MAX_MUX})",
                    self.label
                ),
            )
        } else {
            Error::InUse(self.label.clone())
        })
    }

    /// Whether handle `id` still owns `slot`.
    pub(crate) fn owns(&self, slot: usize, id: u32) -> bool {
        self.owners.get(slot).is_some_and(|o| o.load(Ordering::Acquire) == id)
    }

    pub(crate) fn is_claimed(&self) -> bool {
        self.owners.iter().any(|o| o.load(Ordering::Acquire) != 0)
    }

    pub(crate) fn frontend_open(&self) -> bool {
        self.installed.load(Ordering::Acquire) != 0
    }

    pub(crate) fn set_frontend(self: &Arc<Self>, slot: usize, frontend: Option<Box<dyn Frontend>>) {
        let bit = 1u8 << slot;
        if frontend.is_some() {
            self.installed.fetch_or(bit, Ordering::AcqRel);
        } else {
            self.installed.fetch_and(!bit, Ordering::AcqRel);
        }
        // From here on the loop no longer calls the frontend this replaces.
        let generation = self.frontend_gen[slot].fetch_add(1, Ordering::AcqRel).wrapping_add(1);
        let cell = Arc::clone(self);
        self.lp.post(Request::Install { cell, slot, frontend, generation });
    }

    /// Releases `slot` if handle `id` still owns it: callbacks go, the chardev is free.
    pub(crate) fn detach(self: &Arc<Self>, slot: usize, id: u32) {
        if self.owns(slot, id) {
            self.set_frontend(slot, None);
            let _ = self.owners[slot].compare_exchange(id, 0, Ordering::AcqRel, Ordering::Acquire);
        }
    }

    pub(crate) fn take_focus(self: &Arc<Self>, slot: usize) {
        self.lp.post(Request::Focus { cell: Arc::clone(self), slot });
    }

    pub(crate) fn accept_input(self: &Arc<Self>) {
        if !self.accept_queued.swap(true, Ordering::AcqRel) {
            self.lp.post(Request::AcceptInput(Arc::clone(self)));
        }
    }

    pub(crate) fn notify_writable(self: &Arc<Self>, slot: usize) {
        self.lp.post(Request::WatchWritable { cell: Arc::clone(self), slot });
    }

    pub(crate) fn disconnect(self: &Arc<Self>) {
        self.lp.post(Request::Disconnect(Arc::clone(self)));
    }

    pub(crate) fn send_break(&self) -> Result<()> {
        self.serial_line("send a break", |line| line.send_break())
    }

    pub(crate) fn set_serial_params(&self, params: &SerialParams) -> Result<()> {
        self.serial_line("set serial parameters", |line| line.set_params(params))
    }

    pub(crate) fn modem_lines(&self) -> Result<ModemLines> {
        self.serial_line("read modem lines", |line| line.modem_lines())
    }

    pub(crate) fn set_modem_lines(&self, lines: ModemLines) -> Result<()> {
        self.serial_line("set modem lines", |line| line.set_modem_lines(lines))
    }

    /// Runs `f` on the backend's serial line; `Unsupported` (naming `operation`) without one.
    fn serial_line<T>(
        &self,
        operation: &'static str,
        f: impl FnOnce(&mut dyn SerialLine) -> Result<T>,
    ) -> Result<T> {
        let mut backend = self.backend();
        let kind = backend.kind();
        match backend.serial_line() {
            Some(line) => f(line),
            None => Err(Error::Unsupported { what: kind.into(), operation }),
        }
    }

    pub(crate) fn can_pass_fds(&self) -> bool {
        self.backend().can_pass_fds()
    }

    pub(crate) fn set_size(&self, cols: u16, rows: u16) {
        self.size.store(u32::from(cols) << 16 | u32::from(rows), Ordering::Relaxed);
    }

    /// The last terminal size reported, if any.
    pub(crate) fn size(&self) -> Option<(u16, u16)> {
        let packed = self.size.load(Ordering::Relaxed);
        (packed != 0).then_some(((packed >> 16) as u16, packed as u16))
    }

    fn overflow_queue(policy: crate::options::Overflow) -> Option<OverflowQueue> {
        (policy == crate::options::Overflow::Drop)
            .then(|| OverflowQueue::new(crate::fanout::OVERFLOW_QUEUE))
    }

    /// One non-blocking write of frontend output, logged.
    pub(crate) fn write(
        self: &Arc<Self>,
        buf: &[u8],
        fds: &[BorrowedFd<'_>],
        log_as: LogAs,
    ) -> io::Result<usize> {
        if self.stamping() {
            return self.write_stamped(buf, fds);
        }
        let mut overflow = lock(&self.overflow);
        if let Some(queue) = overflow.as_mut() {
            return self.write_dropping(queue, buf, fds, log_as);
        }
        drop(overflow);
        let r = self.backend().write(buf, fds);
        self.log_output(buf, &r, log_as);
        self.note_short(buf.len(), &r);
        self.count_out(&r);
        r
    }

    /// `overflow=drop`: the write is taken whole at once; what the backend does not take now
    /// waits in the queue (the oldest dropped beyond its bound), and the loop sends it when
    /// the backend is writable. Errors other than a full backend (no peer) pass through as
    /// with `block`, while nothing is queued.
    fn write_dropping(
        self: &Arc<Self>,
        queue: &mut OverflowQueue,
        buf: &[u8],
        fds: &[BorrowedFd<'_>],
        log_as: LogAs,
    ) -> io::Result<usize> {
        if queue.is_empty() {
            let r = self.backend().write(buf, fds);
            match &r {
                Ok(n) if *n >= buf.len() => {
                    self.log_output(buf, &r, log_as);
                    self.count_out(&r);
                    return r;
                }
                Ok(n) => {
                    let n = *n;
                    self.count_out(&r);
                    self.log_output(buf, &Ok(buf.len()), log_as);
                    self.queue_rest(queue, &buf[n..]);
                    return Ok(buf.len());
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    let _ = e;
                    if !fds.is_empty() {
                        // Fds cannot wait in a queue of bytes.
                        return Err(io::ErrorKind::WouldBlock.into());
                    }
                    self.log_output(buf, &Ok(buf.len()), log_as);
                    self.queue_rest(queue, buf);
                    return Ok(buf.len());
                }
                Err(_) => {
                    self.log_output(buf, &r, log_as);
                    return r;
                }
            }
        }
        if !fds.is_empty() {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        // Behind already: queue after what waits, so that order holds.
        self.log_output(buf, &Ok(buf.len()), log_as);
        self.queue_rest(queue, buf);
        if !queue.waiting {
            self.flush_queue(queue);
        }
        Ok(buf.len())
    }

    /// Queues `rest`, counts what that drops, and asks the loop to flush when the backend
    /// can take more.
    fn queue_rest(self: &Arc<Self>, queue: &mut OverflowQueue, rest: &[u8]) {
        let dropped = queue.push(rest);
        CoreCounters::add(&self.counters.dropped_overflow, dropped);
        if !queue.waiting {
            queue.waiting = true;
            self.notify_writable(OVERFLOW_SLOT);
        }
    }

    /// Sends what the overflow queue holds as far as the backend takes it.
    fn flush_queue(self: &Arc<Self>, queue: &mut OverflowQueue) {
        let mut out = 0u64;
        let flushed = {
            let mut backend = self.backend();
            queue.flush(|piece| backend.write(piece, &[]), |piece| out += piece.len() as u64)
        };
        CoreCounters::add(&self.counters.bytes_out, out);
        match flushed {
            Flushed::Empty => queue.waiting = false,
            Flushed::Full => {
                queue.waiting = true;
                self.notify_writable(OVERFLOW_SLOT);
            }
            Flushed::Failed(lost) => {
                queue.waiting = false;
                CoreCounters::add(&self.counters.dropped_overflow, lost);
            }
        }
    }

    /// The loop saw the backend writable while the overflow queue waited for it.
    pub(crate) fn flush_overflow(self: &Arc<Self>) {
        let mut overflow = lock(&self.overflow);
        if let Some(queue) = overflow.as_mut() {
            queue.waiting = false;
            self.flush_queue(queue);
        }
    }

    fn count_out(&self, r: &io::Result<usize>) {
        if let Ok(n) = r {
            CoreCounters::add(&self.counters.bytes_out, *n as u64);
        }
    }

    /// Every counter: the core's and the backend's.
    pub(crate) fn counters(&self) -> crate::Counters {
        let mut counters = self.counters.snapshot();
        counters.queued_overflow = lock(&self.overflow).as_ref().map_or(0, OverflowQueue::queued);
        counters.dropped_log += lock(&self.log).as_ref().map_or(0, Log::lost);
        self.backend().counters(&mut counters);
        counters
    }

    /// Remembers where a write that did not take everything happened (see
    /// [`Cell::short_write_turn`]).
    fn note_short(&self, asked: usize, r: &io::Result<usize>) {
        let short = match r {
            Ok(n) => *n < asked,
            Err(e) => e.kind() == io::ErrorKind::WouldBlock,
        };
        if short {
            let turn = self.lp.turn_on_loop_thread().unwrap_or(0);
            self.short_write.store(turn, Ordering::Relaxed);
        }
    }

    /// The loop turn in which the last short write happened on the loop thread, 0 if it
    /// happened elsewhere: the loop knows whether an epoll wait came between it and now.
    pub(crate) fn short_write_turn(&self) -> u64 {
        self.short_write.load(Ordering::Relaxed)
    }

    /// Splices output out of `pipe`; refused where every byte must pass through here (a
    /// logfile, mux timestamps), so that nothing goes out unlogged.
    pub(crate) fn write_from_pipe(&self, pipe: BorrowedFd<'_>, len: usize) -> io::Result<usize> {
        if self.stamping() || lock(&self.log).is_some() || lock(&self.overflow).is_some() {
            let what = format!("{} (with a logfile, timestamps or overflow=drop)", self.label);
            return Err(Error::Unsupported { what, operation: "write from a pipe" }.into());
        }
        let r = {
            let mut backend = self.backend();
            let kind = backend.kind();
            match backend.splice() {
                Some(splice) => splice.write_from_pipe(pipe, len),
                None => {
                    Err(Error::Unsupported { what: kind.into(), operation: "write from a pipe" }
                        .into())
                }
            }
        };
        self.note_short(len, &r);
        self.count_out(&r);
        r
    }

    /// Writes all of `buf`, waiting on the backend's fd (poll(2)) while it is full.
    pub(crate) fn write_all(self: &Arc<Self>, buf: &[u8]) -> io::Result<()> {
        if self.stamping() {
            return self.write_stamped(buf, &[]).map(drop);
        }
        // overflow=drop: never waits; the queue takes what the backend does not.
        if lock(&self.overflow).is_some() {
            return self.write(buf, &[], LogAs::Output).map(drop);
        }
        self.write_all_raw(buf)
    }

    fn write_all_raw(&self, mut rest: &[u8]) -> io::Result<()> {
        while !rest.is_empty() {
            let (r, wait_on) = {
                let mut be = self.backend();
                match be.write(rest, &[]) {
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        // Wait on a duplicate so that the lock is free while we wait and a
                        // swapped-out backend cannot hand its fd number to someone else.
                        let fd = be.write_fd().map(|fd| fd.try_clone_to_owned()).transpose()?;
                        (Err(e), fd)
                    }
                    r => (r, None),
                }
            };
            self.log_output(rest, &r, LogAs::Output);
            self.count_out(&r);
            match r {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => rest = &rest[n.min(rest.len())..],
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => match wait_on {
                    // The 1 s bound only re-checks the backend in case it was swapped or
                    // disconnected under us; the wake-up itself comes from the kernel.
                    Some(fd) => {
                        let waited = Instant::now();
                        let r = crate::fd::wait_writable(
                            std::os::fd::AsFd::as_fd(&fd),
                            Some(Duration::from_secs(1)),
                        );
                        let ns = u64::try_from(waited.elapsed().as_nanos()).unwrap_or(u64::MAX);
                        CoreCounters::add(&self.counters.blocked_ns, ns);
                        r?;
                    }
                    None => return Err(e),
                },
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    fn stamping(&self) -> bool {
        self.mux.as_ref().is_some_and(|m| lock(m).is_on())
    }

    /// `Ctrl-A t`: mux output lines stamped, or no longer.
    pub(crate) fn toggle_timestamps(&self) {
        if let Some(mux) = &self.mux {
            lock(mux).toggle();
        }
    }

    /// Mux output with `[hh:mm:ss.mmm] ` before each line (`Ctrl-A t`), written in full.
    fn write_stamped(&self, buf: &[u8], fds: &[BorrowedFd<'_>]) -> io::Result<usize> {
        crate::backend::refuse_fds("mux", fds)?;
        let Some(mux) = &self.mux else { return Ok(0) };
        let mut out = Vec::with_capacity(buf.len() + 16);
        lock(mux).stamp(buf, Instant::now(), &mut out);
        self.write_all_raw(&out)?;
        Ok(buf.len())
    }

    /// Copies frontend output to the logfile: the bytes written, or all of them when the
    /// write failed for good (QEMU: "assume this method won't be invoked again"), unless the
    /// frontend keeps them to write again once a peer is there; nothing for a replay.
    fn log_output(&self, buf: &[u8], result: &io::Result<usize>, log_as: LogAs) {
        // Written under the cell's log lock, without cloning the log per write (two atomic
        // operations fewer per console line): Log::write only queues (or, after a quiet
        // spell, writes one line), and what else takes this lock (a reopen, a hot swap)
        // can wait that long.
        if log_as == LogAs::Replay {
            return;
        }
        let guard = lock(&self.log);
        let Some(log) = guard.as_ref() else { return };
        let logged = match result {
            Ok(n) => &buf[..(*n).min(buf.len())],
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return,
            // Refused before anything was sent (fds on a backend that cannot carry them).
            Err(e) if e.kind() == io::ErrorKind::Unsupported => return,
            // Logged when they are written.
            Err(e) if log_as == LogAs::Retried && e.kind() == io::ErrorKind::NotConnected => return,
            Err(_) => buf,
        };
        log.write(logged);
    }

    /// Opens the logfile's path again (logrotate's `create` mode); `Ok(false)` when the
    /// chardev has no logfile.
    pub(crate) fn reopen_log(&self) -> Result<bool> {
        let Some(log) = lock(&self.log).clone() else { return Ok(false) };
        log.reopen().map(|()| true)
    }

    /// Replaces the logfile and the fd-set leases (hot swap takes the new spec's; removal
    /// gives [`Opened::default`]). The old ones are dropped after the new are in place.
    pub(crate) fn set_opened(&self, opened: Opened) {
        let old_log = std::mem::replace(&mut *lock(&self.log), opened.log);
        let old_leases = std::mem::replace(&mut *lock(&self.leases), opened.leases);
        *lock(&self.overflow) = Self::overflow_queue(opened.overflow);
        // What the old log still queues is written, and its file closed, before this returns.
        if let Some(log) = old_log {
            log.close();
            CoreCounters::add(&self.counters.dropped_log, log.lost());
        }
        drop(old_leases);
    }

    /// Takes the backend out, leaving an inert one that refuses writes (remove, force).
    pub(crate) fn replace_backend(&self, new: Box<dyn Chardev>) -> Box<dyn Chardev> {
        std::mem::replace(&mut *self.backend(), new)
    }
}

impl std::fmt::Debug for Cell {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cell").field("label", &self.label).finish_non_exhaustive()
    }
}

/// What stays in a cell after its chardev was removed: every write fails, nothing is read.
#[derive(Debug)]
pub(crate) struct Removed {
    pub(crate) label: String,
}

impl Chardev for Removed {
    fn register(&mut self, _io: &mut crate::Io<'_>) -> Result<()> {
        Ok(())
    }
    fn deregister(&mut self, _registry: &mio::Registry) {}
    fn write(&mut self, _buf: &[u8], _fds: &[BorrowedFd<'_>]) -> io::Result<usize> {
        Err(Error::NotConnected(self.label.clone()).into())
    }
    fn kind(&self) -> &'static str {
        "removed"
    }
}

//! Two chardevs back to back, as socat joins two addresses: what one side reads the other
//! writes, fds included when both sides carry them, with flow control end to end.
//!
//! Each side's frontend reads only while the data it last read has been written to the
//! other side. A partial write keeps the rest and asks the loop to say when the other side
//! can take more ([`FrontendHandle::notify_writable`]); nothing blocks the loop, so both
//! directions flow at once, and a slow reader on one side slows the writer on the other.

use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

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
pub struct Counters(pub [AtomicU64; 2]);

impl Counters {
    /// Bytes moved from `side` to the other one so far.
    pub fn moved(&self, side: usize) -> u64 {
        self.0[side].load(Ordering::Relaxed)
    }
}

/// Data read from one side, not yet taken by the other.
#[derive(Default)]
struct Backlog {
    data: Vec<u8>,
    fds: Vec<OwnedFd>,
}

struct Shared {
    handles: [FrontendHandle; 2],
    /// `[0]`: read from side 0, waiting to be written to side 1.
    backlog: Mutex<[Backlog; 2]>,
    counters: Arc<Counters>,
    events: Sender<RelayEvent>,
}

impl Shared {
    fn backlog(&self) -> MutexGuard<'_, [Backlog; 2]> {
        self.backlog.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Writes what side `from` read into the other side; keeps what does not fit.
    fn pass_on(&self, from: usize, data: &[u8], fds: Vec<OwnedFd>) {
        let to = 1 - from;
        let borrowed: Vec<_> = fds.iter().map(AsFd::as_fd).collect();
        let written = match self.handles[to].write_with_fds(data, &borrowed) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => 0,
            Err(e) if e.kind() == std::io::ErrorKind::NotConnected => 0,
            Err(e) => {
                log::warn!("relay: side {to} write failed: {e}; {} bytes dropped", data.len());
                return;
            }
        };
        self.counters.0[from].fetch_add(written as u64, Ordering::Relaxed);
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

    /// Side `to` can take more: flushes the backlog meant for it, then lets the other side
    /// read again.
    fn flush_into(&self, to: usize) {
        let from = 1 - to;
        let mut backlog = self.backlog();
        let b = &mut backlog[from];
        if b.data.is_empty() {
            return;
        }
        let borrowed: Vec<_> = b.fds.iter().map(AsFd::as_fd).collect();
        let written = match self.handles[to].write_with_fds(&b.data, &borrowed) {
            Ok(n) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::NotConnected
                ) =>
            {
                0
            }
            Err(e) => {
                log::warn!("relay: side {to} write failed: {e}; {} bytes dropped", b.data.len());
                b.data.len()
            }
        };
        if written > 0 {
            b.fds.clear();
        }
        b.data.drain(..written);
        self.counters.0[from].fetch_add(written as u64, Ordering::Relaxed);
        let done = b.data.is_empty();
        drop(backlog);
        if done {
            // Closed is delivered after the open flag drops, on this same thread: a side that
            // closed with a backlog is reported drained here, and only such a side.
            if !self.handles[from].is_open() {
                let _ = self.events.send(RelayEvent::Drained(from));
            }
            self.handles[from].accept_input();
        } else if written > 0 || self.handles[to].is_open() {
            self.handles[to].notify_writable();
        }
    }
}

/// One side's frontend.
struct Side {
    side: usize,
    shared: Arc<Shared>,
}

impl Frontend for Side {
    fn can_receive(&mut self) -> usize {
        if self.shared.backlog()[self.side].data.is_empty() {
            READ_SIZE
        } else {
            0
        }
    }

    fn receive(&mut self, data: &[u8], fds: Vec<OwnedFd>) {
        self.shared.pass_on(self.side, data, fds);
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
        let _ = self.shared.events.send(report);
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
        self.0.backlog()[side].data.len()
    }
}

/// Joins the chardevs behind `a` and `b`; returns the byte counters. Events go to `events`.
pub fn join(a: FrontendHandle, b: FrontendHandle, events: Sender<RelayEvent>) -> Relay {
    let counters = Arc::new(Counters::default());
    let shared = Arc::new(Shared {
        handles: [a.clone(), b.clone()],
        backlog: Mutex::default(),
        counters: Arc::clone(&counters),
        events,
    });
    a.set_frontend(Side { side: 0, shared: Arc::clone(&shared) });
    b.set_frontend(Side { side: 1, shared: Arc::clone(&shared) });
    Relay(shared, counters)
}

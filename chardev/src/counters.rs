//! What a chardev has moved, lost and waited for: the figures an operator needs to tell a
//! console that works from one that silently loses output or stalls its guest.
//!
//! The core counts what passes through it (bytes in and out, fds, time a writer waited,
//! output dropped by `overflow=drop`); a backend adds what only it knows (connections,
//! output its viewers or its backlog dropped) through [`Chardev::counters`]. Read them with
//! `Registry::counters`; QMP shows them in `query-chardev` (see `chardev-qmp`'s `vendor`),
//! the demos in `info chardev`.
//!
//! [`Chardev::counters`]: crate::Chardev::counters

use std::sync::atomic::{AtomicU64, Ordering};

/// The counters of one chardev, since it was created (a `chardev-change` keeps the core's,
/// and the backend's start again with the new backend).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Counters {
    /// Input bytes handed to the frontend.
    pub bytes_in: u64,
    /// Output bytes the backend took from the frontend.
    pub bytes_out: u64,
    /// Output bytes dropped by `overflow=drop` (the backend could not take them in time).
    pub dropped_overflow: u64,
    /// Output bytes waiting now in the `overflow=drop` queue for the backend (a level, not a
    /// count: output written = `bytes_out` + `dropped_overflow` + this).
    pub queued_overflow: u64,
    /// Output bytes viewers lost by falling behind (`clients=`, the hub's members).
    pub dropped_viewers: u64,
    /// Output bytes a backlog lost to its bound while nobody was connected (`backlog=`).
    pub dropped_backlog: u64,
    /// Output bytes the `logfile=` could not take (a full disk, an I/O error, a failed
    /// rotation): the frontend's writes went on, and a line in the file marks where they
    /// are missing once it takes writes again.
    pub dropped_log: u64,
    /// Nanoseconds writers spent waiting for the backend to take output (`write_all` on a
    /// full backend: how long the guest was held up).
    pub blocked_ns: u64,
    /// Connections accepted (servers) or made (clients).
    pub connections: u64,
    /// File descriptors received with input.
    pub fds_received: u64,
    /// Received file descriptors closed without reaching a frontend (none installed, too
    /// many in one message, or their flags could not be set).
    pub fds_closed: u64,
}

/// The core's side of [`Counters`], kept in the chardev's cell, updated from any thread.
#[derive(Debug, Default)]
pub(crate) struct CoreCounters {
    pub(crate) bytes_in: AtomicU64,
    pub(crate) bytes_out: AtomicU64,
    pub(crate) dropped_overflow: AtomicU64,
    /// What the logs this chardev had before its current one lost (a hot swap replaces it).
    pub(crate) dropped_log: AtomicU64,
    pub(crate) blocked_ns: AtomicU64,
    pub(crate) fds_received: AtomicU64,
    pub(crate) fds_closed: AtomicU64,
}

impl CoreCounters {
    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        if n > 0 {
            counter.fetch_add(n, Ordering::Relaxed);
        }
    }

    /// The core's figures, the backend's still zero.
    pub(crate) fn snapshot(&self) -> Counters {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        Counters {
            bytes_in: get(&self.bytes_in),
            bytes_out: get(&self.bytes_out),
            dropped_overflow: get(&self.dropped_overflow),
            dropped_log: get(&self.dropped_log),
            blocked_ns: get(&self.blocked_ns),
            fds_received: get(&self.fds_received),
            fds_closed: get(&self.fds_closed),
            ..Counters::default()
        }
    }
}

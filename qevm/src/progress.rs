//! A migration's progress, shared between the thread that saves and the monitors, and the
//! copy of its counters that `query-migrate` reports.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use crate::PAGE_SIZE;

/// A migration's progress, shared between the thread that saves and the monitors:
/// `query-migrate` reads it, `migrate_cancel` sets its cancel flag.
#[derive(Debug, Default)]
pub struct Progress {
    pub(crate) transferred: AtomicU64,
    pub(crate) total: AtomicU64,
    pub(crate) remaining: AtomicU64,
    pub(crate) duplicate: AtomicU64,
    pub(crate) normal: AtomicU64,
    cancelled: AtomicBool,
}

/// A copy of the counters of a [`Progress`], named as `query-migrate`'s `ram` object names
/// them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RamStats {
    /// Bytes of the stream handed to the writer so far.
    pub transferred: u64,
    /// Bytes of guest RAM.
    pub total: u64,
    /// Bytes of guest RAM not sent yet.
    pub remaining: u64,
    /// Pages sent as ZERO records.
    pub duplicate: u64,
    /// Pages sent with their data.
    pub normal: u64,
    /// `normal` in bytes.
    pub normal_bytes: u64,
}

impl Progress {
    /// Counters at zero, not cancelled.
    pub fn new() -> Progress {
        Progress::default()
    }

    /// Bytes of the stream handed to the writer so far (`ram.transferred`). With a
    /// [`BlockingWriter`](crate::BlockingWriter), at most its buffer ahead of what the fd
    /// took.
    pub fn transferred(&self) -> u64 {
        self.transferred.load(Ordering::Relaxed)
    }

    /// All the counters.
    pub fn ram(&self) -> RamStats {
        let normal = self.normal.load(Ordering::Relaxed);
        RamStats {
            transferred: self.transferred(),
            total: self.total.load(Ordering::Relaxed),
            remaining: self.remaining.load(Ordering::Relaxed),
            duplicate: self.duplicate.load(Ordering::Relaxed),
            normal,
            normal_bytes: normal * PAGE_SIZE as u64,
        }
    }

    /// Asks the saving thread to stop: it does at the next part boundary, with
    /// [`Error::Cancelled`](crate::Error::Cancelled). A reader that stopped reading holds the
    /// writer inside a write until then; to cancel that too, also shut the socket down
    /// (QEMU's `migrate_cancel` calls shutdown(2)), and the write fails.
    pub fn cancel(&self) {
        self.cancelled.store(true, Ordering::Release);
    }

    /// Whether [`Progress::cancel`] was called.
    pub fn is_cancelled(&self) -> bool {
        self.cancelled.load(Ordering::Acquire)
    }
}

//! Locks that outlive a panic: the one poison-tolerant `lock` the workspace uses.

use std::sync::{Mutex, MutexGuard, PoisonError};

/// Locks `m` even if a holder panicked. Every mutex of the chardev crates guards data that
/// stays as consistent as a failed write would leave it, and one panicking frontend (or
/// command, or device thread) must not take every later user of the lock down with it.
/// Public so that the crates built on this one (the QMP monitor, the demos) share it.
pub fn lock<T: ?Sized>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

//! Locks that outlive a panic.

use std::sync::{Mutex, MutexGuard, PoisonError};

/// Locks `m` even if a holder panicked: every mutex of this crate guards data that stays as
/// consistent as a failed write would leave it, and one panicking frontend must not take
/// the chardev down with it.
pub(crate) fn lock<T: ?Sized>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

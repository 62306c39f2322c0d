//! Writability: a frontend that got a short write asks to be told, once, when the backend
//! can take output again (`FrontendHandle::notify_writable`).
//!
//! The loop looks first (room may have come before the request), then lets a backend that
//! watches its own output fd report the edge ([`Chardev::watch_output`]), and otherwise
//! watches a duplicate of the output fd itself. The short-write rule: after a write that came
//! back short on the loop thread in this turn, a backend that always watches is not looked
//! at, since any room after that write raises an edge still to be seen.
//!
//! [`Chardev::watch_output`]: crate::Chardev::watch_output

use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::Arc;
use std::time::Duration;

use super::core::Core;
use super::entry::Entry;
use crate::backend::Io;
use crate::token::SourceToken;

/// How a frontend waiting for writability will be told.
enum Watch {
    /// Now: the backend can take output (or never blocks).
    Now,
    /// By the backend's [`Io::output_ready`] (see [`Chardev::watch_output`]).
    ///
    /// [`Chardev::watch_output`]: crate::Chardev::watch_output
    Backend,
    /// By the loop's own watch on this duplicate of the backend's output fd.
    Dup(OwnedFd),
}

impl Core {
    /// Tells `slot`'s frontend once when the backend can take output (see `notify_writable`).
    pub(super) fn watch_writable(&mut self, key: usize, slot: usize) {
        let Some(entry) = self.entries.get_mut(key) else { return };
        entry.want_writable |= 1 << slot;
        if entry.write_watch.is_some() {
            return; // armed already; it tells every waiting slot
        }
        let (cell, generation) = (Arc::clone(&entry.cell), entry.generation);
        let mut io =
            Io::new(&self.registry, &cell, generation, &mut self.raised, &mut self.new_timers);
        let mut backend = cell.backend();
        // Room may have come before this request (the write may have failed on another
        // thread, and the edge gone by): look first. No fd: writes never block (a ringbuf).
        // But a write that came back short on this thread in this turn had no epoll wait
        // since: on a backend that always watches, any room after it raises an edge still
        // to be seen, while looking now would find a sliver (a pty reports room as soon as
        // a few bytes have gone) and spend a write and a wake-up on it.
        let fresh = cell.short_write_turn() == self.turn && backend.output_always_watched();
        let now = backend.write_fd().is_none_or(|fd| {
            !fresh && crate::fd::wait_writable(fd, Some(Duration::ZERO)).unwrap_or(true)
        });
        let watch = if now {
            Watch::Now
        } else if backend.watch_output(&mut io) {
            Watch::Backend
        } else {
            match backend.write_fd().map(|fd| fd.try_clone_to_owned()) {
                Some(Ok(dup)) => Watch::Dup(dup),
                Some(Err(e)) => {
                    log::warn!("chardev '{}': cannot watch for writability: {e}", cell.label);
                    Watch::Now
                }
                None => Watch::Now,
            }
        };
        drop(backend);
        let (input_ready, output_ready) = (io.input_ready, io.output_ready);
        self.after_backend(key, input_ready, output_ready);
        let Some(entry) = self.entries.get_mut(key) else { return };
        match watch {
            Watch::Now => Self::tell_writable(entry),
            Watch::Backend => {}
            Watch::Dup(fd) => {
                // A duplicate, so the watch is ours whatever the backend does with its fd.
                let raw = fd.as_raw_fd();
                let token = SourceToken::write_watch(key).into();
                let interest = mio::Interest::WRITABLE;
                match self.registry.register(&mut mio::unix::SourceFd(&raw), token, interest) {
                    Ok(()) => entry.write_watch = Some(fd),
                    Err(e) => {
                        log::warn!("chardev '{}': cannot watch for writability: {e}", cell.label);
                        Self::tell_writable(entry);
                    }
                }
            }
        }
    }

    /// The loop's own watch saw the output fd writable.
    pub(super) fn writable_ready(&mut self, key: usize) {
        let Some(entry) = self.entries.get_mut(key) else { return };
        Self::drop_write_watch(&self.registry, entry);
        Self::tell_writable(entry);
    }

    /// Removes the loop's writability watch. Closing the duplicate alone would not: epoll
    /// keeps a registration while any fd refers to the file.
    pub(super) fn drop_write_watch(registry: &mio::Registry, entry: &mut Entry) {
        if let Some(fd) = entry.write_watch.take() {
            let raw = fd.as_raw_fd();
            let _ = registry.deregister(&mut mio::unix::SourceFd(&raw));
        }
    }

    /// Tells every frontend waiting for writability, once.
    pub(super) fn tell_writable(entry: &mut Entry) {
        let mut waiting = std::mem::take(&mut entry.want_writable);
        while waiting != 0 {
            let slot = waiting.trailing_zeros() as usize;
            waiting &= waiting - 1;
            if slot == crate::cell::OVERFLOW_SLOT {
                entry.cell.flush_overflow();
                continue;
            }
            if let Some(fe) = entry.frontend(slot) {
                fe.writable();
            }
        }
    }
}

//! Input: from a backend through the loop's one read buffer to the focused frontend (through
//! the mux's filter on a mux), never more than the frontend said it can take.
//!
//! A chardev with input is listed in `pending` and read up to [`READS_PER_TURN`] times per
//! turn; one whose frontend has no room is listed in `stalled` and looked at again on every
//! wake-up of the loop, so a frontend that makes room without `accept_input` still gets its
//! input (QEMU #4389 starved such frontends).

use std::cmp::Reverse;
use std::io;
use std::os::fd::OwnedFd;
use std::sync::Arc;

use super::core::Core;
use super::entry::Entry;
use super::request::ExitHandler;
use crate::backend::{Input, Io, RaisedEvent};
use crate::cell::Cell;
use crate::counters::CoreCounters;

/// Reads one chardev may do per loop iteration before others get their turn.
const READS_PER_TURN: usize = 64;

impl Core {
    /// Queues the chardev for reading if it has input or carried bytes.
    pub(super) fn wake_input(&mut self, key: usize) {
        let Some(entry) = self.entries.get_mut(key) else { return };
        if (entry.input_ready || entry.carry_len() > 0) && !entry.queued {
            entry.queued = true;
            self.pending.push_back(key);
        }
    }

    pub(super) fn recheck_stalled(&mut self) {
        // A frontend that made room without calling accept_input still gets its input on the
        // next wake-up of the loop (QEMU #4389 starved such frontends).
        let mut i = 0;
        while i < self.stalled.len() {
            let key = self.stalled[i];
            let progress = match self.entries.get_mut(key) {
                Some(e) if e.stalled => e.can_progress(),
                _ => {
                    self.stalled.swap_remove(i);
                    continue;
                }
            };
            if progress {
                self.stalled.swap_remove(i);
                if let Some(e) = self.entries.get_mut(key) {
                    e.stalled = false;
                }
                self.wake_input(key);
            } else {
                i += 1;
            }
        }
    }

    pub(super) fn drain_pending(&mut self) {
        for _ in 0..self.pending.len() {
            let Some(key) = self.pending.pop_front() else { break };
            let more = self.drain(key);
            let Some(entry) = self.entries.get_mut(key) else { continue };
            entry.queued = more;
            if more {
                self.pending.push_back(key);
            } else if entry.carry_len() > 0 {
                // Carried bytes wait for the frontend's room, like unread input does.
                self.stall(key);
            }
        }
    }

    /// Moves input from one backend to its frontend; returns whether it should run again.
    fn drain(&mut self, key: usize) -> bool {
        for _ in 0..READS_PER_TURN {
            let Some(entry) = self.entries.get_mut(key) else { return false };
            entry.deliver_carried();
            if !entry.input_ready {
                if entry.carry_len() > 0 {
                    self.stall(key);
                }
                return false;
            }
            let room = entry.room();
            if room == 0 {
                self.stall(key);
                return false;
            }
            let cell = Arc::clone(&entry.cell);
            if entry.mux.is_none() {
                match self.splice_input(key, &cell, room) {
                    Some(true) => continue,
                    Some(false) => return false,
                    None => {}
                }
            }
            let Some(entry) = self.entries.get_mut(key) else { return false };
            let len = room.min(self.buf.len());
            let mut io = Io::new(
                &self.registry,
                &cell,
                entry.generation,
                &mut self.raised,
                &mut self.new_timers,
            );
            let input = cell.backend().read(&mut io, &mut self.buf[..len], &mut self.fds);
            let (again, writable) = (io.input_ready, io.output_ready);
            for t in self.new_timers.drain(..) {
                self.timers.push(Reverse(t));
            }
            let Some(entry) = self.entries.get_mut(key) else { return false };
            let n = match input {
                Input::Data(n) => n.min(len),
                Input::Drained(n) => {
                    entry.input_ready = again;
                    n.min(len)
                }
                Input::WouldBlock | Input::End => {
                    entry.input_ready = again;
                    0
                }
            };
            if writable && entry.want_writable != 0 {
                Self::tell_writable(entry);
            }
            let fds = passed_fds(&entry.cell, std::mem::take(&mut self.fds));
            CoreCounters::add(&entry.cell.counters.bytes_in, n as u64);
            Self::dispatch(entry, &self.buf[..n], fds, &mut self.raised, &mut self.exit);
            if !matches!(input, Input::Data(_)) {
                return entry.input_ready;
            }
        }
        true
    }

    /// Moves input straight into the focused frontend's pipe, if it offers one and the
    /// backend can ([`Frontend::splice_pipe`]). `Some(true)`: bytes moved; `Some(false)`:
    /// nothing to read until the next readiness; `None`: read as usual (no pipe, the end of
    /// the stream or an error, which the usual read reports).
    ///
    /// [`Frontend::splice_pipe`]: crate::Frontend::splice_pipe
    fn splice_input(&mut self, key: usize, cell: &Arc<Cell>, room: usize) -> Option<bool> {
        let entry = self.entries.get_mut(key)?;
        let mut io =
            Io::new(&self.registry, cell, entry.generation, &mut self.raised, &mut self.new_timers);
        let fe = entry.focused()?;
        let result = match fe.splice_pipe() {
            Some((pipe, take)) if take > 0 => {
                cell.backend().splice()?.splice_input(&mut io, pipe, room.min(take))
            }
            _ => None,
        };
        let again = io.input_ready;
        for t in self.new_timers.drain(..) {
            self.timers.push(Reverse(t));
        }
        let moved = match result? {
            Ok(0) => return None,
            Ok(n) => {
                fe.spliced(n);
                CoreCounters::add(&cell.counters.bytes_in, n as u64);
                Some(true)
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Some(true),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                entry.input_ready = again;
                Some(false)
            }
            Err(_) => None,
        };
        if !self.raised.is_empty() {
            Self::dispatch(entry, &[], Vec::new(), &mut self.raised, &mut self.exit);
        }
        moved
    }

    fn stall(&mut self, key: usize) {
        if let Some(entry) = self.entries.get_mut(key) {
            if !entry.stalled {
                entry.stalled = true;
                self.stalled.push(key);
            }
        }
    }

    /// Hands one read's bytes, fds and events to the frontends, in order.
    fn dispatch(
        entry: &mut Entry,
        data: &[u8],
        mut fds: Vec<OwnedFd>,
        raised: &mut Vec<RaisedEvent>,
        exit: &mut ExitHandler,
    ) {
        let mut pos = 0;
        for ev in raised.drain(..) {
            let at = ev.offset.clamp(pos, data.len());
            Self::feed(entry, &data[pos..at], &mut fds, exit);
            pos = at;
            Self::deliver_event(entry, ev.event);
        }
        Self::feed(entry, &data[pos..], &mut fds, exit);
        if !fds.is_empty() {
            // Every byte was filtered out; the fds still reach the frontend.
            if let Some(fe) = entry.focused() {
                fe.receive(&[], fds);
            } else {
                log::warn!(
                    "chardev '{}': {} fds dropped: no frontend",
                    entry.cell.label,
                    fds.len()
                );
                CoreCounters::add(&entry.cell.counters.fds_closed, fds.len() as u64);
            }
        }
    }

    /// Passes bytes to the focused frontend, through the mux's escape filter on a mux. The
    /// fds go with the first bytes a frontend gets.
    fn feed(entry: &mut Entry, data: &[u8], fds: &mut Vec<OwnedFd>, exit: &mut ExitHandler) {
        if data.is_empty() {
            return;
        }
        if let Some((mux, mut port)) = entry.mux(Some(exit), false) {
            mux.feed(data, fds, &mut port);
            return;
        }
        // Reads never exceed a plain chardev's room.
        let Some(fe) = entry.focused() else {
            log::debug!(
                "chardev '{}': {} bytes dropped: no frontend",
                entry.cell.label,
                data.len()
            );
            return;
        };
        fe.receive(data, std::mem::take(fds));
    }
}

/// Applies the fd contract to fds a backend received, at the one place all input passes:
/// blocking and close-on-exec before any frontend sees them, whatever the backend. An fd
/// whose flags cannot be set is logged and closed, never handed on in the wrong mode; the
/// bytes are delivered all the same.
fn passed_fds(cell: &Cell, mut fds: Vec<OwnedFd>) -> Vec<OwnedFd> {
    let label = &cell.label;
    let received = fds.len();
    CoreCounters::add(&cell.counters.fds_received, received as u64);
    fds.retain(|fd| match crate::fd::make_passed_fd_blocking(std::os::fd::AsFd::as_fd(fd)) {
        Ok(()) => true,
        Err(e) => {
            log::warn!("chardev '{label}': received fd {} closed: {e}", crate::fd::number(fd));
            false
        }
    });
    CoreCounters::add(&cell.counters.fds_closed, (received - fds.len()) as u64);
    fds
}

//! One chardev on the loop: its frontends, its mux, and where it stands in the loop's lists.

use std::os::fd::OwnedFd;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::request::ExitHandler;
use crate::cell::Cell;
use crate::frontend::callbacks::{Event, Frontend};
use crate::mux::{self, Command, Mux, MuxFrontends, MAX_MUX};

/// One chardev on the loop.
pub(super) struct Entry {
    pub(super) cell: Arc<Cell>,
    /// Bumped when the backend is swapped, so the old backend's timers are ignored.
    pub(super) generation: u32,
    pub(super) slots: Slots,
    /// Present on a mux: the escape filter, the focus, the carry buffers.
    pub(super) mux: Option<Box<Mux>>,
    /// The backend has input (or an end) to read.
    pub(super) input_ready: bool,
    /// Listed in `Core::pending`.
    pub(super) queued: bool,
    /// Listed in `Core::stalled`: input waits for the frontend to make room.
    pub(super) stalled: bool,
    /// Bit per slot: this frontend waits for the backend to take output.
    pub(super) want_writable: u8,
    /// The loop's own writability watch, for backends that do not report writability: a
    /// duplicate of the backend's output fd, so the watch is ours whatever the backend does.
    pub(super) write_watch: Option<OwnedFd>,
}

/// The frontends of one chardev, by slot (one slot, or [`MAX_MUX`] on a mux).
#[derive(Default)]
pub(super) struct Slots {
    frontends: [Option<Box<dyn Frontend>>; MAX_MUX],
    /// Which generation of each slot's callbacks `frontends` holds (see `Cell::frontend_gen`).
    gens: [u32; MAX_MUX],
    /// Bit per slot: this frontend has seen `Opened` for the current connection.
    pub(super) seen_open: u8,
}

impl Slots {
    /// The frontend in `slot`, unless it has been replaced or cleared since it was installed.
    pub(super) fn get(&mut self, cell: &Cell, slot: usize) -> Option<&mut Box<dyn Frontend>> {
        let current = cell.frontend_gen.get(slot)?.load(Ordering::Acquire);
        if self.gens[slot] != current {
            return None;
        }
        self.frontends.get_mut(slot).and_then(Option::as_mut)
    }

    /// Puts `frontend` (of callbacks generation `generation`) in `slot`; the old one is
    /// dropped here, on the loop thread.
    pub(super) fn set(
        &mut self,
        slot: usize,
        frontend: Option<Box<dyn Frontend>>,
        generation: u32,
    ) {
        self.seen_open &= !(1u8 << slot);
        self.frontends[slot] = frontend;
        self.gens[slot] = generation;
    }

    /// Tells `slot`'s frontend the chardev is open, once per connection.
    pub(super) fn open(&mut self, cell: &Cell, slot: usize) {
        let bit = 1u8 << slot;
        if !cell.is_open() || self.seen_open & bit != 0 {
            return;
        }
        if let Some(fe) = self.get(cell, slot) {
            fe.event(Event::Opened);
            self.seen_open |= bit;
        }
    }
}

impl Entry {
    pub(super) fn new(cell: Arc<Cell>) -> Entry {
        let mux = cell.mux.is_some().then(Box::default);
        Entry {
            cell,
            generation: 0,
            slots: Slots::default(),
            mux,
            input_ready: false,
            queued: false,
            stalled: false,
            want_writable: 0,
            write_watch: None,
        }
    }

    /// The frontend in `slot`, unless it has been replaced or cleared since it was installed.
    pub(super) fn frontend(&mut self, slot: usize) -> Option<&mut Box<dyn Frontend>> {
        self.slots.get(&self.cell, slot)
    }

    /// The slot that gets input: the mux's focus, or the one slot of a plain chardev.
    pub(super) fn focus(&self) -> usize {
        self.mux.as_ref().map_or(0, |m| m.focus())
    }

    pub(super) fn focused(&mut self) -> Option<&mut Box<dyn Frontend>> {
        self.frontend(self.focus())
    }

    /// How many bytes wait in the mux for the focused frontend.
    pub(super) fn carry_len(&self) -> usize {
        self.mux.as_ref().map_or(0, |m| m.carried())
    }

    /// The mux and its view of the frontends; `exit` for `Ctrl-A x`, `quiet` to hold back
    /// the `Opened` that a frontend taking the focus gets.
    pub(super) fn mux<'a>(
        &'a mut self,
        exit: Option<&'a mut ExitHandler>,
        quiet: bool,
    ) -> Option<(&'a mut Mux, Port<'a>)> {
        let mux = self.mux.as_deref_mut()?;
        Some((mux, Port { cell: &self.cell, slots: &mut self.slots, exit, quiet }))
    }

    /// How many bytes to read now: what the focused frontend can take, and on a mux at least
    /// enough to keep reading escapes while the frontend takes nothing.
    pub(super) fn room(&mut self) -> usize {
        match self.mux(None, false) {
            Some((mux, mut port)) => mux.room(&mut port),
            None => self.focused().map_or(0, |fe| fe.can_receive()),
        }
    }

    /// Whether draining now would move anything.
    pub(super) fn can_progress(&mut self) -> bool {
        let carried = self.mux(None, false).is_some_and(|(m, mut p)| m.can_deliver_carried(&mut p));
        carried || (self.input_ready && self.room() > 0)
    }

    /// Hands the focused frontend what its mux carried for it, as far as it has room.
    pub(super) fn deliver_carried(&mut self) {
        if let Some((mux, mut port)) = self.mux(None, false) {
            mux.deliver_carried(&mut port);
        }
    }
}

/// A mux's view of its chardev's frontends, and the loop's side of its commands.
pub(super) struct Port<'a> {
    cell: &'a Arc<Cell>,
    slots: &'a mut Slots,
    exit: Option<&'a mut ExitHandler>,
    quiet: bool,
}

impl Port<'_> {
    /// What the mux itself says on the backend: help, the termination line.
    fn say(&self, text: &[u8]) {
        if let Err(e) = self.cell.write_all(text) {
            log::warn!("chardev '{}': mux output lost: {e}", self.cell.label);
        }
    }
}

impl MuxFrontends for Port<'_> {
    fn present(&mut self, slot: usize) -> bool {
        self.slots.get(self.cell, slot).is_some()
    }

    fn can_receive(&mut self, slot: usize) -> usize {
        self.slots.get(self.cell, slot).map_or(0, |fe| fe.can_receive())
    }

    fn receive(&mut self, slot: usize, data: &[u8], fds: Vec<OwnedFd>) {
        if let Some(fe) = self.slots.get(self.cell, slot) {
            fe.receive(data, fds);
        }
    }

    fn dropped(&mut self, _slot: usize, len: usize) {
        // QEMU: input for a mux slot without handlers is dropped.
        log::debug!("chardev '{}': {len} bytes dropped: no frontend", self.cell.label);
    }

    fn focus_out(&mut self, slot: usize) {
        if let Some(fe) = self.slots.get(self.cell, slot) {
            fe.event(Event::MuxOut);
        }
    }

    fn focus_in(&mut self, slot: usize) {
        if let Some(fe) = self.slots.get(self.cell, slot) {
            fe.event(Event::MuxIn);
        }
        if !self.quiet {
            self.slots.open(self.cell, slot);
        }
    }

    fn command(&mut self, command: Command, focus: usize) {
        match command {
            Command::Help => self.say(mux::help_text().as_bytes()),
            Command::Break => {
                if let Some(fe) = self.slots.get(self.cell, focus) {
                    fe.event(Event::Break);
                }
            }
            Command::Timestamps => self.cell.toggle_timestamps(),
            Command::Exit => {
                self.say(mux::TERMINATED);
                if let Some(exit) = self.exit.as_mut() {
                    exit();
                }
            }
        }
    }
}

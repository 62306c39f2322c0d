//! The loop's state: its chardevs ([`Entry`]s in a slab), timers, and what requests and
//! backend calls change in them. Reading input is in `input.rs`, writability in
//! `writable.rs`; this file holds the rest: requests, backend calls, events.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::os::fd::OwnedFd;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use slab::Slab;

use super::entry::Entry;
use super::request::{ExitHandler, Request};
use crate::backend::{Io, RaisedEvent, TimerEntry};
use crate::cell::{Cell, NO_KEY};
use crate::frontend::callbacks::{Event, Frontend};

/// The loop's state that requests work on.
pub(crate) struct Core {
    pub(super) registry: mio::Registry,
    pub(super) entries: Slab<Entry>,
    pub(super) timers: BinaryHeap<Reverse<TimerEntry>>,
    pub(super) pending: VecDeque<usize>,
    pub(super) stalled: Vec<usize>,
    pub(super) buf: Box<[u8]>,
    pub(super) raised: Vec<RaisedEvent>,
    pub(super) new_timers: Vec<TimerEntry>,
    pub(super) fds: Vec<OwnedFd>,
    /// What `Ctrl-A x` does: the embedder's handler, or stopping the loop.
    pub(super) exit: ExitHandler,
    /// Muxes whose newly installed frontends still owe an `Opened`.
    pub(super) open_due: Vec<usize>,
    /// The current `poll_once`, counted from 1. A write that came back short on the loop
    /// thread in this turn is followed by no epoll wait yet, so every edge raised after it
    /// is still to be seen (see [`Core::watch_writable`]).
    pub(super) turn: u64,
}

impl Core {
    pub(super) fn new(registry: mio::Registry, read_buffer: usize, exit: ExitHandler) -> Core {
        Core {
            registry,
            entries: Slab::new(),
            timers: BinaryHeap::new(),
            pending: VecDeque::new(),
            stalled: Vec::new(),
            buf: vec![0; read_buffer.max(1)].into_boxed_slice(),
            raised: Vec::new(),
            new_timers: Vec::new(),
            fds: Vec::new(),
            exit,
            open_due: Vec::new(),
            turn: 0,
        }
    }

    /// Carries out one request: every way into the core is here.
    pub(super) fn handle(&mut self, request: Request) {
        match request {
            Request::Place(cell) => self.place(cell),
            Request::Install { cell, slot, frontend, generation } => {
                if let Some(key) = self.key_of(&cell) {
                    self.install(key, slot, frontend, generation);
                }
            }
            Request::Focus { cell, slot } => {
                if let Some(key) = self.key_of(&cell) {
                    self.set_focus(key, slot);
                }
            }
            Request::AcceptInput(cell) => {
                cell.accept_queued.store(false, Ordering::Release);
                if let Some(key) = self.key_of(&cell) {
                    self.wake_input(key);
                }
            }
            Request::WatchWritable { cell, slot } => {
                if let Some(key) = self.key_of(&cell) {
                    self.watch_writable(key, slot);
                }
            }
            Request::Disconnect(cell) => {
                if let Some(key) = self.key_of(&cell) {
                    self.with_backend(key, |be, io| be.disconnect(io));
                }
            }
            Request::Swapped(cell) => {
                if let Some(key) = self.key_of(&cell) {
                    self.swapped(key);
                }
            }
            Request::Evict(cell) => {
                if let Some(key) = self.key_of(&cell) {
                    self.evict(key);
                }
            }
            Request::Raise { cell, event } => {
                if let Some(entry) = self.key_of(&cell).and_then(|key| self.entries.get_mut(key)) {
                    Self::deliver_event(entry, event);
                }
            }
            Request::Wake { cell, generation, queued } => {
                queued.store(false, Ordering::Release);
                let key = self.key_of(&cell);
                if let Some(key) = key.filter(|&k| self.entries[k].generation == generation) {
                    self.with_backend(key, |be, io| be.woken(io));
                }
            }
            Request::SetExitHandler(handler) => self.exit = handler,
            Request::Run(f) => f(),
        }
    }

    fn key_of(&self, cell: &Arc<Cell>) -> Option<usize> {
        let key = cell.key();
        match self.entries.get(key) {
            Some(e) if Arc::ptr_eq(&e.cell, cell) => Some(key),
            _ => None,
        }
    }

    /// Puts a new cell on the loop and registers its backend.
    fn place(&mut self, cell: Arc<Cell>) {
        let entry = self.entries.vacant_entry();
        let key = entry.key();
        cell.key.store(key, Ordering::Release);
        entry.insert(Entry::new(cell));
        self.register(key);
    }

    fn register(&mut self, key: usize) {
        self.with_backend(key, |be, io| {
            if let Err(e) = be.register(io) {
                log::error!("{} chardev: cannot register with the event loop: {e}", be.kind());
            }
        });
    }

    /// Takes a cell off the loop (its backend was already dropped by the registry).
    fn unplace(&mut self, key: usize) {
        if let Some(mut entry) = self.entries.try_remove(key) {
            Self::drop_write_watch(&self.registry, &mut entry);
            entry.cell.key.store(NO_KEY, Ordering::Release);
            entry.cell.backend().deregister(&self.registry);
        }
    }

    /// Lets go of every chardev when the loop goes: backends stay in their cells (handles
    /// may still write); the loop only drops its registrations and frontends.
    pub(super) fn release_all(&mut self) {
        for (_, entry) in self.entries.iter_mut() {
            entry.cell.key.store(NO_KEY, Ordering::Release);
            entry.cell.backend().deregister(&self.registry);
        }
    }

    /// After a hot swap: the old connection is closed for the frontend, the new backend
    /// registers and reports its own state.
    fn swapped(&mut self, key: usize) {
        let Some(entry) = self.entries.get_mut(key) else { return };
        Self::deliver_event(entry, Event::Closed);
        // The old backend's fd is gone; a frontend waiting to write may try the new one.
        Self::drop_write_watch(&self.registry, entry);
        Self::tell_writable(entry);
        entry.generation = entry.generation.wrapping_add(1);
        entry.input_ready = false;
        if let Some(m) = &mut entry.mux {
            m.clear_carried();
        }
        self.register(key);
    }

    /// Closes the connection for the frontends and drops them (forced removal).
    fn evict(&mut self, key: usize) {
        if let Some(entry) = self.entries.get_mut(key) {
            Self::deliver_event(entry, Event::Closed);
        }
        self.unplace(key);
    }

    fn install(
        &mut self,
        key: usize,
        slot: usize,
        frontend: Option<Box<dyn Frontend>>,
        generation: u32,
    ) {
        let Some(entry) = self.entries.get_mut(key) else { return };
        if slot >= entry.cell.slots() {
            return;
        }
        let installing = frontend.is_some();
        entry.slots.set(slot, frontend, generation);
        if !installing || entry.frontend(slot).is_none() {
            return;
        }
        if let Some((mux, mut port)) = entry.mux(None, true) {
            // QEMU: installing handlers on a mux takes the focus; its OPENED waits until the
            // frontends of this batch are all in.
            mux.take_focus(slot, &mut port);
            self.open_due.push(key);
        } else if entry.cell.is_open() {
            // Late subscribers learn the state (QEMU's sync_state).
            entry.slots.open(&entry.cell, slot);
        }
        self.wake_input(key);
    }

    /// Moves a mux's focus to `slot`: `MuxOut` to the old, `MuxIn` to the new, then
    /// `Opened` if the new one has not seen the current connection yet (QEMU's order:
    /// take_focus, then sync_state).
    fn set_focus(&mut self, key: usize, slot: usize) {
        let Some(entry) = self.entries.get_mut(key) else { return };
        if slot >= entry.cell.slots() {
            return;
        }
        let Some((mux, mut port)) = entry.mux(None, false) else { return };
        mux.take_focus(slot, &mut port);
        self.wake_input(key);
    }

    /// Delivers the `Opened` that mux frontends installed in the last batch of requests
    /// were owed, to whichever has the focus now. An embedder that attaches a monitor and
    /// then a serial port in one go shows only the serial port's greeting (QEMU #fffbd9cf:
    /// `mon:stdio` printed the monitor banner though the serial port had the focus).
    pub(super) fn deliver_due_opens(&mut self) {
        for key in std::mem::take(&mut self.open_due) {
            if let Some(entry) = self.entries.get_mut(key) {
                let focus = entry.focus();
                entry.slots.open(&entry.cell, focus);
            }
        }
    }

    /// Calls into the backend of `key` with the loop's side of the call, then applies what
    /// the backend asked for.
    pub(super) fn with_backend(
        &mut self,
        key: usize,
        f: impl FnOnce(&mut dyn crate::Chardev, &mut Io<'_>),
    ) {
        let Some(entry) = self.entries.get(key) else { return };
        let cell = Arc::clone(&entry.cell);
        let mut io = Io::new(
            &self.registry,
            &cell,
            entry.generation,
            &mut self.raised,
            &mut self.new_timers,
        );
        f(&mut **cell.backend(), &mut io);
        let (ready, writable) = (io.input_ready, io.output_ready);
        self.after_backend(key, ready, writable);
    }

    /// Readiness on one of the backend's sources.
    pub(super) fn ready(&mut self, key: usize, source: usize, event: &mio::event::Event) {
        self.with_backend(key, |be, io| be.ready(io, source, event));
    }

    /// The time until the next timer, if there is one.
    pub(super) fn next_timer(&self) -> Option<Instant> {
        self.timers.peek().map(|Reverse(t)| t.at)
    }

    pub(super) fn fire_timers(&mut self) {
        let now = Instant::now();
        while let Some(Reverse(t)) = self.timers.peek().copied() {
            if t.at > now {
                break;
            }
            self.timers.pop();
            let current = self.entries.get(t.key).is_some_and(|e| e.generation == t.generation);
            if current {
                self.with_backend(t.key, |be, io| be.timer(io, t.id));
            }
        }
    }

    /// Applies what a backend call asked for: timers, events, and input to read.
    pub(super) fn after_backend(&mut self, key: usize, input_ready: bool, output_ready: bool) {
        for t in self.new_timers.drain(..) {
            self.timers.push(Reverse(t));
        }
        let Some(entry) = self.entries.get_mut(key) else {
            self.raised.clear();
            return;
        };
        for raised in self.raised.drain(..) {
            Self::deliver_event(entry, raised.event);
        }
        if output_ready && entry.want_writable != 0 {
            Self::tell_writable(entry);
        }
        if input_ready {
            entry.input_ready = true;
            self.wake_input(key);
        }
    }

    /// Delivers a backend event: `Opened`/`Closed` once per connection, to the frontends
    /// that should see them.
    pub(super) fn deliver_event(entry: &mut Entry, event: Event) {
        match event {
            Event::Opened => {
                if !entry.cell.set_open(true) {
                    return;
                }
                let bit = 1u8 << entry.focus();
                if let Some(fe) = entry.focused() {
                    fe.event(Event::Opened);
                    entry.slots.seen_open |= bit;
                }
            }
            Event::Closed => {
                if !entry.cell.set_open(false) {
                    return;
                }
                let seen = std::mem::take(&mut entry.slots.seen_open);
                for slot in 0..crate::mux::MAX_MUX {
                    if seen & (1 << slot) != 0 {
                        if let Some(fe) = entry.frontend(slot) {
                            fe.event(Event::Closed);
                        }
                    }
                }
                // Whoever waits to write learns now (its write fails: not connected) rather
                // than never: a closed connection reports no more writability.
                if entry.want_writable != 0 {
                    Self::tell_writable(entry);
                }
            }
            Event::Resize { cols, rows } => {
                entry.cell.set_size(cols, rows);
                if let Some(fe) = entry.focused() {
                    fe.event(event);
                }
            }
            Event::Break | Event::MuxIn | Event::MuxOut => {
                if let Some(fe) = entry.focused() {
                    fe.event(event);
                }
            }
        }
    }
}

//! `hub` (QEMU 10's `char-hub`): one frontend over several member chardevs. Output goes to
//! every open member, input comes from any member, and the frontend sees one `Opened` when
//! the first member opens and one `Closed` after the last has closed.
//!
//! `-chardev hub,id=h,chardevs.0=a,chardevs.1=b[,history=SIZE][,queue=SIZE]`; the members
//! must exist, be unused, and be neither a mux nor a hub (QEMU's texts). Where QEMU's hub
//! hands the guest the *smallest* write any member took, so that the slowest member gates
//! them all (and there are at most four), here the output is kept once in a
//! [`Ring`] and each member reads it through its own cursor
//! ([`Reader`]): a member that stops reading falls behind by at most `queue=` bytes, then
//! loses the oldest and sees a [`gap_marker`] before its next data; the writer and the other
//! members never wait for it, and [`Chardev::write`] never says `WouldBlock`. A member that
//! opens (a client connects to a socket member) first gets the last `history=` bytes. A
//! member that is not open is still offered the output, once and without waiting (QEMU skips
//! it): a socket server with its own `history=`, or a pty with a backlog, keeps it for its
//! next peer; the others refuse it as they would anyway. A member's logfile gets each byte
//! once: the history replayed to a new peer goes out with [`FrontendHandle::write_replay`].
//!
//! Lock order, in one direction only: the hub cell's backend lock (held around every
//! [`Chardev`] call) → the shared state (`Shared`) → a member's backend lock (inside
//! [`FrontendHandle::write`]) → the loop's request queue ([`Waker::wake`],
//! `notify_writable`, `accept_input`). The members' frontend callbacks (`MemberPort`) run
//! on the loop thread with no backend lock held and take only `Shared`; nothing takes the
//! hub's backend lock while it holds `Shared`, and nothing here waits for the loop.

use std::collections::VecDeque;
use std::io;
use std::os::fd::{BorrowedFd, OwnedFd};
use std::sync::{Arc, Mutex, Weak};

use crate::backend::{refuse_fds, Chardev, Input, Io, Waker};
use crate::error::{Error, Result};
use crate::fanout::{gap_marker, Reader, Ring};
use crate::frontend::{Event, Frontend, FrontendHandle};
use crate::options::{BackendSpec, ChardevSpec};
use crate::registry::BuildContext;
use crate::sync::lock;

/// Input from the members waiting for the hub's frontend, at most: 64 KiB. A member is not
/// read while it is full (its peer is slowed), as a frontend with no room does.
pub const INPUT_MAX: usize = 64 * 1024;

/// The smallest ring of output a hub keeps whatever `history=` and `queue=` say, so that a
/// write goes to members that can take it at once even with `queue=0`.
const RING_MIN: usize = 64 * 1024;

/// Builds a `hub` backend: claims every member (QEMU's texts when one is unknown or a mux or
/// a hub; `chardev 'a' is already in use` when busy). A failure releases the members claimed
/// so far.
pub fn build(spec: &ChardevSpec, cx: &BuildContext<'_>) -> Result<Box<dyn Chardev>> {
    let BackendSpec::Hub(hub) = &spec.backend else {
        return Err(Error::UnknownBackend(spec.backend.kind().into()));
    };
    hub.check()?;
    let mut members = Vec::with_capacity(hub.chardevs.len());
    for (index, id) in hub.chardevs.iter().enumerate() {
        let key = format!("chardevs.{index}");
        // The handles claimed so far are dropped with `members` on error: released.
        let handle = cx.claim_member(id).map_err(|e| match e {
            Error::NotFound(_) => {
                Error::option(&key, id, format!("hub: chardev can't be found by id '{id}'"))
            }
            Error::WrongBackend { .. } => Error::option(
                &key,
                id,
                format!(
                    "hub: multiplexers and hub devices can't be stacked, check chardev '{id}', \
                     chardev should not be a hub device or have 'mux=on' enabled"
                ),
            ),
            other => other,
        })?;
        members.push(handle);
    }
    Ok(Box::new(Hub::new(cx.id, members, hub.history, hub.queue)))
}

/// A `hub` chardev: the frontend's output to every member through its own bounded queue,
/// the members' input to the frontend.
#[derive(Debug)]
pub struct Hub {
    shared: Arc<Mutex<Shared>>,
}

/// What the hub and its members' callbacks share (see the lock order in the module docs).
#[derive(Debug)]
struct Shared {
    label: String,
    /// Recent output, kept once for every member: the history and every member's queue.
    ring: Ring,
    /// Output a member gets first when it opens (`history=`).
    history: usize,
    /// How far a member may fall behind before it loses the oldest (`queue=`).
    queue: u64,
    members: Vec<Member>,
    /// Members open now: the frontend is open while this is above 0.
    open: usize,
    /// Input from the members, for the hub's frontend, at most [`INPUT_MAX`].
    input: VecDeque<u8>,
    /// Input bytes the hub's frontend has been given so far: the stream position of
    /// `input`'s first byte.
    taken: u64,
    /// Events for the hub's frontend, each after the input before it (a member's `Closed`
    /// after the bytes it sent before it closed).
    events: VecDeque<(u64, Event)>,
    /// How member callbacks make the loop come to the hub; `None` until it is registered.
    waker: Option<Waker>,
    /// A member was told there is no room: they get `accept_input` once there is.
    starved: bool,
    /// Output bytes the members lost in all by falling behind (counters).
    dropped: u64,
}

/// One member chardev as the hub holds it.
#[derive(Debug)]
struct Member {
    id: String,
    /// `None` once the hub is dropped (the member is released).
    handle: Option<FrontendHandle>,
    state: MemberState,
    /// The rest of a gap marker that a short write left, sent before any more data.
    marker: Vec<u8>,
    /// A `notify_writable` is outstanding: output waits for [`Frontend::writable`].
    waiting: bool,
    /// Where the output stood in the ring when this member last opened: what comes before
    /// is the history replayed to its new peer, written with
    /// [`FrontendHandle::write_replay`] so that a member's logfile does not get it again.
    replay_end: u64,
}

/// Where a member is, and its place in the output.
#[derive(Debug)]
enum MemberState {
    /// Claimed, and not yet known to be open: until the hub is on the loop, a member that
    /// was open already reports so (its `Opened` as a late subscriber) and then gets the
    /// output written since the hub was made, which it would otherwise miss.
    Joining(Reader),
    /// Not open (no client, no terminal): it is offered the output once, without waiting
    /// (QEMU's hub skips it), for a member that keeps output for its next peer.
    Closed,
    /// Open: output goes to it through its reader.
    Open(Reader),
}

impl Hub {
    /// A hub over `members`, handles claimed for it (the registry's `build` claims them
    /// with [`BuildContext::claim_member`]; an embedder may pass handles of its own from
    /// [`Registry::connect`](crate::Registry::connect)). The hub installs its own frontend
    /// on each and releases them all when dropped. `history` and `queue` as in
    /// [`HubSpec`](crate::options::HubSpec).
    pub fn new(label: &str, members: Vec<FrontendHandle>, history: usize, queue: usize) -> Hub {
        let ring = Ring::new(history.max(queue).max(RING_MIN));
        let members = members
            .into_iter()
            .map(|handle| Member {
                id: handle.label().to_string(),
                state: MemberState::Joining(Reader::new(&ring, 0)),
                handle: Some(handle),
                marker: Vec::new(),
                waiting: false,
                replay_end: 0,
            })
            .collect::<Vec<_>>();
        let shared = Arc::new(Mutex::new(Shared {
            label: label.to_string(),
            ring,
            history,
            queue: queue as u64,
            members,
            open: 0,
            input: VecDeque::new(),
            taken: 0,
            events: VecDeque::new(),
            waker: None,
            starved: false,
            dropped: 0,
        }));
        let handles: Vec<FrontendHandle> =
            lock(&shared).members.iter().filter_map(|m| m.handle.clone()).collect();
        for (index, handle) in handles.into_iter().enumerate() {
            // Weak: the member's frontend must not keep the hub's state (and so the
            // member's own claim) alive once the hub is gone.
            handle.set_frontend(MemberPort { shared: Arc::downgrade(&shared), index });
        }
        Hub { shared }
    }

    /// The member chardevs' ids, in `chardevs.N` order.
    pub fn members(&self) -> Vec<String> {
        lock(&self.shared).members.iter().map(|m| m.id.clone()).collect()
    }

    /// Bytes of output member `index` lost in all because it fell behind by more than
    /// `queue=` (0 for an index out of range).
    pub fn dropped(&self, index: usize) -> u64 {
        match lock(&self.shared).members.get(index).map(|m| &m.state) {
            Some(MemberState::Open(r) | MemberState::Joining(r)) => r.dropped(),
            _ => 0,
        }
    }
}

impl Drop for Hub {
    fn drop(&mut self) {
        // Released here, not when the last member callback lets go of `Shared`: once a
        // hub is removed, its members can be used again at once.
        let handles: Vec<FrontendHandle> =
            lock(&self.shared).members.iter_mut().filter_map(|m| m.handle.take()).collect();
        for handle in handles {
            handle.detach();
        }
    }
}

impl Shared {
    /// The frontend's output: kept in the ring, written at once to every open member that
    /// is not waiting for room, dropped beyond `queue` for those that are behind.
    fn output(&mut self, data: &[u8]) {
        self.ring.append(data);
        for index in 0..self.members.len() {
            match &mut self.members[index].state {
                MemberState::Joining(reader) => {
                    self.dropped += reader.enforce(&self.ring, self.queue);
                }
                MemberState::Open(_) => self.flush(index),
                // Unlike QEMU's hub, a closed member is offered the output too, once and
                // without waiting: a socket server with `history=` or a pty with a backlog
                // keeps it for whoever comes (others refuse it, as they would anyway).
                MemberState::Closed => {
                    if let Some(handle) = &self.members[index].handle {
                        let _ = handle.write(data);
                    }
                }
            }
        }
    }

    /// Writes what member `index` can take now, the gap marker first if it lost output;
    /// asks to be told when it can take more if some is left, and drops what it is behind
    /// beyond `queue`.
    fn flush(&mut self, index: usize) {
        let Shared { ring, members, queue, label, dropped, .. } = self;
        let member = &mut members[index];
        let MemberState::Open(reader) = &mut member.state else { return };
        // What the ring no longer keeps is lost whatever the member does.
        *dropped += reader.enforce(ring, u64::MAX);
        if member.waiting {
            *dropped += reader.enforce(ring, *queue);
            return;
        }
        let Some(handle) = &member.handle else { return };
        loop {
            if member.marker.is_empty() {
                if let Some(lost) = reader.take_gap() {
                    log::warn!(
                        "hub '{label}': member '{}' fell behind and lost {lost} bytes of output",
                        member.id
                    );
                    member.marker = gap_marker(lost).into_bytes();
                }
            }
            let marker = !member.marker.is_empty();
            let mut chunk = if marker { &member.marker[..] } else { reader.due(ring).0 };
            let replay = !marker && reader.pos() < member.replay_end;
            if replay {
                let rest = usize::try_from(member.replay_end - reader.pos()).unwrap_or(usize::MAX);
                chunk = &chunk[..chunk.len().min(rest)];
            }
            if chunk.is_empty() {
                return;
            }
            let len = chunk.len();
            let written = if replay { handle.write_replay(chunk) } else { handle.write(chunk) };
            match written {
                Ok(n) => {
                    if marker {
                        member.marker.drain(..n.min(len));
                    } else {
                        reader.advance(n.min(len));
                    }
                    if n < len {
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => {
                    // The peer is gone and its `Closed` is on the way: nothing more for it.
                    log::debug!("hub '{label}': member '{}': {e}; output dropped", member.id);
                    let behind = reader.behind(ring);
                    reader.advance(behind as usize);
                    member.marker.clear();
                    return;
                }
            }
        }
        // Short: the rest waits in the ring, bounded by `queue`.
        *dropped += reader.enforce(ring, *queue);
        member.waiting = true;
        handle.notify_writable();
    }

    /// A member's event, as the hub's frontend should see it.
    fn member_event(&mut self, index: usize, event: Event) {
        match event {
            Event::Opened => {
                let Some(member) = self.members.get_mut(index) else { return };
                let fresh = Reader::new(&self.ring, self.history);
                let reader = match std::mem::replace(&mut member.state, MemberState::Closed) {
                    MemberState::Open(reader) => {
                        member.state = MemberState::Open(reader);
                        return;
                    }
                    // Open before the hub was on the loop: whatever it would have missed.
                    MemberState::Joining(joining) if joining.pos() <= fresh.pos() => {
                        member.replay_end = 0;
                        joining
                    }
                    // The history was offered to the member as it was written: a replay.
                    MemberState::Joining(_) | MemberState::Closed => {
                        member.replay_end = self.ring.total();
                        fresh
                    }
                };
                member.state = MemberState::Open(reader);
                member.marker.clear();
                self.open += 1;
                if self.open == 1 {
                    self.push_event(Event::Opened);
                }
                self.flush(index);
            }
            Event::Closed => {
                let Some(member) = self.members.get_mut(index) else { return };
                let was_open = matches!(member.state, MemberState::Open(_));
                member.state = MemberState::Closed;
                member.marker.clear();
                if was_open {
                    self.open -= 1;
                    if self.open == 0 {
                        self.push_event(Event::Closed);
                    }
                }
            }
            // QEMU's hub passes every other event on.
            Event::Break | Event::Resize { .. } => self.push_event(event),
            // Members are never muxes.
            _ => {}
        }
    }

    /// Queues `event` for the hub's frontend, after the input queued before it.
    fn push_event(&mut self, event: Event) {
        let at = self.taken + self.input.len() as u64;
        self.events.push_back((at, event));
        self.wake();
    }

    fn wake(&self) {
        if let Some(waker) = &self.waker {
            waker.wake();
        }
    }

    /// Raises the events that no input waits in front of.
    fn raise_due(&mut self, io: &mut Io<'_>) {
        while let Some(&(at, event)) = self.events.front() {
            if at > self.taken {
                break;
            }
            self.events.pop_front();
            io.event(event);
        }
    }
}

impl Chardev for Hub {
    fn register(&mut self, io: &mut Io<'_>) -> Result<()> {
        let mut shared = lock(&self.shared);
        shared.waker = Some(io.waker());
        // Members that were open when claimed have said so by now (their install came
        // before this); the others open later and get the history only. They are offered
        // what was written before this, as later output is offered to a closed member, so
        // that a member's logfile (and a member that keeps output for its next peer) has it.
        let Shared { members, ring, .. } = &mut *shared;
        for member in members.iter_mut() {
            if let MemberState::Joining(reader) = &member.state {
                if let Some(handle) = &member.handle {
                    let (a, b) = reader.due(ring);
                    for piece in [a, b].into_iter().filter(|p| !p.is_empty()) {
                        let _ = handle.write(piece);
                    }
                }
                member.state = MemberState::Closed;
            }
        }
        shared.raise_due(io);
        if !shared.input.is_empty() {
            io.input_ready();
        }
        Ok(())
    }

    fn deregister(&mut self, _registry: &mio::Registry) {}

    fn woken(&mut self, io: &mut Io<'_>) {
        let mut shared = lock(&self.shared);
        shared.raise_due(io);
        if !shared.input.is_empty() {
            io.input_ready();
        }
    }

    fn read(&mut self, io: &mut Io<'_>, buf: &mut [u8], _fds: &mut Vec<OwnedFd>) -> Input {
        let mut shared = lock(&self.shared);
        let n = buf.len().min(shared.input.len());
        for (to, from) in buf[..n].iter_mut().zip(shared.input.drain(..n)) {
            *to = from;
        }
        let start = shared.taken;
        shared.taken += n as u64;
        while let Some(&(at, event)) = shared.events.front() {
            if at > shared.taken {
                break;
            }
            shared.events.pop_front();
            io.event_at(at.saturating_sub(start) as usize, event);
        }
        if n > 0 && std::mem::take(&mut shared.starved) {
            for handle in shared.members.iter().filter_map(|m| m.handle.as_ref()) {
                handle.accept_input();
            }
        }
        if shared.input.is_empty() {
            // The next member input wakes the hub again.
            Input::Drained(n)
        } else {
            Input::Data(n)
        }
    }

    fn write(&mut self, buf: &[u8], fds: &[BorrowedFd<'_>]) -> io::Result<usize> {
        refuse_fds("hub", fds)?;
        lock(&self.shared).output(buf);
        // Never WouldBlock: a member that cannot take it now has it queued (or loses it).
        Ok(buf.len())
    }

    fn counters(&self, counters: &mut crate::Counters) {
        counters.dropped_viewers += lock(&self.shared).dropped;
    }

    fn kind(&self) -> &'static str {
        "hub"
    }
}

/// The hub's frontend on one member: its input goes to the hub's queue, its events are
/// counted, its writability resumes its output.
#[derive(Debug)]
struct MemberPort {
    shared: Weak<Mutex<Shared>>,
    index: usize,
}

impl MemberPort {
    fn with<R>(&self, f: impl FnOnce(&mut Shared) -> R) -> Option<R> {
        let shared = self.shared.upgrade()?;
        let mut shared = lock(&shared);
        Some(f(&mut shared))
    }
}

impl Frontend for MemberPort {
    fn can_receive(&mut self) -> usize {
        self.with(|s| {
            let room = INPUT_MAX.saturating_sub(s.input.len());
            if room == 0 {
                s.starved = true;
            }
            room
        })
        .unwrap_or(0)
    }

    fn receive(&mut self, data: &[u8], _fds: Vec<OwnedFd>) {
        // Fds cannot go on through a hub (it cannot pass them): closed here.
        self.with(|s| {
            let room = INPUT_MAX.saturating_sub(s.input.len());
            if data.len() > room {
                log::warn!(
                    "hub '{}': {} bytes of input dropped: no room",
                    s.label,
                    data.len() - room
                );
            }
            s.input.extend(&data[..data.len().min(room)]);
            s.wake();
        });
    }

    fn event(&mut self, event: Event) {
        self.with(|s| s.member_event(self.index, event));
    }

    fn writable(&mut self) {
        self.with(|s| {
            if let Some(member) = s.members.get_mut(self.index) {
                member.waiting = false;
            }
            s.flush(self.index);
        });
    }
}

//! The mux: one backend shared by up to four frontends, switched with `Ctrl-A` escapes.
//!
//! [`Mux`] is the whole input side as a state machine without I/O: the escape filter, the
//! focus and its moves, and each frontend's carry buffer (QEMU's 32-byte `mux_buffers`, which
//! keep escapes working while a guest reads nothing). It sees its frontends through
//! [`MuxFrontends`], which the event loop implements over a chardev's frontend slots and a
//! test or a fuzz target over recorders. What needs the world outside (printing the help,
//! exiting, a break, timestamps) it hands back as a [`Command`].
//!
//! The output side is `Timestamps` (`Ctrl-A t`): kept with the chardev rather than the
//! loop, since any writer thread must stamp what it writes.

use std::io::Write as _;
use std::os::fd::OwnedFd;
use std::time::Instant;

/// The escape character, `Ctrl-A` (QEMU's default `-echr`).
pub const ESCAPE: u8 = 0x01;

/// How many frontends one mux serves (QEMU's `MAX_MUX`).
pub const MAX_MUX: usize = 4;

/// How much a mux reads for a frontend that cannot take anything, so that `Ctrl-A` escapes
/// still work while a guest is not reading (QEMU's `MUX_BUFFER_SIZE`).
pub const MUX_BUFFER: usize = 32;

/// What the mux says when `Ctrl-A x` ends the emulator, as QEMU does.
pub const TERMINATED: &[u8] = b"QEMU: Terminated\n\r";

/// A `Ctrl-A` command that the mux cannot carry out itself: it needs the backend, the
/// frontend or the embedder. The loop carries them out as QEMU does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// `Ctrl-A h` or `Ctrl-A ?`: print the help ([`help_text`]) on the backend.
    Help,
    /// `Ctrl-A x`: print [`TERMINATED`] and end (the loop's exit handler).
    Exit,
    /// `Ctrl-A b`: a break to the focused frontend.
    Break,
    /// `Ctrl-A t`: timestamps on output lines, on or off.
    Timestamps,
}

/// What a byte after the escape character asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    /// Not a command: the byte is dropped (QEMU swallows unknown escapes).
    Swallow,
    /// `Ctrl-A Ctrl-A`: one literal `Ctrl-A` to the focused frontend.
    Literal,
    /// `Ctrl-A c`: focus the next frontend.
    SwitchFocus,
    /// One for the world outside.
    Command(Command),
}

impl Action {
    /// The action for the byte that followed the escape character.
    fn of(byte: u8) -> Action {
        match byte {
            ESCAPE => Action::Literal,
            b'h' | b'?' => Action::Command(Command::Help),
            b'x' => Action::Command(Command::Exit),
            b'c' => Action::SwitchFocus,
            b'b' => Action::Command(Command::Break),
            b't' => Action::Command(Command::Timestamps),
            // `s` commits -snapshot disks in QEMU; there are no disks here.
            _ => Action::Swallow,
        }
    }
}

/// The frontends a [`Mux`] serves, slot by slot (`0..MAX_MUX`), and whoever carries out its
/// [`Command`]s. The mux asks for `can_receive` and calls `receive` only on a present slot.
pub trait MuxFrontends {
    /// Whether a frontend is installed in `slot`.
    fn present(&mut self, slot: usize) -> bool;

    /// How many bytes the frontend in `slot` takes now ([`Frontend::can_receive`]).
    ///
    /// [`Frontend::can_receive`]: crate::Frontend::can_receive
    fn can_receive(&mut self, slot: usize) -> usize;

    /// Input (and the fds that came with it) for the frontend in `slot`.
    fn receive(&mut self, slot: usize, data: &[u8], fds: Vec<OwnedFd>);

    /// Input for `slot`, which has no frontend, was dropped (as QEMU drops it).
    fn dropped(&mut self, slot: usize, len: usize) {
        let _ = (slot, len);
    }

    /// `slot` is about to lose the focus (`MuxOut`).
    fn focus_out(&mut self, slot: usize);

    /// `slot` has the focus (`MuxIn`, then `Opened` if it has not seen the connection).
    fn focus_in(&mut self, slot: usize);

    /// A command typed on the mux; `focus` is the slot that has the focus.
    fn command(&mut self, command: Command, focus: usize);
}

/// The input side of a mux: escape filter, focus, carry buffers. No I/O: it moves bytes
/// from [`feed`](Mux::feed) to a [`MuxFrontends`] and keeps what a frontend cannot take yet.
#[derive(Debug, Default)]
pub struct Mux {
    /// The slot that gets input.
    focus: usize,
    /// The escape character was seen; the next byte is a command.
    escape: bool,
    /// Per frontend: bytes read for it that it could not take yet.
    carry: [Vec<u8>; MAX_MUX],
}

impl Mux {
    /// A mux with the focus on slot 0, no escape pending, nothing carried.
    pub fn new() -> Mux {
        Mux::default()
    }

    /// The slot that has the focus.
    pub fn focus(&self) -> usize {
        self.focus
    }

    /// How many bytes wait for the focused frontend.
    pub fn carried(&self) -> usize {
        self.carry[self.focus].len()
    }

    /// How many bytes to read now: what the focused frontend can take, and at least enough
    /// to keep reading escapes while it takes nothing ([`MUX_BUFFER`], less what is carried).
    pub fn room(&mut self, frontends: &mut impl MuxFrontends) -> usize {
        let carry = self.carried();
        let fe_room = if carry > 0 {
            0
        } else if frontends.present(self.focus) {
            frontends.can_receive(self.focus)
        } else {
            MUX_BUFFER
        };
        fe_room.max(MUX_BUFFER.saturating_sub(carry))
    }

    /// Whether carried bytes could reach the focused frontend now.
    pub fn can_deliver_carried(&mut self, frontends: &mut impl MuxFrontends) -> bool {
        self.carried() > 0 && frontends.present(self.focus) && frontends.can_receive(self.focus) > 0
    }

    /// Hands the focused frontend what was carried for it, as far as it has room.
    pub fn deliver_carried(&mut self, frontends: &mut impl MuxFrontends) {
        let focus = self.focus;
        let carried = self.carried();
        if carried == 0 {
            return;
        }
        let room = if frontends.present(focus) { frontends.can_receive(focus) } else { 0 };
        let room = room.min(carried);
        if room == 0 {
            return;
        }
        let rest = self.carry[focus].split_off(room);
        let now = std::mem::replace(&mut self.carry[focus], rest);
        frontends.receive(focus, &now, Vec::new());
    }

    /// Filters input: plain bytes go to the focused frontend (what it cannot take is carried
    /// for it), `Ctrl-A` sequences act. `fds` go with the first bytes a frontend gets; the
    /// caller hands on any left (all bytes filtered out or carried).
    pub fn feed(&mut self, data: &[u8], fds: &mut Vec<OwnedFd>, frontends: &mut impl MuxFrontends) {
        let mut run_start = 0;
        let mut i = 0;
        while i < data.len() {
            let action = if self.escape {
                self.escape = false;
                Action::of(data[i])
            } else {
                // Plain bytes up to the next escape go to the focus in one piece.
                let Some(k) = data[i..].iter().position(|&b| b == ESCAPE) else { break };
                i += k;
                self.escape = true;
                Action::Swallow
            };
            self.hand_to_focus(&data[run_start..i], fds, frontends);
            i += 1;
            run_start = i;
            self.act(action, frontends);
        }
        self.hand_to_focus(&data[run_start..], fds, frontends);
    }

    fn act(&mut self, action: Action, frontends: &mut impl MuxFrontends) {
        match action {
            Action::Swallow => {}
            Action::Literal => self.hand_to_focus(&[ESCAPE], &mut Vec::new(), frontends),
            Action::SwitchFocus => {
                let focus = self.focus;
                let next =
                    (1..=MAX_MUX).map(|d| (focus + d) % MAX_MUX).find(|&s| frontends.present(s));
                if let Some(next) = next {
                    self.take_focus(next, frontends);
                }
            }
            Action::Command(command) => frontends.command(command, self.focus),
        }
    }

    /// Moves the focus to `slot`: `focus_out` to the old focus if it changes, then
    /// `focus_in` to `slot` (QEMU's order: take_focus, then sync_state). Slots past
    /// [`MAX_MUX`] are ignored.
    pub fn take_focus(&mut self, slot: usize, frontends: &mut impl MuxFrontends) {
        if slot >= MAX_MUX {
            return;
        }
        if self.focus != slot {
            frontends.focus_out(self.focus);
            self.focus = slot;
        }
        frontends.focus_in(slot);
    }

    /// Forgets the carried bytes and a pending escape: they belonged to a backend that is
    /// gone (hot swap).
    pub fn clear_carried(&mut self) {
        self.carry.iter_mut().for_each(Vec::clear);
    }

    /// Gives bytes to the focused frontend; what it cannot take waits in its carry buffer,
    /// behind what waits there already.
    fn hand_to_focus(
        &mut self,
        data: &[u8],
        fds: &mut Vec<OwnedFd>,
        frontends: &mut impl MuxFrontends,
    ) {
        if data.is_empty() {
            return;
        }
        let focus = self.focus;
        if !self.carry[focus].is_empty() {
            self.carry[focus].extend_from_slice(data);
            return;
        }
        if !frontends.present(focus) {
            frontends.dropped(focus, data.len());
            return;
        }
        let room = frontends.can_receive(focus).min(data.len());
        let fds = std::mem::take(fds);
        if room > 0 || !fds.is_empty() {
            frontends.receive(focus, &data[..room], fds);
        }
        if room < data.len() {
            self.carry[focus].extend_from_slice(&data[room..]);
        }
    }
}

/// QEMU's help text, with `%` standing for the escape key's name.
const HELP: &[&str] = &[
    "% h    print this help\n\r",
    "% x    exit emulator\n\r",
    "% s    save disk data back to file (if -snapshot)\n\r",
    "% t    toggle console timestamps\n\r",
    "% b    send break (magic sysrq)\n\r",
    "% c    switch between console and monitor\n\r",
    "% %  sends %\n\r",
];

/// The help as it appears on the terminal.
pub fn help_text() -> String {
    let mut text = String::from("\n\r");
    for line in HELP {
        text.push_str(&line.replace('%', "C-a"));
    }
    text
}

/// The output side of a mux: `Ctrl-A t` puts `[hh:mm:ss.mmm] ` (time since the toggle)
/// before each output line.
#[derive(Debug)]
pub(crate) struct Timestamps {
    on: bool,
    /// The next byte starts a line.
    line_start: bool,
    /// When the first stamped byte was written since the toggle.
    since: Option<Instant>,
}

impl Default for Timestamps {
    fn default() -> Timestamps {
        Timestamps { on: false, line_start: true, since: None }
    }
}

impl Timestamps {
    /// Whether output is stamped.
    pub(crate) fn is_on(&self) -> bool {
        self.on
    }

    /// `Ctrl-A t`: on or off; the clock starts again at the next output.
    pub(crate) fn toggle(&mut self) {
        self.on = !self.on;
        self.line_start = true;
        self.since = None;
    }

    /// Appends `buf` to `out`, each line stamped with the time from the first stamped
    /// output to `now`.
    pub(crate) fn stamp(&mut self, buf: &[u8], now: Instant, out: &mut Vec<u8>) {
        let since = *self.since.get_or_insert(now);
        for &b in buf {
            if self.line_start {
                let ms = now.saturating_duration_since(since).as_millis();
                let (h, min, s, frac) =
                    (ms / 3_600_000, ms / 60_000 % 60, ms / 1000 % 60, ms % 1000);
                // Writing to a Vec cannot fail.
                let _ = write!(out, "[{h:02}:{min:02}:{s:02}.{frac:03}] ");
                self.line_start = false;
            }
            out.push(b);
            if b == b'\n' {
                self.line_start = true;
            }
        }
    }
}

#[cfg(test)]
mod tests;

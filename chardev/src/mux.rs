//! The mux: one backend shared by up to four frontends, switched with `Ctrl-A` escapes.
//!
//! The loop runs the input filter (it owns focus and delivery); this module names the
//! commands and writes what the mux itself says on the backend: help, the termination line,
//! and `Ctrl-A t` timestamps (kept with the cell, since any writer thread must see them).

use crate::cell::Cell;

/// The escape character, `Ctrl-A` (QEMU's default `-echr`).
pub const ESCAPE: u8 = 0x01;

/// What a byte after the escape character asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum MuxAction {
    /// Not a command: the byte is dropped (QEMU swallows unknown escapes).
    Swallow,
    /// `Ctrl-A Ctrl-A`: one literal `Ctrl-A` to the focused frontend.
    Literal,
    /// `Ctrl-A h` or `Ctrl-A ?`: print the help on the backend.
    Help,
    /// `Ctrl-A x`: print "QEMU: Terminated" and exit.
    Exit,
    /// `Ctrl-A c`: focus the next frontend.
    SwitchFocus,
    /// `Ctrl-A b`: a break to the focused frontend.
    Break,
    /// `Ctrl-A t`: timestamps on output lines, on or off.
    Timestamps,
}

/// The command for the byte that followed the escape character.
pub(crate) fn command(byte: u8) -> MuxAction {
    match byte {
        ESCAPE => MuxAction::Literal,
        b'h' | b'?' => MuxAction::Help,
        b'x' => MuxAction::Exit,
        b'c' => MuxAction::SwitchFocus,
        b'b' => MuxAction::Break,
        b't' => MuxAction::Timestamps,
        // `s` commits -snapshot disks in QEMU; there are no disks here.
        _ => MuxAction::Swallow,
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

fn say(cell: &Cell, text: &[u8]) {
    if let Err(e) = cell.write_all(text) {
        log::warn!("chardev '{}': mux output lost: {e}", cell.label);
    }
}

pub(crate) fn print_help(cell: &Cell) {
    say(cell, help_text().as_bytes());
}

pub(crate) fn print_terminated(cell: &Cell) {
    say(cell, b"QEMU: Terminated\n\r");
}

pub(crate) fn toggle_timestamps(cell: &Cell) {
    if let Some(mux) = &cell.mux {
        let mut m = mux.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        m.timestamps = !m.timestamps;
        m.line_start = true;
        m.since = None;
    }
}

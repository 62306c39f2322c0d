//! The mux's escape filter (`chardev::mux::Mux`), driven without a loop: the fuzz input is
//! fed in reads of 1 to 16 bytes to a mux with two frontends that take anything. The bytes
//! the frontends get, in order, must be exactly what QEMU's `Ctrl-A` rules leave of the
//! input, and nothing may be left carried.
#![no_main]

use std::os::fd::OwnedFd;

use chardev::mux::{Command, Mux, MuxFrontends, ESCAPE, MAX_MUX};
use libfuzzer_sys::fuzz_target;

/// Two frontends (slots 0 and 1) with room for anything, appending what they get to one log.
#[derive(Default)]
struct Recorder {
    log: Vec<u8>,
    exits: usize,
}

impl MuxFrontends for Recorder {
    fn present(&mut self, slot: usize) -> bool {
        assert!(slot < MAX_MUX, "slot {slot}");
        slot < 2
    }
    fn can_receive(&mut self, slot: usize) -> usize {
        assert!(slot < 2, "asked slot {slot}, which has no frontend");
        1 << 20
    }
    fn receive(&mut self, slot: usize, data: &[u8], _fds: Vec<OwnedFd>) {
        assert!(slot < 2, "gave slot {slot}, which has no frontend");
        self.log.extend_from_slice(data);
    }
    fn focus_out(&mut self, _slot: usize) {}
    fn focus_in(&mut self, _slot: usize) {}
    fn command(&mut self, command: Command, _focus: usize) {
        if command == Command::Exit {
            self.exits += 1;
        }
    }
}

/// What QEMU's mux passes on: `Ctrl-A Ctrl-A` is one `Ctrl-A`, `Ctrl-A` and any other byte
/// is a command (or swallowed), everything else is data.
fn expected(input: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut escape = false;
    for &b in input {
        if escape {
            escape = false;
            if b == ESCAPE {
                out.push(ESCAPE);
            }
        } else if b == ESCAPE {
            escape = true;
        } else {
            out.push(b);
        }
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let Some((&chunk, input)) = data.split_first() else { return };
    let mut mux = Mux::new();
    let mut frontends = Recorder::default();
    for read in input.chunks(usize::from(chunk % 16) + 1) {
        mux.feed(read, &mut Vec::new(), &mut frontends);
    }
    assert_eq!(frontends.log, expected(input), "exits: {}", frontends.exits);
    assert_eq!(mux.carried(), 0, "a frontend with room got everything");
    assert!(mux.focus() < 2, "the focus is on a frontend");
});

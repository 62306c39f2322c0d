//! Telnet as a QEMU `telnet=on` server speaks it: the opening negotiation, IAC sequences
//! stripped from input (with `IAC BREAK` turned into a break), `0xFF` escaped on output.
//!
//! Unlike QEMU's three-state counter, two-byte commands (`IAC NOP`, `IAC IP`, ...) take two
//! bytes, not three, and sub-negotiations (`IAC SB ... IAC SE`) are skipped whole, so no
//! data byte is swallowed and no option payload leaks into the data.

/// `IAC WILL ECHO, IAC WILL SUPPRESS-GO-AHEAD, IAC WILL BINARY, IAC DO BINARY`: the bytes a
/// telnet server sends a new client, as QEMU does.
pub const NEGOTIATION: [u8; 12] =
    [0xff, 0xfb, 0x01, 0xff, 0xfb, 0x03, 0xff, 0xfb, 0x00, 0xff, 0xfd, 0x00];

const IAC: u8 = 255;
const SB: u8 = 250;
const SE: u8 = 240;
const BREAK: u8 = 243;
const WILL: u8 = 251;
const DONT: u8 = 254;

/// Where the input filter is within a telnet command.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TelnetInput {
    /// Plain data.
    #[default]
    Data,
    /// After `IAC`.
    Command,
    /// After `IAC WILL|WONT|DO|DONT`: one option byte follows.
    Option,
    /// Inside `IAC SB ...`, until `IAC SE`.
    Sub,
    /// Inside a sub-negotiation, after `IAC`.
    SubIac,
}

impl TelnetInput {
    /// Strips telnet commands from `buf` in place. Returns how many data bytes remain at the
    /// start of `buf`, and calls `on_break(offset)` for each `IAC BREAK` with the number of
    /// data bytes before it.
    pub fn filter(&mut self, buf: &mut [u8], mut on_break: impl FnMut(usize)) -> usize {
        let mut out = 0;
        let mut i = 0;
        while i < buf.len() {
            if *self == TelnetInput::Data {
                // Plain data runs up to the next IAC: moved in one go, or not at all while
                // nothing has been stripped yet.
                let run = buf[i..].iter().position(|&b| b == IAC).unwrap_or(buf.len() - i);
                if out != i {
                    buf.copy_within(i..i + run, out);
                }
                out += run;
                i += run;
                if i == buf.len() {
                    break;
                }
            }
            let b = buf[i];
            i += 1;
            *self = match (*self, b) {
                (TelnetInput::Data, IAC) => TelnetInput::Command,
                (TelnetInput::Data, _) => {
                    buf[out] = b;
                    out += 1;
                    TelnetInput::Data
                }
                (TelnetInput::Command, IAC) => {
                    buf[out] = IAC;
                    out += 1;
                    TelnetInput::Data
                }
                (TelnetInput::Command, BREAK) => {
                    on_break(out);
                    TelnetInput::Data
                }
                (TelnetInput::Command, WILL..=DONT) => TelnetInput::Option,
                (TelnetInput::Command, SB) => TelnetInput::Sub,
                (TelnetInput::Command, _) => TelnetInput::Data,
                (TelnetInput::Option, _) => TelnetInput::Data,
                (TelnetInput::Sub, IAC) => TelnetInput::SubIac,
                (TelnetInput::Sub, _) => TelnetInput::Sub,
                (TelnetInput::SubIac, SE) => TelnetInput::Data,
                (TelnetInput::SubIac, _) => TelnetInput::Sub,
            };
        }
        out
    }
}

/// Appends `data` to `out` with every `0xFF` doubled, as telnet requires.
pub fn escape_into(data: &[u8], out: &mut Vec<u8>) {
    for chunk in data.split_inclusive(|&b| b == IAC) {
        out.extend_from_slice(chunk);
        if chunk.last() == Some(&IAC) {
            out.push(IAC);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filter(input: &[u8]) -> (Vec<u8>, Vec<usize>) {
        let mut state = TelnetInput::default();
        let mut buf = input.to_vec();
        let mut breaks = Vec::new();
        let n = state.filter(&mut buf, |at| breaks.push(at));
        buf.truncate(n);
        (buf, breaks)
    }

    #[test]
    fn strips_negotiation_and_keeps_data() {
        assert_eq!(filter(b"a\xff\xfb\x01b\xff\xfd\x00c").0, b"abc");
    }

    #[test]
    fn doubled_iac_is_one_data_byte() {
        assert_eq!(filter(b"\xff\xff\xff\xff").0, b"\xff\xff");
    }

    #[test]
    fn break_is_reported_at_its_offset() {
        assert_eq!(filter(b"ab\xff\xf3cd"), (b"abcd".to_vec(), vec![2]));
    }

    #[test]
    fn two_byte_commands_swallow_no_data() {
        // QEMU treats IAC NOP as three bytes and loses the 'x'.
        assert_eq!(filter(b"\xff\xf1x\xff\xf4y").0, b"xy");
    }

    #[test]
    fn subnegotiation_payload_does_not_leak() {
        assert_eq!(filter(b"a\xff\xfa\x18\x00VT100\xff\xf0b").0, b"ab");
    }

    #[test]
    fn state_carries_across_reads() {
        let mut state = TelnetInput::default();
        let mut a = *b"x\xff";
        assert_eq!(state.filter(&mut a, |_| {}), 1);
        let mut b = *b"\xfb\x01y";
        let n = state.filter(&mut b, |_| {});
        assert_eq!(&b[..n], b"y");
    }

    #[test]
    fn escape_doubles_iac() {
        let mut out = Vec::new();
        escape_into(b"a\xffb\xff", &mut out);
        assert_eq!(out, b"a\xff\xffb\xff\xff");
    }
}

//! Telnet as a QEMU `telnet=on` server speaks it: the opening negotiation, IAC sequences
//! stripped from input (with `IAC BREAK` turned into a break), `0xFF` escaped on output.
//!
//! Unlike QEMU's three-state counter, two-byte commands (`IAC NOP`, `IAC IP`, ...) take two
//! bytes, not three, and sub-negotiations (`IAC SB ... IAC SE`) are skipped whole, so no
//! data byte is swallowed and no option payload leaks into the data.

/// `IAC WILL ECHO, IAC WILL SUPPRESS-GO-AHEAD, IAC WILL BINARY, IAC DO BINARY` (QEMU's
/// negotiation, byte for byte), then `IAC DO NAWS` (RFC 1073, an extension): a client that
/// agrees sends its window size, which becomes `Event::Resize`.
pub const NEGOTIATION: [u8; 15] =
    [0xff, 0xfb, 0x01, 0xff, 0xfb, 0x03, 0xff, 0xfb, 0x00, 0xff, 0xfd, 0x00, 0xff, 0xfd, NAWS];

/// RFC 1073's option: Negotiate About Window Size.
const NAWS: u8 = 31;

const IAC: u8 = 255;
const SB: u8 = 250;
const SE: u8 = 240;
const BREAK: u8 = 243;
const WILL: u8 = 251;
const DONT: u8 = 254;

/// What a telnet client said besides data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TelnetEvent {
    /// `IAC BREAK`.
    Break,
    /// `IAC SB NAWS cols rows IAC SE`: its window size.
    Size {
        /// Columns.
        cols: u16,
        /// Rows.
        rows: u16,
    },
}

/// The chardev event a telnet event is.
pub fn telnet_event(e: TelnetEvent) -> chardev::Event {
    match e {
        TelnetEvent::Break => chardev::Event::Break,
        TelnetEvent::Size { cols, rows } => chardev::Event::Resize { cols, rows },
    }
}

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
    /// Inside `IAC SB ...`, until `IAC SE`: the first payload bytes (the option and four
    /// more, enough for NAWS) and how many came.
    Sub([u8; 5], u8),
    /// Inside a sub-negotiation, after `IAC`.
    SubIac([u8; 5], u8),
}

impl TelnetInput {
    /// Strips telnet commands from `buf` in place. Returns how many data bytes remain at the
    /// start of `buf`, and calls `on_break(offset)` for each `IAC BREAK` with the number of
    /// data bytes before it.
    pub fn filter(&mut self, buf: &mut [u8], mut on_break: impl FnMut(usize)) -> usize {
        self.filter_events(buf, |at, event| {
            if event == TelnetEvent::Break {
                on_break(at)
            }
        })
    }

    /// As [`TelnetInput::filter`], reporting every [`TelnetEvent`] (breaks and window sizes)
    /// with the number of data bytes before it.
    pub fn filter_events(
        &mut self,
        buf: &mut [u8],
        mut on_event: impl FnMut(usize, TelnetEvent),
    ) -> usize {
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
                    on_event(out, TelnetEvent::Break);
                    TelnetInput::Data
                }
                (TelnetInput::Command, WILL..=DONT) => TelnetInput::Option,
                (TelnetInput::Command, SB) => TelnetInput::Sub([0; 5], 0),
                (TelnetInput::Command, _) => TelnetInput::Data,
                (TelnetInput::Option, _) => TelnetInput::Data,
                (TelnetInput::Sub(got, n), IAC) => TelnetInput::SubIac(got, n),
                (TelnetInput::Sub(got, n), b) => keep(got, n, b),
                (TelnetInput::SubIac(got, n), SE) => {
                    if n == 5 && got[0] == NAWS {
                        let cols = u16::from_be_bytes([got[1], got[2]]);
                        let rows = u16::from_be_bytes([got[3], got[4]]);
                        if cols > 0 && rows > 0 {
                            on_event(out, TelnetEvent::Size { cols, rows });
                        }
                    }
                    TelnetInput::Data
                }
                // A doubled IAC inside a sub-negotiation is a 255 of its payload.
                (TelnetInput::SubIac(got, n), IAC) => keep(got, n, IAC),
                (TelnetInput::SubIac(got, n), _) => TelnetInput::Sub(got, n),
            };
        }
        out
    }
}

/// A sub-negotiation's payload byte: kept if among the first five.
fn keep(mut got: [u8; 5], n: u8, b: u8) -> TelnetInput {
    if let Some(slot) = got.get_mut(usize::from(n)) {
        *slot = b;
    }
    TelnetInput::Sub(got, n.saturating_add(1).min(6))
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
    fn naws_reports_the_window_size_and_leaks_nothing() {
        let mut state = TelnetInput::default();
        let mut events = Vec::new();
        // 80x24, then 255x300 (a 255 byte doubled in the payload), split across reads.
        let mut a = *b"ab\xff\xfa\x1f\x00\x50\x00\x18\xff\xf0cd\xff\xfa\x1f\x00\xff";
        let n = state.filter_events(&mut a, |at, e| events.push((at, e)));
        assert_eq!(&a[..n], b"abcd");
        let mut b = *b"\xff\x01\x2c\xff\xf0e";
        let n = state.filter_events(&mut b, |at, e| events.push((at, e)));
        assert_eq!(&b[..n], b"e");
        assert_eq!(
            events,
            [
                (2, TelnetEvent::Size { cols: 80, rows: 24 }),
                (0, TelnetEvent::Size { cols: 255, rows: 300 })
            ]
        );
        // A NAWS of zeros, or too short, is no size.
        assert_eq!(filter(b"\xff\xfa\x1f\x00\x00\x00\x00\xff\xf0x").0, b"x");
        let mut events = Vec::new();
        let mut c = *b"\xff\xfa\x1f\x00\x50\xff\xf0";
        TelnetInput::default().filter_events(&mut c, |at, e| events.push((at, e)));
        assert!(events.is_empty());
    }

    #[test]
    fn escape_doubles_iac() {
        let mut out = Vec::new();
        escape_into(b"a\xffb\xff", &mut out);
        assert_eq!(out, b"a\xff\xffb\xff\xff");
    }
}

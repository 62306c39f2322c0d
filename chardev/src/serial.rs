//! Serial line parameters, as a frontend (a UART model) asks a real serial line for them,
//! and [`SerialLine`], the capability of a backend that drives one.

use crate::error::Result;

/// Parity of a serial line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Parity {
    /// No parity bit (QEMU's `'N'`).
    #[default]
    None,
    /// Even parity (`'E'`).
    Even,
    /// Odd parity (`'O'`).
    Odd,
}

/// Speed and framing of a serial line (QEMU's `QEMUSerialSetParams`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SerialParams {
    /// Line speed in bits per second.
    pub speed: u32,
    /// Parity bit.
    pub parity: Parity,
    /// Data bits per character, 5 to 8.
    pub data_bits: u8,
    /// Stop bits, 1 or 2.
    pub stop_bits: u8,
}

impl Default for SerialParams {
    /// QEMU's default for a new serial line: 115200 8N1.
    fn default() -> Self {
        SerialParams { speed: 115_200, parity: Parity::None, data_bits: 8, stop_bits: 1 }
    }
}

/// The modem control lines of a serial port (QEMU's `CHR_TIOCM_*` bits, which are also
/// Linux's `TIOCM_*` values). DTR and RTS are outputs; CTS, CAR, RI and DSR are inputs.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct ModemLines(u32);

impl ModemLines {
    /// Data Terminal Ready (output).
    pub const DTR: ModemLines = ModemLines(0x002);
    /// Request To Send (output).
    pub const RTS: ModemLines = ModemLines(0x004);
    /// Clear To Send (input).
    pub const CTS: ModemLines = ModemLines(0x020);
    /// Carrier detect, DCD (input).
    pub const CAR: ModemLines = ModemLines(0x040);
    /// Ring Indicator (input).
    pub const RI: ModemLines = ModemLines(0x080);
    /// Data Set Ready (input).
    pub const DSR: ModemLines = ModemLines(0x100);

    const ALL: u32 = 0x002 | 0x004 | 0x020 | 0x040 | 0x080 | 0x100;
    const NAMES: [(ModemLines, &'static str); 6] = [
        (Self::DTR, "DTR"),
        (Self::RTS, "RTS"),
        (Self::CTS, "CTS"),
        (Self::CAR, "CAR"),
        (Self::RI, "RI"),
        (Self::DSR, "DSR"),
    ];

    /// No line asserted.
    pub const fn empty() -> ModemLines {
        ModemLines(0)
    }

    /// The `CHR_TIOCM_*` bits.
    pub const fn bits(self) -> u32 {
        self.0
    }

    /// The lines whose bits are set in `bits`; other bits are ignored.
    pub const fn from_bits_truncate(bits: u32) -> ModemLines {
        ModemLines(bits & Self::ALL)
    }

    /// Whether every line in `lines` is asserted.
    pub const fn contains(self, lines: ModemLines) -> bool {
        self.0 & lines.0 == lines.0
    }

    /// Asserts (`on`) or clears `lines`.
    pub fn set(&mut self, lines: ModemLines, on: bool) {
        if on {
            self.0 |= lines.0;
        } else {
            self.0 &= !lines.0;
        }
    }
}

impl std::ops::BitOr for ModemLines {
    type Output = ModemLines;

    /// Both sets of lines.
    fn bitor(self, other: ModemLines) -> ModemLines {
        ModemLines(self.0 | other.0)
    }
}

impl std::fmt::Debug for ModemLines {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> =
            Self::NAMES.iter().filter(|(l, _)| self.contains(*l)).map(|(_, n)| *n).collect();
        write!(f, "ModemLines({})", names.join(" | "))
    }
}

/// The controls of a real serial line (QEMU's `CHR_IOCTL_SERIAL_*`): a capability that a
/// backend on a host tty offers through [`Chardev::serial_line`]. Frontends reach it with
/// [`FrontendHandle::send_break`] and its siblings; on a backend without one they get
/// `Unsupported`.
///
/// [`Chardev::serial_line`]: crate::Chardev::serial_line
/// [`FrontendHandle::send_break`]: crate::FrontendHandle::send_break
pub trait SerialLine {
    /// Sends a serial break to the device on the other side.
    fn send_break(&mut self) -> Result<()>;

    /// Sets line speed, parity, data and stop bits.
    fn set_params(&mut self, params: &SerialParams) -> Result<()>;

    /// Reads the modem control lines (QEMU's `CHR_IOCTL_SERIAL_GET_TIOCM`).
    fn modem_lines(&mut self) -> Result<ModemLines>;

    /// Sets the modem control lines; only DTR and RTS are outputs
    /// (QEMU's `CHR_IOCTL_SERIAL_SET_TIOCM`).
    fn set_modem_lines(&mut self, lines: ModemLines) -> Result<()>;
}

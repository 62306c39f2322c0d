//! Serial line parameters, as a frontend (a UART model) asks a real serial line for them.

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

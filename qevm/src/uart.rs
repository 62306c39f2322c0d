//! The 16550 UART's state (vm-superio's [`SerialState`]) as a versioned device section and
//! back (feature `uart`).
//!
//! ```
//! use vm_superio::serial::SerialState;
//!
//! let uart = SerialState { in_buffer: b"typed ahead".to_vec(), ..SerialState::default() };
//! let section = qevm::serial_section(0, &uart);
//! assert_eq!(section.name, qevm::SERIAL);
//! assert_eq!(qevm::serial_state(&section)?, uart); // then `Serial::from_state`
//! # Ok::<(), qevm::Error>(())
//! ```

use vm_superio::serial::SerialState;

use crate::{DeviceState, Error, Result};

/// The section name of the 16550 UART's state.
pub const SERIAL: &str = "serial";

/// The version of [`serial_section`]'s layout.
pub const SERIAL_VERSION: u32 = 1;

/// Longest receive FIFO a 16550 has (vm-superio's `FIFO_SIZE`).
const SERIAL_FIFO_SIZE: usize = 64;

/// The UART's state as a [`SERIAL`] section of layout version [`SERIAL_VERSION`]: the nine
/// registers (DLL, DLM, IER, IIR, LCR, LSR, MCR, MSR, SCR), the receive FIFO's length, then
/// its bytes.
pub fn serial_section(instance_id: u32, state: &SerialState) -> DeviceState {
    let mut data = vec![
        state.baud_divisor_low,
        state.baud_divisor_high,
        state.interrupt_enable,
        state.interrupt_identification,
        state.line_control,
        state.line_status,
        state.modem_control,
        state.modem_status,
        state.scratch,
    ];
    // A FIFO holds at most 64 bytes; a longer one could not be restored (from_state
    // refuses it), so only what fits is kept.
    let fifo = &state.in_buffer[..state.in_buffer.len().min(SERIAL_FIFO_SIZE)];
    if fifo.len() < state.in_buffer.len() {
        log::warn!("serial: {} bytes beyond a full FIFO dropped", state.in_buffer.len() - 64);
    }
    data.push(fifo.len() as u8);
    data.extend_from_slice(fifo);
    DeviceState::new(SERIAL, instance_id, SERIAL_VERSION, data)
}

/// The UART's state from a [`SERIAL`] section, for `Serial::from_state`.
pub fn serial_state(device: &DeviceState) -> Result<SerialState> {
    let bad = |reason: String| Error::DeviceState { name: device.name.clone(), reason };
    if device.version_id != SERIAL_VERSION {
        return Err(bad(format!(
            "version {} is not supported (only {SERIAL_VERSION})",
            device.version_id
        )));
    }
    let d = &device.data;
    let Some(&fifo_len) = d.get(9) else {
        return Err(bad(format!("{} bytes, shorter than the 10 of the registers", d.len())));
    };
    let fifo_len = usize::from(fifo_len);
    if fifo_len > SERIAL_FIFO_SIZE {
        return Err(bad(format!("FIFO of {fifo_len} bytes; a 16550 holds {SERIAL_FIFO_SIZE}")));
    }
    if d.len() != 10 + fifo_len {
        return Err(bad(format!(
            "{} bytes, but the registers and a FIFO of {fifo_len} bytes make {}",
            d.len(),
            10 + fifo_len
        )));
    }
    Ok(SerialState {
        baud_divisor_low: d[0],
        baud_divisor_high: d[1],
        interrupt_enable: d[2],
        interrupt_identification: d[3],
        line_control: d[4],
        line_status: d[5],
        modem_control: d[6],
        modem_status: d[7],
        scratch: d[8],
        in_buffer: d[10..].to_vec(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An interrupt line nobody listens to.
    struct NoIrq;

    impl vm_superio::Trigger for NoIrq {
        type E = std::convert::Infallible;

        fn trigger(&self) -> std::result::Result<(), Self::E> {
            Ok(())
        }
    }

    #[test]
    fn the_uart_state_round_trips_into_a_working_uart() {
        use vm_superio::serial::NoEvents;
        use vm_superio::Serial;
        let state = SerialState {
            baud_divisor_low: 0x0c,
            baud_divisor_high: 0x01,
            interrupt_enable: 0x01,
            interrupt_identification: 0x04,
            line_control: 0x03,
            line_status: 0x61,
            modem_control: 0x0b,
            modem_status: 0xb0,
            scratch: 0x5a,
            in_buffer: b"hello".to_vec(),
        };
        let device = serial_section(0, &state);
        assert_eq!((device.name.as_str(), device.version_id), (SERIAL, SERIAL_VERSION));
        assert_eq!(device.data.len(), 15);
        let back = serial_state(&device).unwrap();
        assert_eq!(back, state);
        let mut uart = Serial::from_state(&back, NoIrq, NoEvents, std::io::sink()).unwrap();
        assert_eq!(uart.read(7), 0x5a); // the scratch register
        assert_eq!(uart.read(0), b'h'); // the FIFO, in order
        assert_eq!(uart.state().in_buffer, b"ello");

        let full = SerialState { in_buffer: vec![7; 64], ..Default::default() };
        assert_eq!(serial_state(&serial_section(0, &full)).unwrap(), full);
    }

    #[test]
    fn a_bad_uart_state_is_refused() {
        let good = serial_section(0, &SerialState::default());
        let with =
            |version: u32, data: Vec<u8>| DeviceState { version_id: version, data, ..good.clone() };
        let cases = [
            (with(2, good.data.clone()), "version 2 is not supported (only 1)"),
            (with(1, vec![0; 9]), "9 bytes, shorter than the 10 of the registers"),
            (with(1, [vec![0; 9], vec![65], vec![0; 65]].concat()), "FIFO of 65 bytes"),
            (with(1, [vec![0; 9], vec![2], vec![0; 1]].concat()), "11 bytes, but the registers"),
        ];
        for (device, expected) in cases {
            let e = serial_state(&device).unwrap_err().to_string();
            assert!(e.starts_with("migration: state of device 'serial': "), "{e}");
            assert!(e.contains(expected), "{e}");
        }
    }
}

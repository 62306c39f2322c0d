//! What the unit tests share: a small machine, saved, and loaded into RAM of a given size.

use crate::{load, save, DeviceState, Progress, Snapshot, GUEST_SHELL, PAGE_SIZE};

/// A small machine: 8 pages, pages 1 and 5 with data, a UART and a shell.
pub(crate) fn small() -> (Vec<u8>, Vec<DeviceState>) {
    let mut ram = vec![0u8; 8 * PAGE_SIZE];
    ram[PAGE_SIZE..2 * PAGE_SIZE].iter_mut().enumerate().for_each(|(i, b)| *b = i as u8);
    ram[6 * PAGE_SIZE - 1] = 0xaa; // only the last byte: still a data page
    let devices = vec![uart(), DeviceState::new(GUEST_SHELL, 0, 1, b"uptime-offset=1.5".to_vec())];
    (ram, devices)
}

/// A UART with two bytes in its FIFO.
#[cfg(feature = "uart")]
fn uart() -> DeviceState {
    use vm_superio::serial::SerialState;
    crate::serial_section(0, &SerialState { in_buffer: b"ab".to_vec(), ..Default::default() })
}

/// Without the `uart` feature, a "serial" section of the same size.
#[cfg(not(feature = "uart"))]
fn uart() -> DeviceState {
    DeviceState::new("serial", 0, 1, [&[0u8; 9][..], &[2], b"ab"].concat())
}

pub(crate) fn saved(ram: &Vec<u8>, devices: &[DeviceState]) -> Vec<u8> {
    let mut out = Vec::new();
    let snapshot = Snapshot { machine_type: "pc", ram, devices };
    save(&mut out, &snapshot, &Progress::new()).unwrap();
    out
}

pub(crate) fn load_err(stream: &[u8], ram_size: usize) -> String {
    let mut ram = vec![0u8; ram_size];
    load(stream, "pc", &mut ram).unwrap_err().to_string()
}

//! A machine saved and loaded back across a real socketpair, page for page.

use std::os::unix::net::UnixStream;
use std::sync::{Arc, Mutex};

use qevm::{Progress, PAGE_SIZE};

use crate::{data_pages, devices, ram_image, reader, save_on_thread, DEADLINE};

#[test]
fn a_64_mib_machine_crosses_a_socketpair_page_for_page() {
    let pages = (64 << 20) / PAGE_SIZE;
    let ram = ram_image(pages);
    assert_eq!(data_pages(&ram), pages / 2 + 1); // 32 MiB of random data, and page 3
    let devices = devices();
    let (a, b) = UnixStream::pair().unwrap();
    let progress = Arc::new(Progress::new());
    let saved = save_on_thread(
        a.into(),
        Arc::new(Mutex::new(ram.clone())),
        devices.clone(),
        Arc::clone(&progress),
    );

    let mut back = vec![0xeeu8; ram.len()];
    let incoming = qevm::load(reader(b), "pc", &mut back).unwrap();
    let written = saved.recv_timeout(DEADLINE).unwrap().unwrap();

    let differing = back.chunks(PAGE_SIZE).zip(ram.chunks(PAGE_SIZE)).position(|(x, y)| x != y);
    assert_eq!(differing, None, "first page that differs");
    assert_eq!(incoming.devices, devices);
    assert_eq!(incoming.bytes, written);
    assert_eq!(incoming.data_pages as usize, pages / 2 + 1);
    assert_eq!(incoming.zero_pages as usize, pages / 2 - 1);
    let uart = qevm::serial_state(incoming.device(qevm::SERIAL, 0).unwrap()).unwrap();
    assert_eq!(uart.in_buffer, b"typed ahead");
    let stats = progress.ram();
    assert_eq!((stats.transferred, stats.remaining, stats.total), (written, 0, 64 << 20));
    assert_eq!((stats.normal as usize, stats.duplicate as usize), (pages / 2 + 1, pages / 2 - 1));
}

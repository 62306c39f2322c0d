//! The migration stream reader: `load` and a `Loader` with QEMU's fixed-size sections
//! return an error or a result for any bytes, within the fuzzer's time and memory limits
//! (run with `-timeout=10`: a stream that makes the reader spin is a finding).
#![no_main]

use libfuzzer_sys::fuzz_target;
use qevm::{load, Loader};

/// 64 KiB of destination RAM for streams like [`qevm::save`] writes (sixteen pages, enough
/// for page records to land).
const RAM: usize = 16 * 4096;

/// 2 MiB for QEMU's streams, the size of the captured `none` machine in the tests' fixture.
const QEMU_RAM: usize = 2 << 20;

fuzz_target!(|data: &[u8]| {
    let mut ram = vec![0u8; RAM];
    let _ = load(data, "pc", &mut ram);
    let mut qemu_ram = vec![0u8; QEMU_RAM];
    let _ = Loader::new("none")
        .fixed_size("timer", 24)
        .fixed_size("globalstate", 104)
        .load(data, &mut qemu_ram);
});

//! RAM the machine never wrote is sent as ZERO records without being read: reading it would
//! fault in the kernel's zero page, one fault a page.

use std::sync::Mutex;

use nix::sys::resource::{getrusage, UsageWho};
use qevm::{Progress, Snapshot, PAGE_SIZE};

use crate::devices;

/// Minor page faults of this thread so far.
fn faults() -> i64 {
    getrusage(UsageWho::RUSAGE_THREAD).unwrap().minor_page_faults()
}

#[test]
fn ram_never_written_is_sent_as_zero_pages_without_a_fault() {
    // 64 MiB as a machine allocates it (the allocator maps it untouched), then a quarter
    // of it written: every fourth page, one byte, the first page of each run in the middle.
    let pages = (64 << 20) / PAGE_SIZE;
    let ram = Mutex::new(vec![0u8; pages * PAGE_SIZE]);
    let mut written = Vec::new();
    {
        let mut ram = ram.lock().unwrap();
        for page in (0..pages).step_by(4) {
            ram[page * PAGE_SIZE + 2000] = 0x5a;
            written.push(page);
        }
    }
    let devices = devices();
    let snapshot = Snapshot { machine_type: "pc", ram: &ram, devices: &devices };

    // Into a sink first, so that only the save's own faults count.
    let before = faults();
    qevm::save(std::io::sink(), &snapshot, &Progress::new()).unwrap();
    let during = faults() - before;
    // 12,288 pages were never written; reading them would fault 12,288 times.
    assert!(during < 1_000, "{during} page faults while saving");

    // And the stream is right: every page loads as it is.
    let mut stream = Vec::new();
    qevm::save(&mut stream, &snapshot, &Progress::new()).unwrap();
    let mut back = vec![0xeeu8; pages * PAGE_SIZE];
    let incoming = qevm::load(&stream[..], "pc", &mut back).unwrap();
    assert!(back == *ram.lock().unwrap(), "the RAM loaded back differs");
    assert_eq!(incoming.data_pages as usize, written.len());
    assert_eq!(incoming.zero_pages as usize, pages - written.len());
}

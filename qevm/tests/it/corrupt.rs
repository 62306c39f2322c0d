//! Corrupt and truncated streams fail cleanly: every flipped byte is an error or lands in
//! the data, every cut is an error (but the missing vmdesc), and no length field makes the
//! reader allocate what the stream does not hold.

use std::ops::Range;

use qevm::{DeviceState, Error, PAGE_SIZE};

use crate::allocations::largest_allocation;
use crate::walk::{sized, walk};
use crate::{devices, fill_random, save_to_vec};

/// A small machine's stream: 8 pages, 3 with data.
fn small_stream() -> (Vec<u8>, Vec<u8>, Vec<DeviceState>) {
    let mut ram = vec![0u8; 8 * PAGE_SIZE];
    fill_random(&mut ram[PAGE_SIZE..2 * PAGE_SIZE], 1);
    fill_random(&mut ram[2 * PAGE_SIZE..3 * PAGE_SIZE], 2);
    ram[7 * PAGE_SIZE] = 0x80;
    let devices = devices();
    let stream = save_to_vec(&ram, &devices);
    (ram, stream, devices)
}

#[test]
fn every_flipped_byte_is_an_error_or_lands_in_the_data() {
    let (ram, stream, devices) = small_stream();
    let w = walk(&stream, &sized);
    let inside = |ranges: &[Range<usize>], at: usize| ranges.iter().position(|r| r.contains(&at));
    let mut loaded_in_data = 0;
    let mut vmdesc_flips = (0, 0); // (loaded, refused)
    for at in 0..stream.len() {
        for mask in [0x01u8, 0x80, 0xff] {
            let mut bad = stream.clone();
            bad[at] ^= mask;
            let mut back = vec![0u8; ram.len()];
            let r = qevm::load(&bad[..], "pc", &mut back);
            if let Some(i) = inside(&w.page_data, at) {
                // No checksum: the page loads with that byte changed, and nothing else does.
                let incoming = r.unwrap_or_else(|e| panic!("flip {mask:#x} at {at}: {e}"));
                let offset = at - w.page_data[i].start;
                let page_start = back
                    .chunks(PAGE_SIZE)
                    .zip(ram.chunks(PAGE_SIZE))
                    .position(|(x, y)| x != y)
                    .unwrap()
                    * PAGE_SIZE;
                assert_eq!(back[page_start + offset], ram[page_start + offset] ^ mask);
                back[page_start + offset] ^= mask;
                assert!(back == ram);
                assert_eq!(incoming.devices, devices);
                loaded_in_data += 1;
            } else if let Some(i) =
                inside(&w.device_data, at).filter(|&i| at >= w.device_data[i].start + 4)
            {
                // Inside a device's state (after its size): the state changes, opaque to
                // the stream; its own decoder judges it.
                let incoming = r.unwrap_or_else(|e| panic!("flip {mask:#x} at {at}: {e}"));
                let mut changed = devices.clone();
                changed[i].data[at - w.device_data[i].start - 4] ^= mask;
                assert_eq!(incoming.devices, changed);
                assert!(back == ram);
                loaded_in_data += 1;
            } else if w.vmdesc.contains(&at) {
                // The vmdesc's names, instance ids, versions and page size are checked;
                // the rest of it only describes and may change.
                match r {
                    Ok(incoming) => {
                        assert!(back == ram);
                        assert_eq!(incoming.devices, devices);
                        vmdesc_flips.0 += 1;
                    }
                    Err(Error::Format { offset, .. }) => {
                        assert_eq!(offset, w.vmdesc.start as u64);
                        vmdesc_flips.1 += 1;
                    }
                    Err(e) => panic!("flip {mask:#x} at {at}: {e:?}"),
                }
            } else {
                let e = r.expect_err(&format!("flip {mask:#x} at {at} loaded"));
                assert!(
                    matches!(
                        e,
                        Error::Format { .. }
                            | Error::Truncated { .. }
                            | Error::RamSize { .. }
                            | Error::MachineType { .. }
                    ),
                    "flip {mask:#x} at {at}: {e:?}"
                );
            }
        }
    }
    assert!(loaded_in_data > 3 * PAGE_SIZE * 3);
    // Most of the vmdesc is names, numbers and syntax, which are checked.
    assert!(vmdesc_flips.1 > vmdesc_flips.0, "{vmdesc_flips:?}");
}

#[test]
fn every_truncation_is_an_error_but_the_missing_vmdesc() {
    let (ram, stream, _) = small_stream();
    let w = walk(&stream, &sized);
    for len in 0..stream.len() {
        let mut back = vec![0u8; ram.len()];
        let r = qevm::load(&stream[..len], "pc", &mut back);
        if len == w.eof_at + 1 {
            // Ends right after QEMU_VM_EOF: accepted, as QEMU accepts it, with no vmdesc.
            assert_eq!(r.unwrap().vmdesc, None);
            assert!(back == ram);
            continue;
        }
        match r {
            Err(Error::Truncated { offset, .. }) => assert_eq!(offset, len as u64, "at {len}"),
            other => panic!("truncated at {len}: {other:?}"),
        }
    }
}

#[test]
fn huge_length_fields_allocate_nothing_huge() {
    let (ram, stream, _) = small_stream();
    let w = walk(&stream, &sized);
    let set_be32 = |at: usize, v: u32| {
        let mut s = stream.clone();
        s[at..at + 4].copy_from_slice(&v.to_be_bytes());
        s
    };
    let serial_size_at = w.device_data[0].start;
    let vmdesc_len_at = w.vmdesc.start - 4;
    let cases = [
        // the machine type's length
        (set_be32(9, u32::MAX), "byte 9: machine type length 4294967295 exceeds the limit of 256"),
        (
            set_be32(serial_size_at, u32::MAX),
            "claims 4294967295 bytes, more than the limit of 1048576",
        ),
        (set_be32(serial_size_at, qevm::MAX_DEVICE_STATE_LEN as u32), "ends at byte"),
        (
            set_be32(vmdesc_len_at, u32::MAX),
            "vmdesc length 4294967295 exceeds the limit of 16777216",
        ),
        (set_be32(vmdesc_len_at, qevm::MAX_VMDESC_LEN as u32), "inside the vmdesc"),
    ];
    for (bad, expected) in cases {
        let mut back = vec![0u8; ram.len()];
        let (r, largest) = largest_allocation(|| qevm::load(&bad[..], "pc", &mut back).map(|_| ()));
        let e = r.unwrap_err().to_string();
        assert!(e.contains(expected), "{e}\nexpected: {expected}");
        assert!(largest <= 128 * 1024, "{expected}: an allocation of {largest} bytes");
    }
    // The whole stream, loaded, allocates no more than its own size: the reader's buffer.
    let mut back = vec![0u8; ram.len()];
    let (r, largest) = largest_allocation(|| qevm::load(&stream[..], "pc", &mut back).map(|_| ()));
    r.unwrap();
    assert!(largest <= 64 * 1024, "largest allocation {largest}");
}

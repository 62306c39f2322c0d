//! The stream has QEMU's structure, as an independent reading of it finds.

use qevm::PAGE_SIZE;

use crate::walk::{sized, vmdesc_json, walk};
use crate::{data_pages, devices, ram_image, save_to_vec};

#[test]
fn the_stream_has_qemus_structure() {
    let ram = ram_image(2048 + 5); // more than two parts, the last one short
    let devices = devices();
    let stream = save_to_vec(&ram, &devices);
    let w = walk(&stream, &sized);

    // Header: magic, version 3, then the configuration section with the machine type.
    assert_eq!(&stream[..17], b"QEVM\x00\x00\x00\x03\x07\x00\x00\x00\x02pc\x01\x00");
    assert_eq!(w.machine_type, "pc");
    // The RAM section: START with "ram" instance 0 version 4 and one block "ram".
    assert_eq!(
        &stream[15..15 + 50],
        [
            &[0x01, 0, 0, 0, 1, 3][..],
            b"ram",
            &[0, 0, 0, 0, 0, 0, 0, 4],
            &((ram.len() as u64) | 4).to_be_bytes(),
            &[3],
            b"ram",
            &(ram.len() as u64).to_be_bytes(),
            &0x10u64.to_be_bytes(),
            &[0x7e, 0, 0, 0, 1],
        ]
        .concat()
    );
    // Then three PARTs (1024 + 1024 + 5 pages), END, and a FULL per device, ids in order.
    let kinds: Vec<(u8, u32)> = w.sections.iter().map(|(k, id, _)| (*k, *id)).collect();
    assert_eq!(kinds, [(1, 1), (2, 1), (2, 1), (2, 1), (3, 1), (4, 2), (4, 3)]);
    // A ZERO record for every zero page, a PAGE record for every other; one record names
    // the block, the rest continue it.
    assert_eq!(w.page_records, data_pages(&ram));
    assert_eq!(w.zero_records, ram.len() / PAGE_SIZE - data_pages(&ram));
    assert_eq!(w.named_records, 1);
    // The vmdesc names the SECTION_FULLs, in order, and the stream does not end in 0x00.
    let full: Vec<&str> =
        w.sections.iter().filter_map(|(k, _, n)| (*k == 4).then_some(n.as_deref()?)).collect();
    assert_eq!(full, ["serial", "guest-shell"]);
    let vmdesc = vmdesc_json(&stream, &w);
    assert_eq!(vmdesc["page_size"], 4096);
    let names: Vec<&str> =
        vmdesc["devices"].as_array().unwrap().iter().map(|d| d["name"].as_str().unwrap()).collect();
    assert_eq!(names, full);
    assert_eq!(w.eof_at, stream.len() - w.vmdesc.len() - 6);
    assert_ne!(stream.last(), Some(&0));
    // The vmdesc describes each state's layout truly: its field sizes add up to the bytes
    // in the section, as QEMU's analyze-migration.py needs.
    for (device, range) in vmdesc["devices"].as_array().unwrap().iter().zip(&w.device_data) {
        let sizes: u64 =
            device["fields"].as_array().unwrap().iter().map(|f| f["size"].as_u64().unwrap()).sum();
        assert_eq!(sizes as usize, range.len(), "{}", device["name"]);
    }
}

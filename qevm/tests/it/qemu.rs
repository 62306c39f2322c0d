//! A stream captured from a real QEMU 7.2 (`tests/fixtures/`) loads, and our framing is
//! QEMU's byte for byte.

use qevm::Loader;

use crate::walk::{sized, walk, Walk};
use crate::{devices, save_to_vec_as};

/// The QEMU 7.2 stream of `-machine none -m 2` with 8218 bytes loaded at 0x3000 (see
/// `fixtures/README.md`).
const QEMU_STREAM: &[u8] = include_bytes!("../fixtures/qemu-7.2-none-2m.migstream");

/// QEMU's "timer" and "globalstate" states, sized as its vmdesc describes them.
fn qemu_loader() -> Loader<'static> {
    Loader::new("none").fixed_size("timer", 24).fixed_size("globalstate", 104)
}

/// What QEMU loaded at 0x3000 when the fixture was captured.
fn fixture_blob() -> Vec<u8> {
    let mut blob: Vec<u8> = (0..8192u32).map(|i| ((i * 7 + 3) % 256) as u8).collect();
    blob.extend_from_slice(b"QEMU 7.2 fixture page tail");
    blob
}

#[test]
fn a_stream_from_qemu_7_2_loads() {
    let mut ram = vec![0xffu8; 2 << 20];
    let incoming = qemu_loader().load(QEMU_STREAM, &mut ram).unwrap();

    let mut expected = vec![0u8; 2 << 20];
    expected[0x3000..0x3000 + 8218].copy_from_slice(&fixture_blob());
    assert!(ram == expected, "the RAM QEMU sent");
    assert_eq!((incoming.zero_pages, incoming.data_pages), (509, 3));
    assert_eq!(incoming.machine_type, "none");
    assert_eq!(incoming.bytes, QEMU_STREAM.len() as u64);
    let names: Vec<(&str, u32, u32)> =
        incoming.devices.iter().map(|d| (d.name.as_str(), d.instance_id, d.version_id)).collect();
    assert_eq!(names, [("timer", 0, 2), ("globalstate", 0, 1)]);
    // globalstate: a uint32 size, then the run state in a 100-byte buffer.
    let global = &incoming.device("globalstate", 0).unwrap().data;
    assert_eq!(&global[..12], b"\0\0\0\x08running\0");

    // The sizes given to the loader are the ones QEMU's vmdesc describes.
    let vmdesc: serde_json::Value =
        serde_json::from_str(incoming.vmdesc.as_deref().unwrap()).unwrap();
    for device in vmdesc["devices"].as_array().unwrap() {
        let sizes: u64 =
            device["fields"].as_array().unwrap().iter().map(|f| f["size"].as_u64().unwrap()).sum();
        let name = device["name"].as_str().unwrap();
        assert_eq!(qevm::StateLayout::Fixed(sizes as usize), qemu_loader().layout(name));
    }

    // The independent walker agrees, and QEMU's stream too ends with the JSON, not 0x00.
    let w = walk(QEMU_STREAM, &|name, _| if name == "timer" { 24 } else { 104 });
    assert_eq!((w.zero_records, w.page_records, w.named_records), (509, 3, 1));
    assert_ne!(QEMU_STREAM.last(), Some(&0));
}

#[test]
fn our_framing_is_qemus_byte_for_byte() {
    // The same machine as the fixture's: "none", 2 MiB, the same bytes at 0x3000.
    let mut ram = vec![0u8; 2 << 20];
    ram[0x3000..0x3000 + 8218].copy_from_slice(&fixture_blob());
    let ours = save_to_vec_as(&ram, "none", &devices());
    let qemu_walk = walk(QEMU_STREAM, &|name, _| if name == "timer" { 24 } else { 104 });
    let our_walk = walk(&ours, &sized);

    // Section ids differ (QEMU numbered RAM 2, after "timer" and an inactive section); with
    // the id fields blanked, everything up to the end of the RAM section is the same bytes:
    // header, configuration, START, one PART of 512 records, END, and every footer.
    let blank = |s: &[u8], w: &Walk| {
        let mut s = s.to_vec();
        for &at in &w.id_fields {
            s[at..at + 4].fill(0);
        }
        s
    };
    let (q, o) = (blank(QEMU_STREAM, &qemu_walk), blank(&ours, &our_walk));
    assert_eq!(qemu_walk.ram_end, our_walk.ram_end);
    assert!(q[..qemu_walk.ram_end] == o[..our_walk.ram_end], "RAM sections differ");
    let kinds = |w: &Walk| w.sections.iter().map(|(k, _, _)| *k).collect::<Vec<_>>();
    assert_eq!(kinds(&qemu_walk), kinds(&our_walk)); // 1 2 3 4 4

    // Device sections: the walker read both streams' SECTION_FULLs (0x04, id, idstr,
    // instance, version, state, 0x7e and the same id) and found QEMU_VM_EOF then the vmdesc.
    assert_eq!((qemu_walk.device_data.len(), our_walk.device_data.len()), (2, 2));
    assert_eq!((QEMU_STREAM[qemu_walk.eof_at], ours[our_walk.eof_at]), (0, 0));
    // The vmdesc is written as QEMU writes it: its spacing, and its keys in its order.
    let prefix = "{\"page_size\": 4096, \"devices\": [{\"name\": \"";
    let keys =
        ["\"name\": ", "\"instance_id\": ", "\"vmsd_name\": ", "\"version\": ", "\"fields\": ["];
    for json in [&QEMU_STREAM[qemu_walk.vmdesc.clone()], &ours[our_walk.vmdesc.clone()]] {
        let json = std::str::from_utf8(json).unwrap();
        assert!(json.starts_with(prefix), "{json}");
        let at: Vec<usize> = keys.iter().map(|k| json.find(k).unwrap()).collect();
        assert!(at.windows(2).all(|w| w[0] < w[1]), "{json}");
    }
}

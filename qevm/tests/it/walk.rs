//! An independent reading of a stream, from the reference's description: what a stream
//! holds, found without the crate's parser.

use std::ops::Range;

use qevm::PAGE_SIZE;

/// What a stream holds, found without the module's parser.
#[derive(Debug, Default)]
pub(crate) struct Walk {
    pub(crate) machine_type: String,
    /// (type byte, section id, name for START and FULL)
    pub(crate) sections: Vec<(u8, u32, Option<String>)>,
    pub(crate) zero_records: usize,
    pub(crate) page_records: usize,
    /// Records that name their block (no CONTINUE flag).
    pub(crate) named_records: usize,
    pub(crate) page_data: Vec<Range<usize>>,
    pub(crate) device_data: Vec<Range<usize>>,
    /// Offsets of every section id field, in headers and footers.
    pub(crate) id_fields: Vec<usize>,
    /// Offset just after the RAM section's END (and its footer).
    pub(crate) ram_end: usize,
    pub(crate) eof_at: usize,
    pub(crate) vmdesc: Range<usize>,
}

struct Cursor<'a> {
    s: &'a [u8],
    at: usize,
}

impl Cursor<'_> {
    fn take(&mut self, n: usize) -> &[u8] {
        let v = &self.s[self.at..self.at + n];
        self.at += n;
        v
    }
    fn u8(&mut self) -> u8 {
        self.take(1)[0]
    }
    fn be32(&mut self) -> u32 {
        u32::from_be_bytes(self.take(4).try_into().unwrap())
    }
    fn be64(&mut self) -> u64 {
        u64::from_be_bytes(self.take(8).try_into().unwrap())
    }
    fn idstr(&mut self) -> String {
        let n = self.u8() as usize;
        String::from_utf8(self.take(n).to_vec()).unwrap()
    }
}

/// Walks `stream`; `state_len(name, rest)` says how many bytes a device's state takes
/// (QEMU's vmstate has no length of its own).
pub(crate) fn walk(stream: &[u8], state_len: &dyn Fn(&str, &[u8]) -> usize) -> Walk {
    let mut c = Cursor { s: stream, at: 0 };
    let mut w = Walk::default();
    assert_eq!(c.take(4), b"QEVM");
    assert_eq!(c.be32(), 3);
    assert_eq!(c.u8(), 0x07);
    let n = c.be32() as usize;
    w.machine_type = String::from_utf8(c.take(n).to_vec()).unwrap();
    let footer = |c: &mut Cursor<'_>, w: &mut Walk, id: u32| {
        assert_eq!(c.u8(), 0x7e, "footer at {}", c.at - 1);
        w.id_fields.push(c.at);
        assert_eq!(c.be32(), id);
    };
    loop {
        let kind = c.u8();
        match kind {
            0x01 | 0x04 => {
                w.id_fields.push(c.at);
                let id = c.be32();
                let name = c.idstr();
                let (_instance, _version) = (c.be32(), c.be32());
                w.sections.push((kind, id, Some(name.clone())));
                if kind == 0x01 {
                    let v = c.be64();
                    assert_eq!(v & 0xfff, 0x04, "MEM_SIZE");
                    let mut left = v & !0xfff;
                    while left > 0 {
                        let _block = c.idstr();
                        left -= c.be64();
                    }
                    assert_eq!(c.be64(), 0x10, "EOS");
                } else {
                    let len = state_len(&name, &stream[c.at..]);
                    w.device_data.push(c.at..c.at + len);
                    c.take(len);
                }
                footer(&mut c, &mut w, id);
            }
            0x02 | 0x03 => {
                w.id_fields.push(c.at);
                let id = c.be32();
                w.sections.push((kind, id, None));
                loop {
                    let v = c.be64();
                    if v == 0x10 {
                        break;
                    }
                    if v & 0x20 == 0 {
                        w.named_records += 1;
                        c.idstr();
                    }
                    match v & 0xfff & !0x20 {
                        0x02 => {
                            assert_eq!(c.u8(), 0);
                            w.zero_records += 1;
                        }
                        0x08 => {
                            w.page_data.push(c.at..c.at + PAGE_SIZE);
                            c.take(PAGE_SIZE);
                            w.page_records += 1;
                        }
                        flags => panic!("flags {flags:#x} at {}", c.at - 8),
                    }
                }
                footer(&mut c, &mut w, id);
                if kind == 0x03 {
                    w.ram_end = c.at;
                }
            }
            0x00 => {
                w.eof_at = c.at - 1;
                break;
            }
            other => panic!("section type {other:#x} at {}", c.at - 1),
        }
    }
    assert_eq!(c.u8(), 0x06, "QEMU_VM_VMDESCRIPTION");
    let len = c.be32() as usize;
    w.vmdesc = c.at..c.at + len;
    c.take(len);
    assert_eq!(c.at, stream.len(), "nothing after the vmdesc");
    w
}

/// How this module frames a device's state: a be32 size, then the bytes.
pub(crate) fn sized(_name: &str, rest: &[u8]) -> usize {
    4 + u32::from_be_bytes(rest[..4].try_into().unwrap()) as usize
}

pub(crate) fn vmdesc_json(stream: &[u8], w: &Walk) -> serde_json::Value {
    serde_json::from_slice(&stream[w.vmdesc.clone()]).unwrap()
}

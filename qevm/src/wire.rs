//! The stream's vocabulary: the constants QEMU's `savevm.c` and `ram.c` name, and its fields
//! (big-endian numbers, idstrs, section footers) written into a buffer and read from the
//! input with the offset of every byte.

use std::io::{self, BufReader, Read};

use crate::{Error, Result, PAGE_SIZE};

pub(crate) const MAGIC: u32 = 0x5145_564d; // "QEVM"
pub(crate) const VERSION: u32 = 3;

pub(crate) const EOF: u8 = 0x00;
pub(crate) const SECTION_START: u8 = 0x01;
pub(crate) const SECTION_PART: u8 = 0x02;
pub(crate) const SECTION_END: u8 = 0x03;
pub(crate) const SECTION_FULL: u8 = 0x04;
pub(crate) const SUBSECTION: u8 = 0x05;
pub(crate) const VMDESCRIPTION: u8 = 0x06;
pub(crate) const CONFIGURATION: u8 = 0x07;
pub(crate) const COMMAND: u8 = 0x08;
pub(crate) const SECTION_FOOTER: u8 = 0x7e;

/// `RAM_SAVE_FLAG_*`: the low bits of a page record's offset.
pub(crate) const FLAG_FULL: u64 = 0x01;
pub(crate) const FLAG_ZERO: u64 = 0x02;
pub(crate) const FLAG_MEM_SIZE: u64 = 0x04;
pub(crate) const FLAG_PAGE: u64 = 0x08;
pub(crate) const FLAG_EOS: u64 = 0x10;
pub(crate) const FLAG_CONTINUE: u64 = 0x20;
pub(crate) const FLAG_XBZRLE: u64 = 0x40;
pub(crate) const FLAG_COMPRESS_PAGE: u64 = 0x100;
/// The bits below the page size hold the flags.
pub(crate) const FLAGS_MASK: u64 = PAGE_SIZE as u64 - 1;

/// The RAM section: QEMU's idstr, instance and version (`ram_mig_init`).
pub(crate) const RAM_SECTION: &str = "ram";
pub(crate) const RAM_VERSION: u32 = 4;

/// The longest machine type name a stream may carry (QEMU's are under 32 bytes).
pub const MAX_MACHINE_TYPE_LEN: usize = 256;

/// QEMU's name of a section type, for errors.
pub(crate) fn section_name(kind: u8) -> &'static str {
    match kind {
        EOF => "QEMU_VM_EOF",
        SECTION_START => "QEMU_VM_SECTION_START",
        SECTION_PART => "QEMU_VM_SECTION_PART",
        SECTION_END => "QEMU_VM_SECTION_END",
        SECTION_FULL => "QEMU_VM_SECTION_FULL",
        SUBSECTION => "QEMU_VM_SUBSECTION",
        VMDESCRIPTION => "QEMU_VM_VMDESCRIPTION",
        CONFIGURATION => "QEMU_VM_CONFIGURATION",
        COMMAND => "QEMU_VM_COMMAND",
        _ => "an unknown section type",
    }
}

// ---- writing ------------------------------------------------------------------------------

#[inline]
pub(crate) fn put_u8(buf: &mut Vec<u8>, v: u8) {
    buf.push(v);
}
#[inline]
pub(crate) fn put_be32(buf: &mut Vec<u8>, v: u32) {
    buf.extend_from_slice(&v.to_be_bytes());
}
#[inline]
pub(crate) fn put_be64(buf: &mut Vec<u8>, v: u64) {
    buf.extend_from_slice(&v.to_be_bytes());
}
/// QEMU's idstr: a length byte, then the bytes.
#[inline]
pub(crate) fn put_idstr(buf: &mut Vec<u8>, s: &str) {
    put_u8(buf, s.len() as u8); // checked to fit by the callers
    buf.extend_from_slice(s.as_bytes());
}
#[inline]
pub(crate) fn put_footer(buf: &mut Vec<u8>, section_id: u32) {
    put_u8(buf, SECTION_FOOTER);
    put_be32(buf, section_id);
}

// ---- reading ------------------------------------------------------------------------------

/// The input, with the offset of the next byte.
pub(crate) struct Stream<R> {
    input: BufReader<R>,
    /// Bytes of the stream read so far: the offset every error names.
    pub(crate) pos: u64,
}

impl<R: Read> Stream<R> {
    /// Reads `input` through a buffer of 64 KiB.
    pub(crate) fn new(input: R) -> Stream<R> {
        Stream { input: BufReader::with_capacity(64 * 1024, input), pos: 0 }
    }

    /// Fills `buf`, or says where the stream ended and inside what.
    pub(crate) fn exact(&mut self, buf: &mut [u8], reading: &'static str) -> Result<()> {
        let mut done = 0;
        while done < buf.len() {
            match self.input.read(&mut buf[done..]) {
                Ok(0) => return Err(Error::Truncated { offset: self.pos, reading }),
                Ok(n) => {
                    done += n;
                    self.pos += n as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(Error::io("read the migration stream", self.pos, e)),
            }
        }
        Ok(())
    }

    /// The next byte, or `None` at the end of the input.
    pub(crate) fn maybe_u8(&mut self) -> Result<Option<u8>> {
        let mut b = [0u8];
        loop {
            match self.input.read(&mut b) {
                Ok(0) => return Ok(None),
                Ok(_) => {
                    self.pos += 1;
                    return Ok(Some(b[0]));
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(Error::io("read the migration stream", self.pos, e)),
            }
        }
    }

    pub(crate) fn u8(&mut self, reading: &'static str) -> Result<u8> {
        let mut b = [0u8; 1];
        self.exact(&mut b, reading)?;
        Ok(b[0])
    }

    pub(crate) fn be32(&mut self, reading: &'static str) -> Result<u32> {
        let mut b = [0u8; 4];
        self.exact(&mut b, reading)?;
        Ok(u32::from_be_bytes(b))
    }

    pub(crate) fn be64(&mut self, reading: &'static str) -> Result<u64> {
        let mut b = [0u8; 8];
        self.exact(&mut b, reading)?;
        Ok(u64::from_be_bytes(b))
    }

    /// `len` bytes, read as they arrive: a length field that lies about a short stream
    /// allocates no more than the stream holds. Callers cap `len` first.
    pub(crate) fn bytes(&mut self, len: usize, reading: &'static str) -> Result<Vec<u8>> {
        let mut v = Vec::with_capacity(len.min(64 * 1024));
        let got = (&mut self.input)
            .take(len as u64)
            .read_to_end(&mut v)
            .map_err(|e| Error::io("read the migration stream", self.pos, e))?;
        self.pos += got as u64;
        if got < len {
            return Err(Error::Truncated { offset: self.pos, reading });
        }
        Ok(v)
    }

    /// An idstr: a length byte, then that many bytes of UTF-8.
    pub(crate) fn idstr(&mut self, reading: &'static str) -> Result<String> {
        let at = self.pos;
        let len = self.u8(reading)?;
        let bytes = self.bytes(len.into(), reading)?;
        String::from_utf8(bytes).map_err(|_| Error::format(at, format!("{reading} is not UTF-8")))
    }

    /// A section footer: 0x7e and the section's id.
    pub(crate) fn footer(&mut self, section_id: u32, name: &str) -> Result<()> {
        let at = self.pos;
        let marker = self.u8("a section footer")?;
        if marker != SECTION_FOOTER {
            return Err(Error::format(
                at,
                format!(
                    "expected the footer (0x7e) of section '{name}' (id {section_id}), found \
                     0x{marker:02x}"
                ),
            ));
        }
        let id = self.be32("a section footer")?;
        if id != section_id {
            return Err(Error::format(
                at,
                format!("footer of section '{name}' (id {section_id}) names section id {id}"),
            ));
        }
        Ok(())
    }
}

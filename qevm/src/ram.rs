//! The RAM section: guest RAM as the writer reads it ([`RamSource`]), the section's START
//! (the total and the one block), its PARTs of page records (ZERO for a page of zeros, PAGE
//! with the page's bytes), its END; and the same read back into the destination's RAM.

use std::io::{self, Read, Write};
use std::sync::atomic::Ordering;
use std::sync::{Mutex, PoisonError};

use crate::wire::{self, put_be32, put_be64, put_footer, put_idstr, put_u8, Stream};
use crate::writer::Counted;
use crate::{Error, Progress, Result};

/// The page size of the stream (`TARGET_PAGE_SIZE` on x86): RAM moves in pages of this size.
pub const PAGE_SIZE: usize = 4096;

/// The section id [`save`](crate::save) gives RAM; devices follow it (see the crate's notes
/// on ids).
pub const RAM_SECTION_ID: u32 = 1;

/// The name of the one RAM block a machine has here (QEMU's `-machine none` calls it so
/// too).
pub const RAM_BLOCK: &str = "ram";

/// Pages per `SECTION_PART`: the writer checks for cancellation between parts. QEMU sizes
/// its iterations by time; a fixed count keeps a part at most 4 MiB.
pub const PAGES_PER_PART: usize = 1024;

fn lock<T: ?Sized>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

// ---- what is saved ------------------------------------------------------------------------

/// Guest RAM as the writer reads it: a size, and copies out of it.
///
/// The writer copies one part (at most [`PAGES_PER_PART`] pages) at a time, so a RAM behind
/// a lock is locked for a copy, never while the stream waits on a slow reader. Nothing
/// tracks dirty pages: the caller stops the guest before saving, as `migrate` stops it.
pub trait RamSource {
    /// The RAM's size in bytes.
    fn size(&self) -> usize;
    /// Copies the RAM from `offset` into `buf`; bytes beyond the RAM's end read as zero.
    fn read_at(&self, offset: usize, buf: &mut [u8]);

    /// Lends `len` bytes of RAM from `offset` to `f` without a copy where the RAM allows
    /// (the default copies with [`read_at`](RamSource::read_at)).
    fn with_slice(
        &self,
        offset: usize,
        len: usize,
        f: &mut dyn FnMut(&[u8]) -> Result<()>,
    ) -> Result<()> {
        let mut buf = vec![0u8; len];
        self.read_at(offset, &mut buf);
        f(&buf)
    }
}

/// Lends a range of `ram`, zero-padded past its end only when it has to be.
fn lend(
    ram: &[u8],
    offset: usize,
    len: usize,
    f: &mut dyn FnMut(&[u8]) -> Result<()>,
) -> Result<()> {
    match ram.get(offset..offset.saturating_add(len)) {
        Some(slice) => f(slice),
        None => {
            let mut buf = vec![0u8; len];
            copy_from(ram, offset, &mut buf);
            f(&buf)
        }
    }
}

fn copy_from(ram: &[u8], offset: usize, buf: &mut [u8]) {
    let src = ram.get(offset..).unwrap_or_default();
    let n = src.len().min(buf.len());
    buf[..n].copy_from_slice(&src[..n]);
    buf[n..].fill(0);
}

impl RamSource for [u8] {
    fn size(&self) -> usize {
        self.len()
    }
    fn read_at(&self, offset: usize, buf: &mut [u8]) {
        copy_from(self, offset, buf)
    }
    fn with_slice(
        &self,
        offset: usize,
        len: usize,
        f: &mut dyn FnMut(&[u8]) -> Result<()>,
    ) -> Result<()> {
        lend(self, offset, len, f)
    }
}

impl RamSource for Vec<u8> {
    fn size(&self) -> usize {
        self.as_slice().size()
    }
    fn read_at(&self, offset: usize, buf: &mut [u8]) {
        self.as_slice().read_at(offset, buf)
    }
    fn with_slice(
        &self,
        offset: usize,
        len: usize,
        f: &mut dyn FnMut(&[u8]) -> Result<()>,
    ) -> Result<()> {
        self.as_slice().with_slice(offset, len, f)
    }
}

/// A running machine's RAM, locked for each copy.
impl RamSource for Mutex<Vec<u8>> {
    fn size(&self) -> usize {
        lock(self).len()
    }
    fn read_at(&self, offset: usize, buf: &mut [u8]) {
        copy_from(&lock(self), offset, buf)
    }
    /// Holds the lock while `f` runs (the stream is written from the RAM itself): the guest
    /// is stopped during a migration, so nobody waits for it.
    fn with_slice(
        &self,
        offset: usize,
        len: usize,
        f: &mut dyn FnMut(&[u8]) -> Result<()>,
    ) -> Result<()> {
        lend(&lock(self), offset, len, f)
    }
}

// ---- saving -------------------------------------------------------------------------------

/// Where a piece of a SECTION_PART comes from: the record headers, or a page of RAM.
enum Span {
    Header(std::ops::Range<usize>),
    Page(usize),
}

fn is_zero(page: &[u8]) -> bool {
    // An OR over each 256-byte run is a loop the compiler vectorises; stopping at the first
    // run with data spares pages with data (most of a busy guest's) a full scan.
    page.chunks(256).all(|run| run.iter().fold(0u8, |acc, &b| acc | b) == 0)
}

/// SECTION_START for RAM: the total, the blocks, EOS (`ram_save_setup`).
pub(crate) fn put_start(buf: &mut Vec<u8>, ram_id: u32, ram_size: usize) {
    put_u8(buf, wire::SECTION_START);
    put_be32(buf, ram_id);
    put_idstr(buf, wire::RAM_SECTION);
    put_be32(buf, 0);
    put_be32(buf, wire::RAM_VERSION);
    put_be64(buf, ram_size as u64 | wire::FLAG_MEM_SIZE);
    put_idstr(buf, RAM_BLOCK);
    put_be64(buf, ram_size as u64);
    put_be64(buf, wire::FLAG_EOS);
    put_footer(buf, ram_id);
}

/// SECTION_PARTs of page records for the `pages` pages of `ram`, written to `out`, with
/// `buf` for the record headers. Checks for cancellation before each part.
pub(crate) fn put_parts<W: Write>(
    out: &mut Counted<'_, W>,
    ram: &dyn RamSource,
    pages: usize,
    ram_id: u32,
    buf: &mut Vec<u8>,
    progress: &Progress,
) -> Result<()> {
    // Only the very first record names the block: QEMU's last_sent_block carries across
    // parts.
    let mut named = false;
    let (mut zero, mut normal) = (0u64, 0u64);
    // Record headers go into `buf`; pages with data are written from the RAM itself, by
    // vectored writes: `spans` says, in stream order, which bytes come from where.
    let mut spans: Vec<Span> = Vec::with_capacity(2 * PAGES_PER_PART + 2);
    for first in (0..pages).step_by(PAGES_PER_PART) {
        if progress.is_cancelled() {
            return Err(Error::Cancelled);
        }
        let count = PAGES_PER_PART.min(pages - first);
        ram.with_slice(first * PAGE_SIZE, count * PAGE_SIZE, &mut |part| {
            buf.clear();
            spans.clear();
            put_u8(buf, wire::SECTION_PART);
            put_be32(buf, ram_id);
            let mut header_from = 0;
            for (i, page) in part.chunks_exact(PAGE_SIZE).enumerate() {
                let offset = ((first + i) * PAGE_SIZE) as u64;
                let kind = if is_zero(page) { wire::FLAG_ZERO } else { wire::FLAG_PAGE };
                let continued = if named { wire::FLAG_CONTINUE } else { 0 };
                put_be64(buf, offset | kind | continued);
                if !named {
                    put_idstr(buf, RAM_BLOCK);
                    named = true;
                }
                if kind == wire::FLAG_ZERO {
                    put_u8(buf, 0);
                    zero += 1;
                } else {
                    spans.push(Span::Header(header_from..buf.len()));
                    spans.push(Span::Page(i));
                    header_from = buf.len();
                    normal += 1;
                }
            }
            put_be64(buf, wire::FLAG_EOS);
            put_footer(buf, ram_id);
            spans.push(Span::Header(header_from..buf.len()));
            let mut slices: Vec<io::IoSlice<'_>> = spans
                .iter()
                .map(|span| match span {
                    Span::Header(range) => io::IoSlice::new(&buf[range.clone()]),
                    Span::Page(i) => io::IoSlice::new(&part[i * PAGE_SIZE..(i + 1) * PAGE_SIZE]),
                })
                .filter(|s| !s.is_empty())
                .collect();
            out.put_vectored(&mut slices)
        })?;
        progress.duplicate.store(zero, Ordering::Relaxed);
        progress.normal.store(normal, Ordering::Relaxed);
        let left = (pages - first - count) * PAGE_SIZE;
        progress.remaining.store(left as u64, Ordering::Relaxed);
    }
    Ok(())
}

/// SECTION_END: every page went in the parts, so it only closes the section.
pub(crate) fn put_end(buf: &mut Vec<u8>, ram_id: u32) {
    put_u8(buf, wire::SECTION_END);
    put_be32(buf, ram_id);
    put_be64(buf, wire::FLAG_EOS);
    put_footer(buf, ram_id);
}

// ---- loading ------------------------------------------------------------------------------

/// Where the RAM section is, and which pages it has delivered.
pub(crate) struct LoadState {
    pub(crate) ram_id: Option<u32>,
    pub(crate) ended: bool,
    /// Whether a page record has named the block yet (QEMU's `last_recv_block` is set).
    block_named: bool,
    pub(crate) sent: Vec<bool>,
    pub(crate) zero_pages: u64,
    pub(crate) data_pages: u64,
}

impl LoadState {
    pub(crate) fn new(ram_size: usize) -> LoadState {
        LoadState {
            ram_id: None,
            ended: false,
            block_named: false,
            sent: vec![false; ram_size / PAGE_SIZE],
            zero_pages: 0,
            data_pages: 0,
        }
    }
}

/// A page record's header: where, what, and the raw flags.
fn split(v: u64) -> (u64, u64) {
    (v & !wire::FLAGS_MASK, v & wire::FLAGS_MASK)
}

fn check_flags(at: u64, flags: u64) -> Result<()> {
    let known = wire::FLAG_ZERO
        | wire::FLAG_MEM_SIZE
        | wire::FLAG_PAGE
        | wire::FLAG_EOS
        | wire::FLAG_CONTINUE;
    let unknown = flags & !known;
    if unknown == 0 {
        return Ok(());
    }
    let what = if unknown & wire::FLAG_COMPRESS_PAGE != 0 {
        "compressed pages (capability 'compress') are not supported".to_owned()
    } else if unknown & wire::FLAG_XBZRLE != 0 {
        "XBZRLE pages (capability 'xbzrle') are not supported".to_owned()
    } else if unknown & wire::FLAG_FULL != 0 {
        "RAM_SAVE_FLAG_FULL is obsolete".to_owned()
    } else {
        format!("unknown page flags 0x{unknown:x}")
    };
    Err(Error::format(at, format!("page record flags 0x{flags:x}: {what}")))
}

/// The RAM section's start: MEM_SIZE, the blocks, EOS.
pub(crate) fn load_setup<R: Read>(s: &mut Stream<R>, ram_size: usize) -> Result<()> {
    let at = s.pos;
    let (total, flags) = split(s.be64("the RAM size")?);
    check_flags(at, flags)?;
    if flags != wire::FLAG_MEM_SIZE {
        return Err(Error::format(
            at,
            format!("the RAM section starts with flags 0x{flags:x}, not MEM_SIZE (0x4)"),
        ));
    }
    if total != ram_size as u64 {
        return Err(Error::RamSize { stream: total, destination: ram_size as u64 });
    }
    let mut left = total;
    let mut blocks: Vec<(String, u64)> = Vec::new();
    while left > 0 {
        let at = s.pos;
        let name = s.idstr("a RAM block name")?;
        let len = s.be64("a RAM block size")?;
        if len > left {
            return Err(Error::format(
                at,
                format!(
                    "RAM block '{name}' of {len} bytes exceeds the {left} bytes left of the total"
                ),
            ));
        }
        left -= len;
        blocks.push((name, len));
    }
    // The total matched the destination, so one block named "ram" is all of it.
    if blocks.len() != 1 || blocks[0].0 != RAM_BLOCK {
        let listed: Vec<String> =
            blocks.iter().map(|(name, len)| format!("'{name}' ({len} bytes)")).collect();
        return Err(Error::format(
            at + 8,
            format!(
                "the stream's RAM blocks are {}; this machine has one block '{RAM_BLOCK}' of \
                 {ram_size} bytes",
                listed.join(", ")
            ),
        ));
    }
    let at = s.pos;
    let (offset, flags) = split(s.be64("the end of the RAM blocks")?);
    if flags != wire::FLAG_EOS || offset != 0 {
        return Err(Error::format(
            at,
            format!("expected EOS (0x10) after the RAM blocks, found 0x{:x}", offset | flags),
        ));
    }
    Ok(())
}

/// Page records until EOS, into `ram`.
pub(crate) fn load_pages<R: Read>(
    s: &mut Stream<R>,
    ram: &mut [u8],
    state: &mut LoadState,
) -> Result<()> {
    loop {
        let at = s.pos;
        let (offset, flags) = split(s.be64("a page record")?);
        check_flags(at, flags)?;
        if flags == wire::FLAG_EOS {
            if offset != 0 {
                return Err(Error::format(at, format!("EOS record with offset 0x{offset:x}")));
            }
            return Ok(());
        }
        let kind = flags & !wire::FLAG_CONTINUE;
        if kind != wire::FLAG_ZERO && kind != wire::FLAG_PAGE {
            return Err(Error::format(
                at,
                format!("page record flags 0x{flags:x}: not one ZERO (0x2) or PAGE (0x8) record"),
            ));
        }
        if flags & wire::FLAG_CONTINUE != 0 {
            if !state.block_named {
                return Err(Error::format(
                    at,
                    "page record continues a block, but no record named one yet",
                ));
            }
        } else {
            let name_at = s.pos;
            let name = s.idstr("a page record's block name")?;
            if name != RAM_BLOCK {
                return Err(Error::format(
                    name_at,
                    format!("page record for unknown RAM block '{name}'"),
                ));
            }
            state.block_named = true;
        }
        let page = usize::try_from(offset).ok().filter(|&o| o < ram.len()).ok_or_else(|| {
            Error::format(
                at,
                format!(
                    "page offset 0x{offset:x} is beyond the {} bytes of block '{RAM_BLOCK}'",
                    ram.len()
                ),
            )
        })?;
        let dest = &mut ram[page..page + PAGE_SIZE];
        if kind == wire::FLAG_ZERO {
            let fill_at = s.pos;
            let fill = s.u8("a ZERO page record")?;
            if fill != 0 {
                return Err(Error::format(
                    fill_at,
                    format!("ZERO page record at 0x{offset:x} fills with 0x{fill:02x}, not 0"),
                ));
            }
            dest.fill(0);
            state.zero_pages += 1;
        } else {
            s.exact(dest, "a page's data")?;
            state.data_pages += 1;
        }
        state.sent[page / PAGE_SIZE] = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load;
    use crate::testing::{load_err, saved, small};

    /// A hand-made stream, up to and including the RAM START section's MEM_SIZE record.
    fn start_of_stream(total: u64) -> Vec<u8> {
        let mut b = Vec::new();
        put_be32(&mut b, wire::MAGIC);
        put_be32(&mut b, 3);
        put_u8(&mut b, wire::CONFIGURATION);
        put_be32(&mut b, 2);
        b.extend_from_slice(b"pc");
        put_u8(&mut b, wire::SECTION_START);
        put_be32(&mut b, 0);
        put_idstr(&mut b, "ram");
        put_be32(&mut b, 0);
        put_be32(&mut b, 4);
        put_be64(&mut b, total | wire::FLAG_MEM_SIZE);
        b
    }

    /// A hand-made stream with one block of `pages` pages, then `records` in one PART.
    fn stream_with_records(pages: u64, records: &[u8]) -> Vec<u8> {
        let mut b = start_of_stream(pages * PAGE_SIZE as u64);
        put_idstr(&mut b, "ram");
        put_be64(&mut b, pages * PAGE_SIZE as u64);
        put_be64(&mut b, wire::FLAG_EOS);
        put_footer(&mut b, 0);
        put_u8(&mut b, wire::SECTION_PART);
        put_be32(&mut b, 0);
        b.extend_from_slice(records);
        put_be64(&mut b, wire::FLAG_EOS);
        put_footer(&mut b, 0);
        put_u8(&mut b, wire::SECTION_END);
        put_be32(&mut b, 0);
        put_be64(&mut b, wire::FLAG_EOS);
        put_footer(&mut b, 0);
        put_u8(&mut b, wire::EOF);
        b
    }

    fn zero_record(offset: u64, first: bool) -> Vec<u8> {
        let mut r = Vec::new();
        if first {
            put_be64(&mut r, offset | wire::FLAG_ZERO);
            put_idstr(&mut r, "ram");
        } else {
            put_be64(&mut r, offset | wire::FLAG_ZERO | wire::FLAG_CONTINUE);
        }
        put_u8(&mut r, 0);
        r
    }

    #[test]
    fn ram_of_another_size_is_refused_naming_both_sizes() {
        let (ram, devices) = small();
        let stream = saved(&ram, &devices);
        let e = load_err(&stream, 16 * PAGE_SIZE);
        assert_eq!(e, "migration stream has 32768 bytes of RAM, this machine has 65536");
    }

    #[test]
    fn several_ram_blocks_are_refused_with_their_names() {
        let mut b = start_of_stream(3 * PAGE_SIZE as u64);
        put_idstr(&mut b, "pc.ram");
        put_be64(&mut b, 2 * PAGE_SIZE as u64);
        put_idstr(&mut b, "pc.bios");
        put_be64(&mut b, PAGE_SIZE as u64);
        put_be64(&mut b, wire::FLAG_EOS);
        let e = load_err(&b, 3 * PAGE_SIZE);
        assert_eq!(
            e,
            "migration stream, byte 40: the stream's RAM blocks are 'pc.ram' (8192 bytes), \
             'pc.bios' (4096 bytes); this machine has one block 'ram' of 12288 bytes"
        );
    }

    #[test]
    fn page_records_are_checked() {
        let first = zero_record(0, true);
        let second = zero_record(PAGE_SIZE as u64, false);
        let part_at = 70; // where the PART's first record starts in these streams
        let ok = stream_with_records(2, &[first.clone(), second.clone()].concat());
        let mut ram = vec![1u8; 2 * PAGE_SIZE];
        load(&ok[..], "pc", &mut ram).unwrap();
        assert!(ram.iter().all(|&b| b == 0));

        let cases: Vec<(Vec<u8>, String)> = vec![
            (
                [zero_record(0, false), second.clone()].concat(),
                format!(
                    "byte {part_at}: page record continues a block, but no record named one yet"
                ),
            ),
            (
                [first.clone(), zero_record(2 * PAGE_SIZE as u64, false)].concat(),
                format!(
                    "byte {}: page offset 0x2000 is beyond the 8192 bytes of block 'ram'",
                    part_at + first.len()
                ),
            ),
            (
                first.clone(),
                "the RAM section ends but page 0x1000 of block 'ram' was never sent".into(),
            ),
            (
                {
                    let mut r = first.clone();
                    r[7] |= 0x01; // misaligned offset: the low bits are flags
                    [r, second.clone()].concat()
                },
                "flags 0x3: RAM_SAVE_FLAG_FULL is obsolete".into(),
            ),
            (
                {
                    let mut r = second.clone();
                    r[6] |= 0x01; // 0x100
                    [first.clone(), r].concat()
                },
                "compressed pages (capability 'compress') are not supported".into(),
            ),
            (
                {
                    let mut r = first.clone();
                    *r.last_mut().unwrap() = 7;
                    [r, second.clone()].concat()
                },
                "ZERO page record at 0x0 fills with 0x07, not 0".into(),
            ),
            (
                {
                    let mut r = first.clone();
                    r[7] = (wire::FLAG_ZERO | wire::FLAG_PAGE) as u8;
                    [r, second.clone()].concat()
                },
                "not one ZERO (0x2) or PAGE (0x8) record".into(),
            ),
            (
                {
                    let mut r = first.clone();
                    r[9..12].copy_from_slice(b"rom");
                    [r, second.clone()].concat()
                },
                format!("byte {}: page record for unknown RAM block 'rom'", part_at + 8),
            ),
        ];
        for (records, expected) in cases {
            let e = load_err(&stream_with_records(2, &records), 2 * PAGE_SIZE);
            assert!(e.contains(&expected), "{e}\nexpected: {expected}");
        }
    }
}

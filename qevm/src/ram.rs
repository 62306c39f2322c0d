//! The RAM section: guest RAM as the writer reads it ([`RamSource`]), the section's START
//! (the total and the one block), its PARTs of page records (ZERO for a page of zeros, PAGE
//! with the page's bytes), its END; and the same read back into the destination's RAM.

use std::io::{self, Read, Write};
use std::sync::atomic::Ordering;
use std::sync::{Mutex, PoisonError};

use crate::blocking::IOV_MAX;
use crate::untouched::Untouched;
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

    /// Whether a page of the memory [`with_slice`](RamSource::with_slice) lends that this
    /// process never touched reads as zero, so that the writer may learn from
    /// `/proc/self/pagemap` which pages are zero instead of reading them (and faulting each
    /// in). True for RAM from the allocator (`Vec<u8>`); false, the default, for memory
    /// whose missing pages may come from elsewhere: a userfaultfd handler's (a snapshot
    /// restored lazily). Files and shared memory are recognised and read in any case.
    fn untouched_reads_zero(&self) -> bool {
        false
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

/// The allocator's memory: private and anonymous, never filled by a userfaultfd handler.
impl RamSource for Vec<u8> {
    fn size(&self) -> usize {
        self.as_slice().size()
    }
    fn untouched_reads_zero(&self) -> bool {
        true
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
    fn untouched_reads_zero(&self) -> bool {
        true
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

/// Where a piece of the stream comes from: record headers in the writer's buffer, or a page
/// of the RAM lent for the part.
enum Span {
    Header(std::ops::Range<usize>),
    Page(usize),
}

/// Whether `bytes` (a page, or the part of one that may hold data) are all zeros. A page
/// with data nearly always shows it in its first 64 bytes, so the scan stops there, having
/// read one cache line of (cold) RAM; the kernel's copy reads the rest. A zero page is read
/// in words, which the compiler vectorises.
#[inline]
fn is_zero(bytes: &[u8]) -> bool {
    let word = |w: &[u8]| {
        let mut b = [0u8; 8];
        b.copy_from_slice(w);
        u64::from_ne_bytes(b)
    };
    let mut lines = bytes.chunks_exact(64);
    let tail = lines.remainder();
    lines.all(|line| line.chunks_exact(8).fold(0, |acc, w| acc | word(w)) == 0)
        && tail.iter().all(|&b| b == 0)
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

/// How many header bytes may wait in the writer's buffer for the next page with data (a
/// run of zero pages makes 9 bytes a page) before they are written on their own.
const HELD_BACK: usize = 64 * 1024;

/// A capacity for the writer's buffer that the RAM section never outgrows: what may be
/// held back, and one part's records.
pub(crate) const HEADERS_CAPACITY: usize = HELD_BACK + PAGES_PER_PART * 16 + 64;

/// SECTION_PARTs of page records for the `pages` pages of `ram`, written to `out`. Checks
/// for cancellation before each part.
///
/// Pages with data go out from the RAM itself, by vectored writes of up to [`IOV_MAX`]
/// slices, a record header and its page alternating; the headers are gathered in `buf`.
/// Header bytes after a write's last page (zero records, a part's EOS and footer) wait in
/// `buf` and lead the next write, so that a part of 1,024 pages with data is two full
/// writes and not a third of 13 bytes. On return, `buf` holds what the last part left
/// unwritten, for the caller to append the rest of the stream to.
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
    // Which bytes come from where, in stream order, for the next vectored write.
    let mut spans: Vec<Span> = Vec::with_capacity(IOV_MAX);
    let mut untouched = ram.untouched_reads_zero().then(Untouched::new);
    buf.clear();
    for first in (0..pages).step_by(PAGES_PER_PART) {
        if progress.is_cancelled() {
            return Err(Error::Cancelled);
        }
        let count = PAGES_PER_PART.min(pages - first);
        ram.with_slice(first * PAGE_SIZE, count * PAGE_SIZE, &mut |part| {
            let with_data = untouched.as_mut().and_then(|u| u.may_hold_data(part, PAGE_SIZE));
            put_u8(buf, wire::SECTION_PART);
            put_be32(buf, ram_id);
            // `buf[..header_from]` is in `spans` already.
            let mut header_from = 0;
            for (i, page) in part.chunks_exact(PAGE_SIZE).enumerate() {
                let offset = ((first + i) * PAGE_SIZE) as u64;
                let zero_page = match with_data {
                    Some(ranges) => is_zero(&page[ranges[i].clone()]),
                    None => is_zero(page),
                };
                let kind = if zero_page { wire::FLAG_ZERO } else { wire::FLAG_PAGE };
                let continued = if named { wire::FLAG_CONTINUE } else { 0 };
                put_be64(buf, offset | kind | continued);
                if !named {
                    put_idstr(buf, RAM_BLOCK);
                    named = true;
                }
                if zero_page {
                    put_u8(buf, 0);
                    zero += 1;
                    continue;
                }
                spans.push(Span::Header(header_from..buf.len()));
                spans.push(Span::Page(i));
                header_from = buf.len();
                normal += 1;
                if spans.len() + 2 > IOV_MAX {
                    write_spans(out, &spans, buf, part)?;
                    spans.clear();
                    buf.clear();
                    header_from = 0;
                }
            }
            put_be64(buf, wire::FLAG_EOS);
            put_footer(buf, ram_id);
            if !spans.is_empty() {
                write_spans(out, &spans, buf, part)?;
                spans.clear();
                buf.drain(..header_from);
            } else if buf.len() >= HELD_BACK {
                out.put(buf)?;
                buf.clear();
            }
            Ok(())
        })?;
        progress.duplicate.store(zero, Ordering::Relaxed);
        progress.normal.store(normal, Ordering::Relaxed);
        let left = (pages - first - count) * PAGE_SIZE;
        progress.remaining.store(left as u64, Ordering::Relaxed);
    }
    Ok(())
}

/// One vectored write of `spans`: header bytes from `headers`, pages from `part`.
fn write_spans<W: Write>(
    out: &mut Counted<'_, W>,
    spans: &[Span],
    headers: &[u8],
    part: &[u8],
) -> Result<()> {
    let mut slices = [io::IoSlice::new(&[]); IOV_MAX];
    for (slice, span) in slices.iter_mut().zip(spans) {
        *slice = match span {
            Span::Header(range) => io::IoSlice::new(&headers[range.clone()]),
            Span::Page(i) => io::IoSlice::new(&part[i * PAGE_SIZE..][..PAGE_SIZE]),
        };
    }
    out.put_vectored(&mut slices[..spans.len()])
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

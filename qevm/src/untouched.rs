//! Pages this process never touched: in private anonymous memory a page that was never
//! written (or was given back, `MADV_DONTNEED`) has no page-table entry and reads as zero,
//! and `/proc/self/pagemap` says which pages those are. The writer sends them as ZERO
//! records without reading them, as CRIU skips them in its dumps: reading one would fault
//! in the kernel's zero page, about 1 us a page on a virtual machine, several times the cost
//! of checking a page that is mapped. A machine with RAM it never used (`-m 1G` with 512 MiB
//! loaded) saves its empty half without a fault.
//!
//! The writer asks only for RAM that says an untouched page reads as zero
//! ([`RamSource::untouched_reads_zero`](crate::RamSource::untouched_reads_zero): a `Vec`'s,
//! from the allocator), not for memory a userfaultfd handler may fill (a lazily restored
//! snapshot's). And it checks that the memory is a private anonymous mapping in
//! `/proc/self/maps`: a page of a file or of shared memory that is not mapped here may hold
//! data. Where pagemap cannot be read, every page is read, as before.

use std::fs::File;
use std::ops::Range;
use std::os::unix::fs::FileExt;

/// pagemap's bits for a page that is mapped (63) or swapped out, or any other non-empty
/// entry the kernel keeps (62: migration entries, markers): either may hold data.
const MAPPED_OR_SWAPPED: u64 = 0b11 << 62;

/// After a part whose every page was touched, how many parts at most go unasked: asking
/// about a page that is mapped costs the kernel a cache miss (on the page's `struct page`),
/// about 100 ns, 7% of the save of RAM that is all written; a run of untouched pages right
/// after such parts is read, faults and all, for at most this many parts.
const MAX_UNASKED: u32 = 4;

/// What the writer asks about the memory it sends from.
pub(crate) struct Untouched {
    pagemap: Option<File>,
    /// The host's page size: the unit of pagemap's entries.
    host_page: usize,
    /// The private anonymous mappings, where an empty entry means zero, read from
    /// `/proc/self/maps` once, when first asked: the memory a save reads from stays where it
    /// is while the save runs (it is borrowed or locked).
    anonymous: Option<Vec<Range<usize>>>,
    entries: Vec<u8>,
    with_data: Vec<Range<usize>>,
    /// Parts to go unasked before the next question, and how many went unasked last time
    /// (doubling, up to [`MAX_UNASKED`], while every page asked about is touched).
    unasked: u32,
    backoff: u32,
}

impl Untouched {
    /// Opens this process's pagemap; if it cannot be read, every page will be read instead.
    pub(crate) fn new() -> Untouched {
        let host_page = nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)
            .ok()
            .flatten()
            .and_then(|n| usize::try_from(n).ok())
            .filter(|&n| n.is_power_of_two())
            .unwrap_or(4096);
        Untouched {
            pagemap: File::open("/proc/self/pagemap").ok(),
            host_page,
            anonymous: None,
            entries: Vec::new(),
            with_data: Vec::new(),
            unasked: 0,
            backoff: 0,
        }
    }

    /// For each `page_size` bytes of `memory`, the bytes that may hold data: those on host
    /// pages the process has touched. An empty range for a page no touched host page backs,
    /// the whole page for one that is all touched; `None` when nothing is known about
    /// `memory`, so that all of it must be read.
    ///
    /// A heap block need not start on a host page (glibc's large blocks start 16 bytes in),
    /// so a page of `memory` may lie on two host pages, one touched and one not: then only
    /// the touched one's bytes are read, and the other faults nothing in.
    ///
    /// Called once per part, in order; after parts with every page touched it answers `None`
    /// for a few parts without asking the kernel (see [`MAX_UNASKED`]).
    pub(crate) fn may_hold_data(
        &mut self,
        memory: &[u8],
        page_size: usize,
    ) -> Option<&[Range<usize>]> {
        let pagemap = self.pagemap.as_ref()?;
        if memory.is_empty() || memory.len() % page_size != 0 {
            return None;
        }
        if self.unasked > 0 {
            self.unasked -= 1;
            return None;
        }
        let start = memory.as_ptr() as usize;
        let end = start + memory.len();
        let anonymous = self.anonymous.get_or_insert_with(anonymous_ranges);
        if !anonymous.iter().any(|r| r.start <= start && end <= r.end) {
            return None;
        }
        let host = self.host_page;
        let first = start / host;
        let last = (end - 1) / host;
        self.entries.resize((last - first + 1) * 8, 0);
        pagemap.read_exact_at(&mut self.entries, first as u64 * 8).ok()?;
        let touched = |host_page: usize| {
            let at = (host_page - first) * 8;
            let mut entry = [0u8; 8];
            entry.copy_from_slice(&self.entries[at..at + 8]);
            u64::from_ne_bytes(entry) & MAPPED_OR_SWAPPED != 0
        };
        self.with_data.clear();
        for at in (start..end).step_by(page_size) {
            // A page lies on at most two host pages (host pages are at least as large); the
            // bytes on touched ones are one run.
            let mut read = page_size..0;
            for h in at / host..=(at + page_size - 1) / host {
                if touched(h) {
                    read.start = read.start.min(at.max(h * host) - at);
                    read.end = read.end.max((at + page_size).min((h + 1) * host) - at);
                }
            }
            self.with_data.push(if read.is_empty() { 0..0 } else { read });
        }
        if self.with_data.iter().all(|r| r.len() == page_size) {
            self.backoff = (self.backoff * 2).clamp(1, MAX_UNASKED);
            self.unasked = self.backoff;
        } else {
            self.backoff = 0;
        }
        Some(&self.with_data)
    }
}

/// This process's private anonymous mappings. (Not `/proc/self/smaps`, which would say
/// which have userfaultfd registered but counts every page of every mapping to say it: 20 ms
/// for a machine with 512 MiB written.)
fn anonymous_ranges() -> Vec<Range<usize>> {
    std::fs::read_to_string("/proc/self/maps").map(|s| anonymous_in(&s)).unwrap_or_default()
}

/// In a `/proc/PID/maps` listing, the private anonymous mappings: the heap,
/// `mmap(MAP_PRIVATE | MAP_ANONYMOUS)`.
fn anonymous_in(maps: &str) -> Vec<Range<usize>> {
    maps.lines().filter_map(mapping).flatten().collect()
}

/// A mapping's line (`start-end perms offset dev inode [path]`): `None` if the line is not
/// one, `Some(None)` for a mapping that is not private and anonymous.
fn mapping(line: &str) -> Option<Option<Range<usize>>> {
    let mut fields = line.split_whitespace();
    let (start, end) = fields.next()?.split_once('-')?;
    let start = usize::from_str_radix(start, 16).ok()?;
    let end = usize::from_str_radix(end, 16).ok()?;
    let perms = fields.next()?;
    let (_offset, _device, inode) = (fields.next()?, fields.next()?, fields.next()?);
    let path = fields.next().unwrap_or("");
    // The heap and named anonymous memory show "[heap]", "[anon:...]"; shared anonymous
    // memory shows a path ("/dev/zero (deleted)") and 's'.
    let anonymous =
        inode == "0" && (path.is_empty() || path == "[heap]" || path.starts_with("[anon:"));
    let private = perms.starts_with('r') && perms.ends_with('p');
    Some((anonymous && private).then_some(start..end))
}

#[cfg(test)]
mod tests {
    use super::*;

    const PAGE: usize = 4096;

    /// A size the allocator always takes fresh from mmap, untouched (glibc's threshold for
    /// that grows with what is freed, up to 32 MiB).
    const FRESH: usize = 40 << 20;

    #[test]
    fn memory_never_written_is_known_zero_and_written_memory_is_not() {
        let mut memory = vec![0u8; FRESH];
        // Written: mapped, even where the byte written is a zero.
        memory[3 * PAGE + 100] = 1;
        memory[10 * PAGE] = 0;
        // Read (through an opaque reference, so that the load happens): the kernel's zero
        // page is mapped there.
        std::hint::black_box(std::hint::black_box(&memory)[20 * PAGE]);
        let mut untouched = Untouched::new();
        let Some(with_data) = untouched.may_hold_data(&memory, PAGE) else {
            panic!("pagemap says nothing about a fresh heap allocation");
        };
        assert_eq!(with_data.len(), FRESH / PAGE);
        // glibc's large blocks start 16 bytes into a host page, after its header: each page
        // lies on two host pages, and the bytes to read are those on the touched ones. (Were
        // the block aligned, each page would be one host page.)
        let offset = memory.as_ptr() as usize % PAGE;
        let (written, spilled) = match offset {
            0 => (0..PAGE, 0..0),
            _ => (0..PAGE - offset, PAGE - offset..PAGE),
        };
        for i in [3, 10, 20] {
            assert_eq!(with_data[i], written, "page {i} was touched");
            assert_eq!(with_data[i - 1], spilled, "page {} ends on its host page", i - 1);
        }
        // No other page has anything to read, but the first if the allocator's header shares
        // its host page.
        let near = |i: usize| [0, 2, 3, 9, 10, 19, 20].contains(&i);
        let wrong: Vec<usize> =
            (0..FRESH / PAGE).filter(|&i| !near(i) && !with_data[i].is_empty()).collect();
        assert!(wrong.is_empty(), "untouched pages to read: {wrong:?}");
        // Not a whole number of pages: nothing is said.
        assert!(untouched.may_hold_data(&memory[..PAGE + 1], PAGE).is_none());
    }

    #[test]
    fn after_parts_all_written_the_next_parts_go_unasked_for_a_while() {
        let memory = vec![1u8; 64 * PAGE];
        let part = &memory[PAGE..33 * PAGE]; // every page of it written
        let mut untouched = Untouched::new();
        let asked: Vec<bool> =
            (0..16).map(|_| untouched.may_hold_data(part, PAGE).is_some()).collect();
        // Asked, 1 unasked, asked, 2 unasked, asked, then 4 unasked between questions.
        let expected = [1, 0, 1, 0, 0, 1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1].map(|a| a == 1);
        assert_eq!(asked, expected);
        // A part with an untouched page is asked about, and so is the next.
        let fresh = vec![0u8; FRESH];
        let mut untouched = Untouched::new();
        assert!(untouched.may_hold_data(&fresh[PAGE..33 * PAGE], PAGE).is_some());
        assert!(untouched.may_hold_data(&fresh[PAGE..33 * PAGE], PAGE).is_some());
    }

    #[test]
    fn only_private_anonymous_memory_is_judged() {
        let maps = "\
55d0c0000000-55d0c0021000 rw-p 00000000 00:00 0                          [heap]
7f0000000000-7f0040000000 rw-p 00000000 00:00 0 
7f1000000000-7f1000010000 rw-p 00000000 fe:01 1234                       /var/lib/ram.img
7f2000000000-7f2000010000 rw-s 00000000 00:01 99                         /dev/zero (deleted)
7f3000000000-7f3000010000 ---p 00000000 00:00 0 
7f4000000000-7f4000010000 rw-p 00000000 00:00 0                          [anon:guest ram]
7f5000000000-7f5000001000 r--p 00000000 00:00 0                          [vvar]
7fff00000000-7fff00021000 rw-p 00000000 00:00 0                          [stack]
";
        assert_eq!(
            anonymous_in(maps),
            [
                0x55d0_c000_0000..0x55d0_c002_1000,
                0x7f00_0000_0000..0x7f00_4000_0000,
                0x7f40_0000_0000..0x7f40_0001_0000,
            ]
        );
        // This process's own listing has its heap.
        let heap = vec![0u8; 1 << 20];
        let at = heap.as_ptr() as usize;
        assert!(anonymous_ranges().iter().any(|r| r.contains(&at)));
    }
}

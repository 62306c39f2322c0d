//! One output stream, many readers: the recent output of a chardev kept once ([`Ring`]) and
//! a cursor per reader into it ([`Reader`]). This one structure is both the *history* that a
//! new viewer gets first and every viewer's *queue*: a viewer that is behind is simply a
//! cursor further back in the ring, so that no byte is copied per viewer, and one that falls
//! behind by more than the ring holds loses the oldest bytes, is told how many with
//! [`gap_marker`], and never holds up the writer or the other readers.
//!
//! Pure bookkeeping, no I/O: backends (`socket` with `clients=N`, `hub`, the pty's
//! `history=`) send from [`Ring::slices`] with one vectored write and move the cursor by what
//! the write took.

use std::collections::VecDeque;

/// The largest `history=` (and viewer `queue=`) a chardev may ask for: 64 MiB. The ring is
/// allocated at the first byte of output, so a large setting costs nothing until then.
pub const HISTORY_MAX: u64 = 64 * 1024 * 1024;

/// The most clients one `socket` server serves at once (`clients=`).
pub const CLIENTS_MAX: u32 = 64;

/// How far one viewer may fall behind by default before it loses the oldest output
/// (`queue=`), when there is more than one.
pub const QUEUE_DEFAULT: u64 = 1024 * 1024;

/// The queue of a chardev with `overflow=drop`: how much output may wait for a backend
/// that cannot take it before the oldest is dropped.
pub const OVERFLOW_QUEUE: usize = 1024 * 1024;

/// The recent output of one chardev: stream bytes `[total - len, total)`, at most `cap`.
///
/// Positions are counted in bytes from the first output byte ever, as `u64`, so that a
/// cursor never wraps.
#[derive(Debug, Default)]
pub struct Ring {
    buf: VecDeque<u8>,
    cap: usize,
    total: u64,
}

impl Ring {
    /// A ring that keeps the last `cap` bytes (none are allocated before the first append).
    pub fn new(cap: usize) -> Ring {
        Ring { buf: VecDeque::new(), cap, total: 0 }
    }

    /// How many bytes it keeps at most.
    pub fn capacity(&self) -> usize {
        self.cap
    }

    /// Bytes of output ever appended: the position after the newest byte.
    pub fn total(&self) -> u64 {
        self.total
    }

    /// The position of the oldest byte still kept.
    pub fn start(&self) -> u64 {
        self.total - self.buf.len() as u64
    }

    /// Bytes kept now.
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    /// Whether nothing is kept.
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// Appends output, dropping the oldest bytes beyond the capacity.
    pub fn append(&mut self, data: &[u8]) {
        self.total += data.len() as u64;
        if self.cap == 0 {
            return;
        }
        if self.buf.capacity() < self.cap {
            self.buf.reserve_exact(self.cap - self.buf.len());
        }
        let data = &data[data.len().saturating_sub(self.cap)..];
        let over = (self.buf.len() + data.len()).saturating_sub(self.cap);
        self.buf.drain(..over);
        self.buf.extend(data);
    }

    /// The bytes from position `from` to the newest, as at most two slices (for one
    /// vectored write). `None` if `from` is older than what is kept, or newer than the
    /// stream.
    pub fn slices(&self, from: u64) -> Option<(&[u8], &[u8])> {
        if from < self.start() || from > self.total {
            return None;
        }
        let skip = (from - self.start()) as usize;
        let (a, b) = self.buf.as_slices();
        Some(if skip >= a.len() { (&b[skip - a.len()..], &[][..]) } else { (&a[skip..], b) })
    }

    /// A copy of the last `max` bytes kept (all of them for `None`), without draining
    /// anything: reading the history leaves it for the next reader (unlike QEMU's
    /// `ringbuf-read`).
    pub fn snapshot(&self, max: Option<usize>) -> Vec<u8> {
        let take = max.map_or(self.buf.len(), |m| m.min(self.buf.len()));
        self.buf.range(self.buf.len() - take..).copied().collect()
    }
}

/// One reader's place in a [`Ring`], and what it lost.
#[derive(Debug, Clone, Default)]
pub struct Reader {
    pos: u64,
    dropped_pending: u64,
    dropped_total: u64,
}

impl Reader {
    /// A reader that starts with the last `history` bytes the ring keeps (fewer if it keeps
    /// fewer), then everything after: no gap and no duplicate at the seam, as long as the
    /// caller holds the lock under which output is appended.
    pub fn new(ring: &Ring, history: usize) -> Reader {
        let from = ring.total().saturating_sub(history as u64).max(ring.start());
        Reader { pos: from, ..Reader::default() }
    }

    /// The stream position of the next byte this reader gets.
    pub fn pos(&self) -> u64 {
        self.pos
    }

    /// Bytes of output this reader has yet to get.
    pub fn behind(&self, ring: &Ring) -> u64 {
        ring.total().saturating_sub(self.pos)
    }

    /// Bytes this reader lost in all (fell behind by more than it may).
    pub fn dropped(&self) -> u64 {
        self.dropped_total
    }

    /// Drops the oldest output this reader has not had beyond `limit` bytes (and whatever
    /// the ring no longer keeps), counting it as a gap. Returns the bytes dropped now.
    pub fn enforce(&mut self, ring: &Ring, limit: u64) -> u64 {
        let keep_from = ring.total().saturating_sub(limit).max(ring.start());
        if self.pos >= keep_from {
            return 0;
        }
        let lost = keep_from - self.pos;
        self.pos = keep_from;
        self.dropped_pending += lost;
        self.dropped_total += lost;
        lost
    }

    /// The bytes lost since the last call, once, for the gap marker due before the next
    /// data; `None` if there was no gap.
    pub fn take_gap(&mut self) -> Option<u64> {
        (self.dropped_pending > 0).then(|| std::mem::take(&mut self.dropped_pending))
    }

    /// The bytes lost and not yet told to the reader (what [`Reader::take_gap`] would
    /// return), without taking them: a marker that cannot be sent now is sent later with
    /// the count grown, as one marker.
    pub fn gap(&self) -> u64 {
        self.dropped_pending
    }

    /// The reader got `n` more bytes.
    pub fn advance(&mut self, n: usize) {
        self.pos += n as u64;
    }

    /// The bytes due to this reader now, as at most two slices (see [`Ring::slices`]).
    pub fn due<'r>(&self, ring: &'r Ring) -> (&'r [u8], &'r [u8]) {
        ring.slices(self.pos).unwrap_or((&[], &[]))
    }
}

/// What a reader sees where output was dropped because it fell behind: a line of its own,
/// plain ASCII, saying how many bytes are missing. Documented in the README; tests and
/// tools may look for `[chardev: ` and ` bytes of output dropped`.
pub fn gap_marker(dropped: u64) -> String {
    format!("\r\n[chardev: {dropped} bytes of output dropped: this viewer fell behind]\r\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn due(reader: &Reader, ring: &Ring) -> Vec<u8> {
        let (a, b) = reader.due(ring);
        [a, b].concat()
    }

    #[test]
    fn a_ring_keeps_the_newest_bytes_and_counts_all() {
        let mut ring = Ring::new(4);
        assert!(ring.is_empty() && ring.buf.capacity() == 0, "nothing allocated before output");
        ring.append(b"abc");
        ring.append(b"def");
        assert_eq!((ring.total(), ring.start(), ring.len()), (6, 2, 4));
        assert_eq!(ring.snapshot(None), b"cdef");
        assert_eq!(ring.snapshot(Some(2)), b"ef");
        assert_eq!(ring.slices(1), None, "dropped already");
        assert_eq!(ring.slices(7), None, "not written yet");
        let (a, b) = ring.slices(3).unwrap();
        assert_eq!([a, b].concat(), b"def");
        ring.append(b"0123456789");
        assert_eq!(ring.snapshot(None), b"6789");
        assert_eq!(ring.total(), 16);
        assert!(ring.buf.capacity() <= 8, "bounded by its capacity");
    }

    #[test]
    fn a_new_reader_gets_the_history_then_live_output_without_gap_or_duplicate() {
        let mut ring = Ring::new(8);
        ring.append(b"0123456789");
        let mut r = Reader::new(&ring, 5);
        assert_eq!(due(&r, &ring), b"56789");
        r.advance(3);
        ring.append(b"ab");
        assert_eq!(due(&r, &ring), b"89ab");
        let r2 = Reader::new(&ring, 100);
        assert_eq!(due(&r2, &ring), b"456789ab", "at most what the ring keeps");
        assert_eq!(due(&Reader::new(&ring, 0), &ring), b"", "no history: live only");
    }

    #[test]
    fn a_reader_that_falls_behind_loses_the_oldest_and_is_told_once() {
        let mut ring = Ring::new(8);
        let mut r = Reader::new(&ring, 0);
        ring.append(b"0123456789");
        assert_eq!(r.enforce(&ring, 4), 6);
        assert_eq!(due(&r, &ring), b"6789");
        assert_eq!(r.take_gap(), Some(6));
        assert_eq!(r.take_gap(), None, "told once");
        ring.append(b"ab");
        assert_eq!(r.enforce(&ring, 4), 2);
        assert_eq!(r.enforce(&ring, 4), 0);
        assert_eq!(r.dropped(), 8);
        assert_eq!(r.take_gap(), Some(2));
        assert_eq!(
            gap_marker(2),
            "\r\n[chardev: 2 bytes of output dropped: this viewer fell behind]\r\n"
        );
    }

    /// Any sequence of appends, reads and limits: every byte a reader gets is the stream's
    /// byte at its position, positions only go forward, and got + dropped + still due is
    /// the whole stream.
    #[test]
    fn reads_and_drops_account_for_the_whole_stream() {
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = move |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        for round in 0..500 {
            let cap = 1 + next(64) as usize;
            let limit = next(cap as u64 + 1);
            let mut ring = Ring::new(cap);
            let mut reader = Reader::new(&ring, next(8) as usize);
            let mut stream: Vec<u8> = Vec::new();
            let (mut got, mut told) = (0u64, 0u64);
            let mut last = None;
            for _ in 0..50 {
                let n = next(40) as usize;
                let data: Vec<u8> = (0..n).map(|_| next(256) as u8).collect();
                stream.extend_from_slice(&data);
                ring.append(&data);
                reader.enforce(&ring, limit);
                told += reader.take_gap().unwrap_or(0);
                let pos = reader.pos();
                assert!(last.is_none_or(|l| pos >= l), "round {round}: never backwards");
                let due = due(&reader, &ring);
                assert_eq!(due, stream[pos as usize..], "round {round}: the stream's bytes");
                let take = (next(50) as usize).min(due.len());
                got += take as u64;
                reader.advance(take);
                last = Some(reader.pos());
            }
            assert_eq!(told, reader.dropped(), "round {round}: every drop is told");
            assert_eq!(
                got + reader.dropped() + reader.behind(&ring),
                stream.len() as u64,
                "round {round}: got + dropped + due = the stream"
            );
        }
    }
}

//! Output kept while no terminal reads it: a bounded queue that drops its oldest bytes first,
//! and counts what it dropped.

use std::collections::VecDeque;

/// At most `limit` bytes of the newest output, oldest first.
#[derive(Debug)]
pub(crate) struct Backlog {
    bytes: VecDeque<u8>,
    limit: usize,
    /// Dropped since the last [`take_dropped`](Self::take_dropped).
    dropped: u64,
    /// Dropped since creation.
    dropped_total: u64,
}

impl Backlog {
    /// An empty backlog of at most `limit` bytes (0: everything is dropped at once).
    pub(crate) fn new(limit: usize) -> Backlog {
        Backlog { bytes: VecDeque::new(), limit, dropped: 0, dropped_total: 0 }
    }

    pub(crate) fn len(&self) -> usize {
        self.bytes.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// How many more bytes fit before the oldest are dropped.
    pub(crate) fn room(&self) -> usize {
        self.limit.saturating_sub(self.bytes.len())
    }

    pub(crate) fn limit(&self) -> usize {
        self.limit
    }

    /// Appends `data`, dropping the oldest bytes beyond the limit; returns how many it dropped.
    pub(crate) fn push(&mut self, data: &[u8]) -> usize {
        let kept = &data[data.len().saturating_sub(self.limit)..];
        let over = (self.bytes.len() + kept.len()).saturating_sub(self.limit);
        self.bytes.drain(..over);
        self.bytes.extend(kept);
        self.count(over + data.len() - kept.len())
    }

    /// Puts `older` (bytes that were written before everything queued) in front, keeping the
    /// newest of them that fit (all of them if `all`, past the limit); returns how many it
    /// dropped.
    pub(crate) fn push_front(&mut self, older: &[u8], all: bool) -> usize {
        let room = if all { older.len() } else { self.room() };
        let kept = &older[older.len().saturating_sub(room)..];
        for &b in kept.iter().rev() {
            self.bytes.push_front(b);
        }
        self.count(older.len() - kept.len())
    }

    fn count(&mut self, dropped: usize) -> usize {
        self.dropped += dropped as u64;
        self.dropped_total += dropped as u64;
        dropped
    }

    /// The queued bytes, oldest first, in up to two slices.
    pub(crate) fn as_slices(&self) -> (&[u8], &[u8]) {
        self.bytes.as_slices()
    }

    /// Forgets the oldest `n` bytes (they were written out); frees the memory once empty.
    pub(crate) fn consume(&mut self, n: usize) {
        self.bytes.drain(..n.min(self.bytes.len()));
        if self.bytes.is_empty() {
            // An idle pty holds no buffer.
            self.bytes = VecDeque::new();
        }
    }

    /// Forgets everything queued, without counting it as dropped (a pty with `history=`
    /// puts the history in its place).
    pub(crate) fn clear(&mut self) {
        self.bytes = VecDeque::new();
    }

    /// Bytes dropped since the last call.
    pub(crate) fn take_dropped(&mut self) -> u64 {
        std::mem::take(&mut self.dropped)
    }

    /// Bytes dropped since the backlog was made.
    pub(crate) fn dropped_total(&self) -> u64 {
        self.dropped_total
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn contents(b: &Backlog) -> Vec<u8> {
        let (a, c) = b.as_slices();
        [a, c].concat()
    }

    #[test]
    fn keeps_the_newest_bytes_and_counts_the_rest() {
        let mut b = Backlog::new(8);
        assert_eq!(b.push(b"abcde"), 0);
        assert_eq!(b.push(b"fghij"), 2);
        assert_eq!(contents(&b), b"cdefghij");
        assert_eq!(b.push(b"0123456789AB"), 12);
        assert_eq!(contents(&b), b"456789AB");
        assert_eq!((b.take_dropped(), b.take_dropped(), b.dropped_total()), (14, 0, 14));
    }

    #[test]
    fn older_bytes_go_in_front_as_far_as_they_fit() {
        let mut b = Backlog::new(8);
        b.push(b"new");
        assert_eq!(b.push_front(b"0123older", false), 4);
        assert_eq!(contents(&b), b"oldernew");
        let mut b = Backlog::new(8);
        b.push(b"xy");
        b.push_front(b"ab", false);
        assert_eq!(contents(&b), b"abxy");
        // All of them, past the limit: nothing dropped, and no room left.
        let mut b = Backlog::new(8);
        b.push(b"new");
        assert_eq!(b.push_front(b"0123older", true), 0);
        assert_eq!(contents(&b), b"0123oldernew");
        assert_eq!(b.room(), 0);
    }

    #[test]
    fn consume_forgets_the_oldest_and_frees_an_empty_queue() {
        let mut b = Backlog::new(8);
        b.push(b"abcdef");
        b.consume(4);
        assert_eq!(contents(&b), b"ef");
        b.consume(10);
        assert!(b.is_empty());
        assert_eq!(b.bytes.capacity(), 0);
    }

    #[test]
    fn a_zero_limit_drops_everything() {
        let mut b = Backlog::new(0);
        assert_eq!(b.push(b"abc"), 3);
        assert_eq!(b.push_front(b"de", false), 2);
        assert!(b.is_empty());
        assert_eq!(b.room(), 0);
    }
}

//! A bounded queue of output for one reader, with gap markers: what `overflow=drop` keeps in
//! front of any backend (in the chardev's cell), and what a socket keeps while nobody is
//! connected (`backlog=`). Output waits in a [`Ring`] read by one [`Reader`] and goes out as
//! the backend takes it; beyond the bound the oldest is dropped, counted, and a
//! [`gap_marker`] goes out before the next data, so that whoever reads sees that and how
//! much was lost.

use std::io;

use crate::fanout::{gap_marker, Reader, Ring};

/// Output that a backend has not taken yet, at most a fixed number of bytes.
#[derive(Debug)]
pub struct Backlog {
    ring: Ring,
    reader: Reader,
    /// The rest of a gap marker the backend took only part of.
    marker: Vec<u8>,
    /// A writability watch is asked for: writers only queue until it fires (for the
    /// owner's use).
    pub waiting: bool,
}

/// What [`Backlog::flush`] came to.
#[derive(Debug, PartialEq, Eq)]
pub enum Flushed {
    /// Everything queued went out.
    Empty,
    /// The backend is full: ask to be told when it is writable.
    Full,
    /// The backend failed for good (no peer): what was queued is dropped, this many bytes.
    Failed(u64),
}

impl Backlog {
    /// A backlog of at most `capacity` bytes (allocated at the first byte queued).
    pub fn new(capacity: usize) -> Backlog {
        let ring = Ring::new(capacity);
        let reader = Reader::new(&ring, 0);
        Backlog { ring, reader, marker: Vec::new(), waiting: false }
    }

    /// Nothing waits: a write may go straight to the backend.
    pub fn is_empty(&self) -> bool {
        self.marker.is_empty() && self.reader.behind(&self.ring) == 0 && self.reader.gap() == 0
    }

    /// Output bytes waiting for the backend.
    pub fn queued(&self) -> u64 {
        self.reader.behind(&self.ring)
    }

    /// Queues output the backend did not take; returns the bytes dropped to make room.
    pub fn push(&mut self, data: &[u8]) -> u64 {
        self.ring.append(data);
        self.reader.enforce(&self.ring, self.ring.capacity() as u64)
    }

    /// Writes what is queued through `write` (the backend's non-blocking write), the gap
    /// marker first where output was lost. `sent` is told each piece of output that went
    /// out (not the markers).
    pub fn flush(
        &mut self,
        mut write: impl FnMut(&[u8]) -> io::Result<usize>,
        mut sent: impl FnMut(&[u8]),
    ) -> Flushed {
        loop {
            // A gap becomes a marker only once the backend takes some of it: until then later
            // drops add to the same count, so one outage shows as one marker.
            if self.marker.is_empty() && self.reader.gap() > 0 {
                let marker = gap_marker(self.reader.gap()).into_bytes();
                match write(&marker) {
                    Ok(0) => return Flushed::Full,
                    Ok(n) => {
                        let n = n.min(marker.len());
                        let _ = self.reader.take_gap();
                        self.marker = marker[n..].to_vec();
                        continue;
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Flushed::Full,
                    Err(_) => return self.fail(),
                }
            }
            let from_marker = !self.marker.is_empty();
            let piece = if from_marker { &self.marker[..] } else { self.reader.due(&self.ring).0 };
            if piece.is_empty() {
                return Flushed::Empty;
            }
            match write(piece) {
                Ok(0) => return Flushed::Full,
                Ok(n) => {
                    let n = n.min(piece.len());
                    if from_marker {
                        self.marker.drain(..n);
                    } else {
                        sent(&piece[..n]);
                        self.reader.advance(n);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Flushed::Full,
                Err(_) => return self.fail(),
            }
        }
    }

    /// The backend failed for good: what waits is dropped.
    fn fail(&mut self) -> Flushed {
        let lost = self.reader.behind(&self.ring);
        self.reader.advance(lost as usize);
        self.marker.clear();
        let _ = self.reader.take_gap();
        Flushed::Failed(lost)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fanout::OVERFLOW_QUEUE;

    #[test]
    fn queued_output_goes_out_in_order_with_one_marker_for_what_was_lost() {
        let mut q = Backlog::new(OVERFLOW_QUEUE);
        assert!(q.is_empty());
        let mut out = Vec::new();
        let mut wire = Vec::new();
        q.push(b"first ");
        assert_eq!(q.flush(|b| Ok(b.len().min(3)), |b| out.extend_from_slice(b)), Flushed::Empty,);
        assert_eq!(out, b"first ");
        // Far more than the queue holds, then a full backend, then room again.
        let big = vec![b'x'; OVERFLOW_QUEUE + 100];
        let dropped = q.push(&big);
        assert_eq!(dropped, 100);
        assert_eq!(q.flush(|_| Err(io::ErrorKind::WouldBlock.into()), |_| {}), Flushed::Full);
        assert_eq!(q.push(b"!"), 1, "still full: the oldest goes");
        out.clear();
        let flushed = q.flush(
            |b| {
                wire.extend_from_slice(b);
                Ok(b.len())
            },
            |b| out.extend_from_slice(b),
        );
        assert_eq!(flushed, Flushed::Empty);
        let marker = gap_marker(101);
        assert!(wire.starts_with(marker.as_bytes()), "one marker first, counting both drops");
        assert_eq!(wire.len(), marker.len() + OVERFLOW_QUEUE);
        assert_eq!(out.len(), OVERFLOW_QUEUE, "output told apart from the marker");
        assert!(out.ends_with(b"x!"));
        assert!(q.is_empty());
        // A backend gone for good: what waits is dropped and said.
        q.push(b"lost");
        assert_eq!(
            q.flush(|_| Err(io::ErrorKind::NotConnected.into()), |_| {}),
            Flushed::Failed(4)
        );
        assert!(q.is_empty());
    }
}

//! The byte stream every transfer moves: the byte at stream offset `i` is `i % 251`. Since
//! 251 is prime and no read or write size is a multiple of it, a lost, repeated or reordered
//! chunk shows up at the next byte checked.

use std::io::{self, Write};

/// The pattern's period.
pub const PERIOD: usize = 251;

/// The largest piece [`Pattern::at`] hands out, and the size of every write: 64 KiB, the
/// chardev loop's read buffer.
pub const CHUNK: usize = 64 * 1024;

/// The pattern, precomputed so that any `CHUNK` of it is one slice.
#[derive(Debug, Clone)]
pub struct Pattern {
    bytes: Vec<u8>,
}

impl Default for Pattern {
    fn default() -> Pattern {
        Pattern { bytes: (0..CHUNK + PERIOD).map(|i| (i % PERIOD) as u8).collect() }
    }
}

impl Pattern {
    /// The `len` bytes (at most [`CHUNK`]) that start at stream offset `offset`.
    pub fn at(&self, offset: u64, len: usize) -> &[u8] {
        let start = (offset % PERIOD as u64) as usize;
        &self.bytes[start..start + len.min(CHUNK)]
    }

    /// Writes stream bytes `from..from + len` to `w`, in [`CHUNK`]-sized `write_all`s.
    pub fn write(&self, w: &mut impl Write, from: u64, len: u64) -> io::Result<()> {
        let mut offset = from;
        while offset < from + len {
            let n = (from + len - offset).min(CHUNK as u64) as usize;
            w.write_all(self.at(offset, n))?;
            offset += n as u64;
        }
        Ok(())
    }
}

/// How much of what arrives is compared with the pattern.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verify {
    /// Every byte (a `memcmp` per piece): the smoke test's choice.
    All,
    /// The first and last byte of every piece that arrives: catches lost, repeated and
    /// reordered chunks at almost no cost, so that the consumer's own work does not blur
    /// the ratio of full runs.
    Edges,
}

/// The receiving end's check: counts what arrives and compares it with the pattern.
#[derive(Debug, Clone)]
pub struct Checker {
    pattern: Pattern,
    verify: Verify,
    offset: u64,
    error: Option<String>,
}

impl Checker {
    /// A checker expecting the stream from offset 0.
    pub fn new(verify: Verify) -> Checker {
        Checker { pattern: Pattern::default(), verify, offset: 0, error: None }
    }

    /// Takes the next piece of the stream.
    pub fn consume(&mut self, data: &[u8]) {
        if self.error.is_none() {
            if let Some(at) = self.mismatch(data) {
                self.error = Some(format!(
                    "byte {} is {:#04x}, expected {:#04x}",
                    self.offset + at as u64,
                    data[at],
                    self.pattern.at(self.offset + at as u64, 1)[0]
                ));
            }
        }
        self.offset += data.len() as u64;
    }

    /// The offset within `data` of the first wrong byte checked, if any.
    fn mismatch(&self, data: &[u8]) -> Option<usize> {
        let expect = |at: usize| self.pattern.at(self.offset + at as u64, 1)[0];
        match self.verify {
            Verify::Edges => {
                let last = data.len().checked_sub(1)?;
                [0, last].into_iter().find(|&at| data[at] != expect(at))
            }
            Verify::All => {
                let mut at = 0;
                for piece in data.chunks(CHUNK) {
                    if piece != self.pattern.at(self.offset + at as u64, piece.len()) {
                        return (at..at + piece.len()).find(|&i| data[i] != expect(i));
                    }
                    at += piece.len();
                }
                None
            }
        }
    }

    /// Bytes taken so far.
    pub fn received(&self) -> u64 {
        self.offset
    }

    /// `Ok` when exactly `expected` bytes arrived and every byte checked was right.
    pub fn finish(&self, expected: u64) -> crate::Result<()> {
        if let Some(e) = &self.error {
            return Err(format!("corrupt stream: {e}"));
        }
        if self.offset != expected {
            return Err(format!("{} bytes arrived, {expected} were sent", self.offset));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stream_written_in_chunks_checks_clean_in_any_other_split() {
        let p = Pattern::default();
        let mut out = Vec::new();
        p.write(&mut out, 0, 200_000).unwrap();
        for verify in [Verify::All, Verify::Edges] {
            let mut c = Checker::new(verify);
            for piece in out.chunks(4093) {
                c.consume(piece);
            }
            assert_eq!(c.finish(200_000), Ok(()));
        }
    }

    #[test]
    fn a_lost_chunk_is_caught() {
        let p = Pattern::default();
        let mut out = Vec::new();
        p.write(&mut out, 0, 100_000).unwrap();
        out.drain(5000..9000);
        let mut c = Checker::new(Verify::Edges);
        for piece in out.chunks(4096) {
            c.consume(piece);
        }
        assert!(c.finish(96_000).unwrap_err().contains("corrupt"));
    }
}

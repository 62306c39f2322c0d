//! P7, migration: the machine's RAM saved as QEMU's stream v3 through qevm's blocking
//! writer into a socketpair with a fast reader, against the same number of bytes written
//! with plain blocking `write_all`s into the same kind of socketpair: the same RAM, so both
//! sides read it from memory, then 8 bytes a page from a small buffer for the stream's
//! record headers.
//!
//! Until session 4 the baseline wrote one cache-hot 64 KiB buffer again and again
//! ([`raw_hot`]), while the stream reads 512 MiB of RAM that no cache holds: the kernel's
//! copy out of cold RAM cost the stream about a quarter of its rate, which no writer can
//! avoid. [`raw_hot`] stays for that comparison.

use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::time::Instant;

use qevm::{BlockingWriter, Progress, Snapshot};

use crate::pattern::{Pattern, CHUNK};
use crate::proc_status::{cpu_time, Who};
use crate::{Context, Result, Transfer};

/// Guest RAM of `bytes` (rounded down to pages), every page with data: the worst case.
fn ram(bytes: u64) -> Vec<u8> {
    let len = (bytes as usize / qevm::PAGE_SIZE).max(1) * qevm::PAGE_SIZE;
    let mut ram = vec![0u8; len];
    for (i, b) in ram.iter_mut().enumerate() {
        *b = (i % 251) as u8 | 1;
    }
    ram
}

/// Reads a socket to its end; keeps the bytes only when `keep`.
fn reader(
    mut rx: UnixStream,
    keep: bool,
) -> std::thread::JoinHandle<std::io::Result<(u64, Vec<u8>, Instant)>> {
    std::thread::spawn(move || {
        let mut buf = vec![0u8; CHUNK];
        let (mut total, mut kept) = (0u64, Vec::new());
        loop {
            let n = rx.read(&mut buf)?;
            if n == 0 {
                return Ok((total, kept, Instant::now()));
            }
            total += n as u64;
            if keep {
                kept.extend_from_slice(&buf[..n]);
            }
        }
    })
}

/// Saves `bytes` of RAM into a socketpair; with `check`, the stream is loaded back and the
/// RAM compared.
pub fn chardev(bytes: u64, check: bool) -> Result<Transfer> {
    let ram = ram(bytes);
    let (tx, rx) = UnixStream::pair().context("socketpair")?;
    let read = reader(rx, check);
    let cpu = cpu_time(Who::Process)?;
    let start = Instant::now();
    let mut writer = BlockingWriter::new(OwnedFd::from(tx)).context("the migration writer")?;
    let snapshot = Snapshot { machine_type: "pc", ram: &ram, devices: &[] };
    let progress = Progress::new();
    qevm::save(&mut writer, &snapshot, &progress).map_err(|e| format!("save: {e}"))?;
    writer.flush().context("flush the stream")?;
    drop(writer);
    let (total, stream, at) =
        read.join().map_err(|_| "the reader panicked")?.context("read the stream")?;
    let cpu = cpu_time(Who::Process)? - cpu;
    if check {
        let mut back = vec![0u8; ram.len()];
        qevm::load(stream.as_slice(), "pc", &mut back).map_err(|e| format!("load: {e}"))?;
        if back != ram {
            return Err("the loaded RAM differs from the saved RAM".into());
        }
    }
    Ok(Transfer { units: total, elapsed: at - start, cpu })
}

/// The bytes of a stream of `pages` pages with data, but for its small sections: each PAGE
/// record is 8 bytes of header and the page.
fn stream_len(pages: usize) -> u64 {
    pages as u64 * (qevm::PAGE_SIZE as u64 + 8)
}

/// The baseline: the same RAM by blocking `write_all`s of 64 KiB, then the bytes of the
/// stream's record headers (8 a page) from a small buffer.
pub fn raw(bytes: u64) -> Result<Transfer> {
    let ram = ram(bytes);
    let total = stream_len(ram.len() / qevm::PAGE_SIZE);
    let headers = vec![0u8; CHUNK];
    plain_writes(total, |tx| {
        for piece in ram.chunks(CHUNK) {
            tx.write_all(piece)?;
        }
        let mut left = total - ram.len() as u64;
        while left > 0 {
            let n = left.min(CHUNK as u64) as usize;
            tx.write_all(&headers[..n])?;
            left -= n as u64;
        }
        Ok(())
    })
}

/// The baseline until session 4: the same number of bytes, from one 64 KiB buffer that stays
/// in the cache.
pub fn raw_hot(bytes: u64) -> Result<Transfer> {
    let pages = (bytes as usize / qevm::PAGE_SIZE).max(1);
    let total = stream_len(pages);
    plain_writes(total, |tx| Pattern::default().write(tx, 0, total))
}

/// `total` bytes written by `write` into a socketpair whose reader drains it.
fn plain_writes(
    total: u64,
    write: impl FnOnce(&mut UnixStream) -> std::io::Result<()>,
) -> Result<Transfer> {
    let (mut tx, rx) = UnixStream::pair().context("socketpair")?;
    let read = reader(rx, false);
    let cpu = cpu_time(Who::Process)?;
    let start = Instant::now();
    write(&mut tx).context("write into the socketpair")?;
    drop(tx);
    let (got, _, at) =
        read.join().map_err(|_| "the reader panicked")?.context("read the socketpair")?;
    let cpu = cpu_time(Who::Process)? - cpu;
    if got != total {
        return Err(format!("{got} of {total} bytes arrived"));
    }
    Ok(Transfer { units: got, elapsed: at - start, cpu })
}

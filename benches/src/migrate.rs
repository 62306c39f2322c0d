//! P7, migration: the machine's RAM saved as QEMU's stream v3 through qevm's blocking
//! writer into a socketpair with a fast reader, against the same number of bytes written
//! with plain blocking `write_all`s into the same kind of socketpair.

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

/// The baseline: the same number of bytes the stream has, by blocking `write_all`s of 64 KiB.
pub fn raw(bytes: u64) -> Result<Transfer> {
    let pages = (bytes as usize / qevm::PAGE_SIZE).max(1) as u64;
    // A PAGE record is 8 bytes of header plus the page; the rest of the stream is small.
    let total = pages * (qevm::PAGE_SIZE as u64 + 8);
    let (mut tx, rx) = UnixStream::pair().context("socketpair")?;
    let read = reader(rx, false);
    let cpu = cpu_time(Who::Process)?;
    let start = Instant::now();
    Pattern::default().write(&mut tx, 0, total).context("write into the socketpair")?;
    drop(tx);
    let (got, _, at) =
        read.join().map_err(|_| "the reader panicked")?.context("read the socketpair")?;
    let cpu = cpu_time(Who::Process)? - cpu;
    if got != total {
        return Err(format!("{got} of {total} bytes arrived"));
    }
    Ok(Transfer { units: got, elapsed: at - start, cpu })
}

//! P1, ingest: a peer writes a stream into a unix socket chardev whose frontend consumes it,
//! against the same stream through a blocking read loop on a socketpair.
//!
//! Both sides use two busy threads (the writer, and the loop or the read loop), 64 KiB
//! writes and 64 KiB reads (the loop's buffer), and the same consumer check.

use std::io::Read;
use std::path::Path;
use std::sync::atomic::AtomicU64;
use std::sync::mpsc::channel;
use std::sync::Arc;
use std::time::Instant;

use crate::fixture::{timed_feed, wait_opened, Chardevs, Consumer};
use crate::pattern::{Checker, Pattern, Verify, CHUNK};
use crate::peer::{self, STARTUP};
use crate::proc_status::{cpu_time, Who};
use crate::{transfer_deadline, Context, Result, Transfer};

/// `bytes` from a peer into a unix socket chardev's frontend (a socket under `dir`).
pub fn chardev(dir: &Path, bytes: u64, verify: Verify) -> Result<Transfer> {
    let chardevs = Chardevs::new()?;
    let path = dir.join("p1.sock");
    let handle = chardevs.unix_server("p1", &path, "")?;
    let (tx, notes) = channel();
    handle.set_frontend(Consumer::new(verify, Arc::new(AtomicU64::new(bytes)), tx));
    let mut peer = peer::connect(&path)?;
    wait_opened(&notes, STARTUP)?;
    timed_feed(chardevs, &notes, transfer_deadline(bytes), move || {
        Pattern::default().write(&mut peer, 0, bytes)
    })
}

/// The baseline: `bytes` through a socketpair into a blocking read loop.
pub fn raw(bytes: u64, verify: Verify) -> Result<Transfer> {
    let (mut tx, mut rx) = std::os::unix::net::UnixStream::pair().context("socketpair")?;
    rx.set_read_timeout(Some(transfer_deadline(bytes))).context("set a read timeout")?;
    let mut checker = Checker::new(verify);
    let mut buf = vec![0u8; CHUNK];

    let cpu = cpu_time(Who::Process)?;
    let start = Instant::now();
    let writer = std::thread::spawn(move || Pattern::default().write(&mut tx, 0, bytes));
    while checker.received() < bytes {
        match rx.read(&mut buf).context("read the socketpair")? {
            0 => break,
            n => checker.consume(&buf[..n]),
        }
    }
    let at = Instant::now();
    writer.join().map_err(|_| "the writer panicked")?.context("write into the socketpair")?;
    let cpu = cpu_time(Who::Process)? - cpu;
    checker.finish(bytes)?;
    Ok(Transfer { units: bytes, elapsed: at - start, cpu })
}

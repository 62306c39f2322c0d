//! P15: `overflow=drop` against a stalled peer. A frontend thread writes 4 KiB pieces
//! through a unix socket chardev with `overflow=drop`; its own CPU time per byte
//! (`RUSAGE_THREAD`) is compared between a peer that reads everything (unstalled) and a peer
//! that never reads (stalled: the output waits in the 1 MiB queue, then is dropped and
//! counted). Issue 18 asks that the stalled case cost the writer at most 1.2 times the
//! unstalled one per byte.

use std::io::Read;
use std::path::Path;
use std::time::Duration;

use crate::fixture::Chardevs;
use crate::peer;
use crate::proc_status::{cpu_time, Who};
use crate::{Context, Result};

/// The writer's piece: a UART-sized burst of guest output.
const PIECE: usize = 4096;

/// How far the writer may be ahead of a reading peer (below the 1 MiB queue).
const AHEAD: u64 = 512 * 1024;

/// One run of the writer.
#[derive(Debug, Clone, Copy)]
pub struct DropRun {
    /// The writer thread's CPU time for all its writes.
    pub cpu: Duration,
    /// Bytes written.
    pub bytes: u64,
    /// Bytes the chardev dropped (stalled runs).
    pub dropped: u64,
}

/// Writes `bytes` through an `overflow=drop` server; the peer reads all (`stalled` false)
/// or nothing.
pub fn run(dir: &Path, bytes: u64, stalled: bool) -> Result<DropRun> {
    let chardevs = Chardevs::new()?;
    let path = dir.join(if stalled { "p15s.sock" } else { "p15u.sock" });
    let _ = std::fs::remove_file(&path);
    let handle = chardevs.unix_server("p15", &path, ",overflow=drop")?;
    let mut peer = peer::connect(&path)?;
    peer.set_read_timeout(Some(Duration::from_secs(60))).context("set a read timeout")?;
    // Wait until the chardev has its client (the first write must not be refused).
    let end = std::time::Instant::now() + Duration::from_secs(10);
    while chardevs.registry.counters("p15").context("counters")?.connections == 0 {
        if std::time::Instant::now() > end {
            return Err("the chardev never saw its client".into());
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    // The stalled peer is kept open (and unread) until the end. The other reads all and
    // tells the writer how far it got, so that the writer stays within 512 KiB of it (and
    // nothing is dropped: the unstalled case is the one where every write goes out). The
    // writer waits for it blocked, which costs no CPU time.
    let (acks, acked) = std::sync::mpsc::channel::<u64>();
    let (reader, _stalled_peer) = if stalled {
        drop(acks);
        (None, Some(peer))
    } else {
        let reader = std::thread::spawn(move || {
            let mut buf = vec![0u8; 1 << 16];
            let mut got = 0u64;
            loop {
                match peer.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        got += n as u64;
                        let _ = acks.send(got);
                    }
                }
            }
            got
        });
        (Some(reader), None)
    };
    let piece = vec![0x5au8; PIECE];
    let writer = std::thread::spawn(move || -> Result<Duration> {
        let start = cpu_time(Who::Thread)?;
        let (mut written, mut read) = (0u64, 0u64);
        while written < bytes {
            let n = (bytes - written).min(PIECE as u64) as usize;
            handle.write_all(&piece[..n]).context("write")?;
            written += n as u64;
            if !stalled {
                while written - read > AHEAD {
                    read = acked.recv().map_err(|_| "the reader stopped".to_string())?;
                }
            }
        }
        Ok(cpu_time(Who::Thread)? - start)
    });
    let cpu = writer.join().map_err(|_| "the writer panicked".to_string())??;
    let counters = chardevs.registry.counters("p15").context("counters")?;
    if let Some(reader) = reader {
        // What is still queued goes out, then the chardev goes and the reader sees the end.
        let end = std::time::Instant::now() + Duration::from_secs(30);
        while chardevs.registry.counters("p15").context("counters")?.queued_overflow > 0 {
            if std::time::Instant::now() > end {
                return Err("the queue never drained to the reading peer".into());
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        let sent = chardevs.registry.counters("p15").context("counters")?.bytes_out;
        chardevs.registry.remove("p15").context("remove the chardev")?;
        let got = reader.join().map_err(|_| "the reader panicked".to_string())?;
        if got != sent || counters.dropped_overflow != 0 {
            return Err(format!(
                "the reading peer got {got} bytes, the chardev sent {sent}, dropped {}",
                counters.dropped_overflow
            ));
        }
    } else if counters.dropped_overflow == 0 {
        return Err("a stalled peer and nothing dropped".into());
    }
    Ok(DropRun { cpu, bytes, dropped: counters.dropped_overflow })
}

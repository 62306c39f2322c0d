//! P14, a console with a rotating log: a device's thread writes the stream through a unix
//! socket chardev (`write_all`, as a UART's guest output goes) to a peer that reads and
//! checks it, with `logfile=` and rotation by size (`logmaxsize=16M,logbackups=2`) against
//! the same chardev with no logfile. Two write sizes: console lines (100 bytes a write, where
//! a log written with one more syscall per write would halve the rate) and 64 KiB bulk writes
//! (where the page cache's own speed shows).

use std::io::Read;
use std::path::Path;
use std::sync::atomic::AtomicU64;
use std::sync::mpsc::channel;
use std::sync::Arc;
use std::time::Instant;

use crate::fixture::{wait_opened, Chardevs, Consumer};
use crate::pattern::{Checker, Pattern, Verify, CHUNK};
use crate::peer::{self, STARTUP};
use crate::proc_status::{cpu_time, Who};
use crate::{transfer_deadline, Context, Result, Transfer};

/// The rotation P14 uses: files of 16 MiB, two kept besides the current one.
pub const LOG_MAX_SIZE: u64 = 16 << 20;
const LOG_OPTIONS: &str = "logmaxsize=16M,logbackups=2";

/// `bytes` written `write` bytes at a time through a unix socket chardev under `dir` to a
/// reading peer; with a rotating logfile in `dir` when `log` is set. The time runs from the
/// first write to the last byte's arrival at the peer (the log may be up to its queue behind
/// then: the guest does not wait for it). With `Verify::All` the log files are checked too:
/// none past the limit, and the newest bytes of the stream in them.
pub fn run(dir: &Path, bytes: u64, write: usize, log: bool, verify: Verify) -> Result<Transfer> {
    let chardevs = Chardevs::new()?;
    let path = dir.join("p10.sock");
    let log_path = dir.join("p10.log");
    let extra =
        if log { format!(",logfile={},{LOG_OPTIONS}", log_path.display()) } else { String::new() };
    // A new log each run: the truncation at open (QEMU's, without logappend=on) empties the
    // file, not the backups an earlier run rotated out.
    for name in ["p10.log", "p10.log.1", "p10.log.2"] {
        let _ = std::fs::remove_file(dir.join(name));
    }
    let handle = chardevs.unix_server("p10", &path, &extra)?;
    let (tx, notes) = channel();
    // Only for Opened: nothing comes from the peer.
    handle.set_frontend(Consumer::new(verify, Arc::new(AtomicU64::new(u64::MAX)), tx));
    let mut peer = peer::connect(&path)?;
    wait_opened(&notes, STARTUP)?;
    peer.set_read_timeout(Some(transfer_deadline(bytes))).context("set a read timeout")?;
    let mut checker = Checker::new(verify);
    let mut buf = vec![0u8; CHUNK];

    let cpu = cpu_time(Who::Process)?;
    let start = Instant::now();
    let writer = handle.clone();
    let device = std::thread::spawn(move || {
        let pattern = Pattern::default();
        let mut offset = 0;
        while offset < bytes {
            let n = (bytes - offset).min(write as u64) as usize;
            writer.write_all(pattern.at(offset, n))?;
            offset += n as u64;
        }
        Ok::<(), std::io::Error>(())
    });
    while checker.received() < bytes {
        match peer.read(&mut buf).context("read the chardev's socket")? {
            0 => break,
            n => checker.consume(&buf[..n]),
        }
    }
    let at = Instant::now();
    let cpu = cpu_time(Who::Process)? - cpu;
    device.join().map_err(|_| "the device thread panicked")?.context("write the stream")?;
    checker.finish(bytes)?;
    if log && verify == Verify::All {
        // Removal writes what the log still queues and closes it.
        chardevs.registry.remove_forced("p10").context("remove the chardev")?;
        check_log(&log_path, bytes)?;
    }
    Ok(Transfer { units: bytes, elapsed: at - start, cpu })
}

/// The log's files, oldest first, are the end of the stream, and none is past the limit.
fn check_log(path: &Path, bytes: u64) -> Result<()> {
    let mut logged = Vec::new();
    for name in ["p10.log.2", "p10.log.1", "p10.log"] {
        let file = path.with_file_name(name);
        let Ok(data) = std::fs::read(&file) else { continue };
        if data.len() as u64 > LOG_MAX_SIZE {
            return Err(format!("{} holds {} bytes, past logmaxsize", file.display(), data.len()));
        }
        logged.extend_from_slice(&data);
    }
    let kept = bytes.min(3 * LOG_MAX_SIZE);
    if logged.len() as u64 != kept {
        return Err(format!(
            "the log files hold {} bytes, not the stream's last {kept}",
            logged.len()
        ));
    }
    let pattern = Pattern::default();
    // The files start at stream offset bytes - kept: compare against the pattern from there.
    let from = bytes - kept;
    for (i, piece) in logged.chunks(CHUNK).enumerate() {
        let offset = from + (i * CHUNK) as u64;
        if piece != pattern.at(offset, piece.len()) {
            return Err(format!("the log differs from the stream near offset {offset}"));
        }
    }
    Ok(())
}

/// What this machine's kernel charges for the log's bytes alone: `bytes` appended to a file
/// in `dir` by one thread in 256 KiB writes (the log's batches), rotated as P14's log is
/// (16 MiB, two kept, the oldest removed first), in CPU seconds per GiB of that thread.
/// Against the unlogged path's CPU per byte it gives the floor of P14's CPU ratio on this
/// machine: the page-cache copy differs threefold between machines here (0.25-0.3 s/GiB on
/// one, 0.8 on another), and it is the larger part of what a log costs.
pub fn page_cache_cost(dir: &Path, bytes: u64) -> Result<f64> {
    use std::io::Write;
    let path = dir.join("calibrate.log");
    let numbered = |i: u32| path.with_file_name(format!("calibrate.log.{i}"));
    let batch = vec![b'x'; 256 << 10];
    let open = || {
        std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(&path)
            .context("open the calibration file")
    };
    let cpu = cpu_time(Who::Thread)?;
    let mut file = open()?;
    let (mut size, mut written) = (0u64, 0u64);
    while written < bytes {
        let n = batch.len().min((LOG_MAX_SIZE - size) as usize);
        file.write_all(&batch[..n]).context("write the calibration file")?;
        size += n as u64;
        written += n as u64;
        if size == LOG_MAX_SIZE {
            drop(file);
            let _ = std::fs::remove_file(numbered(2));
            let _ = std::fs::rename(numbered(1), numbered(2));
            std::fs::rename(&path, numbered(1)).context("rotate the calibration file")?;
            file = open()?;
            size = 0;
        }
    }
    drop(file);
    let cpu = cpu_time(Who::Thread)? - cpu;
    for name in [path.clone(), numbered(1), numbered(2)] {
        let _ = std::fs::remove_file(name);
    }
    Ok(cpu.as_secs_f64() / (bytes as f64 / f64::from(1u32 << 30)))
}

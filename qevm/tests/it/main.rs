//! The migration stream as QEMU 7.2 writes it, one module per feature: a machine saved and
//! loaded back across a real socketpair, the stream's structure read independently of the
//! crate, a stream captured from a real QEMU 7.2 (`tests/fixtures/`), a writer that stays
//! blocking when its socket is made non-blocking, progress and cancel, corrupt or truncated
//! streams that fail cleanly, arbitrary bytes that never make the reader panic, and RAM
//! never written that is sent without being read.

mod allocations; // the largest allocation a thread makes (this binary's global allocator)
mod walk; // an independent reading of a stream, from the reference's description

mod blocking_writer; // blocking whatever O_NONBLOCK says, files, EPIPE without SIGPIPE
mod corrupt; // flipped bytes, truncations and huge length fields
mod progress; // the counters follow the reader; cancel stops at a part boundary
mod prop_load; // property tests: any bytes load or fail, quickly and without a panic
mod qemu; // a stream captured from QEMU 7.2 loads; our framing is QEMU's
mod round_trip; // 64 MiB across a socketpair, page for page
mod structure; // the stream has QEMU's sections, records and vmdesc
mod untouched; // RAM never written goes out as ZERO records without a page fault

use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use nix::fcntl::{fcntl, FcntlArg, OFlag};
use qevm::{BlockingWriter, DeviceState, Error, Progress, Snapshot, PAGE_SIZE};
use vm_superio::serial::SerialState;

/// How long any single wait in a test may take before the test fails.
const DEADLINE: Duration = Duration::from_secs(30);

// ---- fds -------------------------------------------------------------------------------

/// Sets or clears `O_NONBLOCK` on the open file description behind `fd`, as a peer sharing
/// it may at any time.
fn set_nonblocking(fd: impl AsFd, on: bool) -> nix::Result<()> {
    let flags = OFlag::from_bits_retain(fcntl(fd.as_fd(), FcntlArg::F_GETFL)?);
    let flags = if on { flags | OFlag::O_NONBLOCK } else { flags - OFlag::O_NONBLOCK };
    fcntl(fd.as_fd(), FcntlArg::F_SETFL(flags)).map(drop)
}

/// Waits until `fd` is readable (or has hung up), for at most `timeout`; false if it is not.
fn wait_readable(fd: impl AsFd, timeout: Duration) -> nix::Result<bool> {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let left = PollTimeout::try_from(left).unwrap_or(PollTimeout::MAX);
        match poll(&mut [PollFd::new(fd.as_fd(), PollFlags::POLLIN)], left) {
            Err(nix::errno::Errno::EINTR) => {}
            r => return Ok(r? > 0),
        }
    }
}

// ---- machines to save ------------------------------------------------------------------

/// xorshift64*: pseudo-random bytes that do not compress and repeat in no page.
fn fill_random(buf: &mut [u8], seed: u64) {
    let mut x = seed | 1;
    for chunk in buf.chunks_mut(8) {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        let v = x.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes();
        chunk.copy_from_slice(&v[..chunk.len()]);
    }
}

/// RAM of `pages` pages where pages with `i % 4 < 2` hold random data (half the RAM), the
/// others are zero but for page 3, whose last byte only is set.
fn ram_image(pages: usize) -> Vec<u8> {
    let mut ram = vec![0u8; pages * PAGE_SIZE];
    for (i, page) in ram.chunks_mut(PAGE_SIZE).enumerate() {
        if i % 4 < 2 {
            fill_random(page, i as u64 * 7919 + 1);
        }
    }
    if pages > 3 {
        ram[4 * PAGE_SIZE - 1] = 0x01;
    }
    ram
}

fn data_pages(ram: &[u8]) -> usize {
    ram.chunks(PAGE_SIZE).filter(|p| p.iter().any(|&b| b != 0)).count()
}

fn devices() -> Vec<DeviceState> {
    let uart = SerialState {
        interrupt_enable: 0x01,
        line_status: 0x61,
        in_buffer: b"typed ahead".to_vec(),
        ..SerialState::default()
    };
    vec![
        qevm::serial_section(0, &uart),
        DeviceState::new(qevm::GUEST_SHELL, 0, 1, 12_345_678u64.to_be_bytes().to_vec()),
    ]
}

fn save_to_vec(ram: &[u8], devices: &[DeviceState]) -> Vec<u8> {
    save_to_vec_as(ram, "pc", devices)
}

fn save_to_vec_as(ram: &[u8], machine_type: &str, devices: &[DeviceState]) -> Vec<u8> {
    let mut out = Vec::new();
    let ram = ram.to_vec();
    qevm::save(&mut out, &Snapshot { machine_type, ram: &ram, devices }, &Progress::new()).unwrap();
    out
}

/// Saves on a thread of its own into `fd`; the result comes on the channel.
fn save_on_thread(
    fd: OwnedFd,
    ram: Arc<Mutex<Vec<u8>>>,
    devices: Vec<DeviceState>,
    progress: Arc<Progress>,
) -> mpsc::Receiver<Result<u64, Error>> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let r = BlockingWriter::new(fd).map_err(|e| Error::io("use the fd", 0, e)).and_then(|w| {
            qevm::save(
                w,
                &Snapshot { machine_type: "pc", ram: &*ram, devices: &devices },
                &progress,
            )
        });
        let _ = tx.send(r);
    });
    rx
}

fn reader(s: UnixStream) -> UnixStream {
    s.set_read_timeout(Some(DEADLINE)).unwrap();
    s
}

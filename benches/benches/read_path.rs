//! The read path into a frontend: a peer writes into a unix socket chardev, the loop reads
//! and hands the bytes to a frontend that counts them; with `mux=on` the mux's `Ctrl-A`
//! filter scans every byte on the way. The baseline is a blocking read loop on a socketpair
//! (P1 of `compare`, in criterion's small steps).

mod common;

use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::Arc;
use std::time::{Duration, Instant};

use benches::fixture::{Chardevs, ROOM};
use chardev::{Event, Frontend, FrontendHandle};
use criterion::{Criterion, Throughput};

/// One iteration: a peer's 64 KiB write.
const STEP: usize = 64 * 1024;

/// Counts bytes and says when the count reaches the mark (as the scenarios' consumer does,
/// without the pattern check: the mux would take `Ctrl-A` bytes out of the pattern).
struct Counter {
    received: u64,
    mark: Arc<AtomicU64>,
    reached: Sender<Instant>,
}

impl Counter {
    fn take(&mut self, n: usize) {
        self.received += n as u64;
        if self.received == self.mark.load(Ordering::Acquire) {
            let _ = self.reached.send(Instant::now());
        }
    }
}

impl Frontend for Counter {
    fn can_receive(&mut self) -> usize {
        ROOM
    }

    fn receive(&mut self, data: &[u8], _fds: Vec<OwnedFd>) {
        self.take(data.len());
    }

    fn event(&mut self, _event: Event) {}
}

/// A peer that writes into something that counts, and learns when all has arrived.
struct Stream {
    peer: UnixStream,
    mark: Arc<AtomicU64>,
    reached: Receiver<Instant>,
    /// The chardev's claim: dropping the last handle would detach the counter.
    _handle: Option<FrontendHandle>,
}

impl Stream {
    /// Writes `iters` steps and returns the time until the last byte was counted.
    fn run(&mut self, iters: u64, data: &[u8]) -> Duration {
        self.mark.fetch_add(iters * STEP as u64, Ordering::AcqRel);
        let start = Instant::now();
        for _ in 0..iters {
            self.peer.write_all(data).expect("the peer's write");
        }
        let at = self.reached.recv_timeout(Duration::from_secs(60)).expect("every byte counted");
        at - start
    }
}

fn chardev_stream(chardevs: &Chardevs, id: &str, extra: &str) -> Stream {
    let dir = std::env::temp_dir().join(format!("chardev-read-path-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a temporary directory");
    let path = dir.join(format!("{id}.sock"));
    let handle = chardevs.unix_server(id, &path, extra).expect("a socket chardev");
    let mark = Arc::new(AtomicU64::new(0));
    let (tx, reached) = channel();
    handle.set_frontend(Counter { received: 0, mark: Arc::clone(&mark), reached: tx });
    let peer = benches::peer::connect(&path).expect("a connection");
    let _ = std::fs::remove_dir_all(&dir);
    Stream { peer, mark, reached, _handle: Some(handle) }
}

fn raw_stream() -> Stream {
    let (peer, mut reader) = UnixStream::pair().expect("a socketpair");
    let mark = Arc::new(AtomicU64::new(0));
    let (tx, reached) = channel();
    let mut counter = Counter { received: 0, mark: Arc::clone(&mark), reached: tx };
    std::thread::spawn(move || {
        let mut buf = vec![0u8; STEP];
        while let Ok(n @ 1..) = reader.read(&mut buf) {
            counter.take(n);
        }
    });
    Stream { peer, mark, reached, _handle: None }
}

fn benches(c: &mut Criterion) {
    // Printable bytes: no Ctrl-A for the mux to act on, every byte still scanned.
    let data: Vec<u8> = (0..STEP).map(|i| b' ' + (i % 95) as u8).collect();
    let chardevs = Chardevs::new().expect("a chardev loop");
    let mut g = c.benchmark_group("read_path");
    g.throughput(Throughput::Bytes(STEP as u64));
    let mut plain = chardev_stream(&chardevs, "plain", "");
    g.bench_function("chardev", |b| b.iter_custom(|iters| plain.run(iters, &data)));
    let mut mux = chardev_stream(&chardevs, "mux", ",mux=on");
    g.bench_function("mux", |b| b.iter_custom(|iters| mux.run(iters, &data)));
    let mut raw = raw_stream();
    g.bench_function("raw", |b| b.iter_custom(|iters| raw.run(iters, &data)));
    g.finish();
}

fn main() {
    common::run(
        benches,
        "read_path",
        &[
            ("chardev", "raw", "unix socket chardev -> frontend / blocking read loop"),
            ("mux", "chardev", "the same through mux=on (the Ctrl-A filter) / without"),
        ],
    );
}

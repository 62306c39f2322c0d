//! The fan-out's bookkeeping (`chardev::fanout`): output appended once to the ring while
//! caught-up readers take their slices, and readers that fell behind losing the oldest
//! bytes, per MiB of output, against copying the same MiB with `copy_from_slice`.

mod common;

use std::hint::black_box;

use chardev::fanout::{Reader, Ring};
use criterion::{Criterion, Throughput};

/// Output per iteration: 1 MiB.
const MIB: usize = 1 << 20;

/// What one write carries: the guest's flood and the loop's read buffer both use 64 KiB.
const WRITE: usize = 64 * 1024;

/// The ring: `history=1M`.
const RING: usize = MIB;

/// Readers, as `clients=8`.
const READERS: usize = 8;

/// How far a reader may fall behind in the overflow case: a quarter of the ring.
const LIMIT: u64 = (RING / 4) as u64;

fn benches(c: &mut Criterion) {
    let data: Vec<u8> = (0..WRITE).map(|i| (i % 251) as u8).collect();
    let mut g = c.benchmark_group("fanout");
    g.throughput(Throughput::Bytes(MIB as u64));

    // A full ring, as in steady state: every append drops as much as it adds.
    let full = || {
        let mut ring = Ring::new(RING);
        for _ in 0..RING / WRITE {
            ring.append(&data);
        }
        ring
    };

    let mut ring = full();
    g.bench_function("append", |b| {
        b.iter(|| {
            for _ in 0..MIB / WRITE {
                ring.append(black_box(&data));
            }
        })
    });

    // Caught-up readers: after each write, each takes what is due and moves on by all of
    // it (what a send that took everything does).
    let mut ring = full();
    let mut readers: Vec<Reader> = (0..READERS).map(|_| Reader::new(&ring, 0)).collect();
    g.bench_function("append_due_8", |b| {
        b.iter(|| {
            for _ in 0..MIB / WRITE {
                ring.append(black_box(&data));
                for r in &mut readers {
                    let (a, b) = r.due(&ring);
                    let n = black_box(a).len() + black_box(b).len();
                    r.advance(n);
                }
            }
        })
    });

    // Stalled readers: none reads, each is held to LIMIT after every write and its gap
    // taken, so every call drops a write's worth.
    let mut ring = full();
    let mut readers: Vec<Reader> = (0..READERS).map(|_| Reader::new(&ring, RING)).collect();
    g.bench_function("append_enforce_8", |b| {
        b.iter(|| {
            for _ in 0..MIB / WRITE {
                ring.append(black_box(&data));
                for r in &mut readers {
                    black_box(r.enforce(&ring, LIMIT));
                    black_box(r.take_gap());
                }
            }
        })
    });

    // The baseline: the same MiB copied into a buffer of the ring's size.
    let mut buf = vec![0u8; RING];
    let mut at = 0;
    g.bench_function("copy", |b| {
        b.iter(|| {
            for _ in 0..MIB / WRITE {
                buf[at..at + WRITE].copy_from_slice(black_box(&data));
                at = (at + WRITE) % RING;
            }
        })
    });
    g.finish();
}

fn main() {
    common::run(
        benches,
        "fanout",
        &[
            ("append", "copy", "1 MiB into a full 1 MiB ring, in 64 KiB writes"),
            ("append_due_8", "append", "the same, 8 caught-up readers take their slices"),
            ("append_enforce_8", "append", "the same, 8 stalled readers lose the oldest"),
        ],
    );
}

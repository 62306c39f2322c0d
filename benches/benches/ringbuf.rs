//! The ringbuf: guest output into the ring (directly, and through a frontend handle as a
//! device writes it), and `ringbuf-read`'s pop, against copying the same bytes with
//! `copy_from_slice`.

mod common;

use std::hint::black_box;

use chardev::backends::ringbuf::Ringbuf;
use chardev::{EventLoop, Registry};
use criterion::{Criterion, Throughput};

/// What one write carries: a UART's FIFO drained in a burst is far less, a console dump more.
const WRITE: usize = 4096;

/// The ring: QEMU's default ringbuf size.
const RING: usize = 65536;

fn benches(c: &mut Criterion) {
    let data: Vec<u8> = (0..WRITE).map(|i| i as u8).collect();
    let mut g = c.benchmark_group("ringbuf");
    g.throughput(Throughput::Bytes(WRITE as u64));

    let mut ring = Ringbuf::new(RING).expect("a power of two");
    g.bench_function("push", |b| b.iter(|| ring.push(black_box(&data)).expect("the ring")));

    let mut ring = Ringbuf::new(RING).expect("a power of two");
    g.bench_function("push_pop", |b| {
        b.iter(|| {
            ring.push(black_box(&data)).expect("the ring");
            ring.pop(WRITE)
        })
    });

    let lp = EventLoop::spawn().expect("a loop");
    let registry = Registry::new(lp.handle());
    registry.add_str(&format!("ringbuf,id=rb0,size={RING}")).expect("a ringbuf");
    let handle = registry.connect("rb0").expect("a frontend handle");
    g.bench_function("handle_write", |b| {
        b.iter(|| handle.write(black_box(&data)).expect("a ringbuf takes everything"))
    });

    // The baseline: the same bytes into a buffer of the ring's size, wrapping the same way.
    let mut buf = vec![0u8; RING];
    let mut at = 0;
    g.bench_function("copy", |b| {
        b.iter(|| {
            buf[at..at + WRITE].copy_from_slice(black_box(&data));
            at = (at + WRITE) % RING;
        })
    });
    // ... and out again into a fresh Vec, as pop hands it.
    g.bench_function("copy_copy", |b| {
        b.iter(|| {
            buf[at..at + WRITE].copy_from_slice(black_box(&data));
            let out = buf[at..at + WRITE].to_vec();
            at = (at + WRITE) % RING;
            out
        })
    });
    g.finish();
}

fn main() {
    common::run(
        benches,
        "ringbuf",
        &[
            ("push", "copy", "4 KiB into a 64 KiB ring"),
            ("handle_write", "copy", "the same through FrontendHandle::write (lock, log check)"),
            ("push_pop", "copy_copy", "in and out again (ringbuf-read)"),
        ],
    );
}

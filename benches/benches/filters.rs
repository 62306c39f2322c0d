//! The telnet filters of `telnet=on` sockets: IAC sequences stripped from input in place,
//! `0xFF` doubled on output; against copying the same bytes. (The mux's `Ctrl-A` filter
//! runs inside the loop's read path and is measured there: `read_path/mux`.)

mod common;

use std::hint::black_box;

use chardev_socket::telnet::{escape_into, TelnetInput};
use criterion::{Criterion, Throughput};

/// One read's worth: the loop's read buffer.
const LEN: usize = 64 * 1024;

/// Plain text: no IAC at all (a console's output, a shell session).
fn plain() -> Vec<u8> {
    (0..LEN).map(|i| b' ' + (i % 95) as u8).collect()
}

/// Binary data as telnet carries it: an escaped 0xFF (`IAC IAC`) every 256 bytes and an
/// `IAC BREAK` every 16 KiB.
fn binary() -> Vec<u8> {
    let mut v = Vec::with_capacity(LEN);
    while v.len() < LEN {
        let i = v.len();
        if i % 16384 == 16382 {
            v.extend_from_slice(&[0xff, 243]);
        } else if i % 256 == 254 {
            v.extend_from_slice(&[0xff, 0xff]);
        } else {
            v.push((i % 251) as u8 & 0x7f);
        }
    }
    v.truncate(LEN);
    v
}

fn benches(c: &mut Criterion) {
    let mut g = c.benchmark_group("telnet");
    g.throughput(Throughput::Bytes(LEN as u64));
    // The filter works in place, so each iteration first restores the input into a buffer
    // that stays in cache; the baseline restores it too, then copies it out once more (the
    // compaction the filter does is such a copy at best).
    let mut buf = vec![0u8; LEN];
    let mut dst = vec![0u8; LEN];
    for (name, input) in [("plain", plain()), ("binary", binary())] {
        g.bench_function(format!("filter_{name}"), |b| {
            b.iter(|| {
                buf.copy_from_slice(black_box(&input));
                TelnetInput::default().filter(&mut buf, |at| {
                    black_box(at);
                })
            })
        });
        g.bench_function(format!("copy_{name}"), |b| {
            b.iter(|| {
                buf.copy_from_slice(black_box(&input));
                dst.copy_from_slice(black_box(&buf));
            })
        });
    }
    let out_data = binary();
    let mut out = Vec::with_capacity(2 * LEN);
    g.bench_function("escape", |b| {
        b.iter(|| {
            out.clear();
            escape_into(black_box(&out_data), &mut out);
        })
    });
    g.bench_function("extend", |b| {
        b.iter(|| {
            out.clear();
            out.extend_from_slice(black_box(&out_data));
        })
    });
    g.finish();
}

fn main() {
    common::run(
        benches,
        "telnet",
        &[
            ("filter_plain", "copy_plain", "restore + input filter / restore + copy, no IAC"),
            ("filter_binary", "copy_binary", "the same with IAC IAC every 256 bytes"),
            ("escape", "extend", "output escaping, 64 KiB with 0xFF every 256 bytes"),
        ],
    );
}

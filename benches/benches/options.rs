//! Option parsing: QEMU `-chardev` strings (and a legacy `-serial` string) into a checked
//! `ChardevSpec`, against the least any parser does: splitting the same string into
//! `key=value` pairs.

mod common;

use std::hint::black_box;

use chardev::compat::parse_compat;
use chardev::ChardevSpec;
use criterion::Criterion;

/// Representative strings: a monitor socket with a logfile, a telnet server, a pty, a ring.
const SPECS: [(&str, &str); 4] = [
    (
        "socket",
        "socket,id=mon0,path=/tmp/mon0.sock,server=on,wait=off,logfile=/tmp/mon0.log,logappend=on",
    ),
    ("telnet", "socket,id=s1,host=127.0.0.1,port=4444,server=on,wait=off,telnet=on,nodelay=on"),
    ("pty", "pty,id=serial0,path=/tmp/serial0"),
    ("ringbuf", "ringbuf,id=rb0,size=65536"),
];

const LEGACY: &str = "unix:/tmp/serial0.sock,server=on,wait=off";

/// The baseline: `key=value` pairs, borrowed, unchecked.
fn split(s: &str) -> Vec<(&str, &str)> {
    s.split(',').map(|kv| kv.split_once('=').unwrap_or((kv, ""))).collect()
}

fn benches(c: &mut Criterion) {
    let mut g = c.benchmark_group("options");
    for (name, spec) in SPECS {
        g.bench_function(format!("parse_{name}"), |b| {
            b.iter(|| ChardevSpec::parse(black_box(spec)).expect("a valid spec"))
        });
        g.bench_function(format!("split_{name}"), |b| b.iter(|| split(black_box(spec))));
    }
    g.bench_function("parse_legacy", |b| {
        b.iter(|| parse_compat(black_box(LEGACY), "serial0").expect("a valid legacy string"))
    });
    g.bench_function("split_legacy", |b| b.iter(|| split(black_box(LEGACY))));
    g.finish();
}

fn main() {
    common::run(
        benches,
        "options",
        &[
            ("parse_socket", "split_socket", "monitor socket with a logfile"),
            ("parse_telnet", "split_telnet", "tcp telnet server"),
            ("parse_pty", "split_pty", "pty with a link"),
            ("parse_ringbuf", "split_ringbuf", "ringbuf"),
            ("parse_legacy", "split_legacy", "legacy -serial unix:..."),
        ],
    );
}

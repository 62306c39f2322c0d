//! chardev-relay: joins two chardevs back to back, as socat joins two addresses.
//!
//! `chardev-relay [--keep-open] [-v] SPEC SPEC`, each SPEC in QEMU's `-chardev` syntax
//! without `id`: `chardev-relay pty socket,path=/tmp/s.sock,server=on,wait=off`.

use std::process::ExitCode;
use std::sync::mpsc::{channel, RecvTimeoutError};
use std::time::{Duration, Instant};

use chardev::{ChardevSpec, EventLoop, Registry};
use demos::relay::{self, RelayEvent};

const USAGE: &str = "usage: chardev-relay [--keep-open] [--no-fds] [--copy] [-v] SPEC SPEC

Joins two chardevs back to back, each given in QEMU's -chardev syntax without id:
  chardev-relay pty unix:/tmp/s.sock,server=on        (legacy forms work too)
  chardev-relay socket,path=/tmp/a,server=on,wait=off socket,host=127.0.0.1,port=4000

Bytes flow both ways with flow control (a slow side slows the other; nothing is dropped),
and fds pass through when both sides are unix sockets. Where no fd can flow, bytes between
plain sockets move by splice(2) and never enter user space. The relay ends when a side
that was open closes.

  --keep-open   do not end when a side closes: wait for its next connection
  --no-fds      do not pass fds (close those that arrive, as socat does): splice everywhere
  --copy        never splice: copy every byte through the relay's buffer
  -v            report the rate each second on stderr, and the totals at the end
  -h, --help    this help
";

fn main() -> ExitCode {
    env_logger::init();
    let mut keep_open = false;
    let mut verbose = false;
    let mut options = relay::Options::default();
    let mut specs = Vec::new();
    for arg in std::env::args().skip(1) {
        match arg.as_str() {
            "--keep-open" => keep_open = true,
            "-v" => verbose = true,
            "--no-fds" => options.pass_fds = false,
            "--copy" => options.splice = false,
            "-h" | "--help" => {
                print!("{USAGE}");
                return ExitCode::SUCCESS;
            }
            s if s.starts_with('-') => {
                eprintln!("chardev-relay: {s}: unknown option\n\n{USAGE}");
                return ExitCode::from(2);
            }
            s => specs.push(s.to_string()),
        }
    }
    if specs.len() != 2 {
        eprintln!("chardev-relay: two chardevs are needed, {} given\n\n{USAGE}", specs.len());
        return ExitCode::from(2);
    }
    match run(&specs[0], &specs[1], keep_open, verbose, options) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("chardev-relay: {e}");
            ExitCode::FAILURE
        }
    }
}

/// A spec in -chardev syntax, or in the legacy form (`pty`, `unix:PATH,server=on`).
fn parse(spec: &str, id: &str) -> Result<ChardevSpec, String> {
    match ChardevSpec::parse_with_id(spec, id) {
        Ok(s) => Ok(s),
        Err(first) => match chardev::compat::parse_compat(spec, id) {
            Ok((chardev::compat::Compat::New(s), false)) => Ok(s),
            _ => Err(format!("{spec}: {first}")),
        },
    }
}

fn run(
    a: &str,
    b: &str,
    keep_open: bool,
    verbose: bool,
    options: relay::Options,
) -> Result<(), String> {
    let specs = [parse(a, "a")?, parse(b, "b")?];
    let lp = EventLoop::spawn().map_err(|e| e.to_string())?;
    let registry = Registry::new(lp.handle());
    chardev_socket::register(&registry);
    chardev_pty::register(&registry);
    for spec in &specs {
        registry.add(spec).map_err(|e| e.to_string())?;
    }
    let (tx, rx) = channel();
    let handles = [
        registry.connect("a").map_err(|e| e.to_string())?,
        registry.connect("b").map_err(|e| e.to_string())?,
    ];
    let relay = relay::join_with(handles[0].clone(), handles[1].clone(), tx, options);
    for (side, name) in ["a", "b"].iter().enumerate() {
        if relay.splices(side) {
            log::info!("{name}: bytes move by splice(2)");
        }
    }
    let counters = relay.counters();
    // A side closed: what it sent must still reach the other side before the relay ends.
    let mut closing: Option<usize> = None;

    let mut last = (Instant::now(), [0u64; 2]);
    loop {
        match rx.recv_timeout(Duration::from_secs(1)) {
            Ok(RelayEvent::Closed(side)) if !keep_open => {
                log::info!("side {side} closed");
                if relay.pending(side) == 0 {
                    break;
                }
                closing = Some(side);
            }
            Ok(RelayEvent::Drained(side)) if closing == Some(side) => break,
            Ok(event) => log::info!("{event:?}"),
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => break,
        }
        if verbose && last.0.elapsed() >= Duration::from_secs(1) {
            let now = [counters.moved(0), counters.moved(1)];
            let secs = last.0.elapsed().as_secs_f64();
            eprintln!(
                "chardev-relay: a->b {:.1} MB/s, b->a {:.1} MB/s ({} and {} bytes in all)",
                (now[0] - last.1[0]) as f64 / secs / 1e6,
                (now[1] - last.1[1]) as f64 / secs / 1e6,
                now[0],
                now[1]
            );
            last = (Instant::now(), now);
        }
    }
    if verbose {
        eprintln!(
            "chardev-relay: done: a->b {} bytes ({} spliced), b->a {} bytes ({} spliced)",
            counters.moved(0),
            counters.spliced(0),
            counters.moved(1),
            counters.spliced(1)
        );
    }
    for id in ["a", "b"] {
        let _ = registry.remove_forced(id);
    }
    lp.stop().map_err(|e| e.to_string())
}

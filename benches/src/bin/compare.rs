//! compare: every scenario of issue 8 against its baseline, several rounds, and the median
//! and spread of each ratio.
//!
//! `cargo run --release -p benches --bin compare -- [OPTIONS] [P1 P2 ...]`; `--help` lists
//! the options. `--smoke` runs everything tiny and checks only that each transfer was
//! complete and correct (the test suite runs it so).

use std::path::PathBuf;
use std::process::{Command, ExitCode};

use benches::echo::{self, Crowd, Latencies};
use benches::pattern::{Verify, CHUNK};
use benches::relay::{self, Relayer, Route};
use benches::stats::Spread;
use benches::{fdpass, ingest, Result, Transfer};

const USAGE: &str = "usage: compare [OPTIONS] [P1 P2 P3 P4 P5 P6 P7 P8 P9 P10]

Runs each scenario and its baseline side by side, ROUNDS times (alternating which goes
first), and prints the median and range of each ratio with its goal. Every transfer is
checked: bytes in order and complete, every fd and echo accounted for.

  --smoke           tiny sizes, two rounds: completeness and correctness only
  --rounds N        rounds per scenario (default 5)
  --bytes SIZE      bytes per P1-P3 and P10 bulk transfer (default 1G; k/M/G suffixes;
                    P10's 100-byte writes move a sixteenth of it)
  --messages N      round trips per P4/P5 run (default 100000)
  --idle N          idle chardevs for P5 (default 10000; fewer if the fd limit says so)
  --fds N           fds per P6 run (default 500000)
  --verify-all      compare every byte received (default: the edges of every read)
  --relay PATH      the chardev-relay binary (default: next to this one, or $CHARDEV_RELAY)
  -h, --help        this help

P2 and P3 need chardev-relay built in the same profile, P8 and P9 serial-console (or
$SERIAL_CONSOLE) and QEMU 7.2 (apt-get install qemu-system-x86):
  cargo build --release -p demos
";

/// What to run, from the command line.
struct Config {
    smoke: bool,
    rounds: usize,
    bytes: u64,
    messages: usize,
    idle: usize,
    fds: u64,
    verify: Verify,
    relay: PathBuf,
    only: Vec<String>,
}

impl Config {
    fn parse(args: &[String]) -> std::result::Result<Config, String> {
        let mut c = Config {
            smoke: false,
            rounds: 5,
            bytes: 1 << 30,
            messages: 100_000,
            idle: 10_000,
            fds: 500_000,
            verify: Verify::Edges,
            relay: default_relay(),
            only: Vec::new(),
        };
        let mut explicit = Vec::new();
        let mut it = args.iter();
        while let Some(arg) = it.next() {
            let mut value = |name: &str| {
                explicit.push(name.to_string());
                it.next().cloned().ok_or(format!("{name} needs a value"))
            };
            let number = |name: &str, v: String| {
                chardev::options::parse_size(name, &v).map_err(|e| e.to_string())
            };
            match arg.as_str() {
                "--smoke" => c.smoke = true,
                "--rounds" => c.rounds = number("rounds", value("--rounds")?)? as usize,
                "--bytes" => c.bytes = number("bytes", value("--bytes")?)?,
                "--messages" => c.messages = number("messages", value("--messages")?)? as usize,
                "--idle" => c.idle = number("idle", value("--idle")?)? as usize,
                "--fds" => c.fds = number("fds", value("--fds")?)?,
                "--relay" => c.relay = value("--relay")?.into(),
                "--verify-all" => c.verify = Verify::All,
                p if p.starts_with('P') || p.starts_with('p') => c.only.push(p.to_uppercase()),
                other => return Err(format!("{other}: unknown argument")),
            }
        }
        if c.smoke {
            // Tiny, unless told otherwise: the test suite's run must take seconds.
            let unset = |name: &str| !explicit.iter().any(|e| e == name);
            if unset("--rounds") {
                // Two: the second round reuses the first one's socket paths, so a chardev
                // that outlived its loop would fail it.
                c.rounds = 2;
            }
            if unset("--bytes") {
                c.bytes = 1 << 20;
            }
            if unset("--messages") {
                c.messages = 300;
            }
            if unset("--idle") {
                c.idle = 200;
            }
            if unset("--fds") {
                c.fds = 2_000;
            }
            c.verify = Verify::All;
        }
        if c.rounds == 0 {
            return Err("--rounds must be at least 1".into());
        }
        Ok(c)
    }

    fn wants(&self, id: &str) -> bool {
        self.only.is_empty() || self.only.iter().any(|o| o == id)
    }
}

fn default_relay() -> PathBuf {
    if let Some(p) = std::env::var_os("CHARDEV_RELAY") {
        return p.into();
    }
    let exe = std::env::current_exe().unwrap_or_default();
    exe.with_file_name("chardev-relay")
}

/// How a figure is shown.
#[derive(Clone, Copy)]
enum Unit {
    /// Bytes per second, shown in MB/s.
    Bytes,
    /// Fds per second, shown in thousands.
    Fds,
    /// Seconds, shown in microseconds.
    Latency,
    /// CPU seconds per byte, shown per GiB.
    CpuPerByte,
    /// CPU seconds per fd, shown in microseconds.
    CpuPerFd,
}

impl Unit {
    fn show(self, v: f64) -> String {
        match self {
            Unit::Bytes => format!("{:.0} MB/s", v / 1e6),
            Unit::Fds => format!("{:.0}k fds/s", v / 1e3),
            Unit::Latency => format!("{:.1} us", v * 1e6),
            Unit::CpuPerByte => format!("{:.3} s/GiB", v * (1u64 << 30) as f64),
            Unit::CpuPerFd => format!("{:.2} us/fd", v * 1e6),
        }
    }
}

/// A goal for a ratio (ours / baseline).
#[derive(Clone, Copy)]
enum Goal {
    AtLeast(f64),
    AtMost(f64),
}

impl Goal {
    fn met(self, ratio: f64) -> bool {
        match self {
            Goal::AtLeast(g) => ratio >= g,
            Goal::AtMost(g) => ratio <= g,
        }
    }

    fn show(self) -> String {
        match self {
            Goal::AtLeast(g) => format!(">= {g:.2}"),
            Goal::AtMost(g) => format!("<= {g:.2}"),
        }
    }
}

/// One figure of one round: ours and the baseline's.
struct Sample {
    name: &'static str,
    unit: Unit,
    goal: Option<Goal>,
    ours: f64,
    base: f64,
}

/// One figure over all rounds.
struct Figure {
    name: &'static str,
    unit: Unit,
    goal: Option<Goal>,
    ours: Vec<f64>,
    base: Vec<f64>,
    ratios: Vec<f64>,
}

/// Everything one scenario measured.
struct Report {
    figures: Vec<Figure>,
    notes: Vec<String>,
}

impl Report {
    fn new() -> Report {
        Report { figures: Vec::new(), notes: Vec::new() }
    }

    fn add(&mut self, samples: Vec<Sample>) {
        for s in samples {
            let i = match self.figures.iter().position(|f| f.name == s.name) {
                Some(i) => i,
                None => {
                    self.figures.push(Figure {
                        name: s.name,
                        unit: s.unit,
                        goal: s.goal,
                        ours: Vec::new(),
                        base: Vec::new(),
                        ratios: Vec::new(),
                    });
                    self.figures.len() - 1
                }
            };
            let f = &mut self.figures[i];
            f.ours.push(s.ours);
            f.base.push(s.base);
            f.ratios.push(s.ours / s.base);
        }
    }

    fn print(&self, smoke: bool) {
        for f in &self.figures {
            let (Some(ours), Some(base), Some(r)) =
                (Spread::of(&f.ours), Spread::of(&f.base), Spread::of(&f.ratios))
            else {
                continue;
            };
            let verdict = match (f.goal, smoke) {
                (_, true) => "(smoke: not judged)".to_string(),
                (Some(g), false) => {
                    format!("goal {}: {}", g.show(), if g.met(r.median) { "met" } else { "MISSED" })
                }
                (None, false) if matches!(f.unit, Unit::CpuPerByte | Unit::CpuPerFd) => {
                    "(no goal; CPU time, lower is better)".to_string()
                }
                (None, false) => "(no goal)".to_string(),
            };
            println!(
                "   {:<22} {:>14} / {:>14}   ratio {:.2} ({:.2}..{:.2})   {verdict}",
                f.name,
                f.unit.show(ours.median),
                f.unit.show(base.median),
                r.median,
                r.min,
                r.max,
            );
        }
        for n in &self.notes {
            println!("   {n}");
        }
    }
}

/// The rate of a transfer (with its goal), and the CPU time it cost per unit (no goal: it
/// says where the difference comes from, and is less disturbed by other work).
fn transfer_samples(
    (name, cpu_name): (&'static str, &'static str),
    unit: Unit,
    goal: Option<Goal>,
    ours: Transfer,
    base: Transfer,
) -> Vec<Sample> {
    let cpu_unit = if matches!(unit, Unit::Fds) { Unit::CpuPerFd } else { Unit::CpuPerByte };
    vec![
        Sample { name, unit, goal, ours: ours.rate(), base: base.rate() },
        Sample {
            name: cpu_name,
            unit: cpu_unit,
            goal: None,
            ours: ours.cpu_per_unit(),
            base: base.cpu_per_unit(),
        },
    ]
}

/// The p50 (with its goal) and p99 of two sets of round trips.
fn latency_samples(
    (p50, p99): (&'static str, &'static str),
    ours: Latencies,
    base: Latencies,
    p50_goal: Option<Goal>,
) -> Vec<Sample> {
    vec![
        Sample {
            name: p50,
            unit: Unit::Latency,
            goal: p50_goal,
            ours: ours.p50.as_secs_f64(),
            base: base.p50.as_secs_f64(),
        },
        Sample {
            name: p99,
            unit: Unit::Latency,
            goal: None,
            ours: ours.p99.as_secs_f64(),
            base: base.p99.as_secs_f64(),
        },
    ]
}

/// Runs `ours` and `base` in the order that alternates with `round`.
fn pair<A, B>(
    round: usize,
    ours: impl FnOnce() -> Result<A>,
    base: impl FnOnce() -> Result<B>,
) -> Result<(A, B)> {
    if round % 2 == 0 {
        let a = ours()?;
        Ok((a, base()?))
    } else {
        let b = base()?;
        Ok((ours()?, b))
    }
}

fn tempdir() -> Result<tempfile::TempDir> {
    tempfile::Builder::new()
        .prefix("chardev-bench")
        .tempdir()
        .map_err(|e| format!("create a temporary directory: {e}"))
}

fn p1(c: &Config, report: &mut Report) -> Result<()> {
    let dir = tempdir()?;
    for round in 0..c.rounds {
        let (ours, base) = pair(
            round,
            || ingest::chardev(dir.path(), c.bytes, c.verify),
            || ingest::raw(c.bytes, c.verify),
        )?;
        report.add(transfer_samples(
            ("ingest", "  CPU, whole process"),
            Unit::Bytes,
            Some(Goal::AtLeast(0.90)),
            ours,
            base,
        ));
    }
    Ok(())
}

/// A relay row: its name, its CPU row's name, the route, chardev-relay's flags, whether the
/// 1.5 goal applies, and for a pty route the names of its yardstick rows (see [`Yardsticks`]).
type RouteCase =
    (&'static str, &'static str, Route, &'static [&'static str], bool, Option<Yardsticks>);

/// For a pty route, what the fastest relay could reach, each against socat in the same
/// minutes: a bare blocking read/write loop (rate, CPU), and the pty with no relay at all.
/// Their names, which must differ between routes.
type Yardsticks = [&'static str; 3];

fn relays(c: &Config, routes: &[RouteCase], report: &mut Report) -> Result<()> {
    let dir = tempdir()?;
    for round in 0..c.rounds {
        for &(name, cpu_name, route, flags, goal, yardsticks) in routes {
            let ours = Relayer::Chardev(c.relay.clone(), flags.to_vec());
            let (a, b) = pair(
                round,
                || relay::run(&ours, route, dir.path(), c.bytes, c.verify),
                || relay::run(&Relayer::Socat, route, dir.path(), c.bytes, c.verify),
            )?;
            let goal = goal.then_some(Goal::AtLeast(1.5));
            report.add(transfer_samples((name, cpu_name), Unit::Bytes, goal, a, b));
            if let Some([bare_name, bare_cpu_name, alone_name]) = yardsticks {
                let bare = relay::bare(route, c.bytes, c.verify)?;
                report.add(transfer_samples(
                    (bare_name, bare_cpu_name),
                    Unit::Bytes,
                    None,
                    bare,
                    b,
                ));
                let alone = relay::pty_alone(route, c.bytes, c.verify)?;
                report.add(vec![Sample {
                    name: alone_name,
                    unit: Unit::Bytes,
                    goal: None,
                    ours: alone.rate(),
                    base: b.rate(),
                }]);
            }
        }
    }
    Ok(())
}

/// Why P2/P3 cannot run here, if they cannot.
fn relay_missing(c: &Config) -> Option<String> {
    if !c.relay.is_file() {
        return Some(format!(
            "chardev-relay not found at {} (cargo build --release -p demos --bin chardev-relay, or --relay PATH)",
            c.relay.display()
        ));
    }
    match Command::new("socat").arg("-V").output() {
        Ok(o) if o.status.success() => None,
        _ => Some("socat is not installed (apt-get install socat)".into()),
    }
}

fn p2(c: &Config, report: &mut Report) -> Result<()> {
    relays(
        c,
        &[
            // What socat does: no fds. chardev-relay then splices.
            (
                "relay unix->unix --no-fds",
                "  CPU of the relay",
                Route::UnixToUnix,
                &["--no-fds"],
                true,
                None,
            ),
            // Fds may flow between two unix sockets: every byte is copied.
            (
                "relay unix->unix, fds on",
                "  CPU of that relay",
                Route::UnixToUnix,
                &[],
                false,
                None,
            ),
        ],
        report,
    )
}

/// Whether chardev-relay can relay a pty yet: a small transfer each way.
fn pty_probe(c: &Config) -> Option<String> {
    let dir = match tempdir() {
        Ok(d) => d,
        Err(e) => return Some(e),
    };
    let ours = Relayer::Chardev(c.relay.clone(), Vec::new());
    for route in [Route::PtyToUnix, Route::UnixToPty] {
        if let Err(e) = relay::run(&ours, route, dir.path(), 256 * 1024, Verify::All) {
            return Some(format!("chardev-relay pty does not work yet ({route:?}: {e})"));
        }
    }
    None
}

fn p3(c: &Config, report: &mut Report) -> Result<()> {
    relays(
        c,
        &[
            (
                "relay pty->unix",
                "  CPU of the relay",
                Route::PtyToUnix,
                &[],
                true,
                Some(["  bare blocking relay", "    its CPU", "  no relay: pty alone"]),
            ),
            (
                "relay unix->pty",
                "  CPU of that relay",
                Route::UnixToPty,
                &[],
                true,
                Some(["  bare relay, this way", "    CPU, this way", "  pty alone, this way"]),
            ),
        ],
        report,
    )
}

fn p4(c: &Config, report: &mut Report) -> Result<()> {
    let dir = tempdir()?;
    for round in 0..c.rounds {
        let (ours, base) =
            pair(round, || echo::chardev(dir.path(), c.messages), || echo::raw(c.messages))?;
        report.add(latency_samples(
            ("p50 round trip", "p99 round trip"),
            ours,
            base,
            Some(Goal::AtMost(1.2)),
        ));
    }
    Ok(())
}

fn p5(c: &Config, report: &mut Report) -> Result<()> {
    let dir = tempdir()?;
    let exe = std::env::current_exe().map_err(|e| format!("find this program: {e}"))?;
    let mut clients = Command::new(exe);
    clients.arg("--hold-clients");
    let crowd = Crowd::new(dir.path(), c.idle, clients)?;
    let extra = crowd.rss_after.saturating_sub(crowd.rss_before) as f64;
    let each = extra / crowd.idle.max(1) as f64;
    let per_10k = each * 10_000.0;
    let verdict = if c.smoke {
        "(smoke: not judged)".to_string()
    } else {
        format!(
            "goal <= 32 MiB per 10,000: {}",
            if per_10k <= 32.0 * 1048576.0 { "met" } else { "MISSED" }
        )
    };
    report.notes.push(format!(
        "extra VmRSS for {} idle chardevs: {:.1} MiB ({:.0} bytes each; {:.1} MiB per 10,000 = {:.2} of 32 MiB)   {verdict}",
        crowd.idle,
        extra / 1048576.0,
        each,
        per_10k / 1048576.0,
        per_10k / (32.0 * 1048576.0),
    ));
    if crowd.idle < c.idle {
        report.notes.push(format!(
            "{} idle chardevs, not {}: the fd limit is {} (a server takes 2 fds; the clients are in a child process)",
            crowd.idle, c.idle, crowd.fd_limit
        ));
    }
    let mut busy =
        echo::ChardevEcho::new(&crowd.chardevs, "active", &dir.path().join("active.sock"))?;
    let alone_loop = benches::fixture::Chardevs::new()?;
    let mut alone = echo::ChardevEcho::new(&alone_loop, "alone", &dir.path().join("alone.sock"))?;
    for round in 0..c.rounds {
        let (ours, base) = pair(
            round,
            || echo::round_trips(&mut busy.client, c.messages),
            || echo::round_trips(&mut alone.client, c.messages),
        )?;
        report.add(latency_samples(
            ("p50 (crowd / alone)", "p99 (crowd / alone)"),
            ours,
            base,
            Some(Goal::AtMost(1.2)),
        ));
    }
    Ok(())
}

fn p6(c: &Config, report: &mut Report) -> Result<()> {
    let dir = tempdir()?;
    let check = c.verify == Verify::All;
    for round in 0..c.rounds {
        let (ours, base) = pair(
            round,
            || fdpass::chardev(dir.path(), c.fds, check),
            || fdpass::raw(c.fds, check),
        )?;
        report.add(transfer_samples(
            ("fds received", "  CPU, whole process"),
            Unit::Fds,
            Some(Goal::AtLeast(0.8)),
            ours,
            base,
        ));
    }
    Ok(())
}

fn p7(c: &Config, report: &mut Report) -> Result<()> {
    let check = c.verify == Verify::All;
    // RAM of the transfer size, capped so a full run stays reasonable in memory and time.
    let bytes = c.bytes.min(512 << 20);
    for round in 0..c.rounds {
        let (ours, base) = pair(
            round,
            || benches::migrate::chardev(bytes, check),
            || benches::migrate::raw(bytes),
        )?;
        report.add(transfer_samples(
            ("migration stream", "  CPU, whole process"),
            Unit::Bytes,
            Some(Goal::AtLeast(0.8)),
            ours,
            base,
        ));
    }
    Ok(())
}

/// P8: a stopped machine, 1 GiB of RAM with 512 MiB of random data, migrated to a unix
/// socket by serial-console and by QEMU 7.2; the rate is RAM per second, so its ratio is
/// QEMU's time over ours.
fn p8(c: &Config, report: &mut Report) -> Result<()> {
    use benches::migrate_qemu::{self as mq, Machine};
    mq::check_qemu()?;
    let dir = tempdir()?;
    let machine = if c.smoke {
        Machine { ram: 16 << 20, data: 8 << 20 }
    } else {
        Machine { ram: 1 << 30, data: 512 << 20 }
    };
    let image = mq::random_image(dir.path(), machine.data)?;
    let (ours, qemu) = (mq::serial_console(), PathBuf::from(mq::QEMU));
    let check = c.verify == Verify::All;
    let mut wire = (0, 0);
    for round in 0..c.rounds {
        let (a, b) = pair(
            round,
            || mq::migrate(&ours, machine, &image, dir.path(), check),
            || mq::migrate(&qemu, machine, &image, dir.path(), check),
        )?;
        wire = (a.wire_bytes, b.wire_bytes);
        report.add(transfer_samples(
            ("RAM migrated per second", "  CPU of the machine"),
            Unit::Bytes,
            Some(Goal::AtLeast(1.0)),
            a.transfer,
            b.transfer,
        ));
    }
    report.notes.push(format!(
        "a {} MiB machine with {} MiB of data; bytes on the wire: serial-console {}, QEMU {}",
        machine.ram >> 20,
        machine.data >> 20,
        wire.0,
        wire.1
    ));
    Ok(())
}

fn p9(c: &Config, report: &mut Report) -> Result<()> {
    let serial_console = benches::migrate_qemu::serial_console();
    benches::qmp_rtt::run(&serial_console, c.rounds, c.messages / 5, &mut report.notes)
}

/// P10: a device writing through a chardev with a rotating logfile, against the same chardev
/// with none; console lines (100-byte writes, a sixteenth of `--bytes`) and bulk 64 KiB writes.
fn p10(c: &Config, report: &mut Report) -> Result<()> {
    let dir = tempdir()?;
    for round in 0..c.rounds {
        let lines = (c.bytes / 16).max(1 << 20);
        let (ours, base) = pair(
            round,
            || benches::console_log::run(dir.path(), lines, 100, true, c.verify),
            || benches::console_log::run(dir.path(), lines, 100, false, c.verify),
        )?;
        report.add(transfer_samples(
            ("100-byte writes", "  CPU, whole process, 100 B"),
            Unit::Bytes,
            Some(Goal::AtLeast(0.9)),
            ours,
            base,
        ));
        let (ours, base) = pair(
            round,
            || benches::console_log::run(dir.path(), c.bytes, CHUNK, true, c.verify),
            || benches::console_log::run(dir.path(), c.bytes, CHUNK, false, c.verify),
        )?;
        report.add(transfer_samples(
            ("64 KiB writes", "  CPU, whole process, 64 KiB"),
            Unit::Bytes,
            None,
            ours,
            base,
        ));
    }
    report.notes.push(format!(
        "logfile=DIR/p10.log,logmaxsize=16M,logbackups=2 against no logfile; both a unix socket \
         server read by a checking peer{}",
        if c.verify == Verify::All { "; the log files checked too" } else { "" }
    ));
    Ok(())
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|l| l.trim_start_matches([' ', '\t', ':']).to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let load = load.split_whitespace().next().unwrap_or("?");
    format!("{cpus} CPUs ({cpu}), Linux {}, load {load} at start", kernel.trim())
}

type Run = fn(&Config, &mut Report) -> Result<()>;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--hold-clients") {
        // P5's child: hold the clients of the idle chardevs.
        let (Some(dir), Some(n)) = (args.get(1), args.get(2).and_then(|n| n.parse().ok())) else {
            eprintln!("compare --hold-clients DIR N");
            return ExitCode::from(2);
        };
        return match echo::hold_clients(dir.as_ref(), n) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("compare --hold-clients: {e}");
                ExitCode::FAILURE
            }
        };
    }
    if args.iter().any(|a| a == "-h" || a == "--help") {
        print!("{USAGE}");
        return ExitCode::SUCCESS;
    }
    let c = match Config::parse(&args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("compare: {e}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };

    println!("chardev benchmarks: each scenario / its baseline, measured in the same run");
    println!("machine: {}", machine());
    println!(
        "{} round(s), alternating which side goes first; transfers of {} bytes (after a 64 KiB warm-up for relays), {} verified; median (min..max) of each figure\n",
        c.rounds,
        c.bytes,
        if c.verify == Verify::All { "every byte" } else { "the edges of every read" }
    );

    let relay_skip = relay_missing(&c);
    let scenarios: [(&str, &str, Run); 10] = [
        ("P1", "ingest: unix socket chardev -> frontend / blocking read loop on a socketpair", p1),
        ("P2", "relay unix<->unix: chardev-relay / socat -b 65536", p2),
        ("P3", "relay pty<->unix: chardev-relay / socat -b 65536", p3),
        ("P4", "echo, 64-byte round trips: chardev echo frontend / blocking echo thread", p4),
        ("P5", "echo among idle unix socket chardevs on one loop / on a loop of its own", p5),
        (
            "P6",
            "fd passing, 1 fd per message: unix socket chardev -> frontend / blocking recvmsg loop",
            p6,
        ),
        (
            "P7",
            "migration: RAM saved as QEMU's stream into a socketpair / plain blocking writes",
            p7,
        ),
        (
            "P8",
            "migration of a stopped machine, 1 GiB of RAM, 512 MiB of random data, to a unix socket: serial-console / QEMU 7.2",
            p8,
        ),
        ("P9", "QMP round trips, query-chardev and query-status: serial-console / QEMU 7.2", p9),
        (
            "P10",
            "console output through a unix socket chardev: with a rotating logfile / without",
            p10,
        ),
    ];
    let mut failed = false;
    for (id, title, run) in scenarios {
        if !c.wants(id) {
            continue;
        }
        println!("{id} {title}");
        let skip = match id {
            "P2" => relay_skip.clone(),
            "P3" => relay_skip.clone().or_else(|| pty_probe(&c)),
            "P8" | "P9" => benches::migrate_qemu::serial_console_missing(),
            _ => None,
        };
        if let Some(why) = skip {
            println!("{id} skipped: {why}\n");
            continue;
        }
        let mut report = Report::new();
        let started = std::time::Instant::now();
        let result = run(&c, &mut report);
        report.print(c.smoke);
        match result {
            Ok(()) => println!(
                "{id} complete: {} round(s) in {:.1} s, every transfer complete and correct\n",
                c.rounds,
                started.elapsed().as_secs_f64()
            ),
            Err(e) => {
                failed = true;
                println!("{id} FAILED: {e}\n");
            }
        }
    }
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "\nload average at the end: {}",
        load.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
    );
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

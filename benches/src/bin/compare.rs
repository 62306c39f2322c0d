//! compare: every scenario of issues 8, 17 and 19 against its baseline, several rounds, and the
//! median and spread of each ratio.
//!
//! `cargo run --release -p benches --bin compare -- [OPTIONS] [P1 P2 ...]`; `--help` lists
//! the options. `--smoke` runs everything tiny and checks only that each transfer was
//! complete and correct (the test suite runs it so).

use std::path::PathBuf;
use std::process::{Command, ExitCode};

use benches::echo::{self, Crowd, Latencies};
use benches::fanout::{self, Flood, HISTORY, VIEWERS};
use benches::pattern::{Verify, CHUNK};
use benches::relay::{self, Relayer, Route};
use benches::stats::Spread;
use benches::tls::{self, Direction, Kit, TlsRelayer};
use benches::{fdpass, ingest, Result, Transfer};

const USAGE: &str =
    "usage: compare [OPTIONS] [P1 P2 P3 P4 P5 P6 P7 P8 P9 P10 P11 P12 P13 P14 P15 P16 P17]

Runs each scenario and its baseline side by side, ROUNDS times (alternating which goes
first), and prints the median and range of each ratio with its goal. Every transfer is
checked: bytes in order and complete, every fd and echo accounted for.

  --smoke           tiny sizes, two rounds: completeness and correctness only
  --rounds N        rounds per scenario (default 5)
  --bytes SIZE      bytes per P1-P3, P14 and P16 bulk transfer (default 1G; k/M/G
                    suffixes; P14's 100-byte writes move a sixteenth of it)
  --messages N      round trips per P4/P5 run (default 100000)
  --idle N          idle chardevs for P5 (default 10000; fewer if the fd limit says so)
  --fds N           fds per P6 run (default 500000)
  --flood SIZE      bytes of each P10/P11/P13 flood to the viewers (default 64M)
  --handshake-secs N  seconds of each P17 run of the handshake client (default 5)
  --verify-all      compare every byte received (default: the edges of every read)
  --relay PATH      the chardev-relay binary (default: next to this one, or $CHARDEV_RELAY)
  -h, --help        this help

P2, P3 and P16 need chardev-relay built in the same profile, P8 to P11 and P13
serial-console (or $SERIAL_CONSOLE), P8 and P9 QEMU 7.2 too (apt-get install
qemu-system-x86), P16 and P17 socat, openssl and certtool (gnutls-bin):
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
    flood: u64,
    handshake_secs: u32,
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
            flood: 64 << 20,
            handshake_secs: 5,
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
                "--flood" => c.flood = number("flood", value("--flood")?)?,
                "--handshake-secs" => {
                    c.handshake_secs = number("handshake-secs", value("--handshake-secs")?)? as u32
                }
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
            if unset("--flood") {
                // Enough for P11's stopped viewer to overflow its 1 MiB queue.
                c.flood = 4 << 20;
            }
            if unset("--handshake-secs") {
                c.handshake_secs = 1;
            }
            c.verify = Verify::All;
        }
        if c.handshake_secs == 0 {
            return Err("--handshake-secs must be at least 1".into());
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
    /// Bytes of memory, shown in MiB.
    Memory,
    /// A count of send calls.
    Writes,
    /// TLS handshakes per second.
    Handshakes,
    /// CPU seconds per handshake, shown in microseconds.
    CpuPerHandshake,
}

impl Unit {
    fn show(self, v: f64) -> String {
        match self {
            Unit::Bytes => format!("{:.0} MB/s", v / 1e6),
            Unit::Fds => format!("{:.0}k fds/s", v / 1e3),
            Unit::Latency => format!("{:.1} us", v * 1e6),
            Unit::CpuPerByte => format!("{:.3} s/GiB", v * (1u64 << 30) as f64),
            Unit::CpuPerFd => format!("{:.2} us/fd", v * 1e6),
            Unit::Memory => format!("{:.2} MiB", v / 1048576.0),
            Unit::Writes => format!("{v:.0} writes"),
            Unit::Handshakes => format!("{v:.0} hs/s"),
            Unit::CpuPerHandshake => format!("{:.0} us/hs", v * 1e6),
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
            Goal::AtLeast(g) => format!(">= {}", show_ratio(g)),
            Goal::AtMost(g) => format!("<= {}", show_ratio(g)),
        }
    }
}

/// A ratio with two decimals, or as `1/N` when it is far below 1 (P12: a few writes against
/// a million).
fn show_ratio(r: f64) -> String {
    if r > 0.0 && r < 0.01 {
        format!("1/{:.0}", 1.0 / r)
    } else {
        format!("{r:.2}")
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
                (None, false)
                    if matches!(
                        f.unit,
                        Unit::CpuPerByte | Unit::CpuPerFd | Unit::CpuPerHandshake
                    ) =>
                {
                    "(no goal; CPU time, lower is better)".to_string()
                }
                (None, false) => "(no goal)".to_string(),
            };
            println!(
                "   {:<22} {:>14} / {:>14}   ratio {} ({}..{})   {verdict}",
                f.name,
                f.unit.show(ours.median),
                f.unit.show(base.median),
                show_ratio(r.median),
                show_ratio(r.min),
                show_ratio(r.max),
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

/// The slowest of `viewers` in a flood: stream bytes per second since the command.
fn slowest(run: &fanout::FloodRun, viewers: usize) -> f64 {
    run.seen[..viewers].iter().map(|s| run.rate(s)).fold(f64::INFINITY, f64::min)
}

/// Gap markers seen by viewers that kept reading (none is expected while they keep up with
/// the guest): how many, and how many bytes they said were lost.
fn lost(seen: &[fanout::Seen]) -> (usize, u64) {
    seen.iter().fold((0, 0), |(n, b), s| (n + s.gaps.len(), b + s.gaps.iter().sum::<u64>()))
}

fn flood_of(c: &Config, viewers: usize) -> Flood {
    Flood { viewers, bytes: c.flood, stop_one: false, queue: false }
}

/// P10: the guest's flood to 8 viewers / to 1, the slowest of the 8 against the one; and
/// the same fan-out unpaced in this process, for information.
fn p10(c: &Config, report: &mut Report) -> Result<()> {
    let dir = tempdir()?;
    let program = fanout::serial_console();
    let (mut paced_lost, mut unpaced_lost) = ((0, 0), [(0, 0), (0, 0)]);
    for round in 0..c.rounds {
        let (many, one) = pair(
            round,
            || fanout::flood(&program, dir.path(), flood_of(c, VIEWERS)),
            || fanout::flood(&program, dir.path(), flood_of(c, 1)),
        )?;
        for run in [&many, &one] {
            let (n, b) = lost(&run.seen);
            paced_lost = (paced_lost.0 + n, paced_lost.1 + b);
        }
        let bytes = c.flood as f64;
        report.add(vec![
            Sample {
                name: "slowest of 8 / alone",
                unit: Unit::Bytes,
                goal: Some(Goal::AtLeast(0.8)),
                ours: slowest(&many, VIEWERS),
                base: one.rate(&one.seen[0]),
            },
            Sample {
                name: "  CPU of serial-console",
                unit: Unit::CpuPerByte,
                goal: None,
                ours: many.cpu.as_secs_f64() / bytes,
                base: one.cpu.as_secs_f64() / bytes,
            },
            Sample {
                name: "  CPU of the viewers",
                unit: Unit::CpuPerByte,
                goal: None,
                ours: many.viewers_cpu.as_secs_f64() / bytes,
                base: one.viewers_cpu.as_secs_f64() / bytes,
            },
        ]);
        let (many, one) = pair(
            round,
            || fanout::unpaced(dir.path(), VIEWERS, c.flood),
            || fanout::unpaced(dir.path(), 1, c.flood),
        )?;
        for (i, run) in [&many, &one].into_iter().enumerate() {
            let (n, b) = lost(&run.seen);
            unpaced_lost[i] = (unpaced_lost[i].0 + n, unpaced_lost[i].1 + b);
        }
        let got = |run: &fanout::Unpaced| {
            run.seen
                .iter()
                .map(|s| s.delivered as f64 / (s.done - run.start).as_secs_f64().max(1e-9))
                .fold(f64::INFINITY, f64::min)
        };
        let wrote = |run: &fanout::Unpaced| bytes / run.writing.as_secs_f64().max(1e-9);
        report.add(vec![
            Sample {
                name: "unpaced: the writer",
                unit: Unit::Bytes,
                goal: None,
                ours: wrote(&many),
                base: wrote(&one),
            },
            Sample {
                name: "  slowest viewer got",
                unit: Unit::Bytes,
                goal: None,
                ours: got(&many),
                base: got(&one),
            },
            Sample {
                name: "  CPU, whole process",
                unit: Unit::CpuPerByte,
                goal: None,
                ours: many.cpu.as_secs_f64() / bytes,
                base: one.cpu.as_secs_f64() / bytes,
            },
        ]);
    }
    let share = |(_, lost): (usize, u64), viewers: usize| {
        100.0 - 100.0 * lost as f64 / (c.flood * (c.rounds * viewers) as u64) as f64
    };
    report.notes.push(format!(
        "flood {} bytes per run; viewers are threads of compare reading 64 KiB at a time and \
         checking every byte; \
         gap markers seen while reading: {} ({} bytes) in all rounds",
        c.flood, paced_lost.0, paced_lost.1
    ));
    report.notes.push(format!(
        "unpaced: a frontend handle of a server in this process writes 64 KiB pieces as fast \
         as it can (the writer's rate), viewers get what they can (the bytes they got per \
         second; the rest is dropped, with gap markers): 8 viewers got {:.1}% of the bytes \
         ({} gap markers), 1 viewer {:.1}% ({}), in all rounds",
        share(unpaced_lost[0], VIEWERS),
        unpaced_lost[0].0,
        share(unpaced_lost[1], 1),
        unpaced_lost[1].0
    ));
    Ok(())
}

/// Checks that the stopped viewer (the last) saw exactly one gap marker; returns its count.
fn one_gap(run: &fanout::FloodRun) -> Result<u64> {
    let stopped = run.seen.last().ok_or("no viewers")?;
    match stopped.gaps.as_slice() {
        [dropped] => Ok(*dropped),
        gaps => Err(format!(
            "the stopped viewer saw {} gap markers ({gaps:?}), expected exactly one",
            gaps.len()
        )),
    }
}

/// P11: 8 viewers, the last stopped during the flood / none stopped: the slowest of the 7
/// others in each.
fn p11(c: &Config, report: &mut Report) -> Result<()> {
    let dir = tempdir()?;
    let program = fanout::serial_console();
    let stopped = Flood { stop_one: true, ..flood_of(c, VIEWERS) };
    let (mut gaps, mut others_lost) = (Vec::new(), (0, 0));
    for round in 0..c.rounds {
        let (one_stopped, none) = pair(
            round,
            || fanout::flood(&program, dir.path(), stopped),
            || fanout::flood(&program, dir.path(), flood_of(c, VIEWERS)),
        )?;
        let dropped = one_gap(&one_stopped)?;
        let got = one_stopped.seen[VIEWERS - 1].delivered;
        gaps.push(format!("{got} + {dropped}"));
        for seen in [&one_stopped.seen[..VIEWERS - 1], &none.seen[..]] {
            let (n, b) = lost(seen);
            others_lost = (others_lost.0 + n, others_lost.1 + b);
        }
        report.add(vec![
            Sample {
                name: "slowest of 7, 1 stopped",
                unit: Unit::Bytes,
                goal: Some(Goal::AtLeast(0.9)),
                ours: slowest(&one_stopped, VIEWERS - 1),
                base: slowest(&none, VIEWERS - 1),
            },
            Sample {
                name: "  CPU of serial-console",
                unit: Unit::CpuPerByte,
                goal: None,
                ours: one_stopped.cpu.as_secs_f64() / c.flood as f64,
                base: none.cpu.as_secs_f64() / c.flood as f64,
            },
        ]);
    }
    report.notes.push(format!(
        "the stopped viewer, bytes received + the one gap marker's count (= the {} flooded), \
         each round: {}",
        c.flood,
        gaps.join(", ")
    ));
    report.notes.push(format!(
        "gap markers seen by the viewers that kept reading: {} ({} bytes) in all rounds",
        others_lost.0, others_lost.1
    ));
    Ok(())
}

/// P12: the send calls that replay 1 MiB of history to a new viewer / one per byte.
fn p12(c: &Config, report: &mut Report) -> Result<()> {
    let dir = tempdir()?;
    let mut writes = Vec::new();
    for _ in 0..c.rounds {
        let replay = fanout::replay(dir.path())?;
        writes.push(replay.writes.to_string());
        report.add(vec![Sample {
            name: "writes to replay 1 MiB",
            unit: Unit::Writes,
            goal: Some(Goal::AtMost(20.0 / HISTORY as f64)),
            ours: replay.writes as f64,
            base: HISTORY as f64,
        }]);
    }
    report.notes.push(format!(
        "the goal is at most 20 writes; the baseline is one write per byte (cloud-hypervisor \
         hands its backlog over so); writes each round: {}",
        writes.join(", ")
    ));
    Ok(())
}

/// P15: `overflow=drop`, the frontend's writer's CPU per byte with a peer that never reads
/// / with a peer that reads everything.
fn p15(c: &Config, report: &mut Report) -> Result<()> {
    let dir = tempdir()?;
    let bytes = if c.smoke { 4 << 20 } else { c.bytes.min(256 << 20) };
    let (mut dropped, mut dropped_reading) = (Vec::new(), Vec::new());
    for round in 0..c.rounds {
        let (stalled, reading) = pair(
            round,
            || benches::overflow::run(dir.path(), bytes, true),
            || benches::overflow::run(dir.path(), bytes, false),
        )?;
        let pct = |r: &benches::overflow::DropRun| {
            format!("{:.0}%", 100.0 * r.dropped as f64 / r.bytes as f64)
        };
        dropped.push(pct(&stalled));
        dropped_reading.push(pct(&reading));
        report.add(vec![Sample {
            name: "writer CPU, stalled / reading",
            unit: Unit::CpuPerByte,
            goal: Some(Goal::AtMost(1.2)),
            ours: stalled.cpu.as_secs_f64() / stalled.bytes as f64,
            base: reading.cpu.as_secs_f64() / reading.bytes as f64,
        }]);
    }
    report.notes.push(format!(
        "{bytes} bytes in 4 KiB write_all calls per run; the writer thread's own CPU \
         (RUSAGE_THREAD); dropped with the stalled peer, each round: {}; the reading peer \
         keeps the writer within 512 KiB of it and nothing is dropped ({} each round)",
        dropped.join(", "),
        dropped_reading.join(", ")
    ));
    Ok(())
}

/// P13: serial-console's resident memory growth during a flood to 8 viewers, 1 stopped,
/// at `queue=1M,history=1M` / queue + history.
fn p13(c: &Config, report: &mut Report) -> Result<()> {
    let dir = tempdir()?;
    let program = fanout::serial_console();
    let f = Flood { stop_one: true, queue: true, ..flood_of(c, VIEWERS) };
    let mut seen = Vec::new();
    for _ in 0..c.rounds {
        let run = fanout::flood(&program, dir.path(), f)?;
        one_gap(&run)?;
        let (before, peak) = run.rss;
        seen.push(format!("{:.2} -> {:.2}", before as f64 / 1048576.0, peak as f64 / 1048576.0));
        report.add(vec![Sample {
            name: "VmRSS growth / q + h",
            unit: Unit::Memory,
            goal: Some(Goal::AtMost(1.0)),
            ours: peak.saturating_sub(before) as f64,
            base: 2.0 * HISTORY as f64,
        }]);
    }
    report.notes.push(format!(
        "serial-console's VmRSS before the flood -> its peak (VmHWM) until the 7 running \
         viewers had all {} bytes, MiB, each round: {}",
        c.flood,
        seen.join(", ")
    ));
    Ok(())
}

/// P14: a device writing through a chardev with a rotating logfile, against the same chardev
/// with none; console lines (100-byte writes, a sixteenth of `--bytes`) and bulk 64 KiB writes.
fn p14(c: &Config, report: &mut Report) -> Result<()> {
    let dir = tempdir()?;
    let mut unlogged = Vec::new();
    for round in 0..c.rounds {
        let lines = (c.bytes / 16).max(1 << 20);
        let (ours, base) = pair(
            round,
            || benches::console_log::run(dir.path(), lines, 100, true, c.verify),
            || benches::console_log::run(dir.path(), lines, 100, false, c.verify),
        )?;
        unlogged.push(base.cpu.as_secs_f64() / (base.units as f64 / f64::from(1u32 << 30)));
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
        "logfile=DIR/p14.log,logmaxsize=16M,logbackups=2 against no logfile; both a unix socket \
         server read by a checking peer{}",
        if c.verify == Verify::All { "; the log files checked too" } else { "" }
    ));
    // The floor on this machine: the kernel's cost of the log's bytes alone, against the
    // unlogged path's CPU per byte (a log through the page cache cannot cost less).
    // At least 256 MiB, so that the rotation reuses its own pages as a running log does:
    // the first touch of a page costs several times more on these VMs.
    let floor = benches::console_log::page_cache_cost(dir.path(), (c.bytes / 4).max(256 << 20))?;
    unlogged.sort_by(f64::total_cmp);
    let path = unlogged[unlogged.len() / 2];
    report.notes.push(format!(
        "this machine's page cache takes the log's bytes (256 KiB appends, the same rotation, \
         one thread) at {floor:.3} CPU s/GiB; the unlogged 100-byte path costs {path:.3} s/GiB \
         (median): a CPU ratio of {:.3} is the floor of any log written through the page cache",
        1.0 + floor / path
    ));
    Ok(())
}

/// P16: chardev-relay between a unix socket and a TLS server / socat with OPENSSL-LISTEN,
/// the same certificates and the same TLS peer (ours, in this process), both ways.
fn p16(c: &Config, report: &mut Report) -> Result<()> {
    let dir = tempdir()?;
    let kit = Kit::new(dir.path());
    let ours = TlsRelayer::Chardev(c.relay.clone());
    for round in 0..c.rounds {
        for (direction, names) in [
            (Direction::UnixToTls, ("relay unix->TLS", "  CPU of the relay")),
            (Direction::TlsToUnix, ("relay TLS->unix", "  CPU of that relay")),
        ] {
            let (a, b) = pair(
                round,
                || tls::relay(&ours, direction, &kit, dir.path(), c.bytes, c.verify),
                || tls::relay(&TlsRelayer::Socat, direction, &kit, dir.path(), c.bytes, c.verify),
            )?;
            report.add(transfer_samples(names, Unit::Bytes, Some(Goal::AtLeast(1.0)), a, b));
        }
    }
    report.notes.push(format!(
        "TLS 1.3, ECDSA P-256 certificates from the test kit, the client verified by both \
         relays; the peer is a TLS client in this process (rustls); socat negotiated {}",
        tls::socat_cipher(dir.path()).unwrap_or_else(|| "(not in its log)".into())
    ));
    Ok(())
}

/// P17: full TLS handshakes per second from a client loop in this process to a TLS server
/// chardev in this process / to `openssl s_server`.
fn p17(c: &Config, report: &mut Report) -> Result<()> {
    let dir = tempdir()?;
    let kit = Kit::new(dir.path());
    let mut counts = Vec::new();
    for round in 0..c.rounds {
        let (ours, base) = pair(
            round,
            || tls::handshakes_chardev(&kit, c.handshake_secs),
            || tls::handshakes_s_server(&kit, c.handshake_secs),
        )?;
        counts.push(format!("{} ({} opened) / {}", ours.count, ours.opened, base.count));
        report.add(vec![
            Sample {
                name: "handshakes per second",
                unit: Unit::Handshakes,
                goal: None,
                ours: ours.rate(),
                base: base.rate(),
            },
            Sample {
                name: "  server CPU per hs",
                unit: Unit::CpuPerHandshake,
                goal: None,
                ours: ours.cpu_per_handshake(),
                base: base.cpu_per_handshake(),
            },
        ]);
    }
    report.notes.push(format!(
        "a yardstick, no goal: {} s of a client loop per run (rustls, in this process; each \
         connection waits for the server's end), mutual authentication (ECDSA P-256), no \
         resumption; handshakes each round, ours (Opened seen by the frontend) / s_server's: {}",
        c.handshake_secs,
        counts.join(", ")
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
    let scenarios: [(&str, &str, Run); 17] = [
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
            "serial-console's flood to viewers on its unix socket (clients=8,history=1M): slowest of 8 / 1 alone",
            p10,
        ),
        (
            "P11",
            "the same flood to 8 viewers, one of them stopped / none stopped: slowest of the 7 others",
            p11,
        ),
        (
            "P12",
            "1 MiB of history replayed to a new unix viewer: send calls / one per byte",
            p12,
        ),
        (
            "P13",
            "serial-console's VmRSS growth, flood to 8 viewers (1 stopped) at queue=1M,history=1M / queue + history",
            p13,
        ),
        (
            "P14",
            "console output through a unix socket chardev: with a rotating logfile / without",
            p14,
        ),
        (
            "P15",
            "overflow=drop: the frontend writer's CPU per byte, peer stalled / peer reading",
            p15,
        ),
        (
            "P16",
            "relay unix<->TLS server, a TLS peer: chardev-relay tls-creds= / socat -b 65536 OPENSSL-LISTEN",
            p16,
        ),
        (
            "P17",
            "full TLS handshakes per second (mutual, no resumption): TLS server chardev / openssl s_server",
            p17,
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
            "P16" => relay_skip.clone().or_else(tls::missing),
            "P17" => tls::missing(),
            "P3" => relay_skip.clone().or_else(|| pty_probe(&c)),
            "P8" | "P9" | "P10" | "P11" | "P13" => benches::migrate_qemu::serial_console_missing(),
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

//! P9: QMP round trips, `query-chardev` and `query-status`, through serial-console's monitor
//! (`chardev-qmp`) against QEMU 7.2's, both running in the same minutes.
//!
//! Each round starts both programs with the same machine (`-nodefaults -machine none`), the
//! same QMP socket options and the same chardevs ([`CHARDEVS`], so `query-chardev` has
//! something to list), connects a client to each, negotiates (`qmp_capabilities`) and, for
//! each command, warms up and then sends it and waits for the reply, one at a time, for a
//! number of round trips, first on one program and then on the other (which goes first
//! alternates by round). The client times each round trip and the run as a whole, and reads
//! what the program's process spent in CPU (all threads: utime + stime of
//! `/proc/PID/stat`) around the timed round trips. Every reply is checked: a `return`, and
//! for `query-chardev` every chardev of the command line listed.
//!
//! Every figure is turned so that above 1 means serial-console did better: QEMU's time over
//! ours for latencies and CPU, our rate over QEMU's for throughput.

use std::fs::File;
use std::io::{BufRead, BufReader, ErrorKind, Read, Seek, SeekFrom, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::peer::{Process, STARTUP};
use crate::proc_status::process_cpu;
use crate::stats::{percentile, Spread};
use crate::{Context, Result};

/// QEMU's binary, looked up in `PATH`.
pub const QEMU: &str = "qemu-system-x86_64";

/// The chardevs both programs get besides their QMP monitor, and the labels
/// `query-chardev` must list.
pub const CHARDEVS: &[(&str, &str)] = &[("null,id=n0", "n0"), ("ringbuf,id=r0", "r0")];

/// The commands timed, in the order they run in each round.
pub const COMMANDS: [&str; 2] = ["query-chardev", "query-status"];

/// How long one reply may take before the run counts as stuck.
const REPLY_TIMEOUT: Duration = Duration::from_secs(10);

/// Events a program may send before a reply; more than this in a row is a runaway.
const MAX_EVENTS: usize = 100;

/// The program behind a QMP socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Program {
    /// The demos' `serial-console`, at this path.
    SerialConsole(PathBuf),
    /// `qemu-system-x86_64` from `PATH`.
    Qemu,
}

impl Program {
    /// Its name in figures and errors.
    pub fn name(&self) -> &'static str {
        match self {
            Program::SerialConsole(_) => "serial-console",
            Program::Qemu => "QEMU",
        }
    }

    /// The command line: the same machine, monitor and chardevs for both.
    fn command(&self, socket: &Path) -> Command {
        let mut cmd = match self {
            Program::SerialConsole(path) => {
                let mut cmd = Command::new(path);
                // A logger set up for debugging elsewhere must not slow the monitor down.
                cmd.env_remove("RUST_LOG");
                cmd
            }
            Program::Qemu => {
                let mut cmd = Command::new(QEMU);
                cmd.args(["-display", "none"]);
                cmd
            }
        };
        cmd.args(["-machine", "none", "-nodefaults"]);
        cmd.arg("-qmp").arg(format!("unix:{},server=on,wait=off", socket.display()));
        for (spec, _) in CHARDEVS {
            cmd.args(["-chardev", spec]);
        }
        cmd
    }
}

/// What one program did for one command: round trip latencies, the run's duration, and the
/// CPU time its process spent meanwhile.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RoundTrips {
    /// The median round trip.
    pub p50: Duration,
    /// The 99th percentile round trip.
    pub p99: Duration,
    /// How many round trips were timed (after the warm-up).
    pub count: usize,
    /// From the first timed command sent to the last reply read.
    pub elapsed: Duration,
    /// The program's CPU time (user and system, every thread) over `elapsed`, in clock ticks'
    /// resolution (`CLK_TCK`, usually 10 ms).
    pub cpu: Duration,
}

impl RoundTrips {
    /// Round trips per second.
    pub fn rate(&self) -> f64 {
        self.count as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// The program's CPU seconds per 1,000 round trips.
    pub fn cpu_per_thousand(&self) -> f64 {
        self.cpu.as_secs_f64() * 1000.0 / self.count.max(1) as f64
    }
}

/// A running program with a negotiated QMP client; the process is killed and reaped when
/// this is dropped.
pub struct Monitor {
    client: BufReader<UnixStream>,
    line: String,
    pid: u32,
    name: &'static str,
    _process: Process,
}

impl Monitor {
    /// Starts `program` with its QMP socket at `socket` (stderr into `stderr_log`), connects,
    /// reads the greeting and negotiates capabilities.
    pub fn start(program: &Program, socket: &Path, stderr_log: &Path) -> Result<Monitor> {
        let name = program.name();
        let log = File::create(stderr_log)
            .context(format!("create {} for {name}'s stderr", stderr_log.display()))?;
        let child = program
            .command(socket)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context(format!("start {name}"))?;
        let pid = child.id();
        let mut process = Process::new(child, name);
        let stream = connect(&mut process, socket, stderr_log)?;
        stream.set_read_timeout(Some(REPLY_TIMEOUT)).context("set a read timeout")?;
        stream.set_write_timeout(Some(REPLY_TIMEOUT)).context("set a write timeout")?;
        let mut monitor = Monitor {
            client: BufReader::new(stream),
            line: String::new(),
            pid,
            name,
            _process: process,
        };
        monitor.read_line("the greeting")?;
        if !monitor.line.starts_with("{\"QMP\"") {
            return Err(format!("{name} greeted with {:?}", monitor.line.trim_end()));
        }
        monitor.execute("qmp_capabilities")?;
        Ok(monitor)
    }

    /// Sends `{"execute": command}` and returns its reply line (events before it skipped);
    /// an `error` reply is an error.
    pub fn execute(&mut self, command: &str) -> Result<&str> {
        let name = self.name;
        let message = format!("{{\"execute\":\"{command}\"}}\n");
        self.client
            .get_mut()
            .write_all(message.as_bytes())
            .context(format!("send {command} to {name}"))?;
        for _ in 0..MAX_EVENTS {
            self.read_line(command)?;
            if self.line.starts_with("{\"return\"") {
                return Ok(&self.line);
            }
            if !self.line.starts_with("{\"event\"") {
                return Err(format!("{name} answered {command} with {:?}", self.line.trim_end()));
            }
        }
        Err(format!("{name} sent {MAX_EVENTS} events and no reply to {command}"))
    }

    fn read_line(&mut self, what: &str) -> Result<()> {
        self.line.clear();
        let n = match self.client.read_line(&mut self.line) {
            Ok(n) => n,
            // The read timeout shows as either, depending on the platform.
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return Err(format!(
                    "{} sent no complete reply to {what} within {REPLY_TIMEOUT:?}",
                    self.name
                ))
            }
            Err(e) => return Err(format!("read {what} from {}: {e}", self.name)),
        };
        if n == 0 {
            return Err(format!("{} closed its QMP socket while {what} was awaited", self.name));
        }
        Ok(())
    }

    /// Checks one reply to `command`: `query-chardev` must list every chardev of the command
    /// line (in either program's key order and spacing).
    fn check(&self, command: &str) -> Result<()> {
        if command != "query-chardev" {
            return Ok(());
        }
        let compact: String = self.line.chars().filter(|c| !c.is_whitespace()).collect();
        for (_, label) in CHARDEVS {
            if !compact.contains(&format!("\"label\":\"{label}\"")) {
                return Err(format!(
                    "{}'s query-chardev does not list '{label}': {}",
                    self.name,
                    self.line.trim_end()
                ));
            }
        }
        Ok(())
    }

    /// Sends `command` `warmup` times untimed, then `count` times timed, each after the
    /// previous reply; fails if the timed part outlives `deadline`.
    pub fn round_trips(
        &mut self,
        command: &str,
        warmup: usize,
        count: usize,
        deadline: Duration,
    ) -> Result<RoundTrips> {
        for _ in 0..warmup {
            self.execute(command)?;
            self.check(command)?;
        }
        let mut times = Vec::with_capacity(count);
        let cpu_before = process_cpu(self.pid)?;
        let started = Instant::now();
        for i in 0..count {
            let start = Instant::now();
            self.execute(command)?;
            times.push(start.elapsed());
            // Checking every reply costs a scan of a few hundred bytes, outside the timing.
            self.check(command)?;
            if i % 1024 == 0 && started.elapsed() > deadline {
                return Err(format!(
                    "{}: {i} of {count} {command} round trips in {deadline:?}",
                    self.name
                ));
            }
        }
        let elapsed = started.elapsed();
        let cpu = process_cpu(self.pid)?.saturating_sub(cpu_before);
        times.sort_unstable();
        Ok(RoundTrips {
            p50: percentile(&times, 50.0),
            p99: percentile(&times, 99.0),
            count,
            elapsed,
            cpu,
        })
    }
}

/// Connects to the program's QMP socket once it listens, giving up early if the program
/// ends (a refused option) and quoting its stderr then.
fn connect(process: &mut Process, socket: &Path, stderr_log: &Path) -> Result<UnixStream> {
    let deadline = Instant::now() + STARTUP;
    loop {
        if let Some(status) = process.exited() {
            return Err(format!(
                "the program ended ({status}) before its QMP socket {} accepted: {}",
                socket.display(),
                tail(stderr_log)
            ));
        }
        match UnixStream::connect(socket) {
            Ok(s) => return Ok(s),
            Err(e) if Instant::now() >= deadline => {
                return Err(format!(
                    "connect to {}: still failing after {STARTUP:?}: {e}; stderr: {}",
                    socket.display(),
                    tail(stderr_log)
                ))
            }
            // Nothing to wait on but the socket file and its listen(): a retry every
            // millisecond is the wait, bounded by the deadline.
            Err(_) => std::thread::sleep(Duration::from_millis(1)),
        }
    }
}

/// The last few hundred bytes of a log, for an error message.
fn tail(path: &Path) -> String {
    let mut text = String::new();
    if let Ok(mut f) = File::open(path) {
        let len = f.metadata().map_or(0, |m| m.len());
        let _ = f.seek(SeekFrom::Start(len.saturating_sub(600)));
        let _ = f.read_to_string(&mut text);
    }
    match text.trim() {
        "" => "(nothing on stderr)".into(),
        t => format!("{t:?}"),
    }
}

/// QEMU's version line, or why P9 cannot run here.
pub fn qemu_version() -> Result<String> {
    let out = Command::new(QEMU).arg("--version").stdin(Stdio::null()).output();
    match out {
        Ok(o) if o.status.success() => {
            let text = String::from_utf8_lossy(&o.stdout);
            Ok(text.lines().next().unwrap_or("").trim().to_string())
        }
        _ => Err(format!("{QEMU} is not installed (apt-get install qemu-system-x86)")),
    }
}

/// One figure over the rounds: serial-console's and QEMU's value in each.
struct Figure {
    name: String,
    /// Whether a higher value is better (a rate); otherwise lower is (a time).
    higher_is_better: bool,
    show: fn(f64) -> String,
    ours: Vec<f64>,
    qemu: Vec<f64>,
}

impl Figure {
    fn new(name: String, higher_is_better: bool, show: fn(f64) -> String) -> Figure {
        Figure { name, higher_is_better, show, ours: Vec::new(), qemu: Vec::new() }
    }

    fn add(&mut self, ours: f64, qemu: f64) {
        self.ours.push(ours);
        self.qemu.push(qemu);
    }

    /// One line in `compare`'s layout: medians, then the median and range of the ratio, turned
    /// so that above 1 means serial-console did better.
    fn line(&self) -> Option<String> {
        let ratios: Vec<f64> = self
            .ours
            .iter()
            .zip(&self.qemu)
            .map(|(&o, &q)| if self.higher_is_better { o / q } else { q / o })
            .collect();
        let (ours, qemu) = (Spread::of(&self.ours)?, Spread::of(&self.qemu)?);
        let ratio = match Spread::of(&ratios) {
            Some(r) => format!("ratio {:.2} ({:.2}..{:.2})", r.median, r.min, r.max),
            // CPU below one clock tick on both sides: too short a run to tell.
            None => "ratio n/a (too few clock ticks)".into(),
        };
        Some(format!(
            "{:<30} {:>16} / {:>16}   {ratio}",
            self.name,
            (self.show)(ours.median),
            (self.show)(qemu.median)
        ))
    }
}

fn micros(v: f64) -> String {
    format!("{:.1} us", v * 1e6)
}

fn per_second(v: f64) -> String {
    format!("{:.0} /s", v)
}

fn cpu_ms(v: f64) -> String {
    format!("{:.1} ms", v * 1e3)
}

fn load_average() -> String {
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    load.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
}

/// P9: `rounds` rounds of `round_trips` round trips of each of [`COMMANDS`] on
/// serial-console (at `serial_console`) and on QEMU, fresh processes each round; pushes the
/// figures as lines onto `lines` (also those of the rounds done when a later one fails).
pub fn run(
    serial_console: &Path,
    rounds: usize,
    round_trips: usize,
    lines: &mut Vec<String>,
) -> Result<()> {
    let version = qemu_version()?;
    if !serial_console.is_file() {
        return Err(format!(
            "serial-console not found at {} (cargo build --release -p demos --bin serial-console)",
            serial_console.display()
        ));
    }
    let dir = tempfile::Builder::new()
        .prefix("chardev-bench-qmp")
        .tempdir()
        .context("create a temporary directory")?;
    let load_before = load_average();
    let mut figures = COMMANDS.map(|command| {
        [
            Figure::new(format!("{command} p50"), false, micros),
            Figure::new("  p99".into(), false, micros),
            Figure::new("  throughput".into(), true, per_second),
            Figure::new("  CPU per 1,000, its process".into(), false, cpu_ms),
        ]
    });
    let result = rounds_into(serial_console, dir.path(), rounds, round_trips, &mut figures);
    lines.push(format!(
        "{} round trips of each command per round (after {} untimed); {version}",
        round_trips,
        warmup(round_trips)
    ));
    lines.push(
        "serial-console / QEMU; ratio: QEMU's time over ours (our rate over QEMU's), above 1: serial-console faster or cheaper"
            .into(),
    );
    lines.extend(figures.iter().flatten().filter_map(Figure::line));
    lines.push(format!("load average: {load_before} at the start, {} at the end", load_average()));
    result
}

fn warmup(round_trips: usize) -> usize {
    (round_trips / 10).clamp(1, 1000)
}

fn rounds_into(
    serial_console: &Path,
    dir: &Path,
    rounds: usize,
    round_trips: usize,
    figures: &mut [[Figure; 4]; COMMANDS.len()],
) -> Result<()> {
    let ours = Program::SerialConsole(serial_console.to_path_buf());
    let qemu = Program::Qemu;
    // A QEMU round trip takes a few hundred microseconds; allow ten times that and more.
    let deadline = Duration::from_secs_f64(30.0 + 0.005 * round_trips as f64);
    for round in 0..rounds {
        let start = |program: &Program, tag: &str| {
            Monitor::start(
                program,
                &dir.join(format!("{tag}-{round}.sock")),
                &dir.join(format!("{tag}-{round}.stderr")),
            )
        };
        let mut a = start(&ours, "ours")?;
        let mut b = start(&qemu, "qemu")?;
        for (command, [p50, p99, rate, cpu]) in COMMANDS.into_iter().zip(figures.iter_mut()) {
            let measure = |m: &mut Monitor| {
                m.round_trips(command, warmup(round_trips), round_trips, deadline)
            };
            let (o, q) = if round % 2 == 0 {
                let o = measure(&mut a)?;
                (o, measure(&mut b)?)
            } else {
                let q = measure(&mut b)?;
                (measure(&mut a)?, q)
            };
            p50.add(o.p50.as_secs_f64(), q.p50.as_secs_f64());
            p99.add(o.p99.as_secs_f64(), q.p99.as_secs_f64());
            rate.add(o.rate(), q.rate());
            cpu.add(o.cpu_per_thousand(), q.cpu_per_thousand());
        }
        // Dropping the monitors kills and reaps both processes before the next round.
    }
    Ok(())
}

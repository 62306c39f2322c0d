//! P8, migration of a stopped machine as users run it: `-machine none -m 1G -S` with 512 MiB
//! of random data loaded at address 0 (`-device loader,file=...,force-raw=on`), migrated by
//! QMP `migrate` to `unix:PATH`, where a thread of this process drains the socket. The same
//! command line runs serial-console and QEMU 7.2: on both, `-machine none` has one RAM block
//! "ram" at address 0, and the rest of the RAM was never written.
//!
//! Each migration is timed from the `migrate` command to the reader's end of file (then
//! `query-migrate` must say `completed`); the machine's CPU time is its process's user and
//! system time over the same span, from `/proc/PID/stat` (in clock ticks, 10 ms).

use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, ErrorKind, Read, Write};
use std::os::fd::AsFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::peer::{self, Process};
use crate::proc_status::process_cpu;
use crate::{transfer_deadline, Context, Result, Transfer};

/// The QEMU that P8 compares with.
pub const QEMU: &str = "qemu-system-x86_64";

/// A machine to migrate: its RAM, and how many bytes of random data are loaded at address 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Machine {
    /// Guest RAM in bytes (`-m`).
    pub ram: u64,
    /// Bytes of the random image loaded at address 0.
    pub data: u64,
}

/// What one migration measured.
#[derive(Debug, Clone)]
pub struct Migration {
    /// `units`: the machine's RAM in bytes (the same on both sides, so a ratio of rates is a
    /// ratio of times); `elapsed`: from `migrate` to the reader's end of file; `cpu`: the
    /// machine's process over that span.
    pub transfer: Transfer,
    /// Bytes the reader received: the stream's length.
    pub wire_bytes: u64,
}

/// serial-console: `$SERIAL_CONSOLE`, or the binary next to this program.
pub fn serial_console() -> PathBuf {
    if let Some(p) = std::env::var_os("SERIAL_CONSOLE") {
        return p.into();
    }
    std::env::current_exe().unwrap_or_default().with_file_name("serial-console")
}

/// Why P8 cannot run here: serial-console is not built (QEMU missing is a failure, said by
/// [`check_qemu`]).
pub fn serial_console_missing() -> Option<String> {
    let path = serial_console();
    (!path.is_file()).then(|| {
        format!(
            "serial-console not found at {} (cargo build --release -p demos --bin serial-console, \
             or SERIAL_CONSOLE=PATH)",
            path.display()
        )
    })
}

/// Fails, saying how to install it, if QEMU cannot be run.
pub fn check_qemu() -> Result<()> {
    match Command::new(QEMU).arg("--version").stdout(Stdio::null()).status() {
        Ok(s) if s.success() => Ok(()),
        _ => Err(format!("{QEMU} cannot be run: apt-get install qemu-system-x86")),
    }
}

/// Writes `len` bytes of pseudo-random data (xorshift64*: nothing compresses, no page is
/// zero or repeats) to `random.img` in `dir`.
pub fn random_image(dir: &Path, len: u64) -> Result<PathBuf> {
    let path = dir.join("random.img");
    let file = File::create(&path).context(format!("create {}", path.display()))?;
    let mut out = BufWriter::with_capacity(1 << 20, file);
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    for _ in 0..len / 8 {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        out.write_all(&x.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes())
            .context("write the random image")?;
    }
    out.flush().context("write the random image")?;
    Ok(path)
}

/// Starts `program` (QEMU or serial-console) as `machine` with `image` at address 0, stopped,
/// migrates it to a socket in `dir`, and measures. With `check`, the stream is kept and
/// loaded back with qevm: the RAM must be the image, then zeros.
pub fn migrate(
    program: &Path,
    machine: Machine,
    image: &Path,
    dir: &Path,
    check: bool,
) -> Result<Migration> {
    let name = program.file_name().map_or("the machine".into(), |n| n.to_string_lossy());
    let qmp_path = dir.join("p8-qmp.sock");
    let target = dir.join("p8-migration.sock");
    for p in [&qmp_path, &target] {
        let _ = std::fs::remove_file(p);
    }
    let stderr_path = dir.join("p8-stderr.txt");
    let stderr = File::create(&stderr_path).context("create the machine's stderr file")?;
    let child = Command::new(program)
        .args(["-machine", "none", "-m", &format!("{}M", machine.ram >> 20)])
        .args(["-nodefaults", "-display", "none", "-S"])
        .arg("-device")
        .arg(format!("loader,file={},addr=0,force-raw=on", image.display()))
        .arg("-qmp")
        .arg(format!("unix:{},server=on,wait=off", qmp_path.display()))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .context(format!("start {}", program.display()))?;
    let mut process = Process::new(child, name.to_string());
    let pid = process.child().id();
    let said = |e: String| {
        let stderr = std::fs::read_to_string(&stderr_path).unwrap_or_default();
        let lines: Vec<&str> = stderr.lines().collect();
        let last = &lines[lines.len().saturating_sub(3)..];
        if last.is_empty() {
            format!("{name}: {e}")
        } else {
            format!("{name}: {e} (its stderr ends: {})", last.join(" / "))
        }
    };
    let measured = run(&qmp_path, &target, pid, machine, check).map_err(&said)?;
    if check {
        verify(&measured.1, machine, image).map_err(&said)?;
    }
    // The machine has migrated; it ends at `quit`, or is killed by the drop.
    process.finish(Duration::from_secs(5))?;
    Ok(measured.0)
}

/// The migration itself, once the machine's process runs; the stream too with `keep`.
fn run(
    qmp_path: &Path,
    target: &Path,
    pid: u32,
    machine: Machine,
    keep: bool,
) -> Result<(Migration, Vec<u8>)> {
    let deadline = Instant::now() + peer::STARTUP + transfer_deadline(machine.ram);
    let listener = UnixListener::bind(target).context("listen for the migration")?;
    let drained = drain(listener, deadline, keep);
    let mut qmp = Qmp::connect(qmp_path, deadline)?;
    match qmp.execute(
        r#"{"execute": "migrate-set-parameters", "arguments": {"max-bandwidth": 1099511627776}}"#,
    )? {
        Ok(_) => {}
        // serial-console has no bandwidth limit, and no command to set one.
        Err(e) if e.contains("CommandNotFound") => {}
        Err(e) => return Err(format!("migrate-set-parameters: {e}")),
    }
    let cpu_before = process_cpu(pid)?;
    let start = Instant::now();
    let migrate =
        format!(r#"{{"execute": "migrate", "arguments": {{"uri": "unix:{}"}}}}"#, target.display());
    qmp.execute(&migrate)?.map_err(|e| format!("migrate: {e}"))?;
    let left = deadline.saturating_duration_since(Instant::now());
    let (wire_bytes, eof, stream) = drained
        .recv_timeout(left)
        .map_err(|_| "the migration did not end before the deadline".to_string())??;
    // The stream has ended; the status follows at once.
    loop {
        let reply = qmp.execute(r#"{"execute": "query-migrate"}"#)?;
        let reply = reply.map_err(|e| format!("query-migrate: {e}"))?;
        match string_field(&reply, "status").as_deref() {
            Some("completed") => break,
            Some("failed" | "cancelled") => return Err(format!("the migration ended: {reply}")),
            _ if Instant::now() > deadline => {
                return Err(format!("no completed status before the deadline: {reply}"))
            }
            _ => std::thread::sleep(Duration::from_millis(2)),
        }
    }
    let cpu = process_cpu(pid)?.saturating_sub(cpu_before);
    let _ = qmp.execute(r#"{"execute": "quit"}"#);
    let transfer = Transfer { units: machine.ram, elapsed: eof - start, cpu };
    Ok((Migration { transfer, wire_bytes }, stream))
}

/// A thread that accepts the migration's connection and reads it to its end, before
/// `deadline`: the bytes read, when the end came, and the bytes themselves with `keep`.
fn drain(
    listener: UnixListener,
    deadline: Instant,
    keep: bool,
) -> mpsc::Receiver<Result<(u64, Instant, Vec<u8>)>> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let read = || -> Result<(u64, Instant, Vec<u8>)> {
            let mut conn = accept(&listener, deadline)?;
            let mut buf = vec![0u8; 256 * 1024];
            let (mut total, mut kept) = (0u64, Vec::new());
            loop {
                let left = deadline.saturating_duration_since(Instant::now());
                conn.set_read_timeout(Some(left.max(Duration::from_millis(1))))
                    .context("set the reader's timeout")?;
                match conn.read(&mut buf) {
                    Ok(0) => return Ok((total, Instant::now(), kept)),
                    Ok(n) => {
                        total += n as u64;
                        if keep {
                            kept.extend_from_slice(&buf[..n]);
                        }
                    }
                    Err(e) if e.kind() == ErrorKind::Interrupted => {}
                    Err(e) => return Err(format!("read the migration after {total} bytes: {e}")),
                }
            }
        };
        let _ = tx.send(read());
    });
    rx
}

/// The one connection to `listener`, before `deadline`.
fn accept(listener: &UnixListener, deadline: Instant) -> Result<UnixStream> {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err("no migration connection before the deadline".into());
        }
        let timeout = PollTimeout::try_from(left).unwrap_or(PollTimeout::MAX);
        match poll(&mut [PollFd::new(listener.as_fd(), PollFlags::POLLIN)], timeout) {
            Ok(0) | Err(nix::errno::Errno::EINTR) => continue,
            Ok(_) => return listener.accept().map(|(s, _)| s).context("accept the migration"),
            Err(e) => return Err(format!("wait for the migration connection: {e}")),
        }
    }
}

/// A QMP client of one line per message, enough for P8: commands and their replies, events
/// skipped.
struct Qmp {
    input: BufReader<UnixStream>,
    output: UnixStream,
}

impl Qmp {
    /// Connects (the monitor may still be starting), reads the greeting, negotiates.
    fn connect(path: &Path, deadline: Instant) -> Result<Qmp> {
        let stream = peer::connect(path)?;
        let left = deadline.saturating_duration_since(Instant::now());
        stream.set_read_timeout(Some(left.max(Duration::from_millis(1)))).context("QMP")?;
        let output = stream.try_clone().context("QMP")?;
        let mut qmp = Qmp { input: BufReader::new(stream), output };
        let greeting = qmp.line()?;
        if !greeting.contains("\"QMP\"") {
            return Err(format!("QMP greeting expected, got {greeting}"));
        }
        qmp.execute(r#"{"execute": "qmp_capabilities"}"#)?
            .map_err(|e| format!("qmp_capabilities: {e}"))?;
        Ok(qmp)
    }

    fn line(&mut self) -> Result<String> {
        let mut line = String::new();
        match self.input.read_line(&mut line) {
            Ok(0) => Err("the QMP monitor closed".into()),
            Ok(_) => Ok(line.trim().to_string()),
            Err(e) => Err(format!("read from the QMP monitor: {e}")),
        }
    }

    /// Sends `command`; its reply line, as `Ok` for a return and `Err` for an error.
    fn execute(&mut self, command: &str) -> Result<std::result::Result<String, String>> {
        writeln!(self.output, "{command}").context("write to the QMP monitor")?;
        loop {
            let line = self.line()?;
            let body = line.trim_start_matches('{').trim_start();
            if body.starts_with("\"return\"") {
                return Ok(Ok(line));
            }
            if body.starts_with("\"error\"") {
                return Ok(Err(line));
            }
            // An event (STOP, MIGRATION, ...): not the reply.
        }
    }
}

/// The string value of the first `"key": "..."` in a line of JSON.
fn string_field(json: &str, key: &str) -> Option<String> {
    let quoted = format!("\"{key}\"");
    let rest = &json[json.find(&quoted)? + quoted.len()..];
    let rest = rest.trim_start().strip_prefix(':')?.trim_start().strip_prefix('"')?;
    Some(rest[..rest.find('"')?].to_string())
}

/// Loads `stream` with qevm (QEMU's "timer" and "globalstate" sized as QEMU 7.2 writes
/// them): the RAM must be the image, then zeros.
fn verify(stream: &[u8], machine: Machine, image: &Path) -> Result<()> {
    let mut ram = vec![0xa5u8; machine.ram as usize];
    let loader = qevm::Loader::new("none").fixed_size("timer", 24).fixed_size("globalstate", 104);
    loader.load(stream, &mut ram).map_err(|e| format!("the stream does not load: {e}"))?;
    let image = std::fs::read(image).context("read the image back")?;
    if ram.get(..image.len()) != Some(&image[..]) {
        return Err("the RAM loaded from the stream is not the image".into());
    }
    if ram[image.len()..].iter().any(|&b| b != 0) {
        return Err("the RAM after the image is not zero".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_found_in_both_spacings() {
        let qemu = r#"{"return": {"status": "completed", "ram": {"total": 1}}}"#;
        assert_eq!(string_field(qemu, "status").as_deref(), Some("completed"));
        let ours = r#"{"return":{"status":"active","total-time":3}}"#;
        assert_eq!(string_field(ours, "status").as_deref(), Some("active"));
        assert_eq!(string_field(ours, "nothing"), None);
    }
}

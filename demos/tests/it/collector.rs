//! Backlog across an outage (issue 18, point 3): serial-console's serial port is a client
//! socket (`reconnect-ms=200,backlog=1M`) to a collector, a real `socat` listening and
//! writing to a file. The collector is killed while the guest prints numbered lines and
//! started again 3 s later: the file has every line, in order (or exactly one gap marker whose
//! count is the drop counter), but for the line or two in flight at the kill, which the
//! kernel had taken into the dead collector's socket, and while the collector is away `strace -c` sees the
//! reconnect timer (a connect every 200 ms), not a busy loop.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use chardev_testkit::KillOnDrop as Machine;
use chardev_testkit::*;

const BIN: &str = env!("CARGO_BIN_EXE_serial-console");

/// Lines the guest prints, one every `EVERY_MS`: about 6 s in all.
const LINES: u32 = 3000;
const EVERY_MS: u32 = 2;

fn file_has(path: &Path, needle: &[u8]) -> bool {
    let got = std::fs::read(path).unwrap_or_default();
    got.windows(needle.len()).any(|w| w == needle)
}

/// A collector: socat listening on `sock`, appending what it reads to `file`; with a stdin
/// to type into the guest when `typing`.
fn collector(sock: &Path, file: &Path, typing: bool) -> KillOnDrop {
    let out = std::fs::OpenOptions::new().create(true).append(true).open(file).unwrap();
    let mut cmd = Command::new("socat");
    cmd.arg(if typing { "STDIO" } else { "-u" });
    if typing {
        cmd.arg(format!("UNIX-LISTEN:{},unlink-early", sock.display()));
    } else {
        cmd.arg(format!("UNIX-LISTEN:{},unlink-early", sock.display())).arg("STDOUT");
    }
    KillOnDrop(
        cmd.stdin(if typing { Stdio::piped() } else { Stdio::null() })
            .stdout(out)
            .spawn()
            .expect("run socat"),
    )
}

/// Syscall counts from `strace -c` attached to `pid` for `secs` seconds: (name, calls).
fn strace_counts(pid: u32, secs: u32) -> Vec<(String, u64)> {
    let out = output_within(
        Command::new("timeout").args(["-s", "INT", &secs.to_string()]).args([
            "strace",
            "-f",
            "-c",
            "-e",
            "trace=connect,epoll_wait,epoll_pwait,epoll_pwait2,poll,ppoll",
            "-p",
            &pid.to_string(),
        ]),
        "strace",
    );
    let text = String::from_utf8_lossy(&out.stderr).into_owned();
    text.lines()
        .filter_map(|l| {
            let cols: Vec<&str> = l.split_whitespace().collect();
            // % time, seconds, usecs/call, calls, [errors], syscall
            if cols.len() >= 5 && cols[0].parse::<f64>().is_ok() {
                let calls = cols[3].parse().ok()?;
                Some((cols.last()?.to_string(), calls))
            } else {
                None
            }
        })
        .collect()
}

#[test]
fn a_collector_away_for_3_s_loses_nothing_that_fits_the_backlog_and_no_busy_loop() {
    require_program("socat", "socat");
    require_program("strace", "strace");
    let dir = tempfile::tempdir().unwrap();
    let (sock, file) = (dir.path().join("collector.sock"), dir.path().join("collected"));
    let mut first = collector(&sock, &file, true);
    wait_unix_listening(&sock);
    let machine = Machine(
        Command::new(BIN)
            .args(["-nodefaults", "-display", "none"])
            .args([
                "-chardev",
                &format!("socket,id=c,path={},reconnect-ms=200,backlog=1M", sock.display()),
            ])
            .args(["-serial", "chardev:c"])
            .stdin(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let typing = first.0.stdin.as_mut().unwrap();
    typing.write_all(b"\r").unwrap();
    wait_until("the guest's prompt at the collector", || file_has(&file, b"guest$ "));
    typing.write_all(format!("lines {LINES} {EVERY_MS}\r").as_bytes()).unwrap();
    wait_until("the first lines", || file_has(&file, b"line 000100\r\n"));

    // The collector dies; the guest goes on printing. While it is away, the relay's side
    // tries to connect every 200 ms and otherwise sleeps.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(first.0.id() as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let _ = first.0.wait();
    let away = Instant::now();
    // What the dead collector had read and not yet written, or not yet read from its
    // socket, died with it: the kernel had taken those bytes, so no sender can know of
    // them. That is at most the line or two in flight at the kill; everything after must
    // come.
    let before = line_numbers(&file).last().copied().unwrap_or(0);
    let counts = strace_counts(machine.0.id(), 2);
    let calls = |name: &str| counts.iter().filter(|(n, _)| n == name).map(|(_, c)| *c).sum::<u64>();
    let (connects, waits) = (
        calls("connect"),
        counts
            .iter()
            .filter(|(n, _)| n.contains("poll") || n.contains("epoll"))
            .map(|(_, c)| c)
            .sum::<u64>(),
    );
    assert!((3..=20).contains(&connects), "connects in 2 s away: {connects} ({counts:?})");
    assert!(waits < 400, "the loop spins while the collector is away: {counts:?}");
    let left = Duration::from_secs(3).saturating_sub(away.elapsed());
    // The outage itself is the scenario: the collector stays away for 3 s.
    std::thread::sleep(left);

    let _second = collector(&sock, &file, false);
    let last = format!("line {LINES:06}\r\n");
    let end = Instant::now() + Duration::from_secs(60);
    while !file_has(&file, last.as_bytes()) {
        assert!(Instant::now() < end, "the last line never came");
        std::thread::sleep(Duration::from_millis(50));
    }
    let got = std::fs::read(&file).unwrap();
    let text = String::from_utf8_lossy(&got);
    assert_eq!(text.matches("[chardev: ").count(), 0, "1 MiB holds the outage: no gap");
    let numbers = line_numbers(&file);
    let split = numbers.iter().position(|&n| n > before).expect("lines after the outage");
    assert_eq!(numbers[..split], (1..=before).collect::<Vec<_>>(), "every line before the kill");
    let resumed = numbers[split];
    assert_eq!(
        numbers[split..],
        (resumed..=LINES).collect::<Vec<_>>(),
        "every line after the kill, once, in order"
    );
    // A line cut in two by the kill is also lost (its rest joins the next line).
    let in_flight = resumed - before - 1;
    assert!(in_flight <= 3, "lines {}..{resumed} lost at the kill", before + 1);
    eprintln!(
        "{connects} connects and {waits} waits in 2 s while the collector was away; \
         {in_flight} lines in flight died with the collector"
    );
}

/// The numbers of the whole `line NNNNNN` lines in `file`, in order.
fn line_numbers(file: &Path) -> Vec<u32> {
    let got = std::fs::read(file).unwrap_or_default();
    String::from_utf8_lossy(&got)
        .lines()
        .filter_map(|l| l.trim_end_matches('\r').strip_prefix("line "))
        .filter_map(|n| if n.len() == 6 { n.parse().ok() } else { None })
        .collect()
}

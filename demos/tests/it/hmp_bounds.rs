//! The human monitor's line editor is bounded as QEMU's readline is: a line keeps at most
//! 4,095 bytes (the rest of it is dropped, not echoed), the history at most 64 lines, and an
//! error quotes only the start of what was typed. Run against the real `serial-console`,
//! measuring what comes back on the socket and the process's resident memory.

use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::process::{Command, Stdio};

use chardev_testkit::*;

const BIN: &str = env!("CARGO_BIN_EXE_serial-console");
const MIB: u64 = 1 << 20;

/// A field of /proc/PID/status in bytes (`VmRSS`, `VmHWM`: resident now, resident at peak).
fn status_bytes(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with(&format!("{field}:"))).unwrap();
    let kib: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kib * 1024
}

/// Sends `input` from a second thread while reading here, until the reply to the
/// `info status` it ends with is complete; returns how many bytes came back and their tail.
fn exchange(s: &mut UnixStream, input: &[u8]) -> (usize, String) {
    assert!(input.ends_with(b"info status\r"));
    let mut writer = s.try_clone().unwrap();
    writer.set_write_timeout(Some(DEADLINE)).unwrap();
    std::thread::scope(|scope| {
        let sent = scope.spawn(move || writer.write_all(input));
        let (mut total, mut tail) = (0, Vec::new());
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match s.read(&mut buf) {
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                r => r.expect("the monitor answers within the deadline"),
            };
            assert!(n > 0, "the monitor hung up after {total} bytes");
            total += n;
            tail.extend_from_slice(&buf[..n]);
            tail.drain(..tail.len().saturating_sub(512));
            let text = String::from_utf8_lossy(&tail);
            if text.ends_with("(qemu) ") && text.contains("VM status: ") {
                sent.join().unwrap().expect("the monitor takes all the input");
                return (total, text.into_owned());
            }
        }
    })
}

#[test]
fn a_10_mb_line_and_1000_lines_of_history_keep_echo_and_memory_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hmp.sock");
    let m = KillOnDrop(
        Command::new(BIN)
            .args([
                "-nodefaults",
                "-monitor",
                &format!("unix:{},server=on,wait=off", path.display()),
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let pid = m.0.id();
    let mut s = connect_unix(&path);
    let mut banner = Vec::new();
    while !banner.ends_with(b"(qemu) ") {
        let mut byte = [0u8; 1];
        assert_eq!(s.read(&mut byte).unwrap(), 1, "the banner comes");
        banner.push(byte[0]);
    }
    let start = status_bytes(pid, "VmRSS");

    // One 10 MB line: QEMU keeps its first 4,095 bytes and drops the rest unechoed.
    let mut input = vec![b'a'; 10_000_000];
    input.extend_from_slice(b"\rinfo status\r");
    let (echoed, tail) = exchange(&mut s, &input);
    drop(input);
    assert!(tail.ends_with("VM status: running\r\n(qemu) "), "the command after it runs: {tail:?}");
    let (rss, peak) = (status_bytes(pid, "VmRSS"), status_bytes(pid, "VmHWM"));
    eprintln!(
        "10 MB line: echoed {echoed} bytes; VmRSS {} KiB at start, {} KiB after, peak {} KiB",
        start / 1024,
        rss / 1024,
        peak / 1024
    );
    assert!(echoed < 64 * 1024, "a 10 MB line echoed {echoed} bytes");
    assert!(peak < start + 8 * MIB, "a 10 MB line took the RSS from {start} to a {peak} peak");

    // 1,000 different long lines: the history keeps 64 of at most 4,095 bytes each.
    let mut input = Vec::new();
    for i in 0..1000 {
        input.extend_from_slice(format!("x{i:04} ").as_bytes());
        input.resize(input.len() + 64 * 1024, b'y');
        input.push(b'\r');
    }
    input.extend_from_slice(b"info status\r");
    let (echoed, tail) = exchange(&mut s, &input);
    drop(input);
    assert!(tail.ends_with("VM status: running\r\n(qemu) "), "{tail:?}");
    let rss = status_bytes(pid, "VmRSS");
    eprintln!(
        "1,000 lines of 64 KiB: echoed {echoed} bytes; VmRSS {} KiB at start, {} KiB after",
        start / 1024,
        rss / 1024
    );
    assert!(echoed < 1000 * 5 * 1024, "1,000 capped lines echoed {echoed} bytes");
    assert!(rss < start + 8 * MIB, "1,000 lines of history took the RSS from {start} to {rss}");
}

/// How many bytes wait unread in `s` (FIONREAD), without taking them.
fn unread(s: &UnixStream) -> usize {
    let mut n: nix::libc::c_int = 0;
    // SAFETY: FIONREAD writes one int through the valid pointer given, on an fd we own.
    let rc = unsafe { nix::libc::ioctl(s.as_raw_fd(), nix::libc::FIONREAD, &mut n) };
    assert_eq!(rc, 0, "FIONREAD: {}", std::io::Error::last_os_error());
    n as usize
}

/// A line of QMP from `r`, as JSON.
fn qmp_line(r: &mut impl std::io::BufRead) -> serde_json::Value {
    let mut line = String::new();
    assert!(r.read_line(&mut line).expect("QMP answers within the deadline") > 0, "QMP hung up");
    serde_json::from_str(line.trim_end()).unwrap_or_else(|e| panic!("{e}: {line}"))
}

#[test]
fn a_monitor_client_that_never_reads_stalls_nobody_and_gets_every_answer_once_it_reads() {
    let dir = tempfile::tempdir().unwrap();
    let (hmp, qmp) = (dir.path().join("hmp.sock"), dir.path().join("qmp.sock"));
    let m = KillOnDrop(
        Command::new(BIN)
            .args([
                "-nodefaults",
                "-monitor",
                &format!("unix:{},server=on,wait=off", hmp.display()),
            ])
            .args(["-qmp", &format!("unix:{},server=on,wait=off", qmp.display())])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let pid = m.0.id();
    let mut stuck = connect_unix(&hmp);
    let start = status_bytes(pid, "VmRSS");

    // 2,000 `help`s (about 1.5 MB of answers), and the client reads none of it.
    const LINES: usize = 2000;
    let mut writer = stuck.try_clone().unwrap();
    writer.set_write_timeout(Some(DEADLINE)).unwrap();
    let flood = std::thread::spawn(move || writer.write_all(&b"help\r".repeat(LINES)));
    // The monitor answers until the client's socket is full; from there on its answers wait.
    wait_until("the monitor to fill the client's socket", || unread(&stuck) >= 32 * 1024);

    // Meanwhile QMP, on the same loop, answers at once, again and again.
    let q = connect_unix(&qmp);
    let mut input = std::io::BufReader::new(q.try_clone().unwrap());
    let mut q = q;
    assert!(qmp_line(&mut input)["QMP"].is_object(), "the greeting");
    q.write_all(b"{\"execute\": \"qmp_capabilities\"}\r\n").unwrap();
    assert!(qmp_line(&mut input)["return"].is_object());
    for _ in 0..20 {
        let sent = std::time::Instant::now();
        q.write_all(b"{\"execute\": \"query-status\"}\r\n").unwrap();
        let reply = qmp_line(&mut input);
        assert_eq!(reply["return"]["status"], "running", "{reply}");
        assert!(sent.elapsed() < DEADLINE / 4, "QMP took {:?}", sent.elapsed());
    }
    let rss = status_bytes(pid, "VmRSS");
    eprintln!(
        "a client that reads nothing: {} bytes unread in its socket; VmRSS {} KiB at start, {} KiB now",
        unread(&stuck),
        start / 1024,
        rss / 1024
    );
    assert!(
        rss < start + 8 * MIB,
        "a client that reads nothing took the RSS from {start} to {rss}"
    );

    // Once the client reads, every answer is there: the banner's prompt and one per line.
    let mut text = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    let prompts = |t: &[u8]| t.windows(7).filter(|w| w == b"(qemu) ").count();
    while prompts(&text) < LINES + 1 {
        let n = stuck.read(&mut buf).expect("the answers keep coming");
        assert!(n > 0, "the monitor hung up after {} bytes", text.len());
        text.extend_from_slice(&buf[..n]);
    }
    assert!(flood.join().unwrap().is_ok(), "the monitor takes all the input once answered");
    let help_lines = String::from_utf8_lossy(&text).matches("quit|q  -- quit the emulator").count();
    assert_eq!(help_lines, LINES, "every help is answered in full");
}

/// Backspace (DEL or BS) at the start of a line does nothing in QEMU's readline; the fuzz
/// target `hmp_line_editor` found ours putting a DEL into the line (then "unknown command").
/// The same keys, sent to QEMU 7.2's human monitor and to ours, run the command that follows.
#[test]
fn backspace_at_the_start_of_a_line_does_nothing_as_in_qemu() {
    require_program("qemu-system-x86_64", "qemu-system-x86");
    let dir = tempfile::tempdir().unwrap();
    for (i, (name, program, extra)) in [
        ("serial-console", BIN, &["-nodefaults"][..]),
        (
            "QEMU 7.2",
            "qemu-system-x86_64",
            &["-machine", "none", "-nodefaults", "-display", "none"][..],
        ),
    ]
    .into_iter()
    .enumerate()
    {
        let path = dir.path().join(format!("hmp{i}.sock"));
        let monitor = format!("unix:{},server=on,wait=off", path.display());
        let _m = KillOnDrop(
            Command::new(program)
                .args(extra)
                .args(["-monitor", &monitor])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .spawn()
                .unwrap(),
        );
        let mut s = connect_unix(&path);
        s.set_read_timeout(Some(DEADLINE)).unwrap();
        let mut banner = Vec::new();
        while !banner.ends_with(b"(qemu) ") {
            let mut byte = [0u8; 1];
            assert_eq!(s.read(&mut byte).unwrap(), 1, "{name}: the banner comes");
            banner.push(byte[0]);
        }
        let (_, tail) = exchange(&mut s, b"\x7f\x08\x7finfo status\r");
        assert!(tail.contains("VM status: running"), "{name}: {tail:?}");
        assert!(!tail.contains("unknown command"), "{name}: {tail:?}");
    }
}

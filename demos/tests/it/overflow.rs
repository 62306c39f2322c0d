//! `overflow=drop` (issue 18, point 1): the guest's UART writes into a socket whose only
//! peer, a real `socat`, is SIGSTOPped. With `drop` the guest goes on: it writes its whole
//! flood while socat is stopped (QMP, on another chardev, shows the counters grow and the
//! machine running), and when socat resumes it gets what fit, one gap marker, the rest;
//! the drop counter is exactly what was written minus what arrived.

use std::io::Write;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use chardev_testkit::KillOnDrop as Machine;
use chardev_testkit::*;
use demos::machine::flood_pattern;
use serde_json::{json, Value};

const BIN: &str = env!("CARGO_BIN_EXE_serial-console");

/// Far more than the overflow queue (1 MiB) and the socket's buffers.
const FLOOD: u64 = 32 << 20;

/// A QMP client: the greeting read, capabilities negotiated.
struct Qmp(std::io::BufReader<UnixStream>, UnixStream);

impl Qmp {
    fn connect(path: &Path) -> Qmp {
        let s = connect_unix(path);
        let mut q = Qmp(std::io::BufReader::new(s.try_clone().unwrap()), s);
        q.line();
        q.run("qmp_capabilities", json!({}));
        q
    }

    fn line(&mut self) -> Value {
        use std::io::BufRead;
        let mut line = String::new();
        self.0.read_line(&mut line).expect("a QMP line");
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line:?}"))
    }

    fn run(&mut self, command: &str, arguments: Value) -> Value {
        let msg = json!({"execute": command, "arguments": arguments});
        writeln!(self.1, "{msg}").unwrap();
        loop {
            let v = self.line();
            if let Some(r) = v.get("return") {
                return r.clone();
            }
            assert!(v.get("event").is_some(), "{command}: {v}");
        }
    }

    fn counters(&mut self, id: &str) -> Value {
        let all = self.run("query-chardev", json!({}));
        let entry = all.as_array().unwrap().iter().find(|c| c["label"] == id).unwrap().clone();
        entry["__com.example_counters"].clone()
    }
}

#[test]
fn a_stopped_socat_never_stalls_the_guest_with_overflow_drop_and_the_drops_add_up() {
    require_program("socat", "socat");
    let dir = tempfile::tempdir().unwrap();
    let (serial, qmp, out) =
        (dir.path().join("s.sock"), dir.path().join("q.sock"), dir.path().join("socat.out"));
    let _m = Machine(
        Command::new(BIN)
            .args(["-nodefaults", "-display", "none"])
            .args([
                "-serial",
                &format!("unix:{},server=on,wait=off,overflow=drop", serial.display()),
            ])
            .args(["-qmp", &format!("unix:{},server=on,wait=off", qmp.display())])
            .stdin(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_unix_listening(&qmp);
    let mut q = Qmp::connect(&qmp);
    wait_unix_listening(&serial);
    let mut socat = KillOnDrop(
        Command::new("socat")
            .arg("STDIO")
            .arg(format!("UNIX-CONNECT:{}", serial.display()))
            .stdin(Stdio::piped())
            .stdout(std::fs::File::create(&out).unwrap())
            .spawn()
            .unwrap(),
    );
    let has = |needle: &[u8]| {
        let got = std::fs::read(&out).unwrap_or_default();
        got.windows(needle.len()).any(|w| w == needle)
    };
    // An empty line: the guest answers with its prompt once the connection is up.
    socat.0.stdin.as_mut().unwrap().write_all(b"\r").unwrap();
    wait_until("the guest's prompt", || has(b"guest$ "));
    let command = format!("flood {FLOOD}\r");
    socat.0.stdin.as_mut().unwrap().write_all(command.as_bytes()).unwrap();
    // Stop socat as soon as the guest has echoed the command: the flood has begun.
    wait_until("the command's echo", || has(format!("flood {FLOOD}\r\n").as_bytes()));
    let pid = nix::unistd::Pid::from_raw(socat.0.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGSTOP).unwrap();

    // The guest writes the whole flood while nobody reads: the counters say so, and the
    // machine runs.
    let end = Instant::now() + Duration::from_secs(60);
    let written = loop {
        let c = q.counters("serial0");
        let written = ["bytes-out", "dropped-overflow", "queued-overflow"]
            .iter()
            .map(|k| c[k].as_u64().unwrap())
            .sum::<u64>();
        if written >= FLOOD {
            break written;
        }
        assert!(Instant::now() < end, "the guest stalled: {c}");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(written >= FLOOD);
    assert_eq!(q.run("query-status", json!({}))["status"], "running");
    let c = q.counters("serial0");
    assert_eq!(c["blocked-ns"], 0, "the guest never waited: {c}");

    // socat resumes and gets the rest: up to the prompt after the flood.
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGCONT).unwrap();
    let echo = format!("flood {FLOOD}\r\n");
    let end = Instant::now() + Duration::from_secs(60);
    let got = loop {
        let got = std::fs::read(&out).unwrap();
        let start = got.windows(echo.len()).position(|w| w == echo.as_bytes()).unwrap();
        if got[start..].ends_with(b"\r\nguest$ ") {
            break got[start + echo.len()..got.len() - b"\r\nguest$ ".len()].to_vec();
        }
        assert!(Instant::now() < end, "socat did not get the end of the flood");
        std::thread::sleep(Duration::from_millis(50));
    };
    let pattern: Vec<u8> = (0..FLOOD).map(flood_pattern).collect();
    let lost = one_gap(&got, &pattern);
    let c = q.counters("serial0");
    assert_eq!(c["dropped-overflow"].as_u64().unwrap(), lost, "drops = written - arrived: {c}");
}

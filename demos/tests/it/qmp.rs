//! QMP on serial-console against the real qemu.qmp library (the async QMPClient and the
//! legacy sync client, both passing fds), and a raw socket for malformed input, pipelining
//! and split writes.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::process::{Command, Stdio};

use chardev_testkit::KillOnDrop as Machine;
use chardev_testkit::*;

const BIN: &str = env!("CARGO_BIN_EXE_serial-console");

fn qmp_machine(dir: &std::path::Path) -> (Machine, std::path::PathBuf) {
    let path = dir.join("qmp.sock");
    let child = Command::new(BIN)
        .args(["-nodefaults", "-qmp", &format!("unix:{},server=on,wait=off", path.display())])
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    // The file appears at bind(), a moment before listen(): wait until a connect works.
    wait_until("the QMP socket to listen", || UnixStream::connect(&path).is_ok());
    (Machine(child), path)
}

fn run_peer(script: &str, path: &std::path::Path) {
    let out = output_within(
        python().arg(format!("{}/tests/peers/{script}", env!("CARGO_MANIFEST_DIR"))).arg(path),
        script,
    );
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).trim() == "ok",
        "{script}:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_async_qmp_client_with_events_chardevs_errors_and_an_fd() {
    require_python_module("qemu.qmp", "qemu.qmp");
    let dir = tempfile::tempdir().unwrap();
    let (mut m, path) = qmp_machine(dir.path());
    run_peer("qmp_async.py", &path);
    let status = wait_exit(&mut m.0, "serial-console after quit");
    assert!(status.success(), "quit exits 0: {status}");
}

#[test]
fn the_legacy_sync_client_with_send_fd_scm() {
    require_python_module("qemu.qmp", "qemu.qmp");
    let dir = tempfile::tempdir().unwrap();
    let (mut m, path) = qmp_machine(dir.path());
    run_peer("qmp_legacy.py", &path);
    assert!(wait_exit(&mut m.0, "serial-console after quit").success());
}

struct Raw {
    out: UnixStream,
    input: BufReader<UnixStream>,
}

impl Raw {
    fn connect(path: &std::path::Path) -> Raw {
        let s = UnixStream::connect(path).unwrap();
        s.set_read_timeout(Some(DEADLINE)).unwrap();
        Raw { out: s.try_clone().unwrap(), input: BufReader::new(s) }
    }
    fn line(&mut self) -> serde_json::Value {
        let mut line = String::new();
        assert!(
            self.input.read_line(&mut line).expect("no reply in time") > 0,
            "connection closed"
        );
        assert!(line.ends_with("\r\n"), "QMP lines end in CR LF: {line:?}");
        serde_json::from_str(line.trim_end()).unwrap_or_else(|e| panic!("{e}: {line}"))
    }
    fn send(&mut self, text: &str) {
        self.out.write_all(text.as_bytes()).unwrap();
    }
}

#[test]
fn malformed_input_pipelining_and_split_writes() {
    let dir = tempfile::tempdir().unwrap();
    let (_m, path) = qmp_machine(dir.path());
    let mut q = Raw::connect(&path);
    let greeting = q.line();
    assert!(greeting["QMP"]["capabilities"].is_array(), "{greeting}");
    q.send(r#"{"execute":"query-status"}"#);
    assert_eq!(
        q.line()["error"]["desc"],
        "Expecting capabilities negotiation with 'qmp_capabilities'"
    );
    q.send("{\"execute\":\"qmp_capabilities\"}\n");
    assert_eq!(q.line(), serde_json::json!({"return": {}}));
    // Two objects in one write: two replies, in order, ids echoed.
    q.send(r#"{"execute":"query-status","id":1}{"execute":"query-name","id":"two"}"#);
    assert_eq!(q.line()["id"], 1);
    assert_eq!(q.line()["id"], "two");
    // One object in pieces: nothing until its closing brace.
    q.send(r#"{"execute": "query-sta"#);
    q.send(r#"tus", "id": {"nested": [1, "}"]}}"#);
    assert_eq!(q.line()["id"], serde_json::json!({"nested": [1, "}"]}));
    // Malformed input is answered and the connection lives on.
    q.send("{bad}\n");
    let e = q.line();
    assert_eq!(e["error"]["class"], "GenericError");
    assert!(e["error"]["desc"].as_str().unwrap().starts_with("JSON parse error"), "{e}");
    q.send("[1, 2]\n");
    assert_eq!(q.line()["error"]["desc"], "QMP input must be a JSON object");
    q.send(r#"{"execute":"chardev-remove","arguments":{"id":5}}"#);
    assert_eq!(q.line()["error"]["desc"], "Invalid parameter type for 'id', expected: string");
    q.send(r#"{"execute":"chardev-remove"}"#);
    assert_eq!(q.line()["error"]["desc"], "Parameter 'id' is missing");
    q.send(r#"{"execute":"getfd","arguments":{"fdname":"x"}}"#);
    assert_eq!(q.line()["error"]["desc"], "No file descriptor supplied via SCM_RIGHTS");
    // The monitor's own chardev is busy.
    q.send(r#"{"execute":"chardev-remove","arguments":{"id":"compat_monitor0"}}"#);
    assert_eq!(q.line()["error"]["desc"], "Chardev 'compat_monitor0' is busy");
    q.send(r#"{"execute":"query-status"}"#);
    assert_eq!(q.line()["return"]["status"], "running");
}

#[test]
fn a_new_client_gets_a_fresh_greeting_and_must_negotiate_again() {
    let dir = tempfile::tempdir().unwrap();
    let (_m, path) = qmp_machine(dir.path());
    let mut first = Raw::connect(&path);
    first.line();
    first.send(r#"{"execute":"qmp_capabilities"}"#);
    first.line();
    drop(first);
    let mut second = Raw::connect(&path);
    assert!(second.line().get("QMP").is_some(), "greeting again");
    second.send(r#"{"execute":"query-status"}"#);
    assert_eq!(second.line()["error"]["class"], "CommandNotFound");
}

#[test]
fn fds_on_the_same_sendmsg_as_getfd_as_libvirt_sends_them() {
    let dir = tempfile::tempdir().unwrap();
    let (_m, path) = qmp_machine(dir.path());
    let mut q = Raw::connect(&path);
    q.line();
    q.send(r#"{"execute":"qmp_capabilities"}"#);
    q.line();
    // Close-on-exec: a copy in another test's child would hold the pipe open after closefd.
    let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap();
    let cmd = br#"{"execute":"getfd","arguments":{"fdname":"lv"}}"#;
    let sent = chardev::fd::send_with_fds(
        std::os::fd::AsFd::as_fd(&q.out),
        cmd,
        &[std::os::fd::AsFd::as_fd(&w)],
    )
    .unwrap();
    assert_eq!(sent, cmd.len());
    assert_eq!(q.line(), serde_json::json!({"return": {}}));
    drop(w);
    q.send(r#"{"execute":"closefd","arguments":{"fdname":"lv"}}"#);
    assert_eq!(q.line(), serde_json::json!({"return": {}}));
    let mut buf = [0u8; 1];
    let ended = chardev::fd::wait_readable(std::os::fd::AsFd::as_fd(&r), Some(DEADLINE)).unwrap();
    assert!(ended, "closefd did not close the monitor's copy within {DEADLINE:?}");
    assert_eq!(nix::unistd::read(&r, &mut buf).unwrap(), 0, "closefd closed the monitor's copy");
}

fn qemu_machine(dir: &std::path::Path) -> (Machine, std::path::PathBuf) {
    let path = dir.join("qemu.sock");
    let child = Command::new("qemu-system-x86_64")
        .args(["-machine", "none", "-nodefaults", "-display", "none", "-chardev"])
        .arg("ringbuf,id=rb0,size=4096")
        .arg("-qmp")
        .arg(format!("unix:{},server=on,wait=off", path.display()))
        .stdin(Stdio::null())
        .spawn()
        .expect("qemu-system-x86_64 (apt-get install qemu-system-x86)");
    wait_until("QEMU's QMP socket to listen", || UnixStream::connect(&path).is_ok());
    (Machine(child), path)
}

/// Sends a 1,100 KiB ringbuf-write, an object with a key twice, and 10 query-status with ids;
/// returns the replies' ids (or error texts).
fn big_command_then_ten(path: &std::path::Path, size: usize) -> Vec<serde_json::Value> {
    let mut q = Raw::connect(path);
    q.line();
    q.send(r#"{"execute":"qmp_capabilities"}"#);
    q.line();
    // Braces and escaped quotes inside the string: a splitter that loses its place in the
    // string would find commands in the middle of it.
    let filler = r#"}}{\"execute\":\"quit\"}"#;
    let data = filler.repeat(size / filler.len() + 1);
    let writer = {
        let mut out = q.out.try_clone().unwrap();
        let text = format!(
            r#"{{"execute":"ringbuf-write","arguments":{{"device":"rb0","data":"{data}"}},"id":"big"}}"#
        );
        std::thread::spawn(move || out.write_all(text.as_bytes()).is_ok())
    };
    assert!(writer.join().unwrap());
    q.send(r#"{"execute": "query-status", "execute": "quit", "id": "dup"}"#);
    for i in 0..10 {
        q.send(&format!(r#"{{"execute":"query-status","id":{i}}}"#));
    }
    (0..12)
        .map(|_| {
            let reply = q.line();
            match reply.get("error") {
                Some(e) => serde_json::json!({"id": reply["id"], "error": e["desc"]}),
                None => reply["id"].clone(),
            }
        })
        .collect()
}

#[test]
fn a_big_command_and_a_duplicate_key_leave_the_connection_answering_as_in_qemu() {
    require_program("qemu-system-x86_64", "qemu-system-x86");
    let dir = tempfile::tempdir().unwrap();
    let ours = {
        let (_m, path) = qmp_machine(dir.path());
        // serial-console has no ringbuf by default: make one.
        let mut q = Raw::connect(&path);
        q.line();
        q.send(r#"{"execute":"qmp_capabilities"}"#);
        q.line();
        q.send(r#"{"execute":"chardev-add","arguments":{"id":"rb0","backend":{"type":"ringbuf","data":{"size":4096}}}}"#);
        assert_eq!(q.line(), serde_json::json!({"return": {}}));
        drop(q);
        big_command_then_ten(&path, 1100 << 10)
    };
    assert_eq!(ours[0], "big", "the 1,100 KiB command is answered: {:?}", ours[0]);
    let dup = ours[1]["error"].as_str().unwrap_or_default();
    assert!(dup.starts_with("JSON parse error, duplicate key"), "{:?}", ours[1]);
    assert_eq!(&ours[2..], (0..10).map(serde_json::Value::from).collect::<Vec<_>>());
    let (_q, qemu_path) = qemu_machine(dir.path());
    let qemu = big_command_then_ten(&qemu_path, 1100 << 10);
    assert_eq!(qemu[0], ours[0]);
    assert!(qemu[1]["error"].as_str().unwrap().starts_with("JSON parse error, duplicate key"));
    assert_eq!(qemu[2..], ours[2..]);
}

#[test]
fn a_command_over_the_64_mib_limit_is_one_error_and_the_next_ten_are_answered() {
    let dir = tempfile::tempdir().unwrap();
    let (_m, path) = qmp_machine(dir.path());
    let replies = big_command_then_ten(&path, 65 << 20);
    assert_eq!(replies[0]["error"], "JSON parse error, token size limit exceeded", "{replies:?}");
    assert!(replies[1]["error"].as_str().unwrap().contains("duplicate key"));
    assert_eq!(&replies[2..], (0..10).map(serde_json::Value::from).collect::<Vec<_>>());
}

#[test]
fn sessions_are_listed_steered_and_reported_over_qmp_with_qemu_qmp() {
    require_python_module("qemu.qmp", "qemu.qmp");
    let dir = tempfile::tempdir().unwrap();
    let qmp = dir.path().join("qmp.sock");
    let serial = dir.path().join("serial.sock");
    let child = Command::new(BIN)
        .args(["-nodefaults", "-qmp", &format!("unix:{},server=on,wait=off", qmp.display())])
        .args([
            "-serial",
            &format!("unix:{},server=on,wait=off,clients=3,history=64k", serial.display()),
        ])
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let _m = Machine(child);
    wait_until("the QMP socket to listen", || UnixStream::connect(&qmp).is_ok());
    let out = output_within(
        python()
            .arg(format!("{}/tests/peers/qmp_sessions.py", env!("CARGO_MANIFEST_DIR")))
            .arg(&qmp)
            .arg(&serial),
        "qmp_sessions.py",
    );
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).trim() == "ok",
        "qmp_sessions.py:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

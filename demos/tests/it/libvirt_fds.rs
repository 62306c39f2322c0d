//! The seed as libvirt uses it, against QEMU 7.2 itself: one script (tests/peers/libvirt_fds.py)
//! drives fd sets (`add-fd`, `remove-fd`, `query-fdsets`, `/dev/fdset/N` in `file` and
//! `logfile`), named fds in socket addresses and stale fds the way libvirt does, first against
//! `qemu-system-x86_64 -machine none`, then against `serial-console`, in the same run. Replies
//! and effects (the sender's fd flags, file contents, the target's open fd count) must be the
//! same step by step, except where serial-console parts from QEMU on purpose: each such place
//! is patched into QEMU's transcript below with the reason, and the patched value is asserted.

use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::{Command, Stdio};

use chardev_testkit::*;
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_serial-console");
const QEMU: &str = "qemu-system-x86_64";

/// `program` (QEMU or serial-console) with no machine and a QMP socket `DIR/q.sock`, once
/// the socket listens; killed when dropped.
fn start(program: &str, dir: &Path) -> (KillOnDrop, std::path::PathBuf) {
    std::fs::create_dir_all(dir).unwrap();
    let sock = dir.join("q.sock");
    let child = Command::new(program)
        .args(["-machine", "none", "-nodefaults", "-display", "none", "-qmp"])
        .arg(format!("unix:{},server=on,wait=off", sock.display()))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("cannot run {program}: {e} (for QEMU: apt-get install qemu-system-x86)")
        });
    let target = KillOnDrop(child);
    wait_until("the QMP socket to listen", || UnixStream::connect(&sock).is_ok());
    (target, sock)
}

/// Runs the script against a fresh target started by `args`; returns its transcript.
fn transcript(program: &str, dir: &Path) -> Vec<Value> {
    let (target, sock) = start(program, dir);
    let out = output_within(
        python()
            .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/peers/libvirt_fds.py"))
            .arg(&sock)
            .arg(dir.join("w"))
            .arg(target.0.id().to_string()),
        "libvirt_fds.py",
    );
    assert!(
        out.status.success(),
        "libvirt_fds.py against {program}:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

fn steps_between<'a>(names: &'a [String], first: &str, last: &str) -> &'a [String] {
    let a = names.iter().position(|n| n == first).unwrap();
    let b = names.iter().position(|n| n == last).unwrap();
    &names[a..=b]
}

/// QEMU's transcript, changed where serial-console is meant to differ.
fn expected(qemu: &[Value]) -> Vec<Value> {
    let mut want = qemu.to_vec();
    let names: Vec<String> = qemu.iter().map(|s| s["step"].as_str().unwrap().to_string()).collect();
    let step = |name: &str| -> usize {
        names.iter().position(|n| n == name).unwrap_or_else(|| panic!("no step {name}"))
    };
    for (i, name) in names.iter().enumerate() {
        // 1. The seed: a file chardev on /dev/fdset/N never turns O_NONBLOCK on in the
        //    description it shares with the sender (QEMU's file backend does: libvirt's copy
        //    of the file, or virtlogd's pipe, becomes non-blocking under it).
        let file_step =
            ["file-append-", "file-trunc-", "mixed-", "pipe-out-", "file-after-logfiles-"]
                .iter()
                .any(|p| name.starts_with(p));
        if file_step {
            for key in ["sender", "sender_wo"] {
                let sender = want[i]["effects"].get_mut(key);
                if let Some(b) = sender.and_then(|s| s.get_mut("blocking")) {
                    *b = Value::Bool(true);
                }
            }
        }
    }
    // 6. A logfile is always written O_APPEND (issue 18, point 4: an external copytruncate
    //    must leave no hole), so one on /dev/fdset/N gets the flag on the description it
    //    shares with the sender even with logappend=off (it is still truncated at open);
    //    QEMU leaves it off there.
    let added = step("log-trunc-chardev-add");
    for (i, name) in names.iter().enumerate().skip(added) {
        if name.starts_with("log-trunc-") {
            if let Some(a) = want[i]["effects"].get_mut("sender").and_then(|s| s.get_mut("append"))
            {
                *a = Value::Bool(true);
            }
        }
    }
    // 2. QEMU closes a logfile's fd-set duplicate without telling the set (a leak): the set
    //    stays listed with no fds forever, and its stale number later captures another
    //    chardev's duplicate. Here every duplicate is released with its chardev.
    for (name, leaked) in [
        ("log-append-query-fdsets-after-remove", &[14][..]),
        ("log-trunc-query-fdsets-while-open", &[14]),
        ("log-trunc-query-fdsets-after-remove", &[14, 15]),
        ("file-after-logfiles-query-fdsets-while-open", &[14, 15]),
        ("file-after-logfiles-query-fdsets-after-remove", &[15, 17]),
        ("final", &[15, 17]),
    ] {
        let i = step(name);
        let sets = want[i]["reply"]["return"].as_array_mut().unwrap();
        sets.retain(|s| !leaked.contains(&s["fdset-id"].as_i64().unwrap()));
    }
    // 3. A listening socket passed with getfd is made non-blocking for the loop (the fd
    //    contract: code that needs non-blocking sets it itself); QEMU accepts on it blocking.
    let i = step("listener-chardev-add");
    want[i]["effects"]["sender"]["blocking"] = Value::Bool(false);
    // 4. With no frontend on the chardev, a client's hang-up is seen when a frontend reads
    //    what the client sent (nothing is dropped unread); QEMU drops the connection at once.
    //    Until the chardev goes, the connection shows and holds one fd.
    for name in steps_between(&names, "listener-client-gone", "connected-as-server-closefd") {
        let i = step(name);
        if let Some(n) = want[i]["effects"]["target_fds"].as_i64() {
            want[i]["effects"]["target_fds"] = Value::from(n + 1);
        }
        if let Some(chardevs) = want[i]["effects"].get_mut("chardevs").and_then(Value::as_array_mut)
        {
            for c in chardevs.iter_mut().filter(|c| c["label"] == "s0") {
                let f = c["filename"].as_str().unwrap().trim_start_matches("disconnected:");
                c["filename"] = Value::from(f.to_string());
            }
        }
    }
    // 5. Fds belong to the input they came with (issue 14, point 5): an fd on a command that
    //    does not take it is closed after that command, and a later getfd finds nothing
    //    (QEMU keeps it for the next getfd, so one client could take another's fd).
    let i = step("unclaimed-fd-on-query-status");
    let n = want[i]["effects"]["target_fds"].as_i64().unwrap();
    want[i]["effects"]["target_fds"] = Value::from(n - 1);
    let i = step("getfd-takes-stale-fd");
    want[i]["reply"] = serde_json::json!({"error": {"class": "GenericError",
        "desc": "No file descriptor supplied via SCM_RIGHTS"}});
    want[i]["effects"]["pipe_eof"] = Value::Bool(true);
    want[i]["effects"]["target_fds"] = Value::from(0);
    let i = step("closefd-stale");
    want[i]["reply"] = serde_json::json!({"error": {"class": "GenericError",
        "desc": "File descriptor named 'stale' not found"}});
    want
}

/// Equal, except that an error text of ours may go on after QEMU's (with what to do).
fn same(want: &Value, got: &Value) -> bool {
    match (want, got) {
        (Value::Object(w), Value::Object(g)) => {
            w.len() == g.len() && w.iter().all(|(k, v)| g.get(k).is_some_and(|gv| same(v, gv)))
        }
        (Value::Array(w), Value::Array(g)) => {
            w.len() == g.len() && w.iter().zip(g).all(|(a, b)| same(a, b))
        }
        (Value::String(w), Value::String(g)) => g.starts_with(w.as_str()),
        _ => want == got,
    }
}

#[test]
fn libvirts_fd_sequences_give_qemu_7_2s_replies_and_effects() {
    require_program("qemu-system-x86_64", "qemu-system-x86");
    let dir = tempfile::tempdir().unwrap();
    let qemu = transcript(QEMU, &dir.path().join("q"));
    let ours = transcript(BIN, &dir.path().join("o"));
    let want = expected(&qemu);
    assert_eq!(want.len(), ours.len(), "the script ran a different number of steps");
    let differing: Vec<String> = want
        .iter()
        .zip(&ours)
        .filter(|(w, g)| !same(w, g))
        .map(|(w, g)| format!("{}\n  want: {w}\n  got:  {g}", w["step"]))
        .collect();
    assert!(differing.is_empty(), "{} steps differ:\n{}", differing.len(), differing.join("\n"));
}

#[test]
fn eight_rounds_of_libvirt_hotplug_and_two_thousand_fd_passing_connections_leak_no_fd() {
    let dir = tempfile::tempdir().unwrap();
    let (target, sock) = start(BIN, dir.path());
    let out = output_within(
        python()
            .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/peers/libvirt_hotplug.py"))
            .arg(&sock)
            .arg(dir.path())
            .arg(target.0.id().to_string()),
        "libvirt_hotplug.py",
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let counts: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(counts["after"], counts["before"], "fds after 8 hotplug rounds: {counts}");
    assert_eq!(counts["fdsets"], serde_json::json!([]), "no fd set is left: {counts}");
    assert_eq!(counts["after_connections"], counts["before"], "after 2,000 connections: {counts}");
}

/// Runs `fd_kinds.py` against a fresh `program`; returns what it printed.
fn fd_kinds(program: &str, dir: &Path) -> Value {
    let (_target, sock) = start(program, dir);
    let out = output_within(
        python()
            .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/peers/fd_kinds.py"))
            .arg(&sock)
            .arg(dir),
        "fd_kinds.py",
    );
    assert!(out.status.success(), "{program}: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn every_fd_kind_libvirt_passes_arrives_blocking_through_getfd_and_add_fd_as_in_qemu() {
    require_python_module("qemu.qmp", "qemu.qmp");
    require_program("qemu-system-x86_64", "qemu-system-x86");
    let dir = tempfile::tempdir().unwrap();
    let ours = fd_kinds(BIN, &dir.path().join("o"));
    let cases = ours.as_object().unwrap();
    assert_eq!(cases.len(), 16, "4 kinds x getfd/add-fd x 2 ways: {ours}");
    for (case, blocking) in cases {
        assert_eq!(blocking, &Value::Bool(true), "{case}: the sender's copy is blocking now");
    }
    assert_eq!(fd_kinds(QEMU, &dir.path().join("q")), ours, "QEMU 7.2 does the same");
}

//! The comparison binary in smoke mode, as the test suite runs it: every scenario moves a
//! tiny amount and must deliver all of it, intact; timings are printed, never judged. And a
//! relay that corrupts the stream must make it fail.

use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use chardev_testkit::require_program;

const COMPARE: &str = env!("CARGO_BIN_EXE_compare");

/// The smoke run's bound: it takes a second or two; a hang must fail, not stall the suite.
const DEADLINE: Duration = Duration::from_secs(60);

/// chardev-relay, when the same build has it (`cargo test --workspace` does).
fn relay() -> Option<PathBuf> {
    let path = Path::new(COMPARE).with_file_name("chardev-relay");
    path.is_file().then_some(path)
}

/// Runs `compare ARGS` to its end (killing it at the deadline); its exit success and stdout.
fn compare(args: &[&str]) -> (bool, String) {
    let mut child = Command::new(COMPARE)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .expect("start compare");
    let mut stdout = child.stdout.take().expect("compare's stdout");
    let reader = std::thread::spawn(move || {
        let mut out = String::new();
        stdout.read_to_string(&mut out).expect("read compare's output");
        out
    });
    let deadline = Instant::now() + DEADLINE;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for compare") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("compare --smoke still running after {DEADLINE:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let out = reader.join().expect("the output reader");
    print!("{out}");
    (status.success(), out)
}

fn line<'a>(out: &'a str, prefix: &str) -> Option<&'a str> {
    out.lines().find(|l| l.starts_with(prefix))
}

#[test]
fn every_scenario_delivers_everything_intact() {
    require_program("socat", "socat");
    require_program("qemu-system-x86_64", "qemu-system-x86");
    // P16 and P17 (TLS): certificates from certtool, OpenSSL's s_server and socat's OPENSSL.
    require_program("openssl", "openssl");
    require_program("certtool", "gnutls-bin");
    let relay = relay();
    let mut args = vec!["--smoke"];
    let relay_arg = relay.as_ref().map(|p| p.display().to_string());
    if let Some(r) = &relay_arg {
        args.extend(["--relay", r]);
    }
    let (ok, out) = compare(&args);
    assert!(ok, "compare --smoke failed");
    // P17: every handshake the client completed was an Opened on the chardev.
    for id in ["P1", "P4", "P5", "P6", "P7", "P12", "P14", "P15", "P17"] {
        assert!(line(&out, &format!("{id} complete:")).is_some(), "{id} did not complete");
    }
    // P16 relays over TLS both ways, through chardev-relay and through socat.
    for id in ["P2", "P16"] {
        match relay {
            Some(_) => {
                assert!(line(&out, &format!("{id} complete:")).is_some(), "{id} did not complete")
            }
            None => {
                assert!(line(&out, &format!("{id} skipped: chardev-relay not found")).is_some())
            }
        }
    }
    // P8 and P9 run serial-console against QEMU 7.2, P10, P11 and P13 flood its viewers
    // (checking every byte, and P11's and P13's stopped viewer's one gap marker): when the
    // same build has serial-console (`cargo test --workspace` does), they complete.
    for id in ["P8", "P9", "P10", "P11", "P13"] {
        let serial_console = Path::new(COMPARE).with_file_name("serial-console");
        match serial_console.is_file() {
            true => {
                assert!(line(&out, &format!("{id} complete:")).is_some(), "{id} did not complete")
            }
            false => {
                assert!(line(&out, &format!("{id} skipped: serial-console not found")).is_some())
            }
        }
    }
    // P3 waits for the pty backend: it may say why it cannot run, but may not fail.
    assert!(
        line(&out, "P3 complete:").is_some() || line(&out, "P3 skipped:").is_some(),
        "P3 neither completed nor said why it was skipped"
    );
}

#[test]
fn a_relay_that_corrupts_the_stream_fails_the_run() {
    require_program("socat", "socat");
    let dir = tempfile::tempdir().unwrap();
    // A stand-in for chardev-relay: socat between the same two sockets, through a `dd` that
    // upper-cases ASCII letters as they pass (the pattern has 26 in every 251 bytes).
    let fake = dir.path().join("chardev-relay");
    let filter = dir.path().join("filter");
    std::fs::write(
        &fake,
        "#!/bin/sh\n\
         while [ \"${1#-}\" != \"$1\" ]; do shift; done\n\
         a=${1#socket,path=}; a=${a%%,*}\n\
         b=${2#socket,path=}; B=${b%%,*} exec socat -u UNIX-LISTEN:\"$a\" EXEC:\"${0%/*}/filter\"\n",
    )
    .unwrap();
    std::fs::write(
        &filter,
        "#!/bin/sh\ndd bs=65536 conv=ucase status=none | socat -u - UNIX-LISTEN:\"$B\"\n",
    )
    .unwrap();
    for script in [&fake, &filter] {
        std::fs::set_permissions(script, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let (ok, out) = compare(&["--smoke", "--relay", fake.to_str().unwrap(), "P2"]);
    assert!(!ok, "compare passed with a corrupting relay");
    let failed = line(&out, "P2 FAILED:").expect("P2 reports its failure");
    assert!(failed.contains("corrupt stream"), "{failed}");
}

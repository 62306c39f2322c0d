//! Logfiles over QMP: `chardev-add` with the log keys (QEMU's `logfile`, `logappend`,
//! `logtimestamp`, and our `logmaxsize`, `logbackups`), and the downstream
//! `__com.example_chardev-log-reopen` that logrotate's `create` mode needs.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::support::{Server, DEADLINE};

const REOPEN: &str = "__com.example_chardev-log-reopen";

/// Waits until `path` holds `len` bytes (a write in a burst reaches the file a moment later).
fn wait_len(path: &std::path::Path, len: u64) {
    let end = Instant::now() + DEADLINE;
    while std::fs::metadata(path).map_or(0, |m| m.len()) < len {
        assert!(Instant::now() < end, "{} never held {len} bytes", path.display());
        std::thread::sleep(Duration::from_millis(2));
    }
}

#[test]
fn log_reopen_opens_the_path_again_for_one_chardev_or_all() {
    let server = Server::with_vendor_commands();
    let mut c = server.client("qmp0");
    let commands = c.cmd("query-commands", json!({}));
    assert!(
        commands["return"].as_array().unwrap().iter().any(|x| x["name"] == REOPEN),
        "{commands}"
    );
    let log = server.dir.path().join("console.log");
    let add = json!({"id": "s", "backend": {"type": "null", "data": {
        "logfile": log.display().to_string(), "logmaxsize": 65536, "logbackups": 3, "logtimestamp": true}}});
    assert_eq!(c.cmd("chardev-add", add), json!({"return": {}}));
    let guest = server.registry.connect("s").unwrap();
    guest.write_all(b"first\n").unwrap();
    wait_len(&log, 31);
    let rotated = server.dir.path().join("console.log.1");
    std::fs::rename(&log, &rotated).unwrap();
    assert_eq!(c.cmd(REOPEN, json!({"id": "s"})), json!({"return": {}}));
    guest.write_all(b"second\n").unwrap();
    wait_len(&log, 32);
    std::fs::rename(&log, server.dir.path().join("console.log.2")).unwrap();
    assert_eq!(c.cmd(REOPEN, json!({})), json!({"return": {}}));
    guest.write_all(b"third\n").unwrap();
    wait_len(&log, 31);
    let text = |p: &std::path::Path| std::fs::read_to_string(p).unwrap();
    assert!(text(&rotated).ends_with("Z first\n"), "{:?}", text(&rotated));
    assert!(text(&server.dir.path().join("console.log.2")).ends_with("Z second\n"));
    assert!(text(&log).ends_with("Z third\n"), "{:?}", text(&log));

    let err = c.error(REOPEN, json!({"id": "qmp0"}), &[]);
    assert_eq!(err, "chardev 'qmp0' cannot reopen its logfile: it has none");
    let reply = c.cmd(REOPEN, json!({"id": "nope"}));
    assert!(reply["error"]["desc"].as_str().unwrap().contains("nope"), "{reply}");
}

#[test]
fn log_keys_in_chardev_add_are_checked_naming_the_key() {
    let server = Server::with_vendor_commands();
    let mut c = server.client("qmp0");
    let log = server.dir.path().join("l").display().to_string();
    let cases = [
        (json!({"logmaxsize": 65536}), "'logmaxsize' rotates the logfile: give 'logfile' too"),
        (
            json!({"logfile": log, "logbackups": 2}),
            "'logbackups' counts rotated logfiles: give 'logmaxsize' too",
        ),
        (json!({"logfile": log, "logmaxsize": 0}), "'logmaxsize=0': must be at least 4K"),
        (
            json!({"logfile": log, "logmaxsize": 65536, "logbackups": 1000}),
            "'logbackups=1000': must be at most 99",
        ),
        (json!({"logfile": "/dev/fdset/0", "logmaxsize": 65536}), "no name to rotate under"),
    ];
    for (data, want) in cases {
        let add = json!({"id": "s", "backend": {"type": "null", "data": data}});
        let err = c.error("chardev-add", add.clone(), &[]);
        assert!(err.contains(want), "{add}: {err}");
    }
    assert!(!server.registry.contains("s"));
}

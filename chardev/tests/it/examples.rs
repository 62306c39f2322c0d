//! The crate's examples (`chardev/examples/`), run as a newcomer would run them, so that they
//! cannot rot. `cargo test` builds them into `target/<profile>/examples/`, next to the
//! directory of this test binary.

use std::process::{Command, Stdio};

use chardev_testkit::*;

/// Runs example `name` and returns what it printed, failing unless it exits 0 in time.
fn run_example(name: &str) -> String {
    let path = example(name);
    let child = Command::new(&path)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("run {}: {e}", path.display()));
    let out = wait_output(child, name);
    assert!(
        out.status.success(),
        "example {name} failed ({}):\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn own_loop_gets_its_answer_through_a_plain_epoll_loop() {
    let said = run_example("own_loop");
    assert_eq!(said, "own_loop: the chardev answered: HELLO FROM MY OWN LOOP\n");
}

#[test]
fn event_manager_gets_its_answer_through_rust_vmms_event_manager() {
    let said = run_example("event_manager");
    assert_eq!(said, "event_manager: the chardev answered: HELLO FROM EVENT-MANAGER\n");
}

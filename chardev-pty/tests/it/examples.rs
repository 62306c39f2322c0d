//! The crate's example, run as a newcomer runs it (`cargo run -p chardev-pty --example
//! pty_console`) and driven through a real terminal open of the pty it prints, so that it
//! cannot rot.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::AsFd;
use std::os::unix::fs::OpenOptionsExt;
use std::process::{Command, Stdio};

use chardev_testkit::*;

/// Reads from the terminal until what came ends with `end`; returns all of it.
fn read_until(term: &mut File, end: &str) -> String {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !got.ends_with(end.as_bytes()) {
        let ready = chardev::fd::wait_readable(term.as_fd(), Some(DEADLINE)).unwrap();
        let so_far = String::from_utf8_lossy(&got).into_owned();
        assert!(ready, "nothing more within {DEADLINE:?} waiting for {end:?}; got {so_far:?}");
        let n = term.read(&mut buf).unwrap();
        assert!(n > 0, "the pty hung up waiting for {end:?}; got {so_far:?}");
        got.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&got).into_owned()
}

#[test]
fn pty_console_prints_its_pty_and_answers_a_terminal_there() {
    let mut child = Command::new(example("pty_console"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .expect("run example pty_console");
    let mut stdout = BufReader::new(TimedPipe(child.stdout.take().expect("piped stdout")));
    // The line that names the pty (the example's own; the library prints nothing).
    let mut first = String::new();
    while !first.starts_with("console on ") {
        first.clear();
        let n = stdout.read_line(&mut first).expect("the example prints its pty");
        assert!(n > 0, "the example ended without naming its pty");
    }
    let printer = std::thread::spawn(move || {
        let mut rest = String::new();
        let _ = stdout.read_to_string(&mut rest);
        rest
    });
    let mut console = KillOnDrop(child);
    let slave = first.trim().strip_prefix("console on ").unwrap_or_else(|| panic!("{first:?}"));

    let mut term = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(nix::libc::O_NOCTTY)
        .open(slave)
        .unwrap_or_else(|e| panic!("open {slave}: {e}"));
    assert_eq!(read_until(&mut term, "> "), "pty console: type a line\r\n> ");
    term.write_all(b"hello\r").unwrap();
    assert_eq!(read_until(&mut term, "> "), "hello\r\nconsole heard: hello\r\n> ");

    // The last terminal closes: the console ends.
    drop(term);
    let status = wait_exit(&mut console.0, "pty_console after its terminal closed");
    assert!(status.success(), "{status}");
    let _ = printer.join();
}

//! The crate's examples, run as a newcomer runs them (`cargo run -p chardev-socket --example
//! NAME`) and driven by real peers, so that they cannot rot: `uart_socket` echoes and answers
//! on its unix socket, `receive_fds` gets an fd the sender left non-blocking and finds it
//! blocking (the fd contract).

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::process::{Child, Command, Stdio};

use chardev_testkit::*;

/// A running example: the process, the first line it printed, and the rest of what it
/// prints (collected on a thread, so that its stdout never fills or breaks).
struct Running {
    child: KillOnDrop,
    first: String,
    rest: std::thread::JoinHandle<String>,
}

/// Starts example `name` with `args`.
fn start(name: &str, args: &[&str]) -> Running {
    let mut child: Child = Command::new(example(name))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("run example {name}: {e}"));
    let mut stdout = BufReader::new(TimedPipe(child.stdout.take().expect("piped stdout")));
    let mut first = String::new();
    stdout.read_line(&mut first).expect("the example's first line");
    let rest = std::thread::spawn(move || {
        let mut rest = String::new();
        let _ = stdout.read_to_string(&mut rest);
        rest
    });
    Running { child: KillOnDrop(child), first, rest }
}

impl Running {
    /// Waits for the example to exit successfully; returns what it printed after its first
    /// line.
    fn finish(mut self, what: &str) -> String {
        let status = wait_exit(&mut self.child.0, what);
        assert!(status.success(), "{what}: {status}");
        self.rest.join().expect("the stdout reader")
    }
}

/// Reads from `s` until what came ends with `end`; returns all of it.
fn read_until(s: &mut UnixStream, end: &str) -> String {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !got.ends_with(end.as_bytes()) {
        let n = s.read(&mut buf).unwrap_or_else(|e| {
            panic!("waiting for {end:?}: {e}; got {:?}", String::from_utf8_lossy(&got))
        });
        assert!(n > 0, "closed while waiting for {end:?}; got {:?}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&got).into_owned()
}

#[test]
fn uart_socket_echoes_and_answers_each_line_and_ends_with_its_client() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("uart.sock");
    let uart = start("uart_socket", &[path.to_str().unwrap()]);
    assert!(uart.first.starts_with(&format!("uart on {}", path.display())), "{:?}", uart.first);

    let mut s = connect_unix(&path);
    assert_eq!(read_until(&mut s, "uart> "), "uart ready\r\nuart> ");
    s.write_all(b"hello\r").unwrap();
    assert_eq!(read_until(&mut s, "uart> "), "hello\r\nyou typed 5 bytes: hello\r\nuart> ");
    // A line far longer than the 16-byte FIFO comes through whole.
    let long = "x".repeat(10_000);
    s.write_all(format!("{long}\x7f\r").as_bytes()).unwrap();
    let answer = read_until(&mut s, "uart> ");
    assert!(answer.ends_with(&format!("you typed 9999 bytes: {}\r\nuart> ", &long[1..])));

    drop(s);
    uart.finish("uart_socket after its client left");
}

/// The sender: a pipe whose write end it leaves non-blocking, passed with `socket.send_fds`;
/// then the example's report, and its greeting through the pipe.
const SEND_A_NONBLOCKING_PIPE: &str = r#"
import os, socket, sys
r, w = os.pipe()
os.set_blocking(w, False)
s = socket.socket(socket.AF_UNIX)
s.connect(sys.argv[1])
s.settimeout(10)
socket.send_fds(s, [b"take this"], [w])
os.close(w)
report = b""
while not report.endswith(b"\n"):
    chunk = s.recv(4096)
    assert chunk, "closed before the report: %r" % report
    report += chunk
expected = b"fd 0: blocking, close-on-exec; greeting written\n"
assert report == expected, report
assert os.read(r, 4096) == b"hello through the fd you passed\n"
print("ok")
"#;

#[test]
fn receive_fds_gets_a_nonblocking_fd_blocking_and_close_on_exec() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fds.sock");
    let taker = start("receive_fds", &[path.to_str().unwrap()]);
    let waiting = format!("waiting for fds on {}", path.display());
    assert!(taker.first.starts_with(&waiting), "{:?}", taker.first);

    let out = output_within(
        python().arg("-c").arg(SEND_A_NONBLOCKING_PIPE).arg(&path),
        "the Python sender",
    );
    assert_said_ok(&out);
    let printed = taker.finish("receive_fds after its client left");
    assert!(printed.contains("received 9 bytes and 1 fd(s)"), "{printed}");
    assert!(printed.contains("fd 0: blocking, close-on-exec; greeting written"), "{printed}");
}

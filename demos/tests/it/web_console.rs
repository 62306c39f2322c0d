//! The web console in a real browser (issue 17, point 6): `serial-console` with its serial
//! port on a `websocket=on,clients=4,history=1M` server, and headless Debian Chromium driven
//! by `tests/peers/web_console.py` (selenium): the page shows the guest's greeting, text typed
//! in the page reaches the guest shell and its answer appears, a second tab gets the history,
//! the page reconnects when serial-console comes back on the same port, and a screenshot of
//! the page is kept in `target/test-artifacts/web-console.png`.

use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::process::{ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use chardev_testkit::KillOnDrop as Machine;
use chardev_testkit::*;

const BIN: &str = env!("CARGO_BIN_EXE_serial-console");

/// What the demo guest prints when it boots.
const GREETING: &str = "chardev demo guest: type 'help'";

/// The longest any one driver command may take beyond its own bound (a page load, a key
/// sequence, Chromium's start).
const SLACK: Duration = Duration::from_secs(30);

pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// serial-console with its serial port on the web console server at `port`.
fn start_machine(port: u16) -> Machine {
    let spec = format!(
        "socket,id=w,host=127.0.0.1,port={port},server=on,wait=off,websocket=on,clients=4,\
         history=1M"
    );
    listening(&["-chardev", &spec, "-serial", "chardev:w"], port)
}

/// serial-console `-nodefaults -display none` with `args`, once it listens on `port`.
pub(crate) fn listening(args: &[&str], port: u16) -> Machine {
    let mut machine = Machine(
        Command::new(BIN)
            .args(["-nodefaults", "-display", "none"])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .expect("run serial-console"),
    );
    wait_until("serial-console to listen", || {
        if let Ok(Some(status)) = machine.0.try_wait() {
            panic!("serial-console exited ({status}) before it listened: its stderr says why");
        }
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    machine
}

/// The browser driver, `web_console.py`, spoken to one command at a time.
pub(crate) struct Browser {
    _child: KillOnDrop,
    stdin: ChildStdin,
    stdout: ChildStdout,
    read: Vec<u8>,
}

impl Browser {
    pub(crate) fn start() -> Browser {
        Browser::start_with_args("")
    }

    /// Chromium with more arguments (space-separated), e.g. to trust a test server's key.
    pub(crate) fn start_with_args(chromium_args: &str) -> Browser {
        let mut child = KillOnDrop(
            python()
                .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/peers/web_console.py"))
                .env("WEB_CONSOLE_CHROMIUM_ARGS", chromium_args)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()
                .expect("run web_console.py"),
        );
        let stdin = child.0.stdin.take().expect("its stdin");
        let stdout = child.0.stdout.take().expect("its stdout");
        let mut browser = Browser { _child: child, stdin, stdout, read: Vec::new() };
        let ready = browser.answer(SLACK);
        assert_eq!(ready, "ok ready", "Chromium did not start");
        browser
    }

    /// The driver's next answer line, waiting at most `limit`.
    fn answer(&mut self, limit: Duration) -> String {
        let end = Instant::now() + limit;
        loop {
            if let Some(at) = self.read.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.read.drain(..=at).collect();
                return String::from_utf8_lossy(&line).trim_end().to_owned();
            }
            let left = end.saturating_duration_since(Instant::now());
            let readable =
                chardev::fd::wait_readable(self.stdout.as_fd(), Some(left)).expect("poll");
            assert!(readable, "the browser driver did not answer within {limit:?}");
            let mut buf = [0u8; 4096];
            let n = self.stdout.read(&mut buf).expect("read the driver's answer");
            assert!(n > 0, "the browser driver exited; it had said {:?}", self.read);
            self.read.extend_from_slice(&buf[..n]);
        }
    }

    /// Sends `command` and returns the rest of its "ok" answer; fails the test on "error".
    /// A wait's own bound is in the command; `SLACK` covers the rest.
    pub(crate) fn ok(&mut self, command: &str) -> String {
        writeln!(self.stdin, "{command}").expect("send the driver a command");
        let answer = self.answer(SLACK + Duration::from_secs(20));
        match answer.strip_prefix("ok") {
            Some(rest) => rest.trim().to_owned(),
            None => panic!("{command}: {answer}"),
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Chromium goes with the driver's quit, or with its SIGTERM handler if the driver is
        // stuck; KillOnDrop's SIGKILL (which would leave Chromium running) comes last.
        let _ = writeln!(self.stdin, "quit");
        let child = &mut self._child.0;
        if exited_within(child, Duration::from_secs(10)).is_none() {
            let pid = nix::unistd::Pid::from_raw(child.id() as i32);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
            let _ = exited_within(child, Duration::from_secs(10));
        }
    }
}

/// Where the screenshot is kept: `target/test-artifacts/` (CARGO_TARGET_DIR's if set).
pub(crate) fn artifact(name: &str) -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"));
    let dir = target.join("test-artifacts");
    std::fs::create_dir_all(&dir).expect("make target/test-artifacts");
    dir.join(name)
}

#[test]
fn a_browser_shows_the_guest_types_into_it_keeps_history_in_a_second_tab_and_reconnects() {
    require_python_module("selenium", "selenium");
    require_program("chromium", "chromium");
    require_program("chromedriver", "chromium-driver");
    let xterm = workspace_root().join(chardev_socket::web::XTERM_PACKAGE).join("lib/xterm.js");
    assert!(xterm.exists(), "{} is missing: run scripts/setup-web", xterm.display());

    let port = free_port();
    let machine = start_machine(port);
    let url = format!("http://127.0.0.1:{port}/");
    let mut browser = Browser::start();

    // The page loads, connects back, and shows the greeting the guest printed before it
    // came (history=1M).
    browser.ok(&format!("open {url}"));
    browser.ok("wait_status connected 10");
    browser.ok(&format!("wait_text 10 {GREETING}"));

    // Typed in the page, answered by the guest's shell: a line that is only the answer.
    let nanos = std::time::UNIX_EPOCH.elapsed().map_or(0, |t| t.subsec_nanos());
    let word = format!("web-{}", std::process::id() ^ nanos);
    browser.ok(&format!("type echo {word}\\n"));
    browser.ok(&format!("wait_line 10 {word}"));
    // The page told the server its size (a text frame, see console.js); the frontend gets
    // it as Event::Resize, and the guest's `size` prints it. A window resize tells again.
    let sizes = browser.ok("sent_sizes");
    assert!(sizes.contains(r#"\"type\":\"resize\""#), "{sizes}");
    let last_size = |browser: &mut Browser| -> (u64, u64) {
        let sent: Vec<String> = serde_json::from_str(&browser.ok("sent_sizes")).unwrap();
        let last: serde_json::Value = serde_json::from_str(sent.last().unwrap()).unwrap();
        (last["cols"].as_u64().unwrap(), last["rows"].as_u64().unwrap())
    };
    let (cols, rows) = last_size(&mut browser);
    browser.ok("type size\\n");
    browser.ok(&format!("wait_line 10 {cols}x{rows}"));
    browser.ok("resize 700 420");
    let end = Instant::now() + Duration::from_secs(10);
    let (cols2, rows2) = loop {
        let now = last_size(&mut browser);
        if now != (cols, rows) {
            break now;
        }
        assert!(Instant::now() < end, "the page sent no new size after the window resize");
        std::thread::sleep(Duration::from_millis(100));
    };
    browser.ok("type size\\n");
    browser.ok(&format!("wait_line 10 {cols2}x{rows2}"));

    // A second tab is a second viewer: it gets the history, greeting and answer.
    assert_eq!(browser.ok(&format!("new_tab {url}")), "1");
    browser.ok("wait_status connected 10");
    browser.ok(&format!("wait_text 10 {GREETING}"));
    browser.ok(&format!("wait_line 10 {word}"));

    // serial-console goes away and comes back on the same port: the page says so, then
    // reconnects (within its 5 s backoff) and shows the new boot's greeting. The second tab
    // leaves first: input comes from one writer, the first to connect, and after the restart
    // that must be the tab that types.
    browser.ok("open about:blank");
    browser.ok("switch 0");
    drop(machine);
    browser.ok("wait_status closed 10");
    let _machine = start_machine(port);
    browser.ok("wait_status connected 15");
    browser.ok(&format!("wait_count 10 2 {GREETING}"));
    let again = format!("{word}-again");
    browser.ok(&format!("type echo {again}\\n"));
    browser.ok(&format!("wait_line 10 {again}"));

    let shot = artifact("web-console.png");
    browser.ok(&format!("screenshot {}", shot.display()));
    let png = std::fs::read(&shot).expect("the screenshot");
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n") && png.len() > 1000, "not a PNG");
    println!("web console screenshot: {}", shot.display());
}

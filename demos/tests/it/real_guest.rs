//! chardev-relay as the console server of a real Linux guest: QEMU (TCG) boots Debian's
//! cloud kernel with the test kit's busybox initramfs (`chardev_testkit::guest`), its serial
//! line on a unix socket server; the relay connects to it with `reconnect-ms`, serves
//! viewers on a unix socket of its own (`clients=4,history=1M`) and logs the guest's output
//! to a file. The VM is killed and booted again, the relay follows it, and a viewer that
//! attaches afterwards sees both boots in its history.
//!
//! One test, bounded as a whole (a boot takes about 5 s on an idle machine, 15 s or more on a
//! loaded one); it fails, never skips, when QEMU, the kernel, busybox or cpio is missing,
//! naming the Debian package.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use chardev_testkit::guest::{self, boot_line, Captured, Console, Guest, PROMPT};
use chardev_testkit::require_program;

const BIN: &str = env!("CARGO_BIN_EXE_chardev-relay");

/// From QEMU's start to the guest's shell prompt (about 3 s on an idle machine).
const BOOT: Duration = Duration::from_secs(60);
/// From a command typed to its answer and the next prompt, or for a viewer's connection.
const ANSWER: Duration = Duration::from_secs(10);
/// The whole test: the waits below (two boots, four answers or connections) stay within it.
const WHOLE: Duration = Duration::from_secs(180);

/// What the test runs, for failure messages that show what QEMU and the relay said.
struct Scene {
    relay: Captured,
    guest: Guest,
}

impl Scene {
    /// Reads `console` up to `needle`, failing with what the console, QEMU and the relay
    /// said if it has not come by `end`.
    fn expect(&mut self, console: &mut Console, needle: &str, end: Instant) -> Vec<u8> {
        match console.read_until(needle, end.saturating_duration_since(Instant::now())) {
            Ok(got) => got,
            Err(why) => {
                self.guest.check_running();
                self.relay.check_running();
                panic!(
                    "{why}\n--- QEMU (boot {}) said:\n{}\n--- the relay said:\n{}",
                    self.guest.boot_id(),
                    self.guest.qemu_output(),
                    self.relay.output()
                );
            }
        }
    }
}

fn serial(vm: &Path) -> String {
    format!("unix:{},server=on,wait=off", vm.display())
}

#[test]
fn a_real_guest_console_through_the_relay_survives_a_vm_restart_and_is_logged() {
    let started = Instant::now();
    // The parts, first: a missing one fails here, naming its Debian package.
    require_program("qemu-system-x86_64", "qemu-system-x86");
    let release = guest::kernel_release();
    guest::initramfs();

    let dir = tempfile::tempdir().unwrap();
    let (vm, viewers, log) = (
        dir.path().join("vm.sock"),
        dir.path().join("console.sock"),
        dir.path().join("console.log"),
    );
    // The guest's output comes in on the vm side and the relay writes it out on the console
    // side; a chardev's logfile= copies what is written to it (QEMU's rule: frontend
    // output), so the console side's logfile holds the guest's output. The vm side's would
    // hold what the viewers type.
    // The console side is a hub over two servers, for viewers on a unix socket and for the
    // web page (and websocket viewers) on a tcp port; the hub's logfile holds what the relay
    // writes to it: the guest's output.
    let web_port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let relay = Captured::spawn(
        {
            let mut cmd = Command::new(BIN);
            cmd.arg("--keep-open")
                .args([
                    "--chardev",
                    &format!(
                        "socket,id=unix,path={},server=on,wait=off,clients=4,history=1M",
                        viewers.display()
                    ),
                ])
                .args([
                    "--chardev",
                    &format!(
                    "socket,id=web,host=127.0.0.1,port={web_port},server=on,wait=off,websocket=on,\
                     clients=4,history=1M"
                ),
                ])
                .arg(format!("socket,id=vm,path={},reconnect-ms=200", vm.display()))
                .arg(format!(
                    "hub,id=console,chardevs.0=unix,chardevs.1=web,logfile={}",
                    log.display()
                ));
            cmd
        },
        "chardev-relay",
    );

    // The console side serves up to four viewers, each starting with the last 1 MiB of the
    // guest's output: nobody needs to be attached while the guest boots (the relay never
    // waits for a viewer, so it reads the guest as fast as it writes).
    let boot_started = Instant::now();
    let mut scene = Scene { relay, guest: Guest::boot(&serial(&vm), "first") };
    let mut first = Console::connect(&viewers, ANSWER);
    scene.expect(&mut first, &boot_line("first"), boot_started + BOOT);
    scene.expect(&mut first, PROMPT, boot_started + BOOT);
    eprintln!("first boot: prompt after {:?}", boot_started.elapsed());
    first.send("uname -r\n");
    let end = Instant::now() + ANSWER;
    scene.expect(&mut first, &format!("{release}\r\n"), end);
    scene.expect(&mut first, PROMPT, end);
    let seen = first.seen().to_vec();
    drop(first);

    // The VM dies (SIGKILL: no goodbye on the socket) and a new one boots on the same path,
    // with nobody watching; the relay's socket client finds it by itself (reconnect-ms) and
    // stays up throughout (--keep-open).
    scene.guest.kill();
    let boot_started = Instant::now();
    scene.guest = Guest::boot(&serial(&vm), "second");

    // A viewer that attaches afterwards sees both boots in its history, in order, and types
    // into the second VM: its kernel command line shows which boot answers.
    let mut late = Console::connect(&viewers, ANSWER);
    scene.expect(&mut late, &boot_line("second"), boot_started + BOOT);
    scene.expect(&mut late, PROMPT, boot_started + BOOT);
    eprintln!("second boot: prompt after {:?}", boot_started.elapsed());
    scene.relay.check_running();
    let history = late.seen().to_vec();
    let at = |line: &str| history.windows(line.len()).position(|w| w == line.as_bytes());
    match (at(&boot_line("first")), at(&boot_line("second"))) {
        (Some(a), Some(b)) if a < b => {}
        other => {
            panic!("the late viewer's history lacks a boot or has them out of order: {other:?}")
        }
    }
    // The web side too: the page is served, and a websocket viewer that comes now gets both
    // boots from its own history.
    web_viewer_sees_both_boots(web_port);
    late.send("cat /proc/cmdline\n");
    let end = Instant::now() + ANSWER;
    scene.expect(&mut late, "chardev.boot=second\r\n", end);
    scene.expect(&mut late, PROMPT, end);

    // The logfile has the guest's output of both boots, in order, each boot line once, and
    // what the first viewer saw is exactly its beginning.
    let logged = std::fs::read(&log).unwrap();
    let find_once = |line: &str| {
        let at: Vec<_> = logged
            .windows(line.len())
            .enumerate()
            .filter(|(_, w)| *w == line.as_bytes())
            .map(|(i, _)| i)
            .collect();
        assert_eq!(at.len(), 1, "{line:?} should be in the logfile once, is at {at:?}");
        at[0]
    };
    let (first_boot, second_boot) =
        (find_once(&boot_line("first")), find_once(&boot_line("second")));
    assert!(first_boot < second_boot, "the boots are logged out of order");
    // The first viewer came after the first output: what it saw is in the log, whole.
    assert!(
        logged
            .windows(seen.len().min(4096))
            .any(|w| w == &seen[seen.len() - seen.len().min(4096)..]),
        "the end of what the first viewer saw is not in the logfile"
    );
    // Both boots come to far less than the 1 MiB history: the late viewer got the whole
    // output from the start, the same bytes as the log.
    assert!(
        logged.starts_with(&history),
        "the late viewer's history differs from the logfile ({} bytes logged, {} seen)",
        logged.len(),
        history.len()
    );
    let answer = "cat /proc/cmdline\r\n";
    assert!(
        logged.windows(answer.len()).any(|w| w == answer.as_bytes()),
        "the late viewer's command and its echo are not in the logfile"
    );
    assert!(started.elapsed() < WHOLE, "the test took {:?}", started.elapsed());
    eprintln!("the whole test took {:?}", started.elapsed());
}

/// An HTTP GET of the web console's page, then a websocket viewer (Python's `websockets`)
/// that must get both boot lines, in order, from the history.
fn web_viewer_sees_both_boots(port: u16) {
    use std::io::{Read, Write};
    chardev_testkit::require_python_module("websockets", "websockets");
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(ANSWER)).unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").unwrap();
    let mut page = String::new();
    s.read_to_string(&mut page).expect("the page, then the end");
    assert!(page.starts_with("HTTP/1.1 200 OK") && page.contains("<title>web"), "{page}");
    let script = format!(
        r#"
import asyncio, websockets
async def main():
    async with websockets.connect("ws://127.0.0.1:{port}/", subprotocols=["binary"]) as ws:
        got = b""
        while b"{second}" not in got:
            got += await asyncio.wait_for(ws.recv(), 10)
        a, b = got.find(b"{first}"), got.find(b"{second}")
        assert 0 <= a < b, (a, b)
        print("ok")
asyncio.run(main())
"#,
        first = boot_line("first"),
        second = boot_line("second"),
    );
    let out = chardev_testkit::output_within(
        chardev_testkit::python().arg("-c").arg(script),
        "the websocket viewer",
    );
    chardev_testkit::assert_said_ok(&out);
}

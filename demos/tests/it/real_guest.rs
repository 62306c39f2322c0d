//! chardev-relay as the console server of a real Linux guest: QEMU (TCG) boots Debian's
//! cloud kernel with the test kit's busybox initramfs (`chardev_testkit::guest`), its serial
//! line on a unix socket server; the relay connects to it with `reconnect-ms`, serves
//! viewers on a unix socket of its own and logs the guest's output to a file. The VM is
//! killed and booted again, and the relay follows it.
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
    let relay = Captured::spawn(
        {
            let mut cmd = Command::new(BIN);
            cmd.arg("--keep-open")
                .arg(format!("socket,id=vm,path={},reconnect-ms=200", vm.display()))
                .arg(format!(
                    "socket,id=console,path={},server=on,wait=off,logfile={}",
                    viewers.display(),
                    log.display()
                ));
            cmd
        },
        "chardev-relay",
    );

    // issue 17: with clients=4,history=1M on the console side, the lead adds here: the
    // console side as `clients=4,history=1M`, a late viewer that connects after the second
    // boot and sees both boots (both boot lines, in order) in its history, and the web page
    // (`websocket=on`) showing the same console.
    //
    // Until then the console side serves one client, and the relay's flow control makes a
    // console with nobody attached stall the guest: the relay keeps what it read and stops
    // reading, and QEMU's 8250, its socket full, drops bytes after a few retries. So the
    // first viewer attaches before the guest boots and reads through both boots.
    let mut first = Console::connect(&viewers, ANSWER);
    let boot_started = Instant::now();
    let mut scene = Scene { relay, guest: Guest::boot(&serial(&vm), "first") };
    scene.expect(&mut first, &boot_line("first"), boot_started + BOOT);
    scene.expect(&mut first, PROMPT, boot_started + BOOT);
    eprintln!("first boot: prompt after {:?}", boot_started.elapsed());
    first.send("uname -r\n");
    let end = Instant::now() + ANSWER;
    scene.expect(&mut first, &format!("{release}\r\n"), end);
    scene.expect(&mut first, PROMPT, end);

    // The VM dies (SIGKILL: no goodbye on the socket) and a new one boots on the same path;
    // the relay's socket client finds it by itself (reconnect-ms) and stays up throughout
    // (--keep-open).
    scene.guest.kill();
    let boot_started = Instant::now();
    scene.guest = Guest::boot(&serial(&vm), "second");
    scene.expect(&mut first, &boot_line("second"), boot_started + BOOT);
    scene.expect(&mut first, PROMPT, boot_started + BOOT);
    eprintln!("second boot: prompt after {:?}", boot_started.elapsed());
    scene.relay.check_running();

    // A new viewer takes over (the console side serves one client at a time) and types into
    // the second VM: its kernel command line shows which boot answers.
    let seen = first.seen().to_vec();
    drop(first);
    let mut second = Console::connect(&viewers, ANSWER);
    second.send("cat /proc/cmdline\n");
    let end = Instant::now() + ANSWER;
    scene.expect(&mut second, "chardev.boot=second\r\n", end);
    scene.expect(&mut second, PROMPT, end);

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
    assert!(
        logged.starts_with(&seen),
        "the logfile differs from what the first viewer saw ({} bytes logged, {} seen)",
        logged.len(),
        seen.len()
    );
    let answer = "cat /proc/cmdline\r\n";
    assert!(
        logged.windows(answer.len()).any(|w| w == answer.as_bytes()),
        "the second viewer's command and its echo are not in the logfile"
    );
    assert!(started.elapsed() < WHOLE, "the test took {:?}", started.elapsed());
    eprintln!("the whole test took {:?}", started.elapsed());
}

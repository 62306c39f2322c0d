//! `serial` chardevs on a real tty: the slave side of a pty pair stands in for the device,
//! and the test holds the master, where the line's settings can be read back.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use chardev::serial::{ModemLines, Parity, SerialParams};
use chardev::{Event, EventLoop, LoopThread, Registry};
use chardev_testkit::*;
use nix::sys::termios::{
    cfgetospeed, tcgetattr, BaudRate, ControlFlags, LocalFlags, OutputFlags, Termios,
};

fn setup() -> (LoopThread, Registry) {
    let lp = EventLoop::spawn().unwrap();
    let reg = Registry::new(lp.handle());
    chardev_pty::register(&reg);
    (lp, reg)
}

/// A tty "device": the slave of a new pty. The test keeps the master (the far end of the
/// line); the slave fd of `openpty` is closed, the chardev opens the device by its path.
struct Device {
    master: File,
    path: PathBuf,
}

impl Device {
    fn new() -> Device {
        let pty = nix::pty::openpty(None, None).unwrap();
        // Not into other tests' children (openpty makes inheritable fds).
        chardev::fd::set_cloexec(&pty.master, true).unwrap();
        let path = nix::unistd::ttyname(&pty.slave).unwrap();
        Device { master: File::from(pty.master), path }
    }

    fn path(&self) -> &str {
        self.path.to_str().unwrap()
    }

    /// The line's settings, as the far end reads them.
    fn settings(&self) -> Termios {
        tcgetattr(&self.master).unwrap()
    }

    fn read_exact(&mut self, n: usize) -> Vec<u8> {
        let mut got = vec![0u8; n];
        let mut at = 0;
        while at < n {
            assert!(chardev::fd::wait_readable(self.master.as_fd(), Some(DEADLINE)).unwrap());
            at += self.master.read(&mut got[at..]).unwrap();
        }
        got
    }
}

#[test]
fn a_serial_line_opens_raw_at_115200_8n1_and_moves_bytes_both_ways() {
    let (lp, reg) = setup();
    let mut dev = Device::new();
    reg.add_str(&format!("serial,id=s0,path={}", dev.path())).unwrap();
    let t = dev.settings();
    assert_eq!(cfgetospeed(&t), BaudRate::B115200);
    assert_eq!(t.control_flags & ControlFlags::CSIZE, ControlFlags::CS8);
    assert!(!t.control_flags.intersects(ControlFlags::PARENB | ControlFlags::CSTOPB));
    assert!(!t.local_flags.intersects(LocalFlags::ICANON | LocalFlags::ECHO | LocalFlags::ISIG));
    assert!(!t.output_flags.contains(OutputFlags::OPOST));

    let h = reg.connect("s0").unwrap();
    let rec = record(&h, 4096);
    rec.expect_event(Event::Opened);
    assert_eq!(reg.query()[0].filename, "serial");
    dev.master.write_all(b"from the device\n").unwrap();
    assert_eq!(rec.data(16), b"from the device\n");
    h.write_all(b"to the device\n").unwrap();
    // Raw: no \r added, nothing echoed back.
    assert_eq!(dev.read_exact(14), b"to the device\n");
    settle(lp.handle());
    rec.nothing_yet();

    // The device goes away (the master closes: the slave reads EIO).
    drop(dev);
    rec.expect_event(Event::Closed);
}

#[test]
fn tty_is_the_same_backend() {
    let (_lp, reg) = setup();
    let dev = Device::new();
    reg.add_str(&format!("tty,id=t0,path={}", dev.path())).unwrap();
    let h = reg.connect("t0").unwrap();
    let rec = record(&h, 64);
    rec.expect_event(Event::Opened);
    assert_eq!(cfgetospeed(&dev.settings()), BaudRate::B115200);
}

#[test]
fn serial_params_set_by_the_frontend_are_visible_from_the_other_side() {
    let (_lp, reg) = setup();
    let dev = Device::new();
    reg.add_str(&format!("serial,id=s1,path={}", dev.path())).unwrap();
    let h = reg.connect("s1").unwrap();

    h.set_serial_params(&SerialParams {
        speed: 9600,
        parity: Parity::Odd,
        data_bits: 7,
        stop_bits: 2,
    })
    .unwrap();
    let t = dev.settings();
    assert_eq!(cfgetospeed(&t), BaudRate::B9600);
    assert!(t.control_flags.contains(ControlFlags::CSTOPB | ControlFlags::PARODD));
    // A pty keeps CS8 and no parity whatever it is told (the kernel's pty_set_termios);
    // the termios unit tests check CS7 and PARENB on the attributes we ask for.

    // A 16550 with divisor 7 asks for 16457 bit/s: the next standard speed, as in QEMU.
    let params = SerialParams { speed: 115_200 / 7, ..SerialParams::default() };
    h.set_serial_params(&params).unwrap();
    let t = dev.settings();
    assert_eq!(cfgetospeed(&t), BaudRate::B19200);
    assert!(!t.control_flags.intersects(ControlFlags::CSTOPB | ControlFlags::PARODD));
}

#[test]
fn impossible_line_settings_are_refused_naming_the_device() {
    let (_lp, reg) = setup();
    let dev = Device::new();
    reg.add_str(&format!("serial,id=s2,path={}", dev.path())).unwrap();
    let h = reg.connect("s2").unwrap();
    for (params, why) in [
        (SerialParams { speed: 10_000_000, ..SerialParams::default() }, "10000000 bit/s"),
        (SerialParams { speed: 0, ..SerialParams::default() }, "0 bit/s"),
        (SerialParams { data_bits: 9, ..SerialParams::default() }, "9 data bits"),
        (SerialParams { stop_bits: 3, ..SerialParams::default() }, "3 stop bits"),
    ] {
        let text = h.set_serial_params(&params).unwrap_err().to_string();
        assert!(text.contains(dev.path()) && text.contains(why), "{params:?}: {text}");
    }
    // Nothing was changed.
    assert_eq!(cfgetospeed(&dev.settings()), BaudRate::B115200);
}

#[test]
fn opening_something_that_is_not_a_tty_fails_naming_it() {
    let (_lp, reg) = setup();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("not-a-tty");
    std::fs::write(&file, b"").unwrap();
    let missing = dir.path().join("ttyMissing");
    for (path, why) in [
        (file.as_path(), "not a terminal (tty) device"),
        (missing.as_path(), "No such file or directory"),
        (dir.path(), "Is a directory"),
    ] {
        let e = reg.add_str(&format!("serial,id=bad,path={}", path.display())).unwrap_err();
        let text = e.to_string();
        assert!(text.contains(&path.display().to_string()), "{text}");
        assert!(text.contains("serial device") && text.contains(why), "{text}");
        assert!(!reg.contains("bad"));
    }
}

#[test]
fn permission_denied_names_the_device() {
    let dev = Device::new();
    std::fs::set_permissions(&dev.path, std::os::unix::fs::PermissionsExt::from_mode(0o000))
        .unwrap();
    if !nix::unistd::geteuid().is_root() {
        return permission_refused(dev.path());
    }
    // Root opens anything: try as nobody, in a child process.
    let child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "serial::permission_child",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("CHARDEV_PTY_PERMISSION_DEVICE", &dev.path)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let out = wait_output(child, "the permission child");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && stdout.contains("refused as it should be"), "{stdout}");
}

#[test]
#[ignore = "the child process of permission_denied_names_the_device"]
fn permission_child() {
    let Some(path) = std::env::var_os("CHARDEV_PTY_PERMISSION_DEVICE") else { return };
    nix::unistd::setgid(nix::unistd::Gid::from_raw(65534)).unwrap();
    nix::unistd::setuid(nix::unistd::Uid::from_raw(65534)).unwrap();
    permission_refused(path.to_str().unwrap());
}

fn permission_refused(path: &str) {
    let (_lp, reg) = setup();
    let text = reg.add_str(&format!("serial,id=p,path={path}")).unwrap_err().to_string();
    assert!(text.contains(path) && text.contains("Permission denied"), "{text}");
    println!("refused as it should be: {text}");
}

#[test]
fn a_pty_slave_has_no_modem_lines_and_says_so_naming_the_device() {
    let (_lp, reg) = setup();
    let dev = Device::new();
    reg.add_str(&format!("serial,id=m0,path={}", dev.path())).unwrap();
    let h = reg.connect("m0").unwrap();
    // TIOCMGET and TIOCMSET reach the device, which answers ENOTTY (ptys have no lines).
    let e = h.modem_lines().unwrap_err();
    assert_eq!(e.io_kind(), Some(std::io::ErrorKind::Unsupported), "{e}");
    let text = e.to_string();
    assert!(text.contains("read the modem lines") && text.contains(dev.path()), "{text}");
    assert!(text.contains("has no modem lines"), "{text}");
    let text = h.set_modem_lines(ModemLines::DTR | ModemLines::RTS).unwrap_err().to_string();
    assert!(text.contains("set the modem lines") && text.contains(dev.path()), "{text}");
}

#[test]
fn modem_line_bits_are_qemus_chr_tiocm_values() {
    let bits = |l: ModemLines| l.bits();
    assert_eq!(
        [ModemLines::DTR, ModemLines::RTS, ModemLines::CTS, ModemLines::CAR, ModemLines::RI]
            .map(bits),
        [0x002, 0x004, 0x020, 0x040, 0x080]
    );
    assert_eq!(bits(ModemLines::DSR), 0x100);
    let mut lines = ModemLines::from_bits_truncate(0xffff_ffff);
    assert_eq!(lines.bits(), 0x1e6);
    lines.set(ModemLines::RTS, false);
    assert!(lines.contains(ModemLines::DTR | ModemLines::DSR) && !lines.contains(ModemLines::RTS));
    assert_eq!(format!("{:?}", ModemLines::DTR | ModemLines::RI), "ModemLines(DTR | RI)");
}

#[test]
#[ignore = "the child process of a_break_reaches_the_device, run under strace"]
fn break_child() {
    let Some(path) = std::env::var_os("CHARDEV_PTY_BREAK_DEVICE") else { return };
    let (_lp, reg) = setup();
    reg.add_str(&format!("serial,id=brk,path={}", Path::new(&path).display())).unwrap();
    let h = reg.connect("brk").unwrap();
    h.send_break().unwrap();
    println!("break sent");
}

#[test]
fn a_break_reaches_the_device() {
    // A pty has no break to send (no break_ctl in the kernel's pty driver): the other side
    // cannot see it. What the test can see is the TCSBRK ioctl reaching the device, by
    // running the chardev under strace.
    let Ok(mut version) = Command::new("strace").arg("-V").stdout(Stdio::null()).spawn() else {
        eprintln!("strace is not installed; skipped (apt-get install strace)");
        return;
    };
    wait_exit(&mut version, "strace -V");
    let dev = Device::new();
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("strace.log");
    let child = Command::new("strace")
        .args(["-f", "-y", "-qq", "-e", "trace=ioctl", "-o"])
        .arg(&log)
        .arg(std::env::current_exe().unwrap())
        .args(["--exact", "serial::break_child", "--ignored", "--nocapture", "--test-threads=1"])
        .env("CHARDEV_PTY_BREAK_DEVICE", &dev.path)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let out = wait_output(child, "the break child under strace");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && stdout.contains("break sent"), "{stdout}");
    let trace = std::fs::read_to_string(&log).unwrap();
    let sent = format!("{}>, TCSBRK, 0)", dev.path());
    assert!(
        trace.lines().any(|l| l.contains(&sent) && l.trim_end().ends_with("= 0")),
        "no successful {sent:?} in:\n{trace}"
    );
}

#[test]
fn break_and_line_settings_on_a_pty_chardev_are_unsupported() {
    let (_lp, reg) = setup();
    reg.add_str("pty,id=p").unwrap();
    let h = reg.connect("p").unwrap();
    let e = h.set_serial_params(&SerialParams::default()).unwrap_err();
    assert!(matches!(e, chardev::Error::Unsupported { .. }), "{e}");
    let e = h.send_break().unwrap_err();
    assert!(matches!(e, chardev::Error::Unsupported { .. }), "{e}");
}

//! serial-console end to end, run as a user runs it: a real terminal driven by pexpect,
//! socat and telnet on its sockets, a 64 MiB flood through a slow reader, and every
//! command-line error with its message and exit status.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use chardev_testkit::KillOnDrop as Machine;
use chardev_testkit::*;

const BIN: &str = env!("CARGO_BIN_EXE_serial-console");

fn start(args: &[&str]) -> Machine {
    Machine(
        Command::new(BIN).args(args).stdin(Stdio::null()).stdout(Stdio::null()).spawn().unwrap(),
    )
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn connect_tcp(port: u16) -> TcpStream {
    let end = Instant::now() + DEADLINE;
    loop {
        match TcpStream::connect(("127.0.0.1", port)) {
            Ok(s) => {
                s.set_read_timeout(Some(DEADLINE)).unwrap();
                return s;
            }
            Err(e) if Instant::now() < end => {
                let _ = e;
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => panic!("nothing listens on {port}: {e}"),
        }
    }
}

/// Reads until `needle` has been seen; returns everything read. Reads a byte at a time, so
/// that nothing after the needle is consumed.
fn read_until(r: &mut impl Read, needle: &str) -> String {
    let mut got = Vec::new();
    let mut byte = [0u8; 1];
    while !got.ends_with(needle.as_bytes()) {
        match r.read(&mut byte) {
            Ok(1) => got.push(byte[0]),
            Ok(_) => panic!(
                "closed while waiting for {needle:?}; got {:?}",
                String::from_utf8_lossy(&got)
            ),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => {
                panic!("waiting for {needle:?}: {e}; got {:?}", String::from_utf8_lossy(&got))
            }
        }
    }
    String::from_utf8_lossy(&got).into_owned()
}

#[test]
fn no_options_behaves_like_qemu_nographic_on_a_real_terminal() {
    require_python_module("pexpect", "pexpect");
    let out = output_within(
        python().arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/peers/console.py")).arg(BIN),
        "console.py",
    );
    assert!(
        out.status.success(),
        "pexpect session failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "ok");
}

#[test]
fn serial_on_a_tcp_server_with_socat() {
    require_program("socat", "socat");
    let port = free_port();
    let _m =
        start(&["-nodefaults", "-serial", &format!("tcp:127.0.0.1:{port},server=on,wait=off")]);
    // Wait until the port listens, then let socat talk to the guest.
    drop(connect_tcp(port));
    let mut socat = KillOnDrop(
        Command::new("socat")
            .args(["-t", "5", "-", &format!("TCP:127.0.0.1:{port}")])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut stdin = socat.0.stdin.take().unwrap();
    let mut stdout = TimedPipe(socat.0.stdout.take().unwrap());
    stdin.write_all(b"echo over tcp\r").unwrap();
    let seen = read_until(&mut stdout, "over tcp\r\nguest$ ");
    assert!(seen.contains("echo over tcp"), "the guest echoes what is typed: {seen:?}");
    drop(stdin);
    wait_exit(&mut socat.0, "socat");
}

#[test]
fn monitor_on_a_telnet_server_with_the_telnet_client() {
    require_program("telnet", "telnet");
    let port = free_port();
    let _m =
        start(&["-nodefaults", "-monitor", &format!("telnet:127.0.0.1:{port},server=on,wait=off")]);
    drop(connect_tcp(port)); // the monitor then waits for the next client: telnet
    let mut telnet = telnet_client(port);
    let mut stdin = telnet.0.stdin.take().unwrap();
    let mut stdout = TimedPipe(telnet.0.stdout.take().unwrap());
    let banner = read_until(&mut stdout, "(qemu) ");
    assert!(banner.contains("monitor - type 'help' for more information"), "{banner:?}");
    stdin.write_all(b"info chardev\n").unwrap();
    let info = read_until(&mut stdout, "(qemu) ");
    assert!(
        info.contains(&format!(
            "compat_monitor0: filename=telnet:127.0.0.1:{port},server=on <-> 127.0.0.1:"
        )),
        "{info:?}"
    );
    stdin.write_all(b"info status\n").unwrap();
    assert!(read_until(&mut stdout, "(qemu) ").contains("VM status: running"));
    stdin.write_all(b"quit\n").unwrap();
    // telnet's status after "Connection closed by foreign host" is 1: only its exit counts.
    let _ = wait_exit(&mut telnet.0, "telnet after quit");
}

#[test]
fn a_64_mib_flood_through_a_slow_unix_socket_reader_loses_nothing() {
    const TOTAL: u64 = 64 << 20;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("serial.sock");
    let _m =
        start(&["-nodefaults", "-serial", &format!("unix:{},server=on,wait=off", path.display())]);
    let mut s = connect_unix(&path);
    s.write_all(format!("flood {TOTAL}\r").as_bytes()).unwrap();
    read_until(&mut s, &format!("flood {TOTAL}\r\n"));
    let mut buf = vec![0u8; 64 * 1024];
    let (mut got, mut first_bad) = (0u64, None);
    while got < TOTAL {
        let n = match s.read(&mut buf[..((TOTAL - got) as usize).min(64 * 1024)]) {
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            r => r.unwrap(),
        };
        assert!(n > 0, "closed after {got} bytes");
        for (j, &b) in buf[..n].iter().enumerate() {
            if b != demos::machine::flood_pattern(got + j as u64) && first_bad.is_none() {
                first_bad = Some(got + j as u64);
            }
        }
        got += n as u64;
        if got % (4 << 20) < n as u64 {
            std::thread::sleep(Duration::from_millis(20)); // slow reader: the guest must wait
        }
    }
    assert_eq!(first_bad, None, "first byte out of pattern");
    read_until(&mut s, "guest$ ");
}

fn fails(args: &[&str]) -> String {
    let Output { status, stdout, stderr } =
        output_within(Command::new(BIN).args(args), &format!("serial-console {args:?}"));
    assert_eq!(status.code(), Some(1), "{args:?} must fail with status 1");
    assert!(stdout.is_empty(), "nothing on stdout for {args:?}");
    String::from_utf8(stderr).unwrap()
}

#[test]
fn command_line_errors_name_the_option_and_exit_1_before_opening_anything() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("never.sock");
    let cases: &[(&[&str], &str)] = &[
        (&["-bogus"], "-bogus: invalid option"),
        (&["-m"], "-m: requires an argument"),
        (&["-m", "lots"], "-m lots: invalid RAM size 'lots'"),
        (&["-serial", "bogus:x"], "'bogus:x' is not a valid char driver"),
        (&["-chardev", "socket,id=s"], "None or one of 'path', 'fd' or 'host' option required"),
        (&["-chardev", "ringbuf,id=r,size=1000"], "must be a power of two"),
        (&["-chardev", "null,id=a", "-chardev", "null,id=a"], "Duplicate ID 'a' for chardev"),
        (&["-mon", "chardev=nope"], "chardev 'nope' not found"),
        (
            &["-mon", "chardev=a,mode=fancy", "-chardev", "null,id=a"],
            "unknown monitor mode 'fancy'",
        ),
        (&["-machine", "sparc"], "unsupported machine type 'sparc'"),
        (&["-device", "e1000"], "'e1000' is not a valid device model name"),
        (&["-device", "loader,file=/no/such/file,addr=0"], "/no/such/file"),
        (
            &["-serial", "stdio", "-monitor", "stdio"],
            "cannot use stdio by multiple character devices",
        ),
        (
            &[
                "-nodefaults",
                "-chardev",
                "null,id=x",
                "-serial",
                &format!("unix:{},server=on,wait=off", sock.display()),
                "-serial",
                "null",
            ],
            "one serial port",
        ),
        (&["positional"], "positional: invalid option"),
        (&["-add-fd", "fd=1,set=2"], "-add-fd fd=1,set=2: fd cannot be a standard I/O stream"),
        (&["-add-fd", "set=2"], "fd option is required and must be non-negative"),
        (&["-add-fd", "fd=7"], "set option is required and must be non-negative"),
        (&["-add-fd", "fd=987,set=1"], "-add-fd fd=987,set=1: cannot use inherited fd"),
        (&["-chardev", "file,id=f,path=/dev/fdset/4"], "Could not open '/dev/fdset/4'"),
    ];
    for (args, message) in cases {
        let err = fails(args);
        assert!(err.contains(message), "{args:?}: expected {message:?} in {err:?}");
    }
    assert!(!sock.exists(), "nothing was opened before the error");
}

#[test]
fn help_and_version() {
    let out = output_within(Command::new(BIN).arg("-h"), "serial-console -h");
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("-chardev BACKEND,id=ID"));
    let out = output_within(Command::new(BIN).arg("--version"), "serial-console --version");
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("serial-console version "));
}

#[test]
fn hmp_getfd_and_closefd_over_a_unix_socket_monitor() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hmp.sock");
    let _m =
        start(&["-nodefaults", "-monitor", &format!("unix:{},server=on,wait=off", path.display())]);
    wait_until("the monitor socket", || path.exists());
    // bind() makes the file a moment before listen(): let the peer retry its connect.
    let out = output_within(
        python().arg("-c").arg(format!(
            "import time, runpy, sys, socket\n\
             for _ in range(100):\n\
             \x20   try:\n\
             \x20       socket.socket(socket.AF_UNIX).connect({path:?}); break\n\
             \x20   except OSError: time.sleep(0.02)\n\
             sys.argv = ['x', {path:?}]\n\
             runpy.run_path({script:?}, run_name='__main__')",
            path = path.display().to_string(),
            script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/peers/hmp_getfd.py"),
        )),
        "hmp_getfd.py",
    );
    assert_said_ok(&out);
}

#[test]
fn start_stopped_with_a_loaded_image_and_check_it_from_the_guest() {
    let dir = tempfile::tempdir().unwrap();
    let image: Vec<u8> =
        (0..100_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    let file = dir.path().join("image.bin");
    std::fs::write(&file, &image).unwrap();
    let serial = dir.path().join("serial.sock");
    let monitor = dir.path().join("mon.sock");
    let _m = start(&[
        "-nodefaults",
        "-S",
        "-m",
        "16",
        "-device",
        &format!("loader,file={},addr=0x1000,force-raw=on", file.display()),
        "-serial",
        &format!("unix:{},server=on,wait=off", serial.display()),
        "-monitor",
        &format!("unix:{},server=on,wait=off", monitor.display()),
    ]);
    let mut mon = connect_unix(&monitor);
    read_until(&mut mon, "(qemu) ");
    mon.write_all(b"info status\r").unwrap();
    assert!(read_until(&mut mon, "(qemu) ").contains("VM status: paused (prelaunch)"));
    let mut guest = connect_unix(&serial);
    // A stopped guest does not answer.
    guest.write_all(b"sum 0x1000 100000\r").unwrap();
    guest.set_read_timeout(Some(Duration::from_millis(300))).unwrap();
    let mut byte = [0u8; 1];
    assert!(guest.read(&mut byte).is_err(), "the guest ran before cont");
    guest.set_read_timeout(Some(DEADLINE)).unwrap();
    mon.write_all(b"cont\r").unwrap();
    read_until(&mut mon, "(qemu) ");
    let expected = format!("{:016x}", demos::machine::fnv1a(&image));
    let seen = read_until(&mut guest, &expected);
    assert!(seen.ends_with(&expected));
    mon.write_all(b"info status\r").unwrap();
    assert!(read_until(&mut mon, "(qemu) ").contains("VM status: running"));
}

#[test]
fn serial_on_a_pty_keeps_what_the_guest_said_before_a_terminal_attached() {
    require_python_module("serial", "pyserial");
    let mut child = Command::new(BIN)
        .args(["-nodefaults", "-serial", "pty"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = TimedPipe(child.stdout.take().unwrap());
    let _m = Machine(child);
    // QEMU's banner names the slave: "char device redirected to /dev/pts/N (label serial0)".
    let banner = read_until(&mut out, "(label serial0)\n");
    let path = banner
        .split_whitespace()
        .find(|w| w.starts_with("/dev/pts/"))
        .expect("a pty path")
        .to_string();
    // The guest printed its greeting before anyone opened the pty; pyserial still sees it.
    let script = format!(
        "import serial\n\
         s = serial.Serial({path:?}, timeout=10)\n\
         seen = s.read_until(b'guest$ ')\n\
         assert b\"chardev demo guest: type 'help'\" in seen, seen\n\
         s.write(b'echo over the pty\\r')\n\
         seen = s.read_until(b'guest$ ')\n\
         assert b'over the pty\\r\\n' in seen, seen\n\
         print('ok')\n"
    );
    let res = output_within(python().arg("-c").arg(script), "the pyserial script");
    assert_said_ok(&res);
}

#[test]
fn hmp_manages_chardevs_and_ringbufs_and_survives_bad_commands() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mon.sock");
    let _m =
        start(&["-nodefaults", "-monitor", &format!("unix:{},server=on,wait=off", path.display())]);
    let mut mon = connect_unix(&path);
    read_until(&mut mon, "(qemu) ");
    let mut run = |line: &str| {
        mon.write_all(format!("{line}\r").as_bytes()).unwrap();
        let out = read_until(&mut mon, "(qemu) ");
        // Drop the echoed command line and the prompt.
        out.split_once("\r\n")
            .map(|(_, rest)| rest.trim_end_matches("(qemu) ").to_string())
            .unwrap_or_default()
    };
    assert_eq!(run("chardev-add ringbuf,id=rb0,size=8"), "");
    assert_eq!(run("ringbuf_write rb0 abcdefghij"), "");
    assert_eq!(run("ringbuf_read rb0 100"), "cdefghij\r\n");
    assert!(run("info chardev").contains("rb0: filename=ringbuf\r\n"));
    // The counters, on a line of their own under QEMU's (ringbuf_write is no frontend
    // output: not counted as bytes out).
    let info = run("info chardev");
    assert!(
        info.contains(
            "rb0: filename=ringbuf\r\n  in 0 out 0 dropped overflow 0 viewers 0 backlog 0"
        ),
        "{info}"
    );
    assert_eq!(run("chardev-change rb0 null"), "");
    assert!(run("info chardev").contains("rb0: filename=null\r\n"));
    assert_eq!(run("chardev-remove rb0"), "");
    assert_eq!(run("chardev-remove rb0"), "Error: Chardev 'rb0' not found\r\n");
    assert_eq!(run("chardev-add bogus,id=x"), "Error: 'bogus' is not a valid char driver name\r\n");
    assert_eq!(run("frobnicate"), "Error: unknown command: 'frobnicate'\r\n");
    assert_eq!(
        run("chardev-remove compat_monitor0"),
        "Error: Chardev 'compat_monitor0' is busy\r\n"
    );
    assert_eq!(run("stop"), "");
    assert_eq!(run("info status"), "VM status: paused\r\n");
    assert_eq!(run("c"), "");
    assert_eq!(run("info status"), "VM status: running\r\n");
}

#[test]
fn a_waiting_server_says_so_as_qemu_does_and_starts_when_the_client_comes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("wait.sock");
    // server=on without wait=off: creation waits for the first client (QEMU's default).
    let mut child = Command::new(BIN)
        .args(["-nodefaults", "-serial", &format!("unix:{},server=on", path.display())])
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut err = TimedPipe(child.stderr.take().unwrap());
    let _m = Machine(child);
    let line = read_until(&mut err, "\n");
    assert_eq!(
        line,
        format!("QEMU waiting for connection on: disconnected:unix:{},server=on\n", path.display())
    );
    let mut s = connect_unix(&path);
    s.write_all(b"echo started\r").unwrap();
    read_until(&mut s, "started\r\nguest$ ");
}

#[test]
fn add_fd_puts_an_inherited_fd_into_a_set_that_a_file_chardev_opens() {
    let dir = tempfile::tempdir().unwrap();
    let out = output_within(
        python()
            .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/peers/add_fd_cli.py"))
            .arg(BIN)
            .arg(dir.path()),
        "add_fd_cli.py",
    );
    assert_said_ok(&out);
}

/// A process's `VmHWM` (peak resident memory) in KiB.
fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find_map(|l| l.strip_prefix("VmHWM:")).unwrap();
    line.trim().trim_end_matches("kB").trim().parse().unwrap()
}

#[test]
fn peek_streams_its_answer_and_holds_no_more_than_a_piece_of_it() {
    // Issue 15, point 9: `peek 0 0x400000` built its whole answer first (254 MB peak).
    const LEN: usize = 4 << 20;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("serial.sock");
    let m = start(&[
        "-nodefaults",
        "-m",
        "16M",
        "-serial",
        &format!("unix:{},server=on,wait=off", path.display()),
    ]);
    let mut s = connect_unix(&path);
    s.write_all(b"poke 0x3fffff 0xab\r").unwrap();
    read_until(&mut s, "guest$ ");
    let before = peak_rss_kib(m.0.id());
    s.write_all(format!("peek 0 {LEN:#x}\r").as_bytes()).unwrap();
    read_until(&mut s, &format!("peek 0 {LEN:#x}\r\n"));
    // "00 00 ... ab\r\n": three characters a byte, less the first space, and the line end.
    let mut answer = vec![0u8; 3 * LEN - 1 + 2];
    s.read_exact(&mut answer).unwrap();
    assert!(
        answer.ends_with(b" ab\r\n"),
        "{:?}",
        String::from_utf8_lossy(&answer[answer.len() - 16..])
    );
    assert!(answer[..answer.len() - 5].chunks(3).all(|c| &c[..2] == b"00"));
    read_until(&mut s, "guest$ ");
    let grew = peak_rss_kib(m.0.id()).saturating_sub(before);
    assert!(grew < 4 << 10, "peak RSS grew by {grew} KiB for a 12 MiB answer");
}

#[test]
fn hmp_lists_and_steers_the_sessions_of_a_console_with_many_viewers() {
    let dir = tempfile::tempdir().unwrap();
    let mon_path = dir.path().join("mon.sock");
    let con_path = dir.path().join("con.sock");
    let _m = start(&[
        "-nodefaults",
        "-monitor",
        &format!("unix:{},server=on,wait=off", mon_path.display()),
        "-serial",
        &format!("unix:{},server=on,wait=off,clients=2,history=4k", con_path.display()),
    ]);
    let mut mon = connect_unix(&mon_path);
    read_until(&mut mon, "(qemu) ");
    let mut run = |line: &str| {
        mon.write_all(format!("{line}\r").as_bytes()).unwrap();
        let out = read_until(&mut mon, "(qemu) ");
        out.split_once("\r\n")
            .map(|(_, rest)| rest.trim_end_matches("(qemu) ").to_string())
            .unwrap_or_default()
    };
    assert_eq!(run("info chardev-sessions serial0"), "");
    let mut a = connect_unix(&con_path);
    read_until(&mut a, "$ ");
    let mut b = connect_unix(&con_path);
    read_until(&mut b, "$ ");
    let list = run("info chardev-sessions serial0");
    let lines: Vec<&str> = list.lines().collect();
    assert_eq!(lines.len(), 2, "{list}");
    assert!(lines[0].starts_with("session 1: writer unix:pid="), "{list}");
    assert!(lines[1].starts_with("session 2: viewer unix:pid="), "{list}");
    assert!(run("chardev-history serial0").contains("$ "));
    assert_eq!(run("chardev-session-writer serial0 2"), "");
    b.write_all(b"echo via-b\r").unwrap();
    read_until(&mut a, "via-b\r\n");
    assert_eq!(run("chardev-session-disconnect serial0 1"), "");
    assert_eq!(
        run("chardev-session-disconnect serial0 1"),
        "Error: chardev 'serial0' has no session 1\r\n"
    );
    assert_eq!(
        run("info chardev-sessions compat_monitor0"),
        "Error: chardev 'compat_monitor0' cannot show or steer sessions: only a socket server \
         with clients= or history= has them\r\n"
    );
    assert_eq!(
        run("chardev-session-writer serial0"),
        "Error: chardev-session-writer: usage: chardev-session-writer id session\r\n"
    );
}

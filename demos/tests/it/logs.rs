//! serial-console's console log under the real `logrotate` in `create` mode, its
//! `postrotate` sending SIGHUP as it does for daemons, while the guest floods: each SIGHUP
//! reopens the logfile (the new file fills), the demo keeps running, and the rotated files,
//! oldest first, hold exactly what the guest wrote to its viewer, byte for byte.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use chardev_testkit::*;

const BIN: &str = env!("CARGO_BIN_EXE_serial-console");

/// Far more than the log's queue, so that the rotations cut a running flood.
const FLOOD: u64 = 8 << 20;

/// What the viewer waits for after the flood.
const DONE: &[u8] = b"\r\nflood-done\r\n";

/// The guest's prompt, after its last answer.
const PROMPT: &str = "guest$ ";

/// How long the whole flood may take on a loaded 2-core machine.
const FLOOD_WITHIN: Duration = Duration::from_secs(60);

fn rfind(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).rposition(|w| w == needle)
}

fn numbered(path: &Path, i: u32) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".{i}"));
    PathBuf::from(name)
}

/// The log's files, oldest first.
fn files_oldest_first(path: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> =
        (1..50).rev().map(|i| numbered(path, i)).filter(|p| p.exists()).collect();
    files.push(path.to_path_buf());
    files
}

fn size(path: &Path) -> u64 {
    std::fs::metadata(path).map_or(0, |m| m.len())
}

/// Polls `cond` until it holds, for at most `within`.
fn wait_for(what: &str, within: Duration, mut cond: impl FnMut() -> bool) {
    let end = Instant::now() + within;
    while !cond() {
        assert!(Instant::now() < end, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Debian's logrotate, in /usr/sbin (not on every user's PATH).
const LOGROTATE: &str = "/usr/sbin/logrotate";

#[test]
fn logrotate_create_with_sighup_while_the_guest_floods_loses_nothing() {
    require_program(LOGROTATE, "logrotate");
    let dir = tempfile::tempdir().unwrap();
    let (sock, log) = (dir.path().join("console.sock"), dir.path().join("console.log"));
    let chardev = format!(
        "socket,id=con,path={},server=on,wait=off,logfile={}",
        sock.display(),
        log.display()
    );
    let mut child = KillOnDrop(
        Command::new(BIN)
            .args(["-nodefaults", "-chardev", &chardev, "-serial", "chardev:con"])
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .expect("start serial-console"),
    );
    let pid = child.0.id();
    let mut viewer = connect_unix(&sock);
    let mut reader = viewer.try_clone().unwrap();
    let seen = std::thread::spawn(move || {
        reader.set_read_timeout(Some(FLOOD_WITHIN)).unwrap();
        let mut got = Vec::new();
        let mut buf = vec![0; 65536];
        while rfind(&got[got.len().saturating_sub(buf.len() + DONE.len())..], DONE).is_none() {
            let n = reader.read(&mut buf).expect("the viewer's connection");
            assert!(n > 0, "the viewer's connection closed after {} bytes", got.len());
            got.extend_from_slice(&buf[..n]);
        }
        got
    });
    viewer.write_all(format!("flood {FLOOD}\recho flood-done\r").as_bytes()).unwrap();

    let conf = dir.path().join("logrotate.conf");
    let config = format!(
        "{} {{\n  rotate 20\n  create\n  nocompress\n  missingok\n  postrotate\n    kill -HUP {pid}\n  endscript\n}}\n",
        log.display()
    );
    std::fs::write(&conf, config).unwrap();
    for round in 1..=3 {
        // Each round cuts the flood where the log has grown again: the new file only fills
        // if the SIGHUP reopened the log (without it the demo would write the renamed file,
        // or have ended as it did before).
        wait_for(&format!("round {round}: the log to fill"), FLOOD_WITHIN, || {
            size(&log) > 256 << 10
        });
        let mut rotate = Command::new(LOGROTATE)
            .arg("-f")
            .arg("-s")
            .arg(dir.path().join("logrotate.state"))
            .arg(&conf)
            .spawn()
            .expect("run logrotate");
        assert!(wait_exit(&mut rotate, "logrotate").success());
        assert!(numbered(&log, 1).exists(), "round {round}: logrotate did not rotate");
    }
    let seen = seen.join().expect("the viewer's thread");
    // Up to the last answer (the prompt after it may or may not have come with it).
    let seen = &seen[..rfind(&seen, DONE).unwrap() + DONE.len()];
    assert!(child.0.try_wait().unwrap().is_none(), "SIGHUP ended serial-console");
    // Everything the viewer saw is the guest's output, and so in the log, in the same order;
    // the log also has what the guest printed before the viewer came (its greeting) and the
    // prompt after the last answer.
    let files = files_oldest_first(&log);
    let total = || files_oldest_first(&log).iter().map(|f| size(f)).sum::<u64>();
    wait_for("the log to catch up with the viewer", FLOOD_WITHIN, || {
        total() >= seen.len() as u64 + PROMPT.len() as u64
    });
    assert!(files.len() >= 4, "{files:?}");
    let logged: Vec<u8> = files.iter().flat_map(|f| std::fs::read(f).unwrap()).collect();
    let head = &logged[..logged.len().min(4096)];
    let start = head
        .windows(64)
        .position(|w| w == &seen[..64])
        .expect("the viewer's first bytes are not near the log's start");
    let end = start + seen.len();
    assert!(
        end <= logged.len(),
        "the rotated files hold {} bytes, the viewer saw {}",
        logged.len(),
        seen.len()
    );
    assert!(
        logged[start..end] == seen[..],
        "the rotated files, oldest first, are not what the viewer got"
    );
    assert_eq!(
        &logged[end..],
        PROMPT.as_bytes(),
        "after the flood's answer the log has only the prompt"
    );
    // SIGTERM still ends it as QEMU does.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    assert_eq!(wait_exit(&mut child.0, "serial-console").code(), Some(0));
}

/// chardev-relay takes SIGHUP the same way: a process's SIGHUP reopens the logfiles and the
/// relay goes on (bytes still flow, and reach the new file); SIGTERM still ends it.
#[test]
fn chardev_relay_reopens_its_logs_on_sighup_and_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b, log) =
        (dir.path().join("a.sock"), dir.path().join("b.sock"), dir.path().join("a.log"));
    let mut relay = KillOnDrop(
        Command::new(env!("CARGO_BIN_EXE_chardev-relay"))
            .arg(format!(
                "socket,id=a,path={},server=on,wait=off,logfile={}",
                a.display(),
                log.display()
            ))
            .arg(format!("socket,id=b,path={},server=on,wait=off", b.display()))
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .spawn()
            .expect("start chardev-relay"),
    );
    wait_for("the relay's sockets", FLOOD_WITHIN, || a.exists() && b.exists());
    let mut side_a = connect_unix(&a);
    let mut side_b = connect_unix(&b);
    side_b.set_read_timeout(Some(DEADLINE)).unwrap();
    side_a.set_read_timeout(Some(DEADLINE)).unwrap();
    let pass = |from: &mut UnixStream, to: &mut UnixStream, text: &[u8]| {
        from.write_all(text).unwrap();
        let mut got = vec![0; text.len()];
        to.read_exact(&mut got).unwrap();
        assert_eq!(got, text);
    };
    // The logfile of side a copies what is written to a: what comes from b.
    pass(&mut side_b, &mut side_a, b"before\n");
    wait_for("the first line in the log", DEADLINE, || size(&log) == 7);
    std::fs::rename(&log, dir.path().join("a.log.1")).unwrap();
    let pid = nix::unistd::Pid::from_raw(relay.0.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGHUP).unwrap();
    wait_for("the logfile reopened", DEADLINE, || log.exists());
    pass(&mut side_b, &mut side_a, b"after\n");
    wait_for("the next line in the new log", DEADLINE, || size(&log) == 6);
    assert_eq!(std::fs::read(&log).unwrap(), b"after\n");
    assert_eq!(std::fs::read(dir.path().join("a.log.1")).unwrap(), b"before\n");
    assert!(relay.0.try_wait().unwrap().is_none(), "SIGHUP ended chardev-relay");
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    assert_eq!(wait_exit(&mut relay.0, "chardev-relay").code(), Some(0));
}

/// A log the disk will not take never holds the guest up: what the file cannot take is lost,
/// counted in `info chardev`, and marked by a line of its own once the file takes writes
/// again. The disk is "full" through RLIMIT_FSIZE (EFBIG where a full disk says ENOSPC: the
/// same failed write, without a filesystem to fill), and it is freed as logrotate's
/// `copytruncate` frees it, by truncating the file.
#[test]
fn a_log_the_disk_will_not_take_counts_what_it_lost_and_marks_the_gap_when_it_takes_writes_again() {
    use std::os::unix::process::CommandExt;
    const LIMIT: u64 = 4096;
    let dir = tempfile::tempdir().unwrap();
    let (sock, log, mon) = (
        dir.path().join("console.sock"),
        dir.path().join("console.log"),
        dir.path().join("mon.sock"),
    );
    // wait=on: the guest writes nothing before its viewer is there, so all it writes is
    // counted as bytes out.
    let chardev = format!(
        "socket,id=con,path={},server=on,wait=on,logfile={}",
        sock.display(),
        log.display()
    );
    let mut command = Command::new(BIN);
    command
        .args(["-nodefaults", "-chardev", &chardev, "-serial", "chardev:con"])
        .args(["-monitor", &format!("unix:{},server=on,wait=off", mon.display())])
        .stdin(Stdio::null())
        .stdout(Stdio::null());
    // SAFETY: only async-signal-safe calls between fork and exec (sigaction, setrlimit).
    unsafe {
        command.pre_exec(|| {
            use nix::sys::signal::{signal, SigHandler, Signal};
            // A write past the limit fails with EFBIG instead of killing the process.
            signal(Signal::SIGXFSZ, SigHandler::SigIgn)?;
            nix::sys::resource::setrlimit(
                nix::sys::resource::Resource::RLIMIT_FSIZE,
                LIMIT,
                LIMIT,
            )?;
            Ok(())
        });
    }
    let _machine = KillOnDrop(command.spawn().expect("start serial-console"));
    let mut console = TimedPipe(connect_unix(&sock));
    let mut monitor = TimedPipe(connect_unix(&mon));
    read_until(&mut monitor, b"(qemu) ");
    let mut counters = || {
        monitor.0.write_all(b"info chardev\r").unwrap();
        let out = String::from_utf8_lossy(&read_until(&mut monitor, b"(qemu) ")).into_owned();
        let line = out.split("con: filename=").nth(1).expect("con in info chardev").to_owned();
        let field = |name: &str| -> u64 {
            let words: Vec<&str> = line.split_whitespace().collect();
            let at = words.iter().position(|w| *w == name).expect(name);
            words[at + 1].parse().expect(name)
        };
        (field("out"), field("log"))
    };

    // 1000 numbered lines, 13 KB: the file takes 4 KiB, the guest's viewer gets them all.
    console.0.write_all(b"\r").unwrap();
    read_until(&mut console, PROMPT.as_bytes());
    console.0.write_all(b"lines 1000 0\r").unwrap();
    read_until(&mut console, b"line 001000\r\n");
    read_until(&mut console, PROMPT.as_bytes());
    // Everything the guest wrote is in the file or counted as lost (once the log's thread
    // has had its turn).
    let mut last = (0, 0);
    wait_until("the log's loss to be counted", || {
        last = counters();
        last.0 == size(&log) + last.1
    });
    let (out, lost) = last;
    assert_eq!(size(&log), LIMIT, "the file holds what it could take");
    assert!(lost > 8000, "lost {lost} of {out} bytes");

    // Room again: the next output comes after a line that says what is missing.
    std::fs::OpenOptions::new().write(true).open(&log).unwrap().set_len(0).unwrap();
    console.0.write_all(b"\r").unwrap();
    read_until(&mut console, PROMPT.as_bytes());
    wait_until("the log to take writes again", || read_file(&log).ends_with(PROMPT.as_bytes()));
    let text = String::from_utf8_lossy(&read_file(&log)).into_owned();
    let marker = format!(
        "[chardev: {lost} bytes of output missing here: cannot write logfile {}: File too large \
         (os error 27)]\n",
        log.display()
    );
    assert!(text.trim_start_matches('\n').starts_with(&marker), "{text:?}");
    assert_eq!(counters().1, lost, "nothing more was lost");
}

fn read_file(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_default()
}

/// Reads byte by byte until `needle` (the deadline is the pipe's).
fn read_until(r: &mut impl Read, needle: &[u8]) -> Vec<u8> {
    let mut got = Vec::new();
    let mut byte = [0u8; 1];
    while !got.ends_with(needle) {
        match r.read(&mut byte) {
            Ok(1) => got.push(byte[0]),
            Ok(_) => panic!("closed before {:?}: {:?}", needle, String::from_utf8_lossy(&got)),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => panic!("{e} before {needle:?}: {:?}", String::from_utf8_lossy(&got)),
        }
    }
    got
}

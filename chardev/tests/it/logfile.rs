//! `logfile=` as an operator expects of a console log: `O_APPEND` always (an external
//! `copytruncate` leaves no hole), rotation by size (`logmaxsize=`, `logbackups=`) that never
//! lets a file past its limit, reopen on request (logrotate's `create` mode),
//! `logtimestamp=on`, and the bad inputs refused naming the key. The real `logrotate` runs
//! against a chardev flooded by a frontend writing numbered lines, in both of its modes.

use std::fs;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use chardev::FrontendHandle;
use chardev_testkit::*;
use nix::fcntl::{fcntl, FcntlArg, OFlag};

fn read(path: &Path) -> Vec<u8> {
    fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// Waits until `path` holds `len` bytes (a write in a burst reaches the file from the log's
/// writer thread, a moment later).
fn wait_len(path: &Path, len: u64) {
    wait_until(&format!("{} to hold {len} bytes", path.display()), || {
        fs::metadata(path).is_ok_and(|m| m.len() >= len)
    });
}

/// `PATH.i`.
fn numbered(path: &Path, i: u32) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".{i}"));
    PathBuf::from(name)
}

/// The log's files, oldest first: `PATH.N` ... `PATH.1`, `PATH`.
fn files_oldest_first(path: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> =
        (1..200).rev().map(|i| numbered(path, i)).filter(|p| p.exists()).collect();
    if path.exists() {
        files.push(path.to_path_buf());
    }
    files
}

/// Debian's logrotate, in /usr/sbin (not on every user's PATH).
const LOGROTATE: &str = "/usr/sbin/logrotate";

/// One numbered line of the flood: fixed length, so that a byte's line is its offset / 16.
const LINE: usize = 16;
fn line(n: u64) -> String {
    format!("line {n:010}\n")
}
fn stream(lines: u64) -> Vec<u8> {
    (0..lines).flat_map(|n| line(n).into_bytes()).collect()
}

/// A frontend's thread writing numbered lines through `handle`, `batch` lines a write, with
/// a short pause between writes (a steady flood that a few logrotate runs can cut), until
/// told to stop; it returns how many lines it wrote.
struct Flood {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<u64>,
}

impl Flood {
    fn start(handle: FrontendHandle, batch: u64) -> Flood {
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            let mut n = 0;
            while !stopped.load(Ordering::Relaxed) {
                let text: String = (n..n + batch).map(line).collect();
                handle.write_all(text.as_bytes()).expect("write the flood");
                n += batch;
                // Pacing, not synchronisation: keeps the files a few MB.
                std::thread::sleep(Duration::from_micros(200));
            }
            n
        });
        Flood { stop, thread }
    }

    fn finish(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().expect("the flood's thread")
    }
}

/// A log on a device that is always full (`/dev/full`: every write fails with ENOSPC)
/// never holds the writer up or fails its writes: every byte is counted as lost.
#[test]
fn a_log_that_takes_nothing_counts_every_byte_lost_and_the_writes_go_on() {
    let (_lp, reg) = spawn_registry();
    add(&reg, "null,id=n,logfile=/dev/full");
    let h = connect(&reg, "n");
    let mut written = 0u64;
    for i in 0..2000 {
        let line = format!("line {i:06}\n");
        h.write_all(line.as_bytes()).unwrap();
        written += line.len() as u64;
    }
    assert_eq!(reg.counters("n").unwrap().bytes_out, written);
    wait_until("every byte counted as lost", || reg.counters("n").unwrap().dropped_log == written);
    // The count survives the log being replaced (a hot swap gives the chardev a new one).
    reg.change("n", &"null,id=n".parse().unwrap()).unwrap();
    assert_eq!(reg.counters("n").unwrap().dropped_log, written);
}

/// `overflow=drop` holds for the log too: a log whose file stops taking writes (a fifo that
/// nobody reads, as a hung disk or a stalled log shipper would) never holds the writer up.
/// What does not fit in the log's queue is lost and counted, and once the file takes writes
/// again the log has the stream up to the loss, then one line saying how much is missing.
#[test]
fn with_overflow_drop_a_log_that_stops_taking_writes_never_holds_the_writer_up() {
    const LINES: usize = 350_000; // 4.2 MB: far more than the fifo and the log's queue hold
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("log.fifo");
    mkfifo(&fifo);
    // Open and not read until the writer is done: the fifo fills, then the log's writes block.
    let mut reader = FifoReader::open(&fifo);
    let (_lp, reg) = spawn_registry();
    add(&reg, &format!("null,id=n,overflow=drop,logfile={}", fifo.display()));
    let h = connect(&reg, "n");
    let stream: Vec<u8> = (0..LINES).flat_map(|i| format!("line {i:06}\n").into_bytes()).collect();
    let (tx, done) = std::sync::mpsc::channel();
    let lines = stream.clone();
    std::thread::spawn(move || {
        for line in lines.chunks(12) {
            h.write_all(line).unwrap();
        }
        let _ = tx.send(h);
    });
    let h = done.recv_timeout(DEADLINE).expect("the writer waited for a log that takes nothing");
    let lost = reg.counters("n").unwrap().dropped_log;
    assert_eq!(reg.counters("n").unwrap().bytes_out, stream.len() as u64);
    assert!(lost > 2 << 20, "only {lost} bytes lost of {}", stream.len());

    // The file takes writes again: the stream up to the loss, then the marker before the
    // next output.
    let kept = stream.len() - lost as usize;
    assert!(reader.read_exact(kept) == stream[..kept], "the log is not the stream's start");
    h.write_all(b"after\n").unwrap();
    let marker = format!(
        "[chardev: {lost} bytes of output missing here: the logfile fell behind (overflow=drop)]\n"
    );
    let tail = String::from_utf8_lossy(&reader.read_until(b"after\n")).into_owned();
    assert_eq!(tail, format!("{marker}after\n"));
}

nix::ioctl_read_bad!(fionread, nix::libc::FIONREAD, nix::libc::c_int);

/// Bytes waiting in a fifo for its reader.
fn unread(fifo: &impl AsFd) -> usize {
    let mut n: nix::libc::c_int = 0;
    // SAFETY: the fd is open for the call, and the ioctl writes one int into `n`.
    unsafe { fionread(std::os::fd::AsRawFd::as_raw_fd(&fifo.as_fd()), &mut n) }.unwrap();
    n as usize
}

/// A log whose file hangs (a fifo nobody reads, as a hard NFS mount would) holds up its own
/// chardev's writers (`overflow=block`, QEMU's way), never another chardev's log: the logs of
/// the process are written by one thread, and by more while one is stuck in a file.
#[test]
fn a_log_whose_file_hangs_never_holds_up_another_chardevs_log() {
    let dir = tempfile::tempdir().unwrap();
    let (fifo, other) = (dir.path().join("hung.fifo"), dir.path().join("other.log"));
    mkfifo(&fifo);
    let reader =
        fs::OpenOptions::new().read(true).custom_flags(nix::libc::O_NONBLOCK).open(&fifo).unwrap();
    let (_lp, reg) = spawn_registry();
    add(&reg, &format!("null,id=hung,logfile={}", fifo.display()));
    add(&reg, &format!("null,id=other,logfile={}", other.display()));
    let hung = connect(&reg, "hung");
    // Writes of 1 KiB, a burst: the log's writer thread writes them (a first write after a
    // quiet spell goes to the file from the writer's own thread).
    let flood =
        std::thread::spawn(move || (0..(4 << 10)).try_for_each(|_| hung.write_all(&[b'h'; 1024])));
    // The fifo is full: a log writer thread is stuck in write(2), and the flood waits.
    // (A pipe holds 64 KiB in pages: output written in pieces fills it to a little less.)
    wait_until("the fifo to fill", || unread(&reader) >= 60 << 10);

    let h = connect(&reg, "other");
    let (tx, done) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for _ in 0..(4 << 10) {
            h.write_all(&[b'o'; 1024]).unwrap();
        }
        let _ = tx.send(h);
    });
    let _h = done.recv_timeout(DEADLINE).expect("the other log was held up by the hung one");
    wait_len(&other, 4 << 20);
    assert!(read(&other).iter().all(|&b| b == b'o'));

    // The hung file is read again: its log goes on, and its writer finishes.
    let drain = std::thread::spawn(move || {
        let mut got = 0usize;
        let mut buf = vec![0u8; 1 << 16];
        while got < 4 << 20 {
            assert!(chardev::fd::wait_readable(reader.as_fd(), Some(DEADLINE)).unwrap());
            match nix::unistd::read(reader.as_fd(), &mut buf) {
                Ok(n) => got += n,
                Err(nix::errno::Errno::EAGAIN) => {}
                Err(e) => panic!("read the fifo: {e}"),
            }
        }
        got
    });
    flood.join().unwrap().unwrap();
    assert_eq!(drain.join().unwrap(), 4 << 20);
}

/// With `overflow=drop`, removing a chardev does not wait for its log's file either: the
/// removal returns while the file hangs, and the file is closed (the fifo's reader sees its
/// end) once the write in progress returns.
#[test]
fn with_overflow_drop_removing_a_chardev_does_not_wait_for_a_hung_log() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("hung.fifo");
    mkfifo(&fifo);
    let reader =
        fs::OpenOptions::new().read(true).custom_flags(nix::libc::O_NONBLOCK).open(&fifo).unwrap();
    let (_lp, reg) = spawn_registry();
    add(&reg, &format!("null,id=n,overflow=drop,logfile={}", fifo.display()));
    let h = connect(&reg, "n");
    for _ in 0..(2 << 10) {
        h.write_all(&[b'd'; 1024]).unwrap();
    }
    // (A pipe holds 64 KiB in pages: output written in pieces fills it to a little less.)
    wait_until("the fifo to fill", || unread(&reader) >= 60 << 10);
    drop(h);
    let (tx, removed) = std::sync::mpsc::channel();
    let registry = reg.clone();
    std::thread::spawn(move || {
        let _ = tx.send(registry.remove_forced("n"));
    });
    removed
        .recv_timeout(DEADLINE)
        .expect("the removal waited for the hung log")
        .expect("remove the chardev");
    // The file takes writes again: what the log kept comes, then the end of the file.
    let mut got = 0usize;
    let mut buf = vec![0u8; 1 << 16];
    loop {
        assert!(chardev::fd::wait_readable(reader.as_fd(), Some(DEADLINE)).unwrap(), "no end");
        match nix::unistd::read(reader.as_fd(), &mut buf) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(nix::errno::Errno::EAGAIN) => {}
            Err(e) => panic!("read the fifo: {e}"),
        }
    }
    assert!(got > 60 << 10 && got <= 2 << 20, "{got} bytes of the log arrived");
}

#[test]
fn the_log_is_o_append_so_an_external_truncate_leaves_no_hole() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("log");
    let (_lp, reg) = spawn_registry();
    add(&reg, &format!("null,id=n,logfile={}", log.display()));
    let h = connect(&reg, "n");
    h.write_all(&[b'x'; 1000]).unwrap();
    wait_len(&log, 1000);
    // What copytruncate does after its copy.
    fs::OpenOptions::new().write(true).open(&log).unwrap().set_len(0).unwrap();
    h.write_all(b"after\n").unwrap();
    wait_len(&log, 6);
    // Without O_APPEND the write lands at offset 1000, after 1000 NUL bytes.
    assert_eq!(read(&log), b"after\n");
}

#[test]
fn a_logfile_from_an_fd_set_gets_o_append_on_the_passed_description() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("log");
    fs::write(&log, "previous boot\n").unwrap();
    let passed: OwnedFd = fs::OpenOptions::new().write(true).open(&log).unwrap().into();
    let mine = passed.try_clone().unwrap();
    let flags =
        |fd: &OwnedFd| OFlag::from_bits_retain(fcntl(fd.as_fd(), FcntlArg::F_GETFL).unwrap());
    assert!(!flags(&mine).contains(OFlag::O_APPEND));
    let (_lp, reg) = spawn_registry();
    let set = reg.fd_sets().add(passed, None, None).unwrap().fdset_id;
    add(&reg, &format!("null,id=n,logfile=/dev/fdset/{set}"));
    assert!(flags(&mine).contains(OFlag::O_APPEND), "the passed description has O_APPEND");
    assert_eq!(read(&log), b"", "truncated as QEMU does without logappend=on");
    let h = connect(&reg, "n");
    h.write_all(b"0123456789").unwrap();
    wait_len(&log, 10);
    fs::OpenOptions::new().write(true).open(&log).unwrap().set_len(0).unwrap();
    h.write_all(b"after\n").unwrap();
    wait_len(&log, 6);
    assert_eq!(read(&log), b"after\n");
    // No path to rotate under or to open again.
    let err = reg
        .add_str(&format!("null,id=r,logfile=/dev/fdset/{set},logmaxsize=1M"))
        .expect_err("rotation of an fd set")
        .to_string();
    assert!(err.contains("'logmaxsize=1048576'") && err.contains("no name to rotate"), "{err}");
    let err = reg.reopen_log("n").expect_err("reopen of an fd set").to_string();
    assert!(err.contains("/dev/fdset/N"), "{err}");
    reg.reopen_logs().expect("reopen_logs leaves an fd-set log as it is");
}

#[test]
fn logmaxsize_never_lets_a_file_past_it_and_the_files_hold_the_stream_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("console.log");
    let (_lp, reg) = spawn_registry();
    add(&reg, &format!("null,id=n,logfile={},logmaxsize=4K,logbackups=99", log.display()));
    let h = connect(&reg, "n");
    // Writes of every size, some far larger than a file, back to back (queued in bursts).
    let mut want = Vec::new();
    let mut n = 0u64;
    for size in [1usize, 15, 100, 4095, 4096, 4097, 10_000, 300, 65_536, 7, 20_000] {
        let text: Vec<u8> =
            (0..size).map(|i| b"0123456789abcdef\n"[(n as usize + i) % 17]).collect();
        n += size as u64;
        h.write_all(&text).unwrap();
        want.extend_from_slice(&text);
    }
    reg.remove_forced("n").unwrap();
    let files = files_oldest_first(&log);
    for f in &files {
        let len = fs::metadata(f).unwrap().len();
        assert!(len <= 4096, "{} holds {len} bytes, past logmaxsize", f.display());
    }
    let got: Vec<u8> = files.iter().flat_map(|f| read(f)).collect();
    assert_eq!(got.len(), want.len(), "files {files:?}");
    assert!(got == want, "the files, oldest first, are not the stream");
    // Every file but the newest is full: a write that crossed the limit was split.
    for f in &files[..files.len() - 1] {
        assert_eq!(fs::metadata(f).unwrap().len(), 4096, "{}", f.display());
    }
}

#[test]
fn logbackups_keeps_that_many_and_drops_the_oldest() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("log");
    let (_lp, reg) = spawn_registry();
    add(&reg, &format!("null,id=n,logfile={},logmaxsize=4K,logbackups=2", log.display()));
    let h = connect(&reg, "n");
    let all = stream(6 * 4096 / LINE as u64 + 10);
    h.write_all(&all).unwrap();
    reg.remove_forced("n").unwrap();
    let files = files_oldest_first(&log);
    assert_eq!(files, vec![numbered(&log, 2), numbered(&log, 1), log.clone()]);
    let got: Vec<u8> = files.iter().flat_map(|f| read(f)).collect();
    assert_eq!(got.len(), 2 * 4096 + all.len() % 4096);
    assert!(all.ends_with(&got), "the files hold the newest output");
}

#[test]
fn logtimestamp_starts_every_line_with_the_time_and_a_split_line_gets_one() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("log");
    let (_lp, reg) = spawn_registry();
    add(&reg, &format!("null,id=n,logfile={},logtimestamp=on", log.display()));
    let h = connect(&reg, "n");
    for part in ["boot", "ing\nlogin: ", "\n", "\nfin", "e\n"] {
        h.write_all(part.as_bytes()).unwrap();
    }
    reg.remove_forced("n").unwrap();
    let text = String::from_utf8(read(&log)).unwrap();
    let lines: Vec<&str> = text.split_inclusive('\n').collect();
    let bodies: Vec<&str> = lines
        .iter()
        .map(|l| {
            // 2026-12-03T10:11:12.345Z and a space.
            let (stamp, body) = l.split_at(25);
            let b = stamp.as_bytes();
            let digits = [0, 1, 2, 3, 5, 6, 8, 9, 11, 12, 14, 15, 17, 18, 20, 21, 22];
            assert!(digits.iter().all(|&i| b[i].is_ascii_digit()), "{l:?}");
            assert_eq!(
                (b[4], b[7], b[10], b[13], b[16], b[19]),
                (b'-', b'-', b'T', b':', b':', b'.')
            );
            assert_eq!(&stamp[23..], "Z ", "{l:?}");
            body
        })
        .collect();
    assert_eq!(bodies, ["booting\n", "login: \n", "\n", "fine\n"]);
}

#[test]
fn reopen_moves_the_log_to_a_new_file_at_its_path() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("log");
    let (_lp, reg) = spawn_registry();
    add(&reg, &format!("null,id=n,logfile={}", log.display()));
    add(&reg, "null,id=plain");
    let h = connect(&reg, "n");
    h.write_all(b"a\n").unwrap();
    wait_len(&log, 2);
    let old = dir.path().join("log.old");
    fs::rename(&log, &old).unwrap();
    h.write_all(b"b\n").unwrap();
    wait_len(&old, 4);
    reg.reopen_logs().unwrap();
    h.write_all(b"c\n").unwrap();
    wait_len(&log, 2);
    reg.reopen_log("n").unwrap();
    h.write_all(b"d\n").unwrap();
    reg.remove_forced("n").unwrap();
    assert_eq!(read(&old), b"a\nb\n");
    assert_eq!(read(&log), b"c\nd\n", "reopen of an existing file appends");
    let err = reg.reopen_log("plain").expect_err("no logfile").to_string();
    assert_eq!(err, "chardev 'plain' cannot reopen its logfile: it has none");
    let err = reg.reopen_log("nope").expect_err("no chardev").to_string();
    assert!(err.contains("nope"), "{err}");
}

#[test]
fn bad_log_keys_are_refused_naming_the_key_and_nothing_is_made() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("log");
    let (_lp, reg) = spawn_registry();
    let cases = [
        ("null,id=n,logmaxsize=1M", "'logmaxsize=1M': rotates the logfile: give 'logfile' too"),
        ("null,id=n,logbackups=3", "'logbackups=3': rotates the logfile: give 'logfile' too"),
        (
            &format!("null,id=n,logfile={},logbackups=3", log.display()),
            "'logbackups=3': counts rotated logfiles: give 'logmaxsize' too",
        ),
        (
            &format!("null,id=n,logfile={},logmaxsize=0", log.display()),
            "'logmaxsize=0': must be at least 4K",
        ),
        (
            &format!("null,id=n,logfile={},logmaxsize=4095", log.display()),
            "'logmaxsize=4095': must be at least 4K",
        ),
        (
            &format!("null,id=n,logfile={},logmaxsize=2T", log.display()),
            "'logmaxsize=2199023255552': is larger than the maximum, 1T",
        ),
        (
            &format!("null,id=n,logfile={},logmaxsize=1x", log.display()),
            "'logmaxsize=1x': expects a size",
        ),
        (
            &format!("null,id=n,logfile={},logmaxsize=1M,logbackups=100", log.display()),
            "'logbackups=100': must be at most 99",
        ),
        (
            &format!("null,id=n,logfile={},logmaxsize=1M,logbackups=-1", log.display()),
            "'logbackups=-1': expects a non-negative number",
        ),
    ];
    for (spec, want) in cases {
        let err = reg.add_str(spec).expect_err(spec).to_string();
        assert!(err.contains(want), "{spec}: {err}");
    }
    assert!(reg.ids().is_empty(), "{:?}", reg.ids());
    assert!(!log.exists(), "a refused chardev opened its log");
}

/// Runs the real logrotate once, forced, with `config` (its `{log}` the log's path) and a
/// state file in `dir`.
fn logrotate(dir: &Path, log: &Path, config: &str) {
    let conf = dir.join("logrotate.conf");
    fs::write(&conf, config.replace("{log}", &log.display().to_string())).unwrap();
    let mut child = Command::new(LOGROTATE)
        .arg("-f")
        .arg("-s")
        .arg(dir.join("logrotate.state"))
        .arg(&conf)
        .spawn()
        .expect("run logrotate");
    let status = wait_exit(&mut child, "logrotate");
    assert!(status.success(), "logrotate: {status:?}");
}

/// Where `content` starts in the flood's stream: it holds whole lines after its first `\n`.
fn offset_in_stream(content: &[u8]) -> usize {
    let first_nl = content.iter().position(|&b| b == b'\n').expect("a whole line");
    let next = &content[first_nl + 1..];
    if next.len() < LINE {
        // A tail shorter than a line: only its end can be placed.
        let text = std::str::from_utf8(&content[..first_nl]).unwrap();
        let n: usize = text.rsplit(' ').next().unwrap().parse().unwrap();
        return n * LINE + LINE - (first_nl + 1);
    }
    let text = std::str::from_utf8(&next[..LINE - 1]).unwrap();
    let n: usize = text.strip_prefix("line ").unwrap().parse().unwrap();
    n * LINE - (first_nl + 1)
}

#[test]
fn logrotate_create_and_reopen_while_flooded_loses_nothing() {
    require_program(LOGROTATE, "logrotate");
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("console.log");
    let (_lp, reg) = spawn_registry();
    add(&reg, &format!("null,id=n,logfile={}", log.display()));
    let flood = Flood::start(connect(&reg, "n"), 64);
    let config = "{log} {\n  rotate 50\n  create\n  nocompress\n  missingok\n}\n";
    for round in 1..=5u64 {
        wait_len(&log, 16 * 1024);
        logrotate(dir.path(), &log, config);
        // logrotate's postrotate would send SIGHUP; the library call is what it triggers.
        reg.reopen_log("n").unwrap();
        assert!(
            numbered(&log, round as u32).exists(),
            "round {round}: no {}.{round}",
            log.display()
        );
    }
    let lines = flood.finish();
    reg.remove_forced("n").unwrap();
    let files = files_oldest_first(&log);
    assert_eq!(files.len(), 6, "{files:?}");
    let mut got = Vec::new();
    for f in &files {
        let content = read(f);
        assert!(!content.contains(&0), "a NUL byte in {}", f.display());
        got.extend_from_slice(&content);
    }
    let want = stream(lines);
    assert_eq!(
        got.len(),
        want.len(),
        "the rotated files hold {} of {} bytes",
        got.len(),
        want.len()
    );
    assert!(got == want, "the files, oldest first, are not what the frontend wrote");
}

#[test]
fn logrotate_copytruncate_while_flooded_leaves_no_hole_and_loses_only_its_window() {
    require_program(LOGROTATE, "logrotate");
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("console.log");
    let (_lp, reg) = spawn_registry();
    add(&reg, &format!("null,id=n,logfile={}", log.display()));
    let flood = Flood::start(connect(&reg, "n"), 64);
    let config = "{log} {\n  rotate 50\n  copytruncate\n  nocompress\n  missingok\n}\n";
    for _ in 0..5 {
        wait_len(&log, 16 * 1024);
        logrotate(dir.path(), &log, config);
    }
    wait_len(&log, 16 * 1024);
    let lines = flood.finish();
    reg.remove_forced("n").unwrap();
    let want = stream(lines);
    let files = files_oldest_first(&log);
    assert_eq!(files.len(), 6, "{files:?}");
    // copytruncate copies the file, then truncates it: what we append between the two is
    // lost by its design. Ours may lose nothing else: every file is one unbroken piece of
    // the stream (no hole, no NUL, no gap inside), the pieces in order, and the newest ends
    // with the last line written.
    let mut at = 0;
    let mut lost = 0;
    for f in &files {
        let content = read(f);
        assert!(!content.contains(&0), "a NUL byte in {}", f.display());
        let start = offset_in_stream(&content);
        assert!(
            start >= at,
            "{} starts at {start}, before the previous file's end {at}",
            f.display()
        );
        assert!(
            want[start..start + content.len()] == content[..],
            "{} is not one unbroken piece of the stream (at {start})",
            f.display()
        );
        lost += start - at;
        at = start + content.len();
    }
    assert_eq!(at, want.len(), "the newest file does not end with the last line written");
    eprintln!("copytruncate's window lost {lost} of {} bytes over 5 rotations", want.len());
}

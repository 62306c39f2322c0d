//! Migration end to end, the seed's scenario first: a non-blocking socket passed with
//! `getfd`, `migrate fd:NAME`, a slow reader, and a stream that parses with every page
//! right; then O_NONBLOCK set again behind our back, a regular file target, a round trip
//! into a second instance started with `-incoming fd:0`, fd hygiene, and a corrupt stream.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use chardev_testkit::KillOnDrop as Machine;
use chardev_testkit::*;
use qevm as migration;
use serde_json::{json, Value};

const BIN: &str = env!("CARGO_BIN_EXE_serial-console");
const RAM: usize = 64 << 20;
const IMAGE: usize = 32 << 20;
const IMAGE_AT: usize = 16 << 20;

fn random(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// A QMP session on a raw socket.
struct Qmp {
    out: UnixStream,
    input: BufReader<UnixStream>,
}

impl Qmp {
    fn open(path: &Path) -> Qmp {
        let s = connect_unix(path);
        let mut q = Qmp { out: s.try_clone().unwrap(), input: BufReader::new(s) };
        q.read();
        assert_eq!(q.call(json!({"execute": "qmp_capabilities"})), json!({}));
        q
    }
    fn read(&mut self) -> Value {
        let mut line = String::new();
        assert!(self.input.read_line(&mut line).unwrap() > 0, "QMP closed");
        serde_json::from_str(&line).unwrap()
    }
    /// Sends a command (with fds on the same sendmsg), skips events, returns the result.
    fn call_with_fds(
        &mut self,
        cmd: Value,
        fds: &[std::os::fd::BorrowedFd<'_>],
    ) -> Result<Value, String> {
        let text = cmd.to_string();
        let sent = chardev::fd::send_with_fds(self.out.as_fd(), text.as_bytes(), fds).unwrap();
        assert_eq!(sent, text.len());
        loop {
            let reply = self.read();
            if let Some(r) = reply.get("return") {
                return Ok(r.clone());
            }
            if let Some(e) = reply.get("error") {
                return Err(e["desc"].as_str().unwrap_or_default().to_string());
            }
        }
    }
    fn call(&mut self, cmd: Value) -> Value {
        self.call_with_fds(cmd.clone(), &[]).unwrap_or_else(|e| panic!("{cmd}: {e}"))
    }
    fn wait_migrated(&mut self) -> Value {
        let end = Instant::now() + Duration::from_secs(60);
        loop {
            let r = self.call(json!({"execute": "query-migrate"}));
            match r["status"].as_str() {
                Some("completed") => return r,
                Some("failed") | Some("cancelled") => panic!("migration ended: {r}"),
                _ => {}
            }
            assert!(Instant::now() < end, "migration did not finish: {r}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

struct Source {
    _m: Machine,
    qmp: Qmp,
    serial: PathBuf,
    image: Vec<u8>,
    _dir: tempfile::TempDir,
}

/// Instance A: 64 MiB of RAM with 32 MiB of random data loaded at 16 MiB.
fn source() -> Source {
    let dir = tempfile::tempdir().unwrap();
    let image = random(IMAGE, 7);
    let file = dir.path().join("image");
    std::fs::write(&file, &image).unwrap();
    let (qmp, serial) = (dir.path().join("qmp.sock"), dir.path().join("serial.sock"));
    let child = Command::new(BIN)
        .args(["-nodefaults", "-m", "64", "-device"])
        .arg(format!("loader,file={},addr={IMAGE_AT:#x},force-raw=on", file.display()))
        .arg("-qmp")
        .arg(format!("unix:{},server=on,wait=off", qmp.display()))
        .arg("-serial")
        .arg(format!("unix:{},server=on,wait=off", serial.display()))
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let m = Machine(child);
    let qmp = Qmp::open(&qmp);
    Source { _m: m, qmp, serial, image, _dir: dir }
}

/// The RAM the stream must carry.
fn expected_ram(image: &[u8]) -> Vec<u8> {
    let mut ram = vec![0u8; RAM];
    ram[IMAGE_AT..IMAGE_AT + image.len()].copy_from_slice(image);
    ram
}

fn check_stream(stream: &[u8], image: &[u8]) {
    let mut ram = vec![0u8; RAM];
    let incoming = migration::load(stream, "pc", &mut ram)
        .unwrap_or_else(|e| panic!("the stream does not parse: {e}"));
    assert!(ram == expected_ram(image), "RAM differs after the migration");
    assert_eq!(incoming.data_pages as usize, IMAGE / migration::PAGE_SIZE, "pages sent with data");
    assert!(
        incoming.device(migration::SERIAL, 0).is_some()
            && incoming.device(migration::GUEST_SHELL, 0).is_some()
    );
}

/// Reads the whole stream slowly (a few ms per MiB): the writer must wait, not fail.
fn slow_reader(mut s: UnixStream) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        let mut all = Vec::new();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = s.read(&mut buf).unwrap();
            if n == 0 {
                return all;
            }
            all.extend_from_slice(&buf[..n]);
            if all.len() % (1 << 20) < n {
                std::thread::sleep(Duration::from_millis(3));
            }
        }
    })
}

fn pass_and_migrate(
    src: &mut Source,
    fd: std::os::fd::BorrowedFd<'_>,
    after_getfd: impl FnOnce(),
) -> Value {
    let getfd = json!({"execute": "getfd", "arguments": {"fdname": "mig"}});
    assert_eq!(src.qmp.call_with_fds(getfd, &[fd]), Ok(json!({})));
    after_getfd();
    assert_eq!(
        src.qmp.call(json!({"execute": "migrate", "arguments": {"uri": "fd:mig"}})),
        json!({})
    );
    let done = src.qmp.wait_migrated();
    assert_eq!(src.qmp.call(json!({"execute": "query-status"}))["status"], "postmigrate");
    // migrate consumed the name.
    let closefd = json!({"execute": "closefd", "arguments": {"fdname": "mig"}});
    assert_eq!(
        src.qmp.call_with_fds(closefd, &[]),
        Err("File descriptor named 'mig' not found".into())
    );
    done
}

#[test]
fn the_seed_a_nonblocking_socket_passed_with_getfd_carries_a_correct_stream_to_a_slow_reader() {
    let mut src = source();
    let (ours, theirs) = UnixStream::pair().unwrap();
    chardev::fd::set_nonblocking(&ours, true).unwrap();
    let reader = slow_reader(theirs);
    let done = pass_and_migrate(&mut src, ours.as_fd(), || {});
    assert!(
        !chardev::fd::is_nonblocking(&ours).unwrap(),
        "getfd's fd arrived blocking (shared description)"
    );
    drop(ours);
    let stream = reader.join().unwrap();
    assert_eq!(done["ram"]["transferred"].as_u64(), Some(stream.len() as u64));
    check_stream(&stream, &src.image);
}

#[test]
fn o_nonblock_set_again_behind_the_migrations_back_does_not_corrupt_the_stream() {
    let mut src = source();
    let (ours, theirs) = UnixStream::pair().unwrap();
    let reader = slow_reader(theirs);
    let ours2 = ours.try_clone().unwrap();
    pass_and_migrate(&mut src, ours.as_fd(), move || {
        chardev::fd::set_nonblocking(&ours2, true).unwrap()
    });
    drop(ours);
    check_stream(&reader.join().unwrap(), &src.image);
}

#[test]
fn a_regular_file_is_a_valid_target() {
    let mut src = source();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("stream");
    let file = std::fs::File::create(&path).unwrap();
    pass_and_migrate(&mut src, file.as_fd(), || {});
    drop(file);
    check_stream(&std::fs::read(&path).unwrap(), &src.image);
}

fn guest_sum(serial: &Path) -> String {
    let mut s = connect_unix(serial);
    s.write_all(format!("sum {IMAGE_AT:#x} {IMAGE:#x}\r").as_bytes()).unwrap();
    // The guest may greet first; read on until the sum's line and the prompt after it.
    let mut got = Vec::new();
    let mut byte = [0u8; 1];
    loop {
        assert_eq!(s.read(&mut byte).unwrap(), 1, "serial closed");
        got.push(byte[0]);
        if got.ends_with(b"guest$ ") {
            let text = String::from_utf8_lossy(&got).into_owned();
            let sum =
                text.lines().find(|l| l.len() == 16 && l.bytes().all(|b| b.is_ascii_hexdigit()));
            if let Some(sum) = sum {
                return sum.to_string();
            }
        }
    }
}

#[test]
fn round_trip_into_a_second_instance_with_incoming_fd() {
    let mut src = source();
    let before = guest_sum(&src.serial);
    assert_eq!(before, format!("{:016x}", demos::machine::fnv1a(&src.image)));
    let (to_b, from_a) = UnixStream::pair().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let serial_b = dir.path().join("b.sock");
    let qmp_b = dir.path().join("b-qmp.sock");
    // B inherits its end as fd 0 and reads the stream from it: -incoming fd:0.
    let b = Machine(
        Command::new(BIN)
            .args(["-nodefaults", "-m", "64", "-incoming", "fd:0", "-serial"])
            .arg(format!("unix:{},server=on,wait=off", serial_b.display()))
            .arg("-qmp")
            .arg(format!("unix:{},server=on,wait=off", qmp_b.display()))
            .stdin(Stdio::from(OwnedFd::from(from_a)))
            .spawn()
            .unwrap(),
    );
    let mut qb = Qmp::open(&qmp_b);
    assert_eq!(qb.call(json!({"execute": "query-status"}))["status"], "inmigrate");
    pass_and_migrate(&mut src, to_b.as_fd(), || {});
    drop(to_b);
    // What is typed to B before its state arrives is overwritten with it, as on QEMU: wait.
    wait_until("B to run", || qb.call(json!({"execute": "query-status"}))["status"] == "running");
    assert_eq!(guest_sum(&serial_b), before, "B's guest sees A's RAM");
    // And B's shell keeps running.
    let mut s = connect_unix(&serial_b);
    s.write_all(b"echo still here\r").unwrap();
    let mut got = Vec::new();
    let mut byte = [0u8; 1];
    while !got.ends_with(b"still here\r\nguest$ ") {
        assert_eq!(s.read(&mut byte).unwrap(), 1);
        got.push(byte[0]);
    }
    drop(b);
}

fn fd_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).unwrap().count()
}

#[test]
fn fds_are_back_where_they_started_after_100_getfd_closefd_cycles_and_a_migration() {
    let mut src = source();
    let pid = src._m.0.id();
    let start = fd_count(pid);
    for i in 0..100 {
        let f = tempfile::tempfile().unwrap();
        let name = format!("f{i}");
        let getfd = json!({"execute": "getfd", "arguments": {"fdname": name}});
        assert_eq!(src.qmp.call_with_fds(getfd, &[f.as_fd()]), Ok(json!({})));
        src.qmp.call(json!({"execute": "closefd", "arguments": {"fdname": name}}));
    }
    assert_eq!(fd_count(pid), start, "getfd/closefd leaked");
    let (ours, theirs) = UnixStream::pair().unwrap();
    let reader = slow_reader(theirs);
    pass_and_migrate(&mut src, ours.as_fd(), || {});
    drop(ours);
    reader.join().unwrap();
    wait_until("the migration's fds to close", || fd_count(pid) == start);
}

#[test]
fn a_corrupt_stream_is_a_clear_error_and_exit_1() {
    let mut src = source();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("stream");
    let file = std::fs::File::create(&path).unwrap();
    pass_and_migrate(&mut src, file.as_fd(), || {});
    let mut stream = std::fs::read(&path).unwrap();
    stream.truncate(stream.len() / 2);
    let cut = dir.path().join("cut");
    std::fs::write(&cut, &stream).unwrap();
    let loader = Command::new(BIN)
        .args(["-nodefaults", "-m", "64", "-incoming", "fd:0"])
        .stdin(std::fs::File::open(&cut).unwrap())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let out = wait_output(loader, "serial-console -incoming fd:0 with a cut stream");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("load of migration failed") && err.contains("ends at byte"), "{err}");
}

#[test]
fn migrate_incoming_after_defer_over_a_unix_socket() {
    let mut src = source();
    let before = guest_sum(&src.serial);
    let dir = tempfile::tempdir().unwrap();
    let (qmp_b, serial_b, mig) =
        (dir.path().join("bq.sock"), dir.path().join("bs.sock"), dir.path().join("mig.sock"));
    let _b = Machine(
        Command::new(BIN)
            .args(["-nodefaults", "-m", "64", "-incoming", "defer", "-qmp"])
            .arg(format!("unix:{},server=on,wait=off", qmp_b.display()))
            .arg("-serial")
            .arg(format!("unix:{},server=on,wait=off", serial_b.display()))
            .stdin(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let mut qb = Qmp::open(&qmp_b);
    assert_eq!(qb.call(json!({"execute": "query-status"}))["status"], "inmigrate");
    let cont = qb.call_with_fds(json!({"execute": "cont"}), &[]);
    assert_eq!(cont, Err("Migration is not finished yet".into()));
    let uri = format!("unix:{}", mig.display());
    qb.call(json!({"execute": "migrate-incoming", "arguments": {"uri": uri}}));
    wait_until("B to listen", || mig.exists());
    assert_eq!(src.qmp.call(json!({"execute": "migrate", "arguments": {"uri": uri}})), json!({}));
    src.qmp.wait_migrated();
    wait_until("B to run", || qb.call(json!({"execute": "query-status"}))["status"] == "running");
    assert_eq!(guest_sum(&serial_b), before);
    // One migration per process.
    let again =
        src.qmp.call_with_fds(json!({"execute": "migrate", "arguments": {"uri": uri}}), &[]);
    assert!(again.unwrap_err().contains("migrated already"));
}

#[test]
fn migrate_cancel_unblocks_a_stalled_reader_and_the_guest_runs_again() {
    let mut src = source();
    let dir = tempfile::tempdir().unwrap();
    let sink = dir.path().join("sink.sock");
    let listener = std::os::unix::net::UnixListener::bind(&sink).unwrap();
    let uri = format!("unix:{}", sink.display());
    assert_eq!(src.qmp.call(json!({"execute": "migrate", "arguments": {"uri": uri}})), json!({}));
    let ready = chardev::fd::wait_readable(listener.as_fd(), Some(DEADLINE)).unwrap();
    assert!(ready, "the migration did not connect within {DEADLINE:?}");
    let (_stalled, _) = listener.accept().unwrap(); // never read
    let r = src.qmp.call(json!({"execute": "query-migrate"}));
    assert_eq!(r["status"], "active", "{r}");
    assert_eq!(src.qmp.call(json!({"execute": "query-status"}))["status"], "paused");
    assert_eq!(src.qmp.call(json!({"execute": "migrate_cancel"})), json!({}));
    wait_until("the migration to end", || {
        src.qmp.call(json!({"execute": "query-migrate"}))["status"] == "cancelled"
    });
    wait_until("the guest to run", || {
        src.qmp.call(json!({"execute": "query-status"}))["status"] == "running"
    });
}

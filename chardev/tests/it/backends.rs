//! The core backends as QEMU users know them: `null`, `file`, `pipe`, `ringbuf` (alias
//! `memory`), and `logfile=`/`logappend=` on top of any of them.

use std::fs;
use std::io::{ErrorKind, Write};
use std::os::fd::AsFd;
use std::path::Path;

use chardev::Event;
use chardev_testkit::*;

/// The error text of a call that must fail.
fn error<T: std::fmt::Debug>(r: chardev::Result<T>) -> String {
    r.expect_err("this must fail").to_string()
}

fn read(path: &Path) -> Vec<u8> {
    fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

fn write_file(path: &Path, data: &[u8]) {
    fs::write(path, data).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

fn names_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .expect("list the temp dir")
        .map(|e| e.expect("dir entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

fn tempdir() -> tempfile::TempDir {
    tempfile::tempdir().expect("temp dir")
}

// ---- null ----

#[test]
fn null_accepts_writes_and_never_opens() {
    let (_lp, reg) = spawn_registry();
    add(&reg, "null,id=n0");
    let h = connect(&reg, "n0");
    let rec = record(&h, 64);
    assert_eq!(h.write(b"buf\0").expect("write to null"), 4);
    h.write_all(&[0x55; 100_000]).expect("write_all to null");
    // QEMU's null chardev deliberately never sends OPENED, and has no input.
    rec.quiet(QUIET);
    assert!(!h.is_open());
    assert_eq!(reg.query()[0].filename, "null");
}

#[test]
fn null_refuses_fds() {
    let (_lp, reg) = spawn_registry();
    add(&reg, "null,id=n0");
    let h = connect(&reg, "n0");
    assert!(!h.can_pass_fds());
    let dir = tempdir();
    let f = fs::File::create(dir.path().join("x")).expect("create");
    let err = h.write_with_fds(b"x", &[f.as_fd()]).expect_err("null cannot pass fds");
    assert_eq!(err.kind(), ErrorKind::Unsupported, "{err}");
}

// ---- file ----

#[test]
fn file_creates_its_output() {
    let dir = tempdir();
    let out = dir.path().join("out");
    let (_lp, reg) = spawn_registry();
    add(&reg, &format!("file,id=f0,path={}", out.display()));
    assert_eq!(read(&out), b"", "created empty at add");
    let h = connect(&reg, "f0");
    h.write_all(b"hello!").expect("write_all");
    assert_eq!(read(&out), b"hello!");
}

#[test]
fn file_truncates_its_output_by_default() {
    let dir = tempdir();
    let out = dir.path().join("out");
    write_file(&out, b"what was there before\n");
    let (_lp, reg) = spawn_registry();
    add(&reg, &format!("file,id=f0,path={}", out.display()));
    assert_eq!(read(&out), b"", "truncated at add, before any write");
    let h = connect(&reg, "f0");
    h.write_all(b"new").expect("write_all");
    assert_eq!(read(&out), b"new");
}

#[test]
fn file_append_on_appends() {
    let dir = tempdir();
    let out = dir.path().join("out");
    write_file(&out, b"old\n");
    let (_lp, reg) = spawn_registry();
    add(&reg, &format!("file,id=f0,path={},append=on", out.display()));
    let h = connect(&reg, "f0");
    h.write_all(b"new\n").expect("write_all");
    assert_eq!(read(&out), b"old\nnew\n");
}

#[test]
fn file_input_from_a_regular_file_then_exactly_one_closed() {
    let dir = tempdir();
    let input = dir.path().join("in");
    write_file(&input, b"typed ahead");
    let (_lp, reg) = spawn_registry();
    add(
        &reg,
        &format!(
            "file,id=f0,path={},input-path={}",
            dir.path().join("out").display(),
            input.display()
        ),
    );
    let h = connect(&reg, "f0");
    let rec = record(&h, 4);
    rec.expect_event(Event::Opened);
    assert_eq!(rec.data(11), b"typed ahead");
    rec.expect_event(Event::Closed);
    rec.quiet(QUIET);
    assert!(!h.is_open());
}

#[test]
fn file_input_from_a_fifo_delivers_a_writers_bytes_then_closed() {
    let dir = tempdir();
    let fifo = dir.path().join("in");
    mkfifo(&fifo);
    // A writer that is there first: its open waits until the chardev opens the fifo.
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    let writer_path = fifo.clone();
    std::thread::spawn(move || {
        let result = fs::OpenOptions::new()
            .write(true)
            .open(&writer_path)
            .and_then(|mut w| w.write_all(b"fifo-in\0"));
        let _ = done_tx.send(result.map_err(|e| e.to_string()));
    });
    let (_lp, reg) = spawn_registry();
    add(
        &reg,
        &format!(
            "file,id=f0,path={},input-path={}",
            dir.path().join("out").display(),
            fifo.display()
        ),
    );
    let h = connect(&reg, "f0");
    let rec = record(&h, 64);
    rec.expect_event(Event::Opened);
    done_rx.recv_timeout(DEADLINE).expect("writer finished").expect("writer wrote");
    assert_eq!(rec.data(8), b"fifo-in\0");
    rec.expect_event(Event::Closed);
}

#[test]
fn file_input_eof_closes_once_and_is_not_read_again() {
    let dir = tempdir();
    let fifo = dir.path().join("in");
    mkfifo(&fifo);
    let (_lp, reg) = spawn_registry();
    add(
        &reg,
        &format!(
            "file,id=f0,path={},input-path={}",
            dir.path().join("out").display(),
            fifo.display()
        ),
    );
    let h = connect(&reg, "f0");
    let rec = record(&h, 64);
    rec.expect_event(Event::Opened);
    let mut w = fifo_writer(&fifo);
    w.write_all(b"first").expect("write");
    drop(w);
    assert_eq!(rec.data(5), b"first");
    rec.expect_event(Event::Closed);
    // QEMU removes the watch at EOF and never re-arms it: a second writer is not heard.
    let mut again = fifo_writer(&fifo);
    again.write_all(b"second").expect("write");
    drop(again);
    rec.quiet(QUIET);
}

#[test]
fn file_with_an_unopenable_output_names_the_path_and_adds_nothing() {
    let dir = tempdir();
    let out = dir.path().join("no-such-dir").join("out");
    let (_lp, reg) = spawn_registry();
    add(&reg, "null,id=other");
    let before = reg.query();
    let err = error(reg.add_str(&format!("file,id=f0,path={}", out.display())));
    assert!(err.contains(&out.display().to_string()), "{err}");
    assert_eq!(reg.query(), before);
    assert!(!reg.contains("f0"));
}

#[test]
fn file_with_an_unopenable_input_names_the_path_and_adds_nothing() {
    let dir = tempdir();
    let input = dir.path().join("missing-input");
    let (_lp, reg) = spawn_registry();
    let before = reg.query();
    let err = error(reg.add_str(&format!(
        "file,id=f0,path={},input-path={}",
        dir.path().join("out").display(),
        input.display()
    )));
    assert!(err.contains(&input.display().to_string()), "{err}");
    assert_eq!(reg.query(), before);
    assert_eq!(fds_open_under(dir.path()), 0, "the output opened first is closed again");
}

#[test]
fn file_refuses_fds_and_writes_nothing() {
    let dir = tempdir();
    let out = dir.path().join("out");
    let (_lp, reg) = spawn_registry();
    add(&reg, &format!("file,id=f0,path={}", out.display()));
    let h = connect(&reg, "f0");
    assert!(!h.can_pass_fds());
    let passed = fs::File::create(dir.path().join("passed")).expect("create");
    let err = h.write_with_fds(b"with fds", &[passed.as_fd()]).expect_err("file cannot pass fds");
    assert_eq!(err.kind(), ErrorKind::Unsupported, "{err}");
    assert_eq!(read(&out), b"");
}

#[test]
fn file_handle_send_break_is_unsupported() {
    let dir = tempdir();
    let (_lp, reg) = spawn_registry();
    add(&reg, &format!("file,id=f0,path={}", dir.path().join("out").display()));
    let h = connect(&reg, "f0");
    let err = h.send_break().expect_err("a file is no serial line").to_string();
    assert!(err.contains("break"), "{err}");
}

// ---- pipe ----

#[test]
fn pipe_uses_path_in_and_path_out() {
    let dir = tempdir();
    let base = dir.path().join("p");
    let (p_in, p_out) = (dir.path().join("p.in"), dir.path().join("p.out"));
    mkfifo(&p_in);
    mkfifo(&p_out);
    let (_lp, reg) = spawn_registry();
    add(&reg, &format!("pipe,id=p0,path={}", base.display()));
    let mut out = FifoReader::open(&p_out);
    let h = connect(&reg, "p0");
    let rec = record(&h, 64);
    rec.expect_event(Event::Opened);

    // QEMU's char_pipe_test: 9 bytes out, 8 bytes in.
    assert_eq!(h.write(b"pipe-out\0").expect("write"), 9);
    assert_eq!(out.read_exact(9), b"pipe-out\0");
    fifo_writer(&p_in).write_all(b"pipe-in\0").expect("write p.in");
    assert_eq!(rec.data(8), b"pipe-in\0");
    assert_eq!(names_in(dir.path()), ["p.in", "p.out"], "pipe creates no files");
}

#[test]
fn pipe_falls_back_to_one_fifo_for_both_ways() {
    let dir = tempdir();
    let path = dir.path().join("p");
    mkfifo(&path);
    let (_lp, reg) = spawn_registry();
    add(&reg, &format!("pipe,id=p0,path={}", path.display()));
    let h = connect(&reg, "p0");
    // No room: the chardev does not read, so what the frontend writes stays for us to read.
    let rec = record(&h, 0);
    rec.expect_event(Event::Opened);
    h.write_all(b"out").expect("write");
    let mut reader = FifoReader::open(&path);
    assert_eq!(reader.read_exact(3), b"out");
    // And what we write into PATH is the chardev's input.
    fifo_writer(&path).write_all(b"in").expect("write");
    rec.room.store(64, std::sync::atomic::Ordering::SeqCst);
    h.accept_input();
    assert_eq!(rec.data(2), b"in");
    assert_eq!(names_in(dir.path()), ["p"], "pipe creates no files");
}

#[test]
fn pipe_with_only_path_in_falls_back_to_path_and_lets_path_in_go() {
    let dir = tempdir();
    let path = dir.path().join("p");
    let p_in = dir.path().join("p.in");
    mkfifo(&path);
    mkfifo(&p_in);
    let (_lp, reg) = spawn_registry();
    add(&reg, &format!("pipe,id=p0,path={}", path.display()));
    let h = connect(&reg, "p0");
    let rec = record(&h, 64);
    rec.expect_event(Event::Opened);
    fifo_writer(&path).write_all(b"via p").expect("write");
    assert_eq!(rec.data(5), b"via p");
    assert_eq!(fds_open_under(&p_in), 0, "p.in was opened, then closed when p.out was missing");
}

#[test]
fn pipe_without_fifos_names_the_path_and_creates_nothing() {
    let dir = tempdir();
    let path = dir.path().join("p");
    let (_lp, reg) = spawn_registry();
    let err = error(reg.add_str(&format!("pipe,id=p0,path={}", path.display())));
    assert!(err.contains(&path.display().to_string()), "{err}");
    assert!(!reg.contains("p0"));
    assert!(names_in(dir.path()).is_empty(), "pipe never creates files");
}

// ---- ringbuf ----

#[test]
fn ringbuf_keeps_the_newest_bytes() {
    // QEMU's char_ringbuf_test.
    let (_lp, reg) = spawn_registry();
    add(&reg, "ringbuf,id=rb,size=2");
    let h = connect(&reg, "rb");
    assert_eq!(h.write(b"buff").expect("write"), 4);
    assert_eq!(reg.ringbuf_read("rb", 4).expect("read"), b"ff");
    assert_eq!(reg.ringbuf_read("rb", 4).expect("read"), b"");
}

#[test]
fn memory_is_an_alias_of_ringbuf() {
    let (_lp, reg) = spawn_registry();
    add(&reg, "memory,id=mem,size=2");
    let h = connect(&reg, "mem");
    h.write_all(b"buff").expect("write");
    assert_eq!(reg.ringbuf_read("mem", 4).expect("read"), b"ff");
}

#[test]
fn ringbuf_opens_at_once() {
    let (_lp, reg) = spawn_registry();
    add(&reg, "ringbuf,id=rb");
    let h = connect(&reg, "rb");
    let rec = record(&h, 64);
    rec.expect_event(Event::Opened);
    assert_eq!(reg.query()[0].filename, "ringbuf");
}

#[test]
fn ringbuf_size_must_be_a_power_of_two() {
    let (_lp, reg) = spawn_registry();
    for size in ["0", "5", "1000"] {
        let err = error(reg.add_str(&format!("ringbuf,id=rb,size={size}")));
        assert!(err.contains("size"), "size={size}: {err}");
        assert!(!reg.contains("rb"));
    }
}

#[test]
fn ringbuf_write_then_read() {
    let (_lp, reg) = spawn_registry();
    add(&reg, "ringbuf,id=rb,size=4096");
    reg.ringbuf_write("rb", b"abcdefgh").expect("ringbuf-write");
    assert_eq!(reg.ringbuf_read("rb", 1000).expect("ringbuf-read"), b"abcdefgh");
    assert_eq!(reg.ringbuf_read("rb", 1000).expect("ringbuf-read"), b"");
}

#[test]
fn ringbuf_write_is_not_seen_by_the_frontend() {
    let (_lp, reg) = spawn_registry();
    add(&reg, "ringbuf,id=rb");
    let h = connect(&reg, "rb");
    let rec = record(&h, 64);
    rec.expect_event(Event::Opened);
    reg.ringbuf_write("rb", b"into the ring").expect("ringbuf-write");
    rec.quiet(QUIET);
}

#[test]
fn ringbuf_read_takes_the_oldest_first_in_pieces() {
    let (_lp, reg) = spawn_registry();
    add(&reg, "ringbuf,id=rb,size=4");
    reg.ringbuf_write("rb", b"abc").expect("write");
    assert_eq!(reg.ringbuf_read("rb", 2).expect("read"), b"ab");
    // Wraps around the end of the ring.
    reg.ringbuf_write("rb", b"def").expect("write");
    assert_eq!(reg.ringbuf_read("rb", 100).expect("read"), b"cdef");
}

#[test]
fn ringbuf_write_larger_than_the_ring_keeps_the_newest() {
    let (_lp, reg) = spawn_registry();
    add(&reg, "ringbuf,id=rb,size=4");
    reg.ringbuf_write("rb", b"xy").expect("write");
    reg.ringbuf_write("rb", b"abcdefgh").expect("write");
    assert_eq!(reg.ringbuf_read("rb", 100).expect("read"), b"efgh");
    let h = connect(&reg, "rb");
    h.write_all(b"0123456789").expect("write");
    assert_eq!(reg.ringbuf_read("rb", 100).expect("read"), b"6789");
}

#[test]
fn ringbuf_read_of_zero_bytes_is_refused() {
    let (_lp, reg) = spawn_registry();
    add(&reg, "ringbuf,id=rb");
    let err = error(reg.ringbuf_read("rb", 0));
    assert!(err.contains("size must be greater than zero"), "{err}");
}

#[test]
fn ringbuf_commands_on_other_devices() {
    let (_lp, reg) = spawn_registry();
    add(&reg, "null,id=n0");
    let err = error(reg.ringbuf_read("n0", 4));
    assert!(err.contains("n0 is not a ringbuf device"), "{err}");
    let err = error(reg.ringbuf_write("n0", b"x"));
    assert!(err.contains("n0 is not a ringbuf device"), "{err}");
    let err = error(reg.ringbuf_read("nope", 4));
    assert!(err.contains("Device 'nope' not found"), "{err}");
    let err = error(reg.ringbuf_write("nope", b"x"));
    assert!(err.contains("Device 'nope' not found"), "{err}");
}

// ---- logfile= / logappend= ----

#[test]
fn logfile_records_what_the_frontend_writes_to_a_ringbuf() {
    let dir = tempdir();
    let log = dir.path().join("log");
    let (_lp, reg) = spawn_registry();
    add(&reg, &format!("ringbuf,id=rb,logfile={}", log.display()));
    let h = connect(&reg, "rb");
    h.write_all(b"to the guest's console\n").expect("write");
    assert_eq!(read(&log), b"to the guest's console\n");
    // Management's ringbuf-write is not frontend output.
    reg.ringbuf_write("rb", b"management").expect("ringbuf-write");
    assert_eq!(read(&log), b"to the guest's console\n");
}

#[test]
fn logfile_records_output_but_not_input() {
    let dir = tempdir();
    let (input, out, log) = (dir.path().join("in"), dir.path().join("out"), dir.path().join("log"));
    write_file(&input, b"typed");
    let (_lp, reg) = spawn_registry();
    add(
        &reg,
        &format!(
            "file,id=f0,path={},input-path={},logfile={}",
            out.display(),
            input.display(),
            log.display()
        ),
    );
    let h = connect(&reg, "f0");
    let rec = record(&h, 64);
    rec.expect_event(Event::Opened);
    assert_eq!(rec.data(5), b"typed");
    rec.expect_event(Event::Closed);
    h.write_all(b"shown").expect("write");
    assert_eq!(read(&out), b"shown");
    assert_eq!(read(&log), b"shown");
}

#[test]
fn logappend_off_truncates_the_log() {
    let dir = tempdir();
    let log = dir.path().join("log");
    write_file(&log, b"an old session\n");
    let (_lp, reg) = spawn_registry();
    add(&reg, &format!("ringbuf,id=rb,logfile={},logappend=off", log.display()));
    assert_eq!(read(&log), b"", "truncated at add");
    let h = connect(&reg, "rb");
    h.write_all(b"new").expect("write");
    assert_eq!(read(&log), b"new");
}

#[test]
fn logappend_on_appends_to_the_log() {
    let dir = tempdir();
    let log = dir.path().join("log");
    write_file(&log, b"an old session\n");
    let (_lp, reg) = spawn_registry();
    add(
        &reg,
        &format!(
            "file,id=f0,path={},logfile={},logappend=on",
            dir.path().join("out").display(),
            log.display()
        ),
    );
    let h = connect(&reg, "f0");
    h.write_all(b"new").expect("write");
    assert_eq!(read(&log), b"an old session\nnew");
}

#[test]
fn a_write_refused_for_its_fds_is_not_logged() {
    let dir = tempdir();
    let (out, log) = (dir.path().join("out"), dir.path().join("log"));
    let (_lp, reg) = spawn_registry();
    add(&reg, &format!("file,id=f0,path={},logfile={}", out.display(), log.display()));
    let h = connect(&reg, "f0");
    let passed = fs::File::create(dir.path().join("passed")).expect("create");
    let err = h.write_with_fds(b"with fds", &[passed.as_fd()]).expect_err("file cannot pass fds");
    assert_eq!(err.kind(), ErrorKind::Unsupported, "{err}");
    assert_eq!(read(&out), b"");
    // Nothing was written, so nothing may be logged: a caller that retries without the fds
    // would otherwise see its bytes twice in the log.
    assert_eq!(read(&log), b"", "refused bytes were logged");
}

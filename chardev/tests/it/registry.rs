//! The registry as QEMU's management commands see it: chardev-add, chardev-remove,
//! chardev-change (hot swap), query-chardev, chardev-send-break, and frontends claiming,
//! releasing and re-subscribing to chardevs.

use std::fs;
use std::io::{ErrorKind, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use chardev::{ChardevInfo, ChardevSpec, Event, FrontendHandle, Registry};
use chardev_testkit::*;

fn spec(s: &str) -> ChardevSpec {
    s.parse().unwrap_or_else(|e| panic!("parse {s}: {e}"))
}

/// The error text of a call that must fail.
fn error<T: std::fmt::Debug>(r: chardev::Result<T>) -> String {
    r.expect_err("this must fail").to_string()
}

fn read(path: &Path) -> Vec<u8> {
    fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

fn tempdir() -> tempfile::TempDir {
    tempfile::tempdir().expect("temp dir")
}

fn info(label: &str, filename: &str, frontend_open: bool) -> ChardevInfo {
    ChardevInfo { label: label.into(), filename: filename.into(), frontend_open }
}

// ---- chardev-add ----

#[test]
fn a_duplicate_id_is_refused_before_anything_is_opened() {
    let dir = tempdir();
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    let (_lp, reg) = spawn_registry();
    add(&reg, &format!("file,id=f0,path={}", a.display()));
    connect(&reg, "f0").write_all(b"keep").expect("write");
    let err = error(reg.add_str(&format!("file,id=f0,path={}", b.display())));
    assert!(err.contains("Chardev with id 'f0' already exists"), "{err}");
    assert!(!b.exists(), "the second file was not created");
    assert_eq!(read(&a), b"keep", "the first chardev's file was not touched");
    assert_eq!(reg.query(), [info("f0", "file", false)]);
}

#[test]
fn a_mux_needs_its_base_id_free_too() {
    let (_lp, reg) = spawn_registry();
    add(&reg, "null,id=m-base");
    let err = error(reg.add_str("null,id=m,mux=on"));
    assert!(err.contains("Chardev with id 'm-base' already exists"), "{err}");
    assert_eq!(reg.ids(), ["m-base"]);
    reg.remove("m-base").expect("remove");
    add(&reg, "null,id=m,mux=on");
    let err = error(reg.add_str("null,id=m-base"));
    assert!(err.contains("Chardev with id 'm-base' already exists"), "{err}");
}

#[test]
fn an_unknown_backend_type_is_an_error() {
    let (_lp, reg) = spawn_registry();
    let err = error(reg.add_str("bogus,id=x"));
    assert!(err.contains("bogus"), "{err}");
    // A type the parser knows but nobody registered a constructor for (chardev-socket's).
    let err = error(reg.add_str("socket,id=s,path=/unused,server=on,wait=off"));
    assert!(err.contains("'socket' is not a valid char driver name"), "{err}");
    assert!(reg.ids().is_empty());
    for core in ["file", "null", "pipe", "ringbuf"] {
        assert!(reg.backends().iter().any(|b| b == core), "{core} in {:?}", reg.backends());
    }
}

#[test]
fn a_bad_option_creates_nothing() {
    let dir = tempdir();
    let out = dir.path().join("out");
    let (_lp, reg) = spawn_registry();
    let err = error(reg.add_str(&format!("file,id=f0,path={},bogus=1", out.display())));
    assert!(err.contains("bogus"), "{err}");
    let err = error(reg.add_str(&format!("file,id=f0,path={},append=maybe", out.display())));
    assert!(err.contains("append"), "{err}");
    assert!(!out.exists(), "nothing was opened");
    let log = dir.path().join("no-such-dir").join("log");
    let err = error(reg.add_str(&format!("ringbuf,id=r0,logfile={}", log.display())));
    assert!(err.contains(&log.display().to_string()), "{err}");
    assert!(reg.ids().is_empty(), "{:?}", reg.ids());
    assert_eq!(fds_open_under(dir.path()), 0);
}

// ---- claiming: connect, detach ----

#[test]
fn a_chardev_takes_one_frontend() {
    let (_lp, reg) = spawn_registry();
    add(&reg, "ringbuf,id=rb");
    let h = connect(&reg, "rb");
    let err = error(reg.connect("rb"));
    assert!(err.contains("chardev 'rb' is already in use"), "{err}");
    let err = error(reg.connect("nope"));
    assert!(err.contains("Chardev 'nope' not found"), "{err}");
    h.detach();
    let again = connect(&reg, "rb");
    let rec = record(&again, 64);
    rec.expect_event(Event::Opened);
}

// ---- chardev-remove ----

#[test]
fn removing_an_unknown_id_is_an_error() {
    let (_lp, reg) = spawn_registry();
    let err = error(reg.remove("nope"));
    assert!(err.contains("Chardev 'nope' not found"), "{err}");
    let err = error(reg.remove_forced("nope"));
    assert!(err.contains("Chardev 'nope' not found"), "{err}");
}

#[test]
fn a_claimed_chardev_is_busy_and_keeps_working() {
    let (_lp, reg) = spawn_registry();
    add(&reg, "ringbuf,id=rb");
    // Claimed without callbacks is claimed all the same (QEMU's qemu_chr_fe_init).
    let h = connect(&reg, "rb");
    let err = error(reg.remove("rb"));
    assert!(err.contains("Chardev 'rb' is busy"), "{err}");
    let rec = record(&h, 64);
    rec.expect_event(Event::Opened);
    let err = error(reg.remove("rb"));
    assert!(err.contains("Chardev 'rb' is busy"), "{err}");
    h.write_all(b"still here").expect("write");
    assert_eq!(reg.ringbuf_read("rb", 100).expect("read"), b"still here");
    rec.quiet(QUIET);
}

#[test]
fn detach_then_remove() {
    let (_lp, reg) = spawn_registry();
    add(&reg, "ringbuf,id=rb");
    let h = connect(&reg, "rb");
    let _rec = record(&h, 64);
    h.detach();
    reg.remove("rb").expect("remove after detach");
    assert!(!reg.contains("rb"));
}

#[test]
fn forced_removal_closes_the_frontend_and_its_writes_fail() {
    let (lp, reg) = spawn_registry();
    add(&reg, "ringbuf,id=rb");
    let h = connect(&reg, "rb");
    let rec = record(&h, 64);
    rec.expect_event(Event::Opened);
    assert!(h.is_attached());
    reg.remove_forced("rb").expect("forced remove");
    assert!(!reg.contains("rb"));
    assert!(!h.is_attached(), "a handle of a force-removed chardev says it is attached");
    let err = h.write(b"x").expect_err("the chardev is gone");
    assert_eq!(err.kind(), ErrorKind::NotConnected, "{err}");
    rec.expect_event(Event::Closed);
    assert!(!h.is_open());

    // A new chardev under the same id is not reachable through the stale handle.
    add(&reg, "ringbuf,id=rb");
    settle(lp.handle());
    let err = h.write_all(b"stale").expect_err("the stale handle stays dead");
    assert_eq!(err.kind(), ErrorKind::NotConnected, "{err}");
    assert_eq!(reg.ringbuf_read("rb", 100).expect("read"), b"");
    rec.quiet(QUIET);
}

#[test]
fn remove_closes_every_fd_before_it_returns() {
    let dir = tempdir();
    let (out, log) = (dir.path().join("out"), dir.path().join("log"));
    let (lp, reg) = spawn_registry();
    add(&reg, &format!("file,id=f0,path={},logfile={}", out.display(), log.display()));
    settle(lp.handle());
    // With the loop held up, anything closed now was closed by `remove` itself.
    let hold = hold_loop(lp.handle());
    reg.remove("f0").expect("remove");
    assert_eq!(fds_open_under(&out), 0, "output still open after remove returned");
    assert_eq!(fds_open_under(&log), 0, "logfile still open after remove returned");
    drop(hold);
}

#[test]
fn forced_removal_closes_the_logfile_though_a_handle_lives_on() {
    let dir = tempdir();
    let log = dir.path().join("log");
    let (lp, reg) = spawn_registry();
    add(&reg, &format!("ringbuf,id=rb,logfile={}", log.display()));
    let h = connect(&reg, "rb");
    reg.remove_forced("rb").expect("forced remove");
    settle(lp.handle());
    assert_eq!(fds_open_under(&log), 0, "the logfile of a removed chardev is still open");
    drop(h);
}

#[test]
fn adding_and_removing_many_chardevs_leaks_no_fd() {
    let dir = tempdir();
    let input = dir.path().join("in");
    fs::write(&input, b"x").expect("write input");
    let (lp, reg) = spawn_registry();
    for i in 0..100 {
        let (out, log) = (dir.path().join(format!("out{i}")), dir.path().join(format!("log{i}")));
        add(
            &reg,
            &format!(
                "file,id=f{i},path={},input-path={},logfile={}",
                out.display(),
                input.display(),
                log.display()
            ),
        );
        let h = connect(&reg, &format!("f{i}"));
        let _rec = record(&h, 64);
        h.detach();
        reg.remove(&format!("f{i}")).expect("remove");
    }
    settle(lp.handle());
    assert!(reg.ids().is_empty());
    // Only fds on our own files are counted: other tests open fds on other threads.
    assert_eq!(fds_open_under(dir.path()), 0);
}

// ---- query-chardev ----

#[test]
fn query_shows_labels_filenames_and_frontend_open() {
    let dir = tempdir();
    let pipe = dir.path().join("p");
    mkfifo(&pipe);
    let (_lp, reg) = spawn_registry();
    add(&reg, "ringbuf,id=r0");
    add(&reg, "null,id=n0");
    add(&reg, &format!("file,id=f0,path={}", dir.path().join("out").display()));
    add(&reg, &format!("pipe,id=p0,path={}", pipe.display()));
    assert_eq!(
        reg.query(),
        [
            info("f0", "file", false),
            info("n0", "null", false),
            info("p0", "pipe", false),
            info("r0", "ringbuf", false)
        ]
    );
    let r0 = |reg: &Registry| reg.query().into_iter().find(|i| i.label == "r0").expect("r0");
    let h = connect(&reg, "r0");
    assert!(!r0(&reg).frontend_open, "claimed, but no callbacks yet");
    let _rec = record(&h, 64);
    assert!(r0(&reg).frontend_open);
    h.clear_frontend();
    assert!(!r0(&reg).frontend_open);
    let _rec = record(&h, 64);
    assert!(r0(&reg).frontend_open);
    h.detach();
    assert!(!r0(&reg).frontend_open);
}

// ---- subscribing and unsubscribing ----

#[test]
fn a_late_subscriber_gets_opened_at_once() {
    let (lp, reg) = spawn_registry();
    add(&reg, "ringbuf,id=rb");
    settle(lp.handle());
    let h = connect(&reg, "rb");
    assert!(h.is_open(), "a ringbuf is open as soon as it exists");
    let rec = record(&h, 64);
    rec.expect_event(Event::Opened);
    rec.quiet(QUIET);
}

/// A `pipe` chardev `p0` on fifos `p.in`/`p.out` in `dir`; returns the path of `p.in`.
fn pipe_chardev(reg: &Registry, dir: &Path) -> std::path::PathBuf {
    let (p_in, p_out) = (dir.join("p.in"), dir.join("p.out"));
    mkfifo(&p_in);
    mkfifo(&p_out);
    add(reg, &format!("pipe,id=p0,path={}", dir.join("p").display()));
    p_in
}

#[test]
fn clear_frontend_stops_reading_and_the_input_stays_in_the_fifo() {
    let dir = tempdir();
    let (lp, reg) = spawn_registry();
    let p_in = pipe_chardev(&reg, dir.path());
    let h = connect(&reg, "p0");
    let rec = record(&h, 64);
    rec.expect_event(Event::Opened);
    let mut keys = fifo_writer(&p_in);
    keys.write_all(b"one").expect("write");
    assert_eq!(rec.data(3), b"one");

    h.clear_frontend();
    // clear_frontend is a request to the loop: wait until it took effect.
    settle(lp.handle());
    keys.write_all(b"two").expect("write");
    settle(lp.handle());
    rec.quiet(QUIET);
    // The chardev did not read: the bytes are still in the fifo for another reader.
    let mut other = fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NONBLOCK)
        .open(&p_in)
        .expect("open p.in");
    let mut buf = [0u8; 16];
    let n = other.read(&mut buf).expect("the bytes wait in the fifo");
    assert_eq!(&buf[..n], b"two");

    let again = record(&h, 64);
    again.expect_event(Event::Opened);
    keys.write_all(b"three").expect("write");
    assert_eq!(again.data(5), b"three");
}

#[test]
fn a_new_frontend_gets_the_input_that_waited() {
    let dir = tempdir();
    let (lp, reg) = spawn_registry();
    let p_in = pipe_chardev(&reg, dir.path());
    let h = connect(&reg, "p0");
    let rec = record(&h, 64);
    rec.expect_event(Event::Opened);
    h.clear_frontend();
    settle(lp.handle());
    fifo_writer(&p_in).write_all(b"waited").expect("write");
    let again = record(&h, 64);
    again.expect_event(Event::Opened);
    assert_eq!(again.data(6), b"waited");
}

/// Takes one byte at a time and unsubscribes itself when the first one arrives.
struct Unsubscriber {
    handle: FrontendHandle,
    tx: std::sync::mpsc::Sender<Vec<u8>>,
}

impl chardev::Frontend for Unsubscriber {
    fn can_receive(&mut self) -> usize {
        1
    }
    fn receive(&mut self, data: &[u8], _fds: Vec<std::os::fd::OwnedFd>) {
        let _ = self.tx.send(data.to_vec());
        self.handle.clear_frontend();
    }
    fn event(&mut self, _event: Event) {}
}

#[test]
fn a_frontend_that_unsubscribes_in_its_callback_gets_nothing_more() {
    let dir = tempdir();
    let input = dir.path().join("in");
    fs::write(&input, b"abc").expect("write input");
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
    let (tx, rx) = std::sync::mpsc::channel();
    h.set_frontend(Unsubscriber { handle: h.clone(), tx });
    // Everything the frontend got before it was dropped (its sender closes the channel).
    let mut got = Vec::new();
    loop {
        match rx.recv_timeout(DEADLINE) {
            Ok(data) => got.extend_from_slice(&data),
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => panic!("frontend never dropped"),
        }
    }
    assert_eq!(got, b"a", "callbacks ran after clear_frontend");
}

#[test]
fn a_detached_handles_clones_cannot_displace_the_next_frontend() {
    let (lp, reg) = spawn_registry();
    add(&reg, "ringbuf,id=rb");
    let h = connect(&reg, "rb");
    let stale = h.clone();
    h.detach();
    let next = connect(&reg, "rb");
    let rec = record(&next, 64);
    rec.expect_event(Event::Opened);

    let _intruder = record(&stale, 64);
    settle(lp.handle());
    reg.send_break("rb").expect("send break");
    rec.expect_event(Event::Break);
    assert!(reg.query()[0].frontend_open);
}

#[test]
fn a_detached_handles_clones_cannot_write() {
    let (_lp, reg) = spawn_registry();
    add(&reg, "ringbuf,id=rb");
    let h = connect(&reg, "rb");
    let stale = h.clone();
    h.detach();
    let _next = connect(&reg, "rb");
    assert!(stale.write(b"stale").is_err(), "a given-up link still writes");
    assert_eq!(reg.ringbuf_read("rb", 100).expect("read"), b"");
}

// ---- chardev-send-break ----

#[test]
fn send_break_reaches_the_frontend() {
    let (_lp, reg) = spawn_registry();
    add(&reg, "ringbuf,id=rb");
    let err = error(reg.send_break("nope"));
    assert!(err.contains("Chardev 'nope' not found"), "{err}");
    let h = connect(&reg, "rb");
    let rec = record(&h, 64);
    rec.expect_event(Event::Opened);
    reg.send_break("rb").expect("send break");
    rec.expect_event(Event::Break);
}

// ---- chardev-change ----

#[test]
fn hot_swap_under_a_live_frontend() {
    let dir = tempdir();
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    let (_lp, reg) = spawn_registry();
    add(&reg, &format!("file,id=f0,path={}", a.display()));
    let h = connect(&reg, "f0");
    let rec = record(&h, 64);
    rec.expect_event(Event::Opened);
    h.write_all(b"before").expect("write");

    reg.change("f0", &spec(&format!("file,id=f0,path={}", b.display()))).expect("change");
    rec.expect_event(Event::Closed);
    rec.expect_event(Event::Opened);
    h.write_all(b"after").expect("write through the same handle");
    assert_eq!(read(&a), b"before");
    assert_eq!(read(&b), b"after");
    assert_eq!(fds_open_under(&a), 0, "the old backend is closed");
    assert_eq!(reg.query(), [info("f0", "file", true)]);
    rec.quiet(QUIET);
}

#[test]
fn hot_swap_brings_the_new_backends_input() {
    let dir = tempdir();
    let input = dir.path().join("in");
    fs::write(&input, b"new input").expect("write input");
    let (_lp, reg) = spawn_registry();
    add(&reg, "ringbuf,id=c0");
    let h = connect(&reg, "c0");
    let rec = record(&h, 64);
    rec.expect_event(Event::Opened);
    let to = format!(
        "file,id=c0,path={},input-path={}",
        dir.path().join("out").display(),
        input.display()
    );
    reg.change("c0", &spec(&to)).expect("change");
    rec.expect_event(Event::Closed);
    rec.expect_event(Event::Opened);
    assert_eq!(rec.data(9), b"new input");
    rec.expect_event(Event::Closed);
    assert_eq!(reg.query(), [info("c0", "file", true)]);
}

#[test]
fn a_failed_hot_swap_leaves_the_old_backend_in_place() {
    let dir = tempdir();
    let a = dir.path().join("a");
    let bad = dir.path().join("no-such-dir").join("b");
    let (_lp, reg) = spawn_registry();
    add(&reg, &format!("file,id=f0,path={}", a.display()));
    let h = connect(&reg, "f0");
    let rec = record(&h, 64);
    rec.expect_event(Event::Opened);
    let err = error(reg.change("f0", &spec(&format!("file,id=f0,path={}", bad.display()))));
    assert!(err.contains(&bad.display().to_string()), "{err}");
    rec.quiet(QUIET);
    h.write_all(b"still a").expect("write");
    assert_eq!(read(&a), b"still a");
}

#[test]
fn change_without_a_frontend_is_remove_then_add() {
    let dir = tempdir();
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    let (_lp, reg) = spawn_registry();
    add(&reg, &format!("file,id=f0,path={}", a.display()));
    reg.change("f0", &spec(&format!("file,id=f0,path={}", b.display()))).expect("change");
    assert_eq!(fds_open_under(&a), 0, "the old backend is closed");
    assert_eq!(reg.query(), [info("f0", "file", false)]);
    let h = connect(&reg, "f0");
    let rec = record(&h, 64);
    rec.expect_event(Event::Opened);
    h.write_all(b"to b").expect("write");
    assert_eq!(read(&b), b"to b");
    assert_eq!(read(&a), b"");
}

#[test]
fn change_of_an_unknown_id_is_an_error() {
    let (_lp, reg) = spawn_registry();
    let err = error(reg.change("nope", &spec("null,id=nope")));
    assert!(err.contains("Chardev 'nope' not found"), "{err}");
    assert!(reg.ids().is_empty());
}

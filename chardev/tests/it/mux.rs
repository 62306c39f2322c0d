//! `mux=on`: one backend shared by up to four frontends, driven with `Ctrl-A` keystrokes
//! as QEMU's char_mux_test does, but from the outside: the keys go into a real fifo and the
//! screen is read from another.

use std::fs::File;
use std::io::Write;
use std::path::PathBuf;

use chardev::{ChardevInfo, Event, EventLoop, FrontendHandle, LoopHandle, Registry};
use chardev_testkit::*;

/// A muxed console `con` on a `pipe` backend: what the user types goes into `console.in`,
/// what the mux and its frontends write comes out of `console.out`.
struct Console {
    reg: Registry,
    keyboard: File,
    screen: FifoReader,
    dir: tempfile::TempDir,
}

impl Console {
    fn new(lp: &LoopHandle) -> Console {
        let dir = tempfile::tempdir().expect("temp dir");
        let base = dir.path().join("console");
        let (keys, screen) = (with_suffix(&base, ".in"), with_suffix(&base, ".out"));
        mkfifo(&keys);
        mkfifo(&screen);
        let reg = Registry::new(lp);
        if let Err(e) = reg.add_str(&format!("pipe,id=con,path={},mux=on", base.display())) {
            panic!("add the mux: {e}");
        }
        Console { reg, keyboard: fifo_writer(&keys), screen: FifoReader::open(&screen), dir }
    }

    /// One write of `keys` into the backend, as a terminal would send them.
    fn type_keys(&mut self, keys: &[u8]) {
        self.keyboard.write_all(keys).expect("type into the console fifo");
    }

    /// A new frontend on the mux, with room for `room` bytes.
    fn attach(&self, room: usize) -> (FrontendHandle, Record) {
        let h = self.reg.connect("con").unwrap_or_else(|e| panic!("connect con: {e}"));
        let rec = record(&h, room);
        (h, rec)
    }

    /// Frontends attached in one batch of loop requests, as an embedder attaches them
    /// before it runs the loop: only the last (focused) one sees `Opened` at once.
    fn attach_together(&self, rooms: &[usize]) -> Vec<(FrontendHandle, Record)> {
        let hold = hold_loop(self.reg.loop_handle());
        let all = rooms.iter().map(|&room| self.attach(room)).collect();
        drop(hold);
        settle(self.reg.loop_handle());
        all
    }

    /// Two frontends, `two` attached last and so focused; their set-up events are consumed.
    fn attach_two(&self) -> ((FrontendHandle, Record), (FrontendHandle, Record)) {
        let mut both = self.attach_together(&[64, 64]).into_iter();
        let (one, two) = (both.next().unwrap(), both.next().unwrap());
        one.1.events_so_far();
        two.1.events_so_far();
        (one, two)
    }
}

fn with_suffix(base: &std::path::Path, suffix: &str) -> PathBuf {
    let mut p = base.as_os_str().to_owned();
    p.push(suffix);
    PathBuf::from(p)
}

fn spawn() -> chardev::LoopThread {
    EventLoop::spawn().expect("start the loop")
}

fn error<T: std::fmt::Debug>(r: chardev::Result<T>) -> String {
    r.expect_err("this must fail").to_string()
}

// ---- creation, query, removal ----

#[test]
fn mux_on_creates_id_and_id_base() {
    let lp = spawn();
    let con = Console::new(lp.handle());
    let info = |label: &str, filename: &str, frontend_open| ChardevInfo {
        label: label.into(),
        filename: filename.into(),
        frontend_open,
    };
    // As QEMU 7.2 shows them: the base counts as open only once the mux has a frontend.
    assert_eq!(con.reg.query(), [info("con", "mux", false), info("con-base", "pipe", false)]);
    let (_h, _rec) = con.attach(64);
    assert_eq!(con.reg.query(), [info("con", "mux", true), info("con-base", "pipe", true)]);
    // The base belongs to the mux.
    let err = error(con.reg.connect("con-base"));
    assert!(err.contains("chardev 'con-base' is already in use"), "{err}");
}

#[test]
fn unused_mux_goes_with_its_base_and_can_be_made_again() {
    let lp = spawn();
    let mut con = Console::new(lp.handle());
    con.reg.remove("con").expect("remove an unused mux");
    assert!(con.reg.ids().is_empty(), "{:?}", con.reg.ids());
    let path = con.dir.path().join("console");
    con.reg.add_str(&format!("pipe,id=con,path={},mux=on", path.display())).expect("add again");
    let (_h, rec) = con.attach(64);
    con.type_keys(b"again");
    let (data, _) = rec.data_and_events(5);
    assert_eq!(data, b"again");
}

#[test]
fn busy_mux_cannot_be_removed_until_its_frontend_detaches() {
    let lp = spawn();
    let con = Console::new(lp.handle());
    let (h, _rec) = con.attach(64);
    let err = error(con.reg.remove("con"));
    assert!(err.contains("Chardev 'con' is busy"), "{err}");
    let err = error(con.reg.remove("con-base"));
    assert!(err.contains("Chardev 'con-base' is busy"), "{err}");
    assert_eq!(con.reg.ids(), ["con", "con-base"]);
    h.detach();
    con.reg.remove("con").expect("remove after detach");
    assert!(!con.reg.contains("con"));
    assert!(!con.reg.contains("con-base"), "the base goes with its mux");
}

#[test]
fn a_fifth_frontend_is_refused() {
    let lp = spawn();
    let con = Console::new(lp.handle());
    let mut handles: Vec<FrontendHandle> = (0..4)
        .map(|i| con.reg.connect("con").unwrap_or_else(|e| panic!("frontend {i}: {e}")))
        .collect();
    let err = error(con.reg.connect("con"));
    assert!(err.contains("too many uses of multiplexed chardev 'con' (maximum is 4)"), "{err}");
    handles.pop().expect("four handles").detach();
    handles.push(con.reg.connect("con").expect("a freed slot can be taken again"));
}

#[test]
fn hot_swap_of_a_mux_is_refused() {
    let lp = spawn();
    let con = Console::new(lp.handle());
    let spec = "null,id=x".parse().expect("spec");
    let err = error(con.reg.change("con", &spec));
    assert!(err.contains("For mux or hub device hotswap is not supported yet"), "{err}");
    let err = error(con.reg.change("con-base", &spec));
    assert!(err.contains("hotswap is not supported"), "{err}");
    assert_eq!(con.reg.query()[1].filename, "pipe");
}

#[test]
fn ringbuf_commands_reach_the_base_of_a_muxed_ringbuf() {
    // QEMU's char_mux_test reads the help text back from the base ringbuf.
    let lp = spawn();
    let reg = Registry::new(lp.handle());
    reg.add_str("ringbuf,id=rb,size=128,mux=on").expect("add");
    let h = reg.connect("rb").expect("connect");
    h.write_all(b"via the mux").expect("write");
    assert_eq!(reg.ringbuf_read("rb-base", 128).expect("ringbuf-read"), b"via the mux");
}

#[test]
fn the_mux_itself_is_not_a_ringbuf() {
    let lp = spawn();
    let reg = Registry::new(lp.handle());
    reg.add_str("ringbuf,id=rb,size=128,mux=on").expect("add");
    let err = error(reg.ringbuf_read("rb", 128));
    assert!(err.contains("rb is not a ringbuf device"), "{err}");
}

// ---- focus ----

#[test]
fn the_first_frontend_gets_the_focus() {
    let lp = spawn();
    let mut con = Console::new(lp.handle());
    let (_h, rec) = con.attach(64);
    settle(lp.handle());
    // QEMU's mux_set_focus sends MUX_IN on the first take_focus too (focus was -1).
    assert_eq!(rec.events_so_far(), [Event::MuxIn, Event::Opened]);
    con.type_keys(b"hi");
    assert_eq!(rec.data(2), b"hi");
}

#[test]
fn the_newest_frontend_takes_the_focus_and_the_input() {
    let lp = spawn();
    let mut con = Console::new(lp.handle());
    let (_h1, r1) = con.attach(64);
    settle(lp.handle());
    r1.events_so_far();
    let (_h2, r2) = con.attach(64);
    settle(lp.handle());
    assert_eq!(r1.events_so_far(), [Event::MuxOut]);
    assert_eq!(r2.events_so_far(), [Event::MuxIn, Event::Opened]);
    con.type_keys(b"hello\0");
    assert_eq!(r2.data(6), b"hello\0");
    r1.nothing_yet();
}

#[test]
fn every_frontend_writes_to_the_backend_whatever_the_focus() {
    let lp = spawn();
    let mut con = Console::new(lp.handle());
    let ((h1, _r1), (h2, _r2)) = con.attach_two();
    h1.write_all(b"from one, unfocused\n").expect("write");
    assert_eq!(con.screen.read_until(b"\n"), b"from one, unfocused\n");
    h2.write_all(b"from two\n").expect("write");
    assert_eq!(con.screen.read_until(b"\n"), b"from two\n");
}

#[test]
fn ctrl_a_c_moves_the_focus_to_the_next_frontend() {
    let lp = spawn();
    let mut con = Console::new(lp.handle());
    let ((_h1, r1), (_h2, r2)) = con.attach_two();

    con.type_keys(b"\x01c");
    r2.expect_event(Event::MuxOut);
    r1.expect_event(Event::MuxIn);
    r1.expect_event(Event::Opened); // its first time in focus
    con.type_keys(b"to one");
    assert_eq!(r1.data(6), b"to one");
    r2.nothing_yet();

    con.type_keys(b"\x01c");
    r1.expect_event(Event::MuxOut);
    r2.expect_event(Event::MuxIn);
    con.type_keys(b"to two");
    assert_eq!(r2.data(6), b"to two");
    r1.nothing_yet();
}

#[test]
fn ctrl_a_c_skips_free_slots() {
    let lp = spawn();
    let mut con = Console::new(lp.handle());
    let mut all = con.attach_together(&[64, 64, 64]).into_iter();
    let ((_h1, r1), (h2, _r2), (_h3, r3)) =
        (all.next().unwrap(), all.next().unwrap(), all.next().unwrap());
    h2.detach();
    settle(lp.handle());
    r1.events_so_far();
    r3.events_so_far();
    con.type_keys(b"\x01c");
    r3.expect_event(Event::MuxOut);
    r1.expect_event(Event::MuxIn);
    r1.expect_event(Event::Opened);
    con.type_keys(b"\x01c");
    r1.expect_event(Event::MuxOut);
    r3.expect_event(Event::MuxIn);
    con.type_keys(b"3");
    assert_eq!(r3.data(1), b"3");
}

#[test]
fn an_unfocused_frontend_sees_opened_only_when_it_gets_the_focus() {
    let lp = spawn();
    let reg = Registry::new(lp.handle());
    let mut gate = install_gate(&reg);
    reg.add_str("socket,id=con,path=unused,server=on,wait=off,mux=on").expect("add");
    let h1 = reg.connect("con").expect("connect");
    let r1 = record(&h1, 64);
    let h2 = reg.connect("con").expect("connect");
    let r2 = record(&h2, 64);
    settle(lp.handle());
    assert!(!r1.events_so_far().contains(&Event::Opened), "not open yet");
    assert!(!r2.events_so_far().contains(&Event::Opened), "not open yet");

    gate.open();
    r2.expect_event(Event::Opened);
    r1.nothing_yet();

    h1.take_focus();
    r2.expect_event(Event::MuxOut);
    r1.expect_event(Event::MuxIn);
    r1.expect_event(Event::Opened);

    // A close reaches every frontend that saw the open, once.
    gate.close();
    r1.expect_event(Event::Closed);
    r2.expect_event(Event::Closed);

    // The next open again goes to the focused frontend only.
    gate.open();
    r1.expect_event(Event::Opened);
    r2.nothing_yet();
}

#[test]
fn the_end_of_input_closes_every_frontend_that_saw_it_open() {
    let dir = tempfile::tempdir().expect("temp dir");
    let keys = dir.path().join("keys");
    mkfifo(&keys);
    let lp = spawn();
    let reg = Registry::new(lp.handle());
    reg.add_str(&format!(
        "file,id=con,path={},input-path={},mux=on",
        dir.path().join("screen").display(),
        keys.display()
    ))
    .expect("add");
    let hold = hold_loop(lp.handle());
    let h1 = reg.connect("con").expect("connect");
    let r1 = record(&h1, 64);
    let h2 = reg.connect("con").expect("connect");
    let r2 = record(&h2, 64);
    drop(hold);
    settle(lp.handle());
    r1.events_so_far();
    r2.events_so_far();
    let mut keyboard = fifo_writer(&keys);
    keyboard.write_all(b"bye").expect("type");
    drop(keyboard);
    assert_eq!(r2.data(3), b"bye");
    r2.expect_event(Event::Closed);
    // Frontend 1 never had the focus while it was open, so it never saw this connection.
    r1.nothing_yet();
}

// ---- escapes ----

#[test]
fn ctrl_a_b_sends_a_break_to_the_focused_frontend_only() {
    let lp = spawn();
    let mut con = Console::new(lp.handle());
    let ((_h1, r1), (_h2, r2)) = con.attach_two();
    con.type_keys(b"\x01b");
    r2.expect_event(Event::Break);
    r1.nothing_yet();
    con.type_keys(b"\x01c\x01b");
    r2.expect_event(Event::MuxOut);
    r1.expect_event(Event::MuxIn);
    r1.expect_event(Event::Opened);
    r1.expect_event(Event::Break);
    r2.nothing_yet();
}

#[test]
fn ctrl_a_ctrl_a_sends_one_ctrl_a() {
    let lp = spawn();
    let mut con = Console::new(lp.handle());
    let (_h, rec) = con.attach(64);
    settle(lp.handle());
    rec.events_so_far();
    con.type_keys(b"a\x01\x01b");
    assert_eq!(rec.data(3), b"a\x01b");
    rec.quiet(QUIET);
}

#[test]
fn an_unknown_escape_is_swallowed() {
    let lp = spawn();
    let mut con = Console::new(lp.handle());
    let (_h, rec) = con.attach(64);
    settle(lp.handle());
    rec.events_so_far();
    con.type_keys(b"a\x01zb");
    assert_eq!(rec.data(2), b"ab");
    rec.quiet(QUIET);
}

#[test]
fn an_escape_can_span_two_reads() {
    let lp = spawn();
    let mut con = Console::new(lp.handle());
    let (_h, rec) = con.attach(64);
    settle(lp.handle());
    rec.events_so_far();
    con.type_keys(b"q\x01");
    assert_eq!(rec.data(1), b"q");
    con.type_keys(b"b");
    rec.expect_event(Event::Break);
}

#[test]
fn ctrl_a_h_prints_the_help_on_the_backend() {
    let lp = spawn();
    let mut con = Console::new(lp.handle());
    let (_h, rec) = con.attach(64);
    settle(lp.handle());
    rec.events_so_far();
    con.type_keys(b"\x01h");
    let help = con.screen.read_until(b"C-a c    switch between console and monitor\n\r");
    let help = String::from_utf8_lossy(&help);
    assert!(help.contains("C-a h    print this help"), "{help}");
    assert!(help.contains("C-a x    exit emulator"), "{help}");
    con.type_keys(b"\x01?");
    con.screen.read_until(b"C-a x    exit emulator");
    rec.nothing_yet();
}

/// Whether `line` starts with `[hh:mm:ss.mmm] `, the mux's timestamp.
fn stamp_of(line: &[u8]) -> Option<&[u8]> {
    let stamp = line.get(..15)?;
    let shape = b"[00:00:00.000] ";
    let ok =
        stamp.iter().zip(shape).all(|(&c, &s)| if s == b'0' { c.is_ascii_digit() } else { c == s });
    ok.then_some(stamp)
}

#[test]
fn ctrl_a_t_toggles_timestamps_on_output_lines() {
    let lp = spawn();
    let mut con = Console::new(lp.handle());
    let (h, rec) = con.attach(64);
    settle(lp.handle());
    rec.events_so_far();
    h.write_all(b"before\n").expect("write");
    assert_eq!(con.screen.read_until(b"\n"), b"before\n");

    // The `!` after the command tells us when the mux has seen it.
    con.type_keys(b"\x01t!");
    assert_eq!(rec.data(1), b"!");
    h.write_all(b"one\ntwo\n").expect("write");
    for text in [&b"one\n"[..], b"two\n"] {
        let line = con.screen.read_until(b"\n");
        let stamp = stamp_of(&line)
            .unwrap_or_else(|| panic!("no stamp: {:?}", String::from_utf8_lossy(&line)));
        assert!(stamp.starts_with(b"[00:00:"), "{:?}", String::from_utf8_lossy(stamp));
        assert_eq!(&line[15..], text);
    }

    con.type_keys(b"\x01t!");
    assert_eq!(rec.data(1), b"!");
    h.write_all(b"plain\n").expect("write");
    assert_eq!(con.screen.read_until(b"\n"), b"plain\n");
}

#[test]
fn ctrl_a_x_prints_terminated_and_calls_the_exit_handler() {
    let mut lp = EventLoop::new().expect("loop");
    let (tx, exits) = std::sync::mpsc::channel();
    lp.set_exit_handler(move || {
        let _ = tx.send(());
    });
    let lp = RunningLoop::start(lp);
    let mut con = Console::new(lp.handle());
    let (_h, rec) = con.attach(64);
    settle(lp.handle());
    rec.events_so_far();
    con.type_keys(b"\x01x");
    exits.recv_timeout(DEADLINE).expect("the exit handler was called");
    con.screen.read_until(b"QEMU: Terminated\n\r");
    settle(lp.handle());
    assert!(exits.try_recv().is_err(), "called once");
    rec.nothing_yet();
}

/// The library never exits the process: without a handler, `Ctrl-A x` stops the loop, and
/// `run` returns `Ok` (the test process goes on to the assertions after it).
#[test]
fn ctrl_a_x_without_an_exit_handler_stops_the_loop() {
    let lp = EventLoop::new().expect("loop");
    let handle = lp.handle();
    let mut con = Console::new(&handle);
    let (_h, rec) = con.attach(64);
    let (tx, ran) = std::sync::mpsc::channel();
    let runner = std::thread::spawn(move || {
        let mut lp = lp;
        let _ = tx.send(lp.run().map_err(|e| e.to_string()));
        lp
    });
    settle(&handle);
    rec.events_so_far();
    con.type_keys(b"before\x01xafter");
    let result = ran.recv_timeout(DEADLINE).expect("Ctrl-A x stopped the loop");
    assert_eq!(result, Ok(()));
    con.screen.read_until(b"QEMU: Terminated\n\r");
    assert_eq!(rec.data(6), b"before");
    let lp = runner.join().expect("the loop thread");
    assert_eq!(lp.len(), 1, "the chardev is still there: the embedder decides what comes next");
}

// ---- input across a focus switch ----

#[test]
fn bytes_after_ctrl_a_c_in_the_same_write_go_to_the_new_focus() {
    let lp = spawn();
    let mut con = Console::new(lp.handle());
    let ((_h1, r1), (_h2, r2)) = con.attach_two();
    con.type_keys(b"abc\x01cdef");
    assert_eq!(r2.data(3), b"abc");
    r2.expect_event(Event::MuxOut);
    r1.expect_event(Event::MuxIn);
    r1.expect_event(Event::Opened);
    assert_eq!(r1.data(3), b"def");
    r2.nothing_yet();
}

#[test]
fn a_slow_new_focus_gets_every_byte_in_pieces_it_can_take() {
    let lp = spawn();
    let mut con = Console::new(lp.handle());
    let mut all = con.attach_together(&[2, 64]).into_iter();
    let ((_h1, r1), (_h2, r2)) = (all.next().unwrap(), all.next().unwrap());
    r1.events_so_far();
    r2.events_so_far();
    con.type_keys(b"ab\x01cdefgh");
    assert_eq!(r2.data(2), b"ab");
    r2.expect_event(Event::MuxOut);
    r1.expect_event(Event::MuxIn);
    r1.expect_event(Event::Opened);
    // The recorder asserts that no piece is larger than its room (2).
    assert_eq!(r1.data(5), b"defgh");
}

#[test]
fn bytes_held_for_a_slow_frontend_stay_its_own_when_the_focus_moves_on() {
    let lp = spawn();
    let mut con = Console::new(lp.handle());
    let mut all = con.attach_together(&[2, 64]).into_iter();
    let ((_h1, r1), (_h2, r2)) = (all.next().unwrap(), all.next().unwrap());
    r1.events_so_far();
    r2.events_so_far();
    // "defgh" is typed while frontend 1 has the focus, "ij" after the focus is back on 2.
    con.type_keys(b"ab\x01cdefgh\x01cij");
    assert_eq!(r2.data(2), b"ab");
    r2.expect_event(Event::MuxOut);
    r2.expect_event(Event::MuxIn);
    assert_eq!(r2.data(2), b"ij", "frontend 2 got bytes typed for frontend 1");
    // Back to frontend 1: whatever it had not taken yet reaches it, in order.
    con.type_keys(b"\x01c");
    let (data, _events) = r1.data_and_events(5);
    assert_eq!(data, b"defgh");
}

#[test]
fn ctrl_a_c_works_while_the_focused_frontend_takes_nothing() {
    // A guest that stopped reading its UART must not lock the user out of the monitor:
    // QEMU's mux keeps parsing escapes (mux_chr_can_read is 1 while its buffer has room).
    let lp = spawn();
    let mut con = Console::new(lp.handle());
    let mut all = con.attach_together(&[64, 0]).into_iter();
    let ((_h1, r1), (_h2, r2)) = (all.next().unwrap(), all.next().unwrap());
    r1.events_so_far();
    r2.events_so_far();
    con.type_keys(b"\x01c");
    r2.expect_event(Event::MuxOut);
    r1.expect_event(Event::MuxIn);
    r1.expect_event(Event::Opened);
    con.type_keys(b"monitor");
    assert_eq!(r1.data(7), b"monitor");
}

#[test]
fn ctrl_a_c_works_while_the_focused_frontend_has_no_callbacks() {
    // QEMU's char_mux_test: with the focused frontend's handlers cleared its input is
    // dropped, and `Ctrl-A c` still moves the focus on.
    let lp = spawn();
    let mut con = Console::new(lp.handle());
    let ((h1, _r1), (_h2, r2)) = con.attach_two();
    h1.take_focus();
    r2.expect_event(Event::MuxOut);
    h1.clear_frontend();
    settle(lp.handle());
    con.type_keys(b"dropped\x01cfound");
    r2.expect_event(Event::MuxIn);
    assert_eq!(r2.data(5), b"found");
}

//! `hub` (QEMU 10's): one frontend over several members, through real fifos. QEMU 7.2, the
//! QEMU on these machines, has no hub (it came in QEMU 10), so the error texts are checked
//! against QEMU's source (chardev/char-hub.c, char-fe.c, char.c), not a run of it.

use std::io::Write;

use chardev::{Event, Registry};
use chardev_testkit::{
    add, connect, fifo_writer, mkfifo, record, settle, spawn_registry, FifoReader, Seen, DEADLINE,
};

fn err(reg: &Registry, spec: &str) -> String {
    match reg.add_str(spec) {
        Ok(_) => panic!("{spec} was accepted"),
        Err(e) => e.to_string(),
    }
}

/// Every member can be claimed again: nothing a failed hub claimed stays claimed.
fn all_free(reg: &Registry, ids: &[&str]) {
    for id in ids {
        let handle = reg.connect(id).unwrap_or_else(|e| panic!("{id} still claimed: {e}"));
        handle.detach();
    }
}

#[test]
fn output_goes_to_every_member_and_input_comes_from_any() {
    let (_lp, reg) = spawn_registry();
    let dir = tempfile::tempdir().unwrap();
    let (a, f) = (dir.path().join("a"), dir.path().join("f"));
    for p in ["a.in", "a.out", "f"] {
        mkfifo(&dir.path().join(p));
    }
    let mut a_out = FifoReader::open(&a.with_extension("out"));
    let mut f_out = FifoReader::open(&f);
    add(&reg, &format!("pipe,id=a,path={}", a.display()));
    add(&reg, &format!("file,id=f,path={}", f.display()));
    add(&reg, "ringbuf,id=r,size=1024");
    add(&reg, "hub,id=h,chardevs.0=a,chardevs.1=f,chardevs.2=r");
    let h = connect(&reg, "h");
    let rec = record(&h, 4096);
    rec.expect_event(Event::Opened);

    h.write_all(b"to every member\n").unwrap();
    assert_eq!(a_out.read_exact(16), b"to every member\n");
    assert_eq!(f_out.read_exact(16), b"to every member\n");
    settle(reg.loop_handle());
    assert_eq!(reg.ringbuf_read("r", 100).unwrap(), b"to every member\n");

    fifo_writer(&a.with_extension("in")).write_all(b"from a").unwrap();
    assert_eq!(rec.data(6), b"from a");
    // Three members opened, the frontend saw one Opened.
    rec.quiet(chardev_testkit::QUIET);
    let info = reg.query().into_iter().find(|i| i.label == "h").unwrap();
    assert_eq!(info.filename, "hub");
}

#[test]
fn one_opened_at_the_first_member_and_one_closed_after_the_last_with_its_input_first() {
    let (_lp, reg) = spawn_registry();
    let dir = tempfile::tempdir().unwrap();
    let mut readers = Vec::new();
    for m in ["a", "b"] {
        let base = dir.path().join(m);
        mkfifo(&base.with_extension("in"));
        mkfifo(&base.with_extension("out"));
        readers.push(FifoReader::open(&base.with_extension("out")));
        // The file backend's input ends (Closed) when its writer goes.
        add(
            &reg,
            &format!(
                "file,id={m},path={},input-path={}",
                base.with_extension("out").display(),
                base.with_extension("in").display()
            ),
        );
    }
    add(&reg, "hub,id=h,chardevs.0=a,chardevs.1=b");
    let h = connect(&reg, "h");
    let rec = record(&h, 4096);
    rec.expect_event(Event::Opened);
    let mut wa = fifo_writer(&dir.path().join("a.in"));
    let mut wb = fifo_writer(&dir.path().join("b.in"));
    wa.write_all(b"A1").unwrap();
    assert_eq!(rec.data(2), b"A1");
    drop(wa); // a closes: b is still open, the frontend sees nothing
    rec.quiet(chardev_testkit::QUIET);
    wb.write_all(b"B1").unwrap();
    drop(wb); // the last member closes, after its bytes
    assert_eq!(rec.data(2), b"B1");
    rec.expect_event(Event::Closed);
    rec.quiet(chardev_testkit::QUIET);
}

/// The stream a test writes: no `\r\n[` anywhere in it (the bytes count up), so the gap
/// marker is found only where the hub put it.
fn stream(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8).collect()
}

#[test]
fn a_member_that_stops_reading_stalls_nobody_and_then_sees_one_gap_marker() {
    let (_lp, reg) = spawn_registry();
    let dir = tempfile::tempdir().unwrap();
    let (slow, fast) = (dir.path().join("slow"), dir.path().join("fast"));
    mkfifo(&slow);
    mkfifo(&fast);
    let mut slow_out = FifoReader::open(&slow);
    let mut fast_out = FifoReader::open(&fast);
    add(&reg, &format!("file,id=slow,path={}", slow.display()));
    add(&reg, &format!("file,id=fast,path={}", fast.display()));
    add(&reg, "hub,id=h,chardevs.0=slow,chardevs.1=fast,queue=1M");
    let h = connect(&reg, "h");
    let _rec = record(&h, 4096);
    settle(reg.loop_handle());

    // 3 MiB, far beyond the slow member's fifo (64 KiB) and queue (1 MiB), written at the
    // pace of the fast member's reader (as a guest that floods a console someone reads);
    // the writer never waits for the slow member.
    let total = 3 << 20;
    let data = stream(total);
    let fast_got = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let fast_reader = {
        let fast_got = std::sync::Arc::clone(&fast_got);
        std::thread::spawn(move || {
            let mut got = Vec::with_capacity(total);
            while got.len() < total {
                got.extend(fast_out.read_exact(4096));
                fast_got.store(got.len(), std::sync::atomic::Ordering::SeqCst);
            }
            got
        })
    };
    let started = std::time::Instant::now();
    for (i, piece) in data.chunks(4096).enumerate() {
        h.write_all(piece).unwrap();
        let written = (i + 1) * 4096;
        chardev_testkit::wait_until("the fast member to keep up", || {
            fast_got.load(std::sync::atomic::Ordering::SeqCst) + (256 << 10) >= written
        });
    }
    assert!(started.elapsed() < DEADLINE, "the writer was held up");
    let got = fast_reader.join().unwrap();
    assert!(got == data, "the fast member got every byte in order");

    // The slow member: what fitted before it stopped, one marker, then the newest output.
    let marker_start = b"\r\n[chardev: ";
    let head = slow_out.read_until(marker_start);
    let head = &head[..head.len() - marker_start.len()];
    let count = slow_out.read_until(b" bytes of output dropped: this viewer fell behind]\r\n");
    let lost: usize = std::str::from_utf8(&count[..count.iter().position(|&b| b == b' ').unwrap()])
        .unwrap()
        .parse()
        .unwrap();
    assert!(lost > 0);
    let tail = slow_out.read_exact(total - head.len() - lost);
    assert_eq!(head, &data[..head.len()], "before the gap: the stream's start");
    assert_eq!(tail, &data[head.len() + lost..], "after the gap: exactly the rest");
    assert!(tail.len() <= (1 << 20) + 65536, "at most its queue (and the fifo) kept");
    slow_out.quiet();
    assert_eq!(
        reg.with_backend::<chardev::backends::hub::Hub, _>("h", |hub| hub.dropped(0)).unwrap(),
        lost as u64
    );
}

#[test]
fn a_member_that_opens_later_gets_the_history_first() {
    let (_lp, reg) = spawn_registry();
    let dir = tempfile::tempdir().unwrap();
    let late = dir.path().join("late");
    mkfifo(&late);
    add(&reg, "ringbuf,id=m,size=64");
    add(&reg, "ringbuf,id=n,size=64");
    add(&reg, "hub,id=h,chardevs.0=m,chardevs.1=n,history=8");
    let h = connect(&reg, "h");
    let _rec = record(&h, 4096);
    settle(reg.loop_handle());
    h.write_all(b"0123456789").unwrap();
    // m's backend swapped for a fifo's: the member closes and opens again, and gets the
    // last 8 bytes first, then live output.
    let mut late_out = FifoReader::open(&late);
    reg.change("m", &format!("file,id=m,path={}", late.display()).parse().unwrap()).unwrap();
    assert_eq!(late_out.read_exact(8), b"23456789");
    h.write_all(b"live").unwrap();
    assert_eq!(late_out.read_exact(4), b"live");
    late_out.quiet();
}

#[test]
fn bad_hubs_get_qemus_texts_and_leave_nothing_claimed() {
    let (_lp, reg) = spawn_registry();
    add(&reg, "ringbuf,id=a");
    add(&reg, "ringbuf,id=b");
    add(&reg, "ringbuf,id=m,mux=on");
    add(&reg, "hub,id=h0,chardevs.0=b");

    let e = err(&reg, "hub,id=h,chardevs.0=a,chardevs.1=nope");
    assert!(e.contains("hub: chardev can't be found by id 'nope'"), "{e}");
    assert!(e.contains("chardevs.1"), "names the key: {e}");
    // Itself: it does not exist yet while it is built.
    let e = err(&reg, "hub,id=h,chardevs.0=a,chardevs.1=h");
    assert!(e.contains("hub: chardev can't be found by id 'h'"), "{e}");
    let stacked = |id: &str| {
        format!(
            "hub: multiplexers and hub devices can't be stacked, check chardev '{id}', chardev \
             should not be a hub device or have 'mux=on' enabled"
        )
    };
    let e = err(&reg, "hub,id=h,chardevs.0=a,chardevs.1=m");
    assert!(e.contains(&stacked("m")), "{e}");
    let e = err(&reg, "hub,id=h,chardevs.0=a,chardevs.1=h0");
    assert!(e.contains(&stacked("h0")), "{e}");
    // A mux's base belongs to its mux.
    let e = err(&reg, "hub,id=h,chardevs.0=a,chardevs.1=m-base");
    assert!(e.contains("chardev 'm-base' is already in use"), "{e}");
    // b is h0's; and the same member twice.
    let e = err(&reg, "hub,id=h,chardevs.0=a,chardevs.1=b");
    assert!(e.contains("chardev 'b' is already in use"), "{e}");
    let e = err(&reg, "hub,id=h,chardevs.0=a,chardevs.1=a");
    assert!(e.contains("chardev 'a' is already in use"), "{e}");

    let e = err(&reg, "hub,id=h");
    assert!(e.contains("hub: 'chardevs' list is not defined"), "{e}");
    let e = err(&reg, "hub,id=h,chardevs.0=a,chardevs.2=b");
    assert!(e.contains("'chardevs.1'") && e.contains("chardevs.2=b"), "{e}");
    let e = err(&reg, "hub,id=h,chardevs.1=a");
    assert!(e.contains("'chardevs.0'"), "{e}");
    let e = err(&reg, "hub,id=h,chardevs.x=a");
    assert!(e.contains("Invalid parameter 'chardevs.x'"), "{e}");
    let e = err(&reg, "hub,id=h,chardevs.0=a,history=65M");
    assert!(e.contains("'history=65M': is larger than the maximum history, 64M"), "{e}");
    let e = err(&reg, "hub,id=h,chardevs.0=a,queue=1G");
    assert!(e.contains("'queue=1G': is larger than the maximum queue, 64M"), "{e}");

    assert!(!reg.contains("h"));
    settle(reg.loop_handle());
    all_free(&reg, &["a"]);
    let e = err(&reg, "hub,id=h,chardevs.0=a,queue=0");
    assert!(e.contains("'queue=0': must be at least 1 byte"), "{e}");
    // And a good one over the same members works.
    add(&reg, "hub,id=h,chardevs.0=a,history=64M,queue=1");
}

#[test]
fn members_are_busy_while_the_hub_holds_them_and_free_once_it_is_removed() {
    let (_lp, reg) = spawn_registry();
    add(&reg, "ringbuf,id=a");
    add(&reg, "ringbuf,id=b");
    // More than QEMU's four members.
    for i in 0..6 {
        add(&reg, &format!("null,id=n{i}"));
    }
    add(&reg, "hub,id=h,chardevs.0=a,chardevs.1=b,chardevs.2=n0,chardevs.3=n1,chardevs.4=n2,chardevs.5=n3,chardevs.6=n4,chardevs.7=n5");
    assert_eq!(reg.remove("a").unwrap_err().to_string(), "Chardev 'a' is busy");
    assert!(reg.connect("b").unwrap_err().to_string().contains("chardev 'b' is already in use"));
    let e = reg.change("h", &"ringbuf,id=h".parse().unwrap()).unwrap_err().to_string();
    assert!(e.contains("For mux or hub device hotswap is not supported yet"), "{e}");

    let h = connect(&reg, "h");
    assert_eq!(reg.remove("h").unwrap_err().to_string(), "Chardev 'h' is busy");
    h.detach();
    reg.remove("h").unwrap();
    all_free(&reg, &["a", "b", "n0", "n5"]);
    reg.remove("a").unwrap();
}

#[test]
fn a_hub_over_members_that_never_open_never_opens() {
    let (_lp, reg) = spawn_registry();
    add(&reg, "null,id=n");
    add(&reg, "hub,id=h,chardevs.0=n");
    let h = connect(&reg, "h");
    let rec = record(&h, 16);
    settle(reg.loop_handle());
    assert!(!h.is_open());
    // Writes still succeed (QEMU: a closed member is skipped).
    assert_eq!(h.write(b"x").unwrap(), 1);
    match rec.rx.try_recv() {
        Ok(Seen::Event(e)) => panic!("unexpected {e:?}"),
        Ok(Seen::Data(..)) => panic!("unexpected data"),
        Err(_) => {}
    }
}

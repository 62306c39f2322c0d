//! 10,000 clients in a row against a unix server chardev and 2,000 against a tcp one (each
//! times `CHARDEV_SOAK`): each gets one `Opened` and one `Closed`, in order, and the process
//! holds as many fds afterwards (and at every thousandth cycle) as before.
//! Its tests hold `alone()`, as every test of this binary does, so the fd count is theirs.

use std::io::Write;
use std::time::Instant;

use chardev::{Event, EventLoop, FrontendHandle, LoopHandle, Registry};
use chardev_testkit::*;

/// Unix clients per run at `CHARDEV_SOAK=1`.
const UNIX_CYCLES: usize = 10_000;

/// Tcp clients per run at `CHARDEV_SOAK=1`. Fewer than over unix: every tcp connection
/// leaves its 4-tuple in TIME_WAIT for 60 s on whichever side closed first (the client on
/// even cycles, the server on odd ones), and all of them share one server address and the
/// ~28,000 ephemeral ports of 127.0.0.1. 2,000 a run, however often the suite runs in a
/// minute, stays far from running out of ports and from `tcp_max_tw_buckets`; with a soak
/// multiplier the count is capped at [`TCP_CYCLES_MAX`] for the same reason.
const TCP_CYCLES: usize = 2_000;

/// The most tcp clients a run makes, whatever `CHARDEV_SOAK` says (see [`TCP_CYCLES`]).
const TCP_CYCLES_MAX: usize = 12_000;

/// How often, in cycles, the fd count is checked on the way (a leak shows where it starts).
const CHECK_EVERY: usize = 1_000;

/// Connects `cycles` clients one after another with `connect`; even ones hang up themselves,
/// odd ones are dropped by the frontend (`disconnect`). Each says which cycle it is. Every
/// [`CHECK_EVERY`] cycles, and at the end, the process must hold `fds` fds again.
fn cycle<S: Write>(
    lp: &LoopHandle,
    h: &FrontendHandle,
    rec: &Record,
    cycles: usize,
    fds: usize,
    mut connect: impl FnMut() -> S,
) {
    let (mut opened, mut closed) = (0, 0);
    let start = Instant::now();
    for i in 0..cycles {
        let mut peer = connect();
        rec.expect_event(Event::Opened);
        opened += 1;
        let hello = format!("{i:05}");
        peer.write_all(hello.as_bytes()).unwrap();
        assert_eq!(rec.data(hello.len()), hello.as_bytes(), "cycle {i}");
        if i % 2 == 0 {
            drop(peer);
            rec.expect_event(Event::Closed);
        } else {
            h.disconnect();
            rec.expect_event(Event::Closed);
            drop(peer);
        }
        closed += 1;
        if (i + 1) % CHECK_EVERY == 0 || i + 1 == cycles {
            settle(lp);
            rec.nothing_yet();
            assert_eq!(open_fds(), fds, "fds open after {} connections", i + 1);
        }
    }
    eprintln!(
        "{cycles} cycles in {:.2?}: {opened} Opened, {closed} Closed, {fds} fds before and after",
        start.elapsed()
    );
}

#[test]
fn ten_thousand_unix_clients_open_and_close_once_each_and_leave_no_fd_behind() {
    let _alone = alone(); // counts the whole process's fds: one test at a time
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cycles.sock");
    let lp = EventLoop::spawn().unwrap();
    let reg = Registry::new(lp.handle());
    chardev_socket::register(&reg);
    reg.add_str(&format!("socket,id=s,path={},server=on,wait=off", path.display())).unwrap();
    let h = reg.connect("s").unwrap();
    let rec = record(&h, 64);
    settle(lp.handle());
    let before = open_fds();

    let cycles = UNIX_CYCLES * soak_scale();
    cycle(lp.handle(), &h, &rec, cycles, before, || {
        std::os::unix::net::UnixStream::connect(&path).unwrap()
    });

    // Still serving.
    let _last = std::os::unix::net::UnixStream::connect(&path).unwrap();
    rec.expect_event(Event::Opened);
}

#[test]
fn two_thousand_tcp_clients_open_and_close_once_each_and_leave_no_fd_behind() {
    let _alone = alone(); // counts the whole process's fds: one test at a time
    let lp = EventLoop::spawn().unwrap();
    let reg = Registry::new(lp.handle());
    chardev_socket::register(&reg);
    reg.add_str("socket,id=t,host=127.0.0.1,port=0,server=on,wait=off").unwrap();
    let filename = reg.query()[0].filename.clone();
    let port: u16 = filename
        .trim_end_matches(",server=on")
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no port in {filename}"));
    let h = reg.connect("t").unwrap();
    let rec = record(&h, 64);
    settle(lp.handle());
    let before = open_fds();

    let cycles = (TCP_CYCLES * soak_scale()).min(TCP_CYCLES_MAX);
    cycle(lp.handle(), &h, &rec, cycles, before, || {
        std::net::TcpStream::connect(("127.0.0.1", port)).unwrap()
    });

    let _last = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    rec.expect_event(Event::Opened);
}

//! 200 clients in a row against a unix and a tcp server chardev: each gets one `Opened` and
//! one `Closed`, in order, and the process holds as many fds afterwards as before.
//! Alone in its test binary, and its two tests take turns, so the fd count is theirs alone.

#[path = "../../chardev/tests/common/mod.rs"]
mod common;

use std::io::Write;
use std::sync::{Mutex, PoisonError};

use chardev::{Event, EventLoop, FrontendHandle, Registry};
use common::*;

const CYCLES: usize = 200;

/// The two tests count the whole process's fds: one at a time.
static FD_COUNT: Mutex<()> = Mutex::new(());

/// Connects `CYCLES` clients one after another with `connect`; even ones hang up themselves,
/// odd ones are dropped by the frontend (`disconnect`). Each says which cycle it is.
fn cycle<S: Write>(h: &FrontendHandle, rec: &Record, mut connect: impl FnMut() -> S) {
    for i in 0..CYCLES {
        let mut peer = connect();
        rec.expect_event(Event::Opened);
        let hello = format!("{i:03}");
        peer.write_all(hello.as_bytes()).unwrap();
        assert_eq!(rec.data(3), hello.as_bytes(), "cycle {i}");
        if i % 2 == 0 {
            drop(peer);
            rec.expect_event(Event::Closed);
        } else {
            h.disconnect();
            rec.expect_event(Event::Closed);
            drop(peer);
        }
    }
}

#[test]
fn two_hundred_unix_clients_open_and_close_once_each_and_leave_no_fd_behind() {
    let _turn = FD_COUNT.lock().unwrap_or_else(PoisonError::into_inner);
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

    cycle(&h, &rec, || std::os::unix::net::UnixStream::connect(&path).unwrap());

    settle(lp.handle());
    rec.nothing_yet();
    assert_eq!(open_fds(), before, "fds open after {CYCLES} unix connections");
    // Still serving.
    let _last = std::os::unix::net::UnixStream::connect(&path).unwrap();
    rec.expect_event(Event::Opened);
}

#[test]
fn two_hundred_tcp_clients_open_and_close_once_each_and_leave_no_fd_behind() {
    let _turn = FD_COUNT.lock().unwrap_or_else(PoisonError::into_inner);
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

    cycle(&h, &rec, || std::net::TcpStream::connect(("127.0.0.1", port)).unwrap());

    settle(lp.handle());
    rec.nothing_yet();
    assert_eq!(open_fds(), before, "fds open after {CYCLES} tcp connections");
    let _last = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    rec.expect_event(Event::Opened);
}

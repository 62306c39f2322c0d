//! Embedding: an `EventLoop` nested in the embedder's own epoll loop. Its fd
//! ([`AsFd`]) joins the embedder's epoll set, and `poll_once(Some(Duration::ZERO))` steps it
//! when that fd is readable; nothing moves otherwise.

use std::os::fd::AsFd;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use chardev::{EventLoop, Registry};
use chardev_testkit::*;
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};

/// The embedder's own loop: a plain epoll set with the chardev loop's fd in it.
struct OwnLoop {
    epoll: Epoll,
    chardevs: EventLoop,
}

const CHARDEVS: u64 = 7;

impl OwnLoop {
    fn new(chardevs: EventLoop) -> OwnLoop {
        let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC).expect("epoll_create");
        let event = EpollEvent::new(EpollFlags::EPOLLIN, CHARDEVS);
        epoll.add(chardevs.as_fd(), event).expect("add the chardev loop's fd");
        OwnLoop { epoll, chardevs }
    }

    /// Whether the chardev loop's fd becomes readable within `wait`.
    fn readable_within(&self, wait: Duration) -> bool {
        let mut events = [EpollEvent::empty(); 4];
        let timeout = EpollTimeout::try_from(wait).expect("a timeout epoll takes");
        let n = self.epoll.wait(&mut events, timeout).expect("epoll_wait");
        assert!(events[..n].iter().all(|e| e.data() == CHARDEVS), "only our fd is in the set");
        n > 0
    }

    /// Steps the chardev loop once, as an embedder does when its fd is readable.
    fn step(&mut self) {
        self.chardevs.poll_once(Some(Duration::ZERO)).expect("poll_once");
    }

    /// Steps while the fd says there is something to do, until it stays quiet.
    fn step_until_idle(&mut self) {
        let end = Instant::now() + DEADLINE;
        while self.readable_within(Duration::ZERO)
            || self.chardevs.next_timeout() == Some(Duration::ZERO)
        {
            assert!(Instant::now() < end, "the chardev loop never went idle");
            self.step();
        }
    }
}

fn with_suffix(base: &std::path::Path, suffix: &str) -> PathBuf {
    let mut p = base.as_os_str().to_owned();
    p.push(suffix);
    PathBuf::from(p)
}

#[test]
fn a_loop_in_a_plain_epoll_loop_delivers_input_only_when_stepped() {
    let dir = tempfile::tempdir().expect("temp dir");
    let base = dir.path().join("p");
    let (keys, screen) = (with_suffix(&base, ".in"), with_suffix(&base, ".out"));
    mkfifo(&keys);
    mkfifo(&screen);
    let _screen = FifoReader::open(&screen);
    let mut own = OwnLoop::new(EventLoop::new().expect("loop"));
    let reg = Registry::new(&own.chardevs.handle());
    add(&reg, &format!("pipe,id=p,path={}", base.display()));
    let h = connect(&reg, "p");
    let rec = record(&h, 64);
    assert!(own.readable_within(DEADLINE), "requests from this thread make the fd readable");
    own.step_until_idle();
    rec.events_so_far();

    let mut keyboard = fifo_writer(&keys);
    std::io::Write::write_all(&mut keyboard, b"hello").expect("type");
    // Nobody steps the chardev loop: the bytes wait in the fifo.
    rec.quiet(QUIET);
    assert!(own.readable_within(DEADLINE), "input makes the loop's fd readable");
    own.step();
    assert_eq!(rec.data(5), b"hello");
    assert!(!own.readable_within(Duration::ZERO), "all handled: the fd is quiet again");
    assert_eq!(own.chardevs.next_timeout(), None, "no timer, nothing left over");
}

#[test]
fn a_request_from_another_thread_wakes_the_embedders_loop() {
    let mut own = OwnLoop::new(EventLoop::new().expect("loop"));
    own.step_until_idle();
    let (tx, ran) = std::sync::mpsc::channel();
    let handle = own.chardevs.handle();
    std::thread::spawn(move || handle.run_on_loop(move || tx.send(()).expect("send")))
        .join()
        .expect("the posting thread");
    assert!(own.readable_within(DEADLINE), "the request woke the fd");
    assert!(ran.try_recv().is_err(), "not run before the loop is stepped");
    own.step();
    ran.try_recv().expect("ran in the step");
}

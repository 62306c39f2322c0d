//! Shared test helpers: a recording frontend, deadlines, temp dirs.
#![allow(dead_code)]

use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chardev::{Event, Frontend, FrontendHandle};

/// How long any single wait in a test may take before the test fails.
pub const DEADLINE: Duration = Duration::from_secs(10);

/// What a recording frontend saw, in order.
#[derive(Debug)]
pub enum Seen {
    Data(Vec<u8>, Vec<OwnedFd>),
    Event(Event),
}

/// A frontend that reports everything it gets on a channel and takes at most `room` bytes.
pub struct Recorder {
    pub room: Arc<AtomicUsize>,
    pub tx: Sender<Seen>,
}

impl Frontend for Recorder {
    fn can_receive(&mut self) -> usize {
        self.room.load(Ordering::SeqCst)
    }
    fn receive(&mut self, data: &[u8], fds: Vec<OwnedFd>) {
        assert!(data.len() <= self.room.load(Ordering::SeqCst), "got more than can_receive");
        let _ = self.tx.send(Seen::Data(data.to_vec(), fds));
    }
    fn event(&mut self, event: Event) {
        let _ = self.tx.send(Seen::Event(event));
    }
}

/// The receiving end of a [`Recorder`].
pub struct Record {
    pub rx: Receiver<Seen>,
    pub room: Arc<AtomicUsize>,
}

/// Installs a recorder with `room` bytes of room on `handle`.
pub fn record(handle: &FrontendHandle, room: usize) -> Record {
    let (tx, rx) = channel();
    let room = Arc::new(AtomicUsize::new(room));
    handle.set_frontend(Recorder { room: Arc::clone(&room), tx });
    Record { rx, room }
}

impl Record {
    /// The next thing seen, or a test failure after the deadline.
    pub fn next(&self) -> Seen {
        match self.rx.recv_timeout(DEADLINE) {
            Ok(s) => s,
            Err(RecvTimeoutError::Timeout) => panic!("nothing seen within {DEADLINE:?}"),
            Err(RecvTimeoutError::Disconnected) => panic!("frontend dropped"),
        }
    }

    /// Waits for `event`, failing on data or another event first.
    pub fn expect_event(&self, event: Event) {
        match self.next() {
            Seen::Event(e) => assert_eq!(e, event),
            Seen::Data(d, _) => panic!("expected {event:?}, got data {:?}", String::from_utf8_lossy(&d)),
        }
    }

    /// Collects data until `n` bytes arrived; fails on an event first.
    pub fn data(&self, n: usize) -> Vec<u8> {
        let mut out = Vec::new();
        while out.len() < n {
            match self.next() {
                Seen::Data(d, _) => out.extend_from_slice(&d),
                Seen::Event(e) => panic!("expected data, got {e:?} after {} bytes", out.len()),
            }
        }
        out
    }

    /// Asserts that nothing arrives within `wait` (used only to check absence).
    pub fn quiet(&self, wait: Duration) {
        if let Ok(s) = self.rx.recv_timeout(wait) {
            panic!("expected nothing, got {s:?}");
        }
    }
}

/// Polls `cond` until it holds, failing after the deadline.
pub fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let end = Instant::now() + DEADLINE;
    while !cond() {
        assert!(Instant::now() < end, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Counts this process's open fds.
pub fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").map(|d| d.count()).unwrap_or(0)
}

//! Answering from a callback without stalling the loop: a frontend that writes through an
//! `OutputQueue` to a peer that never reads holds up no other chardev of its loop, keeps its
//! queue bounded, stops reading that peer once the queue is backed up, and delivers all it
//! queued, in order, once the peer reads. `write_all` on the loop thread refuses, naming the
//! ways out. Real unix sockets (chardev-socket's server) throughout.

use std::io::{ErrorKind, Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{channel, Sender};
use std::sync::Arc;
use std::time::Instant;

use chardev::{Event, Frontend, FrontendHandle, OutputQueue, Registry};
use chardev_testkit::*;

/// The byte at offset `i` of an answer stream: a lost, repeated or reordered piece shows.
fn pattern(i: usize) -> u8 {
    (i % 251) as u8
}

/// Bytes of answer per byte of input.
const ANSWER: usize = 256;
/// Input taken per `receive`: one receive's answers are at most `ROOM * ANSWER` bytes.
const ROOM: usize = 64;
const PAUSE_AT: usize = 16 * 1024;
const LIMIT: usize = 64 * 1024;

/// What the answering frontend reports to the test.
#[derive(Default)]
struct Stats {
    /// Input bytes taken.
    taken: AtomicUsize,
    /// The most output that ever waited in the queue.
    max_pending: AtomicUsize,
    /// Output waiting now.
    pending: AtomicUsize,
    /// `can_receive` said 0 at least once.
    held_back: AtomicBool,
    /// Writes refused (`Full`).
    refused: AtomicUsize,
}

/// Answers each input byte with `ANSWER` bytes of the pattern, from its `receive` callback.
struct Answerer {
    out: OutputQueue,
    written: usize,
    stats: Arc<Stats>,
}

impl Answerer {
    fn note(&self) {
        let pending = self.out.pending();
        self.stats.pending.store(pending, Ordering::SeqCst);
        self.stats.max_pending.fetch_max(pending, Ordering::SeqCst);
    }
}

impl Frontend for Answerer {
    fn can_receive(&mut self) -> usize {
        let room = self.out.can_receive(ROOM);
        if room == 0 {
            self.stats.held_back.store(true, Ordering::SeqCst);
        }
        room
    }
    fn receive(&mut self, data: &[u8], _fds: Vec<OwnedFd>) {
        for _ in data {
            let answer: Vec<u8> = (self.written..self.written + ANSWER).map(pattern).collect();
            match self.out.write(&answer) {
                Ok(()) => self.written += ANSWER,
                Err(_) => {
                    self.stats.refused.fetch_add(1, Ordering::SeqCst);
                }
            }
        }
        self.stats.taken.fetch_add(data.len(), Ordering::SeqCst);
        self.note();
    }
    fn event(&mut self, _event: Event) {}
    fn writable(&mut self) {
        let _ = self.out.flush();
        self.note();
    }
}

/// Echoes what it gets through a queue of its own (the bystander).
struct Echo(OutputQueue);

impl Frontend for Echo {
    fn can_receive(&mut self) -> usize {
        self.0.can_receive(4096)
    }
    fn receive(&mut self, data: &[u8], _fds: Vec<OwnedFd>) {
        self.0.write(data).expect("the bystander's queue has room");
    }
    fn event(&mut self, _event: Event) {}
    fn writable(&mut self) {
        let _ = self.0.flush();
    }
}

fn socket_registry() -> (chardev::LoopThread, Registry, tempfile::TempDir) {
    let (lp, reg) = spawn_registry();
    chardev_socket::register(&reg);
    (lp, reg, tempfile::tempdir().unwrap())
}

/// A unix socket server chardev `id` in `dir` and its handle; [`client`] connects to it.
fn server(reg: &Registry, dir: &std::path::Path, id: &str) -> FrontendHandle {
    let path = dir.join(format!("{id}.sock"));
    add(reg, &format!("socket,id={id},path={},server=on,wait=off", path.display()));
    connect(reg, id)
}

fn client(dir: &std::path::Path, id: &str) -> UnixStream {
    connect_unix(&dir.join(format!("{id}.sock")))
}

#[test]
fn a_peer_that_never_reads_stalls_no_other_chardev_and_gets_everything_in_order_once_it_reads() {
    let (lp, reg, dir) = socket_registry();
    let stats = Arc::new(Stats::default());
    let h = server(&reg, dir.path(), "stuck");
    let out = OutputQueue::with_bounds(h.clone(), PAUSE_AT, LIMIT);
    h.set_frontend(Answerer { out, written: 0, stats: Arc::clone(&stats) });
    let mut stuck = client(dir.path(), "stuck");
    let h = server(&reg, dir.path(), "bystander");
    h.set_frontend(Echo(OutputQueue::new(h.clone())));
    let mut bystander = client(dir.path(), "bystander");

    // The stuck peer sends far more than the kernel's buffers and the queue can answer, and
    // never reads.
    const SENT: usize = 16 * 1024;
    stuck.write_all(&[b'?'; SENT]).unwrap();
    wait_until("the queue to back up and input to be held back", || {
        stats.held_back.load(Ordering::SeqCst) && stats.pending.load(Ordering::SeqCst) >= PAUSE_AT
    });
    settle(lp.handle());
    let taken = stats.taken.load(Ordering::SeqCst);
    assert!(taken < SENT, "all {SENT} bytes were read though their answers went unread");

    // Meanwhile the other chardev of the loop answers at once, again and again.
    for i in 0..20 {
        let start = Instant::now();
        let ping = format!("ping {i}\n");
        bystander.write_all(ping.as_bytes()).unwrap();
        let mut got = vec![0u8; ping.len()];
        bystander.read_exact(&mut got).expect("the bystander answers");
        assert_eq!(got, ping.as_bytes());
        assert!(start.elapsed() < DEADLINE / 4, "the bystander took {:?}", start.elapsed());
    }

    // The stuck peer's input is not read while its answers wait.
    settle(lp.handle());
    assert_eq!(stats.taken.load(Ordering::SeqCst), taken, "input was read while stuck");
    let max = stats.max_pending.load(Ordering::SeqCst);
    assert!(max <= PAUSE_AT + ROOM * ANSWER, "{max} bytes waited in the queue");
    assert_eq!(stats.refused.load(Ordering::SeqCst), 0, "nothing passed the limit");

    // Once it reads, everything arrives, in order, and the rest of its input is answered.
    let total = SENT * ANSWER;
    let mut buf = vec![0u8; 64 * 1024];
    let mut got = 0;
    while got < total {
        let n = stuck.read(&mut buf).expect("the answers keep coming");
        assert!(n > 0, "the connection closed after {got} of {total} bytes");
        for (k, &b) in buf[..n].iter().enumerate() {
            assert_eq!(b, pattern(got + k), "byte {} of the answers", got + k);
        }
        got += n;
    }
    assert_eq!(stats.taken.load(Ordering::SeqCst), SENT);
    wait_until("the queue to drain", || stats.pending.load(Ordering::SeqCst) == 0);
}

/// Writes `BLOCK`-byte pieces of the pattern on `Opened` until the queue refuses one, and
/// reports how many it took and the queue's fill.
struct Flooder {
    out: OutputQueue,
    tx: Sender<(usize, usize, chardev::Full)>,
}

const BLOCK: usize = 1000;

impl Frontend for Flooder {
    fn can_receive(&mut self) -> usize {
        self.out.can_receive(4096)
    }
    fn receive(&mut self, _data: &[u8], _fds: Vec<OwnedFd>) {}
    fn event(&mut self, event: Event) {
        if event != Event::Opened {
            return;
        }
        // All in one callback: the loop gets no turn, so the queue has to hold the rest.
        for blocks in 0.. {
            let piece: Vec<u8> = (blocks * BLOCK..(blocks + 1) * BLOCK).map(pattern).collect();
            if let Err(full) = self.out.write(&piece) {
                let _ = self.tx.send((blocks, self.out.pending(), full));
                return;
            }
        }
    }
    fn writable(&mut self) {
        let _ = self.out.flush();
    }
}

#[test]
fn past_the_limit_a_write_is_refused_whole_and_what_was_taken_arrives_intact() {
    let (_lp, reg, dir) = socket_registry();
    let (tx, rx) = channel();
    let h = server(&reg, dir.path(), "flood");
    h.set_frontend(Flooder { out: OutputQueue::with_bounds(h.clone(), PAUSE_AT, LIMIT), tx });
    let mut peer = client(dir.path(), "flood");
    let (blocks, pending, full) = rx.recv_timeout(DEADLINE).expect("the queue refuses");
    assert_eq!(full.limit, LIMIT);
    assert!(full.queued >= LIMIT && pending == full.queued, "{full:?}, {pending} pending");
    assert!(pending < LIMIT + BLOCK, "the queue holds {pending} bytes");
    assert!(full.to_string().contains("does not read"), "{full}");

    // The peer reads: exactly the blocks taken, in order, and not a byte of the refused one.
    let total = blocks * BLOCK;
    let mut got = vec![0u8; total];
    peer.read_exact(&mut got).unwrap();
    assert!(got.iter().enumerate().all(|(i, &b)| b == pattern(i)), "the stream is intact");
    peer.set_nonblocking(true).unwrap();
    let mut more = [0u8; 1];
    let extra = peer.read(&mut more);
    assert!(
        matches!(&extra, Err(e) if e.kind() == ErrorKind::WouldBlock),
        "more than the {total} bytes taken arrived: {extra:?}"
    );
}

/// Calls `write_all` from its `receive`, on the loop thread, and reports the result.
struct WriteAllOnLoop {
    handle: FrontendHandle,
    tx: Sender<std::io::Result<()>>,
}

impl Frontend for WriteAllOnLoop {
    fn can_receive(&mut self) -> usize {
        4096
    }
    fn receive(&mut self, data: &[u8], _fds: Vec<OwnedFd>) {
        let _ = self.tx.send(self.handle.write_all(data));
    }
    fn event(&mut self, _event: Event) {}
}

#[test]
fn write_all_on_the_loop_thread_refuses_naming_the_queue_and_write_all_blocking() {
    let (_lp, reg, dir) = socket_registry();
    let (tx, rx) = channel();
    let h = server(&reg, dir.path(), "w");
    h.set_frontend(WriteAllOnLoop { handle: h.clone(), tx });
    let mut peer = client(dir.path(), "w");
    peer.write_all(b"echo me").unwrap();
    let err = rx.recv_timeout(DEADLINE).unwrap().expect_err("write_all on the loop thread");
    assert_eq!(err.kind(), ErrorKind::Unsupported);
    let text = err.to_string();
    assert!(text.contains("OutputQueue") && text.contains("write_all_blocking"), "{text}");
    // Nothing was written; from another thread write_all works as ever.
    h.write_all(b"from a test thread").unwrap();
    let mut got = vec![0u8; 18];
    peer.read_exact(&mut got).unwrap();
    assert_eq!(got, b"from a test thread");
}

#[test]
fn when_a_stuck_peer_leaves_what_waited_is_dropped_and_the_next_peer_is_answered() {
    let (lp, reg, dir) = socket_registry();
    let stats = Arc::new(Stats::default());
    let h = server(&reg, dir.path(), "leaves");
    let out = OutputQueue::with_bounds(h.clone(), PAUSE_AT, LIMIT);
    h.set_frontend(Answerer { out, written: 0, stats: Arc::clone(&stats) });
    let mut stuck = client(dir.path(), "leaves");
    stuck.write_all(&[b'?'; 16 * 1024]).unwrap();
    wait_until("the queue to back up and input to be held back", || {
        stats.held_back.load(Ordering::SeqCst) && stats.pending.load(Ordering::SeqCst) >= PAUSE_AT
    });
    drop(stuck);
    // The loop tells the waiting frontend on `Closed`; its flush finds no peer and drops.
    wait_until("the queue to be dropped", || stats.pending.load(Ordering::SeqCst) == 0);
    settle(lp.handle());

    // Input is let in again: the next client is answered.
    let mut next = client(dir.path(), "leaves");
    next.write_all(b"!").unwrap();
    let mut answer = vec![0u8; ANSWER];
    next.read_exact(&mut answer).expect("the next client is answered");
}

//! The event loop: stepping from an embedder's loop, loops side by side, timers, custom
//! backends, and write_all that waits on the kernel without deadlocking the loop thread.

use std::io::{Read, Write};
use std::os::fd::{BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chardev::{Chardev, Event, EventLoop, Frontend, FrontendHandle, Input, Io, Registry};
use chardev_testkit::*;

fn mkfifo(path: &std::path::Path) {
    nix::unistd::mkfifo(path, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
}

#[test]
fn an_embedder_can_step_the_loop_from_its_own_thread() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in");
    std::fs::write(&input, b"stepped").unwrap();
    let mut lp = EventLoop::new().unwrap();
    let reg = Registry::new(&lp.handle());
    reg.add_str(&format!(
        "file,id=f,path={},input-path={}",
        dir.path().join("o").display(),
        input.display()
    ))
    .unwrap();
    let h = reg.connect("f").unwrap();
    let rec = record(&h, 100);
    // Nothing happens until the embedder steps the loop.
    rec.quiet(Duration::from_millis(50));
    let deadline = Instant::now() + DEADLINE;
    let mut seen = Vec::new();
    while seen.len() < 3 && Instant::now() < deadline {
        lp.poll_once(Some(Duration::from_millis(10))).unwrap();
        while let Ok(s) = rec.rx.try_recv() {
            seen.push(s);
        }
    }
    assert!(matches!(seen[0], Seen::Event(Event::Opened)), "{seen:?}");
    assert!(matches!(&seen[1], Seen::Data(d, _) if d == b"stepped"), "{seen:?}");
    assert!(matches!(seen[2], Seen::Event(Event::Closed)), "{seen:?}");
    assert_eq!(lp.len(), 1);
}

#[test]
fn two_loops_run_side_by_side() {
    let dir = tempfile::tempdir().unwrap();
    let loops: Vec<_> = (0..2).map(|_| EventLoop::spawn().unwrap()).collect();
    let mut recs = Vec::new();
    for (i, lp) in loops.iter().enumerate() {
        let reg = Registry::new(lp.handle());
        let input = dir.path().join(format!("in{i}"));
        std::fs::write(&input, format!("loop {i}")).unwrap();
        reg.add_str(&format!(
            "file,id=f,path={},input-path={}",
            dir.path().join(format!("o{i}")).display(),
            input.display()
        ))
        .unwrap();
        let h = reg.connect("f").unwrap();
        recs.push((record(&h, 64), h, reg));
    }
    for (i, (rec, _, _)) in recs.iter().enumerate() {
        rec.expect_event(Event::Opened);
        assert_eq!(rec.data(6), format!("loop {i}").as_bytes());
        rec.expect_event(Event::Closed);
    }
}

/// A backend of the embedder's own: input "tick" on a timer, a few times.
struct Ticker {
    left: usize,
    pending: bool,
}

impl Chardev for Ticker {
    fn register(&mut self, io: &mut Io<'_>) -> chardev::Result<()> {
        io.event(Event::Opened);
        io.add_timer(Duration::from_millis(5), 7);
        Ok(())
    }
    fn deregister(&mut self, _registry: &mio::Registry) {}
    fn timer(&mut self, io: &mut Io<'_>, id: u64) {
        assert_eq!(id, 7);
        self.pending = true;
        io.input_ready();
    }
    fn read(&mut self, io: &mut Io<'_>, buf: &mut [u8], _fds: &mut Vec<OwnedFd>) -> Input {
        if !self.pending {
            return Input::WouldBlock;
        }
        self.pending = false;
        self.left -= 1;
        if self.left == 0 {
            io.event(Event::Closed);
        } else {
            io.add_timer(Duration::from_millis(5), 7);
        }
        buf[..4].copy_from_slice(b"tick");
        Input::Data(4)
    }
    fn write(&mut self, buf: &[u8], _fds: &[BorrowedFd<'_>]) -> std::io::Result<usize> {
        Ok(buf.len())
    }
    fn kind(&self) -> &'static str {
        "ticker"
    }
}

#[test]
fn timers_drive_a_custom_backend() {
    let lp = EventLoop::spawn().unwrap();
    let reg = Registry::new(lp.handle());
    reg.add_chardev("t", Box::new(Ticker { left: 3, pending: false })).unwrap();
    assert_eq!(reg.query()[0].filename, "ticker");
    let h = reg.connect("t").unwrap();
    let rec = record(&h, 64);
    rec.expect_event(Event::Opened);
    assert_eq!(rec.data(12), b"tickticktick");
    rec.expect_event(Event::Closed);
    assert!(matches!(
        reg.add_chardev("t", Box::new(chardev::backends::null::Null)),
        Err(chardev::Error::Exists(_))
    ));
}

/// Writes everything it receives back with write_all_blocking, on the loop thread.
struct WriteAllEcho(FrontendHandle, Arc<AtomicUsize>);

impl Frontend for WriteAllEcho {
    fn can_receive(&mut self) -> usize {
        1 << 20
    }
    fn receive(&mut self, data: &[u8], _fds: Vec<OwnedFd>) {
        // 64 times what arrived: far more than the fifo holds, so the write must wait.
        for _ in 0..64 {
            self.0.write_all_blocking(data).unwrap();
        }
        self.1.fetch_add(data.len() * 64, Ordering::SeqCst);
    }
    fn event(&mut self, _event: Event) {}
}

#[test]
fn write_all_blocking_on_the_loop_thread_waits_for_the_reader_without_deadlock() {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("p");
    mkfifo(&dir.path().join("p.in"));
    mkfifo(&dir.path().join("p.out"));
    let lp = EventLoop::spawn().unwrap();
    let reg = Registry::new(lp.handle());
    reg.add_str(&format!("pipe,id=p,path={}", base.display())).unwrap();
    let h = reg.connect("p").unwrap();
    let written = Arc::new(AtomicUsize::new(0));
    h.set_frontend(WriteAllEcho(h.clone(), Arc::clone(&written)));

    let mut out = std::fs::File::open(dir.path().join("p.out")).unwrap();
    let mut inp = std::fs::OpenOptions::new().write(true).open(dir.path().join("p.in")).unwrap();
    let chunk = vec![b'x'; 16 * 1024];
    inp.write_all(&chunk).unwrap();
    // A slow reader: small reads, so the writer fills the fifo many times over.
    let mut got = 0;
    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + DEADLINE;
    while got < chunk.len() * 64 {
        assert!(Instant::now() < deadline, "only {got} bytes arrived");
        got += out.read(&mut buf).unwrap();
    }
    wait_until("write_all to return", || written.load(Ordering::SeqCst) == chunk.len() * 64);
}

#[test]
fn write_all_from_another_thread_reports_a_vanished_reader() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("out.fifo");
    mkfifo(&fifo);
    // The reader must exist before the chardev opens the fifo for writing.
    let reader = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NONBLOCK)
        .open(&fifo)
        .unwrap();
    let lp = EventLoop::spawn().unwrap();
    let reg = Registry::new(lp.handle());
    reg.add_str(&format!("file,id=f,path={}", fifo.display())).unwrap();
    let h = reg.connect("f").unwrap();
    let writer = std::thread::spawn(move || h.write_all(&vec![0u8; 1 << 20]));
    // Once the writer has filled the fifo it waits in poll(2); then the reader goes away.
    let size = nix::fcntl::fcntl(&reader, nix::fcntl::FcntlArg::F_GETPIPE_SZ).unwrap() as usize;
    wait_until("the writer to fill the fifo", || queued(&reader) >= size);
    drop(reader);
    let err = writer.join().unwrap().unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::BrokenPipe, "{err}");
}

use std::os::unix::fs::OpenOptionsExt;

/// Bytes waiting to be read on `fd` (FIONREAD).
fn queued(fd: &impl std::os::fd::AsRawFd) -> usize {
    let mut n: nix::libc::c_int = 0;
    // SAFETY: FIONREAD writes one int through the valid pointer given.
    let rc = unsafe { nix::libc::ioctl(fd.as_raw_fd(), nix::libc::FIONREAD, &mut n) };
    assert_eq!(rc, 0, "FIONREAD: {}", std::io::Error::last_os_error());
    n as usize
}

/// A backend of the embedder's own that hands out a non-blocking fd with one byte.
struct FdGiver(Option<OwnedFd>);

impl Chardev for FdGiver {
    fn register(&mut self, io: &mut Io<'_>) -> chardev::Result<()> {
        io.input_ready();
        Ok(())
    }
    fn deregister(&mut self, _registry: &mio::Registry) {}
    fn read(&mut self, _io: &mut Io<'_>, buf: &mut [u8], fds: &mut Vec<OwnedFd>) -> Input {
        match self.0.take() {
            Some(fd) => {
                fds.push(fd);
                buf[0] = b'!';
                Input::Data(1)
            }
            None => Input::WouldBlock,
        }
    }
    fn write(&mut self, buf: &[u8], _fds: &[BorrowedFd<'_>]) -> std::io::Result<usize> {
        Ok(buf.len())
    }
    fn kind(&self) -> &'static str {
        "fdgiver"
    }
}

#[test]
fn fds_reach_the_frontend_blocking_and_cloexec_whatever_the_backend_did() {
    let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
    let a = OwnedFd::from(a);
    chardev::fd::set_nonblocking(&a, true).unwrap();
    chardev::fd::set_cloexec(&a, false).unwrap();
    let lp = EventLoop::spawn().unwrap();
    let reg = Registry::new(lp.handle());
    reg.add_chardev("g", Box::new(FdGiver(Some(a)))).unwrap();
    let h = reg.connect("g").unwrap();
    let rec = record(&h, 16);
    match rec.next() {
        Seen::Data(d, fds) => {
            assert_eq!(d, b"!");
            assert_eq!(fds.len(), 1);
            assert!(
                !chardev::fd::is_nonblocking(&fds[0]).unwrap(),
                "fd reached the frontend non-blocking"
            );
            assert!(chardev::fd::is_cloexec(&fds[0]).unwrap());
        }
        other => panic!("{other:?}"),
    }
}

// Found by fuzz/mux_escape: an EventLoop dropped with requests still queued leaked the
// chardevs they named (request -> cell -> loop handle -> queue -> request).
/// A backend that says when it is dropped.
struct DropFlag(std::sync::Arc<std::sync::atomic::AtomicBool>);

impl Drop for DropFlag {
    fn drop(&mut self) {
        self.0.store(true, std::sync::atomic::Ordering::Release);
    }
}

impl chardev::Chardev for DropFlag {
    fn register(&mut self, _io: &mut chardev::Io<'_>) -> chardev::Result<()> {
        Ok(())
    }
    fn deregister(&mut self, _registry: &mio::Registry) {}
    fn write(
        &mut self,
        buf: &[u8],
        _fds: &[std::os::fd::BorrowedFd<'_>],
    ) -> std::io::Result<usize> {
        Ok(buf.len())
    }
    fn kind(&self) -> &'static str {
        "drop-flag"
    }
}

/// fuzz/regressions/mux_escape/leak-*: an `EventLoop` stepped with `poll_once` and dropped
/// while requests are still queued never frees the chardevs those requests name (a queued
/// request holds the `Cell`, the cell holds a `LoopHandle`, the handle holds the queue), so
/// the backend and its fds leak.
#[test]
fn dropping_a_loop_with_queued_requests_frees_their_chardevs() {
    let dropped = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let lp = chardev::EventLoop::new().unwrap();
    let registry = chardev::Registry::new(&lp.handle());
    registry.add_chardev("c0", Box::new(DropFlag(dropped.clone()))).unwrap();
    drop(registry);
    drop(lp); // the `place` request for c0 was never run
    assert!(dropped.load(std::sync::atomic::Ordering::Acquire), "the backend was leaked");
}

/// A backend fed by a thread of its own: it has no fd to poll, so the thread tells the loop
/// with the backend's [`chardev::Waker`].
struct Fed {
    inbox: Arc<std::sync::Mutex<Vec<u8>>>,
    waker: Arc<std::sync::Mutex<Option<chardev::Waker>>>,
    woken: Arc<AtomicUsize>,
}

impl Chardev for Fed {
    fn register(&mut self, io: &mut Io<'_>) -> chardev::Result<()> {
        *self.waker.lock().unwrap() = Some(io.waker());
        io.event(Event::Opened);
        Ok(())
    }
    fn deregister(&mut self, _: &mio::Registry) {}
    fn woken(&mut self, io: &mut Io<'_>) {
        self.woken.fetch_add(1, Ordering::SeqCst);
        io.input_ready();
    }
    fn read(&mut self, _: &mut Io<'_>, buf: &mut [u8], _: &mut Vec<OwnedFd>) -> Input {
        let mut inbox = self.inbox.lock().unwrap();
        if inbox.is_empty() {
            return Input::WouldBlock;
        }
        let n = buf.len().min(inbox.len());
        buf[..n].copy_from_slice(&inbox[..n]);
        inbox.drain(..n);
        Input::Data(n)
    }
    fn write(&mut self, buf: &[u8], _: &[BorrowedFd<'_>]) -> std::io::Result<usize> {
        Ok(buf.len())
    }
    fn kind(&self) -> &'static str {
        "fed"
    }
}

#[test]
fn a_backend_woken_from_another_thread_delivers_its_input_and_a_stale_wake_is_dropped() {
    let lp = EventLoop::spawn().unwrap();
    let reg = Registry::new(lp.handle());
    let (inbox, waker, woken) = Default::default();
    let fed = |inbox: &Arc<_>, waker: &Arc<_>, woken: &Arc<_>| Fed {
        inbox: Arc::clone(inbox),
        waker: Arc::clone(waker),
        woken: Arc::clone(woken),
    };
    reg.add_chardev("fed", Box::new(fed(&inbox, &waker, &woken))).unwrap();
    let h = reg.connect("fed").unwrap();
    let rec = record(&h, 64);
    rec.expect_event(Event::Opened);
    let waker_now = || waker.lock().unwrap().clone().expect("registered");
    let first = waker_now();
    std::thread::scope(|s| {
        s.spawn(|| {
            inbox.lock().unwrap().extend_from_slice(b"from a thread");
            first.wake();
            first.wake(); // merged with the first while it is queued
        });
    });
    assert_eq!(rec.data(13), b"from a thread");
    assert!(woken.load(Ordering::SeqCst) >= 1);

    // The chardev removed and a new one added under the same id: the old backend's waker
    // must not reach the new backend.
    drop(rec);
    drop(h);
    reg.remove("fed").unwrap();
    let (inbox2, waker2, woken2): (Arc<std::sync::Mutex<Vec<u8>>>, _, Arc<AtomicUsize>) =
        Default::default();
    reg.add_chardev("fed", Box::new(fed(&inbox2, &waker2, &woken2))).unwrap();
    settle(lp.handle());
    let before = woken2.load(Ordering::SeqCst);
    first.wake();
    settle(lp.handle());
    assert_eq!(woken2.load(Ordering::SeqCst), before, "a stale wake reached the new backend");
    waker2.lock().unwrap().clone().expect("registered").wake();
    settle(lp.handle());
    assert_eq!(woken2.load(Ordering::SeqCst), before + 1);
}

//! A chardev under rust-vmm's `event-manager`, as firecracker runs its devices: chardev's
//! [`EventLoop`] is a `MutEventSubscriber` whose one fd is the loop's epoll fd, and each
//! event steps it with `poll_once(Some(Duration::ZERO))`.
//!
//! ```text
//! cargo run -p chardev --example event_manager
//! ```
//!
//! It makes two fifos, puts a `pipe` chardev on them whose frontend answers each line in
//! upper case, types a line into one fifo, and reads the answer from the other with a second
//! subscriber of the same event manager; then it prints the answer.

use std::error::Error;
use std::fs::{File, OpenOptions};
use std::io::{ErrorKind, Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chardev::{Event, EventLoop, Frontend, OutputQueue, Registry};
use event_manager::{EventManager, EventOps, EventSet, Events, MutEventSubscriber, SubscriberOps};
use nix::sys::stat::Mode;

/// The device: answers what it gets in upper case. It answers from its callback, on the
/// loop's thread, so it queues the answer (`OutputQueue`) rather than wait for the peer there.
struct Shout(OutputQueue);

impl Frontend for Shout {
    fn can_receive(&mut self) -> usize {
        self.0.can_receive(4096)
    }
    fn receive(&mut self, data: &[u8], _fds: Vec<OwnedFd>) {
        if let Err(e) = self.0.write(&data.to_ascii_uppercase()) {
            eprintln!("event_manager: cannot answer: {e}");
        }
    }
    fn event(&mut self, _event: Event) {}
    fn writable(&mut self) {
        if let Err(e) = self.0.flush() {
            eprintln!("event_manager: cannot answer: {e}");
        }
    }
}

/// chardev's loop as one subscriber: its epoll fd in, a step out.
struct Chardevs(EventLoop);

impl MutEventSubscriber for Chardevs {
    fn init(&mut self, ops: &mut EventOps<'_>) {
        if let Err(e) = ops.add(Events::new(&self.0.as_fd(), EventSet::IN)) {
            eprintln!("event_manager: cannot watch the chardev loop: {e}");
        }
    }
    fn process(&mut self, _events: Events, _ops: &mut EventOps<'_>) {
        if let Err(e) = self.0.poll_once(Some(Duration::ZERO)) {
            eprintln!("event_manager: chardev loop: {e}");
        }
    }
}

/// The other end of the console: collects what the chardev writes.
struct Screen {
    fifo: File,
    seen: Vec<u8>,
}

impl MutEventSubscriber for Screen {
    fn init(&mut self, ops: &mut EventOps<'_>) {
        if let Err(e) = ops.add(Events::new(&self.fifo.as_raw_fd(), EventSet::IN)) {
            eprintln!("event_manager: cannot watch the screen: {e}");
        }
    }
    fn process(&mut self, _events: Events, _ops: &mut EventOps<'_>) {
        let mut buf = [0; 256];
        match self.fifo.read(&mut buf) {
            Ok(n) => self.seen.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::WouldBlock => {}
            Err(e) => eprintln!("event_manager: screen: {e}"),
        }
    }
}

fn main() -> Result<(), Box<dyn Error>> {
    let dir = tempfile::tempdir()?;
    let base = dir.path().join("console");
    let (keys, screen) = (dir.path().join("console.in"), dir.path().join("console.out"));
    for fifo in [&keys, &screen] {
        nix::unistd::mkfifo(fifo, Mode::S_IRUSR | Mode::S_IWUSR)?;
    }

    let chardevs = EventLoop::new()?;
    let registry = Registry::new(&chardevs.handle());
    registry.add_str(&format!("pipe,id=console,path={}", base.display()))?;
    let handle = registry.connect("console")?;
    handle.set_frontend(Shout(OutputQueue::new(handle.clone())));

    // Subscribers shared with the manager, as firecracker holds its devices.
    let mut manager: EventManager<Arc<Mutex<dyn MutEventSubscriber + Send>>> =
        EventManager::new().map_err(|e| format!("event manager: {e}"))?;
    let chardevs = Arc::new(Mutex::new(Chardevs(chardevs)));
    manager.add_subscriber(chardevs.clone());
    let screen = Arc::new(Mutex::new(Screen { fifo: open(&screen, false)?, seen: Vec::new() }));
    manager.add_subscriber(screen.clone());

    open(&keys, true)?.write_all(b"hello from event-manager\n")?;

    let deadline = Instant::now() + Duration::from_secs(10);
    while !screen.lock().map_err(|_| "screen poisoned")?.seen.ends_with(b"\n") {
        if Instant::now() >= deadline {
            return Err("no answer in 10 s".into());
        }
        // Wait no longer than the chardevs' own next deadline (a timer), then step them if
        // it passed with no event.
        let next = chardevs.lock().map_err(|_| "loop poisoned")?.0.next_timeout();
        let wait = next.map_or(100, |t| t.as_millis().min(100) as i32);
        let n = manager.run_with_timeout(wait).map_err(|e| format!("event manager: {e}"))?;
        if n == 0 && next.is_some() {
            chardevs.lock().map_err(|_| "loop poisoned")?.0.poll_once(Some(Duration::ZERO))?;
        }
    }
    let answer = screen.lock().map_err(|_| "screen poisoned")?.seen.clone();
    print!("event_manager: the chardev answered: {}", String::from_utf8_lossy(&answer));
    Ok(())
}

/// Opens one end of a fifo without waiting for the other.
fn open(path: &Path, write: bool) -> std::io::Result<File> {
    OpenOptions::new().read(!write).write(write).custom_flags(nix::libc::O_NONBLOCK).open(path)
}

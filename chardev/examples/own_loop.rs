//! A chardev stepped from your own epoll loop: your program owns the thread and the epoll
//! set, and chardev's [`EventLoop`] is one fd in it (as cloud-hypervisor and crosvm run their
//! device loops).
//!
//! ```text
//! cargo run -p chardev --example own_loop
//! ```
//!
//! It makes two fifos, puts a `pipe` chardev on them whose frontend answers each line in
//! upper case, types a line into one fifo and reads the answer from the other, all from one
//! epoll loop on the main thread, and prints the answer.

use std::error::Error;
use std::fs::{File, OpenOptions};
use std::io::{ErrorKind, Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use chardev::{Event, EventLoop, Frontend, OutputQueue, Registry};
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};
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
            eprintln!("own_loop: cannot answer: {e}");
        }
    }
    fn event(&mut self, _event: Event) {}
    fn writable(&mut self) {
        if let Err(e) = self.0.flush() {
            eprintln!("own_loop: cannot answer: {e}");
        }
    }
}

/// Epoll tokens of this program's own loop.
const CHARDEVS: u64 = 0;
const SCREEN: u64 = 1;

fn main() -> Result<(), Box<dyn Error>> {
    let dir = tempfile::tempdir()?;
    let base = dir.path().join("console");
    let (keys, screen) = (dir.path().join("console.in"), dir.path().join("console.out"));
    for fifo in [&keys, &screen] {
        nix::unistd::mkfifo(fifo, Mode::S_IRUSR | Mode::S_IWUSR)?;
    }

    // The chardevs: a loop that nobody runs but us, a registry, one pipe chardev.
    let mut chardevs = EventLoop::new()?;
    let registry = Registry::new(&chardevs.handle());
    registry.add_str(&format!("pipe,id=console,path={}", base.display()))?;
    let handle = registry.connect("console")?;
    handle.set_frontend(Shout(OutputQueue::new(handle.clone())));

    // Our own loop: the chardevs' fd and the fifo we read the answers from.
    let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)?;
    epoll.add(chardevs.as_fd(), EpollEvent::new(EpollFlags::EPOLLIN, CHARDEVS))?;
    let mut screen = open(&screen, false)?;
    epoll.add(screen.as_fd(), EpollEvent::new(EpollFlags::EPOLLIN, SCREEN))?;

    let mut keyboard = open(&keys, true)?;
    keyboard.write_all(b"hello from my own loop\n")?;

    let deadline = Instant::now() + Duration::from_secs(10);
    let mut answer = Vec::new();
    while !answer.ends_with(b"\n") {
        let left = deadline.checked_duration_since(Instant::now()).ok_or("no answer in 10 s")?;
        // Wait for news, but no longer than the chardevs' own next deadline (a timer).
        let wait = chardevs.next_timeout().map_or(left, |t| t.min(left));
        let mut events = [EpollEvent::empty(); 8];
        let n = epoll.wait(&mut events, EpollTimeout::try_from(wait)?)?;
        if n == 0 {
            chardevs.poll_once(Some(Duration::ZERO))?;
        }
        for event in &events[..n] {
            match event.data() {
                CHARDEVS => chardevs.poll_once(Some(Duration::ZERO))?,
                _ => read_some(&mut screen, &mut answer)?,
            }
        }
    }
    print!("own_loop: the chardev answered: {}", String::from_utf8_lossy(&answer));
    Ok(())
}

/// Opens one end of a fifo without waiting for the other.
fn open(path: &Path, write: bool) -> std::io::Result<File> {
    OpenOptions::new().read(!write).write(write).custom_flags(nix::libc::O_NONBLOCK).open(path)
}

fn read_some(file: &mut File, into: &mut Vec<u8>) -> std::io::Result<()> {
    let mut buf = [0; 256];
    match file.read(&mut buf) {
        Ok(n) => into.extend_from_slice(&buf[..n]),
        Err(e) if e.kind() == ErrorKind::WouldBlock => {}
        Err(e) => return Err(e),
    }
    Ok(())
}

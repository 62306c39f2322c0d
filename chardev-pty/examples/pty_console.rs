//! A console on a pseudo-terminal: prints the pty's path, greets whoever opens it, and
//! answers each line typed there, through an `OutputQueue` so that a terminal that stops
//! reading (Ctrl-S, say) holds up nothing else on the loop.
//!
//! ```sh
//! cargo run -p chardev-pty --example pty_console
//! picocom /dev/pts/N          # the path it printed; or screen, minicom, socat -,raw FILE
//! ```
//!
//! Output written before a terminal opens the pty waits for it (up to the pty's backlog). The
//! program ends when the last terminal closes the pty.

use std::os::fd::OwnedFd;

use chardev::{Event, EventLoop, Frontend, LoopHandle, OutputQueue, Registry};

struct Console {
    line: Vec<u8>,
    out: OutputQueue,
    lp: LoopHandle,
}

impl Console {
    fn say(&mut self, text: &str) {
        if let Err(e) = self.out.write(text.as_bytes()) {
            log::warn!("{e}");
        }
    }
}

impl Frontend for Console {
    fn can_receive(&mut self) -> usize {
        self.out.can_receive(4096)
    }

    fn receive(&mut self, data: &[u8], _fds: Vec<OwnedFd>) {
        for &b in data {
            match b {
                b'\r' | b'\n' => {
                    let line = String::from_utf8_lossy(&self.line).into_owned();
                    self.line.clear();
                    self.say(&format!("\r\nconsole heard: {line}\r\n> "));
                }
                0x7f | 0x08 if self.line.pop().is_some() => self.say("\x08 \x08"),
                b if b >= 0x20 => {
                    self.line.push(b);
                    self.say(&(b as char).to_string());
                }
                _ => {}
            }
        }
    }

    fn event(&mut self, event: Event) {
        match event {
            Event::Opened => self.say("pty console: type a line\r\n> "),
            Event::Closed => {
                self.out.clear();
                self.lp.stop();
            }
            _ => {}
        }
    }

    fn writable(&mut self) {
        let _ = self.out.flush();
    }
}

fn main() -> Result<(), chardev::Error> {
    let mut lp = EventLoop::new()?;
    let registry = Registry::new(&lp.handle());
    chardev_pty::register(&registry);
    let added = registry.add_str("pty,id=console")?;
    let handle = registry.connect("console")?;
    handle.set_frontend(Console {
        line: Vec::new(),
        out: OutputQueue::new(handle.clone()),
        lp: lp.handle(),
    });
    match added.pty {
        Some(path) => println!("console on {}", path.display()),
        None => println!("console on a pty whose path is unknown"),
    }
    lp.run()
}

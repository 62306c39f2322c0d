//! A UART-like device on a unix socket server chardev, answering from its callbacks through
//! an `OutputQueue`, so that a client that stops reading stalls nobody else on the loop.
//!
//! ```sh
//! cargo run -p chardev-socket --example uart_socket -- /tmp/uart.sock
//! socat -,raw,echo=0 UNIX-CONNECT:/tmp/uart.sock     # in another terminal; Ctrl-C ends both
//! ```
//!
//! The device echoes what it gets, as a terminal's line discipline would, and answers each
//! line. It takes input a FIFO at a time (16 bytes, a 16550's), and none while more than
//! 64 KiB of its answers wait for the client. The program ends when its first client leaves.

use std::collections::VecDeque;
use std::os::fd::OwnedFd;

use chardev::{Event, EventLoop, Frontend, LoopHandle, OutputQueue, Registry};

/// The receive FIFO's size, a 16550's.
const FIFO: usize = 16;

struct Uart {
    fifo: VecDeque<u8>,
    line: Vec<u8>,
    out: OutputQueue,
    lp: LoopHandle,
}

impl Uart {
    /// The "guest": drains the FIFO, echoes, answers complete lines.
    fn run_guest(&mut self) {
        while let Some(b) = self.fifo.pop_front() {
            match b {
                b'\r' | b'\n' => {
                    let line = String::from_utf8_lossy(&self.line).into_owned();
                    self.line.clear();
                    self.say(format!("\r\nyou typed {} bytes: {line}\r\nuart> ", line.len()));
                }
                0x7f | 0x08 if self.line.pop().is_some() => self.say("\x08 \x08".into()),
                b if b >= 0x20 => {
                    self.line.push(b);
                    self.say((b as char).to_string());
                }
                _ => {}
            }
        }
    }

    fn say(&mut self, text: String) {
        // Past the queue's 1 MiB bound the client has read nothing for a long while: drop.
        if let Err(e) = self.out.write(text.as_bytes()) {
            log::warn!("{e}");
        }
    }
}

impl Frontend for Uart {
    fn can_receive(&mut self) -> usize {
        self.out.can_receive(FIFO - self.fifo.len())
    }

    fn receive(&mut self, data: &[u8], _fds: Vec<OwnedFd>) {
        self.fifo.extend(data);
        self.run_guest();
    }

    fn event(&mut self, event: Event) {
        match event {
            Event::Opened => self.say("uart ready\r\nuart> ".into()),
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
    let path = std::env::args().nth(1).unwrap_or_else(|| "/tmp/uart.sock".into());
    let mut lp = EventLoop::new()?;
    let registry = Registry::new(&lp.handle());
    chardev_socket::register(&registry);
    registry.add_str(&format!("socket,id=uart0,path={path},server=on,wait=off"))?;
    let handle = registry.connect("uart0")?;
    handle.set_frontend(Uart {
        fifo: VecDeque::with_capacity(FIFO),
        line: Vec::new(),
        out: OutputQueue::new(handle.clone()),
        lp: lp.handle(),
    });
    println!("uart on {path}: socat -,raw,echo=0 UNIX-CONNECT:{path}");
    lp.run()
}

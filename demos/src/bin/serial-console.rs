//! serial-console (first cut): a guest console and a monitor muxed on one chardev, as
//! `qemu-system-x86_64 -nographic` puts them on the terminal.
//!
//! Usage: `serial-console [CHARDEV-SPEC]`, default `stdio,id=serial0,mux=on,signal=off`;
//! any `-chardev` backend works, e.g. `socket,path=/tmp/console.sock,server=on,mux=on`.
//! `Ctrl-A c` switches between the guest and the monitor, `Ctrl-A h` lists the escapes,
//! `Ctrl-A x` quits. The "guest" echoes each line back; the monitor knows `info chardev`,
//! `help` and `quit`. The real machine (a 16550 UART and a shell) replaces the guest later.

use std::os::fd::OwnedFd;
use std::process::ExitCode;

use chardev::{Event, EventLoop, Frontend, FrontendHandle, Registry};

/// Collects a line from raw terminal input, echoing as a terminal in cooked mode would.
struct LineEditor {
    handle: FrontendHandle,
    line: Vec<u8>,
}

impl LineEditor {
    /// Feeds input bytes; returns the lines completed by them.
    fn feed(&mut self, data: &[u8]) -> Vec<String> {
        let mut done = Vec::new();
        for &b in data {
            match b {
                b'\r' | b'\n' => {
                    self.say("\r\n");
                    done.push(
                        String::from_utf8_lossy(&std::mem::take(&mut self.line)).into_owned(),
                    );
                }
                0x7f | 0x08 if self.line.pop().is_some() => self.say("\x08 \x08"),
                b if b >= 0x20 => {
                    self.line.push(b);
                    let _ = self.handle.write_all(&[b]);
                }
                _ => {}
            }
        }
        done
    }

    fn say(&self, text: &str) {
        if let Err(e) = self.handle.write_all(text.as_bytes()) {
            log::warn!("console output lost: {e}");
        }
    }
}

/// The stand-in guest: echoes each line.
struct Guest(LineEditor, bool);

impl Frontend for Guest {
    fn can_receive(&mut self) -> usize {
        256
    }
    fn receive(&mut self, data: &[u8], _fds: Vec<OwnedFd>) {
        for line in self.0.feed(data) {
            self.0.say(&format!("guest: you said '{line}'\r\nguest> "));
        }
    }
    fn event(&mut self, event: Event) {
        match event {
            Event::Opened => {
                self.1 = true;
                self.0.say("guest> ");
            }
            Event::MuxIn if self.1 => self.0.say("guest> "),
            Event::Closed => self.1 = false,
            _ => {}
        }
    }
}

/// A minimal human monitor.
struct Monitor {
    editor: LineEditor,
    registry: Registry,
    quit: std::sync::mpsc::Sender<()>,
    /// Seen `Opened`: the banner is out, a `MuxIn` shows the prompt.
    open: bool,
}

impl Frontend for Monitor {
    fn can_receive(&mut self) -> usize {
        256
    }
    fn receive(&mut self, data: &[u8], _fds: Vec<OwnedFd>) {
        for line in self.editor.feed(data) {
            match line.trim() {
                "" => {}
                "info chardev" => {
                    for c in self.registry.query() {
                        self.editor.say(&format!("{}: filename={}\r\n", c.label, c.filename));
                    }
                }
                "quit" | "q" => {
                    let _ = self.quit.send(());
                    return;
                }
                "help" | "?" => self
                    .editor
                    .say("info chardev -- show the character devices\r\nquit -- quit\r\n"),
                other => self.editor.say(&format!("unknown command: '{other}'\r\n")),
            }
            self.editor.say("(qemu) ");
        }
    }
    fn event(&mut self, event: Event) {
        match event {
            Event::Opened => {
                self.open = true;
                self.editor.say(&format!(
                    "chardev demo {} monitor - type 'help' for more information\r\n(qemu) ",
                    env!("CARGO_PKG_VERSION")
                ));
            }
            Event::MuxIn if self.open => self.editor.say("(qemu) "),
            Event::Closed => self.open = false,
            _ => {}
        }
    }
}

fn main() -> ExitCode {
    env_logger::init();
    let spec =
        std::env::args().nth(1).unwrap_or_else(|| "stdio,id=serial0,mux=on,signal=off".into());
    match run(&spec) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("serial-console: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(spec: &str) -> chardev::Result<()> {
    let spec = chardev::ChardevSpec::parse_with_id(spec, "serial0")?;
    let (quit_tx, quit_rx) = std::sync::mpsc::channel();
    let mut event_loop = EventLoop::new()?;
    let ctrl_a_x = quit_tx.clone();
    event_loop.set_exit_handler(move || {
        let _ = ctrl_a_x.send(());
    });
    let handle = event_loop.handle();
    let registry = Registry::new(&handle);
    chardev_socket::register(&registry);
    registry.add(&spec)?;

    // Only a mux has room for the monitor beside the guest.
    if spec.mux {
        let monitor = registry.connect(&spec.id)?;
        monitor.set_frontend(Monitor {
            editor: LineEditor { handle: monitor.clone(), line: Vec::new() },
            registry: registry.clone(),
            quit: quit_tx,
            open: false,
        });
    }
    let guest = registry.connect(&spec.id)?;
    guest.set_frontend(Guest(LineEditor { handle: guest.clone(), line: Vec::new() }, false));

    let stopper = handle.clone();
    std::thread::spawn(move || {
        let _ = quit_rx.recv();
        stopper.stop();
    });
    event_loop.run()?;
    drop(event_loop);
    // Dropping the chardevs restores the terminal.
    for id in registry.ids() {
        let _ = registry.remove_forced(&id);
    }
    Ok(())
}

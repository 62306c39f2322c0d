//! Set-up shared by the socket tests: a loop with the socket backends, and what they ask of
//! it most.

use std::io::{BufRead, BufReader, Read};
use std::sync::mpsc::{channel, Receiver};

use chardev::{LoopThread, Registry};

/// A loop on its own thread, a registry on it with the socket backends, and a temp dir.
pub fn setup() -> (LoopThread, Registry, tempfile::TempDir) {
    let lp = chardev::EventLoop::spawn().expect("start the loop");
    let reg = Registry::new(lp.handle());
    chardev_socket::register(&reg);
    (lp, reg, tempfile::tempdir().expect("tempdir"))
}

/// The filename `query-chardev` shows for chardev `id`.
pub fn filename(reg: &Registry, id: &str) -> String {
    reg.query()
        .into_iter()
        .find(|c| c.label == id)
        .unwrap_or_else(|| panic!("no chardev {id}"))
        .filename
}

/// A peer's output, a line at a time, read on a thread of its own (wait on the receiver
/// with a deadline).
pub fn lines_of(out: impl Read + Send + 'static) -> Receiver<String> {
    let (tx, lines) = channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    lines
}

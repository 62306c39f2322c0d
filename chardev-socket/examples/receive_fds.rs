//! Receiving fds from a peer (SCM_RIGHTS on a unix socket) and the fd contract: whatever
//! mode the sender left an fd in, it reaches the frontend blocking and close-on-exec, as an
//! `OwnedFd` that closes when dropped. Code that wants non-blocking I/O on it says so with
//! `chardev::fd::set_nonblocking`.
//!
//! ```sh
//! cargo run -p chardev-socket --example receive_fds -- /tmp/fds.sock
//! python3 - /tmp/fds.sock <<'PY'                     # in another terminal
//! import os, socket, sys
//! r, w = os.pipe(); os.set_blocking(w, False)       # the sender leaves it non-blocking
//! s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1])
//! socket.send_fds(s, [b"take this"], [w]); os.close(w)
//! print(s.recv(4096).decode(), os.read(r, 4096).decode())
//! PY
//! ```
//!
//! A blocking fd is for a thread of its own, never for the loop thread: the frontend hands
//! each fd to a thread, which writes a greeting into it (waiting for room if need be) and then
//! reports on the socket with `write_all`, which may wait on any thread but the loop's. The
//! program ends when its first client leaves.

use std::io::Write;
use std::os::fd::OwnedFd;

use chardev::{fd, Event, EventLoop, Frontend, FrontendHandle, LoopHandle, Registry};

struct FdTaker {
    handle: FrontendHandle,
    lp: LoopHandle,
    taken: usize,
}

impl Frontend for FdTaker {
    fn can_receive(&mut self) -> usize {
        4096
    }

    fn receive(&mut self, data: &[u8], fds: Vec<OwnedFd>) {
        println!("received {} bytes and {} fd(s)", data.len(), fds.len());
        for received in fds {
            let n = self.taken;
            self.taken += 1;
            // The contract: blocking and close-on-exec, whatever the sender set.
            let blocking = !fd::is_nonblocking(&received).unwrap_or(true);
            let cloexec = fd::is_cloexec(&received).unwrap_or(false);
            let handle = self.handle.clone();
            let worker = std::thread::Builder::new().name(format!("fd {n}")).spawn(move || {
                let mut file = std::fs::File::from(received);
                let wrote = file.write_all(b"hello through the fd you passed\n");
                let report = format!(
                    "fd {n}: {}, {}; greeting {}\n",
                    if blocking { "blocking" } else { "NON-BLOCKING" },
                    if cloexec { "close-on-exec" } else { "NOT close-on-exec" },
                    if wrote.is_ok() { "written" } else { "not written" },
                );
                print!("{report}");
                // Off the loop thread, write_all may wait for the client to read.
                let _ = handle.write_all(report.as_bytes());
            });
            if let Err(e) = worker {
                eprintln!("cannot start a thread for fd {n}: {e}");
            }
        }
    }

    fn event(&mut self, event: Event) {
        println!("{event:?}");
        if event == Event::Closed {
            self.lp.stop();
        }
    }
}

fn main() -> Result<(), chardev::Error> {
    let path = std::env::args().nth(1).unwrap_or_else(|| "/tmp/fds.sock".into());
    let mut lp = EventLoop::new()?;
    let registry = Registry::new(&lp.handle());
    chardev_socket::register(&registry);
    registry.add_str(&format!("socket,id=fds0,path={path},server=on,wait=off"))?;
    let handle = registry.connect("fds0")?;
    handle.set_frontend(FdTaker { handle: handle.clone(), lp: lp.handle(), taken: 0 });
    println!("waiting for fds on {path}");
    lp.run()
}

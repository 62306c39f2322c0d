//! A QMP server on a unix socket in this process, and a client that speaks to it the way
//! libvirt does (commands with `\r\n`, fds on the same sendmsg).

use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use chardev::{EventLoop, LoopThread, Registry};
use chardev_qmp::Qmp;
use serde_json::{json, Value};

/// Every wait in these tests ends by then.
pub const DEADLINE: Duration = Duration::from_secs(10);

/// A loop, a registry and a QMP server with monitors on unix sockets.
pub struct Server {
    pub registry: Registry,
    pub qmp: Qmp,
    pub dir: tempfile::TempDir,
    // Dropped last: stops the loop.
    _lp: LoopThread,
}

impl Server {
    /// A server with one QMP monitor on `qmp0` (`DIR/qmp0.sock`).
    pub fn start() -> Server {
        Server::start_with(Qmp::new)
    }

    /// A server whose monitors have the downstream commands under `com.example`.
    pub fn with_vendor_commands() -> Server {
        Server::start_with(|registry| Qmp::builder(registry).vendor("com.example").build())
    }

    fn start_with(make: impl FnOnce(&Registry) -> Qmp) -> Server {
        let lp = EventLoop::spawn().unwrap();
        let registry = Registry::new(lp.handle());
        chardev_socket::register(&registry);
        let qmp = make(&registry);
        let server = Server { registry, qmp, dir: tempfile::tempdir().unwrap(), _lp: lp };
        server.monitor("qmp0");
        server
    }

    /// Adds another monitor on a socket `DIR/ID.sock`.
    pub fn monitor(&self, id: &str) {
        let path = self.path(id);
        self.registry
            .add_str(&format!("socket,id={id},path={},server=on,wait=off", path.display()))
            .unwrap();
        self.qmp.attach(id, false).unwrap();
    }

    pub fn path(&self, id: &str) -> PathBuf {
        self.dir.path().join(format!("{id}.sock"))
    }

    /// A negotiated client of monitor `id`.
    pub fn client(&self, id: &str) -> Client {
        let mut c = Client::connect(&self.path(id));
        c.negotiate();
        c
    }
}

/// A QMP client on a unix socket.
pub struct Client {
    pub sock: UnixStream,
    reader: BufReader<UnixStream>,
    next_id: u64,
}

impl Client {
    /// Connects and reads the greeting.
    pub fn connect(path: &Path) -> Client {
        let sock = UnixStream::connect(path).unwrap();
        sock.set_read_timeout(Some(DEADLINE)).unwrap();
        let reader = BufReader::new(sock.try_clone().unwrap());
        let mut c = Client { sock, reader, next_id: 0 };
        assert!(c.line()["QMP"].is_object(), "a greeting first");
        c
    }

    pub fn negotiate(&mut self) {
        assert_eq!(self.cmd("qmp_capabilities", json!({})), json!({"return": {}}));
    }

    /// The next line the server wrote, as JSON.
    pub fn line(&mut self) -> Value {
        let mut line = String::new();
        self.reader.read_line(&mut line).expect("a line from the monitor within the deadline");
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line:?}"))
    }

    /// Sends a command with `fds` on the same message, as libvirt does.
    pub fn send(&mut self, execute: &str, args: Value, fds: &[BorrowedFd<'_>]) -> String {
        self.next_id += 1;
        let id = format!("libvirt-{}", self.next_id);
        let text = format!("{}\r\n", json!({"execute": execute, "arguments": args, "id": id}));
        let n = chardev::fd::send_with_fds(self.sock.as_fd(), text.as_bytes(), fds).unwrap();
        self.sock.write_all(&text.as_bytes()[n..]).unwrap();
        id
    }

    /// The reply to the command with `id` (events are skipped).
    pub fn reply(&mut self, id: &str) -> Value {
        loop {
            let mut v = self.line();
            if v.get("event").is_some() {
                continue;
            }
            assert_eq!(v["id"], id, "replies come in order: {v}");
            v.as_object_mut().unwrap().remove("id");
            return v;
        }
    }

    pub fn cmd(&mut self, execute: &str, args: Value) -> Value {
        self.cmd_fds(execute, args, &[])
    }

    pub fn cmd_fds(&mut self, execute: &str, args: Value, fds: &[BorrowedFd<'_>]) -> Value {
        let id = self.send(execute, args, fds);
        self.reply(&id)
    }

    /// The error text of a reply that must be an error.
    pub fn error(&mut self, execute: &str, args: Value, fds: &[BorrowedFd<'_>]) -> String {
        let reply = self.cmd_fds(execute, args, fds);
        reply["error"]["desc"].as_str().unwrap_or_else(|| panic!("an error: {reply}")).into()
    }
}

/// A pipe whose read end tells when every copy of the write end is closed.
pub struct Pipe {
    pub read: std::fs::File,
    pub write: OwnedFd,
}

impl Pipe {
    pub fn new() -> Pipe {
        let (r, w) = nix::unistd::pipe().unwrap();
        Pipe { read: r.into(), write: w }
    }

    /// Closes our write end, then waits until the read end sees EOF: every other copy (the
    /// server's) is closed too. Fails after the deadline.
    pub fn assert_all_writers_close(self) {
        drop(self.write);
        let fd = self.read.as_fd().try_clone_to_owned().unwrap();
        chardev::fd::set_nonblocking(&fd, true).unwrap();
        let mut read = std::fs::File::from(fd);
        let end = Instant::now() + DEADLINE;
        let mut buf = [0u8; 64];
        loop {
            match read.read(&mut buf) {
                Ok(0) => return,
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    assert!(Instant::now() < end, "a copy of the pipe's write end stays open");
                    chardev::fd::wait_readable(read.as_fd(), Some(Duration::from_millis(100)))
                        .unwrap();
                }
                Err(e) => panic!("{e}"),
            }
        }
    }
}

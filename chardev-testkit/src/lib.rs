//! What the chardev crates' integration tests share: a frontend that records what it gets,
//! waits bounded by one deadline (a hung test fails, it never stalls the suite), fifos, a
//! scripted backend, child processes that are always reaped, the Python that runs the real
//! peers, and checks that fail a test at once, naming what to install, when a peer it needs
//! (a Python module, a program) is missing.
//!
//! A dev-dependency of every crate with integration tests (`publish = false`: it is not part
//! of the library). Helpers only one crate's tests use stay in that crate's tests.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::os::fd::OwnedFd;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use chardev::{Event, Frontend, FrontendHandle};

pub mod certs; // certificates for the TLS tests, made with certtool in QEMU's layout
pub mod guest; // a real Linux guest under QEMU (TCG) and viewers of its serial console

/// How long any single wait in a test may take before the test fails.
pub const DEADLINE: Duration = Duration::from_secs(10);

/// What a recording frontend saw, in order.
#[derive(Debug)]
pub enum Seen {
    /// Bytes from one `receive` call, with the fds that came with them.
    Data(Vec<u8>, Vec<OwnedFd>),
    /// An event (`Opened`, `Closed`, ...).
    Event(Event),
}

/// A frontend that reports everything it gets on a channel and takes at most `room` bytes
/// (see [`record`]); it fails the test if the backend hands it more than it asked for.
pub struct Recorder {
    /// What `can_receive` answers; the test changes it to apply or release back-pressure.
    pub room: Arc<AtomicUsize>,
    /// Where everything seen goes.
    pub tx: Sender<Seen>,
}

impl Frontend for Recorder {
    fn can_receive(&mut self) -> usize {
        self.room.load(Ordering::SeqCst)
    }
    fn receive(&mut self, data: &[u8], fds: Vec<OwnedFd>) {
        assert!(data.len() <= self.room.load(Ordering::SeqCst), "got more than can_receive");
        let _ = self.tx.send(Seen::Data(data.to_vec(), fds));
    }
    fn event(&mut self, event: Event) {
        let _ = self.tx.send(Seen::Event(event));
    }
}

/// The receiving end of a [`Recorder`].
pub struct Record {
    /// Everything the recorder saw, in order.
    pub rx: Receiver<Seen>,
    /// The recorder's room (shared with it): store 0 to stop input, more (then
    /// `accept_input`) to let it flow again.
    pub room: Arc<AtomicUsize>,
}

/// Installs a recorder with `room` bytes of room on `handle`.
pub fn record(handle: &FrontendHandle, room: usize) -> Record {
    let (tx, rx) = channel();
    let room = Arc::new(AtomicUsize::new(room));
    handle.set_frontend(Recorder { room: Arc::clone(&room), tx });
    Record { rx, room }
}

impl Record {
    /// The next thing seen, or a test failure after the deadline.
    pub fn next(&self) -> Seen {
        match self.rx.recv_timeout(DEADLINE) {
            Ok(s) => s,
            Err(RecvTimeoutError::Timeout) => panic!("nothing seen within {DEADLINE:?}"),
            Err(RecvTimeoutError::Disconnected) => panic!("frontend dropped"),
        }
    }

    /// Waits for `event`, failing on data or another event first.
    pub fn expect_event(&self, event: Event) {
        match self.next() {
            Seen::Event(e) => assert_eq!(e, event),
            Seen::Data(d, _) => {
                panic!("expected {event:?}, got data {:?}", String::from_utf8_lossy(&d))
            }
        }
    }

    /// Collects data until `n` bytes arrived; fails on an event first.
    pub fn data(&self, n: usize) -> Vec<u8> {
        let mut out = Vec::new();
        while out.len() < n {
            match self.next() {
                Seen::Data(d, _) => out.extend_from_slice(&d),
                Seen::Event(e) => panic!("expected data, got {e:?} after {} bytes", out.len()),
            }
        }
        out
    }

    /// Asserts that nothing arrives within `wait` (used only to check absence).
    pub fn quiet(&self, wait: Duration) {
        if let Ok(s) = self.rx.recv_timeout(wait) {
            panic!("expected nothing, got {s:?}");
        }
    }
}

/// Polls `cond` until it holds, failing after the deadline.
pub fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let end = Instant::now() + DEADLINE;
    while !cond() {
        assert!(Instant::now() < end, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Counts this process's open fds: the whole process's, so only exact while no other test
/// runs; a test that compares counts holds [`alone`] throughout (or, better, counts with
/// [`fds_open_under`] the fds on paths of its own).
pub fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").map(|d| d.count()).unwrap_or(0)
}

/// The turn of one test at a time, for tests that count what the whole process holds (its fds
/// with [`open_fds`]): every test of a binary that holds such tests holds the guard for its
/// whole run, so that no other test of the binary opens or closes anything meanwhile. A
/// panicking holder does not poison it for the next one.
pub fn alone() -> MutexGuard<'static, ()> {
    static TURN: Mutex<()> = Mutex::new(());
    chardev::sync::lock(&TURN)
}

// ---- Fifos, files, loops and a scripted backend (backends.rs, mux.rs, registry.rs) ----

/// How long a test listens to assert that something does *not* happen.
pub const QUIET: Duration = Duration::from_millis(200);

/// Makes a fifo at `path`, as a user would with mkfifo(1).
pub fn mkfifo(path: &std::path::Path) {
    use nix::sys::stat::Mode;
    nix::unistd::mkfifo(path, Mode::S_IRUSR | Mode::S_IWUSR)
        .unwrap_or_else(|e| panic!("mkfifo {}: {e}", path.display()));
}

/// Opens the write end of a fifo that a chardev already holds open for reading (non-blocking
/// open: fails at once, rather than hangs, if nobody reads it).
pub fn fifo_writer(path: &std::path::Path) -> std::fs::File {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(nix::libc::O_NONBLOCK)
        .open(path)
        .unwrap_or_else(|e| panic!("open {} for writing: {e}", path.display()))
}

/// The read end of a fifo a chardev writes to, opened non-blocking so that opening never
/// waits for the writer; reads wait on poll(2) with the test deadline.
pub struct FifoReader {
    file: std::fs::File,
    /// Bytes read from the fifo and not yet returned.
    pending: Vec<u8>,
}

impl FifoReader {
    /// Opens `path` for reading.
    pub fn open(path: &std::path::Path) -> FifoReader {
        use std::os::unix::fs::OpenOptionsExt;
        let file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(nix::libc::O_NONBLOCK)
            .open(path)
            .unwrap_or_else(|e| panic!("open {} for reading: {e}", path.display()));
        FifoReader { file, pending: Vec::new() }
    }

    /// Reads what is there now, waiting up to `wait` for the first byte; false on timeout.
    fn fill(&mut self, wait: Duration) -> bool {
        use std::io::Read;
        use std::os::fd::AsFd;
        let ready = chardev::fd::wait_readable(self.file.as_fd(), Some(wait)).expect("poll fifo");
        if !ready {
            return false;
        }
        let mut buf = [0u8; 4096];
        match (&self.file).read(&mut buf) {
            Ok(0) => panic!(
                "fifo writer went away; got so far {:?}",
                String::from_utf8_lossy(&self.pending)
            ),
            Ok(n) => {
                self.pending.extend_from_slice(&buf[..n]);
                true
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => true,
            Err(e) => panic!("read fifo: {e}"),
        }
    }

    /// The next `n` bytes, failing after the deadline.
    pub fn read_exact(&mut self, n: usize) -> Vec<u8> {
        let end = Instant::now() + DEADLINE;
        while self.pending.len() < n {
            let left = end.saturating_duration_since(Instant::now());
            assert!(
                self.fill(left),
                "wanted {n} bytes within {DEADLINE:?}, got {:?}",
                String::from_utf8_lossy(&self.pending)
            );
        }
        let rest = self.pending.split_off(n);
        std::mem::replace(&mut self.pending, rest)
    }

    /// Everything up to and including the first `needle`, failing after the deadline.
    pub fn read_until(&mut self, needle: &[u8]) -> Vec<u8> {
        let end = Instant::now() + DEADLINE;
        loop {
            if let Some(at) = self.pending.windows(needle.len()).position(|w| w == needle) {
                let rest = self.pending.split_off(at + needle.len());
                return std::mem::replace(&mut self.pending, rest);
            }
            let left = end.saturating_duration_since(Instant::now());
            assert!(
                self.fill(left),
                "wanted {:?} within {DEADLINE:?}, got {:?}",
                String::from_utf8_lossy(needle),
                String::from_utf8_lossy(&self.pending)
            );
        }
    }

    /// Asserts that nothing (more) is written within [`QUIET`].
    pub fn quiet(&mut self) {
        let got = self.fill(QUIET);
        assert!(
            !got || self.pending.is_empty(),
            "expected no output, got {:?}",
            String::from_utf8_lossy(&self.pending)
        );
    }
}

/// How many of this process's fds are open on `path` or on anything below it.
///
/// Counting only the test's own paths keeps the count exact while other tests of the same
/// binary open and close fds on other threads.
pub fn fds_open_under(path: &std::path::Path) -> usize {
    // /proc shows resolved paths; a temp dir may sit behind a symlink.
    let path = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
    std::fs::read_dir("/proc/self/fd")
        .expect("list /proc/self/fd")
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter(|target| target.starts_with(&path))
        .count()
}

/// Waits until `lp`'s loop has handled every request posted before this call (installing
/// a frontend, taking focus, removing a chardev), then polled for readiness and handled what
/// it found, so input and events that were ready by then (a terminal's close, bytes a peer
/// sent) have been delivered too: a barrier, not a sleep.
///
/// One loop turn polls once, then runs up to [`chardev::event_loop::REQUEST_ROUNDS_PER_TURN`]
/// rounds of requests (requests posted while it runs them included). So round trips posted
/// one after another can all land in the turn that was already running, before it polls
/// again: a terminal closed just before the barrier would then be read only after it, and a
/// second close in the meantime merged with the first by inotify (a flake this caused: the
/// pty test of opens and closes missed its `Closed` about once in 70 runs). Two round trips
/// more than that span a poll and the rounds after it.
pub fn settle(lp: &chardev::LoopHandle) {
    for _ in 0..chardev::event_loop::REQUEST_ROUNDS_PER_TURN + 2 {
        let (tx, rx) = channel();
        lp.run_on_loop(move || {
            let _ = tx.send(());
        });
        rx.recv_timeout(DEADLINE).expect("the loop did not get to our request in time");
    }
}

/// Keeps the loop thread busy inside a request until the returned sender is dropped, so
/// that a test can look at what a call did before the loop catches up with it.
pub fn hold_loop(lp: &chardev::LoopHandle) -> Sender<()> {
    let (started_tx, started) = channel();
    let (release, released) = channel::<()>();
    lp.run_on_loop(move || {
        let _ = started_tx.send(());
        let _ = released.recv_timeout(DEADLINE);
    });
    started.recv_timeout(DEADLINE).expect("the loop did not get to our request in time");
    release
}

impl Record {
    /// The events already delivered, without waiting; fails on data.
    pub fn events_so_far(&self) -> Vec<Event> {
        self.rx
            .try_iter()
            .map(|s| match s {
                Seen::Event(e) => e,
                Seen::Data(d, _) => {
                    panic!("expected only events, got data {:?}", String::from_utf8_lossy(&d))
                }
            })
            .collect()
    }

    /// Asserts that nothing has been delivered so far (after a point where it would have been).
    pub fn nothing_yet(&self) {
        if let Ok(s) = self.rx.try_recv() {
            panic!("expected nothing, got {s:?}");
        }
    }

    /// Collects `n` bytes of data and, separately, the events delivered among them.
    pub fn data_and_events(&self, n: usize) -> (Vec<u8>, Vec<Event>) {
        let (mut data, mut events) = (Vec::new(), Vec::new());
        while data.len() < n {
            match self.next() {
                Seen::Data(d, _) => data.extend_from_slice(&d),
                Seen::Event(e) => events.push(e),
            }
        }
        (data, events)
    }
}

/// An [`chardev::EventLoop`] the test built itself (to set an exit handler, say), run on a
/// thread of the test's own; dropping it stops the loop and joins the thread.
pub struct RunningLoop {
    handle: chardev::LoopHandle,
    join: Option<std::thread::JoinHandle<chardev::Result<()>>>,
}

impl RunningLoop {
    /// Runs `lp` on a new thread.
    pub fn start(mut lp: chardev::EventLoop) -> RunningLoop {
        let handle = lp.handle();
        let join = std::thread::Builder::new()
            .name("test-loop".into())
            .spawn(move || lp.run())
            .expect("start the loop thread");
        RunningLoop { handle, join: Some(join) }
    }

    /// The running loop's handle.
    pub fn handle(&self) -> &chardev::LoopHandle {
        &self.handle
    }
}

impl Drop for RunningLoop {
    fn drop(&mut self) {
        self.handle.stop();
        if let Some(join) = self.join.take() {
            let result = join.join();
            if !std::thread::panicking() {
                result.expect("loop thread panicked").expect("loop failed");
            }
        }
    }
}

/// The test's side of a [`Gate`]: opens and closes the gate's connection.
pub struct GateSwitch {
    stream: std::os::unix::net::UnixStream,
}

impl GateSwitch {
    /// The backend raises `Opened` (a client connected).
    pub fn open(&mut self) {
        std::io::Write::write_all(&mut self.stream, b"o").expect("signal the gate");
    }

    /// The backend raises `Closed` (the client went away).
    pub fn close(&mut self) {
        std::io::Write::write_all(&mut self.stream, b"c").expect("signal the gate");
    }
}

/// A backend whose connection opens and closes when the test says so: a stand-in for a
/// socket whose client comes and goes. Output is accepted and dropped; there is no input.
pub struct Gate {
    stream: mio::net::UnixStream,
}

/// Makes `registry` build a [`Gate`] for the next `socket` chardev (the core leaves that
/// type to chardev-socket, as it would be for an embedder that links its own).
pub fn install_gate(registry: &chardev::Registry) -> GateSwitch {
    let (ours, theirs) = std::os::unix::net::UnixStream::pair().expect("socketpair");
    theirs.set_nonblocking(true).expect("non-blocking gate");
    let unused = std::sync::Mutex::new(Some(mio::net::UnixStream::from_std(theirs)));
    registry.register_backend("socket", move |_spec, _cx| {
        let stream = chardev::sync::lock(&unused)
            .take()
            .ok_or_else(|| chardev::Error::option("path", "", "the test's gate is taken"))?;
        Ok(Box::new(Gate { stream }))
    });
    GateSwitch { stream: ours }
}

impl chardev::Chardev for Gate {
    fn register(&mut self, io: &mut chardev::Io<'_>) -> chardev::Result<()> {
        io.register(&mut self.stream, 0, mio::Interest::READABLE)
            .map_err(|e| chardev::Error::io("watch the gate", e))
    }

    fn deregister(&mut self, registry: &mio::Registry) {
        let _ = registry.deregister(&mut self.stream);
    }

    fn ready(&mut self, io: &mut chardev::Io<'_>, _source: usize, _event: &mio::event::Event) {
        let mut buf = [0u8; 16];
        // Edge-triggered: read until the socket is empty.
        while let Ok(n @ 1..) = std::io::Read::read(&mut self.stream, &mut buf) {
            for b in &buf[..n] {
                match b {
                    b'o' => io.event(Event::Opened),
                    b'c' => io.event(Event::Closed),
                    _ => {}
                }
            }
        }
    }

    fn write(
        &mut self,
        buf: &[u8],
        _fds: &[std::os::fd::BorrowedFd<'_>],
    ) -> std::io::Result<usize> {
        Ok(buf.len())
    }

    fn kind(&self) -> &'static str {
        "gate"
    }
}

// ---- The real peers: Python, its modules, programs -------------------------------------

/// The workspace's root directory, where `scripts/test` makes the virtualenv `.venv` (this
/// crate sits right in it).
pub fn workspace_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("the testkit sits in the workspace root")
}

/// The path of the calling crate's example `name`, as `cargo test` builds it (into
/// `target/<profile>/examples/`, beside the `deps/` that holds the test binary). Fails the test
/// at once, saying how to build it, if it is not there: `cargo test --test it` builds no
/// examples, a plain `cargo test -p CRATE` does.
pub fn example(name: &str) -> std::path::PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    let profile_dir = exe.parent().and_then(Path::parent).expect("target/<profile>/deps/TEST");
    let path = profile_dir.join("examples").join(name);
    assert!(
        path.exists(),
        "example {name} is not built ({} is missing): run the crate's tests with plain \
         `cargo test -p CRATE` (which builds its examples), or `cargo build -p CRATE --examples`",
        path.display()
    );
    path
}

/// The Python that runs the peers, where that choice came from, and whether it is there.
struct Python {
    program: OsString,
    from: String,
    runnable: bool,
}

fn chosen_python() -> &'static Python {
    static PYTHON: OnceLock<Python> = OnceLock::new();
    PYTHON.get_or_init(|| {
        let (program, from) = match std::env::var_os("CHARDEV_TEST_PYTHON") {
            Some(program) => (program, "CHARDEV_TEST_PYTHON".to_string()),
            None => {
                let venv = workspace_root().join(".venv/bin/python3");
                match venv.exists() {
                    true => (venv.into(), "the virtualenv scripts/test made".to_string()),
                    false => ("python3".into(), format!("PATH, as there is no {}", venv.display())),
                }
            }
        };
        let runnable = runnable(Path::new(&program));
        Python { program, from, runnable }
    })
}

/// Whether `program` names an executable file: a path as it is, a bare name on PATH.
fn runnable(program: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    let executable = |path: &Path| {
        std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if program.components().count() > 1 {
        return executable(program);
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path).any(|dir| executable(&dir.join(program)))
}

/// The Python that runs the tests' real peers: `$CHARDEV_TEST_PYTHON` if set; else the
/// virtualenv that `scripts/test` makes (`.venv/bin/python3` in the workspace root, with
/// pyserial, pexpect, websockets and qemu.qmp) if it is there, found without any variable;
/// else `python3` from PATH. A test whose peer imports more than Python's standard library
/// calls [`require_python_module`] first. Fails the test at once, saying how to get one, if
/// there is no such Python.
pub fn python() -> std::process::Command {
    let chosen = chosen_python();
    if !chosen.runnable {
        panic!(
            "this test runs a Python peer, and the tests' Python, {} (from {}), is not there: \
             run scripts/test, which makes .venv with the tests' Python packages \
             (apt-get install python3 python3-venv first)",
            Path::new(&chosen.program).display(),
            chosen.from
        );
    }
    std::process::Command::new(&chosen.program)
}

/// The outcome of each check of [`require_python_module`] and [`require_program`], by what was
/// checked: each is made once per test binary, however many tests ask.
fn checked(what: String, check: impl FnOnce() -> Result<(), String>) {
    static CHECKS: Mutex<BTreeMap<String, Result<(), String>>> = Mutex::new(BTreeMap::new());
    let mut checks = chardev::sync::lock(&CHECKS);
    let verdict = checks.entry(what).or_insert_with(check).clone();
    drop(checks);
    if let Err(why) = verdict {
        panic!("{why}");
    }
}

/// Fails the calling test at once, saying what to install, unless the tests' Python
/// ([`python`]) can import `module` (`"serial"`, `"qemu.qmp"`); `package` is its name for pip
/// (`"pyserial"`, `"qemu.qmp"`). Called first thing by every test whose peer needs it, so that
/// a missing module is one clear failure, not a peer that dies and a wait that times out.
pub fn require_python_module(module: &str, package: &str) {
    checked(format!("python module {module}"), || {
        let chosen = chosen_python();
        let shown = format!("{} (from {})", Path::new(&chosen.program).display(), chosen.from);
        let child = std::process::Command::new(&chosen.program)
            .args(["-c", &format!("import {module}")])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .map_err(|e| {
                format!(
                    "this test needs Python with the module {module}, and the tests' Python, \
                     {shown}, cannot be run: {e}. Run scripts/test, which makes .venv with the \
                     tests' Python packages (apt-get install python3 python3-venv first)"
                )
            })?;
        let out = wait_output(child, &format!("{shown} -c 'import {module}'"));
        if out.status.success() {
            return Ok(());
        }
        let said = String::from_utf8_lossy(&out.stderr);
        Err(format!(
            "this test needs the Python module {module}, which the tests' Python, {shown}, \
             cannot import ({}). Run scripts/test, which makes .venv with it and the tests' \
             other Python packages, or pip install {package}",
            said.trim().lines().last().unwrap_or("no message")
        ))
    });
}

/// Fails the calling test at once, saying which Debian package to install, unless `program`
/// (`"socat"`, `"qemu-system-x86_64"`) is an executable on PATH; `package` is the package
/// (`"socat"`, `"qemu-system-x86"`). Called first thing by every test that runs it.
pub fn require_program(program: &str, package: &str) {
    checked(format!("program {program}"), || {
        if runnable(Path::new(program)) {
            return Ok(());
        }
        Err(format!(
            "this test needs {program}, which is not on PATH: apt-get install {package} \
             (scripts/test names every program the tests run)"
        ))
    });
}

/// A child process that is killed and reaped when the test ends, however it ends (a peer
/// left running would hold the test's sockets and ptys open).
pub struct KillOnDrop(pub std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The Debian telnet client connected to `port` on loopback, its stdin and stdout piped.
/// Checks first that telnet is installed ([`require_program`]).
pub fn telnet_client(port: u16) -> KillOnDrop {
    require_program("telnet", "telnet");
    KillOnDrop(
        std::process::Command::new("telnet")
            .args(["127.0.0.1", &port.to_string()])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("run telnet (apt-get install telnet)"),
    )
}

/// Connects to a unix socket server as soon as it listens (bind() makes the file a moment
/// before listen()), with reads bounded by the deadline.
pub fn connect_unix(path: &std::path::Path) -> std::os::unix::net::UnixStream {
    let mut conn = None;
    wait_until("a unix socket to listen", || {
        conn = std::os::unix::net::UnixStream::connect(path).ok();
        conn.is_some()
    });
    let s = conn.expect("connected");
    s.set_read_timeout(Some(DEADLINE)).expect("set a read timeout");
    s
}

/// A loop on its own thread and a registry on it.
pub fn spawn_registry() -> (chardev::LoopThread, chardev::Registry) {
    let lp = chardev::EventLoop::spawn().expect("start the loop");
    let reg = chardev::Registry::new(lp.handle());
    (lp, reg)
}

/// Adds a chardev from `-chardev` syntax, failing the test with the spec on error.
pub fn add(reg: &chardev::Registry, spec: &str) {
    if let Err(e) = reg.add_str(spec) {
        panic!("add {spec}: {e}");
    }
}

/// Claims a chardev for a frontend, failing the test with the id on error.
pub fn connect(reg: &chardev::Registry, id: &str) -> FrontendHandle {
    reg.connect(id).unwrap_or_else(|e| panic!("connect {id}: {e}"))
}

/// Asserts that a peer process succeeded and printed just "ok"; shows what it said if not.
pub fn assert_said_ok(out: &std::process::Output) {
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).trim() == "ok",
        "the peer failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The soak multiplier: the `CHARDEV_SOAK` environment variable, a positive integer (1 when
/// unset). Soak tests scale their bytes, cycles or seconds by it; long runs use
/// `CHARDEV_SOAK=10 scripts/test`.
pub fn soak_scale() -> usize {
    match std::env::var("CHARDEV_SOAK") {
        Err(std::env::VarError::NotPresent) => 1,
        Err(std::env::VarError::NotUnicode(v)) => {
            panic!("CHARDEV_SOAK must be a positive integer, got {v:?}")
        }
        Ok(v) => match v.trim().parse::<usize>() {
            Ok(n) if n > 0 => n,
            _ => panic!("CHARDEV_SOAK must be a positive integer (a multiplier), got {v:?}"),
        },
    }
}

// ---- Bounded waits for child processes: peers, demos, tools (socat, telnet, strace) ----

/// Waits for `child` to exit, at most [`DEADLINE`]; on timeout stops (interrupts, then kills)
/// and reaps it and fails the test naming `what`. Like [`std::process::Child::wait`], closes
/// the child's stdin first.
pub fn wait_exit(child: &mut std::process::Child, what: &str) -> std::process::ExitStatus {
    wait_exit_for(child, what, DEADLINE)
}

/// [`wait_exit`] with a bound of `limit` rather than [`DEADLINE`], for a child that is meant
/// to run longer (a soak, a measuring window).
pub fn wait_exit_for(
    child: &mut std::process::Child,
    what: &str,
    limit: Duration,
) -> std::process::ExitStatus {
    drop(child.stdin.take());
    if let Some(status) = exited_within(child, limit) {
        return status;
    }
    stop(child);
    panic!("{what} (pid {}) did not exit within {limit:?}; stopped it", child.id());
}

/// Stops a child that overran its bound: SIGINT first, so that a Python peer prints where it
/// was stuck (a KeyboardInterrupt traceback) and a tool can finish its output, then SIGKILL
/// if it is still there after a second; and reaps it.
fn stop(child: &mut std::process::Child) {
    use nix::sys::signal::{kill, Signal};
    let pid = nix::unistd::Pid::from_raw(child.id() as nix::libc::pid_t);
    // Not reaped yet (exited_within said so), so the pid is still this child's.
    let _ = kill(pid, Signal::SIGINT);
    if exited_within(child, Duration::from_secs(1)).is_none() {
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// The exit status of `child` if it exits within `limit`, or None if it still runs then
/// (left running). Waits on a pidfd, which becomes readable when the process exits; where
/// the kernel has no pidfd_open (before Linux 5.3), polls every 2 ms instead.
pub fn exited_within(
    child: &mut std::process::Child,
    limit: Duration,
) -> Option<std::process::ExitStatus> {
    use std::os::fd::{AsFd, FromRawFd};
    let end = Instant::now() + limit;
    if let Some(status) = child.try_wait().expect("try_wait a child") {
        return Some(status);
    }
    // Not reaped yet, so the pid is still this child's (if only as a zombie): a pidfd
    // opened now cannot name a recycled pid.
    let pid = child.id() as nix::libc::pid_t;
    // SAFETY: pidfd_open(2) takes a pid and flags and returns a new fd or -1.
    let raw = unsafe { nix::libc::syscall(nix::libc::SYS_pidfd_open, pid, 0) };
    if raw >= 0 {
        // SAFETY: the syscall returned a new fd that nothing else owns.
        let pidfd = unsafe { OwnedFd::from_raw_fd(raw as std::os::fd::RawFd) };
        let left = end.saturating_duration_since(Instant::now());
        // wait_readable rounds down to milliseconds: the try_wait after it decides.
        if chardev::fd::wait_readable(pidfd.as_fd(), Some(left)).expect("poll a pidfd") {
            return Some(child.wait().expect("reap an exited child"));
        }
        return child.try_wait().expect("try_wait a child");
    }
    loop {
        if let Some(status) = child.try_wait().expect("try_wait a child") {
            return Some(status);
        }
        if Instant::now() >= end {
            return None;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Like [`std::process::Child::wait_with_output`], bounded by [`DEADLINE`]: collects the
/// child's piped stdout and stderr (those it has; the others come back empty) on threads
/// while waiting for it to exit. On timeout stops and reaps it and fails the test naming
/// `what`, with what it printed.
pub fn wait_output(child: std::process::Child, what: &str) -> std::process::Output {
    wait_output_for(child, what, DEADLINE)
}

/// [`wait_output`] with a bound of `limit` rather than [`DEADLINE`] for the child's exit.
pub fn wait_output_for(
    mut child: std::process::Child,
    what: &str,
    limit: Duration,
) -> std::process::Output {
    fn drain(pipe: Option<impl std::io::Read + Send + 'static>) -> Receiver<Vec<u8>> {
        let (tx, rx) = channel();
        if let Some(mut pipe) = pipe {
            std::thread::spawn(move || {
                let mut buf = Vec::new();
                let _ = pipe.read_to_end(&mut buf);
                // Closed before the output is handed over: a test that counts its fds once
                // this returns must not see the pipe.
                drop(pipe);
                let _ = tx.send(buf);
            });
        } else {
            let _ = tx.send(Vec::new());
        }
        rx
    }
    let out = drain(child.stdout.take());
    let err = drain(child.stderr.take());
    drop(child.stdin.take());
    let status = exited_within(&mut child, limit);
    if status.is_none() {
        stop(&mut child);
    }
    // Once the child is gone its pipes end, unless it left a process of its own holding
    // them: that is bounded too.
    let collect = |rx: Receiver<Vec<u8>>, name: &str| {
        rx.recv_timeout(DEADLINE).unwrap_or_else(|_| {
            panic!("{what}'s {name} stayed open {DEADLINE:?} after it ended (a child of its own?)")
        })
    };
    let (stdout, stderr) = (collect(out, "stdout"), collect(err, "stderr"));
    let Some(status) = status else {
        panic!(
            "{what} (pid {}) did not exit within {limit:?}; stopped it. It printed:\n{}\n{}",
            child.id(),
            String::from_utf8_lossy(&stdout),
            String::from_utf8_lossy(&stderr)
        );
    };
    std::process::Output { status, stdout, stderr }
}

/// Like [`std::process::Command::output`], bounded by [`DEADLINE`]: stdin is /dev/null and
/// stdout and stderr are captured (whatever `cmd` set for them before). On timeout stops and
/// reaps the child and fails the test naming `what`, with what it printed. For other stdio,
/// spawn the child and call [`wait_output`].
pub fn output_within(cmd: &mut std::process::Command, what: &str) -> std::process::Output {
    use std::process::Stdio;
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("run {what}: {e}"));
    wait_output(child, what)
}

/// Waits, at most [`DEADLINE`], until a unix socket bound at `path` listens (is in the
/// listening state in /proc/net/unix) without connecting to it, for a server whose first
/// connection must be the test's real client. bind() makes the file a moment before
/// listen(); this closes that gap.
pub fn wait_unix_listening(path: &std::path::Path) {
    let want = path.as_os_str().as_encoded_bytes();
    wait_until(&format!("{} to listen", path.display()), || {
        let table = std::fs::read("/proc/net/unix").expect("read /proc/net/unix");
        // Num RefCount Protocol Flags Type St Inode Path; listening: Flags has
        // __SO_ACCEPTCON (00010000), St is SS_UNCONNECTED (01).
        // The inode is padded to 5 columns: fields part at runs of spaces, up to the path.
        table.split(|&b| b == b'\n').skip(1).any(|mut line| {
            let mut fields = Vec::with_capacity(7);
            while fields.len() < 7 {
                line = &line[line.iter().take_while(|&&b| b == b' ').count()..];
                let len = line.iter().take_while(|&&b| b != b' ').count();
                fields.push(&line[..len]);
                line = &line[len..];
            }
            let path = line.strip_prefix(b" ").unwrap_or(line);
            fields[3] == b"00010000" && fields[5] == b"01" && path == want
        })
    });
}

/// A child's stdout or stderr whose reads fail (`TimedOut`) after [`DEADLINE`] without data,
/// as a socket's do with `set_read_timeout`: a pipe has no read timeout of its own. Wraps the
/// pipe (any readable fd).
pub struct TimedPipe<R>(pub R);

impl<R: std::io::Read + std::os::fd::AsFd> std::io::Read for TimedPipe<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if !chardev::fd::wait_readable(self.0.as_fd(), Some(DEADLINE))? {
            let e = format!("nothing to read within {DEADLINE:?}");
            return Err(std::io::Error::new(std::io::ErrorKind::TimedOut, e));
        }
        self.0.read(buf)
    }
}

/// A frontend for the fd-passing peers (`send_fds.py`): takes up to 4 KiB at a time, sends
/// each read's bytes and fds on `tx` (then `<closed>` with no fds on `Closed`), and answers
/// each byte with `.`, which the peer waits for before it sends the next message.
pub struct Acking {
    /// The chardev it acknowledges on (its own handle).
    pub handle: FrontendHandle,
    /// Where each read's bytes and fds go.
    pub tx: Sender<(Vec<u8>, Vec<OwnedFd>)>,
}

impl Frontend for Acking {
    fn can_receive(&mut self) -> usize {
        4096
    }
    fn receive(&mut self, data: &[u8], fds: Vec<OwnedFd>) {
        for _ in data {
            self.handle.write_all_blocking(b".").unwrap();
        }
        self.tx.send((data.to_vec(), fds)).unwrap();
    }
    fn event(&mut self, event: Event) {
        if event == Event::Closed {
            self.tx.send((b"<closed>".to_vec(), Vec::new())).unwrap();
        }
    }
}

/// Checks that `got` is the start of `pattern`, exactly one gap marker
/// (`chardev::fanout::gap_marker`), then the end of `pattern`, and that the marker's count,
/// which it returns, is exactly what is missing between them.
pub fn one_gap(got: &[u8], pattern: &[u8]) -> u64 {
    let text = String::from_utf8_lossy(got);
    assert_eq!(text.matches("[chardev: ").count(), 1, "exactly one gap marker");
    let at = got.windows(12).position(|w| w == b"\r\n[chardev: ").expect("the marker");
    let rest = &got[at + 2..];
    let end = rest.windows(2).position(|w| w == b"\r\n").expect("its end");
    let marker = std::str::from_utf8(&rest[..end]).unwrap();
    let lost: usize = marker
        .strip_prefix("[chardev: ")
        .and_then(|m| m.strip_suffix(" bytes of output dropped: this viewer fell behind]"))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("marker {marker:?}"));
    let (before, after) = (&got[..at], &rest[end + 2..]);
    assert_eq!(before, &pattern[..before.len()], "what came before the gap");
    assert_eq!(after, &pattern[pattern.len() - after.len()..], "what came after it");
    assert_eq!(before.len() + lost + after.len(), pattern.len(), "the count is what is missing");
    lost as u64
}

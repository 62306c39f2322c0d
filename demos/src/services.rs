//! What every monitor reaches: the chardevs, the machine and its run state (with the QMP
//! events that go with changes), migration, and the way out.

use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use chardev::fdset::NamedFds;
use chardev::{LoopHandle, Registry};
use chardev_qmp::EventBus;
use qevm::{self as migration, BlockingWriter, DeviceState, Progress, Snapshot};
use serde_json::{json, Value};

use crate::machine::{Irq, Machine, RunState, TxBuffer, Uart};
use chardev::sync::lock;

/// The machine's services, shared by every monitor.
#[derive(Clone)]
pub struct Services {
    /// The chardevs.
    pub registry: Registry,
    /// The machine.
    pub machine: Arc<Machine>,
    /// The loop, stopped by `quit`.
    pub event_loop: LoopHandle,
    /// QMP monitors that want events.
    pub events: Arc<EventBus>,
    /// The guest's UART, whose state migrates with the machine.
    pub uart: Arc<Mutex<Uart>>,
    /// The UART's interrupt line (a loaded UART state must raise it again).
    pub irq: Irq,
    /// The machine type (`-machine`), which a migration stream names.
    pub machine_type: Arc<str>,
    /// The one migration of this process, in or out.
    pub migration: Arc<Mutex<MigrationState>>,
    /// Set when the program ends because of an error (a failed incoming migration).
    pub failed: Arc<std::sync::atomic::AtomicBool>,
}

/// Where the process's migration stands (`query-migrate`).
#[derive(Debug, Default)]
pub enum MigrationState {
    /// None yet: `query-migrate` returns `{}`.
    #[default]
    None,
    /// Sending.
    Active {
        /// The counters the sending thread moves.
        progress: Arc<Progress>,
        /// A duplicate of the target fd, to shut a socket down on `migrate_cancel`.
        target: OwnedFd,
        /// When it started.
        started: Instant,
    },
    /// Done: the guest stays stopped (`postmigrate`).
    Completed {
        /// The final counters.
        ram: migration::RamStats,
        /// How long it took, in ms.
        total_time: u64,
    },
    /// Failed: the guest runs again if it ran before.
    Failed(String),
    /// Cancelled with `migrate_cancel`.
    Cancelled,
}

/// Where a migration goes to, or comes from.
#[derive(Debug)]
pub enum MigrationEndpoint {
    /// `fd:NAME`: an fd passed with `getfd` (or a number, for `-incoming fd:N`).
    Fd(OwnedFd),
    /// `unix:PATH`.
    Unix(PathBuf),
    /// `tcp:HOST:PORT`.
    Tcp(String),
}

impl MigrationEndpoint {
    /// Parses a migration URI; `fd:NAME` takes the named fd for good (QEMU does too).
    pub fn parse(uri: &str, fds: &mut NamedFds) -> Result<MigrationEndpoint, String> {
        if let Some(name) = uri.strip_prefix("fd:") {
            return fds.take(name).map(MigrationEndpoint::Fd).map_err(|e| e.to_string());
        }
        if let Some(path) = uri.strip_prefix("unix:") {
            return Ok(MigrationEndpoint::Unix(PathBuf::from(path)));
        }
        if let Some(addr) = uri.strip_prefix("tcp:") {
            return Ok(MigrationEndpoint::Tcp(addr.to_string()));
        }
        let protocol = uri.split(':').next().unwrap_or(uri);
        Err(format!("Migration protocol '{protocol}' is not supported here (fd:, unix:, tcp:)"))
    }
}

impl Services {
    /// `stop`: pauses the guest (a `STOP` event if it was running).
    pub fn stop(&self) {
        if self.machine.state() == RunState::Running {
            self.machine.set_state(RunState::Paused);
            self.events.emit("STOP", None);
        }
    }

    /// `cont`: resumes the guest (a `RESUME` event), unless a migration is still coming in.
    pub fn cont(&self) -> Result<(), String> {
        match self.machine.state() {
            RunState::Running => Ok(()),
            RunState::Inmigrate => Err("Migration is not finished yet".into()),
            _ => {
                self.machine.set_state(RunState::Running);
                self.events.emit("RESUME", None);
                Ok(())
            }
        }
    }

    /// Ends the program (`quit`, `Ctrl-A x`).
    pub fn quit(&self) {
        self.machine.quit();
        self.event_loop.stop();
    }

    fn migration(&self) -> MutexGuard<'_, MigrationState> {
        lock(&self.migration)
    }

    /// `migrate`: stops the guest and sends its state on a thread; `query-migrate` follows.
    pub fn migrate(&self, target: MigrationEndpoint) -> Result<(), String> {
        match &*self.migration() {
            MigrationState::Active { .. } => {
                return Err("There's a migration process in progress".into())
            }
            MigrationState::Completed { .. } => {
                return Err("The machine has migrated already; start a new instance".into())
            }
            _ => {}
        }
        if self.machine.state() == RunState::Inmigrate {
            return Err("Guest is waiting for an incoming migration".into());
        }
        let fd = target.connect()?;
        let shutdown_copy =
            fd.try_clone().map_err(|e| format!("cannot duplicate the migration fd: {e}"))?;
        let writer = BlockingWriter::new(fd)
            .map_err(|e| format!("cannot write the migration stream: {e}"))?;
        let was_running = self.machine.state() == RunState::Running;
        self.stop();
        let progress = Arc::new(Progress::new());
        *self.migration() = MigrationState::Active {
            progress: Arc::clone(&progress),
            target: shutdown_copy,
            started: Instant::now(),
        };
        let services = self.clone();
        let spawned = std::thread::Builder::new().name("migration".into()).spawn(move || {
            let started = Instant::now();
            let result = services.save_to(writer, &progress);
            let mut state = services.migration();
            match result {
                Ok(()) => {
                    *state = MigrationState::Completed {
                        ram: progress.ram(),
                        total_time: started.elapsed().as_millis() as u64,
                    };
                    drop(state);
                    services.machine.set_state(RunState::Postmigrate);
                    log::info!("migration completed");
                }
                Err(e) => {
                    let cancelled = progress.is_cancelled();
                    *state = if cancelled {
                        MigrationState::Cancelled
                    } else {
                        MigrationState::Failed(e.clone())
                    };
                    drop(state);
                    log::warn!("migration {}: {e}", if cancelled { "cancelled" } else { "failed" });
                    if was_running {
                        let _ = services.cont();
                    }
                }
            }
        });
        spawned.map(drop).map_err(|e| format!("cannot start the migration thread: {e}"))
    }

    /// Writes the machine's stream: RAM, the UART, the guest shell.
    fn save_to(&self, mut writer: BlockingWriter, progress: &Progress) -> Result<(), String> {
        let serial = {
            let uart = lock(&self.uart);
            migration::serial_section(0, &uart.state())
        };
        let shell = DeviceState::new(
            migration::GUEST_SHELL,
            0,
            1,
            (self.machine.uptime().as_millis() as u64).to_be_bytes().to_vec(),
        );
        let devices = [serial, shell];
        let snapshot = Snapshot {
            machine_type: &self.machine_type,
            ram: &self.machine.ram,
            devices: &devices,
        };
        migration::save(&mut writer, &snapshot, progress).map_err(|e| e.to_string())?;
        std::io::Write::flush(&mut writer)
            .map_err(|e| format!("cannot write the migration stream: {e}"))
    }

    /// `query-migrate`, in QEMU's shape.
    pub fn query_migrate(&self) -> Value {
        let ram = |r: migration::RamStats| {
            json!({
                "transferred": r.transferred, "remaining": r.remaining, "total": r.total,
                "duplicate": r.duplicate, "normal": r.normal, "normal-bytes": r.normal_bytes,
            })
        };
        match &*self.migration() {
            MigrationState::None => json!({}),
            MigrationState::Active { progress, started, .. } => {
                let total_time = started.elapsed().as_millis() as u64;
                json!({"status": "active", "total-time": total_time, "ram": ram(progress.ram())})
            }
            MigrationState::Completed { ram: r, total_time } => {
                json!({"status": "completed", "total-time": total_time, "ram": ram(*r)})
            }
            MigrationState::Failed(desc) => json!({"status": "failed", "error-desc": desc}),
            MigrationState::Cancelled => json!({"status": "cancelled"}),
        }
    }

    /// `migrate_cancel`: the sending thread stops; a socket target is shut down so that a
    /// stalled reader cannot hold it.
    pub fn migrate_cancel(&self) {
        if let MigrationState::Active { progress, target, .. } = &*self.migration() {
            progress.cancel();
            let _ = nix::sys::socket::shutdown(
                std::os::fd::AsRawFd::as_raw_fd(target),
                nix::sys::socket::Shutdown::Both,
            );
        }
    }

    /// `migrate-incoming` and `-incoming`: loads a machine's state from `source` on a thread,
    /// then runs the guest. A stream that cannot be loaded ends the program with the error
    /// (as QEMU does), never half-loaded.
    pub fn migrate_incoming(&self, source: MigrationEndpoint) -> Result<(), String> {
        if self.machine.state() != RunState::Inmigrate {
            return Err("'-incoming' was not specified on the command line".into());
        }
        if matches!(&*self.migration(), MigrationState::Active { .. }) {
            return Err("There's a migration process in progress".into());
        }
        // Listening before the reply, as QEMU does: a source told to migrate as soon as
        // migrate-incoming has answered finds the socket ready (not refused), and a bind
        // error is this command's error.
        let source = source.listen()?;
        let services = self.clone();
        let spawned = std::thread::Builder::new().name("incoming".into()).spawn(move || {
            match services.load_from(source) {
                Ok(()) => {
                    log::info!("incoming migration loaded");
                    // Loaded: the guest resumes where the source stopped (QEMU's autostart).
                    services.machine.set_state(RunState::Paused);
                    let _ = services.cont();
                }
                Err(e) => {
                    crate::say!("{}: load of migration failed: {e}", crate::PROGRAM);
                    *services.migration() = MigrationState::Failed(e);
                    services.failed.store(true, std::sync::atomic::Ordering::Release);
                    services.quit();
                }
            }
        });
        spawned.map(drop).map_err(|e| format!("cannot start the incoming migration: {e}"))
    }

    fn load_from(&self, source: Listening) -> Result<(), String> {
        let fd = source.accept()?;
        // A migration fd is read with plain blocking reads: make it so (the seed's rule: code
        // that needs a mode sets it).
        chardev::fd::set_nonblocking(&fd, false).map_err(|e| e.to_string())?;
        let input = std::io::BufReader::with_capacity(256 * 1024, std::fs::File::from(fd));
        let incoming = {
            let mut ram = lock(&self.machine.ram);
            migration::load(input, &self.machine_type, &mut ram).map_err(|e| e.to_string())?
        };
        if let Some(dev) = incoming.device(migration::SERIAL, 0) {
            let state = migration::serial_state(dev).map_err(|e| e.to_string())?;
            let uart = vm_superio::Serial::from_state(
                &state,
                self.irq.clone(),
                vm_superio::serial::NoEvents,
                TxBuffer::default(),
            )
            .map_err(|e| format!("serial state: {e:?}"))?;
            *lock(&self.uart) = uart;
        }
        if let Some(dev) = incoming.device(migration::GUEST_SHELL, 0) {
            if let Ok(bytes) = <[u8; 8]>::try_from(dev.data.as_slice()) {
                self.machine
                    .add_uptime(std::time::Duration::from_millis(u64::from_be_bytes(bytes)));
            }
        }
        Ok(())
    }
}

/// An incoming migration's source, ready before `migrate-incoming` answers.
enum Listening {
    Fd(OwnedFd),
    Unix(std::os::unix::net::UnixListener, std::path::PathBuf),
    Tcp(std::net::TcpListener, String),
}

impl Listening {
    /// The fd to read the stream from: the passed fd, or the first connection.
    fn accept(self) -> Result<OwnedFd, String> {
        match self {
            Listening::Fd(fd) => Ok(fd),
            Listening::Unix(l, path) => l
                .accept()
                .map(|(s, _)| OwnedFd::from(s))
                .map_err(|e| format!("incoming on '{}': {e}", path.display())),
            Listening::Tcp(l, addr) => l
                .accept()
                .map(|(s, _)| OwnedFd::from(s))
                .map_err(|e| format!("incoming on '{addr}': {e}")),
        }
    }
}

impl MigrationEndpoint {
    /// The fd to write a stream to: the passed fd, or a connection to the address.
    fn connect(self) -> Result<OwnedFd, String> {
        match self {
            MigrationEndpoint::Fd(fd) => Ok(fd),
            MigrationEndpoint::Unix(path) => std::os::unix::net::UnixStream::connect(&path)
                .map(OwnedFd::from)
                .map_err(|e| format!("Failed to connect to '{}': {e}", path.display())),
            MigrationEndpoint::Tcp(addr) => std::net::TcpStream::connect(addr.as_str())
                .map(OwnedFd::from)
                .map_err(|e| format!("Failed to connect to '{addr}': {e}")),
        }
    }

    /// Where a stream will come from: the passed fd, or a socket listening on the address.
    fn listen(self) -> Result<Listening, String> {
        match self {
            MigrationEndpoint::Fd(fd) => Ok(Listening::Fd(fd)),
            MigrationEndpoint::Unix(path) => std::os::unix::net::UnixListener::bind(&path)
                .map(|l| Listening::Unix(l, path.clone()))
                .map_err(|e| format!("incoming on '{}': {e}", path.display())),
            MigrationEndpoint::Tcp(addr) => std::net::TcpListener::bind(addr.as_str())
                .map(|l| Listening::Tcp(l, addr.clone()))
                .map_err(|e| format!("incoming on '{addr}': {e}")),
        }
    }

    /// `-incoming fd:N` (a number inherited from the parent), `unix:`, `tcp:`; `None` for `defer`.
    pub fn from_command_line(uri: &str) -> Result<Option<MigrationEndpoint>, String> {
        if uri == "defer" {
            return Ok(None);
        }
        if let Some(n) = uri.strip_prefix("fd:") {
            let n: i32 = n.parse().map_err(|_| format!("-incoming {uri}: fd:N takes a number"))?;
            return chardev::fd::take_inherited(n)
                .map(|fd| Some(MigrationEndpoint::Fd(fd)))
                .map_err(|e| e.to_string());
        }
        MigrationEndpoint::parse(uri, &mut NamedFds::default()).map(Some)
    }
}

//! What every monitor reaches: the chardevs, the machine and its run state (with the QMP
//! events that go with changes), migration, and the way out.

use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use chardev::{LoopHandle, Registry};
use serde_json::{json, Value};

use crate::hmp::NamedFds;
use crate::machine::{Irq, Machine, RunState, Uart};
use crate::qmp::EventBus;

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
            return fds.take(name).map(MigrationEndpoint::Fd);
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

    /// `migrate`: starts sending the machine's state.
    pub fn migrate(&self, target: MigrationEndpoint) -> Result<(), String> {
        let _ = target;
        Err("migration is not available in this build yet".into())
    }

    /// `query-migrate`.
    pub fn query_migrate(&self) -> Value {
        json!({})
    }

    /// `migrate_cancel`.
    pub fn migrate_cancel(&self) {}

    /// `migrate-incoming` and `-incoming`: loads a machine's state from `source`.
    pub fn migrate_incoming(&self, source: MigrationEndpoint) -> Result<(), String> {
        let _ = source;
        Err("migration is not available in this build yet".into())
    }
}

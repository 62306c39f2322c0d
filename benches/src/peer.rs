//! The other end of a scenario: connecting to a socket that is about to exist, and child
//! processes (relays, client holders) that are killed if the scenario fails half-way.

use std::io;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::{Child, ExitStatus};
use std::time::{Duration, Instant};

use crate::{Context, Result};

/// How long a peer waits for a server or a relay to come up.
pub const STARTUP: Duration = Duration::from_secs(10);

/// Retries `attempt` until it succeeds or `timeout` passes; `what` names it in the error.
///
/// For a server in another process there is nothing to wait on but its socket file and its
/// `listen()`, which follows `bind()` a moment later: a retry every millisecond is the wait.
pub fn retry<T>(
    what: &str,
    timeout: Duration,
    mut attempt: impl FnMut() -> io::Result<T>,
) -> Result<T> {
    let deadline = Instant::now() + timeout;
    loop {
        match attempt() {
            Ok(t) => return Ok(t),
            Err(e) if Instant::now() >= deadline => {
                return Err(format!("{what}: still failing after {timeout:?}: {e}"))
            }
            Err(_) => std::thread::sleep(Duration::from_millis(1)),
        }
    }
}

/// Connects to the unix socket at `path` once something listens there.
pub fn connect(path: &Path) -> Result<UnixStream> {
    retry(&format!("connect to {}", path.display()), STARTUP, || UnixStream::connect(path))
}

/// A child process that is killed and reaped when dropped, unless it already ended.
#[derive(Debug)]
pub struct Process {
    child: Child,
    what: String,
}

impl Process {
    /// Takes charge of `child`; `what` names it in errors.
    pub fn new(child: Child, what: impl Into<String>) -> Process {
        Process { child, what: what.into() }
    }

    /// The child itself (for its pipes).
    pub fn child(&mut self) -> &mut Child {
        &mut self.child
    }

    /// Whether the child has ended already; an early end usually explains a failure.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Waits up to `timeout` for the child to end by itself, then kills it. Returns its exit
    /// status, or `None` if it had to be killed.
    pub fn finish(mut self, timeout: Duration) -> Result<Option<ExitStatus>> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) =
                self.child.try_wait().context(format!("wait for {}", self.what))?
            {
                return Ok(Some(status));
            }
            if Instant::now() >= deadline {
                return Ok(None); // dropped below: killed and reaped
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

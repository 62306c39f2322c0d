//! Benchmarks for the chardev crates, each a ratio against a baseline measured in the same
//! run: the chardev path and the plain-syscall (or socat) path move the same verified bytes on
//! the same machine, minutes apart, so the ratio says what the chardev machinery costs.
//!
//! The scenarios (issue 8) and what each compares:
//!
//! | | scenario | baseline |
//! |---|---|---|
//! | P1 | a peer writes into a unix socket chardev, a frontend consumes | a blocking read loop on a socketpair |
//! | P2 | `chardev-relay` unix <-> unix | `socat -b 65536`, same route |
//! | P3 | `chardev-relay` pty <-> unix | `socat -b 65536`, same route; yardsticks: a bare blocking relay thread, the pty alone |
//! | P4 | 64-byte echo round trips through a chardev | a blocking echo thread |
//! | P5 | P4 on one chardev among thousands of idle ones | P4 on a loop of its own |
//! | P6 | fds received through a unix socket chardev | a blocking `recvmsg` loop |
//! | P10 | serial-console's flood to 8 viewers of its `clients=8` unix socket | the same flood to 1 viewer |
//! | P11 | the same, one viewer stopped | none stopped |
//! | P12 | send calls replaying 1 MiB of history to a new viewer | one per byte |
//! | P13 | serial-console's memory growth with 8 viewers, one stopped | `queue` + `history` |
//! | P14 | a device writes through a unix socket chardev with `logfile=` and rotation | the same chardev with no logfile |
//! | P15 | `overflow=drop`: a frontend's writer's CPU per byte with a peer that never reads | the same with a peer that reads |
//! | P16 | `chardev-relay` unix <-> TLS server (tcp, `tls-creds=`), a TLS peer reading or writing | `socat -b 65536 UNIX-LISTEN OPENSSL-LISTEN`, same certificates, same peer |
//! | P17 | full TLS handshakes per second (mutual, no resumption) to a TLS server chardev | `openssl s_server -Verify 1`, same certificates; `openssl s_time -new` the client of both |
//!
//! `cargo run --release -p benches --bin compare` runs them all; `--smoke` runs them tiny,
//! checking only that every transfer was complete and correct. A scenario is one function
//! per side, returning what it measured:
//!
//! ```no_run
//! use benches::{ingest, pattern::Verify};
//! let dir = tempfile::tempdir().unwrap();
//! let ours = ingest::chardev(dir.path(), 64 << 20, Verify::Edges)?;
//! let base = ingest::raw(64 << 20, Verify::Edges)?;
//! println!("P1: {:.2}", ours.rate() / base.rate());
//! # Ok::<(), String>(())
//! ```

pub mod console_log; // P14: console output through a chardev with a rotating logfile, or none
pub mod echo; // P4, P5: echo round trips through a chardev or a plain thread; idle crowds
pub mod fanout; // P10-P13: one console, many viewers: floods, a stopped viewer, history
pub mod fdpass; // P6: fds through a chardev or a plain recvmsg loop
pub mod fixture; // a loop, a registry, socket chardevs and the frontends the scenarios use
pub mod ingest; // P1: a peer's bytes into a frontend, or into a plain read loop
pub mod migrate; // P7: qevm's migration stream into a socketpair, or plain writes
pub mod migrate_qemu; // P8: a stopped 1 GiB machine migrated by serial-console or QEMU 7.2
pub mod overflow; // P15: overflow=drop, the writer's CPU per byte with a stalled peer / a reading one
pub mod pattern; // the verifiable byte stream every transfer moves
pub mod peer; // the other end: connecting, deadlines, child processes that die with us
pub mod proc_status; // VmRSS and the fd limit, from /proc and getrlimit
pub mod qmp_rtt; // P9: QMP round trips through serial-console's monitor / QEMU 7.2's
pub mod relay; // P2, P3: chardev-relay or socat between two endpoints, in a process of its own
pub mod stats; // medians, percentiles, spreads
pub mod tls; // P16, P17: chardev-relay with TLS / socat OPENSSL; TLS handshakes / openssl s_server

use std::time::Duration;

/// What a scenario reports on failure: what was being done, and why it failed.
pub type Result<T> = std::result::Result<T, String>;

/// Adds what was being done to an error, turning it into the scenario's error type.
pub trait Context<T> {
    /// `Err(e)` becomes `Err("what: e")`.
    fn context(self, what: impl std::fmt::Display) -> Result<T>;
}

impl<T, E: std::fmt::Display> Context<T> for std::result::Result<T, E> {
    fn context(self, what: impl std::fmt::Display) -> Result<T> {
        self.map_err(|e| format!("{what}: {e}"))
    }
}

/// One bulk transfer: how many bytes (or fds) arrived, how long it took, and the CPU time
/// it cost.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Transfer {
    /// Units moved: bytes, or fds for P6.
    pub units: u64,
    /// From the first write to the last unit's arrival at the consumer.
    pub elapsed: Duration,
    /// CPU time (user and system) of the side being measured: this whole process for the
    /// in-process scenarios (writer included, the same on both sides), the relay process
    /// alone for relays. Less sensitive than `elapsed` to other work on the machine.
    pub cpu: Duration,
}

impl Transfer {
    /// Units per second.
    pub fn rate(&self) -> f64 {
        self.units as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// CPU seconds per unit.
    pub fn cpu_per_unit(&self) -> f64 {
        self.cpu.as_secs_f64() / self.units.max(1) as f64
    }
}

/// How long a transfer of `bytes` may take before it counts as stuck: generous, since the
/// machine may be busy, but bounded so that a lost byte fails the run instead of hanging it.
pub fn transfer_deadline(bytes: u64) -> Duration {
    Duration::from_secs(20) + Duration::from_secs_f64(bytes as f64 / 20e6)
}

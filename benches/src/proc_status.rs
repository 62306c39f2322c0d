//! What the process costs: its resident memory (`VmRSS` in `/proc/self/status`, as issue 8
//! asks), its fd budget (`RLIMIT_NOFILE`), and CPU time (`getrusage`).

use std::time::Duration;

use nix::sys::resource::{getrlimit, getrusage, setrlimit, Resource, UsageWho};

use crate::{Context, Result};

/// The process's resident set size in bytes, from `VmRSS` in `/proc/self/status`.
pub fn vm_rss() -> Result<u64> {
    let status = std::fs::read_to_string("/proc/self/status").context("read /proc/self/status")?;
    let line = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .ok_or("no VmRSS line in /proc/self/status")?;
    let kib: u64 = line
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .context(format!("read VmRSS from '{line}'"))?;
    Ok(kib * 1024)
}

/// Raises the soft fd limit to the hard one (which an unprivileged process, and here even
/// root, cannot raise); returns the new soft limit.
pub fn raise_fd_limit() -> Result<u64> {
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).context("getrlimit(RLIMIT_NOFILE)")?;
    if soft < hard {
        setrlimit(Resource::RLIMIT_NOFILE, hard, hard).context("setrlimit(RLIMIT_NOFILE)")?;
    }
    Ok(hard)
}

/// How many fds the process has open now.
pub fn open_fds() -> Result<u64> {
    Ok(std::fs::read_dir("/proc/self/fd").context("list /proc/self/fd")?.count() as u64)
}

/// Whose CPU time [`cpu_time`] reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Who {
    /// This process, all its threads.
    Process,
    /// The children this process has waited for, added up.
    Children,
    /// The calling thread alone.
    Thread,
}

/// User plus system CPU time used so far by `who`.
pub fn cpu_time(who: Who) -> Result<Duration> {
    let usage = getrusage(match who {
        Who::Process => UsageWho::RUSAGE_SELF,
        Who::Children => UsageWho::RUSAGE_CHILDREN,
        Who::Thread => UsageWho::RUSAGE_THREAD,
    })
    .context("getrusage")?;
    let secs = |t: nix::sys::time::TimeVal| {
        Duration::from_secs(t.tv_sec() as u64) + Duration::from_micros(t.tv_usec() as u64)
    };
    Ok(secs(usage.user_time()) + secs(usage.system_time()))
}

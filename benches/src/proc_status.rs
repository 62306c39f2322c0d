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

/// User plus system CPU time of process `pid` (every thread), from `/proc/PID/stat`.
pub fn process_cpu(pid: u32) -> Result<Duration> {
    let path = format!("/proc/{pid}/stat");
    let stat = std::fs::read_to_string(&path).context(format!("read {path}"))?;
    // The command name (field 2) may hold spaces and parentheses; the fields after its
    // closing parenthesis start with field 3, so utime (14) and stime (15) are 11 and 12.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).ok_or(format!("no ')' in {path}"))?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| -> Result<u64> {
        fields.get(i).ok_or(format!("{path} is too short"))?.parse().context(&path)
    };
    let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .context("sysconf(CLK_TCK)")?
        .filter(|&hz| hz > 0)
        .ok_or("sysconf(CLK_TCK) has no value")? as u64;
    let total = ticks(11)? + ticks(12)?;
    Ok(Duration::from_secs(total / hz) + Duration::from_nanos((total % hz) * 1_000_000_000 / hz))
}

/// A field of `/proc/PID/status` that counts kB (`VmRSS`, `VmHWM`), in bytes, for another
/// process (P13 measures the process that holds the chardev, not this one).
pub fn status_bytes(pid: u32, field: &str) -> Result<u64> {
    let path = format!("/proc/{pid}/status");
    let status = std::fs::read_to_string(&path).context(format!("read {path}"))?;
    let line = status
        .lines()
        .find_map(|l| l.strip_prefix(field).and_then(|l| l.strip_prefix(':')))
        .ok_or(format!("no {field} line in {path}"))?;
    let kib: u64 = line
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .context(format!("read {field} from '{line}'"))?;
    Ok(kib * 1024)
}

/// Resets the peak resident size (`VmHWM`) of process `pid` to its resident size now
/// (`echo 5 > /proc/PID/clear_refs`, Linux 4.0), so that a later `VmHWM` is the peak of
/// what came after.
pub fn reset_peak(pid: u32) -> Result<()> {
    let path = format!("/proc/{pid}/clear_refs");
    std::fs::write(&path, "5").context(format!("write 5 to {path}"))
}

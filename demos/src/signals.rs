//! The demos' signals: blocked in every thread, taken by one thread with sigwaitinfo(2).
//! SIGTERM and SIGINT end the program QEMU's way, announced as "PROGRAM: terminating on
//! signal N from pid P (CMD)". SIGHUP sent by a process (`kill -HUP`, logrotate's
//! `postrotate`) reopens the chardevs' logfiles, as daemons do; a SIGHUP from the kernel
//! (the controlling terminal hung up) still ends the program as in QEMU. Also stderr lines
//! that never panic (a write to a stderr whose reader left is dropped).

use nix::libc;
use nix::sys::signal::SigSet;

/// Writes a line to stderr, dropping it if stderr is gone (`eprintln!` would panic).
#[macro_export]
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

/// What a signal the demos take asks of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Taken {
    /// End the program (the signal's number; announced on stderr already).
    Terminate(i32),
    /// Reopen every chardev's logfile (`Registry::reopen_logs`): a SIGHUP from a process.
    ReopenLogs,
}

/// Waits for the next signal of `set` (blocked in every thread): a SIGHUP that a process
/// sent asks for the logs to be reopened; any other signal ends the program, and is
/// announced with its sender as QEMU does. `None` if waiting failed.
pub fn next_signal(set: &SigSet, program: &str) -> Option<Taken> {
    loop {
        // SAFETY: an all-zero siginfo_t is a valid value of this plain C struct.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: `set` is an initialised sigset_t and `info` is valid for writes.
        let signal = unsafe { libc::sigwaitinfo(set.as_ref(), &mut info) };
        if signal < 0 {
            if std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            log::warn!("sigwaitinfo: {}", std::io::Error::last_os_error());
            return None;
        }
        // SI_USER, SI_QUEUE, SI_TKILL (kill(2) and its kin) are 0 or below; the kernel's own
        // (a terminal's hang-up) above.
        if signal == libc::SIGHUP && info.si_code <= 0 {
            return Some(Taken::ReopenLogs);
        }
        // SAFETY: sigwaitinfo filled `info` for one of our signals, which carries si_pid
        // (0 when the kernel sent it, as for Ctrl-C on the terminal).
        let pid = unsafe { info.si_pid() };
        if pid == 0 {
            say!("{program}: terminating on signal {signal}");
        } else {
            say!(
                "{program}: terminating on signal {signal} from pid {pid} ({})",
                process_name(pid).as_deref().unwrap_or("<unknown process>")
            );
        }
        return Some(Taken::Terminate(signal));
    }
}

/// The first word of a process's command line, as QEMU names the sender of a signal.
fn process_name(pid: libc::pid_t) -> Option<String> {
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let first = cmdline.split(|&b| b == 0).next().filter(|s| !s.is_empty())?;
    Some(String::from_utf8_lossy(first).into_owned())
}

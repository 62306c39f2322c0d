//! Who has a pty's slave open, learned from events instead of polling.
//!
//! A pty master reports a hang-up while no process has the slave open, for as long as that
//! lasts: a level, not an event. A loop that watches it spins (cloud-hypervisor #3170,
//! #4521); QEMU polls it once a second and loses what the guest writes in between. We keep a
//! slave fd of our own open instead, so the master never hangs up, and watch the slave
//! device with inotify: every open(2) of `/dev/pts/N` (through any path, a symlink
//! included) is an `IN_OPEN`, and the last close of each open file, by close(2), exit or
//! kill, an `IN_CLOSE_WRITE` or `IN_CLOSE_NOWRITE`. Opens minus closes, less our own, is the
//! number of terminals. A file shared by fork(2), dup(2) or SCM_RIGHTS counts once (it is
//! one terminal attachment); `O_PATH` opens make no events at all.
//!
//! Our own fd has a second use: what the guest wrote and the last terminal left unread stays
//! in the slave's input queue when that terminal closes, and we read it back from there.
//!
//! Counting has a gap: inotify merges an event with the one queued before it when both are
//! the same and that one is still unread. Two terminals that close within one loop turn
//! make one `IN_CLOSE_WRITE`, and the count would stay one too high for good (the last
//! terminal never seen to go). So when a close leaves the count saying that terminals
//! remain (two or more were attached: rare), the slave's users are counted from
//! `/proc/*/fd` ([`others_have_open`]): if none is left, only ours is. The scan costs about
//! 11 µs per fd on the host (6.5 ms for 588 fds, debug build), on the loop thread, which is
//! why it is not done at every close. Two terminals that open within one turn make one
//! `IN_OPEN`: the count is one too low, and when one of them closes the pty takes the other
//! for gone (output waits for it) until the next terminal comes. Not fixed: telling that
//! apart would need the scan at every close.
//!
//! The cost: one inotify instance per pty (`fs.inotify.max_user_instances`, often 128 per
//! user); without one the pty polls for the hang-up instead ([`Watch::Poll`]).
//!
//! [`Watch::Poll`]: crate::pty::Watch::Poll

use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};

/// A terminal came or went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Change {
    /// The first terminal opened the slave.
    Attached,
    /// The last terminal closed it.
    Detached,
}

/// inotify on a pty's slave, and our own fd on it.
#[derive(Debug)]
pub(crate) struct SlaveWatch {
    inotify: Inotify,
    /// Our slave fd: keeps the master from hanging up, and gives back unread output.
    own: File,
    /// The slave's path, to recount its users from `/proc` (see the module's text).
    slave: PathBuf,
    /// Files open on the slave, ours included, as the events so far tell.
    open: u64,
}

/// Starts watching `slave` for opens and closes. Call it while the slave is still locked,
/// so that no open can come before the watch.
pub(crate) fn watch(slave: &Path) -> io::Result<Inotify> {
    let inotify = Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC)?;
    let mask =
        AddWatchFlags::IN_OPEN | AddWatchFlags::IN_CLOSE_WRITE | AddWatchFlags::IN_CLOSE_NOWRITE;
    inotify.add_watch(slave, mask)?;
    Ok(inotify)
}

impl SlaveWatch {
    /// Completes a [`watch`] with our own fd on the (now unlocked) slave, and counts the
    /// opens so far: ours, and any a quick terminal made in between.
    pub(crate) fn start(inotify: Inotify, own: File, slave: &Path) -> SlaveWatch {
        let mut watch = SlaveWatch { inotify, own, slave: slave.to_path_buf(), open: 0 };
        watch.changes(&mut Vec::new());
        watch
    }

    /// How many files other than ours are open on the slave.
    pub(crate) fn terminals(&self) -> u64 {
        self.open.saturating_sub(1)
    }

    /// The inotify fd, readable when opens or closes are queued.
    pub(crate) fn fd(&self) -> BorrowedFd<'_> {
        self.inotify.as_fd()
    }

    /// Our own slave fd.
    pub(crate) fn own(&self) -> &File {
        &self.own
    }

    /// Reads every queued event and appends a [`Change`] for each time the number of
    /// terminals went from 0 to 1 or from 1 to 0, in order: a terminal that opens and closes
    /// between two calls still makes an `Attached` and a `Detached`.
    pub(crate) fn changes(&mut self, out: &mut Vec<Change>) {
        loop {
            let events = match self.inotify.read_events() {
                Ok(events) => events,
                Err(Errno::EAGAIN) => return,
                Err(Errno::EINTR) => continue,
                Err(e) => {
                    log::warn!("cannot read the inotify events of a pty slave: {e}");
                    return;
                }
            };
            for event in events {
                let before = self.terminals();
                if event.mask.contains(AddWatchFlags::IN_OPEN) {
                    self.open += 1;
                }
                if event.mask.intersects(AddWatchFlags::IN_CLOSE) {
                    self.open = self.open.saturating_sub(1);
                    // Terminals left, by the count: it may be one too high (merged closes).
                    if self.terminals() > 0
                        && others_have_open(&self.slave, self.own.as_raw_fd()) == Some(false)
                    {
                        self.open = 1;
                    }
                }
                if event.mask.contains(AddWatchFlags::IN_Q_OVERFLOW) {
                    // 16384 opens and closes between two loop iterations; the count may be off.
                    log::warn!(
                        "inotify queue of a pty slave overflowed; terminals may be miscounted"
                    );
                }
                match (before, self.terminals()) {
                    (0, 1..) => out.push(Change::Attached),
                    (1.., 0) => out.push(Change::Detached),
                    _ => {}
                }
            }
        }
    }

    /// Reads back what is still queued for the slave's readers (output the last terminal
    /// left unread) and appends it to `out`.
    pub(crate) fn take_unread(&self, out: &mut Vec<u8>) {
        let mut buf = [0u8; 4096];
        loop {
            match (&self.own).read(&mut buf) {
                Ok(0) => return,
                Ok(n) => out.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) => {
                    log::warn!("cannot read back unread pty output: {e}");
                    return;
                }
            }
        }
    }
}

/// Whether any process has `slave` open, our own fd `own` apart, from the links in
/// `/proc/*/fd`: `Some(false)` only when every process's fds could be read and none is on
/// the slave; `None` when some could not be read (another user's processes) and none of
/// those that could is on it. A file open in two processes (fork, SCM_RIGHTS) shows in both;
/// only whether there is one matters here.
pub(crate) fn others_have_open(slave: &Path, own: i32) -> Option<bool> {
    let (me, own) = (std::process::id().to_string(), own.to_string());
    let mut complete = true;
    let procs = std::fs::read_dir("/proc").ok()?;
    for proc in procs.flatten() {
        let name = proc.file_name();
        let Some(pid) = name.to_str().filter(|n| n.bytes().all(|b| b.is_ascii_digit())) else {
            continue;
        };
        let fds = match std::fs::read_dir(proc.path().join("fd")) {
            Ok(fds) => fds,
            // Gone meanwhile: it has nothing open.
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(_) => {
                complete = false;
                continue;
            }
        };
        for fd in fds.flatten() {
            if pid == me && fd.file_name().to_str() == Some(own.as_str()) {
                continue;
            }
            if std::fs::read_link(fd.path()).is_ok_and(|target| target == slave) {
                return Some(true);
            }
        }
    }
    complete.then_some(false)
}

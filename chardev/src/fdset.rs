//! Fds from a management layer: names from `getfd` ([`NamedFds`], private to one monitor)
//! and fd sets from `add-fd` ([`FdSets`], shared by the process), and [`open_path`], the one
//! function through which every chardev opens a path, so that `/dev/fdset/N` works wherever
//! a path does (QEMU's `qemu_open`).
//!
//! libvirt opens files itself and hands QEMU the fds: a file chardev's output and its
//! `logfile` (`add-fd`, then `path=/dev/fdset/N`), a pipe from virtlogd, a listening socket
//! (`getfd`, then a socket address of type `fd`). The rules are QEMU's (`monitor/fds.c`,
//! `util/osdep.c`):
//!
//! - Opening `/dev/fdset/N` duplicates the first member whose access mode is the one asked
//!   for (`O_RDONLY`, `O_WRONLY`, `O_RDWR`), sets `O_APPEND` as asked, truncates when `open(2)`
//!   would, and clears `O_NONBLOCK` (the seed: what management passes is used blocking). The
//!   member's open file description is shared with the sender, so the sender sees those flags.
//! - A set lives while a chardev holds a duplicate of one of its fds ([`FdSetLease`]); members
//!   removed with `remove-fd` close at once, a set with no members and no lease goes away,
//!   and members of a set nobody uses close when the last monitor disconnects.
//!
//! Where a backend needs non-blocking I/O on such an fd (a pipe, a tty), [`open_path`] never
//! flips `O_NONBLOCK` on the description the sender shares (QEMU's fd backend does): it opens
//! a private description of the same file through `/proc/self/fd` instead.

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use nix::fcntl::{fcntl, FcntlArg, OFlag};

use crate::error::{Error, Result};
use crate::sync::lock;

/// The prefix of paths that name an fd set.
pub const FDSET_PREFIX: &str = "/dev/fdset/";

/// Fds passed to one monitor with `getfd`, by name. Each monitor has its own: a name one
/// client gave is not visible to another. The fds close when the store is dropped.
#[derive(Debug, Default)]
pub struct NamedFds {
    fds: BTreeMap<String, OwnedFd>,
}

impl NamedFds {
    /// `getfd NAME`: keeps `fd` under `name`, closing the fd an existing `name` had. A name
    /// that starts with a digit is refused (it would read as an fd number) and `fd` is closed.
    pub fn insert(&mut self, name: &str, fd: OwnedFd) -> Result<()> {
        if name.starts_with(|c: char| c.is_ascii_digit()) {
            return Err(Error::Fd(
                "Parameter 'fdname' expects a name not starting with a digit".into(),
            ));
        }
        self.fds.insert(name.to_string(), fd);
        Ok(())
    }

    /// `closefd NAME`.
    pub fn close(&mut self, name: &str) -> Result<()> {
        self.fds
            .remove(name)
            .map(drop)
            .ok_or_else(|| Error::Fd(format!("File descriptor named '{name}' not found")))
    }

    /// Takes the fd named `name` for good (`migrate fd:NAME`, a socket address of type
    /// `fd`): the name is gone afterwards, and the caller closes the fd by dropping it.
    pub fn take(&mut self, name: &str) -> Result<OwnedFd> {
        self.fds
            .remove(name)
            .ok_or_else(|| Error::Fd(format!("File descriptor named '{name}' has not been found")))
    }

    /// How many names are held.
    pub fn len(&self) -> usize {
        self.fds.len()
    }

    /// Whether no name is held.
    pub fn is_empty(&self) -> bool {
        self.fds.is_empty()
    }
}

/// What `add-fd` answers: the set the fd went into and the fd's number in this process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AddedFd {
    /// The set's id (`fdset-id`).
    pub fdset_id: i64,
    /// The number of our copy of the fd (`fd`), which `remove-fd` takes.
    pub fd: RawFd,
}

/// One set as `query-fdsets` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FdSetInfo {
    /// The set's id.
    pub fdset_id: i64,
    /// Its members.
    pub fds: Vec<FdSetFdInfo>,
}

/// One member of a set as `query-fdsets` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FdSetFdInfo {
    /// The fd's number in this process.
    pub fd: RawFd,
    /// The text given with `add-fd`, if any (libvirt puts the path there).
    pub opaque: Option<String>,
}

/// The fd sets of a process (`add-fd`, `remove-fd`, `query-fdsets`, `/dev/fdset/N`).
///
/// Cheap to clone; clones share the sets. QEMU has one store per process: give every monitor
/// and every [`Registry`](crate::Registry) of the process the same one
/// ([`Registry::fd_sets`](crate::Registry::fd_sets)).
#[derive(Clone, Default)]
pub struct FdSets {
    inner: Arc<Mutex<Sets>>,
}

impl std::fmt::Debug for FdSets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.query()).finish()
    }
}

#[derive(Default)]
struct Sets {
    /// Ordered by id.
    sets: Vec<Set>,
    /// Monitors connected now (QEMU's `mon_refcount`).
    monitors: usize,
    next_lease: u64,
}

struct Set {
    id: i64,
    /// In the order added.
    members: Vec<Member>,
    /// The leases of duplicates in use (QEMU's `dup_fds`).
    leases: Vec<u64>,
}

struct Member {
    fd: OwnedFd,
    removed: bool,
    opaque: Option<String>,
}

impl Sets {
    fn find(&mut self, id: i64) -> Option<usize> {
        self.sets.iter().position(|s| s.id == id)
    }

    /// Closes members that were removed, and, while no monitor is connected, the members of
    /// a set no chardev uses; forgets the set once it has neither members nor leases.
    fn cleanup(&mut self, index: usize) {
        let monitors = self.monitors;
        let set = &mut self.sets[index];
        let unused = set.leases.is_empty() && monitors == 0;
        set.members.retain(|m| !(m.removed || unused));
        if set.members.is_empty() && set.leases.is_empty() {
            self.sets.remove(index);
        }
    }
}

impl FdSets {
    /// An empty store.
    pub fn new() -> FdSets {
        FdSets::default()
    }

    fn lock(&self) -> MutexGuard<'_, Sets> {
        lock(&self.inner)
    }

    /// `add-fd`: puts `fd` into set `fdset_id`, or into a new set with the lowest id no set
    /// has. A negative id is refused, and `fd` is closed on any error.
    pub fn add(
        &self,
        fd: OwnedFd,
        fdset_id: Option<i64>,
        opaque: Option<String>,
    ) -> Result<AddedFd> {
        let mut sets = self.lock();
        let id = match fdset_id {
            Some(id) if id < 0 => {
                return Err(Error::Fd("Parameter 'fdset-id' expects a non-negative value".into()))
            }
            Some(id) => id,
            None => {
                let mut free = 0;
                for set in &sets.sets {
                    if set.id != free {
                        break;
                    }
                    free += 1;
                }
                free
            }
        };
        let index = match sets.sets.binary_search_by_key(&id, |s| s.id) {
            Ok(i) => i,
            Err(i) => {
                sets.sets.insert(i, Set { id, members: Vec::new(), leases: Vec::new() });
                i
            }
        };
        let number = fd.as_raw_fd();
        sets.sets[index].members.push(Member { fd, removed: false, opaque });
        Ok(AddedFd { fdset_id: id, fd: number })
    }

    /// `remove-fd`: removes one member (`fd`), or every member of the set. Removed members
    /// close at once; the set itself stays while a chardev holds a duplicate.
    pub fn remove(&self, fdset_id: i64, fd: Option<i64>) -> Result<()> {
        let mut sets = self.lock();
        let not_found = || {
            let what = match fd {
                Some(fd) => format!("fdset-id:{fdset_id}, fd:{fd}"),
                None => format!("fdset-id:{fdset_id}"),
            };
            Error::Fd(format!("File descriptor named '{what}' not found"))
        };
        let index = sets.find(fdset_id).ok_or_else(not_found)?;
        let members = &mut sets.sets[index].members;
        match fd {
            Some(fd) => {
                let member = members
                    .iter_mut()
                    .find(|m| i64::from(m.fd.as_raw_fd()) == fd)
                    .ok_or_else(not_found)?;
                member.removed = true;
            }
            None => members.iter_mut().for_each(|m| m.removed = true),
        }
        sets.cleanup(index);
        Ok(())
    }

    /// `query-fdsets`, as QEMU 7.2 lists them: sets by descending id, each set's members in
    /// the order they were added.
    pub fn query(&self) -> Vec<FdSetInfo> {
        self.lock()
            .sets
            .iter()
            .rev()
            .map(|s| FdSetInfo {
                fdset_id: s.id,
                fds: s
                    .members
                    .iter()
                    .map(|m| FdSetFdInfo { fd: m.fd.as_raw_fd(), opaque: m.opaque.clone() })
                    .collect(),
            })
            .collect()
    }

    /// A monitor connected: while any is, sets nobody uses are kept.
    pub fn monitor_opened(&self) {
        self.lock().monitors += 1;
    }

    /// A monitor disconnected: with none left, the members of sets no chardev uses close
    /// (QEMU's `monitor_fdsets_cleanup`).
    pub fn monitor_closed(&self) {
        let mut sets = self.lock();
        sets.monitors = sets.monitors.saturating_sub(1);
        for index in (0..sets.sets.len()).rev() {
            sets.cleanup(index);
        }
    }

    /// Opens a duplicate of a member of set `fdset_id` with `open(2)` semantics for `how`
    /// (see the module docs). The set stays alive until the lease is dropped.
    pub fn open(&self, fdset_id: i64, how: &OpenHow) -> Result<(OwnedFd, FdSetLease)> {
        let path = format!("{FDSET_PREFIX}{fdset_id}");
        // QEMU's texts first (management software matches them), then what to do.
        let fail = |source: io::Error| Error::Fd(format!("Could not open '{path}': {source}"));
        let mut sets = self.lock();
        let index = sets.find(fdset_id).ok_or_else(|| {
            Error::Fd(format!(
                "Could not open '{path}': No such file or directory (no fd set {fdset_id}; \
                 add one with add-fd)"
            ))
        })?;
        let wanted = how.access_mode();
        let set = &sets.sets[index];
        let mut modes = Vec::new();
        let mut chosen = None;
        for member in set.members.iter().filter(|m| !m.removed) {
            let flags = fcntl(member.fd.as_fd(), FcntlArg::F_GETFL).map_err(|e| fail(e.into()))?;
            let mode = OFlag::from_bits_retain(flags) & OFlag::O_ACCMODE;
            if mode == wanted {
                chosen = Some(&member.fd);
                break;
            }
            modes.push(access_name(mode));
        }
        let Some(member) = chosen else {
            let has = if modes.is_empty() { "no fds".to_string() } else { modes.join(", ") };
            return Err(Error::Fd(format!(
                "Could not open '{path}': Permission denied (the set has no fd opened {}, it \
                 has {has}; pass one with add-fd)",
                access_name(wanted)
            )));
        };
        let dup = member.try_clone().map_err(fail)?;
        apply_open_flags(&dup, how).map_err(fail)?;
        sets.next_lease += 1;
        let lease = sets.next_lease;
        sets.sets[index].leases.push(lease);
        Ok((dup, FdSetLease { sets: Arc::downgrade(&self.inner), fdset_id, lease }))
    }
}

/// A chardev's hold on an fd set: the set stays alive while the lease does (QEMU keeps a
/// duplicate's number in the set's `dup_fds` for the same purpose).
pub struct FdSetLease {
    sets: Weak<Mutex<Sets>>,
    fdset_id: i64,
    lease: u64,
}

impl std::fmt::Debug for FdSetLease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FdSetLease").field("fdset_id", &self.fdset_id).finish()
    }
}

impl Drop for FdSetLease {
    fn drop(&mut self) {
        let Some(inner) = self.sets.upgrade() else { return };
        let mut sets = lock(&inner);
        let Some(index) = sets.find(self.fdset_id) else { return };
        let leases = &mut sets.sets[index].leases;
        leases.retain(|l| *l != self.lease);
        if leases.is_empty() {
            sets.cleanup(index);
        }
    }
}

/// How a chardev opens a path: what `open(2)` would be given.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OpenHow {
    /// Open for reading.
    pub read: bool,
    /// Open for writing.
    pub write: bool,
    /// Create the file if it is missing (mode 0666, less the umask).
    pub create: bool,
    /// Append (`O_APPEND`).
    pub append: bool,
    /// Truncate a regular file (`O_TRUNC`).
    pub truncate: bool,
    /// The chardev reads and writes without blocking its loop (`O_NONBLOCK` on its own
    /// description, never on one it shares with a sender).
    pub nonblocking: bool,
    /// Never make a terminal our controlling terminal (`O_NOCTTY`).
    pub noctty: bool,
}

impl OpenHow {
    /// Output to a file: created, appended to or truncated.
    pub fn output(append: bool) -> OpenHow {
        OpenHow { write: true, create: true, append, truncate: !append, ..OpenHow::default() }
    }

    fn access_mode(&self) -> OFlag {
        match (self.read, self.write) {
            (true, true) => OFlag::O_RDWR,
            (false, true) => OFlag::O_WRONLY,
            _ => OFlag::O_RDONLY,
        }
    }
}

fn access_name(mode: OFlag) -> &'static str {
    if mode == OFlag::O_RDWR {
        "O_RDWR"
    } else if mode == OFlag::O_WRONLY {
        "O_WRONLY"
    } else {
        "O_RDONLY"
    }
}

/// QEMU's `qemu_dup_flags`: what `open(2)` would have done to a new description, done to a
/// duplicate of a passed one. `O_APPEND` as asked, `O_NONBLOCK` cleared, a regular file
/// truncated when asked (`open(2)` ignores `O_TRUNC` on a fifo or a tty).
fn apply_open_flags(fd: &OwnedFd, how: &OpenHow) -> io::Result<()> {
    let flags = OFlag::from_bits_retain(fcntl(fd.as_fd(), FcntlArg::F_GETFL)?);
    let mut new = flags - OFlag::O_NONBLOCK;
    new.set(OFlag::O_APPEND, how.append);
    if new != flags {
        fcntl(fd.as_fd(), FcntlArg::F_SETFL(new))?;
    }
    if how.truncate && !how.append {
        let file = std::fs::File::from(fd.try_clone()?);
        if file.metadata()?.is_file() {
            file.set_len(0)?;
        }
    }
    Ok(())
}

/// What [`open_path`] hands back: the fd, and the lease that keeps its fd set alive when it
/// came from one.
#[derive(Debug)]
pub struct Opened {
    /// The open fd.
    pub fd: OwnedFd,
    /// Held while the fd is in use when it came from `/dev/fdset/N`.
    pub lease: Option<FdSetLease>,
}

/// Parses the `N` of `/dev/fdset/N`; `None` when `path` does not start with the prefix.
pub fn fdset_id(path: &Path) -> Option<Result<i64>> {
    let text = path.to_str()?;
    let id = text.strip_prefix(FDSET_PREFIX)?;
    Some(
        id.parse::<i64>()
            .ok()
            .filter(|n| *n >= 0 && id.bytes().all(|b| b.is_ascii_digit()))
            .ok_or_else(|| {
                Error::Fd(format!(
                    "Could not open '{text}': Invalid argument (not an fd set number)"
                ))
            }),
    )
}

/// Opens `path` for a chardev: `/dev/fdset/N` from `sets` (see the module docs), anything
/// else with `open(2)`. The fd is close-on-exec; it is non-blocking only when `how` asks, and
/// then on a description of its own.
pub fn open_path(path: &Path, how: &OpenHow, sets: &FdSets) -> Result<Opened> {
    let Some(id) = fdset_id(path) else {
        let mut options = OpenOptions::new();
        options.read(how.read).write(how.write || how.append).append(how.append);
        options.create(how.create).truncate(how.truncate && !how.append).mode(0o666);
        let mut custom = 0;
        if how.nonblocking {
            custom |= nix::libc::O_NONBLOCK;
        }
        if how.noctty {
            custom |= nix::libc::O_NOCTTY;
        }
        options.custom_flags(custom);
        let file = options.open(path).map_err(|e| Error::io_path("open", path, e))?;
        return Ok(Opened { fd: file.into(), lease: None });
    };
    let (dup, lease) = sets.open(id?, how)?;
    if !how.nonblocking {
        return Ok(Opened { fd: dup, lease: Some(lease) });
    }
    let file = std::fs::File::from(dup);
    let kind = file.metadata().map_err(|e| Error::io_path("inspect", path, e))?.file_type();
    if kind.is_file() || kind.is_block_device() {
        // A disk never blocks for long, and a second description would lose the sender's
        // shared offset.
        return Ok(Opened { fd: file.into(), lease: Some(lease) });
    }
    if kind.is_socket() {
        return Err(Error::io_path(
            "open",
            path,
            io::Error::new(
                io::ErrorKind::Unsupported,
                "a socket in an fd set cannot be reopened non-blocking without changing the \
                 sender's copy; pass it with getfd to a socket chardev instead",
            ),
        ));
    }
    // A pipe or a tty: a private description of the same file, so that O_NONBLOCK stays ours.
    let proc_path = format!("/proc/self/fd/{}", file.as_raw_fd());
    let mut options = OpenOptions::new();
    options.read(how.read).write(how.write || how.append).append(how.append);
    options.custom_flags(nix::libc::O_NONBLOCK | nix::libc::O_NOCTTY);
    let private = options.open(&proc_path).map_err(|e| {
        Error::io_path("open a private description (through /proc/self/fd) of", path, e)
    })?;
    Ok(Opened { fd: private.into(), lease: Some(lease) })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pipe_fd() -> OwnedFd {
        let (r, _w) = nix::unistd::pipe().unwrap();
        r
    }

    #[test]
    fn new_sets_take_the_lowest_free_id_and_query_lists_them_by_descending_id() {
        let sets = FdSets::new();
        assert_eq!(sets.add(pipe_fd(), None, None).unwrap().fdset_id, 0);
        assert_eq!(sets.add(pipe_fd(), Some(2), Some("x".into())).unwrap().fdset_id, 2);
        assert_eq!(sets.add(pipe_fd(), None, None).unwrap().fdset_id, 1);
        assert_eq!(sets.add(pipe_fd(), None, None).unwrap().fdset_id, 3);
        let ids: Vec<i64> = sets.query().iter().map(|s| s.fdset_id).collect();
        assert_eq!(ids, [3, 2, 1, 0]);
        assert!(sets.add(pipe_fd(), Some(-1), None).is_err());
    }

    #[test]
    fn removed_members_close_and_an_empty_set_goes() {
        let sets = FdSets::new();
        sets.monitor_opened();
        let a = sets.add(pipe_fd(), Some(7), None).unwrap();
        let b = sets.add(pipe_fd(), Some(7), Some("b".into())).unwrap();
        sets.remove(7, Some(i64::from(a.fd))).unwrap();
        assert_eq!(
            sets.query(),
            [FdSetInfo {
                fdset_id: 7,
                fds: vec![FdSetFdInfo { fd: b.fd, opaque: Some("b".into()) }]
            }]
        );
        let err = sets.remove(7, Some(i64::from(a.fd))).unwrap_err().to_string();
        assert_eq!(err, format!("File descriptor named 'fdset-id:7, fd:{}' not found", a.fd));
        sets.remove(7, None).unwrap();
        assert!(sets.query().is_empty());
    }

    #[test]
    fn a_lease_keeps_the_set_and_unused_sets_close_with_the_last_monitor() {
        let sets = FdSets::new();
        sets.monitor_opened();
        let (r, w) = nix::unistd::pipe().unwrap();
        sets.add(w, Some(1), None).unwrap();
        sets.add(r, Some(2), None).unwrap();
        let how = OpenHow { write: true, ..OpenHow::default() };
        let (_dup, lease) = sets.open(1, &how).unwrap();
        sets.remove(1, None).unwrap();
        assert_eq!(sets.query()[1], FdSetInfo { fdset_id: 1, fds: vec![] });
        sets.monitor_closed();
        // Set 2 was unused: gone with the last monitor. Set 1 waits for its lease.
        assert_eq!(sets.query(), [FdSetInfo { fdset_id: 1, fds: vec![] }]);
        drop(lease);
        assert!(sets.query().is_empty());
    }

    #[test]
    fn fdset_paths_parse_strictly() {
        assert_eq!(fdset_id(Path::new("/dev/fdset/12")).unwrap().unwrap(), 12);
        assert!(fdset_id(Path::new("/dev/fdset/1x")).unwrap().is_err());
        assert!(fdset_id(Path::new("/dev/fdset/-1")).unwrap().is_err());
        assert!(fdset_id(Path::new("/dev/fdset/")).unwrap().is_err());
        assert!(fdset_id(Path::new("/tmp/x")).is_none());
    }
}

//! The registry: chardevs by id, as QEMU's `-chardev`, `chardev-add`, `chardev-remove`,
//! `chardev-change` and `query-chardev` see them.
//!
//! The core knows no transport: backends are built from a [`ChardevSpec`] by constructors
//! registered under their type name. `chardev-socket` and `chardev-pty` each offer one call
//! that registers theirs; the core registers `null`, `file`, `pipe`, `ringbuf`, `stdio` and
//! `hub`.

use std::collections::BTreeMap;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use crate::backend::{downcast_mut, Chardev};
use crate::cell::{Cell, Opened, Removed};
use crate::error::{Error, Result};
use crate::event_loop::{LoopHandle, Request};
use crate::fdset::{self, FdSetLease, FdSets, NamedFds, OpenHow};
use crate::frontend::{Event, FrontendHandle};
use crate::logfile::Log;
use crate::objects::Object;
use crate::options::ChardevSpec;
use crate::sessions::{SessionEvent, SessionEvents, SessionInfo};
use crate::sync::lock;

/// What a constructor is told besides the spec, and how it opens what the spec names.
#[derive(Debug)]
pub struct BuildContext<'a> {
    /// The id of the chardev being built (the pty banner names it).
    pub id: &'a str,
    /// The loop the chardev will live on.
    pub loop_handle: &'a LoopHandle,
    fd_sets: &'a FdSets,
    named_fds: Option<&'a Mutex<NamedFds>>,
    leases: Mutex<Vec<FdSetLease>>,
    notices: NoticeHandler,
    session_events: SessionEvents,
    registry: &'a Registry,
}

impl BuildContext<'_> {
    /// Where a backend with sessions reports them opening and closing
    /// ([`Registry::on_session_event`]).
    pub fn session_events(&self) -> SessionEvents {
        self.session_events.clone()
    }

    /// Opens a path the spec names, as every backend must: `/dev/fdset/N` is a member of the
    /// registry's fd sets (kept alive while the chardev lives), anything else is opened with
    /// `open(2)`. See [`fdset::open_path`].
    pub fn open(&self, path: &Path, how: &OpenHow) -> Result<OwnedFd> {
        let opened = fdset::open_path(path, how, self.fd_sets)?;
        if let Some(lease) = opened.lease {
            lock(&self.leases).push(lease);
        }
        Ok(opened.fd)
    }

    /// Tells the embedder something it may want to show its user while this chardev is
    /// built ([`Registry::on_build_notice`]); nothing if it did not ask. Backends also log
    /// it: a library does not print.
    pub fn notify(&self, notice: &BuildNotice) {
        if let Some(handler) = &self.notices.0 {
            handler(notice);
        }
    }

    /// Claims chardev `id` as a frontend of the chardev being built, for a backend that sits
    /// on other chardevs (a `hub`): the handle it reads and writes them through. Dropping
    /// the handle (as the backend is dropped, or when a later step of the build fails)
    /// releases the chardev, so nothing stays claimed.
    ///
    /// Errors: [`Error::NotFound`] when no chardev has that id (the chardev being built
    /// among them: it does not exist yet); [`Error::WrongBackend`] with `kind` `"mux"` or
    /// `"hub"` for a mux (`mux=on`) or a hub, which cannot be stacked; [`Error::InUse`] when a
    /// frontend has it already (the base `ID-base` of a mux included).
    ///
    /// Constructors run with no registry lock held, so this may look chardevs up; they may
    /// run on the loop's thread (QMP's `chardev-add`), so nothing here waits for the loop.
    pub fn claim_member(&self, id: &str) -> Result<FrontendHandle> {
        let record = self.registry.record(id)?;
        let stacked = match record.role {
            Role::Mux => Some("mux"),
            Role::MuxBase => None,
            Role::Plain => (record.cell.backend().kind() == "hub").then_some("hub"),
        };
        if let Some(kind) = stacked {
            return Err(Error::WrongBackend {
                id: id.to_string(),
                kind,
                expected: "chardev that is neither a mux nor a hub",
            });
        }
        if record.role == Role::MuxBase {
            return Err(Error::InUse(id.to_string()));
        }
        FrontendHandle::claim(record.cell)
    }

    /// The object `id` names, for option `key` of the chardev being built (`tls-creds`,
    /// `tls-authz`): an error naming the key and the id when there is none.
    pub fn object(&self, key: &str, id: &str) -> Result<Arc<Object>> {
        self.registry.object(id).ok_or_else(|| {
            let what = if key == "tls-authz" { "authorization object" } else { "TLS credentials" };
            Error::option(key, id, format!("No {what} with id '{id}'"))
        })
    }

    /// Takes the fd a socket address of type `fd` names. Added from a monitor
    /// ([`Registry::add_with_fds`]), `name` is looked up among the fds passed to that monitor
    /// with `getfd`, and taken for good, as QEMU does (a string of digits is a name there
    /// too); added from a command line, it is the number of an inherited fd.
    pub fn take_fd(&self, name: &str) -> Result<OwnedFd> {
        match self.named_fds {
            Some(named) => lock(named).take(name),
            None => {
                let number: i32 = name.parse().map_err(|_| {
                    Error::option(
                        "fd",
                        name,
                        "must be a file descriptor number (named fds need a monitor)",
                    )
                })?;
                crate::fd::take_inherited(number)
            }
        }
    }
}

/// What a backend reports while it is built, before [`Registry::add`] returns: what QEMU
/// prints at that point, for an embedder that wants to show it
/// ([`Registry::on_build_notice`]).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum BuildNotice {
    /// A socket server with `wait=on` waits for its first client, and the add returns once
    /// it has come. QEMU prints `QEMU waiting for connection on: {filename}`.
    WaitingForClient {
        /// The chardev's id.
        id: String,
        /// What `query-chardev` shows for it meanwhile (`disconnected:unix:/p,server=on`).
        filename: String,
    },
    /// A `pty` chardev was made. QEMU prints `char device redirected to {path} (label {id})`,
    /// and scripts find the slave in that line.
    PtyOpened {
        /// The chardev's id.
        id: String,
        /// The pty's slave (`/dev/pts/N`), where a terminal attaches.
        path: PathBuf,
    },
}

/// What [`Registry::on_build_notice`] keeps.
type NoticeFn = dyn Fn(&BuildNotice) + Send + Sync;

/// The embedder's handler of [`BuildNotice`]s, if it set one.
#[derive(Clone, Default)]
struct NoticeHandler(Option<Arc<NoticeFn>>);

impl std::fmt::Debug for NoticeHandler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() { "NoticeHandler(set)" } else { "NoticeHandler(none)" })
    }
}

/// Builds a backend of one type from a spec.
pub type Constructor =
    Arc<dyn Fn(&ChardevSpec, &BuildContext<'_>) -> Result<Box<dyn Chardev>> + Send + Sync>;

/// What `chardev-add` and `chardev-change` report back.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Added {
    /// The slave path of a new pty (QMP's `{"pty": ...}`).
    pub pty: Option<PathBuf>,
}

/// One line of `query-chardev`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChardevInfo {
    /// The chardev's id.
    pub label: String,
    /// Where it is connected, in QEMU's format (`file`, `unix:/p,server=on`, `pty:/dev/pts/3`).
    pub filename: String,
    /// Whether a frontend has its callbacks installed.
    pub frontend_open: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Role {
    Plain,
    /// The mux chardev `ID` of `mux=on`; frontends attach here.
    Mux,
    /// The backend `ID-base` under a mux; the mux is its frontend.
    MuxBase,
}

#[derive(Clone)]
struct Record {
    cell: Arc<Cell>,
    role: Role,
}

/// QEMU's error for an object id that is taken.
fn duplicate_object(id: &str) -> Error {
    Error::option(
        "id",
        id,
        format!("attempt to add duplicate property '{id}' to object (type 'container')"),
    )
}

/// A backend's check of an object kind it uses ([`Registry::register_object_check`]).
type ObjectCheck = Arc<dyn Fn(&Object) -> Result<()> + Send + Sync>;

struct Inner {
    chardevs: BTreeMap<String, Record>,
    constructors: BTreeMap<String, Constructor>,
    objects: BTreeMap<String, Arc<Object>>,
    object_checks: BTreeMap<String, ObjectCheck>,
    notices: NoticeHandler,
    session_events: SessionEvents,
}

/// Chardevs by id on one event loop. Cheap to clone; every clone sees the same chardevs.
#[derive(Clone)]
pub struct Registry {
    inner: Arc<Mutex<Inner>>,
    lp: LoopHandle,
    fd_sets: FdSets,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry").field("chardevs", &self.ids()).finish()
    }
}

impl Registry {
    /// A registry whose chardevs live on `loop_handle`'s loop, with the core backends known
    /// and fd sets of its own.
    pub fn new(loop_handle: &LoopHandle) -> Registry {
        Registry::with_fd_sets(loop_handle, FdSets::new())
    }

    /// A registry that opens `/dev/fdset/N` from `fd_sets`: give every registry of a process
    /// the same sets, as QEMU has one store per process.
    pub fn with_fd_sets(loop_handle: &LoopHandle, fd_sets: FdSets) -> Registry {
        let registry = Registry {
            inner: Arc::new(Mutex::new(Inner {
                chardevs: BTreeMap::new(),
                constructors: BTreeMap::new(),
                objects: BTreeMap::new(),
                object_checks: BTreeMap::new(),
                notices: NoticeHandler::default(),
                session_events: SessionEvents::default(),
            })),
            lp: loop_handle.clone(),
            fd_sets,
        };
        crate::backends::register_core(&registry);
        registry
    }

    /// The fd sets this registry's chardevs open `/dev/fdset/N` from (`add-fd` fills them).
    pub fn fd_sets(&self) -> &FdSets {
        &self.fd_sets
    }

    fn inner(&self) -> MutexGuard<'_, Inner> {
        lock(&self.inner)
    }

    /// The loop this registry's chardevs live on.
    pub fn loop_handle(&self) -> &LoopHandle {
        &self.lp
    }

    /// Makes backends of type `kind` buildable (replacing an earlier constructor).
    pub fn register_backend(
        &self,
        kind: &str,
        constructor: impl Fn(&ChardevSpec, &BuildContext<'_>) -> Result<Box<dyn Chardev>>
            + Send
            + Sync
            + 'static,
    ) {
        self.inner().constructors.insert(kind.to_string(), Arc::new(constructor));
    }

    /// Makes objects of type `kind` (`tls-creds-x509`) checked by `check` when they are
    /// added: a backend that uses them loads what they name, so that bad files are an
    /// error of `-object` / `object-add`, as in QEMU.
    pub fn register_object_check(
        &self,
        kind: &str,
        check: impl Fn(&Object) -> Result<()> + Send + Sync + 'static,
    ) {
        self.inner().object_checks.insert(kind.to_string(), Arc::new(check));
    }

    /// Adds an object (`-object`, `object-add`), checked first by the check its kind has
    /// ([`register_object_check`](Self::register_object_check)). Nothing is added on error.
    pub fn add_object(&self, object: Object) -> Result<()> {
        let check = {
            let inner = self.inner();
            if inner.objects.contains_key(&object.id) {
                return Err(duplicate_object(&object.id));
            }
            inner.object_checks.get(object.spec.kind()).cloned()
        };
        // Loading files runs without the lock: other calls need not wait for a disk.
        if let Some(check) = check {
            check(&object)?;
        }
        let mut inner = self.inner();
        if inner.objects.contains_key(&object.id) {
            return Err(duplicate_object(&object.id));
        }
        inner.objects.insert(object.id.clone(), Arc::new(object));
        Ok(())
    }

    /// Parses QEMU's `-object` syntax and adds the object.
    pub fn add_object_str(&self, spec: &str) -> Result<()> {
        self.add_object(spec.parse()?)
    }

    /// Removes an object (`object-del`). Chardevs made with it keep what they loaded from
    /// it, as QEMU's keep their reference; new chardevs can no longer name it.
    pub fn remove_object(&self, id: &str) -> Result<()> {
        match self.inner().objects.remove(id) {
            Some(_) => Ok(()),
            None => Err(Error::option("id", id, format!("object '{id}' not found"))),
        }
    }

    /// The object with this id.
    pub fn object(&self, id: &str) -> Option<Arc<Object>> {
        self.inner().objects.get(id).cloned()
    }

    /// Every object, by id.
    pub fn objects(&self) -> Vec<Arc<Object>> {
        self.inner().objects.values().cloned().collect()
    }

    /// Calls `handler` with what backends report while they are built (a `wait=on` server
    /// waiting for its first client), on the thread that adds the chardev, before the add
    /// returns: for a program that shows its user what QEMU prints (the demos print QEMU's
    /// lines). Replaces an earlier handler; every clone of this registry uses it.
    pub fn on_build_notice(&self, handler: impl Fn(&BuildNotice) + Send + Sync + 'static) {
        self.inner().notices = NoticeHandler(Some(Arc::new(handler)));
    }

    /// The backend types that can be built (`query-chardev-backends`).
    pub fn backends(&self) -> Vec<String> {
        self.inner().constructors.keys().cloned().collect()
    }

    /// The ids of all chardevs, in order.
    pub fn ids(&self) -> Vec<String> {
        self.inner().chardevs.keys().cloned().collect()
    }

    /// Whether a chardev has this id.
    pub fn contains(&self, id: &str) -> bool {
        self.inner().chardevs.contains_key(id)
    }

    /// Parses QEMU's `-chardev` syntax and adds the chardev.
    pub fn add_str(&self, spec: &str) -> Result<Added> {
        self.add(&spec.parse()?)
    }

    /// Creates a chardev (and its `ID-base` when `mux=on`). Nothing is created on error.
    /// A socket address of type `fd` is an inherited fd number.
    pub fn add(&self, spec: &ChardevSpec) -> Result<Added> {
        self.add_inner(spec, None)
    }

    /// [`add`](Self::add) for a monitor: a socket address of type `fd` names an fd passed to
    /// that monitor with `getfd` (taken out of `named`, and closed if the add fails).
    pub fn add_with_fds(&self, spec: &ChardevSpec, named: &Mutex<NamedFds>) -> Result<Added> {
        self.add_inner(spec, Some(named))
    }

    fn add_inner(&self, spec: &ChardevSpec, named: Option<&Mutex<NamedFds>>) -> Result<Added> {
        let base_id = format!("{}-base", spec.id);
        let taken = |inner: &Inner| {
            if inner.chardevs.contains_key(&spec.id) {
                return Err(Error::Exists(spec.id.clone()));
            }
            if spec.mux && inner.chardevs.contains_key(&base_id) {
                return Err(Error::Exists(base_id.clone()));
            }
            Ok(())
        };
        taken(&self.inner())?;
        let (backend, opened) = self.build(spec, named)?;
        let added = Added { pty: backend.pty_path() };
        let cell = Arc::new(Cell::new(spec.id.clone(), backend, self.lp.clone(), opened, spec.mux));
        {
            let mut inner = self.inner();
            // The build ran unlocked (a server may wait for its first client): check again.
            if let Err(e) = taken(&inner) {
                drop(inner);
                retire(&cell, &self.lp);
                return Err(e);
            }
            if spec.mux {
                inner
                    .chardevs
                    .insert(spec.id.clone(), Record { cell: Arc::clone(&cell), role: Role::Mux });
                inner
                    .chardevs
                    .insert(base_id, Record { cell: Arc::clone(&cell), role: Role::MuxBase });
            } else {
                inner
                    .chardevs
                    .insert(spec.id.clone(), Record { cell: Arc::clone(&cell), role: Role::Plain });
            }
        }
        self.lp.post(Request::Place(cell));
        Ok(added)
    }

    /// Adds a backend the embedder built itself (one of its own [`Chardev`] types) under `id`.
    pub fn add_chardev(&self, id: &str, backend: Box<dyn Chardev>) -> Result<Added> {
        let added = Added { pty: backend.pty_path() };
        let cell =
            Arc::new(Cell::new(id.to_string(), backend, self.lp.clone(), Opened::default(), false));
        {
            let mut inner = self.inner();
            if inner.chardevs.contains_key(id) {
                drop(inner);
                retire(&cell, &self.lp);
                return Err(Error::Exists(id.to_string()));
            }
            inner
                .chardevs
                .insert(id.to_string(), Record { cell: Arc::clone(&cell), role: Role::Plain });
        }
        self.lp.post(Request::Place(cell));
        Ok(added)
    }

    fn build(
        &self,
        spec: &ChardevSpec,
        named_fds: Option<&Mutex<NamedFds>>,
    ) -> Result<(Box<dyn Chardev>, Opened)> {
        let kind = spec.backend.kind();
        let (constructor, notices) = {
            let inner = self.inner();
            let constructor = inner
                .constructors
                .get(kind)
                .cloned()
                .ok_or_else(|| Error::UnknownBackend(kind.to_string()))?;
            (constructor, (inner.notices.clone(), inner.session_events.clone()))
        };
        let (notices, session_events) = notices;
        let cx = BuildContext {
            id: &spec.id,
            loop_handle: &self.lp,
            fd_sets: &self.fd_sets,
            named_fds,
            leases: Mutex::default(),
            notices,
            session_events,
            registry: self,
        };
        // QEMU opens the logfile first: a bad one leaves no backend behind.
        let log = match &spec.log {
            Some(log) => {
                Some(Log::open(log, spec.overflow, &cx).map_err(|e| log_error(e, &log.path))?)
            }
            None => None,
        };
        let backend = constructor(spec, &cx)?;
        let leases = cx.leases.into_inner().unwrap_or_else(PoisonError::into_inner);
        Ok((backend, Opened { log, leases, overflow: spec.overflow }))
    }

    fn record(&self, id: &str) -> Result<Record> {
        self.inner().chardevs.get(id).cloned().ok_or_else(|| Error::NotFound(id.to_string()))
    }

    /// Claims the chardev for a frontend (QEMU's `qemu_chr_fe_init`). A plain chardev takes
    /// one frontend, a mux up to four; the handle's callbacks are set with
    /// [`FrontendHandle::set_frontend`].
    pub fn connect(&self, id: &str) -> Result<FrontendHandle> {
        let record = self.record(id)?;
        if record.role == Role::MuxBase {
            return Err(Error::InUse(id.to_string()));
        }
        FrontendHandle::claim(record.cell)
    }

    /// Removes a chardev that no frontend uses ("Chardev 'X' is busy" otherwise). Its fds are
    /// closed (and a server's socket file removed) before this returns.
    pub fn remove(&self, id: &str) -> Result<()> {
        self.remove_inner(id, false)
    }

    /// Removes a chardev even while a frontend uses it: the frontend sees `Closed`, and its
    /// handle's writes fail from now on.
    pub fn remove_forced(&self, id: &str) -> Result<()> {
        self.remove_inner(id, true)
    }

    fn remove_inner(&self, id: &str, force: bool) -> Result<()> {
        let cell = {
            let mut inner = self.inner();
            let record =
                inner.chardevs.get(id).cloned().ok_or_else(|| Error::NotFound(id.to_string()))?;
            let busy = match record.role {
                Role::MuxBase => true,
                Role::Plain | Role::Mux => record.cell.is_claimed(),
            };
            if busy && !force {
                return Err(Error::Busy(id.to_string()));
            }
            let mux_id = id.strip_suffix("-base").filter(|_| record.role == Role::MuxBase);
            let (label, base) = match mux_id {
                Some(mux) => (mux.to_string(), id.to_string()),
                None => (id.to_string(), format!("{id}-base")),
            };
            inner.chardevs.remove(&label);
            if record.role != Role::Plain {
                inner.chardevs.remove(&base);
            }
            record.cell
        };
        retire(&cell, &self.lp);
        self.lp.post(Request::Evict(cell));
        Ok(())
    }

    /// Replaces the backend under a live frontend (`chardev-change`): the frontend sees
    /// `Closed` for the old connection, then the new backend's `Opened`, and keeps its handle.
    /// A chardev without a frontend is simply removed and added again.
    pub fn change(&self, id: &str, spec: &ChardevSpec) -> Result<Added> {
        self.change_inner(id, spec, None)
    }

    /// [`change`](Self::change) for a monitor: a socket address of type `fd` names an fd
    /// passed to that monitor with `getfd`.
    pub fn change_with_fds(
        &self,
        id: &str,
        spec: &ChardevSpec,
        named: &Mutex<NamedFds>,
    ) -> Result<Added> {
        self.change_inner(id, spec, Some(named))
    }

    fn change_inner(
        &self,
        id: &str,
        spec: &ChardevSpec,
        named: Option<&Mutex<NamedFds>>,
    ) -> Result<Added> {
        let record = self.record(id)?;
        let hub = record.cell.backend().kind() == "hub";
        if record.role != Role::Plain || spec.mux || hub {
            return Err(Error::option(
                "id",
                id,
                "For mux or hub device hotswap is not supported yet",
            ));
        }
        let mut spec = spec.clone();
        spec.id = id.to_string();
        if !record.cell.is_claimed() {
            self.remove(id)?;
            return self.add_inner(&spec, named);
        }
        let (backend, opened) = self.build(&spec, named)?;
        let added = Added { pty: backend.pty_path() };
        let mut old = record.cell.replace_backend(backend);
        old.deregister(self.lp.registry());
        drop(old);
        record.cell.set_opened(opened);
        self.lp.post(Request::Swapped(record.cell));
        Ok(added)
    }

    /// What `query-chardev` shows, ordered by id.
    pub fn query(&self) -> Vec<ChardevInfo> {
        let records: Vec<(String, Record)> =
            self.inner().chardevs.iter().map(|(k, r)| (k.clone(), r.clone())).collect();
        records
            .into_iter()
            .map(|(label, r)| {
                let (filename, frontend_open) = match r.role {
                    Role::Plain => (r.cell.backend().filename(), r.cell.frontend_open()),
                    Role::Mux => ("mux".to_string(), r.cell.frontend_open()),
                    // QEMU 7.2 shows the base open only while the mux has a frontend.
                    Role::MuxBase => (r.cell.backend().filename(), r.cell.frontend_open()),
                };
                ChardevInfo { label, filename, frontend_open }
            })
            .collect()
    }

    /// Sends a break event to the chardev's frontend (`chardev-send-break`).
    pub fn send_break(&self, id: &str) -> Result<()> {
        let record = self.record(id)?;
        self.lp.post(Request::Raise { cell: record.cell, event: Event::Break });
        Ok(())
    }

    /// Runs `f` on the backend of chardev `id` as its concrete type `T`, in the caller's
    /// thread, with the backend locked (so `f` must not use this chardev's handle or the
    /// registry's calls on it). This is how management commands of one backend type reach
    /// it: `ringbuf-read` and `ringbuf-write` ([`Registry::ringbuf_read`], in
    /// `backends/ringbuf.rs`), or an embedder's commands for its own [`Chardev`] types.
    ///
    /// `NotFound` when no chardev has that id; `WrongBackend`, naming the id and what it is,
    /// when its backend is not a `T` (a mux `ID` itself never is: its backend is `ID-base`'s).
    pub fn with_backend<T: Chardev, R>(&self, id: &str, f: impl FnOnce(&mut T) -> R) -> Result<R> {
        let record = self.record(id)?;
        let wrong = |kind: &'static str| Error::WrongBackend {
            id: id.to_string(),
            kind,
            expected: short_type_name::<T>(),
        };
        if record.role == Role::Mux {
            return Err(wrong("mux"));
        }
        let mut backend = record.cell.backend();
        let kind = backend.kind();
        match downcast_mut::<T>(&mut **backend) {
            Some(typed) => Ok(f(typed)),
            None => Err(wrong(kind)),
        }
    }
}

/// Logfiles: reopened on request, for logrotate's `create` mode.
impl Registry {
    /// Opens the logfile of every chardev that has one again, by its path (logrotate
    /// renamed the file and created a new one, or expects us to): output queued or written
    /// from now on goes to the new file, nothing is lost. A log passed as `/dev/fdset/N` has
    /// no path and is left as it is. Every log is tried; the first error is returned.
    pub fn reopen_logs(&self) -> Result<()> {
        let mut cells: Vec<Arc<Cell>> = Vec::new();
        for record in self.inner().chardevs.values() {
            // A mux and its ID-base share one cell, and so one log.
            if !cells.iter().any(|c| Arc::ptr_eq(c, &record.cell)) {
                cells.push(Arc::clone(&record.cell));
            }
        }
        let mut first_error = None;
        for cell in cells {
            match cell.reopen_log() {
                Err(Error::Unsupported { .. }) | Ok(_) => {}
                Err(e) => {
                    log::warn!("chardev '{}': {e}", cell.label);
                    first_error.get_or_insert(e);
                }
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Opens the logfile of chardev `id` again (see [`Registry::reopen_logs`]).
    /// `NotFound` for no such chardev; `Unsupported` when it has no logfile, or one passed
    /// as `/dev/fdset/N`.
    pub fn reopen_log(&self, id: &str) -> Result<()> {
        let record = self.record(id)?;
        if record.cell.reopen_log()? {
            Ok(())
        } else {
            Err(Error::Unsupported {
                what: id.to_string(),
                operation: "reopen its logfile: it has none",
            })
        }
    }
}

/// What a chardev without sessions says it cannot do.
const NO_SESSIONS: &str =
    "show or steer sessions: only a socket server with clients= or history= has them";

/// Sessions and history: the chardevs that serve many connections at once.
impl Registry {
    /// Calls `handler` whenever a session of any chardev of this registry opens or closes
    /// (also of chardevs added before). It runs on the loop thread and must not block: queue
    /// the event (the demos put it on their QMP event bus). Replaces an earlier handler.
    pub fn on_session_event(&self, handler: impl Fn(&SessionEvent) + Send + Sync + 'static) {
        self.inner().session_events.set(Arc::new(handler));
    }

    /// Runs `f` on the [`Sessions`](crate::Sessions) of chardev `id`; `Unsupported` naming
    /// the chardev and its type if it has none (every backend but a socket server with
    /// `clients=` or `history=`).
    fn with_sessions<R>(
        &self,
        id: &str,
        operation: &'static str,
        f: impl FnOnce(&mut dyn crate::Sessions) -> Result<R>,
    ) -> Result<R> {
        let record = self.record(id)?;
        let mut backend = record.cell.backend();
        match backend.sessions() {
            Some(sessions) => f(sessions),
            None => Err(Error::Unsupported { what: id.to_string(), operation }),
        }
    }

    /// The sessions of chardev `id`, oldest first.
    pub fn sessions(&self, id: &str) -> Result<Vec<SessionInfo>> {
        self.with_sessions(id, NO_SESSIONS, |s| Ok(s.list()))
    }

    /// Ends session `session` of chardev `id`.
    pub fn disconnect_session(&self, id: &str, session: u64) -> Result<()> {
        self.with_sessions(id, NO_SESSIONS, |s| s.disconnect(session))
    }

    /// Makes session `session` of chardev `id` the one whose input reaches the frontend.
    pub fn set_session_writer(&self, id: &str, session: u64) -> Result<()> {
        self.with_sessions(id, NO_SESSIONS, |s| s.make_writer(session))
    }

    /// The counters of chardev `id` (see [`Counters`](crate::Counters)).
    pub fn counters(&self, id: &str) -> Result<crate::Counters> {
        Ok(self.record(id)?.cell.counters())
    }

    /// The last `max` bytes of chardev `id`'s history (all of it for `None`), without
    /// draining it: unlike `ringbuf-read`, the next reader gets them too. `Unsupported` for a
    /// chardev that keeps no history (see `history=`).
    pub fn history(&self, id: &str, max: Option<usize>) -> Result<Vec<u8>> {
        let record = self.record(id)?;
        let history = record.cell.backend().history(max);
        history.ok_or_else(|| Error::Unsupported {
            what: id.to_string(),
            operation: "read its history: it keeps none (only servers and ptys with history= do)",
        })
    }
}

/// `Ringbuf` for `chardev::backends::ringbuf::Ringbuf`: what an error names.
fn short_type_name<T>() -> &'static str {
    let name = std::any::type_name::<T>();
    // Generic arguments keep their paths; only the type's own path is cut.
    let path_end = name.find('<').unwrap_or(name.len());
    match name[..path_end].rfind("::") {
        Some(at) => &name[at + 2..],
        None => name,
    }
}

/// Drops a cell's backend now, in the caller's thread, so that its fds are closed and its
/// files removed when `remove` returns; the cell keeps an inert backend for stray handles.
fn retire(cell: &Arc<Cell>, lp: &LoopHandle) {
    cell.retired.store(true, Ordering::Release);
    let mut old = cell.replace_backend(Box::new(Removed { label: cell.label.clone() }));
    old.deregister(lp.registry());
    drop(old);
    cell.set_opened(Opened::default());
}

/// A `logfile=` that cannot be opened says so (QEMU: created 0666, truncated unless
/// `logappend=on`).
fn log_error(e: Error, path: &Path) -> Error {
    match e {
        Error::Io { source, .. } => Error::io_path("open logfile", path, source),
        other => other,
    }
}

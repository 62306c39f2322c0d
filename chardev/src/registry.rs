//! The registry: chardevs by id, as QEMU's `-chardev`, `chardev-add`, `chardev-remove`,
//! `chardev-change` and `query-chardev` see them.
//!
//! The core knows no transport: backends are built from a [`ChardevSpec`] by constructors
//! registered under their type name. `chardev-socket` and `chardev-pty` each offer one call
//! that registers theirs; the core registers `null`, `file`, `pipe`, `ringbuf` and `stdio`.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use crate::backends::ringbuf::Ringbuf;
use crate::cell::{Cell, Removed};
use crate::chardev::{downcast_mut, Chardev};
use crate::error::{Error, Result};
use crate::event_loop::{LoopHandle, Request};
use crate::frontend::{Event, FrontendHandle};
use crate::options::{ChardevSpec, LogSpec};

/// What a constructor is told besides the spec.
#[derive(Debug)]
pub struct BuildContext<'a> {
    /// The id of the chardev being built (the pty banner names it).
    pub id: &'a str,
    /// The loop the chardev will live on.
    pub loop_handle: &'a LoopHandle,
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

struct Inner {
    chardevs: BTreeMap<String, Record>,
    constructors: BTreeMap<String, Constructor>,
}

/// Chardevs by id on one event loop. Cheap to clone; every clone sees the same chardevs.
#[derive(Clone)]
pub struct Registry {
    inner: Arc<Mutex<Inner>>,
    lp: LoopHandle,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry").field("chardevs", &self.ids()).finish()
    }
}

impl Registry {
    /// A registry whose chardevs live on `loop_handle`'s loop, with the core backends known.
    pub fn new(loop_handle: &LoopHandle) -> Registry {
        let registry = Registry {
            inner: Arc::new(Mutex::new(Inner {
                chardevs: BTreeMap::new(),
                constructors: BTreeMap::new(),
            })),
            lp: loop_handle.clone(),
        };
        crate::backends::register_core(&registry);
        registry
    }

    fn inner(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
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
    pub fn add(&self, spec: &ChardevSpec) -> Result<Added> {
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
        let (backend, log) = self.build(spec)?;
        let added = Added { pty: backend.pty_path() };
        let cell = Arc::new(Cell::new(spec.id.clone(), backend, self.lp.clone(), log, spec.mux));
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
        self.lp.post(Request::Run(Box::new(move |core| core.place(cell))));
        Ok(added)
    }

    /// Adds a backend the embedder built itself (one of its own [`Chardev`] types) under `id`.
    pub fn add_chardev(&self, id: &str, backend: Box<dyn Chardev>) -> Result<Added> {
        let added = Added { pty: backend.pty_path() };
        let cell = Arc::new(Cell::new(id.to_string(), backend, self.lp.clone(), None, false));
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
        self.lp.post(Request::Run(Box::new(move |core| core.place(cell))));
        Ok(added)
    }

    fn build(&self, spec: &ChardevSpec) -> Result<(Box<dyn Chardev>, Option<File>)> {
        let kind = spec.backend.kind();
        let constructor = self
            .inner()
            .constructors
            .get(kind)
            .cloned()
            .ok_or_else(|| Error::UnknownBackend(kind.to_string()))?;
        let log = spec.log.as_ref().map(open_log).transpose()?;
        let backend = constructor(spec, &BuildContext { id: &spec.id, loop_handle: &self.lp })?;
        Ok((backend, log))
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
        LoopHandle::post_cell(&cell, |core, key| core.evict(key));
        Ok(())
    }

    /// Replaces the backend under a live frontend (`chardev-change`): the frontend sees
    /// `Closed` for the old connection, then the new backend's `Opened`, and keeps its handle.
    /// A chardev without a frontend is simply removed and added again.
    pub fn change(&self, id: &str, spec: &ChardevSpec) -> Result<Added> {
        let record = self.record(id)?;
        if record.role != Role::Plain || spec.mux {
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
            return self.add(&spec);
        }
        let (backend, log) = self.build(&spec)?;
        let added = Added { pty: backend.pty_path() };
        let mut old = record.cell.replace_backend(backend);
        old.deregister(self.lp.registry());
        drop(old);
        record.cell.set_log(log);
        LoopHandle::post_cell(&record.cell, |core, key| core.swapped(key));
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
        LoopHandle::post_cell(&record.cell, |core, key| core.raise(key, Event::Break));
        Ok(())
    }

    /// Appends to a ringbuf's ring (`ringbuf-write`; the frontend does not see it).
    pub fn ringbuf_write(&self, id: &str, data: &[u8]) -> Result<()> {
        self.with_ringbuf(id, |rb| rb.push(data))
    }

    /// Takes up to `size` of the oldest bytes from a ringbuf (`ringbuf-read`).
    pub fn ringbuf_read(&self, id: &str, size: usize) -> Result<Vec<u8>> {
        if size == 0 {
            return Err(Error::option("size", "0", "size must be greater than zero"));
        }
        self.with_ringbuf(id, |rb| rb.pop(size))
    }

    fn with_ringbuf<T>(&self, id: &str, f: impl FnOnce(&mut Ringbuf) -> T) -> Result<T> {
        let record = self
            .inner()
            .chardevs
            .get(id)
            .cloned()
            .ok_or_else(|| Error::option("device", id, format!("Device '{id}' not found")))?;
        if record.role == Role::Mux {
            return Err(Error::option("device", id, format!("{id} is not a ringbuf device")));
        }
        let mut backend = record.cell.backend();
        match downcast_mut::<Ringbuf>(&mut **backend) {
            Some(rb) => Ok(f(rb)),
            None => Err(Error::option("device", id, format!("{id} is not a ringbuf device"))),
        }
    }
}

/// Drops a cell's backend now, in the caller's thread, so that its fds are closed and its
/// files removed when `remove` returns; the cell keeps an inert backend for stray handles.
fn retire(cell: &Arc<Cell>, lp: &LoopHandle) {
    cell.retired.store(true, Ordering::Release);
    let mut old = cell.replace_backend(Box::new(Removed { label: cell.label.clone() }));
    old.deregister(lp.registry());
    drop(old);
    cell.set_log(None);
}

/// Opens a `logfile=` (QEMU: created 0666, truncated unless `logappend=on`).
fn open_log(log: &LogSpec) -> Result<File> {
    let mut options = OpenOptions::new();
    options.write(true).create(true).mode(0o666);
    if log.append {
        options.append(true);
    } else {
        options.truncate(true);
    }
    options.open(&log.path).map_err(|e| Error::io_path("open logfile", &log.path, e))
}

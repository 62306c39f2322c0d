//! A chardev's `logfile=`: a copy of everything its frontend writes, kept the way an operator
//! expects of a console log.
//!
//! - **`O_APPEND`, always.** Every write lands at the file's current end, so an external
//!   `logrotate copytruncate` (copy the file, then truncate it to 0) never leaves a hole of
//!   NUL bytes in front of the next write, as a log written at a remembered offset does.
//!   QEMU's truncation at open (unless `logappend=on`) is kept: it is an `ftruncate` after an
//!   `O_APPEND` open. A `/dev/fdset/N` log gets `O_APPEND` set on its description with
//!   `fcntl` (the sender shares that description and sees the flag); if a regular file still
//!   lacks it afterwards, the chardev is not created.
//! - **Rotation by size** (`logmaxsize=`, `logbackups=`): no file ever holds more than
//!   `logmaxsize` bytes. A write that would cross the limit is split: what fits goes to the
//!   file, the file becomes `PATH.1` (`PATH.1` becomes `PATH.2` and so on, the oldest beyond
//!   `logbackups` is dropped), and the rest goes to a new `PATH`.
//! - **Reopen on request** (`Registry::reopen_logs`, QMP, SIGHUP in the demos): for
//!   logrotate's `create` mode, which renames the file and expects the writer to open the
//!   path again. Nothing queued is lost across the reopen.
//! - **Timestamps** (`logtimestamp=on`): each line (what ends with `\n`) starts with the UTC
//!   time of the write that brought its first byte, `2026-12-03T10:11:12.345Z `; a write
//!   that ends mid-line is continued by the next without a new stamp.
//! - **Its own writer.** The guest does not wait for the disk byte by byte: a write after a
//!   quiet spell ([`BURST_GAP`]) goes to the file at once (so the log has it when the write
//!   returns), but writes that follow each other closely are queued and written in large
//!   batches (what gathers in [`LINGER`], or [`BATCH`] bytes) by one thread shared by every
//!   log of the process, at nice +10 so that the guest's threads come first on a busy host.
//!   While that thread is busy with one log's file another log gets a thread of its own (up
//!   to [`MAX_WORKERS`]), so a file that hangs holds up its own log only.
//!   A writer waits only while
//!   its log is more than [`QUEUE_MAX`] behind (the disk slower than the guest): nothing is
//!   dropped, as in QEMU, which writes the log synchronously.
//! - **A log that cannot be written** (a full disk, an I/O error, a failed rotation) never
//!   holds the guest up: what it cannot write is lost, counted (`Counters::dropped_log`),
//!   warned about once, and marked in the file by a line of its own once writing works
//!   again: `[chardev: N bytes of output missing here: cannot write logfile PATH: CAUSE]`.
//!   QEMU drops them silently.
//! - **`overflow=drop` holds for the log too.** A frontend's writes never wait, for the
//!   backend or for the log: every write is queued for the writer thread (none goes to the
//!   file from the writer's own thread, which a hung disk or NFS mount would block), and
//!   what does not fit in [`QUEUE_MAX`] is dropped, counted with the rest of the log's
//!   losses, and marked by `[chardev: N bytes of output missing here: the logfile fell
//!   behind (overflow=drop)]` where output resumes.

use std::borrow::Cow;
use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{self, Write as _};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use nix::fcntl::{fcntl, FcntlArg, OFlag};

use crate::error::{Error, Result};
use crate::fdset::{self, OpenHow};
use crate::options::{LogRotation, LogSpec, Overflow};
use crate::registry::BuildContext;
use crate::sync::lock;

/// A write that comes less than this after the previous one is queued for the log's writer
/// thread; one after a longer pause is written to the file before the write returns.
pub(crate) const BURST_GAP: Duration = Duration::from_millis(1);

/// How far a log may fall behind its chardev's writers before they wait for it.
pub(crate) const QUEUE_MAX: usize = 1 << 20;

/// How long the writer thread lets a burst's output gather before it writes it, so that a
/// device writing a line at a time costs the log one write(2) per batch, not per line.
const LINGER: Duration = Duration::from_millis(1);

/// A log with this much queued is written at once, without waiting out [`LINGER`].
const BATCH: usize = 256 << 10;

/// One chardev's log. Cheap to clone: clones share the file and the queue.
#[derive(Clone)]
pub(crate) struct Log {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Log {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Log").field("label", &self.shared.label).finish_non_exhaustive()
    }
}

struct Shared {
    /// The chardev's id, for warnings.
    label: String,
    /// Stamp lines (`logtimestamp=on`).
    timestamps: bool,
    queue: Mutex<Queue>,
    /// Signalled when the queue shrinks or the right to write the file is given back.
    room: Condvar,
    /// Every byte the file could not take (see [`Sink::lost`]), or that `overflow=drop`
    /// left out of a full queue.
    lost: Arc<AtomicU64>,
    /// `overflow=drop`: writers never wait for the log, nor write its file themselves.
    never_wait: bool,
    /// The file; `None` once the log is closed.
    sink: Mutex<Option<Sink>>,
}

/// What waits for the file, and who may write it.
struct Queue {
    bytes: Vec<u8>,
    /// The buffer of the last batch written, kept for the next one: a burst does not grow a
    /// new queue from nothing after every batch.
    spare: Vec<u8>,
    /// On the writer thread's list.
    queued: bool,
    /// Someone (the writer thread with a batch, or a writer writing directly) is writing the
    /// file: nobody else may, so that the file keeps the order of the writes.
    owned: bool,
    /// When the last write came, to tell a burst from a quiet spell.
    last: Option<Instant>,
    /// The next byte starts a line (timestamps, markers).
    line_start: bool,
    /// Bytes `overflow=drop` left out since the queue last had room: a marker line says so
    /// before the next output that fits.
    gap: u64,
    closed: bool,
    /// Closed (with `overflow=drop`, which does not wait) while its file was being written:
    /// whoever is writing it writes what is queued and closes the file when done.
    close_pending: bool,
}

impl Log {
    /// Opens the log `spec` names (through `cx`, so `/dev/fdset/N` works): `O_APPEND`,
    /// truncated unless `logappend=on`. With `overflow=drop` its writers never wait for it.
    pub(crate) fn open(spec: &LogSpec, overflow: Overflow, cx: &BuildContext<'_>) -> Result<Log> {
        let how = OpenHow { write: true, create: true, append: true, ..OpenHow::default() };
        let file = File::from(cx.open(&spec.path, &how)?);
        ensure_append(&file, &spec.path)?;
        let regular =
            file.metadata().map_err(|e| Error::io_path("inspect", &spec.path, e))?.is_file();
        if !spec.append && regular {
            // QEMU truncates unless logappend=on; O_APPEND stays for what comes after.
            file.set_len(0).map_err(|e| Error::io_path("truncate", &spec.path, e))?;
        }
        let size = if regular { file.metadata().map_or(0, |m| m.len()) } else { 0 };
        let reopenable = fdset::fdset_id(&spec.path).is_none();
        let lost = Arc::new(AtomicU64::new(0));
        let sink = Sink {
            file,
            path: spec.path.clone(),
            reopenable,
            rotation: spec.rotation,
            size,
            label: cx.id.to_string(),
            failing: false,
            gap: 0,
            gap_cause: String::new(),
            line_end: true,
            lost: Arc::clone(&lost),
            stamped: spec.timestamp,
        };
        Ok(Log {
            shared: Arc::new(Shared {
                label: cx.id.to_string(),
                timestamps: spec.timestamp,
                queue: Mutex::new(Queue {
                    bytes: Vec::new(),
                    spare: Vec::new(),
                    queued: false,
                    owned: false,
                    last: None,
                    line_start: true,
                    gap: 0,
                    closed: false,
                    close_pending: false,
                }),
                room: Condvar::new(),
                lost,
                never_wait: overflow == Overflow::Drop,
                sink: Mutex::new(Some(sink)),
            }),
        })
    }

    /// Logs `buf`: at once after a quiet spell, queued during a burst (see the module docs).
    pub(crate) fn write(&self, buf: &[u8]) {
        if buf.is_empty() {
            return;
        }
        let s = &self.shared;
        let writer = writer();
        let mut q = lock(&s.queue);
        if q.closed {
            return;
        }
        // Output waiting, or being written: a burst, without asking the clock (a write of
        // a console line costs about as much as a clock read on some VMs). Otherwise a
        // burst if the last write, or the last batch the writer took, was under
        // BURST_GAP ago.
        let burst = !q.bytes.is_empty() || q.owned || {
            let now = Instant::now();
            let recent = q.last.is_some_and(|t| now.saturating_duration_since(t) < BURST_GAP);
            q.last = Some(now);
            recent
        };
        // With overflow=drop the guest's thread never writes the file itself: a disk that
        // hangs would hang it.
        if writer.is_none() || (!burst && !s.never_wait) {
            // Without a writer thread (it could not be started) every write is direct.
            while q.owned {
                q = s.room.wait(q).unwrap_or_else(std::sync::PoisonError::into_inner);
            }
            if q.closed {
                return;
            }
            q.owned = true;
            let out = if s.timestamps {
                let mut out = Vec::with_capacity(buf.len() + 32);
                stamp_lines(buf, &mut q.line_start, SystemTime::now(), &mut out);
                Cow::Owned(out)
            } else {
                q.line_start = buf.ends_with(b"\n");
                Cow::Borrowed(buf)
            };
            drop(q);
            if let Some(sink) = lock(&s.sink).as_mut() {
                sink.write(&out);
            }
            self.release();
            return;
        }
        if s.never_wait && q.bytes.len() + buf.len() > QUEUE_MAX {
            // Full: this output is lost to the log, not waited for.
            q.gap += buf.len() as u64;
            s.lost.fetch_add(buf.len() as u64, Ordering::Relaxed);
            return;
        }
        if q.gap > 0 {
            let text = format!(
                "[chardev: {} bytes of output missing here: the logfile fell behind \
                 (overflow=drop)]",
                q.gap
            );
            let marker = marker_line(&text, q.line_start, s.timestamps);
            q.bytes.extend_from_slice(&marker);
            q.line_start = true;
            q.gap = 0;
        }
        let before = q.bytes.len();
        if s.timestamps {
            let Queue { bytes, line_start, .. } = &mut *q;
            stamp_lines(buf, line_start, SystemTime::now(), bytes);
        } else {
            q.bytes.extend_from_slice(buf);
            q.line_start = buf.ends_with(b"\n");
        }
        let full = before < BATCH && q.bytes.len() >= BATCH;
        if let Some(w) = writer {
            if !q.queued && !q.owned {
                q.queued = true;
                w.schedule(Arc::clone(s), q.bytes.len() >= BATCH);
            } else if full && q.queued {
                w.hurry();
            }
        }
        // The disk is slower than the guest: wait for it rather than drop (QEMU's log is
        // written synchronously and loses nothing either).
        while !s.never_wait && q.bytes.len() > QUEUE_MAX && !q.closed {
            q = s.room.wait(q).unwrap_or_else(std::sync::PoisonError::into_inner);
        }
    }

    /// Gives back the right to write the file, and hands what queued meanwhile to the writer.
    fn release(&self) {
        self.release_with(Vec::new());
    }

    /// [`release`](Self::release), keeping `batch`'s buffer for the next batch.
    fn release_with(&self, mut batch: Vec<u8>) {
        let s = &self.shared;
        let mut q = lock(&s.queue);
        if batch.capacity() > q.spare.capacity() {
            batch.clear();
            q.spare = batch;
        }
        q.owned = false;
        s.room.notify_all();
        if q.close_pending {
            // The close that did not wait for this write: finish it.
            q.close_pending = false;
            let rest = std::mem::take(&mut q.bytes);
            drop(q);
            Self::close_sink(s, &rest);
            return;
        }
        if !q.bytes.is_empty() && !q.queued && !q.closed {
            q.queued = true;
            if let Some(w) = writer() {
                w.schedule(Arc::clone(s), q.bytes.len() >= BATCH);
            }
        }
    }

    /// The writer thread's turn: writes what is queued, in one batch.
    fn flush_queued(&self) {
        let s = &self.shared;
        let batch = {
            let mut q = lock(&s.queue);
            q.queued = false;
            // A writer writing directly hands the queue back when it is done.
            if q.owned || q.closed || q.bytes.is_empty() {
                return;
            }
            q.owned = true;
            // The burst went on at least until now: the next write still belongs to it.
            q.last = Some(Instant::now());
            let spare = std::mem::take(&mut q.spare);
            let batch = std::mem::replace(&mut q.bytes, spare);
            s.room.notify_all();
            batch
        };
        if let Some(sink) = lock(&s.sink).as_mut() {
            sink.write(&batch);
        }
        self.release_with(batch);
    }

    /// Bytes of output this log could not write to its file, ever.
    pub(crate) fn lost(&self) -> u64 {
        self.shared.lost.load(Ordering::Relaxed)
    }

    /// Opens the log's path again (logrotate's `create` mode renamed the file): what is
    /// queued and written from now on goes to the new file. `Unsupported` for a log passed
    /// as `/dev/fdset/N`, which has no path to open again.
    pub(crate) fn reopen(&self) -> Result<()> {
        match lock(&self.shared.sink).as_mut() {
            Some(sink) => sink.reopen(),
            None => Ok(()),
        }
    }

    /// Writes what is queued and closes the file (the chardev goes, or its log is replaced).
    /// Later writes are ignored.
    ///
    /// With `overflow=drop` it does not wait for a write in progress (a file that hangs
    /// would hang the chardev's removal): the writer finishes the close when its write
    /// returns.
    pub(crate) fn close(&self) {
        let s = &self.shared;
        let mut q = lock(&s.queue);
        if s.never_wait && q.owned {
            q.closed = true;
            q.close_pending = true;
            s.room.notify_all();
            return;
        }
        while q.owned {
            q = s.room.wait(q).unwrap_or_else(std::sync::PoisonError::into_inner);
        }
        q.closed = true;
        let rest = std::mem::take(&mut q.bytes);
        s.room.notify_all();
        // Nobody writes the file from here on (closed): take it without the queue's lock.
        drop(q);
        Self::close_sink(s, &rest);
    }

    /// Writes `rest` and closes the file.
    fn close_sink(s: &Shared, rest: &[u8]) {
        let sink = lock(&s.sink).take();
        if let Some(mut sink) = sink {
            sink.write(rest);
        }
    }
}

/// The file itself, and its rotation.
struct Sink {
    file: File,
    path: PathBuf,
    /// Not an fd set: the path can be opened again and rotated under.
    reopenable: bool,
    rotation: Option<LogRotation>,
    /// Bytes in the current file, as far as we know (an external truncate is noticed when
    /// the count reaches the limit: the file's real size is looked up then).
    size: u64,
    label: String,
    /// A warning about failing writes was logged and no write succeeded since.
    failing: bool,
    /// Bytes lost since the file last took a write, and why: a marker line says so in the
    /// file once it takes writes again.
    gap: u64,
    gap_cause: String,
    /// The last byte written ended a line, so the marker needs no line break before it.
    line_end: bool,
    /// Every byte lost, for the chardev's counters.
    lost: Arc<AtomicU64>,
    /// `logtimestamp=on`: a marker line gets a stamp too.
    stamped: bool,
}

impl Sink {
    fn write(&mut self, buf: &[u8]) {
        if buf.is_empty() {
            return;
        }
        if self.gap > 0 {
            let text =
                format!("[chardev: {} bytes of output missing here: {}]", self.gap, self.gap_cause);
            let marker = marker_line(&text, self.line_end, self.stamped);
            if !self.put(&marker, true) {
                self.lose(buf.len());
                return;
            }
            log::info!(
                "chardev '{}': logfile {} written again; {} bytes of log output were lost",
                self.label,
                self.path.display(),
                self.gap
            );
            self.gap = 0;
            self.gap_cause.clear();
        }
        self.put(buf, false);
    }

    /// Appends `buf`, rotating on the way; `false` when the file would not take all of it
    /// (the rest lost and counted, unless it is a marker).
    fn put(&mut self, mut buf: &[u8], marker: bool) -> bool {
        while !buf.is_empty() {
            let n = match self.rotation {
                None => buf.len(),
                Some(rotation) => {
                    if self.size >= rotation.max_size {
                        // logrotate's copytruncate may have emptied the file under us.
                        self.size = self.file.metadata().map_or(self.size, |m| m.len());
                    }
                    if self.size >= rotation.max_size {
                        if let Err(e) = self.rotate(rotation) {
                            // Never past the limit: what does not fit is dropped, and the
                            // rotation tried again at the next write.
                            self.failed("rotate", &e, buf.len(), marker);
                            return false;
                        }
                    }
                    let room = rotation.max_size.saturating_sub(self.size);
                    usize::try_from(room).map_or(buf.len(), |room| room.min(buf.len()))
                }
            };
            let mut done = 0;
            while done < n {
                match self.file.write(&buf[done..n]) {
                    Ok(0) => {
                        let e = io::Error::from(io::ErrorKind::WriteZero);
                        return self.fail_after(done, buf, "write", &e, marker);
                    }
                    Ok(k) => done += k,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return self.fail_after(done, buf, "write", &e, marker),
                }
            }
            self.size += n as u64;
            self.line_end = buf[n - 1] == b'\n';
            self.failing = false;
            buf = &buf[n..];
        }
        true
    }

    /// A write failed after `done` bytes of `buf` went to the file: the rest is lost.
    fn fail_after(
        &mut self,
        done: usize,
        buf: &[u8],
        what: &str,
        e: &io::Error,
        marker: bool,
    ) -> bool {
        if done > 0 {
            self.size += done as u64;
            self.line_end = buf[done - 1] == b'\n';
        }
        self.failed(what, e, buf.len() - done, marker);
        false
    }

    fn lose(&mut self, n: usize) {
        self.gap += n as u64;
        self.lost.fetch_add(n as u64, Ordering::Relaxed);
    }

    /// `PATH` -> `PATH.1` -> ... -> `PATH.N` (the oldest dropped), then a new `PATH`.
    fn rotate(&mut self, rotation: LogRotation) -> io::Result<()> {
        let numbered = |i: u32| {
            let mut name = self.path.clone().into_os_string();
            name.push(format!(".{i}"));
            PathBuf::from(name)
        };
        let gone_is_fine = |r: io::Result<()>| match r {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            r => r,
        };
        if rotation.backups == 0 {
            gone_is_fine(std::fs::remove_file(&self.path))?;
        } else {
            // The oldest goes first, so that no rename replaces a file: on ext4 a rename over
            // an existing file starts the writeback of the renamed one (`auto_da_alloc`, for
            // editors that save by renaming), which put every rotated backup on the disk at
            // once, in this thread, and made the next rotation wait for that I/O.
            gone_is_fine(std::fs::remove_file(numbered(rotation.backups)))?;
            for i in (1..rotation.backups).rev() {
                gone_is_fine(std::fs::rename(numbered(i), numbered(i + 1)))?;
            }
            gone_is_fine(std::fs::rename(&self.path, numbered(1)))?;
        }
        self.file = open_append(&self.path)?;
        self.size = self.file.metadata()?.len();
        log::debug!("chardev '{}': logfile {} rotated", self.label, self.path.display());
        Ok(())
    }

    fn reopen(&mut self) -> Result<()> {
        if !self.reopenable {
            return Err(Error::Unsupported {
                what: self.label.clone(),
                operation: "reopen a logfile passed as /dev/fdset/N: it has no path to open again",
            });
        }
        let file =
            open_append(&self.path).map_err(|e| Error::io_path("reopen logfile", &self.path, e))?;
        self.size = file.metadata().map_or(0, |m| m.len());
        self.file = file;
        log::info!("chardev '{}': logfile {} reopened", self.label, self.path.display());
        Ok(())
    }

    /// Counts `lost` bytes (none for a marker, which only says what was lost), and says
    /// once (until a write succeeds again) that the log loses output.
    fn failed(&mut self, what: &str, e: &io::Error, lost: usize, marker: bool) {
        if !marker {
            self.lose(lost);
        }
        if self.gap_cause.is_empty() {
            self.gap_cause = format!("cannot {what} logfile {}: {e}", self.path.display());
        }
        if !self.failing {
            log::warn!(
                "chardev '{}': cannot {what} logfile {}: {e}; {lost} bytes of log output dropped",
                self.label,
                self.path.display()
            );
        }
        self.failing = true;
    }
}

/// Opens `path` for appending, created 0666 less the umask as QEMU creates logs.
fn open_append(path: &Path) -> io::Result<File> {
    OpenOptions::new().append(true).create(true).open(path)
}

/// Makes sure a log's description has `O_APPEND` (a passed fd may lack it: set it), and
/// refuses a regular file where it cannot be set: `copytruncate` would leave holes.
fn ensure_append(file: &File, path: &Path) -> Result<()> {
    let getfl = || fcntl(file.as_fd(), FcntlArg::F_GETFL).map(OFlag::from_bits_retain);
    let flags = getfl().map_err(|e| Error::io_path("read the flags of", path, e.into()))?;
    if flags.contains(OFlag::O_APPEND) {
        return Ok(());
    }
    let set = fcntl(file.as_fd(), FcntlArg::F_SETFL(flags | OFlag::O_APPEND));
    let has = getfl().is_ok_and(|f| f.contains(OFlag::O_APPEND));
    let regular = file.metadata().is_ok_and(|m| m.is_file());
    if set.is_ok() && has || !regular {
        // A pipe or a socket (virtlogd's) has no offset: O_APPEND does not matter there.
        return Ok(());
    }
    Err(Error::io_path(
        "set O_APPEND on logfile",
        path,
        set.err().map_or_else(|| io::Error::other("the flag did not stay set"), io::Error::from),
    ))
}

/// Copies `buf` to `out`, with a timestamp before the first byte of each line.
pub(crate) fn stamp_lines(buf: &[u8], line_start: &mut bool, now: SystemTime, out: &mut Vec<u8>) {
    let mut stamp = None;
    let mut rest = buf;
    while !rest.is_empty() {
        if *line_start {
            let text = stamp.get_or_insert_with(|| timestamp(now));
            out.extend_from_slice(text.as_bytes());
        }
        let (line, more) = match rest.iter().position(|&b| b == b'\n') {
            Some(at) => rest.split_at(at + 1),
            None => (rest, &[][..]),
        };
        out.extend_from_slice(line);
        *line_start = line.ends_with(b"\n");
        rest = more;
    }
}

/// `text` as a line of its own in the log: after a line break if the log is mid-line, and
/// stamped like every other line with `logtimestamp=on`.
fn marker_line(text: &str, line_start: bool, stamped: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len() + 32);
    if !line_start {
        out.push(b'\n');
    }
    if stamped {
        out.extend_from_slice(timestamp(SystemTime::now()).as_bytes());
    }
    out.extend_from_slice(text.as_bytes());
    out.push(b'\n');
    out
}

/// `2026-12-03T10:11:12.345Z ` (ISO 8601, UTC, milliseconds, and the space before the text).
pub(crate) fn timestamp(now: SystemTime) -> String {
    let since = now.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let (days, of_day) = (secs / 86_400, secs % 86_400);
    let (year, month, day) = civil_from_days(days as i64);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z ",
        of_day / 3600,
        of_day / 60 % 60,
        of_day % 60,
        since.subsec_millis()
    )
}

/// The proleptic Gregorian date of a day count since 1970-01-01 (Howard Hinnant's
/// `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// The threads that write queued log output for every log of the process: one, and more
/// (up to [`MAX_WORKERS`]) only while a worker is busy with one log's file and another log
/// has output waiting. So a log whose file hangs (a hard NFS mount, a pipe nobody reads)
/// holds one worker, never the others' logs; an extra worker leaves after [`IDLE_EXIT`]
/// without work.
struct Writer {
    list: Mutex<WriterList>,
    wake: Condvar,
}

/// Writer threads at most: beyond this many hung files, the other logs wait too.
const MAX_WORKERS: usize = 4;

/// How long an extra writer thread waits for work before it leaves.
const IDLE_EXIT: Duration = Duration::from_secs(10);

struct WriterList {
    logs: VecDeque<Arc<Shared>>,
    /// Workers running.
    workers: usize,
    /// Workers waiting for work (to be woken).
    idle: usize,
    /// Workers letting a burst gather ([`LINGER`]); woken only when a log has a [`BATCH`].
    lingering: usize,
    /// A log has a [`BATCH`] queued: write now.
    urgent: bool,
    /// The logs workers are writing now (their addresses).
    writing: Vec<usize>,
}

thread_local! {
    /// This thread is one of the writer's: what it schedules it picks up itself.
    static IS_WORKER: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

impl Writer {
    /// Puts a log with queued output on the list; `urgent` when it has a [`BATCH`] already.
    fn schedule(&'static self, log: Arc<Shared>, urgent: bool) {
        let key = Arc::as_ptr(&log) as usize;
        let mut list = lock(&self.list);
        list.logs.push_back(log);
        list.urgent |= urgent;
        if list.idle > 0 || (urgent && list.lingering > 0) {
            self.wake.notify_one();
        } else if list.lingering == 0
            && !IS_WORKER.with(std::cell::Cell::get)
            && !list.writing.contains(&key)
        {
            // Every worker is writing another log's file, and may be stuck in it. (A
            // worker that has this very log comes back for it.)
            self.spawn_worker(&mut list);
        }
    }

    /// A log on the list has reached a [`BATCH`]: stop lingering.
    fn hurry(&self) {
        let mut list = lock(&self.list);
        list.urgent = true;
        if list.lingering > 0 {
            self.wake.notify_one();
        }
    }

    /// Starts one more worker, unless there are [`MAX_WORKERS`] already.
    fn spawn_worker(&'static self, list: &mut WriterList) {
        if list.workers >= MAX_WORKERS {
            return;
        }
        let run = move || {
            IS_WORKER.with(|w| w.set(true));
            yield_to_the_guest();
            self.run();
        };
        match std::thread::Builder::new().name("chardev-logs".into()).spawn(run) {
            Ok(_) => {
                // Idle until it runs: it looks at the list before it first waits.
                list.workers += 1;
                list.idle += 1;
            }
            Err(e) => log::debug!("log writer: cannot start one more thread: {e}"),
        }
    }

    fn run(&'static self) {
        let mut list = lock(&self.list);
        list.idle -= 1;
        loop {
            while list.logs.is_empty() {
                list.idle += 1;
                let timed_out = if list.workers > 1 {
                    let (l, t) = self
                        .wake
                        .wait_timeout(list, IDLE_EXIT)
                        .unwrap_or_else(std::sync::PoisonError::into_inner);
                    list = l;
                    t.timed_out()
                } else {
                    list = self.wake.wait(list).unwrap_or_else(std::sync::PoisonError::into_inner);
                    false
                };
                list.idle -= 1;
                if timed_out && list.logs.is_empty() && list.workers > 1 {
                    list.workers -= 1;
                    return;
                }
            }
            // A bounded wait for more of the burst, not a synchronisation: whatever
            // comes meanwhile goes in the same write.
            let until = Instant::now() + LINGER;
            while !list.urgent {
                let left = until.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    break;
                }
                list.lingering += 1;
                list = self
                    .wake
                    .wait_timeout(list, left)
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .0;
                list.lingering -= 1;
            }
            list.urgent = false;
            // One log at a time: a file that hangs holds this worker, and what else is on
            // the list gets another. Only the logs listed now: one that is listed again
            // while this worker writes lingers first, as a burst should.
            for _ in 0..list.logs.len() {
                let Some(shared) = list.logs.pop_front() else { break };
                if !list.logs.is_empty() && list.idle == 0 && list.lingering == 0 {
                    self.spawn_worker(&mut list);
                }
                let key = Arc::as_ptr(&shared) as usize;
                list.writing.push(key);
                drop(list);
                Log { shared }.flush_queued();
                list = lock(&self.list);
                if let Some(at) = list.writing.iter().position(|&k| k == key) {
                    list.writing.swap_remove(at);
                }
            }
        }
    }
}

/// Lowers the calling thread's priority (nice +10): the log writer runs when the guest's
/// and the loop's threads leave a CPU to it, so that on a busy host the log costs the guest
/// as little as possible. It never starves the log for long: the scheduler still gives
/// it a share, and a log [`QUEUE_MAX`] behind makes writers wait for it (nothing is lost).
fn yield_to_the_guest() {
    // setpriority(PRIO_PROCESS, 0, ..) acts on the calling thread on Linux.
    // SAFETY: no pointers; an error only leaves the priority as it was.
    let r = unsafe { nix::libc::setpriority(nix::libc::PRIO_PROCESS, 0, 10) };
    if r != 0 {
        log::debug!("log writer: cannot lower its priority: {}", std::io::Error::last_os_error());
    }
}

/// The writer thread, started at the first queued write; `None` if it cannot be started
/// (then every write is direct).
fn writer() -> Option<&'static Writer> {
    static WRITER: OnceLock<Option<&'static Writer>> = OnceLock::new();
    *WRITER.get_or_init(|| {
        let writer: &'static Writer = Box::leak(Box::new(Writer {
            list: Mutex::new(WriterList {
                logs: VecDeque::new(),
                workers: 0,
                idle: 0,
                lingering: 0,
                urgent: false,
                writing: Vec::new(),
            }),
            wake: Condvar::new(),
        }));
        let mut list = lock(&writer.list);
        writer.spawn_worker(&mut list);
        if list.workers == 0 {
            log::warn!("cannot start the log writer thread; logs are written directly");
            return None;
        }
        drop(list);
        Some(writer)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_marker_is_a_line_of_its_own_and_stamped_like_the_others() {
        assert_eq!(marker_line("[gap]", true, false), b"[gap]\n");
        assert_eq!(marker_line("[gap]", false, false), b"\n[gap]\n");
        let stamped = String::from_utf8(marker_line("[gap]", false, true)).unwrap();
        let (stamp, rest) = stamped[1..].split_once(' ').unwrap();
        assert!(
            stamped.starts_with('\n') && stamp.ends_with('Z') && stamp.len() == 24,
            "{stamped}"
        );
        assert_eq!(rest, "[gap]\n");
    }

    #[test]
    fn timestamps_are_iso_8601_utc_with_milliseconds() {
        let t = UNIX_EPOCH + Duration::from_millis(1_796_292_672_345);
        assert_eq!(timestamp(t), "2026-12-03T10:11:12.345Z ");
        assert_eq!(timestamp(UNIX_EPOCH), "1970-01-01T00:00:00.000Z ");
        // A leap day.
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400);
        assert_eq!(timestamp(leap), "2000-02-29T00:00:00.000Z ");
    }

    #[test]
    fn each_line_gets_one_stamp_and_a_line_split_across_writes_keeps_it() {
        let t = UNIX_EPOCH;
        let s = "1970-01-01T00:00:00.000Z ";
        let (mut start, mut out) = (true, Vec::new());
        stamp_lines(b"one\ntw", &mut start, t, &mut out);
        stamp_lines(b"o\n\nthree", &mut start, t, &mut out);
        stamp_lines(b"\n", &mut start, t, &mut out);
        let want = format!("{s}one\n{s}two\n{s}\n{s}three\n");
        assert_eq!(String::from_utf8(out).unwrap(), want);
        assert!(start);
    }
}

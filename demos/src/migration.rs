//! QEMU's migration stream, version 3: the machine's RAM and device state written as QEMU
//! 7.2 writes it (`migrate`), and read back on a destination (`-incoming`).
//!
//! A stream is a header, then sections, each closed by a footer that repeats its id:
//!
//! ```text
//! "QEVM" 3  CONFIGURATION(machine type)
//! SECTION_START  "ram" v4: MEM_SIZE total, one block "ram", EOS
//! SECTION_PART   page records (ZERO or PAGE, CONTINUE after the first), EOS   ... repeated
//! SECTION_END    EOS
//! SECTION_FULL   one per device ("serial", "guest-shell", ...), the device's state
//! EOF  VMDESCRIPTION {"page_size": 4096, "devices": [...]}
//! ```
//!
//! [`save`] writes it from a [`Snapshot`] to any `Write`; to an fd, use [`BlockingWriter`],
//! which stays blocking even when someone sets `O_NONBLOCK` on the file description behind
//! our back. [`load`] (or a [`Loader`]) reads it back into the destination's RAM, checking
//! every field, and returns the device states by name. [`serial_section`] and
//! [`serial_state`] turn the 16550's [`SerialState`] into a versioned blob and back.
//!
//! ```no_run
//! use std::sync::Mutex;
//! use demos::migration::{self, BlockingWriter, DeviceState, Progress, Snapshot};
//! # fn run(fd: std::os::fd::OwnedFd, input: std::os::unix::net::UnixStream)
//! #     -> Result<(), migration::Error> {
//! let ram = Mutex::new(vec![0u8; 64 << 20]);
//! let devices = [
//!     migration::serial_section(0, &vm_superio::serial::SerialState::default()),
//!     DeviceState::new(migration::GUEST_SHELL, 0, 1, b"uptime=12.5".to_vec()),
//! ];
//! let progress = Progress::new(); // shared with `query-migrate` and `migrate_cancel`
//! let out = BlockingWriter::new(fd).map_err(|e| migration::Error::io("use the fd", 0, e))?;
//! let snapshot = Snapshot { machine_type: "pc", ram: &ram, devices: &devices };
//! migration::save(out, &snapshot, &progress)?;
//!
//! // On the destination:
//! let mut ram = vec![0u8; 64 << 20];
//! let incoming = migration::load(input, "pc", &mut ram)?;
//! let uart = migration::serial_state(incoming.device(migration::SERIAL, 0).unwrap())?;
//! # let _ = uart; Ok(()) }
//! ```
//!
//! What this module writes and accepts, as decided:
//! * Section ids are numbered as QEMU numbers them, in registration order, each section
//!   its own, repeated by its PART, END and footer: "ram" is section 1, the devices follow
//!   in the order given (2, 3, ...). Id 0 stays unused: QEMU 7.2's loader finds the section
//!   of a PART or END by id, and takes every section not loaded yet for id 0, so RAM with
//!   id 0 loads into the wrong section there ("timer: incoming version_id 0 is too old").
//!   QEMU itself never gives RAM id 0 (its CPU timer registers first; RAM is 2 on x86).
//! * A device's state is opaque to the stream. QEMU's vmstate has no length field, so a
//!   reader must know each device's layout to find its end: this module writes every
//!   device's state as a vmstate of two fields, `size` (uint32) and `data` (a buffer of
//!   `size` bytes), and says so in the vmdesc, where QEMU's own tools read layouts. A
//!   [`Loader`] can be told the fixed size of foreign devices (QEMU's "timer" is 24 bytes).
//! * A stream that ends right after `QEMU_VM_EOF`, without the vmdesc, is accepted, as
//!   QEMU's own loader accepts it: the vmdesc only describes state already read and checked,
//!   so nothing is lost. A vmdesc that starts must be whole, valid JSON, name the device
//!   sections in order, and say `"page_size": 4096`; [`Incoming::vmdesc`] tells which case
//!   it was.
//! * Every page of RAM must be sent at least once (QEMU sends each page once and re-sends
//!   pages dirtied meanwhile); a page no record covers is an error, which catches a corrupt
//!   page offset. ZERO records must carry a zero fill byte (QEMU 7.2 writes nothing else).
//! * The format has no checksum: a changed byte inside a page's 4096 bytes or inside a
//!   device's state loads, with that byte changed. Everything else that changes is an error.
//! * Loading writes straight into the destination's RAM; after an error the RAM holds a
//!   partial image (as on QEMU, a failed incoming migration leaves the destination unusable).

use std::fmt;
use std::fs::File;
use std::io::{self, BufReader, Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::FileTypeExt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};

use vm_superio::serial::SerialState;

/// The stream's constants, named as QEMU's `savevm.c` and `ram.c` name them.
mod wire {
    pub const MAGIC: u32 = 0x5145_564d; // "QEVM"
    pub const VERSION: u32 = 3;

    pub const EOF: u8 = 0x00;
    pub const SECTION_START: u8 = 0x01;
    pub const SECTION_PART: u8 = 0x02;
    pub const SECTION_END: u8 = 0x03;
    pub const SECTION_FULL: u8 = 0x04;
    pub const SUBSECTION: u8 = 0x05;
    pub const VMDESCRIPTION: u8 = 0x06;
    pub const CONFIGURATION: u8 = 0x07;
    pub const COMMAND: u8 = 0x08;
    pub const SECTION_FOOTER: u8 = 0x7e;

    /// `RAM_SAVE_FLAG_*`: the low bits of a page record's offset.
    pub const FLAG_FULL: u64 = 0x01;
    pub const FLAG_ZERO: u64 = 0x02;
    pub const FLAG_MEM_SIZE: u64 = 0x04;
    pub const FLAG_PAGE: u64 = 0x08;
    pub const FLAG_EOS: u64 = 0x10;
    pub const FLAG_CONTINUE: u64 = 0x20;
    pub const FLAG_XBZRLE: u64 = 0x40;
    pub const FLAG_COMPRESS_PAGE: u64 = 0x100;
    /// The bits below the page size hold the flags.
    pub const FLAGS_MASK: u64 = super::PAGE_SIZE as u64 - 1;

    /// The RAM section: QEMU's idstr, instance and version (`ram_mig_init`).
    pub const RAM_SECTION: &str = "ram";
    pub const RAM_VERSION: u32 = 4;
}

/// The page size of the stream (`TARGET_PAGE_SIZE` on x86): RAM moves in pages of this size.
pub const PAGE_SIZE: usize = 4096;

/// The section id [`save`] gives RAM; devices follow it (see the module's notes on ids).
pub const RAM_SECTION_ID: u32 = 1;

/// The name of the one RAM block this machine has (QEMU's `-machine none` calls it so too).
pub const RAM_BLOCK: &str = "ram";

/// Pages per `SECTION_PART`: the writer checks for cancellation between parts. QEMU sizes
/// its iterations by time; a fixed count keeps a part at most 4 MiB.
pub const PAGES_PER_PART: usize = 1024;

/// The section name of the 16550 UART's state.
pub const SERIAL: &str = "serial";

/// The version of [`serial_section`]'s layout.
pub const SERIAL_VERSION: u32 = 1;

/// The section name of the guest shell's state (an opaque blob its owner defines).
pub const GUEST_SHELL: &str = "guest-shell";

/// The longest machine type name a stream may carry (QEMU's are under 32 bytes).
pub const MAX_MACHINE_TYPE_LEN: usize = 256;

/// The largest device state a stream may carry; a larger length field is corruption.
pub const MAX_DEVICE_STATE_LEN: usize = 1 << 20;

/// The largest vmdesc JSON a stream may carry (QEMU 7.2's `pc` machine writes 96 KiB).
pub const MAX_VMDESC_LEN: usize = 16 << 20;

/// What went wrong while saving or loading a migration stream.
#[derive(Debug)]
pub enum Error {
    /// The stream breaks the format: what is wrong, and at which byte offset of the stream.
    Format {
        /// Offset of the offending item from the stream's first byte.
        offset: u64,
        /// What is wrong with it.
        reason: String,
    },
    /// The stream ended before it was complete.
    Truncated {
        /// How many bytes the stream had.
        offset: u64,
        /// What was being read when it ended.
        reading: &'static str,
    },
    /// The stream's RAM is not the size of the destination's RAM.
    RamSize {
        /// Bytes of RAM in the stream.
        stream: u64,
        /// Bytes of RAM on the destination.
        destination: u64,
    },
    /// The stream comes from another machine type.
    MachineType {
        /// The machine type in the stream.
        stream: String,
        /// The destination's machine type.
        destination: String,
    },
    /// A device's state blob is not what its decoder expects.
    DeviceState {
        /// The section name.
        name: String,
        /// What is wrong.
        reason: String,
    },
    /// What the caller asked to save cannot be written as a stream.
    Invalid(String),
    /// The migration was cancelled (`migrate_cancel`) before it finished.
    Cancelled,
    /// Reading or writing failed.
    Io {
        /// What was being done.
        op: &'static str,
        /// Bytes of the stream read or written before the failure.
        offset: u64,
        /// The underlying error.
        source: io::Error,
    },
}

/// This module's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// An I/O error while doing `op`, `offset` bytes into the stream.
    pub fn io(op: &'static str, offset: u64, source: io::Error) -> Error {
        Error::Io { op, offset, source }
    }

    fn format(offset: u64, reason: impl Into<String>) -> Error {
        Error::Format { offset, reason: reason.into() }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Format { offset, reason } => {
                write!(f, "migration stream, byte {offset}: {reason}")
            }
            Error::Truncated { offset, reading } => {
                write!(f, "migration stream ends at byte {offset}, inside {reading}")
            }
            Error::RamSize { stream, destination } => write!(
                f,
                "migration stream has {stream} bytes of RAM, this machine has {destination}"
            ),
            Error::MachineType { stream, destination } => {
                write!(f, "Machine type received is '{stream}' and local is '{destination}'")
            }
            Error::DeviceState { name, reason } => {
                write!(f, "migration: state of device '{name}': {reason}")
            }
            Error::Invalid(reason) => write!(f, "migration: {reason}"),
            Error::Cancelled => write!(f, "migration cancelled"),
            Error::Io { op, offset, source } => {
                write!(f, "migration: cannot {op} (at byte {offset}): {source}")
            }
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

fn lock<T: ?Sized>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

// ---------------------------------------------------------------------------------------
// What is saved
// ---------------------------------------------------------------------------------------

/// Guest RAM as the writer reads it: a size, and copies out of it.
///
/// The writer copies one part (at most [`PAGES_PER_PART`] pages) at a time, so a RAM behind
/// a lock is locked for a copy, never while the stream waits on a slow reader. Nothing
/// tracks dirty pages: the caller stops the guest before saving, as `migrate` stops it.
pub trait RamSource {
    /// The RAM's size in bytes.
    fn size(&self) -> usize;
    /// Copies the RAM from `offset` into `buf`; bytes beyond the RAM's end read as zero.
    fn read_at(&self, offset: usize, buf: &mut [u8]);

    /// Lends `len` bytes of RAM from `offset` to `f` without a copy where the RAM allows
    /// (the default copies with [`read_at`](RamSource::read_at)).
    fn with_slice(
        &self,
        offset: usize,
        len: usize,
        f: &mut dyn FnMut(&[u8]) -> Result<()>,
    ) -> Result<()> {
        let mut buf = vec![0u8; len];
        self.read_at(offset, &mut buf);
        f(&buf)
    }
}

/// Where a piece of a SECTION_PART comes from: the record headers, or a page of RAM.
enum Span {
    Header(std::ops::Range<usize>),
    Page(usize),
}

/// Lends a range of `ram`, zero-padded past its end only when it has to be.
fn lend(
    ram: &[u8],
    offset: usize,
    len: usize,
    f: &mut dyn FnMut(&[u8]) -> Result<()>,
) -> Result<()> {
    match ram.get(offset..offset.saturating_add(len)) {
        Some(slice) => f(slice),
        None => {
            let mut buf = vec![0u8; len];
            copy_from(ram, offset, &mut buf);
            f(&buf)
        }
    }
}

fn copy_from(ram: &[u8], offset: usize, buf: &mut [u8]) {
    let src = ram.get(offset..).unwrap_or_default();
    let n = src.len().min(buf.len());
    buf[..n].copy_from_slice(&src[..n]);
    buf[n..].fill(0);
}

impl RamSource for [u8] {
    fn size(&self) -> usize {
        self.len()
    }
    fn read_at(&self, offset: usize, buf: &mut [u8]) {
        copy_from(self, offset, buf)
    }
    fn with_slice(
        &self,
        offset: usize,
        len: usize,
        f: &mut dyn FnMut(&[u8]) -> Result<()>,
    ) -> Result<()> {
        lend(self, offset, len, f)
    }
}

impl RamSource for Vec<u8> {
    fn size(&self) -> usize {
        self.as_slice().size()
    }
    fn read_at(&self, offset: usize, buf: &mut [u8]) {
        self.as_slice().read_at(offset, buf)
    }
    fn with_slice(
        &self,
        offset: usize,
        len: usize,
        f: &mut dyn FnMut(&[u8]) -> Result<()>,
    ) -> Result<()> {
        self.as_slice().with_slice(offset, len, f)
    }
}

/// The machine's RAM ([`crate::machine::Machine::ram`]), locked for each copy.
impl RamSource for Mutex<Vec<u8>> {
    fn size(&self) -> usize {
        lock(self).len()
    }
    fn read_at(&self, offset: usize, buf: &mut [u8]) {
        copy_from(&lock(self), offset, buf)
    }
    /// Holds the lock while `f` runs (the stream is written from the RAM itself): the guest
    /// is stopped during a migration, so nobody waits for it.
    fn with_slice(
        &self,
        offset: usize,
        len: usize,
        f: &mut dyn FnMut(&[u8]) -> Result<()>,
    ) -> Result<()> {
        lend(&lock(self), offset, len, f)
    }
}

/// One device's saved state: a `SECTION_FULL` of the stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceState {
    /// The section's idstr ("serial", "guest-shell"): how the destination finds it.
    pub name: String,
    /// Which device of that name (0 for the first).
    pub instance_id: u32,
    /// The version of the state's layout, for the destination's decoder.
    pub version_id: u32,
    /// The state itself, opaque to the stream.
    pub data: Vec<u8>,
}

impl DeviceState {
    /// A device's state.
    pub fn new(name: &str, instance_id: u32, version_id: u32, data: Vec<u8>) -> DeviceState {
        DeviceState { name: name.to_owned(), instance_id, version_id, data }
    }
}

/// Everything [`save`] writes.
#[derive(Clone, Copy)]
pub struct Snapshot<'a> {
    /// The machine type, sent in the configuration section; a QEMU destination refuses
    /// another (`pc-i440fx-7.2`, `none`, ...).
    pub machine_type: &'a str,
    /// Guest RAM, one block named [`RAM_BLOCK`]; a multiple of [`PAGE_SIZE`] bytes.
    pub ram: &'a dyn RamSource,
    /// The devices, one `SECTION_FULL` each, in this order.
    pub devices: &'a [DeviceState],
}

/// A migration's progress, shared between the thread that saves and the monitors:
/// `query-migrate` reads it, `migrate_cancel` sets its cancel flag.
#[derive(Debug, Default)]
pub struct Progress {
    transferred: AtomicU64,
    total: AtomicU64,
    remaining: AtomicU64,
    duplicate: AtomicU64,
    normal: AtomicU64,
    cancelled: AtomicBool,
}

/// A copy of the counters of a [`Progress`], named as `query-migrate`'s `ram` object names
/// them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RamStats {
    /// Bytes of the stream handed to the writer so far.
    pub transferred: u64,
    /// Bytes of guest RAM.
    pub total: u64,
    /// Bytes of guest RAM not sent yet.
    pub remaining: u64,
    /// Pages sent as ZERO records.
    pub duplicate: u64,
    /// Pages sent with their data.
    pub normal: u64,
    /// `normal` in bytes.
    pub normal_bytes: u64,
}

impl Progress {
    /// Counters at zero, not cancelled.
    pub fn new() -> Progress {
        Progress::default()
    }

    /// Bytes of the stream handed to the writer so far (`ram.transferred`). With a
    /// [`BlockingWriter`], at most its buffer ahead of what the fd took.
    pub fn transferred(&self) -> u64 {
        self.transferred.load(Ordering::Relaxed)
    }

    /// All the counters.
    pub fn ram(&self) -> RamStats {
        let normal = self.normal.load(Ordering::Relaxed);
        RamStats {
            transferred: self.transferred(),
            total: self.total.load(Ordering::Relaxed),
            remaining: self.remaining.load(Ordering::Relaxed),
            duplicate: self.duplicate.load(Ordering::Relaxed),
            normal,
            normal_bytes: normal * PAGE_SIZE as u64,
        }
    }

    /// Asks the saving thread to stop: it does at the next part boundary, with
    /// [`Error::Cancelled`]. A reader that stopped reading holds the writer inside a write
    /// until then; to cancel that too, also shut the socket down (QEMU's `migrate_cancel`
    /// calls shutdown(2)), and the write fails.
    pub fn cancel(&self) {
        self.cancelled.store(true, Ordering::Release);
    }

    /// Whether [`Progress::cancel`] was called.
    pub fn is_cancelled(&self) -> bool {
        self.cancelled.load(Ordering::Acquire)
    }
}

// ---------------------------------------------------------------------------------------
// Saving
// ---------------------------------------------------------------------------------------

/// A `Write` that counts what it passes on into [`Progress::transferred`].
struct Counted<'p, W> {
    inner: W,
    progress: &'p Progress,
    written: u64,
}

impl<W: Write> Counted<'_, W> {
    /// `write_all` of several slices, vectored (no copy into a stream buffer), counting each
    /// partial write as it happens.
    fn put_vectored(&mut self, mut slices: &mut [io::IoSlice<'_>]) -> Result<()> {
        io::IoSlice::advance_slices(&mut slices, 0);
        while !slices.is_empty() {
            match self.inner.write_vectored(slices) {
                Ok(0) => {
                    let e = io::ErrorKind::WriteZero.into();
                    return Err(Error::io("write the migration stream", self.written, e));
                }
                Ok(n) => {
                    io::IoSlice::advance_slices(&mut slices, n);
                    self.written += n as u64;
                    self.progress.transferred.store(self.written, Ordering::Relaxed);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(Error::io("write the migration stream", self.written, e)),
            }
        }
        Ok(())
    }

    /// `write_all`, counting each partial write as it happens.
    fn put(&mut self, mut bytes: &[u8]) -> Result<()> {
        while !bytes.is_empty() {
            match self.inner.write(bytes) {
                Ok(0) => {
                    let e = io::ErrorKind::WriteZero.into();
                    return Err(Error::io("write the migration stream", self.written, e));
                }
                Ok(n) => {
                    bytes = &bytes[n..];
                    self.written += n as u64;
                    self.progress.transferred.store(self.written, Ordering::Relaxed);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(Error::io("write the migration stream", self.written, e)),
            }
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<()> {
        self.inner.flush().map_err(|e| Error::io("flush the migration stream", self.written, e))
    }
}

fn put_u8(buf: &mut Vec<u8>, v: u8) {
    buf.push(v);
}
fn put_be32(buf: &mut Vec<u8>, v: u32) {
    buf.extend_from_slice(&v.to_be_bytes());
}
fn put_be64(buf: &mut Vec<u8>, v: u64) {
    buf.extend_from_slice(&v.to_be_bytes());
}
/// QEMU's idstr: a length byte, then the bytes.
fn put_idstr(buf: &mut Vec<u8>, s: &str) {
    put_u8(buf, s.len() as u8); // checked to fit by the callers
    buf.extend_from_slice(s.as_bytes());
}
fn put_footer(buf: &mut Vec<u8>, section_id: u32) {
    put_u8(buf, wire::SECTION_FOOTER);
    put_be32(buf, section_id);
}

fn is_zero(page: &[u8]) -> bool {
    // An OR over each 256-byte run is a loop the compiler vectorises; stopping at the first
    // run with data spares pages with data (most of a busy guest's) a full scan.
    page.chunks(256).all(|run| run.iter().fold(0u8, |acc, &b| acc | b) == 0)
}

fn check_snapshot(snapshot: &Snapshot<'_>, ram_size: usize) -> Result<()> {
    if ram_size == 0 || ram_size % PAGE_SIZE != 0 {
        return Err(Error::Invalid(format!(
            "RAM of {ram_size} bytes cannot be saved: it must be a non-zero multiple of \
             {PAGE_SIZE} bytes"
        )));
    }
    if snapshot.machine_type.len() > MAX_MACHINE_TYPE_LEN {
        return Err(Error::Invalid(format!(
            "machine type '{}' is longer than {MAX_MACHINE_TYPE_LEN} bytes",
            snapshot.machine_type
        )));
    }
    for (i, d) in snapshot.devices.iter().enumerate() {
        if d.name.is_empty() || d.name.len() > 255 {
            return Err(Error::Invalid(format!(
                "device section name '{}' must be 1 to 255 bytes long",
                d.name
            )));
        }
        if d.data.len() > MAX_DEVICE_STATE_LEN {
            return Err(Error::Invalid(format!(
                "state of device '{}' is {} bytes, more than the {MAX_DEVICE_STATE_LEN} a \
                 stream may carry",
                d.name,
                d.data.len()
            )));
        }
        let dup = snapshot.devices[..i]
            .iter()
            .any(|o| o.name == d.name && o.instance_id == d.instance_id);
        if dup {
            return Err(Error::Invalid(format!(
                "device '{}' instance {} is given twice",
                d.name, d.instance_id
            )));
        }
    }
    Ok(())
}

/// The vmdesc, formatted as QEMU's JSON writer formats it (`", "` and `": "`, keys in
/// QEMU's order), describing each device's state as its `size` and `data` fields.
fn vmdesc_json(devices: &[DeviceState]) -> String {
    let quote = |s: &str| serde_json::Value::from(s).to_string();
    let described: Vec<String> = devices
        .iter()
        .map(|d| {
            format!(
                "{{\"name\": {name}, \"instance_id\": {}, \"vmsd_name\": {name}, \"version\": {}, \
                 \"fields\": [{{\"name\": \"size\", \"type\": \"uint32\", \"size\": 4}}, \
                 {{\"name\": \"data\", \"type\": \"buffer\", \"size\": {}}}]}}",
                d.instance_id,
                d.version_id,
                d.data.len(),
                name = quote(&d.name),
            )
        })
        .collect();
    format!("{{\"page_size\": {PAGE_SIZE}, \"devices\": [{}]}}", described.join(", "))
}

/// Writes `snapshot` to `out` as a QEMU 7.2 migration stream; returns the bytes written.
///
/// Progress goes to `progress` as the stream is written; between parts the writer checks
/// [`Progress::is_cancelled`] and stops with [`Error::Cancelled`], leaving a truncated
/// stream that every destination refuses. `out` is flushed at the end.
pub fn save<W: Write>(out: W, snapshot: &Snapshot<'_>, progress: &Progress) -> Result<u64> {
    let ram_size = snapshot.ram.size();
    check_snapshot(snapshot, ram_size)?;
    let pages = ram_size / PAGE_SIZE;
    progress.total.store(ram_size as u64, Ordering::Relaxed);
    progress.remaining.store(ram_size as u64, Ordering::Relaxed);

    let mut out = Counted { inner: out, progress, written: 0 };
    let ram_id = RAM_SECTION_ID;
    let mut buf = Vec::with_capacity(PAGES_PER_PART * (PAGE_SIZE + 16) + 64);

    // Header and configuration (vmstate_configuration: a uint32 length and the name).
    put_be32(&mut buf, wire::MAGIC);
    put_be32(&mut buf, wire::VERSION);
    put_u8(&mut buf, wire::CONFIGURATION);
    put_be32(&mut buf, snapshot.machine_type.len() as u32);
    buf.extend_from_slice(snapshot.machine_type.as_bytes());

    // SECTION_START for RAM: the total, the blocks, EOS (ram_save_setup).
    put_u8(&mut buf, wire::SECTION_START);
    put_be32(&mut buf, ram_id);
    put_idstr(&mut buf, wire::RAM_SECTION);
    put_be32(&mut buf, 0);
    put_be32(&mut buf, wire::RAM_VERSION);
    put_be64(&mut buf, ram_size as u64 | wire::FLAG_MEM_SIZE);
    put_idstr(&mut buf, RAM_BLOCK);
    put_be64(&mut buf, ram_size as u64);
    put_be64(&mut buf, wire::FLAG_EOS);
    put_footer(&mut buf, ram_id);
    out.put(&buf)?;

    // SECTION_PARTs of page records. Only the very first record names the block: QEMU's
    // last_sent_block carries across parts.
    let mut named = false;
    let (mut zero, mut normal) = (0u64, 0u64);
    // Record headers go into `buf`; pages with data are written from the RAM itself, by
    // vectored writes: `spans` says, in stream order, which bytes come from where.
    let mut spans: Vec<Span> = Vec::with_capacity(2 * PAGES_PER_PART + 2);
    for first in (0..pages).step_by(PAGES_PER_PART) {
        if progress.is_cancelled() {
            return Err(Error::Cancelled);
        }
        let count = PAGES_PER_PART.min(pages - first);
        snapshot.ram.with_slice(first * PAGE_SIZE, count * PAGE_SIZE, &mut |part| {
            buf.clear();
            spans.clear();
            put_u8(&mut buf, wire::SECTION_PART);
            put_be32(&mut buf, ram_id);
            let mut header_from = 0;
            for (i, page) in part.chunks_exact(PAGE_SIZE).enumerate() {
                let offset = ((first + i) * PAGE_SIZE) as u64;
                let kind = if is_zero(page) { wire::FLAG_ZERO } else { wire::FLAG_PAGE };
                let continued = if named { wire::FLAG_CONTINUE } else { 0 };
                put_be64(&mut buf, offset | kind | continued);
                if !named {
                    put_idstr(&mut buf, RAM_BLOCK);
                    named = true;
                }
                if kind == wire::FLAG_ZERO {
                    put_u8(&mut buf, 0);
                    zero += 1;
                } else {
                    spans.push(Span::Header(header_from..buf.len()));
                    spans.push(Span::Page(i));
                    header_from = buf.len();
                    normal += 1;
                }
            }
            put_be64(&mut buf, wire::FLAG_EOS);
            put_footer(&mut buf, ram_id);
            spans.push(Span::Header(header_from..buf.len()));
            let mut slices: Vec<io::IoSlice<'_>> = spans
                .iter()
                .map(|span| match span {
                    Span::Header(range) => io::IoSlice::new(&buf[range.clone()]),
                    Span::Page(i) => io::IoSlice::new(&part[i * PAGE_SIZE..(i + 1) * PAGE_SIZE]),
                })
                .filter(|s| !s.is_empty())
                .collect();
            out.put_vectored(&mut slices)
        })?;
        progress.duplicate.store(zero, Ordering::Relaxed);
        progress.normal.store(normal, Ordering::Relaxed);
        let left = (pages - first - count) * PAGE_SIZE;
        progress.remaining.store(left as u64, Ordering::Relaxed);
    }
    if progress.is_cancelled() {
        return Err(Error::Cancelled);
    }

    // SECTION_END: every page went in the parts, so it only closes the section.
    buf.clear();
    put_u8(&mut buf, wire::SECTION_END);
    put_be32(&mut buf, ram_id);
    put_be64(&mut buf, wire::FLAG_EOS);
    put_footer(&mut buf, ram_id);

    // One SECTION_FULL per device, ids following RAM's.
    for (i, device) in snapshot.devices.iter().enumerate() {
        let id = ram_id + 1 + i as u32;
        put_u8(&mut buf, wire::SECTION_FULL);
        put_be32(&mut buf, id);
        put_idstr(&mut buf, &device.name);
        put_be32(&mut buf, device.instance_id);
        put_be32(&mut buf, device.version_id);
        put_be32(&mut buf, device.data.len() as u32);
        buf.extend_from_slice(&device.data);
        put_footer(&mut buf, id);
    }

    put_u8(&mut buf, wire::EOF);
    let json = vmdesc_json(snapshot.devices);
    put_u8(&mut buf, wire::VMDESCRIPTION);
    put_be32(&mut buf, json.len() as u32);
    buf.extend_from_slice(json.as_bytes());
    out.put(&buf)?;
    out.flush()?;
    Ok(out.written)
}

// ---------------------------------------------------------------------------------------
// Writing to an fd
// ---------------------------------------------------------------------------------------

/// A buffered `Write` to an fd that blocks, whatever `O_NONBLOCK` says.
///
/// `O_NONBLOCK` lives on the open file description, which a peer holding the same
/// description (a parent's socket, a passed fd) can change at any time. So a write that
/// answers `EAGAIN` waits for the fd to become writable with poll(2), then writes the rest:
/// no byte is lost or repeated, and no time is slept. `EINTR` is retried. Sockets are
/// written with `send(MSG_NOSIGNAL)`, so a vanished peer is an `EPIPE` error, not a
/// SIGPIPE; files and pipes with write(2) (Rust programs ignore SIGPIPE from the start, so
/// a pipe whose reader left gives `EPIPE` too).
///
/// Bytes are gathered in a buffer (64 KiB unless told otherwise) and written when it
/// fills, on [`flush`](Write::flush), and by [`into_inner`](BlockingWriter::into_inner);
/// writes larger than the buffer go straight to the fd. Dropping the writer does not flush,
/// so that dropping a cancelled migration never waits on a stuck reader.
#[derive(Debug)]
pub struct BlockingWriter {
    file: File,
    socket: bool,
    buf: Vec<u8>,
    capacity: usize,
}

impl BlockingWriter {
    /// The default buffer size.
    pub const DEFAULT_CAPACITY: usize = 64 * 1024;

    /// Writes to `fd`, with a 64 KiB buffer.
    pub fn new(fd: OwnedFd) -> io::Result<BlockingWriter> {
        BlockingWriter::with_capacity(fd, BlockingWriter::DEFAULT_CAPACITY)
    }

    /// Writes to `fd`, with a buffer of `capacity` bytes (at least 1).
    pub fn with_capacity(fd: OwnedFd, capacity: usize) -> io::Result<BlockingWriter> {
        let file = File::from(fd);
        let socket = file.metadata()?.file_type().is_socket();
        let capacity = capacity.max(1);
        Ok(BlockingWriter { file, socket, buf: Vec::with_capacity(capacity), capacity })
    }

    /// The fd written to.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }

    /// Flushes, then gives the fd back.
    pub fn into_inner(mut self) -> io::Result<OwnedFd> {
        self.flush()?;
        Ok(OwnedFd::from(self.file))
    }

    /// One write(2) or send(2) of some of `data`, waiting while the fd would block.
    fn write_some(&self, data: &[u8]) -> io::Result<usize> {
        loop {
            let r = if self.socket {
                chardev::fd::send_with_fds(self.file.as_fd(), data, &[])
            } else {
                (&self.file).write(data)
            };
            match r {
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    // Someone made the description non-blocking: wait as a blocking
                    // write would, on the kernel's word that there is room.
                    chardev::fd::wait_writable(self.file.as_fd(), None)?;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Writes all of `data` to the fd.
    fn write_raw(&self, mut data: &[u8]) -> io::Result<()> {
        while !data.is_empty() {
            match self.write_some(data)? {
                0 => return Err(io::ErrorKind::WriteZero.into()),
                n => data = &data[n..],
            }
        }
        Ok(())
    }

    fn flush_buf(&mut self) -> io::Result<()> {
        // On an error the unwritten bytes stay buffered: they are not lost, and none that
        // were written will be written again.
        let mut done = 0;
        let r = loop {
            if done == self.buf.len() {
                break Ok(());
            }
            match self.write_some(&self.buf[done..]) {
                Ok(0) => break Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => done += n,
                Err(e) => break Err(e),
            }
        };
        self.buf.drain(..done);
        r
    }
}

impl Write for BlockingWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if self.buf.len() + data.len() > self.capacity {
            self.flush_buf()?;
        }
        if data.len() >= self.capacity {
            // Large writes skip the buffer; report each partial write so that callers
            // counting progress see it move.
            let n = self.write_some(data)?;
            if n == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
            return Ok(n);
        }
        self.buf.extend_from_slice(data);
        Ok(data.len())
    }

    fn write_all(&mut self, data: &[u8]) -> io::Result<()> {
        if self.buf.len() + data.len() > self.capacity {
            self.flush_buf()?;
        }
        if data.len() >= self.capacity {
            return self.write_raw(data);
        }
        self.buf.extend_from_slice(data);
        Ok(())
    }

    /// Vectored writes go straight to the fd (after what is buffered), so that pages are
    /// sent from the RAM without a copy into the buffer.
    fn write_vectored(&mut self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        self.flush_buf()?;
        loop {
            let r = if self.socket {
                chardev::fd::send_vectored(self.file.as_fd(), bufs)
            } else {
                (&self.file).write_vectored(bufs)
            };
            match r {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    chardev::fd::wait_writable(self.file.as_fd(), None)?;
                }
                r => return r,
            }
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        self.flush_buf()
    }
}

// ---------------------------------------------------------------------------------------
// Loading
// ---------------------------------------------------------------------------------------

/// How a device section's state is framed, so that a reader finds its end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StateLayout {
    /// A uint32 length, then that many bytes: how [`save`] writes every device.
    Sized,
    /// Exactly this many bytes: a QEMU device whose vmstate has only fixed-size fields and
    /// no subsection (QEMU's "timer" is 24 bytes, "globalstate" 104).
    Fixed(usize),
}

/// What came out of a stream besides the RAM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Incoming {
    /// The machine type from the configuration section.
    pub machine_type: String,
    /// The device sections, in stream order.
    pub devices: Vec<DeviceState>,
    /// The vmdesc JSON, checked against the device sections; `None` when the stream ended
    /// after `QEMU_VM_EOF` without one.
    pub vmdesc: Option<String>,
    /// Pages that came as ZERO records.
    pub zero_pages: u64,
    /// Pages that came with their data.
    pub data_pages: u64,
    /// The stream's length in bytes.
    pub bytes: u64,
}

impl Incoming {
    /// The device section named `name` with instance `instance_id`.
    pub fn device(&self, name: &str, instance_id: u32) -> Option<&DeviceState> {
        self.devices.iter().find(|d| d.name == name && d.instance_id == instance_id)
    }
}

/// Reads streams for a destination: its machine type, and the layouts of device sections
/// that [`save`] did not write.
#[derive(Debug, Clone)]
pub struct Loader<'a> {
    machine_type: &'a str,
    fixed: Vec<(&'a str, usize)>,
}

/// Reads a stream written by [`save`] (or by QEMU, if its devices are known to a
/// [`Loader`]) into `ram`, for a destination of machine type `machine_type`.
///
/// `ram` is the destination's RAM, of its size: every page is overwritten.
pub fn load<R: Read>(input: R, machine_type: &str, ram: &mut [u8]) -> Result<Incoming> {
    Loader::new(machine_type).load(input, ram)
}

impl<'a> Loader<'a> {
    /// A loader for a destination of machine type `machine_type`; device sections are
    /// read as [`StateLayout::Sized`].
    pub fn new(machine_type: &'a str) -> Loader<'a> {
        Loader { machine_type, fixed: Vec::new() }
    }

    /// Reads the section `name` as [`StateLayout::Fixed`]`(len)`.
    pub fn fixed_size(mut self, name: &'a str, len: usize) -> Loader<'a> {
        self.fixed.push((name, len));
        self
    }

    /// How the device section `name` is framed.
    pub fn layout(&self, name: &str) -> StateLayout {
        match self.fixed.iter().find(|(n, _)| *n == name) {
            Some(&(_, len)) => StateLayout::Fixed(len),
            None => StateLayout::Sized,
        }
    }

    /// Reads a stream from `input` (blocking reads, buffered here) into `ram`.
    ///
    /// Reading stops after the vmdesc; bytes the buffer read beyond it are dropped.
    pub fn load<R: Read>(&self, input: R, ram: &mut [u8]) -> Result<Incoming> {
        if ram.is_empty() || ram.len() % PAGE_SIZE != 0 {
            return Err(Error::Invalid(format!(
                "destination RAM of {} bytes cannot be loaded: it must be a non-zero multiple \
                 of {PAGE_SIZE} bytes",
                ram.len()
            )));
        }
        let mut stream = Stream { input: BufReader::with_capacity(64 * 1024, input), pos: 0 };
        let mut state = LoadState::new(ram.len());
        let machine_type = header(&mut stream, self.machine_type)?;
        let devices = sections(&mut stream, self, ram, &mut state)?;
        let vmdesc = vmdesc(&mut stream, &devices)?;
        Ok(Incoming {
            machine_type,
            devices: devices.into_iter().map(|(_, d)| d).collect(),
            vmdesc,
            zero_pages: state.zero_pages,
            data_pages: state.data_pages,
            bytes: stream.pos,
        })
    }
}

/// The input, with the offset of the next byte.
struct Stream<R> {
    input: BufReader<R>,
    pos: u64,
}

impl<R: Read> Stream<R> {
    /// Fills `buf`, or says where the stream ended and inside what.
    fn exact(&mut self, buf: &mut [u8], reading: &'static str) -> Result<()> {
        let mut done = 0;
        while done < buf.len() {
            match self.input.read(&mut buf[done..]) {
                Ok(0) => return Err(Error::Truncated { offset: self.pos, reading }),
                Ok(n) => {
                    done += n;
                    self.pos += n as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(Error::io("read the migration stream", self.pos, e)),
            }
        }
        Ok(())
    }

    /// The next byte, or `None` at the end of the input.
    fn maybe_u8(&mut self) -> Result<Option<u8>> {
        let mut b = [0u8];
        loop {
            match self.input.read(&mut b) {
                Ok(0) => return Ok(None),
                Ok(_) => {
                    self.pos += 1;
                    return Ok(Some(b[0]));
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(Error::io("read the migration stream", self.pos, e)),
            }
        }
    }

    fn u8(&mut self, reading: &'static str) -> Result<u8> {
        let mut b = [0u8; 1];
        self.exact(&mut b, reading)?;
        Ok(b[0])
    }

    fn be32(&mut self, reading: &'static str) -> Result<u32> {
        let mut b = [0u8; 4];
        self.exact(&mut b, reading)?;
        Ok(u32::from_be_bytes(b))
    }

    fn be64(&mut self, reading: &'static str) -> Result<u64> {
        let mut b = [0u8; 8];
        self.exact(&mut b, reading)?;
        Ok(u64::from_be_bytes(b))
    }

    /// `len` bytes, read as they arrive: a length field that lies about a short stream
    /// allocates no more than the stream holds. Callers cap `len` first.
    fn bytes(&mut self, len: usize, reading: &'static str) -> Result<Vec<u8>> {
        let mut v = Vec::with_capacity(len.min(64 * 1024));
        let got = (&mut self.input)
            .take(len as u64)
            .read_to_end(&mut v)
            .map_err(|e| Error::io("read the migration stream", self.pos, e))?;
        self.pos += got as u64;
        if got < len {
            return Err(Error::Truncated { offset: self.pos, reading });
        }
        Ok(v)
    }

    /// An idstr: a length byte, then that many bytes of UTF-8.
    fn idstr(&mut self, reading: &'static str) -> Result<String> {
        let at = self.pos;
        let len = self.u8(reading)?;
        let bytes = self.bytes(len.into(), reading)?;
        String::from_utf8(bytes).map_err(|_| Error::format(at, format!("{reading} is not UTF-8")))
    }

    /// A section footer: 0x7e and the section's id.
    fn footer(&mut self, section_id: u32, name: &str) -> Result<()> {
        let at = self.pos;
        let marker = self.u8("a section footer")?;
        if marker != wire::SECTION_FOOTER {
            return Err(Error::format(
                at,
                format!(
                    "expected the footer (0x7e) of section '{name}' (id {section_id}), found \
                     0x{marker:02x}"
                ),
            ));
        }
        let id = self.be32("a section footer")?;
        if id != section_id {
            return Err(Error::format(
                at,
                format!("footer of section '{name}' (id {section_id}) names section id {id}"),
            ));
        }
        Ok(())
    }
}

/// Magic, version and configuration; returns the machine type.
fn header<R: Read>(s: &mut Stream<R>, machine_type: &str) -> Result<String> {
    let magic = s.be32("the magic number")?;
    if magic != wire::MAGIC {
        return Err(Error::format(
            0,
            format!(
                "not a QEMU migration stream (magic 0x{magic:08x}, expected 0x5145564d 'QEVM')"
            ),
        ));
    }
    let version = s.be32("the stream version")?;
    if version != wire::VERSION {
        return Err(Error::format(
            4,
            format!("stream version {version} is not supported (only version 3)"),
        ));
    }
    let at = s.pos;
    let kind = s.u8("the configuration section")?;
    if kind != wire::CONFIGURATION {
        return Err(Error::format(
            at,
            format!("expected the configuration section (0x07), found 0x{kind:02x}"),
        ));
    }
    let at = s.pos;
    let len = s.be32("the machine type")? as usize;
    if len > MAX_MACHINE_TYPE_LEN {
        return Err(Error::format(
            at,
            format!("machine type length {len} exceeds the limit of {MAX_MACHINE_TYPE_LEN}"),
        ));
    }
    let name = s.bytes(len, "the machine type")?;
    let name = String::from_utf8(name)
        .map_err(|_| Error::format(at + 4, "the machine type is not UTF-8"))?;
    if name != machine_type {
        return Err(Error::MachineType { stream: name, destination: machine_type.to_owned() });
    }
    Ok(name)
}

/// Where the RAM section is, and which pages it has delivered.
struct LoadState {
    ram_id: Option<u32>,
    ended: bool,
    /// Whether a page record has named the block yet (QEMU's `last_recv_block` is set).
    block_named: bool,
    sent: Vec<bool>,
    zero_pages: u64,
    data_pages: u64,
}

impl LoadState {
    fn new(ram_size: usize) -> LoadState {
        LoadState {
            ram_id: None,
            ended: false,
            block_named: false,
            sent: vec![false; ram_size / PAGE_SIZE],
            zero_pages: 0,
            data_pages: 0,
        }
    }
}

fn section_name(kind: u8) -> &'static str {
    match kind {
        wire::EOF => "QEMU_VM_EOF",
        wire::SECTION_START => "QEMU_VM_SECTION_START",
        wire::SECTION_PART => "QEMU_VM_SECTION_PART",
        wire::SECTION_END => "QEMU_VM_SECTION_END",
        wire::SECTION_FULL => "QEMU_VM_SECTION_FULL",
        wire::SUBSECTION => "QEMU_VM_SUBSECTION",
        wire::VMDESCRIPTION => "QEMU_VM_VMDESCRIPTION",
        wire::CONFIGURATION => "QEMU_VM_CONFIGURATION",
        wire::COMMAND => "QEMU_VM_COMMAND",
        _ => "an unknown section type",
    }
}

/// The sections up to and including `QEMU_VM_EOF`; returns the device sections with ids.
fn sections<R: Read>(
    s: &mut Stream<R>,
    loader: &Loader<'_>,
    ram: &mut [u8],
    state: &mut LoadState,
) -> Result<Vec<(u32, DeviceState)>> {
    let mut devices: Vec<(u32, DeviceState)> = Vec::new();
    loop {
        let at = s.pos;
        let kind = s.u8("the next section")?;
        let out_of_order = |expected: &str| {
            Error::format(
                at,
                format!("{} (0x{kind:02x}) where {expected} belongs", section_name(kind)),
            )
        };
        match kind {
            wire::SECTION_START => {
                if state.ram_id.is_some() {
                    return Err(out_of_order("no second SECTION_START"));
                }
                let id = s.be32("a section header")?;
                let name = s.idstr("a section name")?;
                let instance = s.be32("a section header")?;
                let version = s.be32("a section header")?;
                if name != wire::RAM_SECTION || instance != 0 {
                    return Err(Error::format(
                        at,
                        format!(
                            "section '{name}' instance {instance} is not an iterative section \
                             this machine has (only 'ram' instance 0)"
                        ),
                    ));
                }
                if version != wire::RAM_VERSION {
                    return Err(Error::format(
                        at,
                        format!("section 'ram' version {version} is not supported (only 4)"),
                    ));
                }
                state.ram_id = Some(id);
                ram_setup(s, ram.len())?;
                s.footer(id, wire::RAM_SECTION)?;
            }
            wire::SECTION_PART | wire::SECTION_END => {
                let id = s.be32("a section header")?;
                let Some(ram_id) = state.ram_id.filter(|_| !state.ended) else {
                    return Err(out_of_order("the RAM section's START or the devices"));
                };
                if id != ram_id {
                    return Err(Error::format(
                        at,
                        format!(
                            "{} of section id {id}; the RAM section is id {ram_id}",
                            section_name(kind)
                        ),
                    ));
                }
                ram_pages(s, ram, state)?;
                s.footer(id, wire::RAM_SECTION)?;
                if kind == wire::SECTION_END {
                    state.ended = true;
                    if let Some(page) = state.sent.iter().position(|&sent| !sent) {
                        return Err(Error::format(
                            at,
                            format!(
                                "the RAM section ends but page 0x{:x} of block '{RAM_BLOCK}' was \
                                 never sent",
                                page * PAGE_SIZE
                            ),
                        ));
                    }
                }
            }
            wire::SECTION_FULL => {
                if !state.ended {
                    return Err(out_of_order("the RAM section"));
                }
                let id = s.be32("a section header")?;
                let name = s.idstr("a section name")?;
                let instance_id = s.be32("a section header")?;
                let version_id = s.be32("a section header")?;
                if Some(id) == state.ram_id || devices.iter().any(|(i, _)| *i == id) {
                    return Err(Error::format(
                        at,
                        format!("section '{name}' reuses section id {id}"),
                    ));
                }
                if devices.iter().any(|(_, d)| d.name == name && d.instance_id == instance_id) {
                    return Err(Error::format(
                        at,
                        format!("device '{name}' instance {instance_id} comes twice"),
                    ));
                }
                let data = device_state(s, loader.layout(&name), &name)?;
                s.footer(id, &name)?;
                devices.push((id, DeviceState { name, instance_id, version_id, data }));
            }
            wire::EOF => {
                if !state.ended {
                    return Err(out_of_order("the rest of the RAM section"));
                }
                return Ok(devices);
            }
            wire::SUBSECTION | wire::VMDESCRIPTION | wire::CONFIGURATION | wire::COMMAND => {
                return Err(out_of_order("a section"));
            }
            _ => {
                return Err(Error::format(at, format!("unknown section type 0x{kind:02x}")));
            }
        }
    }
}

fn device_state<R: Read>(s: &mut Stream<R>, layout: StateLayout, name: &str) -> Result<Vec<u8>> {
    let len = match layout {
        StateLayout::Fixed(len) => len,
        StateLayout::Sized => {
            let at = s.pos;
            let len = s.be32("a device state's size")? as usize;
            if len > MAX_DEVICE_STATE_LEN {
                return Err(Error::format(
                    at,
                    format!(
                        "state of device '{name}' claims {len} bytes, more than the limit of \
                         {MAX_DEVICE_STATE_LEN}"
                    ),
                ));
            }
            len
        }
    };
    s.bytes(len, "a device's state")
}

/// A page record's header: where, what, and the raw flags.
fn split(v: u64) -> (u64, u64) {
    (v & !wire::FLAGS_MASK, v & wire::FLAGS_MASK)
}

fn check_flags(at: u64, flags: u64) -> Result<()> {
    let known = wire::FLAG_ZERO
        | wire::FLAG_MEM_SIZE
        | wire::FLAG_PAGE
        | wire::FLAG_EOS
        | wire::FLAG_CONTINUE;
    let unknown = flags & !known;
    if unknown == 0 {
        return Ok(());
    }
    let what = if unknown & wire::FLAG_COMPRESS_PAGE != 0 {
        "compressed pages (capability 'compress') are not supported".to_owned()
    } else if unknown & wire::FLAG_XBZRLE != 0 {
        "XBZRLE pages (capability 'xbzrle') are not supported".to_owned()
    } else if unknown & wire::FLAG_FULL != 0 {
        "RAM_SAVE_FLAG_FULL is obsolete".to_owned()
    } else {
        format!("unknown page flags 0x{unknown:x}")
    };
    Err(Error::format(at, format!("page record flags 0x{flags:x}: {what}")))
}

/// The RAM section's start: MEM_SIZE, the blocks, EOS.
fn ram_setup<R: Read>(s: &mut Stream<R>, ram_size: usize) -> Result<()> {
    let at = s.pos;
    let (total, flags) = split(s.be64("the RAM size")?);
    check_flags(at, flags)?;
    if flags != wire::FLAG_MEM_SIZE {
        return Err(Error::format(
            at,
            format!("the RAM section starts with flags 0x{flags:x}, not MEM_SIZE (0x4)"),
        ));
    }
    if total != ram_size as u64 {
        return Err(Error::RamSize { stream: total, destination: ram_size as u64 });
    }
    let mut left = total;
    let mut blocks: Vec<(String, u64)> = Vec::new();
    while left > 0 {
        let at = s.pos;
        let name = s.idstr("a RAM block name")?;
        let len = s.be64("a RAM block size")?;
        if len > left {
            return Err(Error::format(
                at,
                format!(
                    "RAM block '{name}' of {len} bytes exceeds the {left} bytes left of the total"
                ),
            ));
        }
        left -= len;
        blocks.push((name, len));
    }
    // The total matched the destination, so one block named "ram" is all of it.
    if blocks.len() != 1 || blocks[0].0 != RAM_BLOCK {
        let listed: Vec<String> =
            blocks.iter().map(|(name, len)| format!("'{name}' ({len} bytes)")).collect();
        return Err(Error::format(
            at + 8,
            format!(
                "the stream's RAM blocks are {}; this machine has one block '{RAM_BLOCK}' of \
                 {ram_size} bytes",
                listed.join(", ")
            ),
        ));
    }
    let at = s.pos;
    let (offset, flags) = split(s.be64("the end of the RAM blocks")?);
    if flags != wire::FLAG_EOS || offset != 0 {
        return Err(Error::format(
            at,
            format!("expected EOS (0x10) after the RAM blocks, found 0x{:x}", offset | flags),
        ));
    }
    Ok(())
}

/// Page records until EOS, into `ram`.
fn ram_pages<R: Read>(s: &mut Stream<R>, ram: &mut [u8], state: &mut LoadState) -> Result<()> {
    loop {
        let at = s.pos;
        let (offset, flags) = split(s.be64("a page record")?);
        check_flags(at, flags)?;
        if flags == wire::FLAG_EOS {
            if offset != 0 {
                return Err(Error::format(at, format!("EOS record with offset 0x{offset:x}")));
            }
            return Ok(());
        }
        let kind = flags & !wire::FLAG_CONTINUE;
        if kind != wire::FLAG_ZERO && kind != wire::FLAG_PAGE {
            return Err(Error::format(
                at,
                format!("page record flags 0x{flags:x}: not one ZERO (0x2) or PAGE (0x8) record"),
            ));
        }
        if flags & wire::FLAG_CONTINUE != 0 {
            if !state.block_named {
                return Err(Error::format(
                    at,
                    "page record continues a block, but no record named one yet",
                ));
            }
        } else {
            let name_at = s.pos;
            let name = s.idstr("a page record's block name")?;
            if name != RAM_BLOCK {
                return Err(Error::format(
                    name_at,
                    format!("page record for unknown RAM block '{name}'"),
                ));
            }
            state.block_named = true;
        }
        let page = usize::try_from(offset).ok().filter(|&o| o < ram.len()).ok_or_else(|| {
            Error::format(
                at,
                format!(
                    "page offset 0x{offset:x} is beyond the {} bytes of block '{RAM_BLOCK}'",
                    ram.len()
                ),
            )
        })?;
        let dest = &mut ram[page..page + PAGE_SIZE];
        if kind == wire::FLAG_ZERO {
            let fill_at = s.pos;
            let fill = s.u8("a ZERO page record")?;
            if fill != 0 {
                return Err(Error::format(
                    fill_at,
                    format!("ZERO page record at 0x{offset:x} fills with 0x{fill:02x}, not 0"),
                ));
            }
            dest.fill(0);
            state.zero_pages += 1;
        } else {
            s.exact(dest, "a page's data")?;
            state.data_pages += 1;
        }
        state.sent[page / PAGE_SIZE] = true;
    }
}

/// After `QEMU_VM_EOF`: the end of the input, or the vmdesc, checked against `devices`.
fn vmdesc<R: Read>(s: &mut Stream<R>, devices: &[(u32, DeviceState)]) -> Result<Option<String>> {
    let at = s.pos;
    match s.maybe_u8()? {
        None => return Ok(None),
        Some(wire::VMDESCRIPTION) => {}
        Some(kind) => {
            return Err(Error::format(
                at,
                format!(
                    "0x{kind:02x} after QEMU_VM_EOF, where QEMU_VM_VMDESCRIPTION (0x06) or the \
                     end belongs"
                ),
            ))
        }
    }
    let len_at = s.pos;
    let len = s.be32("the vmdesc length")? as usize;
    if len > MAX_VMDESC_LEN {
        return Err(Error::format(
            len_at,
            format!("vmdesc length {len} exceeds the limit of {MAX_VMDESC_LEN}"),
        ));
    }
    let json_at = s.pos;
    let bytes = s.bytes(len, "the vmdesc")?;
    let bad = |reason: String| Error::format(json_at, format!("vmdesc: {reason}"));
    let text = String::from_utf8(bytes).map_err(|_| bad("not UTF-8".into()))?;
    let value: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| bad(format!("not JSON: {e}")))?;
    if value.get("page_size").and_then(serde_json::Value::as_u64) != Some(PAGE_SIZE as u64) {
        return Err(bad(format!("\"page_size\" is not {PAGE_SIZE}")));
    }
    let listed = value
        .get("devices")
        .and_then(serde_json::Value::as_array)
        .ok_or_else(|| bad("no \"devices\" list".into()))?;
    if listed.len() != devices.len() {
        return Err(bad(format!(
            "lists {} devices, the stream has {} device sections",
            listed.len(),
            devices.len()
        )));
    }
    for (i, (entry, (_, device))) in listed.iter().zip(devices).enumerate() {
        let name = entry.get("name").and_then(serde_json::Value::as_str);
        let instance = entry.get("instance_id").and_then(serde_json::Value::as_u64);
        if name != Some(device.name.as_str()) || instance != Some(device.instance_id.into()) {
            return Err(bad(format!(
                "device {i} is {} instance {}, the stream's section is '{}' instance {}",
                name.map_or("(no name)".to_owned(), |n| format!("'{n}'")),
                instance.map_or("(none)".to_owned(), |n| n.to_string()),
                device.name,
                device.instance_id
            )));
        }
        if let Some(version) = entry.get("version") {
            if version.as_u64() != Some(device.version_id.into()) {
                return Err(bad(format!(
                    "device '{}' has version {version}, its section version {}",
                    device.name, device.version_id
                )));
            }
        }
    }
    Ok(Some(text))
}

// ---------------------------------------------------------------------------------------
// Device states
// ---------------------------------------------------------------------------------------

/// Longest receive FIFO a 16550 has (vm-superio's `FIFO_SIZE`).
const SERIAL_FIFO_SIZE: usize = 64;

/// The UART's state as a [`SERIAL`] section of layout version [`SERIAL_VERSION`]: the nine
/// registers (DLL, DLM, IER, IIR, LCR, LSR, MCR, MSR, SCR), the receive FIFO's length, then
/// its bytes.
pub fn serial_section(instance_id: u32, state: &SerialState) -> DeviceState {
    let mut data = vec![
        state.baud_divisor_low,
        state.baud_divisor_high,
        state.interrupt_enable,
        state.interrupt_identification,
        state.line_control,
        state.line_status,
        state.modem_control,
        state.modem_status,
        state.scratch,
    ];
    // A FIFO holds at most 64 bytes; a longer one could not be restored (from_state
    // refuses it), so only what fits is kept.
    let fifo = &state.in_buffer[..state.in_buffer.len().min(SERIAL_FIFO_SIZE)];
    if fifo.len() < state.in_buffer.len() {
        log::warn!("serial: {} bytes beyond a full FIFO dropped", state.in_buffer.len() - 64);
    }
    data.push(fifo.len() as u8);
    data.extend_from_slice(fifo);
    DeviceState::new(SERIAL, instance_id, SERIAL_VERSION, data)
}

/// The UART's state from a [`SERIAL`] section, for `Serial::from_state`.
pub fn serial_state(device: &DeviceState) -> Result<SerialState> {
    let bad = |reason: String| Error::DeviceState { name: device.name.clone(), reason };
    if device.version_id != SERIAL_VERSION {
        return Err(bad(format!(
            "version {} is not supported (only {SERIAL_VERSION})",
            device.version_id
        )));
    }
    let d = &device.data;
    let Some(&fifo_len) = d.get(9) else {
        return Err(bad(format!("{} bytes, shorter than the 10 of the registers", d.len())));
    };
    let fifo_len = usize::from(fifo_len);
    if fifo_len > SERIAL_FIFO_SIZE {
        return Err(bad(format!("FIFO of {fifo_len} bytes; a 16550 holds {SERIAL_FIFO_SIZE}")));
    }
    if d.len() != 10 + fifo_len {
        return Err(bad(format!(
            "{} bytes, but the registers and a FIFO of {fifo_len} bytes make {}",
            d.len(),
            10 + fifo_len
        )));
    }
    Ok(SerialState {
        baud_divisor_low: d[0],
        baud_divisor_high: d[1],
        interrupt_enable: d[2],
        interrupt_identification: d[3],
        line_control: d[4],
        line_status: d[5],
        modem_control: d[6],
        modem_status: d[7],
        scratch: d[8],
        in_buffer: d[10..].to_vec(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small machine: 8 pages, pages 1 and 5 with data, a UART and a shell.
    fn small() -> (Vec<u8>, Vec<DeviceState>) {
        let mut ram = vec![0u8; 8 * PAGE_SIZE];
        ram[PAGE_SIZE..2 * PAGE_SIZE].iter_mut().enumerate().for_each(|(i, b)| *b = i as u8);
        ram[6 * PAGE_SIZE - 1] = 0xaa; // only the last byte: still a data page
        let devices = vec![
            serial_section(0, &SerialState { in_buffer: b"ab".to_vec(), ..Default::default() }),
            DeviceState::new(GUEST_SHELL, 0, 1, b"uptime-offset=1.5".to_vec()),
        ];
        (ram, devices)
    }

    fn saved(ram: &Vec<u8>, devices: &[DeviceState]) -> Vec<u8> {
        let mut out = Vec::new();
        let snapshot = Snapshot { machine_type: "pc", ram, devices };
        save(&mut out, &snapshot, &Progress::new()).unwrap();
        out
    }

    fn load_err(stream: &[u8], ram_size: usize) -> String {
        let mut ram = vec![0u8; ram_size];
        load(stream, "pc", &mut ram).unwrap_err().to_string()
    }

    /// A hand-made stream, up to and including the RAM START section's MEM_SIZE record.
    fn start_of_stream(total: u64) -> Vec<u8> {
        let mut b = Vec::new();
        put_be32(&mut b, wire::MAGIC);
        put_be32(&mut b, 3);
        put_u8(&mut b, wire::CONFIGURATION);
        put_be32(&mut b, 2);
        b.extend_from_slice(b"pc");
        put_u8(&mut b, wire::SECTION_START);
        put_be32(&mut b, 0);
        put_idstr(&mut b, "ram");
        put_be32(&mut b, 0);
        put_be32(&mut b, 4);
        put_be64(&mut b, total | wire::FLAG_MEM_SIZE);
        b
    }

    /// A hand-made stream with one block of `pages` pages, then `records` in one PART.
    fn stream_with_records(pages: u64, records: &[u8]) -> Vec<u8> {
        let mut b = start_of_stream(pages * PAGE_SIZE as u64);
        put_idstr(&mut b, "ram");
        put_be64(&mut b, pages * PAGE_SIZE as u64);
        put_be64(&mut b, wire::FLAG_EOS);
        put_footer(&mut b, 0);
        put_u8(&mut b, wire::SECTION_PART);
        put_be32(&mut b, 0);
        b.extend_from_slice(records);
        put_be64(&mut b, wire::FLAG_EOS);
        put_footer(&mut b, 0);
        put_u8(&mut b, wire::SECTION_END);
        put_be32(&mut b, 0);
        put_be64(&mut b, wire::FLAG_EOS);
        put_footer(&mut b, 0);
        put_u8(&mut b, wire::EOF);
        b
    }

    fn zero_record(offset: u64, first: bool) -> Vec<u8> {
        let mut r = Vec::new();
        if first {
            put_be64(&mut r, offset | wire::FLAG_ZERO);
            put_idstr(&mut r, "ram");
        } else {
            put_be64(&mut r, offset | wire::FLAG_ZERO | wire::FLAG_CONTINUE);
        }
        put_u8(&mut r, 0);
        r
    }

    #[test]
    fn a_saved_machine_loads_back_with_its_ram_and_devices() {
        let (ram, devices) = small();
        let stream = saved(&ram, &devices);
        let mut back = vec![0x55u8; ram.len()]; // stale contents are overwritten
        let incoming = load(&stream[..], "pc", &mut back).unwrap();
        assert_eq!(back, ram);
        assert_eq!(incoming.devices, devices);
        assert_eq!(incoming.machine_type, "pc");
        assert_eq!((incoming.zero_pages, incoming.data_pages), (6, 2));
        assert_eq!(incoming.bytes, stream.len() as u64);
        assert_eq!(incoming.vmdesc.as_deref(), Some(vmdesc_json(&devices).as_str()));
        assert_eq!(incoming.device(GUEST_SHELL, 0).unwrap().data, b"uptime-offset=1.5");
        assert!(incoming.device(GUEST_SHELL, 1).is_none());
    }

    #[test]
    fn progress_counts_what_was_written() {
        let (ram, devices) = small();
        let progress = Progress::new();
        let mut out = Vec::new();
        let n = save(
            &mut out,
            &Snapshot { machine_type: "pc", ram: &ram, devices: &devices },
            &progress,
        )
        .unwrap();
        assert_eq!(n, out.len() as u64);
        let stats = progress.ram();
        assert_eq!(
            stats,
            RamStats {
                transferred: out.len() as u64,
                total: ram.len() as u64,
                remaining: 0,
                duplicate: 6,
                normal: 2,
                normal_bytes: 2 * PAGE_SIZE as u64,
            }
        );
    }

    #[test]
    fn a_cancelled_save_stops_before_the_pages() {
        let (ram, devices) = small();
        let progress = Progress::new();
        progress.cancel();
        let mut out = Vec::new();
        let r = save(
            &mut out,
            &Snapshot { machine_type: "pc", ram: &ram, devices: &devices },
            &progress,
        );
        assert!(matches!(r, Err(Error::Cancelled)), "{r:?}");
        // Header, configuration and the RAM section's start only: a destination refuses it.
        assert_eq!(out.len(), 15 + 50);
        assert!(load_err(&out, ram.len()).contains("ends at byte 65"));
    }

    #[test]
    fn the_vmdesc_is_formatted_as_qemu_formats_it() {
        let devices = [DeviceState::new("serial", 0, 1, vec![0; 12])];
        assert_eq!(
            vmdesc_json(&devices),
            "{\"page_size\": 4096, \"devices\": [{\"name\": \"serial\", \"instance_id\": 0, \
             \"vmsd_name\": \"serial\", \"version\": 1, \"fields\": [{\"name\": \"size\", \
             \"type\": \"uint32\", \"size\": 4}, {\"name\": \"data\", \"type\": \"buffer\", \
             \"size\": 12}]}]}"
        );
        assert_eq!(vmdesc_json(&[]), "{\"page_size\": 4096, \"devices\": []}");
        // Names are JSON strings, escaped.
        let odd = [DeviceState::new("a\"b", 0, 1, vec![])];
        let v: serde_json::Value = serde_json::from_str(&vmdesc_json(&odd)).unwrap();
        assert_eq!(v["devices"][0]["name"], "a\"b");
    }

    #[test]
    fn a_stream_without_vmdesc_is_accepted_and_says_so() {
        let (ram, devices) = small();
        let stream = saved(&ram, &devices);
        let json_len = vmdesc_json(&devices).len();
        let without = &stream[..stream.len() - json_len - 5];
        assert_eq!(without.last(), Some(&wire::EOF));
        let mut back = vec![0u8; ram.len()];
        let incoming = load(without, "pc", &mut back).unwrap();
        assert_eq!(incoming.vmdesc, None);
        assert_eq!(back, ram);
        assert_eq!(incoming.devices, devices);
    }

    #[test]
    fn ram_of_another_size_is_refused_naming_both_sizes() {
        let (ram, devices) = small();
        let stream = saved(&ram, &devices);
        let e = load_err(&stream, 16 * PAGE_SIZE);
        assert_eq!(e, "migration stream has 32768 bytes of RAM, this machine has 65536");
    }

    #[test]
    fn another_machine_type_is_refused_as_qemu_refuses_it() {
        let (ram, devices) = small();
        let stream = saved(&ram, &devices);
        let mut back = vec![0u8; ram.len()];
        let e = load(&stream[..], "q35", &mut back).unwrap_err();
        assert_eq!(e.to_string(), "Machine type received is 'pc' and local is 'q35'");
    }

    #[test]
    fn several_ram_blocks_are_refused_with_their_names() {
        let mut b = start_of_stream(3 * PAGE_SIZE as u64);
        put_idstr(&mut b, "pc.ram");
        put_be64(&mut b, 2 * PAGE_SIZE as u64);
        put_idstr(&mut b, "pc.bios");
        put_be64(&mut b, PAGE_SIZE as u64);
        put_be64(&mut b, wire::FLAG_EOS);
        let e = load_err(&b, 3 * PAGE_SIZE);
        assert_eq!(
            e,
            "migration stream, byte 40: the stream's RAM blocks are 'pc.ram' (8192 bytes), \
             'pc.bios' (4096 bytes); this machine has one block 'ram' of 12288 bytes"
        );
    }

    #[test]
    fn page_records_are_checked() {
        let first = zero_record(0, true);
        let second = zero_record(PAGE_SIZE as u64, false);
        let part_at = 70; // where the PART's first record starts in these streams
        let ok = stream_with_records(2, &[first.clone(), second.clone()].concat());
        let mut ram = vec![1u8; 2 * PAGE_SIZE];
        load(&ok[..], "pc", &mut ram).unwrap();
        assert!(ram.iter().all(|&b| b == 0));

        let cases: Vec<(Vec<u8>, String)> = vec![
            (
                [zero_record(0, false), second.clone()].concat(),
                format!(
                    "byte {part_at}: page record continues a block, but no record named one yet"
                ),
            ),
            (
                [first.clone(), zero_record(2 * PAGE_SIZE as u64, false)].concat(),
                format!(
                    "byte {}: page offset 0x2000 is beyond the 8192 bytes of block 'ram'",
                    part_at + first.len()
                ),
            ),
            (
                first.clone(),
                "the RAM section ends but page 0x1000 of block 'ram' was never sent".into(),
            ),
            (
                {
                    let mut r = first.clone();
                    r[7] |= 0x01; // misaligned offset: the low bits are flags
                    [r, second.clone()].concat()
                },
                "flags 0x3: RAM_SAVE_FLAG_FULL is obsolete".into(),
            ),
            (
                {
                    let mut r = second.clone();
                    r[6] |= 0x01; // 0x100
                    [first.clone(), r].concat()
                },
                "compressed pages (capability 'compress') are not supported".into(),
            ),
            (
                {
                    let mut r = first.clone();
                    *r.last_mut().unwrap() = 7;
                    [r, second.clone()].concat()
                },
                "ZERO page record at 0x0 fills with 0x07, not 0".into(),
            ),
            (
                {
                    let mut r = first.clone();
                    r[7] = (wire::FLAG_ZERO | wire::FLAG_PAGE) as u8;
                    [r, second.clone()].concat()
                },
                "not one ZERO (0x2) or PAGE (0x8) record".into(),
            ),
            (
                {
                    let mut r = first.clone();
                    r[9..12].copy_from_slice(b"rom");
                    [r, second.clone()].concat()
                },
                format!("byte {}: page record for unknown RAM block 'rom'", part_at + 8),
            ),
        ];
        for (records, expected) in cases {
            let e = load_err(&stream_with_records(2, &records), 2 * PAGE_SIZE);
            assert!(e.contains(&expected), "{e}\nexpected: {expected}");
        }
    }

    #[test]
    fn section_order_and_footers_are_checked() {
        let (ram, devices) = small();
        let stream = saved(&ram, &devices);
        // The END section: before the device sections, EOF and the vmdesc.
        let full: usize = devices.iter().map(|d| 23 + d.name.len() + d.data.len()).sum();
        let end_at = stream.len() - vmdesc_json(&devices).len() - 5 - 1 - full - 18;
        assert_eq!(stream[end_at], wire::SECTION_END);
        let mut twice = stream[..end_at].to_vec();
        twice.extend_from_slice(&stream[end_at..end_at + 18]); // END
        twice.extend_from_slice(&stream[end_at..]); // END again
        assert!(load_err(&twice, ram.len()).contains(
            "QEMU_VM_SECTION_END (0x03) where the RAM section's START or the devices belongs"
        ));

        let mut footer = stream.clone();
        footer[end_at + 17] = 9;
        assert!(load_err(&footer, ram.len()).contains(&format!(
            "byte {}: footer of section 'ram' (id 1) names section id 9",
            end_at + 13
        )));

        let mut early_eof = stream[..end_at].to_vec();
        early_eof.push(wire::EOF);
        assert!(load_err(&early_eof, ram.len())
            .contains("QEMU_VM_EOF (0x00) where the rest of the RAM section belongs"));
    }

    #[test]
    fn the_vmdesc_must_name_the_device_sections() {
        let (ram, devices) = small();
        let stream = saved(&ram, &devices);
        let json_at = stream.len() - vmdesc_json(&devices).len();
        let mut renamed = stream.clone();
        let swapped = vmdesc_json(&[devices[1].clone(), devices[0].clone()]);
        renamed.truncate(json_at);
        renamed.extend_from_slice(swapped.as_bytes());
        let e = load_err(&renamed, ram.len());
        assert_eq!(
            e,
            format!(
                "migration stream, byte {json_at}: vmdesc: device 0 is 'guest-shell' instance \
                 0, the stream's section is 'serial' instance 0"
            )
        );
        let mut trailing = stream.clone();
        trailing.truncate(json_at - 5);
        trailing.push(0x42);
        assert!(load_err(&trailing, ram.len()).contains(
            "0x42 after QEMU_VM_EOF, where QEMU_VM_VMDESCRIPTION (0x06) or the end belongs"
        ));
    }

    #[test]
    fn what_cannot_be_a_stream_is_refused_before_writing() {
        let mut out = Vec::new();
        let p = Progress::new();
        let odd = vec![0u8; PAGE_SIZE + 1];
        let e = save(&mut out, &Snapshot { machine_type: "pc", ram: &odd, devices: &[] }, &p);
        assert!(e.unwrap_err().to_string().contains("multiple of 4096"));
        let ram = vec![0u8; PAGE_SIZE];
        let twice = [DeviceState::new("x", 0, 1, vec![]), DeviceState::new("x", 0, 1, vec![])];
        let e = save(&mut out, &Snapshot { machine_type: "pc", ram: &ram, devices: &twice }, &p);
        assert_eq!(e.unwrap_err().to_string(), "migration: device 'x' instance 0 is given twice");
        let long = [DeviceState::new(&"n".repeat(256), 0, 1, vec![])];
        let e = save(&mut out, &Snapshot { machine_type: "pc", ram: &ram, devices: &long }, &p);
        assert!(e.is_err());
        assert!(out.is_empty());
    }

    #[test]
    fn the_uart_state_round_trips_into_a_working_uart() {
        use vm_superio::serial::NoEvents;
        use vm_superio::Serial;
        let state = SerialState {
            baud_divisor_low: 0x0c,
            baud_divisor_high: 0x01,
            interrupt_enable: 0x01,
            interrupt_identification: 0x04,
            line_control: 0x03,
            line_status: 0x61,
            modem_control: 0x0b,
            modem_status: 0xb0,
            scratch: 0x5a,
            in_buffer: b"hello".to_vec(),
        };
        let device = serial_section(0, &state);
        assert_eq!((device.name.as_str(), device.version_id), (SERIAL, SERIAL_VERSION));
        assert_eq!(device.data.len(), 15);
        let back = serial_state(&device).unwrap();
        assert_eq!(back, state);
        let irq = crate::machine::Irq::default();
        let mut uart = Serial::from_state(&back, irq, NoEvents, std::io::sink()).unwrap();
        assert_eq!(uart.read(7), 0x5a); // the scratch register
        assert_eq!(uart.read(0), b'h'); // the FIFO, in order
        assert_eq!(uart.state().in_buffer, b"ello");

        let full = SerialState { in_buffer: vec![7; 64], ..Default::default() };
        assert_eq!(serial_state(&serial_section(0, &full)).unwrap(), full);
    }

    #[test]
    fn a_bad_uart_state_is_refused() {
        let good = serial_section(0, &SerialState::default());
        let with =
            |version: u32, data: Vec<u8>| DeviceState { version_id: version, data, ..good.clone() };
        let cases = [
            (with(2, good.data.clone()), "version 2 is not supported (only 1)"),
            (with(1, vec![0; 9]), "9 bytes, shorter than the 10 of the registers"),
            (with(1, [vec![0; 9], vec![65], vec![0; 65]].concat()), "FIFO of 65 bytes"),
            (with(1, [vec![0; 9], vec![2], vec![0; 1]].concat()), "11 bytes, but the registers"),
        ];
        for (device, expected) in cases {
            let e = serial_state(&device).unwrap_err().to_string();
            assert!(e.starts_with("migration: state of device 'serial': "), "{e}");
            assert!(e.contains(expected), "{e}");
        }
    }
}

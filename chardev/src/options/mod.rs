//! QEMU's `-chardev` option syntax, parsed once at the edge into a typed [`ChardevSpec`].
//!
//! The string `file,id=f0,path=/tmp/x,append=on` becomes
//! `ChardevSpec { id: "f0", backend: BackendSpec::File { .. }, .. }`. Parsing follows
//! QEMU's QemuOpts rules (see [`split_options`]) and the per-backend checks of
//! `chardev/char*.c`, with QEMU's defaults and, where QEMU has one, its error text. The
//! types are plain data so that the QMP `chardev-add` parser can build the same spec from
//! JSON; nothing is opened or created here.
//!
//! ```
//! use chardev::options::{BackendSpec, ChardevSpec};
//!
//! let spec: ChardevSpec = "ringbuf,id=r0,size=64K".parse()?;
//! assert_eq!(spec.id, "r0");
//! assert_eq!(spec.backend, BackendSpec::Ringbuf { size: 65536 });
//! # Ok::<(), chardev::error::Error>(())
//! ```

use std::path::PathBuf;
use std::str::FromStr;

use crate::error::{Error, Result};

mod parse; // one -chardev string's options -> a checked ChardevSpec, per backend
mod syntax; // QemuOpts: key=value, ',,', implied keys, booleans, sizes

pub use parse::parse_mode;
use parse::{check_fanout_size, check_id, check_socket_mode, parse_spec};
pub use syntax::{parse_bool, parse_size, split_options};

/// The ring buffer size QEMU uses when `size=` is not given.
const DEFAULT_RINGBUF_SIZE: usize = 65536;

/// The largest `ringbuf` (`size=`) accepted: 1 GiB. The ring is allocated at its first write,
/// so a size the process cannot hold would abort it then (QEMU aborts at creation); sizes
/// above this are refused when the chardev is created, and a ring that still cannot be
/// allocated makes that write fail instead of aborting.
pub const MAX_RINGBUF_SIZE: usize = 1 << 30;

/// How much output a pty keeps for its first terminal when `backlog=` is not given.
pub const DEFAULT_PTY_BACKLOG: usize = 64 * 1024;

/// What a pty does with output once its backlog is full and still no terminal reads
/// (`backlog-full=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BacklogFull {
    /// `drop` (the default): the oldest output goes, counted and logged, and the writer
    /// never waits, as a guest's console must not stall for want of a terminal.
    #[default]
    DropOldest,
    /// `wait`: the writer waits until a terminal attaches and takes the backlog, as a relay
    /// (socat's pty) applies back-pressure; nothing is dropped.
    Wait,
}

/// QEMU's limit on a chardev id ("any string up to 127 characters").
const MAX_ID_LEN: usize = 127;

/// QEMU's text when a socket has no address, or more than one.
const ONE_SOCKET_ADDRESS: &str = "None or one of 'path', 'fd' or 'host' option required.";

/// Keys every backend accepts.
const COMMON_KEYS: &[&str] = &[
    "id",
    "backend",
    "mux",
    "logfile",
    "logappend",
    "logtimestamp",
    // Not QEMU's: size-based rotation of the logfile (see `LogSpec::rotation`).
    "logmaxsize",
    "logbackups",
    // Not QEMU's: what a full backend does to the frontend's writes (see `Overflow`).
    "overflow",
];

/// Keys of the `socket` backend.
const SOCKET_KEYS: &[&str] = &[
    "path",
    "abstract",
    "tight",
    "host",
    "port",
    "to",
    "ipv4",
    "ipv6",
    "fd",
    "server",
    "wait",
    "nodelay",
    "delay",
    "telnet",
    "tn3270",
    "websocket",
    "reconnect",
    "reconnect-ms",
    "tls-creds",
    "tls-authz",
    // Not QEMU's for chardevs (its migration and NBD have it): see `TlsSpec::hostname`.
    "tls-hostname",
    // Not QEMU's: QEMU 7.2 refuses it ("Invalid parameter 'mode'"); see `SocketSpec::mode`.
    "mode",
    // Not QEMU's: many viewers on one server (see `SocketSpec::clients`).
    "clients",
    "history",
    "queue",
    // Not QEMU's: output kept while nobody is connected (see `SocketSpec::backlog`).
    "backlog",
];

/// Keys of the `hub` backend: QEMU's `chardevs.N` (a key that ends in `.*` stands for that
/// prefix and any suffix, which the hub's parser checks), and our `history` and `queue`.
const HUB_KEYS: &[&str] = &["chardevs.*", "history", "queue"];

/// How much output a `hub` member may fall behind by before it loses the oldest of it
/// (`queue=`), when not given: 1 MiB.
pub const DEFAULT_HUB_QUEUE: usize = 1 << 20;

/// QEMU's text for a hub with no members (`chardevs.0` missing, or an empty QMP list).
pub const HUB_NO_CHARDEVS: &str = "hub: 'chardevs' list is not defined";

/// Keys of the `syslog` backend (an extension: QEMU has no syslog chardev).
const SYSLOG_KEYS: &[&str] = &["path", "facility", "format", "tag"];

/// Keys of the `udp` backend.
const UDP_KEYS: &[&str] = &["host", "port", "localaddr", "localport", "ipv4", "ipv6"];

/// One backend type name a user can write, the backend it selects and the keys it takes.
struct BackendType {
    /// The name in `backend=` (aliases have their own entry).
    name: &'static str,
    /// The canonical kind, as [`BackendSpec::kind`] returns it.
    kind: &'static str,
    /// Backend-specific keys, on top of [`COMMON_KEYS`].
    keys: &'static [&'static str],
    /// QEMU deprecated this name in favour of `kind`.
    deprecated: bool,
}

/// Every backend type name this parser knows, aliases included.
const BACKEND_TYPES: &[BackendType] = &[
    BackendType { name: "null", kind: "null", keys: &[], deprecated: false },
    BackendType {
        name: "file",
        kind: "file",
        keys: &["path", "input-path", "append"],
        deprecated: false,
    },
    BackendType { name: "pipe", kind: "pipe", keys: &["path"], deprecated: false },
    BackendType { name: "ringbuf", kind: "ringbuf", keys: &["size"], deprecated: false },
    BackendType { name: "memory", kind: "ringbuf", keys: &["size"], deprecated: true },
    BackendType { name: "stdio", kind: "stdio", keys: &["signal"], deprecated: false },
    BackendType { name: "socket", kind: "socket", keys: SOCKET_KEYS, deprecated: false },
    BackendType { name: "udp", kind: "udp", keys: UDP_KEYS, deprecated: false },
    BackendType {
        name: "pty",
        kind: "pty",
        keys: &["path", "backlog", "backlog-full", "history"],
        deprecated: false,
    },
    // QEMU 10's hub; `chardevs.*` stands for `chardevs.0`, `chardevs.1`, ...
    BackendType { name: "hub", kind: "hub", keys: HUB_KEYS, deprecated: false },
    BackendType { name: "serial", kind: "serial", keys: &["path"], deprecated: false },
    // Not QEMU's: each line of output as one syslog record (crosvm's `--serial type=syslog`).
    BackendType { name: "syslog", kind: "syslog", keys: SYSLOG_KEYS, deprecated: false },
    // QEMU's CLI accepts `tty` for `serial`; it is not deprecated there.
    BackendType { name: "tty", kind: "serial", keys: &["path"], deprecated: false },
];

/// One chardev as `-chardev` describes it: its id, its backend and the common options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChardevSpec {
    /// The chardev's id (QEMU's `id=`), unique among chardevs.
    pub id: String,
    /// The backend and its options.
    pub backend: BackendSpec,
    /// `mux=on`: put a mux chardev named `id` on top of the backend, so several frontends share it.
    pub mux: bool,
    /// `logfile=`: a copy of everything the frontend writes goes to this file.
    pub log: Option<LogSpec>,
    /// `overflow=`: what a frontend's write does when the backend cannot take it now.
    pub overflow: Overflow,
}

/// What a frontend's output does when the backend cannot take it now (`overflow=`, an
/// extension: QEMU always does [`Overflow::Block`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Overflow {
    /// QEMU's flow control: the write is short (or `WouldBlock`), `write_all` waits, and a
    /// backend that cannot take more slows the frontend (and the guest behind it).
    #[default]
    Block,
    /// Writes never wait: what the backend cannot take goes into a queue of
    /// [`OVERFLOW_QUEUE`](crate::fanout::OVERFLOW_QUEUE) bytes, sent as the backend takes it;
    /// beyond that the oldest is dropped, counted (`Counters::dropped_overflow`) and marked
    /// in the stream with a gap marker when output flows again. For consoles whose guest must
    /// never stall on a peer that does not read.
    Drop,
}

/// Where a chardev logs its output (`logfile=`, `logappend=`, `logtimestamp=`, and our
/// `logmaxsize=`, `logbackups=`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogSpec {
    /// The log file; created if missing. `/dev/fdset/N` takes a member of an fd set.
    pub path: PathBuf,
    /// Append to the file (`logappend=on`) rather than truncate it (QEMU's default).
    pub append: bool,
    /// `logtimestamp=on`: each line in the log starts with the UTC time its first byte was
    /// written, `2026-12-03T10:11:12.345Z ` (ISO 8601, milliseconds).
    pub timestamp: bool,
    /// `logmaxsize=` (and `logbackups=`): rotate the file by size; `None` lets it grow.
    pub rotation: Option<LogRotation>,
}

/// Size-based rotation of a logfile: no file ever grows past `max_size`; when the next byte
/// would, the file is renamed `PATH.1` (older ones move up to `PATH.2` ... `PATH.N`, the
/// oldest dropped) and a new `PATH` is started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogRotation {
    /// `logmaxsize=SIZE` (k/M/G suffixes): the most bytes one file holds, from
    /// [`LOG_MAX_SIZE_MIN`] to [`LOG_MAX_SIZE_MAX`].
    pub max_size: u64,
    /// `logbackups=N`: how many rotated files are kept, at most [`LOG_BACKUPS_MAX`];
    /// [`DEFAULT_LOG_BACKUPS`] when not given. 0 keeps none: a full log starts over empty.
    pub backups: u32,
}

/// The smallest `logmaxsize=`: 4 KiB (a file must hold a long line and its timestamp).
pub const LOG_MAX_SIZE_MIN: u64 = 4 << 10;

/// The largest `logmaxsize=`: 1 TiB (beyond that, rotation by size is not what protects the
/// disk).
pub const LOG_MAX_SIZE_MAX: u64 = 1 << 40;

/// The most rotated files `logbackups=` may keep.
pub const LOG_BACKUPS_MAX: u32 = 99;

/// How many rotated files are kept when `logmaxsize=` comes without `logbackups=`: 5, so
/// that the log takes at most six times `logmaxsize` on disk.
pub const DEFAULT_LOG_BACKUPS: u32 = 5;

impl LogSpec {
    /// A log at `path`, truncated at open, no timestamps, no rotation (QEMU's defaults).
    pub fn new(path: impl Into<PathBuf>) -> LogSpec {
        LogSpec { path: path.into(), append: false, timestamp: false, rotation: None }
    }

    /// Checks the rotation keys: sizes and counts within their limits, and no rotation of
    /// an fd set (`/dev/fdset/N` has no name to rotate under).
    pub fn check(&self) -> Result<()> {
        let Some(rotation) = &self.rotation else { return Ok(()) };
        let size = rotation.max_size.to_string();
        if rotation.max_size < LOG_MAX_SIZE_MIN {
            return Err(Error::option("logmaxsize", &size, "must be at least 4K"));
        }
        if rotation.max_size > LOG_MAX_SIZE_MAX {
            return Err(Error::option("logmaxsize", &size, "is larger than the maximum, 1T"));
        }
        if rotation.backups > LOG_BACKUPS_MAX {
            let backups = rotation.backups.to_string();
            return Err(Error::option(
                "logbackups",
                &backups,
                format!("must be at most {LOG_BACKUPS_MAX}"),
            ));
        }
        if crate::fdset::fdset_id(&self.path).is_some() {
            return Err(Error::option(
                "logmaxsize",
                &size,
                format!(
                    "a logfile passed as {} has no name to rotate under; rotate it where it \
                     was opened (copytruncate works: the log is written O_APPEND)",
                    self.path.display()
                ),
            ));
        }
        Ok(())
    }
}

/// A backend and its own options, one variant per backend kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BackendSpec {
    /// `null`: output is dropped, there is never input.
    Null,
    /// `file`: output to `path=` (QAPI `out`), input from `input-path=` (QAPI `in`).
    File {
        /// The output file (`path=`).
        out: PathBuf,
        /// The input file (`input-path=`), if any.
        input: Option<PathBuf>,
        /// Append to `out` rather than truncate it (`append=on`).
        append: bool,
    },
    /// `pipe`: `PATH.in` and `PATH.out`, or `PATH` for both directions.
    Pipe {
        /// The pipe's base path (`path=`).
        path: PathBuf,
    },
    /// `ringbuf` (alias `memory`): output kept in a ring buffer that overwrites the oldest bytes.
    Ringbuf {
        /// The buffer's size in bytes (`size=`), a power of two; 65536 by default.
        size: usize,
    },
    /// `stdio`: the process's standard input and output.
    Stdio {
        /// Let Ctrl-C raise SIGINT (`signal=on`, the default) rather than pass it to the guest.
        signal: bool,
    },
    /// `socket`: a stream socket, as server or client.
    Socket(SocketSpec),
    /// `udp`: a connected datagram socket.
    Udp(UdpSpec),
    /// `pty`: a new pseudo-terminal.
    Pty {
        /// A symlink to create to the pty's slave (`path=`), if any.
        path: Option<PathBuf>,
        /// Output kept while no terminal has the pty open, for the next one to attach
        /// (`backlog=`, a size; [`DEFAULT_PTY_BACKLOG`] by default, 0 drops it as QEMU does).
        backlog: usize,
        /// What happens when the backlog is full (`backlog-full=drop|wait`).
        when_full: BacklogFull,
        /// `history=SIZE` (an extension; 0, the default, for none): the last SIZE bytes of
        /// output go to every terminal that opens the slave, before live output, however
        /// many terminals came and went before. Replaces the backlog (`backlog=` and
        /// `backlog-full=wait` cannot go with it); at most [`HISTORY_MAX`](crate::fanout::HISTORY_MAX).
        history: usize,
    },
    /// `serial` (alias `tty`): a host serial device.
    Serial {
        /// The device (`path=`), e.g. `/dev/ttyS0`.
        path: PathBuf,
    },
    /// `hub` (QEMU 10): one frontend over several member chardevs. Output goes to every
    /// open member, input comes from any. Unlike QEMU's, each member has its own bounded
    /// queue, so a member that stops reading never stalls the writer or the others, and
    /// there is no limit of four members.
    Hub(HubSpec),
    /// `syslog` (**an extension**, as crosvm's `--serial type=syslog`): each line of output
    /// becomes one syslog record, sent to the local syslog socket. There is no input.
    Syslog(SyslogSpec),
}

/// The options of a `syslog` backend.
///
/// `-chardev syslog,id=ID[,path=SOCKET][,facility=NAME][,format=rfc3164|rfc5424][,tag=TAG]`,
/// or QMP's `{"type": "syslog", "data": {"path": ..., "facility": ..., "format": ...,
/// "tag": ...}}` (every member optional). What the backend does with lines, flow and
/// outages is in [`crate::backends::syslog`].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SyslogSpec {
    /// The unix datagram socket the records go to (`path=`); `None` for the system's,
    /// [`SYSLOG_SOCKET`] (where journald and rsyslog listen).
    pub path: Option<PathBuf>,
    /// The facility the records carry (`facility=`, syslog(3)'s names; `user` by default).
    pub facility: SyslogFacility,
    /// How each record is framed (`format=`; RFC 3164 by default).
    pub format: SyslogFormat,
    /// The identifier (RFC 3164's TAG, RFC 5424's APP-NAME) the records carry (`tag=`);
    /// `None` for the chardev id (its first [`SYSLOG_TAG_MAX`] characters).
    pub tag: Option<String>,
}

/// The local syslog socket that a `syslog` chardev without `path=` sends to, as syslog(3)
/// does.
pub const SYSLOG_SOCKET: &str = "/dev/log";

/// The longest `tag=`: RFC 5424's limit on an APP-NAME (48 printable ASCII characters),
/// kept for RFC 3164 too, so that a tag never depends on the format.
pub const SYSLOG_TAG_MAX: usize = 48;

/// A syslog facility (`facility=`), with syslog(3)'s names and codes.
///
/// `user` is the default: it is what syslog(3) uses when a program names none, and a
/// guest's console output is a program's output, not the host daemon's own messages
/// (`daemon`). `kern` is not offered: it is reserved for the kernel (glibc's syslog(3)
/// turns it into `user`, and collectors trust it as the kernel's).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SyslogFacility {
    /// `user` (1): user-level messages; the default.
    #[default]
    User,
    /// `mail` (2): the mail system.
    Mail,
    /// `daemon` (3): system daemons.
    Daemon,
    /// `auth` (4): security and authorization messages.
    Auth,
    /// `syslog` (5): the syslog daemon's own messages.
    Syslog,
    /// `lpr` (6): the line printer subsystem.
    Lpr,
    /// `news` (7): network news.
    News,
    /// `uucp` (8): UUCP.
    Uucp,
    /// `cron` (9): the clock daemon.
    Cron,
    /// `authpriv` (10): private security and authorization messages.
    Authpriv,
    /// `ftp` (11): the FTP daemon.
    Ftp,
    /// `local0` .. `local7` (16-23): reserved for local use; the number is 0 to 7.
    Local(u8),
}

/// Every facility name `facility=` takes, with its variant (`local0`..`local7` apart).
const SYSLOG_FACILITIES: &[(&str, SyslogFacility)] = &[
    ("user", SyslogFacility::User),
    ("mail", SyslogFacility::Mail),
    ("daemon", SyslogFacility::Daemon),
    ("auth", SyslogFacility::Auth),
    ("syslog", SyslogFacility::Syslog),
    ("lpr", SyslogFacility::Lpr),
    ("news", SyslogFacility::News),
    ("uucp", SyslogFacility::Uucp),
    ("cron", SyslogFacility::Cron),
    ("authpriv", SyslogFacility::Authpriv),
    ("ftp", SyslogFacility::Ftp),
];

impl SyslogFacility {
    /// The facility syslog(3) calls `name` (`user`, `daemon`, `local0`, ...); `None` for
    /// any other name (and for `kern`, see the type's doc).
    pub fn from_name(name: &str) -> Option<SyslogFacility> {
        if let Some(n) = name.strip_prefix("local") {
            return match n.as_bytes() {
                [d @ b'0'..=b'7'] => Some(SyslogFacility::Local(d - b'0')),
                _ => None,
            };
        }
        SYSLOG_FACILITIES.iter().find(|(n, _)| *n == name).map(|(_, f)| *f)
    }

    /// Its name, as `facility=` takes it and rsyslog's `%syslogfacility-text%` shows it.
    pub fn name(self) -> String {
        match self {
            SyslogFacility::Local(n) => format!("local{n}"),
            other => SYSLOG_FACILITIES
                .iter()
                .find(|(_, f)| *f == other)
                .map_or_else(String::new, |(n, _)| (*n).to_string()),
        }
    }

    /// Its code, as the PRI of a record counts it (PRI = code * 8 + severity). A
    /// `Local` above 7 counts as `local7`.
    pub fn code(self) -> u8 {
        match self {
            SyslogFacility::User => 1,
            SyslogFacility::Mail => 2,
            SyslogFacility::Daemon => 3,
            SyslogFacility::Auth => 4,
            SyslogFacility::Syslog => 5,
            SyslogFacility::Lpr => 6,
            SyslogFacility::News => 7,
            SyslogFacility::Uucp => 8,
            SyslogFacility::Cron => 9,
            SyslogFacility::Authpriv => 10,
            SyslogFacility::Ftp => 11,
            SyslogFacility::Local(n) => 16 + n.min(7),
        }
    }
}

/// How a `syslog` chardev frames each record (`format=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SyslogFormat {
    /// `rfc3164` (the default): `<PRI>Mmm dd hh:mm:ss TAG[PID]: MSG`, local time, no
    /// hostname: what glibc's syslog(3) sends to `/dev/log`, and so what every local
    /// collector parses (journald parses nothing else there; rsyslog's imuxsock by default).
    #[default]
    Rfc3164,
    /// `rfc5424`: `<PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID - - MSG`, the timestamp with
    /// microseconds and the UTC offset. rsyslog parses it on a socket whose imuxsock input
    /// has `useSpecialParser="off"`; journald does not (systemd issue #19251).
    Rfc5424,
}

impl SyslogFormat {
    /// Its name as `format=` takes it.
    pub fn name(self) -> &'static str {
        match self {
            SyslogFormat::Rfc3164 => "rfc3164",
            SyslogFormat::Rfc5424 => "rfc5424",
        }
    }
}

impl SyslogSpec {
    /// Checks what the parser checks, for specs built some other way (QMP's JSON): a tag,
    /// if given, of 1 to [`SYSLOG_TAG_MAX`] printable ASCII characters other than `[`, `]`
    /// and `:`, which delimit it in a record; a path, if given, not empty.
    pub fn check(&self) -> Result<()> {
        if self.path.as_ref().is_some_and(|p| p.as_os_str().is_empty()) {
            return Err(Error::option("path", "", "must not be empty"));
        }
        let Some(tag) = &self.tag else { return Ok(()) };
        if tag.is_empty() {
            return Err(Error::option("tag", "", "must not be empty"));
        }
        if let Some(bad) =
            tag.chars().find(|c| !c.is_ascii_graphic() || matches!(c, '[' | ']' | ':'))
        {
            return Err(Error::option(
                "tag",
                tag,
                format!(
                    "may not contain {bad:?}: printable ASCII only, without spaces, '[', ']' \
                     or ':' (which end a tag in a record)"
                ),
            ));
        }
        if tag.len() > SYSLOG_TAG_MAX {
            return Err(Error::option(
                "tag",
                tag,
                format!("is longer than {SYSLOG_TAG_MAX} characters (RFC 5424's APP-NAME)"),
            ));
        }
        Ok(())
    }
}

/// The options of a `hub` backend.
///
/// `-chardev hub,id=h,chardevs.0=a,chardevs.1=b[,history=SIZE][,queue=SIZE]`, or QMP's
/// `{"type": "hub", "data": {"chardevs": ["a", "b"]}}` (`history` and `queue` as
/// extensions). The members must exist, be unused, and be neither a mux nor a hub.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HubSpec {
    /// The member chardevs' ids, from `chardevs.0` on. The keys must run from 0 without a
    /// gap: QEMU stops at the first missing index and silently ignores the rest (and any
    /// beyond `chardevs.3`); we refuse a gap, naming the missing key, and take any number.
    pub chardevs: Vec<String>,
    /// `history=SIZE` (an extension; 0, the default, for none): the last SIZE bytes of
    /// output go to a member that opens (a client connecting to a socket member, a
    /// terminal opening a pty member) before live output. At most
    /// [`HISTORY_MAX`](crate::fanout::HISTORY_MAX).
    pub history: usize,
    /// `queue=SIZE` (an extension; [`DEFAULT_HUB_QUEUE`] by default): how far a member may
    /// fall behind before it loses the oldest output it has not taken, and then sees a gap
    /// marker ([`gap_marker`](crate::fanout::gap_marker)) before its next data. At most
    /// [`HISTORY_MAX`](crate::fanout::HISTORY_MAX).
    pub queue: usize,
}

/// The options of a `socket` backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SocketSpec {
    /// Where to listen or connect.
    pub addr: SocketAddrSpec,
    /// Listen (`server=on`) rather than connect (the CLI default).
    pub server: bool,
    /// A server waits for its first client before creation finishes (on by default for servers).
    pub wait: bool,
    /// Set TCP_NODELAY (`nodelay=on` or `delay=off`).
    pub nodelay: bool,
    /// Speak telnet to the client (`telnet=on`).
    pub telnet: bool,
    /// Speak TN3270 to the client (`tn3270=on`).
    pub tn3270: bool,
    /// Speak WebSocket to the client (`websocket=on`; server only).
    pub websocket: bool,
    /// A client reconnects this many milliseconds after losing its server; 0 = never.
    pub reconnect_ms: u64,
    /// `mode=`: the permission bits (0 to 0o777) of a unix server's socket file, written in
    /// octal as for chmod(1) (`0600`, `600`, `0660`). **An extension**: QEMU has no such
    /// option (its CLI refuses it with "Invalid parameter 'mode'", its QMP has no such field).
    ///
    /// `None` (the default) is QEMU's behaviour: bind(2) creates the file as `0777 & ~umask`.
    /// With a mode the file gets exactly these bits, narrower or wider than the umask gives:
    /// the backend binds, sets the mode and only then listens, and a unix socket refuses
    /// connections until listen(2), so there is no moment at which the socket can be reached
    /// through broader permissions. Linux checks *write* permission on the socket file (and
    /// search permission on its directories) at connect(2): `0600` admits only the owner
    /// (and root), `0660` also the file's group. Clients already connected keep their
    /// connection whatever the file's mode becomes later.
    ///
    /// Only for `server=on` with a filesystem `path=`: not with `abstract=on` (no file), tcp
    /// or `fd=`.
    pub mode: Option<u32>,
    /// `clients=N`: a server serves up to N connections at once (**an extension**; QEMU
    /// serves one, and 1, the default, is exactly QEMU's behaviour). Output goes to every
    /// connection; input comes from one writer at a time (the first, then the oldest left);
    /// the others are viewers whose input is dropped and counted. A connection beyond N is
    /// told why and closed at once. At most [`CLIENTS_MAX`](crate::fanout::CLIENTS_MAX).
    pub clients: u32,
    /// `history=SIZE`: every new connection first gets the last SIZE bytes of output, then
    /// live output (**an extension**; 0, the default, keeps none). At most
    /// [`HISTORY_MAX`](crate::fanout::HISTORY_MAX).
    pub history: u64,
    /// `queue=SIZE`, with `clients` above 1: how far one connection may fall behind the
    /// output before it loses the oldest bytes (and is shown a gap marker), so that a
    /// stalled viewer never stalls the guest or the others (**an extension**). `None`: the
    /// default, [`QUEUE_DEFAULT`](crate::fanout::QUEUE_DEFAULT). With one client QEMU's
    /// flow control holds instead: a slow peer slows the frontend.
    pub queue: Option<u64>,
    /// `backlog=SIZE`: output written while no peer is connected (a server with no client,
    /// a client between reconnects) is kept, at most SIZE bytes (the oldest dropped first,
    /// counted), and delivered on the next connection, after a gap marker if some was
    /// dropped (**an extension**; QEMU drops it). For one client (`clients=1` without
    /// `history=`, which keep output for viewers their own way). At most
    /// [`HISTORY_MAX`](crate::fanout::HISTORY_MAX).
    pub backlog: Option<u64>,
    /// `tls-creds=ID` (and `tls-authz=`, `tls-hostname=`): the connection is TLS, with the
    /// credentials of a `tls-creds-x509` object (see [`crate::objects`]).
    pub tls: Option<TlsSpec>,
}

/// TLS on a `socket` chardev.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsSpec {
    /// `tls-creds=ID`: the `tls-creds-x509` object; its `endpoint` must be this chardev's
    /// role (`server` for `server=on`).
    pub creds: String,
    /// `tls-authz=ID`: an `authz-simple` or `authz-list` object that the client
    /// certificate's distinguished name must pass (servers only).
    pub authz: Option<String>,
    /// `tls-hostname=NAME` (**an extension** for chardevs; QEMU has it for migration and
    /// NBD): the name a client checks the server's certificate against, when it is not the
    /// `host=` it connects to (a unix socket has none: give it there).
    pub hostname: Option<String>,
}

impl TlsSpec {
    /// TLS with the credentials object `creds`, no authz, the host as the name to check.
    pub fn new(creds: impl Into<String>) -> TlsSpec {
        TlsSpec { creds: creds.into(), authz: None, hostname: None }
    }
}

/// The address of a `socket` backend: exactly one of `path=`, `host=`+`port=` or `fd=`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SocketAddrSpec {
    /// A unix socket (`path=`).
    Unix {
        /// The socket's path, or its name in the abstract namespace.
        path: PathBuf,
        /// Use Linux's abstract namespace (`abstract=on`).
        abstract_: bool,
        /// An abstract name is exactly `path`, not padded to the full sun_path (`tight=on`, the default).
        tight: bool,
    },
    /// A TCP socket (`host=`, `port=`).
    Inet {
        /// Host name or address; empty means every address (servers).
        host: String,
        /// Port number or service name, kept as a string as QAPI does.
        port: String,
        /// Servers: try every port from `port` up to `to` (`to=`).
        to: Option<u16>,
        /// Use (or refuse) IPv4 (`ipv4=`); `None` lets the resolver decide.
        ipv4: Option<bool>,
        /// Use (or refuse) IPv6 (`ipv6=`); `None` lets the resolver decide.
        ipv6: Option<bool>,
    },
    /// An already open socket (`fd=`): a number, or a name passed earlier with `getfd`.
    Fd(String),
}

/// The options of a `udp` backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UdpSpec {
    /// The remote host (`host=`, "localhost" by default).
    pub host: String,
    /// The remote port (`port=`, required).
    pub port: String,
    /// The local address to bind (`localaddr=`); `None` binds any.
    pub localaddr: Option<String>,
    /// The local port to bind (`localport=`); `None` lets the kernel choose.
    pub localport: Option<String>,
    /// Use (or refuse) IPv4 (`ipv4=`).
    pub ipv4: Option<bool>,
    /// Use (or refuse) IPv6 (`ipv6=`).
    pub ipv6: Option<bool>,
}

impl BackendSpec {
    /// The backend's canonical type name (`"ringbuf"` also for `memory`, `"serial"` for `tty`).
    pub fn kind(&self) -> &'static str {
        match self {
            BackendSpec::Null => "null",
            BackendSpec::File { .. } => "file",
            BackendSpec::Pipe { .. } => "pipe",
            BackendSpec::Ringbuf { .. } => "ringbuf",
            BackendSpec::Stdio { .. } => "stdio",
            BackendSpec::Socket(_) => "socket",
            BackendSpec::Udp(_) => "udp",
            BackendSpec::Pty { .. } => "pty",
            BackendSpec::Serial { .. } => "serial",
            BackendSpec::Hub(_) => "hub",
            BackendSpec::Syslog(_) => "syslog",
        }
    }
}

impl SocketSpec {
    /// Checks [`SocketSpec::mode`] as the parser does: permission bits only (at most `0777`),
    /// and only for a unix server with a filesystem path. Backends call this for specs that
    /// were built some other way.
    pub fn check_mode(&self) -> Result<()> {
        match self.mode {
            Some(mode) => check_socket_mode(&format!("{mode:04o}"), mode, self.server, &self.addr),
            None => Ok(()),
        }
    }
}

impl SocketSpec {
    /// Checks the TLS keys against the rest, as QEMU does: a client on a passed fd has no
    /// name to check the server against (`fd=` servers are fine), `tls-authz` decides on
    /// client certificates (servers only), `tls-hostname` is a client's. Unix sockets take
    /// TLS too (**an extension**: QEMU refuses them); fds never go over TLS.
    pub fn check_tls(&self) -> Result<()> {
        let Some(tls) = &self.tls else { return Ok(()) };
        if tls.creds.is_empty() {
            return Err(Error::option("tls-creds", "", "must name a tls-creds-x509 object"));
        }
        if matches!(self.addr, SocketAddrSpec::Fd(_)) && !self.server {
            return Err(Error::option(
                "tls-creds",
                &tls.creds,
                "'tls_creds' option is incompatible with 'fd' address type as client",
            ));
        }
        if let Some(authz) = &tls.authz {
            if !self.server {
                return Err(Error::option(
                    "tls-authz",
                    authz,
                    "only for a server (it checks client certificates)",
                ));
            }
        }
        if let Some(name) = &tls.hostname {
            if self.server {
                return Err(Error::option(
                    "tls-hostname",
                    name,
                    "only for a client (the name it checks the server's certificate against)",
                ));
            }
            if name.is_empty() {
                return Err(Error::option("tls-hostname", "", "must be a host name or address"));
            }
        }
        Ok(())
    }

    /// Checks `clients=`, `history=` and `queue=`: within their limits, and only on a server.
    pub fn check_viewers(&self) -> Result<()> {
        use crate::fanout::{CLIENTS_MAX, HISTORY_MAX};
        if !(1..=CLIENTS_MAX).contains(&self.clients) {
            return Err(Error::option(
                "clients",
                &self.clients.to_string(),
                format!("must be between 1 and {CLIENTS_MAX}"),
            ));
        }
        if self.history > HISTORY_MAX {
            return Err(Error::option(
                "history",
                &self.history.to_string(),
                "is larger than the maximum history, 64M",
            ));
        }
        match self.queue {
            Some(0) => return Err(Error::option("queue", "0", "must be at least 1 byte")),
            Some(q) if q > HISTORY_MAX => {
                return Err(Error::option(
                    "queue",
                    &q.to_string(),
                    "is larger than the maximum queue, 64M",
                ))
            }
            Some(q) if self.clients == 1 => {
                return Err(Error::option(
                    "queue",
                    &q.to_string(),
                    "only with clients above 1 (one client has QEMU's flow control)",
                ))
            }
            _ => {}
        }
        match self.backlog {
            Some(0) => return Err(Error::option("backlog", "0", "must be at least 1 byte")),
            Some(b) if b > HISTORY_MAX => {
                return Err(Error::option(
                    "backlog",
                    &b.to_string(),
                    "is larger than the maximum backlog, 64M",
                ))
            }
            Some(b) if self.clients > 1 || self.history > 0 => {
                return Err(Error::option(
                    "backlog",
                    &b.to_string(),
                    "not with clients= or history=, which keep output for viewers already",
                ))
            }
            _ => {}
        }
        if !self.server {
            let given = [
                ("clients", self.clients != 1, self.clients.to_string()),
                ("history", self.history != 0, self.history.to_string()),
                ("queue", self.queue.is_some(), self.queue.unwrap_or(0).to_string()),
            ];
            if let Some((key, _, value)) = given.into_iter().find(|g| g.1) {
                return Err(Error::option(key, &value, "only for a server (server=on)"));
            }
        }
        Ok(())
    }
}

impl HubSpec {
    /// Checks what the parser checks, for specs built some other way (QMP's JSON): at least
    /// one member (QEMU's "hub: 'chardevs' list is not defined"), sizes within the cap.
    pub fn check(&self) -> Result<()> {
        if self.chardevs.is_empty() {
            return Err(Error::option("chardevs", "", HUB_NO_CHARDEVS));
        }
        check_fanout_size("history", self.history)?;
        check_fanout_size("queue", self.queue)
    }
}

impl ChardevSpec {
    /// Parses a `-chardev` string such as `file,id=f0,path=/tmp/x`; `id=` is required.
    pub fn parse(s: &str) -> Result<ChardevSpec> {
        parse_spec(s, None)
    }

    /// Parses like [`ChardevSpec::parse`], but uses `id` when the string has no `id=`
    /// (for tools whose chardev strings carry no id).
    pub fn parse_with_id(s: &str, id: &str) -> Result<ChardevSpec> {
        parse_spec(s, Some(id))
    }

    /// Checks a spec built some other way (QMP's JSON) against the rules the parser applies
    /// to command-line strings: a well-formed id, a power-of-two ringbuf, socket options that
    /// go together, log rotation within its limits.
    pub fn check(&self) -> Result<()> {
        check_id(&self.id)?;
        if let Some(log) = &self.log {
            log.check()?;
        }
        match &self.backend {
            BackendSpec::Ringbuf { size } if !size.is_power_of_two() => {
                Err(Error::option("size", &size.to_string(), "must be a power of two"))
            }
            BackendSpec::Ringbuf { size } if *size > MAX_RINGBUF_SIZE => {
                Err(Error::option("size", &size.to_string(), "is larger than the maximum ring, 1G"))
            }
            BackendSpec::Socket(s) => {
                if s.websocket && !s.server {
                    return Err(Error::option(
                        "websocket",
                        "on",
                        "Websocket client is not implemented",
                    ));
                }
                if s.wait && !s.server {
                    return Err(Error::option(
                        "wait",
                        "on",
                        "'wait' option is incompatible with socket in client connect mode",
                    ));
                }
                if s.reconnect_ms > 0 && (s.server || matches!(s.addr, SocketAddrSpec::Fd(_))) {
                    return Err(Error::option(
                        "reconnect-ms",
                        &s.reconnect_ms.to_string(),
                        "'reconnect' option is incompatible with socket in server listen mode",
                    ));
                }
                if let SocketAddrSpec::Inet { port, to: Some(to), .. } = &s.addr {
                    if port.parse::<u16>().is_ok_and(|p| *to < p) {
                        return Err(Error::option(
                            "to",
                            &to.to_string(),
                            format!("the port range {port}-{to} is empty: 'to' is below 'port'"),
                        ));
                    }
                }
                s.check_mode()?;
                s.check_viewers()
            }
            BackendSpec::Pty { history, .. } => check_fanout_size("history", *history),
            BackendSpec::Hub(hub) => hub.check(),
            BackendSpec::Syslog(syslog) => syslog.check(),
            _ => Ok(()),
        }
    }
}

impl FromStr for ChardevSpec {
    type Err = Error;

    /// Same as [`ChardevSpec::parse`].
    fn from_str(s: &str) -> Result<ChardevSpec> {
        ChardevSpec::parse(s)
    }
}

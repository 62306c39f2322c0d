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
const COMMON_KEYS: &[&str] = &["id", "backend", "mux", "logfile", "logappend", "logtimestamp"];

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
    // Not QEMU's: QEMU 7.2 refuses it ("Invalid parameter 'mode'"); see `SocketSpec::mode`.
    "mode",
];

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
        keys: &["path", "backlog", "backlog-full"],
        deprecated: false,
    },
    BackendType { name: "serial", kind: "serial", keys: &["path"], deprecated: false },
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
}

/// Where a chardev logs its output (`logfile=`, `logappend=`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogSpec {
    /// The log file; created if missing.
    pub path: PathBuf,
    /// Append to the file (`logappend=on`) rather than truncate it (QEMU's default).
    pub append: bool,
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
    },
    /// `serial` (alias `tty`): a host serial device.
    Serial {
        /// The device (`path=`), e.g. `/dev/ttyS0`.
        path: PathBuf,
    },
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
    /// go together.
    pub fn check(&self) -> Result<()> {
        check_id(&self.id)?;
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
                s.check_mode()
            }
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

/// Splits a QemuOpts-style string into `(key, value)` pairs, in order, repeats kept.
///
/// Elements are separated by `,`, and `,,` inside a value is a literal comma. When the first
/// element has no `=`, it is the value of `implied_key` (unless `implied_key` is empty);
/// any later bare element `flag` means `flag=on` and `noflag` means `flag=off` (QEMU's
/// deprecated short form, logged as a warning). A single trailing `,` is ignored, as QEMU
/// does; an empty key (`=x`, or an empty element after a bare flag) is an error.
pub fn split_options(s: &str, implied_key: &str) -> Result<Vec<(String, String)>> {
    let mut pairs = Vec::new();
    let mut rest = s;
    let mut first = true;
    while !rest.is_empty() {
        let name_end = rest.find(['=', ',']).unwrap_or(rest.len());
        let name = &rest[..name_end];
        let after_name = &rest[name_end..];
        let (pair, next) = if let Some(value_start) = after_name.strip_prefix('=') {
            let (value, next) = take_value(value_start);
            (named_option(name, value)?, next)
        } else if first && !implied_key.is_empty() {
            let (value, next) = take_value(rest);
            ((implied_key.to_string(), value), next)
        } else {
            (short_form_flag(name)?, after_name)
        };
        pairs.push(pair);
        // `next` is empty or starts with the single ',' that ended the element.
        rest = next.strip_prefix(',').unwrap_or(next);
        first = false;
    }
    Ok(pairs)
}

/// Reads a value up to the next single `,`, turning each `,,` into `,`; returns the value and
/// the rest, which is empty or starts with that `,`.
fn take_value(s: &str) -> (String, &str) {
    let mut value = String::new();
    let mut rest = s;
    loop {
        match rest.find(',') {
            None => {
                value.push_str(rest);
                return (value, "");
            }
            Some(comma) => {
                value.push_str(&rest[..comma]);
                let after = &rest[comma..];
                match after.strip_prefix(",,") {
                    Some(tail) => {
                        value.push(',');
                        rest = tail;
                    }
                    None => return (value, after),
                }
            }
        }
    }
}

/// A `key=value` element; the key must not be empty.
fn named_option(key: &str, value: String) -> Result<(String, String)> {
    if key.is_empty() {
        return Err(Error::option(key, &value, "empty option name before '='"));
    }
    Ok((key.to_string(), value))
}

/// A bare element after the first: `flag` is `flag=on`, `noflag` is `flag=off`.
fn short_form_flag(name: &str) -> Result<(String, String)> {
    let (key, value) = match name.strip_prefix("no") {
        Some(key) => (key, "off"),
        None => (name, "on"),
    };
    if key.is_empty() {
        return Err(Error::option(name, "", "empty option (a stray ',' or a bare 'no')"));
    }
    log::warn!("short-form boolean option '{name}' is deprecated, write '{key}={value}'");
    Ok((key.to_string(), value.to_string()))
}

/// Parses a QEMU boolean: `on`/`yes`/`true`/`y` or `off`/`no`/`false`/`n` (case matters, as in QEMU).
pub fn parse_bool(key: &str, value: &str) -> Result<bool> {
    match value {
        "on" | "yes" | "true" | "y" => Ok(true),
        "off" | "no" | "false" | "n" => Ok(false),
        _ => Err(Error::option(key, value, "expects 'on' or 'off'")),
    }
}

/// Parses a QEMU size: a decimal number of bytes, optionally followed by one binary suffix
/// `B`, `K`, `M`, `G`, `T`, `P` or `E` (either case), so `64K` is 65536.
pub fn parse_size(key: &str, value: &str) -> Result<u64> {
    let bad =
        || Error::option(key, value, "expects a size: bytes, or a number with suffix K, M, G or T");
    let digits_end = value.find(|c: char| !c.is_ascii_digit()).unwrap_or(value.len());
    let (digits, suffix) = value.split_at(digits_end);
    if digits.is_empty() {
        return Err(bad());
    }
    let shift = match suffix {
        "" | "b" | "B" => 0,
        "k" | "K" => 10,
        "m" | "M" => 20,
        "g" | "G" => 30,
        "t" | "T" => 40,
        "p" | "P" => 50,
        "e" | "E" => 60,
        _ => return Err(bad()),
    };
    let too_large = || Error::option(key, value, "is too large");
    let number: u64 = digits.parse().map_err(|_| too_large())?;
    number.checked_mul(1u64 << shift).ok_or_else(too_large)
}

/// Parses a plain unsigned decimal number (QEMU's `QEMU_OPT_NUMBER`).
fn parse_number(key: &str, value: &str) -> Result<u64> {
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err(Error::option(key, value, "expects a non-negative number"));
    }
    value.parse().map_err(|_| Error::option(key, value, "is too large"))
}

/// Checks a chardev id as QEMU's `id_wellformed` does, plus its 127-character limit.
fn check_id(id: &str) -> Result<()> {
    let mut chars = id.chars();
    let starts_with_letter = chars.next().is_some_and(|c| c.is_ascii_alphabetic());
    let rest_ok = chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'));
    if !starts_with_letter || !rest_ok {
        return Err(Error::option(
            "id",
            id,
            "expects an identifier: letters, digits, '-', '.', '_', starting with a letter",
        ));
    }
    if id.len() > MAX_ID_LEN {
        return Err(Error::option("id", id, "is longer than 127 characters"));
    }
    Ok(())
}

/// The parsed options of one `-chardev` string, looked up QEMU's way (the last repeat wins).
struct Opts {
    /// The backend name as written (`tty`, `memory`, ...), for error messages.
    backend: String,
    /// Every `(key, value)` in order.
    pairs: Vec<(String, String)>,
}

impl Opts {
    /// The value of `key`, the last one if it was given more than once.
    fn get(&self, key: &str) -> Option<&str> {
        self.pairs.iter().rev().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    /// Whether `key` was given at all.
    fn has(&self, key: &str) -> bool {
        self.get(key).is_some()
    }

    /// A boolean option, `default` when absent.
    fn bool_or(&self, key: &str, default: bool) -> Result<bool> {
        Ok(self.bool_opt(key)?.unwrap_or(default))
    }

    /// A boolean option, `None` when absent.
    fn bool_opt(&self, key: &str) -> Result<Option<bool>> {
        self.get(key).map(|v| parse_bool(key, v)).transpose()
    }

    /// A number option, `None` when absent.
    fn number_opt(&self, key: &str) -> Result<Option<u64>> {
        self.get(key).map(|v| parse_number(key, v)).transpose()
    }

    /// A path option, `None` when absent; an empty path is an error.
    fn path_opt(&self, key: &str) -> Result<Option<PathBuf>> {
        match self.get(key) {
            None => Ok(None),
            Some("") => Err(Error::option(key, "", "must not be empty")),
            Some(path) => Ok(Some(PathBuf::from(path))),
        }
    }

    /// A path option the backend cannot do without.
    fn required_path(&self, key: &str) -> Result<PathBuf> {
        self.path_opt(key)?.ok_or_else(|| self.missing(key))
    }

    /// A string option, `None` when absent or empty (QEMU treats both alike for these).
    fn nonempty(&self, key: &str) -> Option<String> {
        self.get(key).filter(|v| !v.is_empty()).map(str::to_string)
    }

    /// The error for a required `key` that was not given.
    fn missing(&self, key: &str) -> Error {
        Error::MissingOption { backend: self.backend.clone(), key: key.to_string() }
    }

    /// Fails with `reason` if `key` was given.
    fn forbid(&self, key: &str, reason: &str) -> Result<()> {
        match self.get(key) {
            Some(value) => Err(Error::option(key, value, reason)),
            None => Ok(()),
        }
    }

    /// Fails on the first key that neither `keys` nor [`COMMON_KEYS`] lists.
    fn check_keys(&self, keys: &[&str]) -> Result<()> {
        let unknown = self
            .pairs
            .iter()
            .map(|(k, _)| k.as_str())
            .find(|k| !COMMON_KEYS.contains(k) && !keys.contains(k));
        match unknown {
            Some(key) => {
                Err(Error::UnknownOption { backend: self.backend.clone(), key: key.to_string() })
            }
            None => Ok(()),
        }
    }
}

/// The whole `-chardev` parse; `default_id` stands in for a missing `id=`.
fn parse_spec(s: &str, default_id: Option<&str>) -> Result<ChardevSpec> {
    let mut opts = Opts { backend: String::new(), pairs: split_options(s, "backend")? };
    opts.backend = opts.get("backend").unwrap_or_default().to_string();
    if opts.backend.is_empty() {
        return Err(Error::option("backend", "", "no backend type given"));
    }
    let ty = backend_type(&opts.backend)?;
    opts.check_keys(ty.keys)?;
    // QEMU's QemuOpts keeps the first `id=` (for every other key the last one counts).
    let first_id = opts.pairs.iter().find(|(k, _)| k == "id").map(|(_, v)| v.as_str());
    let id = match (first_id, default_id) {
        (Some(id), _) | (None, Some(id)) => id.to_string(),
        (None, None) => return Err(opts.missing("id")),
    };
    check_id(&id)?;
    let mux = opts.bool_or("mux", false)?;
    let log = log_spec(&opts)?;
    let backend = backend_spec(ty.kind, &opts)?;
    let spec = ChardevSpec { id, backend, mux, log };
    // The checks QMP's specs get too (one place for rules that span options).
    spec.check()?;
    Ok(spec)
}

/// Looks up a backend type name, warning about deprecated aliases.
fn backend_type(name: &str) -> Result<&'static BackendType> {
    let ty = BACKEND_TYPES
        .iter()
        .find(|ty| ty.name == name)
        .ok_or_else(|| Error::UnknownBackend(name.to_string()))?;
    if ty.deprecated {
        log::warn!("chardev backend '{}' is deprecated, use '{}'", ty.name, ty.kind);
    }
    Ok(ty)
}

/// The common `logfile=`, `logappend=`, `logtimestamp=` options.
fn log_spec(opts: &Opts) -> Result<Option<LogSpec>> {
    let append = opts.bool_or("logappend", false)?;
    if opts.bool_or("logtimestamp", false)? {
        log::warn!("chardev option 'logtimestamp' is not supported; log lines get no timestamps");
    }
    Ok(opts.path_opt("logfile")?.map(|path| LogSpec { path, append }))
}

/// Builds the backend of canonical `kind` from its options.
fn backend_spec(kind: &str, opts: &Opts) -> Result<BackendSpec> {
    match kind {
        "null" => Ok(BackendSpec::Null),
        "file" => file_spec(opts),
        "pipe" => Ok(BackendSpec::Pipe { path: opts.required_path("path")? }),
        "ringbuf" => Ok(BackendSpec::Ringbuf { size: ringbuf_size(opts)? }),
        "stdio" => Ok(BackendSpec::Stdio { signal: opts.bool_or("signal", true)? }),
        "socket" => Ok(BackendSpec::Socket(socket_spec(opts)?)),
        "udp" => Ok(BackendSpec::Udp(udp_spec(opts)?)),
        "pty" => pty_spec(opts),
        "serial" => Ok(BackendSpec::Serial { path: opts.required_path("path")? }),
        other => Err(Error::UnknownBackend(other.to_string())),
    }
}

/// `file`: `path` (required), `input-path`, `append`.
fn file_spec(opts: &Opts) -> Result<BackendSpec> {
    Ok(BackendSpec::File {
        out: opts.required_path("path")?,
        input: opts.path_opt("input-path")?,
        append: opts.bool_or("append", false)?,
    })
}

/// `pty`: `path` (a symlink to the slave), `backlog`, a size that may be 0, and
/// `backlog-full`, `drop` or `wait`.
fn pty_spec(opts: &Opts) -> Result<BackendSpec> {
    let backlog = match opts.get("backlog") {
        None => DEFAULT_PTY_BACKLOG,
        Some(value) => usize::try_from(parse_size("backlog", value)?)
            .map_err(|_| Error::option("backlog", value, "is too large"))?,
    };
    let when_full = match opts.get("backlog-full") {
        None | Some("drop") => BacklogFull::DropOldest,
        Some("wait") => BacklogFull::Wait,
        Some(other) => {
            return Err(Error::option("backlog-full", other, "must be 'drop' or 'wait'"));
        }
    };
    Ok(BackendSpec::Pty { path: opts.path_opt("path")?, backlog, when_full })
}

/// `ringbuf`: `size`, a power of two that fits in memory, 65536 by default.
fn ringbuf_size(opts: &Opts) -> Result<usize> {
    let Some(value) = opts.get("size") else {
        return Ok(DEFAULT_RINGBUF_SIZE);
    };
    let size = parse_size("size", value)?;
    if !size.is_power_of_two() {
        return Err(Error::option("size", value, "must be a power of two"));
    }
    usize::try_from(size)
        .ok()
        .filter(|s| *s <= MAX_RINGBUF_SIZE)
        .ok_or_else(|| Error::option("size", value, "is larger than the maximum ring, 1G"))
}

/// `socket`: the address, the mode and the protocol options, with QEMU's cross-checks.
fn socket_spec(opts: &Opts) -> Result<SocketSpec> {
    opts.forbid("tls-creds", "TLS is not supported")?;
    opts.forbid("tls-authz", "TLS is not supported")?;
    let addr = socket_addr(opts)?;
    let server = opts.bool_or("server", false)?;
    if !server {
        opts.forbid("wait", "'wait' option is incompatible with socket in client connect mode")?;
    }
    let wait = server && opts.bool_or("wait", true)?;
    let websocket = opts.bool_or("websocket", false)?;
    if websocket && !server {
        return Err(Error::option(
            "websocket",
            opts.get("websocket").unwrap_or("on"),
            "Websocket client is not implemented",
        ));
    }
    let mode = socket_mode(opts, server, &addr)?;
    Ok(SocketSpec {
        nodelay: socket_nodelay(opts)?,
        telnet: opts.bool_or("telnet", false)?,
        tn3270: opts.bool_or("tn3270", false)?,
        websocket,
        reconnect_ms: socket_reconnect_ms(opts, server, &addr)?,
        addr,
        server,
        wait,
        mode,
    })
}

/// Exactly one of `path=`, `host=`+`port=`, `fd=`, and only the keys that fit it.
fn socket_addr(opts: &Opts) -> Result<SocketAddrSpec> {
    let given: Vec<&str> = ["path", "host", "fd"].into_iter().filter(|k| opts.has(k)).collect();
    if let Some(second) = given.get(1) {
        let value = opts.get(second).unwrap_or_default();
        return Err(Error::option(second, value, ONE_SOCKET_ADDRESS));
    }
    match given.first() {
        Some(&"path") => socket_unix_addr(opts),
        Some(&"host") => socket_inet_addr(opts),
        Some(_) => socket_fd_addr(opts),
        None => Err(Error::option("path", "", ONE_SOCKET_ADDRESS)),
    }
}

/// An already open socket: `fd`, and no address options.
fn socket_fd_addr(opts: &Opts) -> Result<SocketAddrSpec> {
    forbid_all(opts, &["abstract", "tight", "mode"], "only valid with 'path'")?;
    forbid_all(opts, &["port", "to", "ipv4", "ipv6"], "only valid with 'host'")?;
    Ok(SocketAddrSpec::Fd(opts.get("fd").unwrap_or_default().to_string()))
}

/// A unix socket address: `path`, `abstract`, `tight`.
fn socket_unix_addr(opts: &Opts) -> Result<SocketAddrSpec> {
    forbid_all(opts, &["port", "to", "ipv4", "ipv6"], "only valid with 'host'")?;
    Ok(SocketAddrSpec::Unix {
        path: opts.required_path("path")?,
        abstract_: opts.bool_or("abstract", false)?,
        tight: opts.bool_or("tight", true)?,
    })
}

/// A TCP address: `host`, `port` (required), `to`, `ipv4`, `ipv6`.
fn socket_inet_addr(opts: &Opts) -> Result<SocketAddrSpec> {
    forbid_all(opts, &["abstract", "tight", "mode"], "only valid with 'path'")?;
    let port = opts.nonempty("port").ok_or_else(|| opts.missing("port"))?;
    let to = match opts.number_opt("to")? {
        None => None,
        Some(to) => Some(u16::try_from(to).map_err(|_| {
            Error::option(
                "to",
                opts.get("to").unwrap_or_default(),
                "must be a port number (0-65535)",
            )
        })?),
    };
    Ok(SocketAddrSpec::Inet {
        host: opts.get("host").unwrap_or_default().to_string(),
        port,
        to,
        ipv4: opts.bool_opt("ipv4")?,
        ipv6: opts.bool_opt("ipv6")?,
    })
}

/// Fails with `reason` on the first of `keys` that was given.
fn forbid_all(opts: &Opts, keys: &[&str], reason: &str) -> Result<()> {
    keys.iter().try_for_each(|key| opts.forbid(key, reason))
}

/// `nodelay=on` or `delay=off`, but not both keys.
fn socket_nodelay(opts: &Opts) -> Result<bool> {
    if opts.has("delay") && opts.has("nodelay") {
        return Err(Error::option(
            "delay",
            opts.get("delay").unwrap_or_default(),
            "'delay' and 'nodelay' are mutually exclusive",
        ));
    }
    Ok(!opts.bool_or("delay", true)? || opts.bool_or("nodelay", false)?)
}

/// `mode=` (an extension, see [`SocketSpec::mode`]): octal permission bits for a unix
/// server's socket file.
fn socket_mode(opts: &Opts, server: bool, addr: &SocketAddrSpec) -> Result<Option<u32>> {
    let Some(value) = opts.get("mode") else { return Ok(None) };
    let mode = parse_mode("mode", value)?;
    check_socket_mode(value, mode, server, addr)?;
    Ok(Some(mode))
}

/// The rules for a socket's `mode` (written `value`), shared by the parser and
/// [`ChardevSpec::check`]: permission bits only, for a unix server with a file.
fn check_socket_mode(value: &str, mode: u32, server: bool, addr: &SocketAddrSpec) -> Result<()> {
    if mode > 0o777 {
        return Err(Error::option("mode", value, MODE_RANGE));
    }
    match addr {
        SocketAddrSpec::Unix { abstract_: true, .. } => Err(Error::option(
            "mode",
            value,
            "'mode' option is incompatible with 'abstract': an abstract socket has no file",
        )),
        SocketAddrSpec::Unix { .. } if !server => Err(Error::option(
            "mode",
            value,
            "'mode' option is incompatible with socket in client connect mode",
        )),
        SocketAddrSpec::Unix { .. } => Ok(()),
        SocketAddrSpec::Inet { .. } | SocketAddrSpec::Fd(_) => {
            Err(Error::option("mode", value, "only valid with 'path'"))
        }
    }
}

/// What `mode=` takes, for its errors.
const MODE_RANGE: &str =
    "expects octal permission bits as for chmod, from 0 to 0777 (e.g. 0600 or 660)";

/// Parses octal permission bits as chmod(1) writes them: `0600`, `600`, `0660`; only the
/// digits 0-7 (no `0o`, no sign, no symbolic `u=rw`), at most `0777` (no setuid, setgid or
/// sticky bit).
pub fn parse_mode(key: &str, value: &str) -> Result<u32> {
    if value.is_empty() || !value.bytes().all(|b| (b'0'..=b'7').contains(&b)) {
        return Err(Error::option(key, value, MODE_RANGE));
    }
    match u32::from_str_radix(value, 8) {
        Ok(mode) if mode <= 0o777 => Ok(mode),
        _ => Err(Error::option(key, value, MODE_RANGE)),
    }
}

/// `reconnect-ms=` or the deprecated `reconnect=` (seconds), for clients with a real address.
fn socket_reconnect_ms(opts: &Opts, server: bool, addr: &SocketAddrSpec) -> Result<u64> {
    let (key, value) = match (opts.get("reconnect"), opts.get("reconnect-ms")) {
        (None, None) => return Ok(0),
        (Some(seconds), Some(_)) => {
            return Err(Error::option(
                "reconnect",
                seconds,
                "'reconnect' and 'reconnect-ms' are mutually exclusive",
            ))
        }
        (Some(seconds), None) => ("reconnect", seconds),
        (None, Some(ms)) => ("reconnect-ms", ms),
    };
    if server {
        return Err(Error::option(
            key,
            value,
            format!("'{key}' option is incompatible with socket in server listen mode"),
        ));
    }
    if matches!(addr, SocketAddrSpec::Fd(_)) {
        return Err(Error::option(
            key,
            value,
            format!("'{key}' option is incompatible with 'fd' address type"),
        ));
    }
    let number = parse_number(key, value)?;
    if key == "reconnect-ms" {
        return Ok(number);
    }
    log::warn!("chardev option 'reconnect' is deprecated, use 'reconnect-ms'");
    number.checked_mul(1000).ok_or_else(|| Error::option(key, value, "is too large"))
}

/// `udp`: `host` ("localhost" when absent or empty), `port` (required) and the local side.
fn udp_spec(opts: &Opts) -> Result<UdpSpec> {
    Ok(UdpSpec {
        host: opts.nonempty("host").unwrap_or_else(|| "localhost".to_string()),
        port: opts.nonempty("port").ok_or_else(|| opts.missing("port"))?,
        localaddr: opts.nonempty("localaddr"),
        localport: opts.nonempty("localport"),
        ipv4: opts.bool_opt("ipv4")?,
        ipv6: opts.bool_opt("ipv6")?,
    })
}

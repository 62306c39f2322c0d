//! From the options of one `-chardev` string to a checked [`ChardevSpec`]: the backend type,
//! each backend's keys with QEMU's defaults and error texts.

use super::syntax::parse_number;
use super::*;

/// Checks a chardev id as QEMU's `id_wellformed` does, plus its 127-character limit.
pub(super) fn check_id(id: &str) -> Result<()> {
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
        let unknown =
            self.pairs.iter().map(|(k, _)| k.as_str()).find(|k| {
                !COMMON_KEYS.contains(k) && !keys.iter().any(|known| key_matches(known, k))
            });
        match unknown {
            Some(key) => {
                Err(Error::UnknownOption { backend: self.backend.clone(), key: key.to_string() })
            }
            None => Ok(()),
        }
    }
}

/// Whether `key` is the known key `known`, or has its prefix when `known` ends in `.*` (a
/// hub's `chardevs.*`).
fn key_matches(known: &str, key: &str) -> bool {
    match known.strip_suffix('*') {
        Some(prefix) => key.starts_with(prefix),
        None => known == key,
    }
}

/// The whole `-chardev` parse; `default_id` stands in for a missing `id=`.
pub(super) fn parse_spec(s: &str, default_id: Option<&str>) -> Result<ChardevSpec> {
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
    let overflow = match opts.get("overflow") {
        None | Some("block") => Overflow::Block,
        Some("drop") => Overflow::Drop,
        Some(other) => return Err(Error::option("overflow", other, "expects 'block' or 'drop'")),
    };
    let backend = backend_spec(ty.kind, &opts)?;
    let spec = ChardevSpec { id, backend, mux, log, overflow };
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

/// The common `logfile=`, `logappend=`, `logtimestamp=` options, and our `logmaxsize=` and
/// `logbackups=` (which need a `logfile=`, and `logbackups` a `logmaxsize`).
fn log_spec(opts: &Opts) -> Result<Option<LogSpec>> {
    let append = opts.bool_or("logappend", false)?;
    let timestamp = opts.bool_or("logtimestamp", false)?;
    let max_size = opts.get("logmaxsize").map(|v| parse_size("logmaxsize", v)).transpose()?;
    let backups = match opts.get("logbackups") {
        None => None,
        Some(value) => Some(u32::try_from(parse_number("logbackups", value)?).map_err(|_| {
            Error::option("logbackups", value, format!("must be at most {LOG_BACKUPS_MAX}"))
        })?),
    };
    let Some(path) = opts.path_opt("logfile")? else {
        for key in ["logmaxsize", "logbackups"] {
            opts.forbid(key, "rotates the logfile: give 'logfile' too")?;
        }
        return Ok(None);
    };
    let rotation = match (max_size, backups) {
        (Some(max_size), backups) => {
            Some(LogRotation { max_size, backups: backups.unwrap_or(DEFAULT_LOG_BACKUPS) })
        }
        (None, Some(_)) => {
            opts.forbid("logbackups", "counts rotated logfiles: give 'logmaxsize' too")?;
            None
        }
        (None, None) => None,
    };
    Ok(Some(LogSpec { path, append, timestamp, rotation }))
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
        "hub" => Ok(BackendSpec::Hub(hub_spec(opts)?)),
        "syslog" => Ok(BackendSpec::Syslog(syslog_spec(opts)?)),
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
    let history = fanout_size(opts, "history", 0)?;
    if history > 0 {
        // The history replaces the backlog: what a terminal gets is the last SIZE bytes.
        for key in ["backlog", "backlog-full"] {
            if let Some(value) = opts.get(key).filter(|v| key == "backlog" || *v == "wait") {
                return Err(Error::option(
                    key,
                    value,
                    "cannot be combined with 'history': every terminal gets the last \
                     'history' bytes of output instead of a backlog",
                ));
            }
        }
    }
    Ok(BackendSpec::Pty { path: opts.path_opt("path")?, backlog, when_full, history })
}

/// `hub`: `chardevs.0`, `chardevs.1`, ... without a gap (QEMU ignores everything after the
/// first missing index; we refuse it), `history` and `queue`.
fn hub_spec(opts: &Opts) -> Result<HubSpec> {
    let mut members: Vec<(usize, String)> = Vec::new();
    for (key, value) in &opts.pairs {
        let Some(index) = key.strip_prefix("chardevs.") else { continue };
        // QEMU looks up exactly `chardevs.%u`: no sign, no leading zero.
        let index = Some(index)
            .filter(|i| !i.is_empty() && i.bytes().all(|b| b.is_ascii_digit()))
            .filter(|i| *i == "0" || !i.starts_with('0'))
            .and_then(|i| i.parse::<usize>().ok())
            .ok_or_else(|| Error::UnknownOption {
                backend: opts.backend.clone(),
                key: key.clone(),
            })?;
        // The last repeat of a key wins, as for every other key.
        members.retain(|(i, _)| *i != index);
        members.push((index, value.clone()));
    }
    members.sort_by_key(|(i, _)| *i);
    if let Some(missing) = members.iter().enumerate().find(|(at, (i, _))| at != i).map(|(at, _)| at)
    {
        let (next, value) = &members[missing];
        return Err(Error::option(
            &format!("chardevs.{missing}"),
            "",
            format!(
                "is missing, but 'chardevs.{next}={value}' is given: the members must be \
                 numbered from chardevs.0 without a gap"
            ),
        ));
    }
    Ok(HubSpec {
        chardevs: members.into_iter().map(|(_, id)| id).collect(),
        history: fanout_size(opts, "history", 0)?,
        queue: fanout_size(opts, "queue", DEFAULT_HUB_QUEUE)?,
    })
}

/// A `history=` or `queue=` size (k/M suffixes), `default` when absent, at most
/// [`HISTORY_MAX`](crate::fanout::HISTORY_MAX).
fn fanout_size(opts: &Opts, key: &str, default: usize) -> Result<usize> {
    let Some(value) = opts.get(key) else { return Ok(default) };
    let size = parse_size(key, value)?;
    if size == 0 && key == "queue" {
        return Err(Error::option(key, value, "must be at least 1 byte"));
    }
    usize::try_from(size)
        .ok()
        .filter(|s| *s as u64 <= crate::fanout::HISTORY_MAX)
        .ok_or_else(|| Error::option(key, value, fanout_too_large(key)))
}

/// The error text for a `history=` or `queue=` above the cap.
fn fanout_too_large(key: &str) -> String {
    format!("is larger than the maximum {key}, 64M")
}

/// Checks a `history` or `queue` size of a spec built some other way (QMP).
pub(super) fn check_fanout_size(key: &str, size: usize) -> Result<()> {
    if size == 0 && key == "queue" {
        return Err(Error::option(key, "0", "must be at least 1 byte"));
    }
    if size as u64 > crate::fanout::HISTORY_MAX {
        return Err(Error::option(key, &size.to_string(), fanout_too_large(key)));
    }
    Ok(())
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
    // Named here with the values as written; `check_viewers` checks the numbers.
    if !server {
        forbid_all(opts, &["clients", "history", "queue"], "only for a server (server=on)")?;
    }
    if opts.get("clients").is_none_or(|c| c.trim_start_matches('0') == "1") {
        opts.forbid("queue", "only with clients above 1 (one client has QEMU's flow control)")?;
    }
    let spec = SocketSpec {
        nodelay: socket_nodelay(opts)?,
        telnet: opts.bool_or("telnet", false)?,
        tn3270: opts.bool_or("tn3270", false)?,
        websocket,
        reconnect_ms: socket_reconnect_ms(opts, server, &addr)?,
        addr,
        server,
        wait,
        mode,
        clients: match opts.get("clients") {
            Some(value) => u32::try_from(parse_number("clients", value)?)
                .map_err(|_| Error::option("clients", value, "must be between 1 and 64"))?,
            None => 1,
        },
        history: socket_size(opts, "history", "is larger than the maximum history, 64M")?
            .unwrap_or(0),
        queue: socket_size(opts, "queue", "is larger than the maximum queue, 64M")?,
        backlog: socket_size(opts, "backlog", "is larger than the maximum backlog, 64M")?,
        tls: socket_tls(opts)?,
    };
    spec.check_viewers()?;
    spec.check_tls()?;
    Ok(spec)
}

/// `tls-creds=`, `tls-authz=`, `tls-hostname=`.
fn socket_tls(opts: &Opts) -> Result<Option<TlsSpec>> {
    let Some(creds) = opts.get("tls-creds") else {
        if let Some(value) = opts.get("tls-authz") {
            return Err(Error::option(
                "tls-authz",
                value,
                "'tls_authz' option requires 'tls_creds' option",
            ));
        }
        if let Some(value) = opts.get("tls-hostname") {
            return Err(Error::option(
                "tls-hostname",
                value,
                "needs 'tls-creds' (TLS credentials)",
            ));
        }
        return Ok(None);
    };
    Ok(Some(TlsSpec {
        creds: creds.to_string(),
        authz: opts.get("tls-authz").map(str::to_string),
        hostname: opts.get("tls-hostname").map(str::to_string),
    }))
}

/// A size key of the viewers' options, in its limit (with the value as the user wrote it).
fn socket_size(opts: &Opts, key: &str, over: &str) -> Result<Option<u64>> {
    let Some(value) = opts.get(key) else { return Ok(None) };
    let size = parse_size(key, value)?;
    if size > crate::fanout::HISTORY_MAX {
        return Err(Error::option(key, value, over));
    }
    if size == 0 && (key == "queue" || key == "backlog") {
        return Err(Error::option(key, value, "must be at least 1 byte"));
    }
    Ok(Some(size))
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
pub(super) fn check_socket_mode(
    value: &str,
    mode: u32,
    server: bool,
    addr: &SocketAddrSpec,
) -> Result<()> {
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

/// `syslog`: `path` (the socket), `facility`, `format` and `tag`, each checked here so that
/// a bad one names its key before anything is opened.
fn syslog_spec(opts: &Opts) -> Result<SyslogSpec> {
    let facility = match opts.get("facility") {
        None => SyslogFacility::default(),
        Some(name) => SyslogFacility::from_name(name).ok_or_else(|| {
            Error::option(
                "facility",
                name,
                "must be one of syslog(3)'s facilities: user, mail, daemon, auth, syslog, lpr, \
                 news, uucp, cron, authpriv, ftp, local0 to local7",
            )
        })?,
    };
    let format = match opts.get("format") {
        None => SyslogFormat::default(),
        Some("rfc3164") => SyslogFormat::Rfc3164,
        Some("rfc5424") => SyslogFormat::Rfc5424,
        Some(other) => {
            return Err(Error::option("format", other, "must be 'rfc3164' or 'rfc5424'"));
        }
    };
    let spec = SyslogSpec {
        path: opts.path_opt("path")?,
        facility,
        format,
        tag: opts.get("tag").map(str::to_string),
    };
    spec.check()?;
    Ok(spec)
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

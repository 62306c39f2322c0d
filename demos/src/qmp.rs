//! QMP, QEMU's JSON monitor, on any chardev: the greeting, capabilities negotiation, a
//! streaming parser (a command runs when its closing brace arrives), QEMU's error classes
//! and texts, events, and fds passed with `getfd`.

use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine;
use chardev::options::{BackendSpec, ChardevSpec, LogSpec, SocketAddrSpec, SocketSpec, UdpSpec};
use chardev::{Event, Frontend, FrontendHandle};
use serde_json::{json, Map, Value};

use crate::hmp::{NamedFds, PROGRAM};
use crate::machine::RunState;
use crate::services::{MigrationEndpoint, Services};

/// The largest QMP input object we buffer; beyond it the input is dropped with an error.
const MAX_INPUT: usize = 1 << 20;

/// QEMU's JSON parser nests at most this deep.
const MAX_NESTING: usize = 1024;

/// An error reply: QEMU's error class and description.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QmpError {
    /// `GenericError`, `CommandNotFound`, `DeviceNotFound`.
    pub class: &'static str,
    /// The text.
    pub desc: String,
}

impl QmpError {
    fn generic(desc: impl Into<String>) -> QmpError {
        QmpError { class: "GenericError", desc: desc.into() }
    }
    fn not_found(desc: impl Into<String>) -> QmpError {
        QmpError { class: "CommandNotFound", desc: desc.into() }
    }
}

impl From<chardev::Error> for QmpError {
    fn from(e: chardev::Error) -> QmpError {
        QmpError::generic(e.to_string())
    }
}

type QmpResult = Result<Value, QmpError>;

/// Splits a byte stream into top-level JSON values as their last byte arrives.
#[derive(Debug, Default)]
pub struct JsonStream {
    buf: Vec<u8>,
    depth: usize,
    in_string: bool,
    escaped: bool,
    /// Inside a bare top-level token (a number, a keyword, or garbage).
    in_token: bool,
}

impl JsonStream {
    /// Feeds bytes; returns each complete top-level value, or the error that ended it.
    pub fn push(&mut self, data: &[u8]) -> Vec<Result<Value, String>> {
        let mut out = Vec::new();
        for &b in data {
            if self.in_token
                && (b.is_ascii_whitespace() || matches!(b, b'{' | b'[' | b'"' | b'}' | b']'))
            {
                self.in_token = false;
                out.push(self.finish());
            }
            if self.buf.is_empty() && !self.in_token && b.is_ascii_whitespace() {
                continue;
            }
            self.buf.push(b);
            if self.in_string {
                match (self.escaped, b) {
                    (true, _) => self.escaped = false,
                    (false, b'\\') => self.escaped = true,
                    (false, b'"') => {
                        self.in_string = false;
                        if self.depth == 0 {
                            out.push(self.finish());
                        }
                    }
                    _ => {}
                }
            } else if self.in_token {
            } else {
                match b {
                    b'"' => self.in_string = true,
                    b'{' | b'[' => self.depth += 1,
                    b'}' | b']' if self.depth > 0 => {
                        self.depth -= 1;
                        if self.depth == 0 {
                            out.push(self.finish());
                        }
                    }
                    b'}' | b']' => out.push(self.finish()),
                    _ if self.depth == 0 => self.in_token = true,
                    _ => {}
                }
            }
            if self.depth > MAX_NESTING || self.buf.len() > MAX_INPUT {
                self.reset();
                out.push(Err("JSON parse error, input too large or nested too deeply".into()));
            }
        }
        out
    }

    fn finish(&mut self) -> Result<Value, String> {
        let text = std::mem::take(&mut self.buf);
        self.reset();
        serde_json::from_slice(&text).map_err(|e| {
            let shown = String::from_utf8_lossy(&text);
            if text.first().is_some_and(|c| c.is_ascii_alphabetic()) {
                format!("JSON parse error, invalid keyword '{}'", shown.trim())
            } else {
                format!("JSON parse error, {e}")
            }
        })
    }

    fn reset(&mut self) {
        self.buf.clear();
        self.depth = 0;
        self.in_string = false;
        self.escaped = false;
        self.in_token = false;
    }
}

/// Monitors that get QMP events (those past capabilities negotiation).
#[derive(Default)]
pub struct EventBus {
    listeners: Mutex<Vec<(u64, FrontendHandle, bool)>>,
    next: AtomicU64,
}

impl std::fmt::Debug for EventBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventBus").finish_non_exhaustive()
    }
}

impl EventBus {
    fn subscribe(&self, handle: FrontendHandle, pretty: bool) -> u64 {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        self.listeners.lock().unwrap_or_else(PoisonError::into_inner).push((id, handle, pretty));
        id
    }

    fn unsubscribe(&self, id: u64) {
        self.listeners.lock().unwrap_or_else(PoisonError::into_inner).retain(|(i, ..)| *i != id);
    }

    /// Sends an event (`STOP`, `RESUME`, `SHUTDOWN`, ...) to every negotiated QMP monitor.
    pub fn emit(&self, name: &str, data: Option<Value>) {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
        let mut event = json!({
            "timestamp": {"seconds": now.as_secs(), "microseconds": now.subsec_micros()},
            "event": name,
        });
        if let (Some(data), Some(obj)) = (data, event.as_object_mut()) {
            obj.insert("data".into(), data);
        }
        let listeners = self.listeners.lock().unwrap_or_else(PoisonError::into_inner).clone();
        for (_, handle, pretty) in listeners {
            if let Err(e) = handle.write_all(render(&event, pretty).as_bytes()) {
                log::debug!("QMP event lost: {e}");
            }
        }
    }
}

/// A QMP reply or event as QEMU writes it: `{"return": {}}` with QEMU's spacing (or indented
/// for `-qmp-pretty`), CR LF after it.
fn render(value: &Value, pretty: bool) -> String {
    use serde::Serialize;
    let mut out = Vec::new();
    let written = if pretty {
        value.serialize(&mut serde_json::Serializer::with_formatter(
            &mut out,
            serde_json::ser::PrettyFormatter::with_indent(b"    "),
        ))
    } else {
        value.serialize(&mut serde_json::Serializer::with_formatter(&mut out, QemuSpacing))
    };
    if let Err(e) = written {
        log::error!("QMP reply not rendered: {e}");
    }
    format!("{}\r\n", String::from_utf8_lossy(&out).replace('\n', "\r\n"))
}

/// QEMU's compact JSON: a space after every `:` and `,`.
struct QemuSpacing;

impl serde_json::ser::Formatter for QemuSpacing {
    fn begin_object_value<W: ?Sized + std::io::Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        w.write_all(b": ")
    }
    fn begin_object_key<W: ?Sized + std::io::Write>(
        &mut self,
        w: &mut W,
        first: bool,
    ) -> std::io::Result<()> {
        if first {
            Ok(())
        } else {
            w.write_all(b", ")
        }
    }
    fn begin_array_value<W: ?Sized + std::io::Write>(
        &mut self,
        w: &mut W,
        first: bool,
    ) -> std::io::Result<()> {
        if first {
            Ok(())
        } else {
            w.write_all(b", ")
        }
    }
}

/// The commands this monitor knows, as `query-commands` lists them.
pub const COMMANDS: &[&str] = &[
    "qmp_capabilities",
    "query-version",
    "query-commands",
    "query-status",
    "query-name",
    "stop",
    "cont",
    "quit",
    "query-chardev",
    "query-chardev-backends",
    "chardev-add",
    "chardev-remove",
    "chardev-change",
    "chardev-send-break",
    "ringbuf-write",
    "ringbuf-read",
    "getfd",
    "closefd",
    "migrate",
    "query-migrate",
    "migrate_cancel",
    "migrate-incoming",
    "human-monitor-command",
];

/// A QMP monitor, as the frontend of its chardev.
pub struct Qmp {
    handle: FrontendHandle,
    services: Services,
    pretty: bool,
    stream: JsonStream,
    negotiated: bool,
    fds: Arc<Mutex<NamedFds>>,
    subscription: Option<u64>,
    /// `quit` was answered: end the program once the reply is out.
    quitting: bool,
}

impl Qmp {
    /// A QMP monitor that talks through `handle`; `pretty` indents its JSON.
    pub fn new(handle: FrontendHandle, services: Services, pretty: bool) -> Qmp {
        Qmp {
            handle,
            services,
            pretty,
            stream: JsonStream::default(),
            negotiated: false,
            fds: Arc::default(),
            subscription: None,
            quitting: false,
        }
    }

    fn send(&self, value: &Value) {
        if let Err(e) = self.handle.write_all(render(value, self.pretty).as_bytes()) {
            log::debug!("QMP output lost: {e}");
        }
    }

    fn greeting(&self) -> Value {
        json!({"QMP": {"version": version(), "capabilities": []}})
    }

    /// Starts over for a new client: greeting, negotiation again.
    fn reset(&mut self) {
        self.stream = JsonStream::default();
        self.negotiated = false;
        if let Some(id) = self.subscription.take() {
            self.services.events.unsubscribe(id);
        }
    }

    /// Handles one input value; returns the reply to send.
    fn handle_input(&mut self, input: Value) -> Value {
        let id = input.get("id").cloned();
        let reply = self.request(input);
        let mut reply = match reply {
            Ok(value) => json!({ "return": value }),
            Err(e) => json!({"error": {"class": e.class, "desc": e.desc}}),
        };
        if let (Some(id), Some(obj)) = (id, reply.as_object_mut()) {
            obj.insert("id".into(), id);
        }
        reply
    }

    fn request(&mut self, input: Value) -> QmpResult {
        let Value::Object(mut req) = input else {
            return Err(QmpError::generic("QMP input must be a JSON object"));
        };
        req.remove("id");
        if let Some(key) = req.keys().find(|k| !matches!(k.as_str(), "execute" | "arguments")) {
            return Err(QmpError::generic(format!("QMP input member '{key}' is unexpected")));
        }
        let command = match req.remove("execute") {
            Some(Value::String(c)) => c,
            Some(_) => {
                return Err(QmpError::generic("QMP input member 'execute' must be a string"))
            }
            None => return Err(QmpError::generic("QMP input lacks member 'execute'")),
        };
        let args = match req.remove("arguments") {
            None => Map::new(),
            Some(Value::Object(a)) => a,
            Some(_) => {
                return Err(QmpError::generic("QMP input member 'arguments' must be an object"))
            }
        };
        if !self.negotiated && command != "qmp_capabilities" {
            return Err(QmpError::not_found(
                "Expecting capabilities negotiation with 'qmp_capabilities'",
            ));
        }
        let mut args = Args::new(args);
        let result = self.execute(&command, &mut args)?;
        args.done()?;
        Ok(result)
    }

    fn execute(&mut self, command: &str, a: &mut Args) -> QmpResult {
        let s = &self.services;
        let reg = &s.registry;
        match command {
            "qmp_capabilities" => {
                if self.negotiated {
                    return Err(QmpError::not_found("Capabilities negotiation is already complete, command ignored"));
                }
                if let Some(enable) = a.opt_array("enable")? {
                    if let Some(cap) = enable.first() {
                        return Err(QmpError::generic(format!("Capability '{}' not available", cap.as_str().unwrap_or("?"))));
                    }
                }
                self.negotiated = true;
                self.subscription = Some(s.events.subscribe(self.handle.clone(), self.pretty));
                Ok(json!({}))
            }
            "query-version" => Ok(version()),
            "query-commands" => Ok(Value::Array(COMMANDS.iter().map(|c| json!({ "name": c })).collect())),
            "query-status" => {
                let state = s.machine.state();
                Ok(json!({"status": state.name(), "singlestep": false, "running": state == RunState::Running}))
            }
            "query-name" => Ok(s.machine.name.as_ref().map_or(json!({}), |n| json!({ "name": n }))),
            "stop" => {
                s.stop();
                Ok(json!({}))
            }
            "cont" => s.cont().map(|()| json!({})).map_err(QmpError::generic),
                        "quit" => {
                s.events.emit("SHUTDOWN", Some(json!({"guest": false, "reason": "host-qmp-quit"})));
                // The reply goes out first; then the program ends (see `receive`).
                self.quitting = true;
                Ok(json!({}))
            }
            "query-chardev" => Ok(Value::Array(
                reg.query()
                    .into_iter()
                    .map(|c| json!({"label": c.label, "filename": c.filename, "frontend-open": c.frontend_open}))
                    .collect(),
            )),
            "query-chardev-backends" => {
                let mut names = reg.backends();
                names.push("memory".into());
                names.push("tty".into());
                Ok(Value::Array(names.into_iter().map(|n| json!({ "name": n })).collect()))
            }
            "chardev-add" => {
                let id = a.string("id")?;
                let backend = a.value("backend")?;
                let fail = |e: String| QmpError::generic(format!("Failed to add chardev '{id}': {e}"));
                let spec = backend_spec(&id, &backend).map_err(fail)?;
                if reg.contains(&id) {
                    return Err(QmpError::generic(format!("Chardev with id '{id}' already exists")));
                }
                let added = reg.add(&spec).map_err(|e| fail(e.to_string()))?;
                Ok(added.pty.map_or(json!({}), |p| json!({ "pty": p })))
            }
            "chardev-change" => {
                let id = a.string("id")?;
                let backend = a.value("backend")?;
                let spec = backend_spec(&id, &backend).map_err(QmpError::generic)?;
                let added = reg.change(&id, &spec)?;
                Ok(added.pty.map_or(json!({}), |p| json!({ "pty": p })))
            }
            "chardev-remove" => reg.remove(&a.string("id")?).map(|()| json!({})).map_err(Into::into),
            "chardev-send-break" => reg.send_break(&a.string("id")?).map(|()| json!({})).map_err(Into::into),
            "ringbuf-write" => {
                let device = a.string("device")?;
                let data = a.string("data")?;
                let bytes = match a.opt_string("format")?.as_deref() {
                    None | Some("utf8") => data.into_bytes(),
                    Some("base64") => base64::engine::general_purpose::STANDARD
                        .decode(data.as_bytes())
                        .map_err(|e| QmpError::generic(format!("base64 decode: {e}")))?,
                    Some(other) => return Err(bad_format(other)),
                };
                reg.ringbuf_write(&device, &bytes)?;
                Ok(json!({}))
            }
            "ringbuf-read" => {
                let device = a.string("device")?;
                let size = a.integer("size")?;
                if size <= 0 {
                    return Err(QmpError::generic("size must be greater than zero"));
                }
                let format = a.opt_string("format")?;
                let data = reg.ringbuf_read(&device, usize::try_from(size).unwrap_or(usize::MAX))?;
                match format.as_deref() {
                    None | Some("utf8") => Ok(Value::String(String::from_utf8_lossy(&data).into_owned())),
                    Some("base64") => Ok(Value::String(base64::engine::general_purpose::STANDARD.encode(&data))),
                    Some(other) => Err(bad_format(other)),
                }
            }
            "getfd" => {
                let name = a.string("fdname")?;
                self.fds().getfd(&name).map(|()| json!({})).map_err(QmpError::generic)
            }
            "closefd" => {
                let name = a.string("fdname")?;
                self.fds().closefd(&name).map(|()| json!({})).map_err(QmpError::generic)
            }
            "migrate" => {
                let uri = a.string("uri")?;
                for ignored in ["blk", "inc", "detach", "resume"] {
                    a.opt_bool(ignored)?;
                }
                let target = self.migration_target(&uri)?;
                s.migrate(target).map(|()| json!({})).map_err(QmpError::generic)
            }
            "query-migrate" => Ok(s.query_migrate()),
            "migrate_cancel" => {
                s.migrate_cancel();
                Ok(json!({}))
            }
            "migrate-incoming" => {
                let uri = a.string("uri")?;
                let source = self.migration_target(&uri)?;
                s.migrate_incoming(source).map(|()| json!({})).map_err(QmpError::generic)
            }
            "human-monitor-command" => {
                let line = a.string("command-line")?;
                a.opt_int("cpu-index")?;
                let mut hmp = crate::hmp::Hmp::detached(self.services.clone(), Arc::clone(&self.fds));
                hmp.run_line(&line).map(Value::String).map_err(QmpError::generic)
            }
            other => Err(QmpError::not_found(format!("The command {other} has not been found"))),
        }
    }

    fn fds(&self) -> std::sync::MutexGuard<'_, NamedFds> {
        self.fds.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// `fd:NAME`, `unix:PATH`, `tcp:HOST:PORT`.
    fn migration_target(&self, uri: &str) -> Result<MigrationEndpoint, QmpError> {
        MigrationEndpoint::parse(uri, &mut self.fds()).map_err(QmpError::generic)
    }
}

fn bad_format(other: &str) -> QmpError {
    QmpError::generic(format!("Parameter 'format' does not accept value '{other}'"))
}

/// `query-version`: this program's version in QEMU's shape.
fn version() -> Value {
    let mut parts = env!("CARGO_PKG_VERSION").split('.').map(|p| p.parse::<u64>().unwrap_or(0));
    let (major, minor, micro) =
        (parts.next().unwrap_or(0), parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    json!({"qemu": {"major": major, "minor": minor, "micro": micro}, "package": PROGRAM})
}

/// A command's arguments, checked as QEMU checks them: missing, wrong type, unexpected.
struct Args {
    map: Map<String, Value>,
}

impl Args {
    fn new(map: Map<String, Value>) -> Args {
        Args { map }
    }

    fn take(&mut self, name: &str) -> Option<Value> {
        self.map.remove(name)
    }

    fn value(&mut self, name: &str) -> Result<Value, QmpError> {
        self.take(name).ok_or_else(|| QmpError::generic(format!("Parameter '{name}' is missing")))
    }

    fn string(&mut self, name: &str) -> Result<String, QmpError> {
        match self.value(name)? {
            Value::String(s) => Ok(s),
            _ => Err(wrong_type(name, "string")),
        }
    }

    fn opt_string(&mut self, name: &str) -> Result<Option<String>, QmpError> {
        match self.take(name) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(wrong_type(name, "string")),
        }
    }

    fn integer(&mut self, name: &str) -> Result<i64, QmpError> {
        self.value(name)?.as_i64().ok_or_else(|| wrong_type(name, "integer"))
    }

    fn opt_int(&mut self, name: &str) -> Result<Option<i64>, QmpError> {
        match self.take(name) {
            None => Ok(None),
            Some(v) => v.as_i64().map(Some).ok_or_else(|| wrong_type(name, "integer")),
        }
    }

    fn opt_bool(&mut self, name: &str) -> Result<Option<bool>, QmpError> {
        match self.take(name) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(b)),
            Some(_) => Err(wrong_type(name, "boolean")),
        }
    }

    fn opt_array(&mut self, name: &str) -> Result<Option<Vec<Value>>, QmpError> {
        match self.take(name) {
            None => Ok(None),
            Some(Value::Array(a)) => Ok(Some(a)),
            Some(_) => Err(wrong_type(name, "array")),
        }
    }

    /// Fails on any argument nobody asked for.
    fn done(self) -> Result<(), QmpError> {
        match self.map.keys().next() {
            Some(k) => Err(QmpError::generic(format!("Parameter '{k}' is unexpected"))),
            None => Ok(()),
        }
    }
}

fn wrong_type(name: &str, expected: &str) -> QmpError {
    QmpError::generic(format!("Invalid parameter type for '{name}', expected: {expected}"))
}

/// QMP's `ChardevBackend` (`{"type": ..., "data": {...}}`) as the same typed spec the
/// `-chardev` parser builds.
pub fn backend_spec(id: &str, backend: &Value) -> Result<ChardevSpec, String> {
    let obj =
        backend.as_object().ok_or("Invalid parameter type for 'backend', expected: object")?;
    let kind =
        obj.get("type").and_then(Value::as_str).ok_or("Parameter 'backend.type' is missing")?;
    let empty = Map::new();
    let data = match obj.get("data") {
        Some(Value::Object(d)) => d,
        Some(_) => return Err("Invalid parameter type for 'backend.data', expected: object".into()),
        None => &empty,
    };
    let mut d = Data { map: data.clone(), prefix: "data" };
    let log =
        d.opt_str("logfile")?.map(|path| LogSpec { path: PathBuf::from(path), append: false });
    let log_append = d.opt_bool("logappend")?.unwrap_or(false);
    let log = log.map(|l| LogSpec { append: log_append, ..l });
    d.opt_bool("logtimestamp")?;
    let backend = match kind {
        "null" => BackendSpec::Null,
        "file" => BackendSpec::File {
            out: PathBuf::from(d.str("out")?),
            input: d.opt_str("in")?.map(PathBuf::from),
            append: d.opt_bool("append")?.unwrap_or(false),
        },
        "pipe" => BackendSpec::Pipe { path: PathBuf::from(d.str("device")?) },
        "serial" | "tty" => BackendSpec::Serial { path: PathBuf::from(d.str("device")?) },
        "ringbuf" | "memory" => {
            let size = d.opt_u64("size")?.unwrap_or(65536);
            let size = usize::try_from(size)
                .map_err(|_| "size of ringbuf chardev must be power of two")?;
            if !size.is_power_of_two() {
                return Err("size of ringbuf chardev must be power of two".into());
            }
            BackendSpec::Ringbuf { size }
        }
        "stdio" => BackendSpec::Stdio { signal: d.opt_bool("signal")?.unwrap_or(true) },
        "pty" => BackendSpec::Pty {
            path: d.opt_str("path")?.map(PathBuf::from),
            backlog: d
                .opt_u64("backlog")?
                .map_or(Ok(chardev::options::DEFAULT_PTY_BACKLOG), usize::try_from)
                .map_err(|_| "backlog is too large")?,
        },
        "socket" => socket_spec(&mut d)?,
        "udp" => {
            let remote = d.map.remove("remote").ok_or("Parameter 'data.remote' is missing")?;
            let (host, port) = inet(&remote, "data.remote")?;
            let (localaddr, localport) = match d.map.remove("local") {
                Some(local) => {
                    let (h, p) = inet(&local, "data.local")?;
                    (Some(h), Some(p))
                }
                None => (None, None),
            };
            BackendSpec::Udp(UdpSpec { host, port, localaddr, localport, ipv4: None, ipv6: None })
        }
        other => return Err(format!("'{other}' is not a valid char driver name")),
    };
    d.done()?;
    let spec = ChardevSpec { id: id.to_string(), backend, mux: false, log };
    // The same checks as the command line (`-chardev`) makes.
    spec.check().map_err(|e| e.to_string())?;
    Ok(spec)
}

fn socket_spec(d: &mut Data) -> Result<BackendSpec, String> {
    let addr = d.map.remove("addr").ok_or("Parameter 'data.addr' is missing")?;
    let addr_type =
        addr.get("type").and_then(Value::as_str).ok_or("Parameter 'data.addr.type' is missing")?;
    let mut a = Data {
        map: addr
            .get("data")
            .and_then(Value::as_object)
            .cloned()
            .ok_or("Parameter 'data.addr.data' is missing")?,
        prefix: "data.addr.data",
    };
    let addr = match addr_type {
        "unix" => SocketAddrSpec::Unix {
            path: PathBuf::from(a.str("path")?),
            abstract_: a.opt_bool("abstract")?.unwrap_or(false),
            tight: a.opt_bool("tight")?.unwrap_or(true),
        },
        "inet" => SocketAddrSpec::Inet {
            host: a.str("host")?,
            port: a.str("port")?,
            to: a
                .opt_u64("to")?
                .map(|t| u16::try_from(t).map_err(|_| "'to' must be a port number"))
                .transpose()?,
            ipv4: a.opt_bool("ipv4")?,
            ipv6: a.opt_bool("ipv6")?,
        },
        "fd" => SocketAddrSpec::Fd(a.str("str")?),
        other => {
            return Err(format!("Invalid parameter 'data.addr.type': '{other}' is not supported"))
        }
    };
    a.opt_bool("numeric")?;
    a.opt_bool("keep-alive")?;
    a.done()?;
    // QMP's defaults differ from the command line's: a server unless told otherwise, no wait.
    let server = d.opt_bool("server")?.unwrap_or(true);
    let wait = d.opt_bool("wait")?.unwrap_or(false);
    let reconnect_s = d.opt_u64("reconnect")?;
    let reconnect_ms = d.opt_u64("reconnect-ms")?;
    let spec = SocketSpec {
        addr,
        server,
        wait: server && wait,
        nodelay: d.opt_bool("nodelay")?.unwrap_or(false),
        telnet: d.opt_bool("telnet")?.unwrap_or(false),
        tn3270: d.opt_bool("tn3270")?.unwrap_or(false),
        websocket: d.opt_bool("websocket")?.unwrap_or(false),
        reconnect_ms: reconnect_ms.or(reconnect_s.map(|s| s.saturating_mul(1000))).unwrap_or(0),
        // QEMU's ChardevSocket has no such field: `mode=` is a command-line extension.
        mode: None,
    };
    if spec.reconnect_ms > 0 && server {
        return Err("'reconnect' option is incompatible with socket in server listen mode".into());
    }
    for unsupported in ["tls-creds", "tls-authz"] {
        if d.map.remove(unsupported).is_some() {
            return Err(format!("'{unsupported}': TLS is not supported"));
        }
    }
    Ok(BackendSpec::Socket(spec))
}

fn inet(v: &Value, what: &str) -> Result<(String, String), String> {
    if v.get("type").and_then(Value::as_str) != Some("inet") {
        return Err(format!("'{what}' must be an inet address"));
    }
    let mut a = Data {
        map: v
            .get("data")
            .and_then(Value::as_object)
            .cloned()
            .ok_or(format!("Parameter '{what}.data' is missing"))?,
        prefix: "data",
    };
    let host = a.str("host")?;
    let port = a.str("port")?;
    a.opt_bool("ipv4")?;
    a.opt_bool("ipv6")?;
    a.done()?;
    Ok((host, port))
}

/// The `data` members of a backend, checked like [`Args`] (with QAPI's dotted names).
struct Data {
    map: Map<String, Value>,
    prefix: &'static str,
}

impl Data {
    fn wrong(&self, name: &str, expected: &str) -> String {
        format!("Invalid parameter type for '{}.{name}', expected: {expected}", self.prefix)
    }
    fn str(&mut self, name: &str) -> Result<String, String> {
        self.opt_str(name)?.ok_or_else(|| format!("Parameter '{}.{name}' is missing", self.prefix))
    }
    fn opt_str(&mut self, name: &str) -> Result<Option<String>, String> {
        match self.map.remove(name) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(self.wrong(name, "string")),
        }
    }
    fn opt_bool(&mut self, name: &str) -> Result<Option<bool>, String> {
        match self.map.remove(name) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(b)),
            Some(_) => Err(self.wrong(name, "boolean")),
        }
    }
    fn opt_u64(&mut self, name: &str) -> Result<Option<u64>, String> {
        match self.map.remove(name) {
            None => Ok(None),
            Some(v) => v.as_u64().map(Some).ok_or_else(|| self.wrong(name, "integer")),
        }
    }
    fn done(self) -> Result<(), String> {
        match self.map.keys().next() {
            Some(k) => Err(format!("Parameter '{}.{k}' is unexpected", self.prefix)),
            None => Ok(()),
        }
    }
}

impl Frontend for Qmp {
    fn can_receive(&mut self) -> usize {
        64 * 1024
    }

    fn receive(&mut self, data: &[u8], fds: Vec<OwnedFd>) {
        self.fds().arrived(fds);
        for input in self.stream.push(data) {
            let reply = match input {
                Ok(value) => self.handle_input(value),
                Err(desc) => json!({"error": {"class": "GenericError", "desc": desc}}),
            };
            if self.services.machine.quitting.load(Ordering::Acquire) {
                return; // the program is ending (Ctrl-A x, or another monitor's quit)
            }
            self.send(&reply);
            if self.quitting {
                self.services.quit();
                return;
            }
        }
    }

    fn event(&mut self, event: Event) {
        match event {
            Event::Opened => {
                self.reset();
                self.send(&self.greeting());
            }
            Event::Closed => self.reset(),
            _ => {}
        }
    }
}

impl Drop for Qmp {
    fn drop(&mut self) {
        if let Some(id) = self.subscription.take() {
            self.services.events.unsubscribe(id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn objects_complete_at_their_closing_brace() {
        let mut s = JsonStream::default();
        assert!(s.push(br#"{"execute": "a", "arguments": {"x": "}"#).is_empty());
        let out = s.push(br#"{"}}{"execute":"b"} "#);
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].as_ref().unwrap()["arguments"]["x"], "}{");
        assert_eq!(out[1].as_ref().unwrap()["execute"], "b");
    }

    #[test]
    fn garbage_is_an_error_and_the_stream_recovers() {
        let mut s = JsonStream::default();
        let out = s.push(b"{bad}\n[1,2] \"str\" bad {\"execute\":\"ok\"}");
        assert!(out[0].as_ref().unwrap_err().starts_with("JSON parse error"));
        assert_eq!(out[1].as_ref().unwrap(), &json!([1, 2]));
        assert_eq!(out[2].as_ref().unwrap(), &json!("str"));
        assert_eq!(out[3].as_ref().unwrap_err(), "JSON parse error, invalid keyword 'bad'");
        assert_eq!(out[4].as_ref().unwrap()["execute"], "ok");
    }

    #[test]
    fn escaped_quotes_do_not_end_strings() {
        let mut s = JsonStream::default();
        let out = s.push(br#"{"a":"\"}"}"#);
        assert_eq!(out[0].as_ref().unwrap()["a"], "\"}");
    }

    #[test]
    fn backend_json_maps_onto_the_command_line_spec() {
        let spec = backend_spec(
            "mon1",
            &json!({"type":"socket","data":{"addr":{"type":"unix","data":{"path":"/tmp/m.sock"}},"server":true,"wait":false}}),
        )
        .unwrap();
        assert_eq!(
            spec,
            ChardevSpec::parse("socket,id=mon1,path=/tmp/m.sock,server=on,wait=off").unwrap()
        );
        let spec = backend_spec("f", &json!({"type":"file","data":{"out":"/tmp/o","append":true}}))
            .unwrap();
        assert_eq!(spec, ChardevSpec::parse("file,id=f,path=/tmp/o,append=on").unwrap());
        let err = backend_spec("r", &json!({"type":"ringbuf","data":{"size":5}})).unwrap_err();
        assert_eq!(err, "size of ringbuf chardev must be power of two");
        let err = backend_spec("n", &json!({"type":"null","data":{"bogus":1}})).unwrap_err();
        assert_eq!(err, "Parameter 'data.bogus' is unexpected");
    }
}

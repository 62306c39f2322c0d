//! QAPI's `ChardevBackend` JSON (what `chardev-add` and `chardev-change` take) as the same
//! typed [`ChardevSpec`] the `-chardev` parser builds, with QEMU's error texts.

use std::path::PathBuf;

use chardev::options::{
    BackendSpec, BacklogFull, ChardevSpec, HubSpec, LogRotation, LogSpec, SocketAddrSpec,
    SocketSpec, SyslogFacility, SyslogFormat, SyslogSpec, UdpSpec, DEFAULT_LOG_BACKUPS,
    LOG_BACKUPS_MAX,
};
use serde_json::{Map, Value};

/// Whether an error of [`backend_spec`] is one of QAPI's input checks (a member missing,
/// unexpected or of the wrong type), which QEMU reports before the command runs and so
/// without the command's "Failed to add chardev" prefix.
pub fn is_input_error(desc: &str) -> bool {
    desc.starts_with("Parameter '") || desc.starts_with("Invalid parameter type")
}

/// QMP's `ChardevBackend` (`{"type": ..., "data": {...}}`) as the same typed spec the
/// `-chardev` parser builds.
pub fn backend_spec(id: &str, backend: &Value) -> Result<ChardevSpec, String> {
    let obj =
        backend.as_object().ok_or("Invalid parameter type for 'backend', expected: object")?;
    let kind =
        obj.get("type").and_then(Value::as_str).ok_or("Parameter 'backend.type' is missing")?;
    // Every branch of QAPI's union wraps its members in a required `data`.
    let data = match obj.get("data") {
        Some(Value::Object(d)) => d,
        Some(_) => return Err("Invalid parameter type for 'backend.data', expected: object".into()),
        None => return Err("Parameter 'backend.data' is missing".into()),
    };
    let mut d = Data { map: data.clone(), prefix: "backend.data".into() };
    let log = log_spec(&mut d)?;
    // An extension, as on the command line (`overflow=drop`).
    let overflow = match d.opt_str("overflow")?.as_deref() {
        None | Some("block") => chardev::options::Overflow::Block,
        Some("drop") => chardev::options::Overflow::Drop,
        Some(other) => {
            return Err(format!(
                "Parameter 'backend.data.overflow' does not accept value '{other}'"
            ))
        }
    };
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
        "pty" => pty_spec(&mut d)?,
        "socket" => socket_spec(&mut d)?,
        "hub" => hub_spec(&mut d)?,
        "syslog" => syslog_spec(&mut d)?,
        "udp" => {
            let remote =
                d.map.remove("remote").ok_or("Parameter 'backend.data.remote' is missing")?;
            let (host, port) = inet(&remote, "backend.data.remote")?;
            let (localaddr, localport) = match d.map.remove("local") {
                Some(local) => {
                    let (h, p) = inet(&local, "backend.data.local")?;
                    (Some(h), Some(p))
                }
                None => (None, None),
            };
            BackendSpec::Udp(UdpSpec { host, port, localaddr, localport, ipv4: None, ipv6: None })
        }
        other => return Err(format!("Parameter 'type' does not accept value '{other}'")),
    };
    d.done()?;
    let spec = ChardevSpec { id: id.to_string(), backend, mux: false, log, overflow };
    // The same checks as the command line (`-chardev`) makes.
    spec.check().map_err(|e| e.to_string())?;
    Ok(spec)
}

fn socket_spec(d: &mut Data) -> Result<BackendSpec, String> {
    let addr = d.map.remove("addr").ok_or("Parameter 'backend.data.addr' is missing")?;
    let addr_type = addr
        .get("type")
        .and_then(Value::as_str)
        .ok_or("Parameter 'backend.data.addr.type' is missing")?;
    let mut a = Data {
        map: addr
            .get("data")
            .and_then(Value::as_object)
            .cloned()
            .ok_or("Parameter 'backend.data.addr.data' is missing")?,
        prefix: "backend.data.addr.data".into(),
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
            return Err(format!(
                "Parameter 'backend.data.addr.type' does not accept value '{other}'"
            ))
        }
    };
    a.opt_bool("numeric")?;
    a.opt_bool("keep-alive")?;
    a.done()?;
    // QMP's defaults differ from the command line's: a server unless told otherwise, no wait.
    let server = d.opt_bool("server")?.unwrap_or(true);
    let wait = d.opt_bool("wait")?;
    if wait.is_some() && !server {
        return Err("'wait' option is incompatible with socket in client connect mode".into());
    }
    let wait = wait.unwrap_or(false);
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
        // Extensions (many viewers), in bytes: see `SocketSpec::clients`.
        clients: d.opt_u64("clients")?.map(|c| u32::try_from(c).unwrap_or(u32::MAX)).unwrap_or(1),
        history: d.opt_u64("history")?.unwrap_or(0),
        queue: d.opt_u64("queue")?,
        backlog: d.opt_u64("backlog")?,
        tls: match d.opt_str("tls-creds")? {
            Some(creds) => Some(chardev::options::TlsSpec {
                creds,
                authz: d.opt_str("tls-authz")?,
                // An extension, as on the command line.
                hostname: d.opt_str("tls-hostname")?,
            }),
            None => None,
        },
    };
    if spec.reconnect_ms > 0 && server {
        return Err("'reconnect' option is incompatible with socket in server listen mode".into());
    }
    if spec.tls.is_none() && d.map.contains_key("tls-authz") {
        return Err("'tls_authz' option requires 'tls_creds' option".into());
    }
    if spec.tls.is_none() && d.map.contains_key("tls-hostname") {
        return Err("'tls-hostname' needs 'tls-creds' (TLS credentials)".into());
    }
    spec.check_tls().map_err(|e| e.to_string())?;
    Ok(BackendSpec::Socket(spec))
}

/// `pty`: `path`, and our extensions `backlog`, `backlog-full` and `history` (which
/// replaces the backlog, so the two cannot go together).
fn pty_spec(d: &mut Data) -> Result<BackendSpec, String> {
    let history = opt_size(d, "history", 0)?;
    if history > 0 {
        let backlog_given = d.map.contains_key("backlog");
        if backlog_given || d.map.get("backlog-full") == Some(&Value::from("wait")) {
            let key = if backlog_given { "backlog" } else { "backlog-full" };
            return Err(format!(
                "'{key}' cannot be combined with 'history': every terminal gets the last \
                 'history' bytes of output instead of a backlog"
            ));
        }
    }
    Ok(BackendSpec::Pty {
        path: d.opt_str("path")?.map(PathBuf::from),
        backlog: d
            .opt_u64("backlog")?
            .map_or(Ok(chardev::options::DEFAULT_PTY_BACKLOG), usize::try_from)
            .map_err(|_| "backlog is too large")?,
        when_full: match d.opt_str("backlog-full")?.as_deref() {
            None | Some("drop") => BacklogFull::DropOldest,
            Some("wait") => BacklogFull::Wait,
            Some(other) => {
                return Err(format!(
                    "Parameter '{}.backlog-full' does not accept value '{other}' \
                     (expected 'drop' or 'wait')",
                    d.prefix
                ));
            }
        },
        history,
    })
}

/// QEMU 10's `ChardevHub`: `chardevs`, a list of ids (required; an empty list is refused
/// by the spec's check with QEMU's "hub: 'chardevs' list is not defined"), and our
/// `history` and `queue` extensions (bytes).
fn hub_spec(d: &mut Data) -> Result<BackendSpec, String> {
    let chardevs = match d.map.remove("chardevs") {
        None => return Err(format!("Parameter '{}.chardevs' is missing", d.prefix)),
        Some(Value::Array(ids)) => ids
            .iter()
            .map(|id| id.as_str().map(str::to_string).ok_or_else(|| d.wrong("chardevs", "string")))
            .collect::<Result<Vec<String>, String>>()?,
        Some(_) => return Err(d.wrong("chardevs", "array")),
    };
    Ok(BackendSpec::Hub(HubSpec {
        chardevs,
        history: opt_size(d, "history", 0)?,
        queue: opt_size(d, "queue", chardev::options::DEFAULT_HUB_QUEUE)?,
    }))
}

/// `syslog` (an extension: QEMU has no such backend, so QAPI has no shape for it): the
/// command line's keys as members, all optional strings: `path`, `facility`, `format`, `tag`.
fn syslog_spec(d: &mut Data) -> Result<BackendSpec, String> {
    let prefix = d.prefix.clone();
    let not_accepted = |name: &str, value: &str, expected: &str| -> String {
        format!("Parameter '{prefix}.{name}' does not accept value '{value}' (expected {expected})")
    };
    let facility = match d.opt_str("facility")? {
        None => SyslogFacility::default(),
        Some(name) => SyslogFacility::from_name(&name).ok_or_else(|| {
            not_accepted("facility", &name, "a facility of syslog(3): user, daemon, local0, ...")
        })?,
    };
    let format = match d.opt_str("format")?.as_deref() {
        None | Some("rfc3164") => SyslogFormat::Rfc3164,
        Some("rfc5424") => SyslogFormat::Rfc5424,
        Some(other) => return Err(not_accepted("format", other, "'rfc3164' or 'rfc5424'")),
    };
    Ok(BackendSpec::Syslog(SyslogSpec {
        path: d.opt_str("path")?.map(PathBuf::from),
        facility,
        format,
        tag: d.opt_str("tag")?,
    }))
}

/// An optional size member (`history`, `queue`), `default` when absent; the spec's check
/// refuses one above the cap with the command line's text.
/// QAPI's `logfile`, `logappend`, `logtimestamp`, and our `logmaxsize` and `logbackups`
/// (numbers; both need `logfile`, and `logbackups` needs `logmaxsize`). The limits are
/// checked with the whole spec ([`LogSpec::check`]).
fn log_spec(d: &mut Data) -> Result<Option<LogSpec>, String> {
    let path = d.opt_str("logfile")?;
    let append = d.opt_bool("logappend")?.unwrap_or(false);
    let timestamp = d.opt_bool("logtimestamp")?.unwrap_or(false);
    let max_size = d.opt_u64("logmaxsize")?;
    let backups = d.opt_u64("logbackups")?;
    let Some(path) = path else {
        if max_size.is_some() || backups.is_some() {
            let key = if max_size.is_some() { "logmaxsize" } else { "logbackups" };
            return Err(format!("chardev option '{key}' rotates the logfile: give 'logfile' too"));
        }
        return Ok(None);
    };
    let rotation = match (max_size, backups) {
        (Some(max_size), backups) => Some(LogRotation {
            max_size,
            backups: backups.map_or(Ok(DEFAULT_LOG_BACKUPS), |b| {
                u32::try_from(b).map_err(|_| {
                    format!("chardev option 'logbackups={b}': must be at most {LOG_BACKUPS_MAX}")
                })
            })?,
        }),
        (None, Some(_)) => {
            return Err("chardev option 'logbackups' counts rotated logfiles: give 'logmaxsize' \
                        too"
            .into())
        }
        (None, None) => None,
    };
    let mut log = LogSpec::new(PathBuf::from(path));
    log.append = append;
    log.timestamp = timestamp;
    log.rotation = rotation;
    Ok(Some(log))
}

fn opt_size(d: &mut Data, name: &str, default: usize) -> Result<usize, String> {
    d.opt_u64(name)?
        .map_or(Ok(default), |v| usize::try_from(v).map_err(|_| format!("{name} is too large")))
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
        prefix: format!("{what}.data"),
    };
    let host = a.str("host")?;
    let port = a.str("port")?;
    a.opt_bool("ipv4")?;
    a.opt_bool("ipv6")?;
    a.done()?;
    Ok((host, port))
}

/// The `data` members of a backend, checked like [`Args`](crate::Args) (with QAPI's dotted
/// names).
struct Data {
    map: Map<String, Value>,
    prefix: String,
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

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
        assert_eq!(err, "Parameter 'backend.data.bogus' is unexpected");
        let spec =
            backend_spec("p", &json!({"type":"pty","data":{"backlog-full":"wait"}})).unwrap();
        assert_eq!(spec, ChardevSpec::parse("pty,id=p,backlog-full=wait").unwrap());
        let err =
            backend_spec("p", &json!({"type":"pty","data":{"backlog-full":"block"}})).unwrap_err();
        assert_eq!(
            err,
            "Parameter 'backend.data.backlog-full' does not accept value 'block' \
             (expected 'drop' or 'wait')"
        );
    }

    #[test]
    fn syslog_json_maps_onto_the_command_line_spec() {
        let data =
            json!({"path":"/run/log.sock","facility":"local2","format":"rfc5424","tag":"vm"});
        let spec = backend_spec("s", &json!({"type":"syslog","data":data})).unwrap();
        let line = "syslog,id=s,path=/run/log.sock,facility=local2,format=rfc5424,tag=vm";
        assert_eq!(spec, ChardevSpec::parse(line).unwrap());
        let spec = backend_spec("s", &json!({"type":"syslog","data":{}})).unwrap();
        assert_eq!(spec, ChardevSpec::parse("syslog,id=s").unwrap());
        let err =
            backend_spec("s", &json!({"type":"syslog","data":{"facility":"kern"}})).unwrap_err();
        assert!(err.starts_with("Parameter 'backend.data.facility' does not accept value 'kern'"));
        let err = backend_spec("s", &json!({"type":"syslog","data":{"tag":""}})).unwrap_err();
        assert_eq!(err, "chardev option 'tag': must not be empty");
    }

    #[test]
    fn qemu_7_2_refusals() {
        let err = backend_spec("r", &json!({"type":"ringbuf"})).unwrap_err();
        assert_eq!(err, "Parameter 'backend.data' is missing");
        let fd = json!({"type":"fd","data":{"str":"x"}});
        let err = backend_spec(
            "s",
            &json!({"type":"socket","data":{"addr":fd,"server":false,"wait":false}}),
        )
        .unwrap_err();
        assert_eq!(err, "'wait' option is incompatible with socket in client connect mode");
    }
}

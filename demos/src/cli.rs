//! `qemu-system-x86_64`'s command line, the part a serial console needs, parsed with the same
//! meanings and defaults. Every error names the option and is found before anything opens.

use std::net::{IpAddr, ToSocketAddrs};
use std::path::PathBuf;

use chardev::compat::{parse_compat, Compat};
use chardev::options::{self, split_options, BackendSpec, ChardevSpec, SocketAddrSpec};

/// A monitor's protocol (`-mon mode=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MonitorMode {
    /// The human monitor (HMP), `mode=readline`.
    Readline,
    /// QMP, `mode=control`.
    Control {
        /// `pretty=on`: indented JSON.
        pretty: bool,
    },
}

/// A monitor on a chardev.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MonitorConfig {
    /// The chardev it runs on.
    pub chardev: String,
    /// HMP or QMP.
    pub mode: MonitorMode,
}

/// A file loaded into guest RAM (`-device loader,file=PATH,addr=ADDR,force-raw=on`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Loader {
    /// The file.
    pub file: PathBuf,
    /// Where in guest RAM it goes.
    pub addr: u64,
}

/// An fd the process inherited, for an fd set (`-add-fd fd=N,set=M[,opaque=S]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddFd {
    /// The inherited fd's number.
    pub fd: i32,
    /// The set it goes into.
    pub set: i64,
    /// Its `opaque` text in `query-fdsets`.
    pub opaque: Option<String>,
}

/// Everything the command line asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Chardevs to create, in order: `-chardev` ones and those the legacy options make.
    pub chardevs: Vec<ChardevSpec>,
    /// The chardev of the guest's UART (`serial0`), if any.
    pub serial: Option<String>,
    /// Monitors, in order.
    pub monitors: Vec<MonitorConfig>,
    /// Guest RAM in bytes (`-m`, 128 MiB by default).
    pub ram_size: u64,
    /// `-name`.
    pub name: Option<String>,
    /// `-S`: do not start the guest until `cont`.
    pub start_stopped: bool,
    /// `-machine` type.
    pub machine: String,
    /// `-device loader` entries.
    pub loaders: Vec<Loader>,
    /// `-incoming URI`.
    pub incoming: Option<String>,
    /// `-add-fd` entries, in order.
    pub add_fds: Vec<AddFd>,
    /// `-object` entries (TLS credentials, authz lists), in order: added before chardevs.
    pub objects: Vec<chardev::objects::Object>,
    /// One-line notes and warnings for stderr, about what listens where (see
    /// [`confine_listeners`]); printed before anything opens.
    pub notices: Vec<String>,
}

/// What the program should do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Run the machine.
    Run(Box<Config>),
    /// Print the help and exit.
    Help,
    /// Print the version and exit.
    Version,
}

/// A command-line error: the message names the option.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CliError(pub String);

impl std::fmt::Display for CliError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for CliError {}

/// The options that take an argument.
const WITH_ARGUMENT: &[&str] = &[
    "chardev",
    "object",
    "serial",
    "mon",
    "qmp",
    "qmp-pretty",
    "monitor",
    "display",
    "machine",
    "M",
    "m",
    "name",
    "device",
    "incoming",
    "echr",
    "add-fd",
];

/// The options that stand alone.
const FLAGS: &[&str] = &["nographic", "nodefaults", "S", "h", "help", "version"];

/// QEMU's defaults: 128 MiB of RAM.
pub const DEFAULT_RAM: u64 = 128 << 20;

/// Usage text for `-h`.
pub fn usage(program: &str) -> String {
    format!(
        "usage: {program} [options]\n\
         \n\
         A tiny emulated machine (a 16550 UART and a shell) on QEMU's character devices.\n\
         With no options it behaves like qemu-system-x86_64 -nographic: the guest console\n\
         and the monitor share the terminal (Ctrl-A c switches, Ctrl-A x quits, Ctrl-A h helps).\n\
         \n\
         -object TYPE,id=ID[,props]  TLS credentials and authz for chardevs: tls-creds-x509\n\
         \x20                 (dir=,endpoint=server|client,verify-peer=), authz-simple\n\
         \x20                 (identity=DN), authz-list (JSON: -object '{{\"qom-type\": ...}}')\n\
         -chardev BACKEND,id=ID[,opts]  a character device (null, file, pipe, ringbuf, stdio,\n\
         \x20                              socket, udp, pty, serial; mux=on, logfile=...)\n\
         -serial DEV       the guest's serial port: stdio, pty, null, none, file:PATH, pipe:PATH,\n\
         \x20                 unix:PATH[,server=on,wait=off], tcp:[HOST]:PORT[,server=on,...],\n\
         \x20                 telnet:..., udp:..., chardev:ID, mon:DEV\n\
         -monitor DEV      a human monitor on DEV (same forms as -serial)\n\
         -qmp DEV          a QMP monitor on DEV; -qmp-pretty DEV for indented JSON\n\
         -mon chardev=ID[,mode=readline|control][,pretty=on]\n\
         -nographic        serial and monitor on the terminal (the default here)\n\
         -nodefaults       no default serial port or monitor\n\
         -display none     no display (there is none anyway)\n\
         -machine TYPE     accepted for compatibility: none, pc, q35\n\
         -m SIZE           guest RAM (default 128M)\n\
         -name NAME        the machine's name\n\
         -S                start stopped; 'cont' starts the guest\n\
         -device loader,file=PATH,addr=ADDR,force-raw=on  load a file into guest RAM\n\
         -incoming URI     wait for an incoming migration\n\
         -add-fd fd=N,set=M[,opaque=S]  put inherited fd N into fd set M (/dev/fdset/M)\n\
         -h, --help        this help\n\
         --version         the version\n\
         \n\
         A TCP server with no host (tcp::4444,server=on) listens on 127.0.0.1 only, where QEMU\n\
         listens on every interface; name the address to be reachable from the network\n\
         (tcp:0.0.0.0:4444,server=on or host=0.0.0.0), and mind that a monitor has no password.\n"
    )
}

/// Parses the arguments after the program name.
pub fn parse(args: &[String]) -> Result<Command, CliError> {
    let mut raw = Raw::default();
    let mut i = 0;
    while i < args.len() {
        let arg = &args[i];
        let Some(name) = arg.strip_prefix("--").or_else(|| arg.strip_prefix('-')) else {
            return Err(CliError(format!("{arg}: invalid option (options start with '-')")));
        };
        if FLAGS.contains(&name) {
            match name {
                "h" | "help" => return Ok(Command::Help),
                "version" => return Ok(Command::Version),
                // Accepted for QEMU's command lines; with no graphics here its defaults
                // always apply.
                "nographic" => {}
                "nodefaults" => raw.nodefaults = true,
                "S" => raw.start_stopped = true,
                _ => {}
            }
            i += 1;
            continue;
        }
        if !WITH_ARGUMENT.contains(&name) {
            return Err(CliError(format!("-{name}: invalid option")));
        }
        let value = args
            .get(i + 1)
            .ok_or_else(|| CliError(format!("-{name}: requires an argument")))?
            .clone();
        raw.options.push((name.to_string(), value));
        i += 2;
    }
    raw.into_config().map(|c| Command::Run(Box::new(c)))
}

#[derive(Default)]
struct Raw {
    options: Vec<(String, String)>,
    nodefaults: bool,
    start_stopped: bool,
}

fn err(option: &str, value: &str, e: impl std::fmt::Display) -> CliError {
    CliError(format!("-{option} {value}: {e}"))
}

impl Raw {
    fn into_config(self) -> Result<Config, CliError> {
        let mut config = Config {
            chardevs: Vec::new(),
            serial: None,
            monitors: Vec::new(),
            ram_size: DEFAULT_RAM,
            name: None,
            start_stopped: self.start_stopped,
            machine: "pc".into(),
            loaders: Vec::new(),
            incoming: None,
            add_fds: Vec::new(),
            objects: Vec::new(),
            notices: Vec::new(),
        };
        let mut default_serial = !self.nodefaults;
        let mut default_monitor = !self.nodefaults;
        let mut serial_seen = false;
        let mut compat_monitors = 0;
        for (name, value) in &self.options {
            let fail = |e: &dyn std::fmt::Display| err(name, value, e);
            match name.as_str() {
                "chardev" => config.chardevs.push(ChardevSpec::parse(value).map_err(|e| fail(&e))?),
                "serial" => {
                    default_serial = false;
                    // QEMU (vl.c): `-serial mon:DEV` is the default monitor too.
                    if value.starts_with("mon:") {
                        default_monitor = false;
                    }
                    if serial_seen {
                        return Err(fail(&"this machine has one serial port"));
                    }
                    serial_seen = true;
                    let (compat, monitor) = parse_compat(value, "serial0").map_err(|e| fail(&e))?;
                    match compat {
                        Compat::None => {}
                        Compat::Existing(id) => config.serial = Some(id),
                        Compat::New(spec) => {
                            config.serial = Some(spec.id.clone());
                            if monitor {
                                config.monitors.push(MonitorConfig {
                                    chardev: spec.id.clone(),
                                    mode: MonitorMode::Readline,
                                });
                            }
                            config.chardevs.push(spec);
                        }
                    }
                }
                "monitor" | "qmp" | "qmp-pretty" => {
                    default_monitor = false;
                    let (label, mode) = match name.as_str() {
                        "monitor" => {
                            compat_monitors += 1;
                            (
                                format!("compat_monitor{}", compat_monitors - 1),
                                MonitorMode::Readline,
                            )
                        }
                        _ => {
                            // QEMU labels -qmp chardevs compat_monitorN too.
                            compat_monitors += 1;
                            (
                                format!("compat_monitor{}", compat_monitors - 1),
                                MonitorMode::Control { pretty: name == "qmp-pretty" },
                            )
                        }
                    };
                    let (compat, _) = parse_compat(value, &label).map_err(|e| fail(&e))?;
                    match compat {
                        Compat::None => {}
                        Compat::Existing(id) => {
                            config.monitors.push(MonitorConfig { chardev: id, mode })
                        }
                        Compat::New(spec) => {
                            config.monitors.push(MonitorConfig { chardev: spec.id.clone(), mode });
                            config.chardevs.push(spec);
                        }
                    }
                }
                "mon" => {
                    default_monitor = false;
                    config.monitors.push(parse_mon(value).map_err(|e| fail(&e))?);
                }
                "display" => {
                    let kind = value.split(',').next().unwrap_or_default();
                    if !matches!(kind, "none" | "curses" | "default") {
                        return Err(fail(&format!(
                            "display '{kind}' is not available (no graphics here)"
                        )));
                    }
                }
                "machine" | "M" => {
                    let opts = split_options(value, "type").map_err(|e| fail(&e))?;
                    for (k, v) in opts {
                        match k.as_str() {
                            "type" if matches!(v.as_str(), "none" | "pc" | "q35" | "microvm") => {
                                config.machine = v
                            }
                            "type" => {
                                return Err(fail(&format!(
                                    "unsupported machine type '{v}' (none, pc, q35)"
                                )))
                            }
                            "accel" => {}
                            other => return Err(fail(&format!("Invalid parameter '{other}'"))),
                        }
                    }
                }
                "m" => config.ram_size = parse_ram(value).map_err(|e| fail(&e))?,
                "name" => {
                    config.name = Some(value.split(',').next().unwrap_or_default().to_string())
                }
                "device" => config.loaders.push(parse_loader(value).map_err(|e| fail(&e))?),
                "incoming" => config.incoming = Some(value.clone()),
                "object" => {
                    config.objects.push(chardev_qmp::parse_object_arg(value).map_err(|e| fail(&e))?)
                }
                "add-fd" => config.add_fds.push(parse_add_fd(value).map_err(|e| fail(&e))?),
                "echr" => {
                    return Err(fail(
                        &"a different escape character is not supported; Ctrl-A it is",
                    ))
                }
                _ => return Err(fail(&"invalid option")),
            }
        }
        // QEMU's -nographic defaults (vl.c); here there are no graphics, so they apply with
        // or without -nographic.
        if default_serial && default_monitor {
            let (compat, _) =
                parse_compat("mon:stdio", "serial0").map_err(|e| err("serial", "mon:stdio", e))?;
            if let Compat::New(spec) = compat {
                config.serial = Some(spec.id.clone());
                config
                    .monitors
                    .push(MonitorConfig { chardev: spec.id.clone(), mode: MonitorMode::Readline });
                config.chardevs.push(spec);
            }
        } else if default_serial {
            config.chardevs.push(stdio("serial0"));
            config.serial = Some("serial0".into());
        } else if default_monitor {
            config.chardevs.push(stdio("compat_monitor0"));
            config.monitors.push(MonitorConfig {
                chardev: "compat_monitor0".into(),
                mode: MonitorMode::Readline,
            });
        }
        config.check()?;
        confine_listeners(&mut config, resolve);
        Ok(config)
    }
}

fn stdio(id: &str) -> ChardevSpec {
    ChardevSpec {
        id: id.into(),
        backend: BackendSpec::Stdio { signal: true },
        mux: false,
        log: None,
        overflow: Default::default(),
    }
}

/// `-mon chardev=ID[,mode=readline|control][,pretty=on]`.
fn parse_mon(value: &str) -> Result<MonitorConfig, String> {
    let mut chardev = None;
    let mut mode = "readline".to_string();
    let mut pretty = false;
    for (k, v) in split_options(value, "chardev").map_err(|e| e.to_string())? {
        match k.as_str() {
            "chardev" => chardev = Some(v),
            "mode" => mode = v,
            "pretty" => pretty = options::parse_bool("pretty", &v).map_err(|e| e.to_string())?,
            "id" | "default" => {}
            other => return Err(format!("Invalid parameter '{other}'")),
        }
    }
    let chardev = chardev.ok_or("Parameter 'chardev' is missing")?;
    let mode = match mode.as_str() {
        "readline" => MonitorMode::Readline,
        "control" => MonitorMode::Control { pretty },
        other => return Err(format!("unknown monitor mode '{other}' (readline or control)")),
    };
    Ok(MonitorConfig { chardev, mode })
}

/// `-m 512` (MiB), `-m 1G`, `-m size=256M`.
fn parse_ram(value: &str) -> Result<u64, String> {
    let size = split_options(value, "size")
        .map_err(|e| e.to_string())?
        .into_iter()
        .find(|(k, _)| k == "size")
        .map(|(_, v)| v)
        .ok_or("Parameter 'size' is missing")?;
    let bytes = if size.bytes().all(|b| b.is_ascii_digit()) {
        size.parse::<u64>().map_err(|_| format!("invalid RAM size '{size}'"))?.checked_mul(1 << 20)
    } else {
        options::parse_size("m", &size).ok()
    };
    match bytes {
        Some(b) if (1 << 20..=64 << 30).contains(&b) => Ok(b),
        Some(_) => Err(format!("RAM size '{size}' must be between 1M and 64G")),
        None => Err(format!("invalid RAM size '{size}'")),
    }
}

/// `-device loader,file=PATH,addr=ADDR[,force-raw=on]`.
fn parse_loader(value: &str) -> Result<Loader, String> {
    let opts = split_options(value, "driver").map_err(|e| e.to_string())?;
    let mut driver = None;
    let (mut file, mut addr) = (None, None);
    for (k, v) in opts {
        match k.as_str() {
            "driver" => driver = Some(v),
            "file" => file = Some(PathBuf::from(v)),
            "addr" => addr = Some(parse_number(&v).ok_or(format!("addr '{v}' is not a number"))?),
            "force-raw" => {
                options::parse_bool("force-raw", &v).map_err(|e| e.to_string())?;
            }
            "id" => {}
            other => return Err(format!("Property 'loader.{other}' not found")),
        }
    }
    match driver.as_deref() {
        Some("loader") => {}
        Some(other) => {
            return Err(format!("'{other}' is not a valid device model name (only 'loader')"))
        }
        None => return Err("no device given".into()),
    }
    Ok(Loader { file: file.ok_or("loader: 'file' is missing")?, addr: addr.unwrap_or(0) })
}

/// Decimal or `0x` hexadecimal.
pub fn parse_number(s: &str) -> Option<u64> {
    match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => s.parse().ok(),
    }
}

impl Config {
    /// Cross-option checks: ids unique, references resolve, one stdio.
    fn check(&self) -> Result<(), CliError> {
        let mut ids = std::collections::BTreeSet::new();
        for spec in &self.chardevs {
            if !ids.insert(spec.id.as_str()) {
                return Err(CliError(format!(
                    "-chardev {}: Duplicate ID '{}' for chardev",
                    spec.id, spec.id
                )));
            }
        }
        let known = |id: &str| self.chardevs.iter().any(|c| c.id == id);
        if let Some(serial) = &self.serial {
            if !known(serial) {
                return Err(CliError(format!(
                    "-serial chardev:{serial}: chardev '{serial}' not found"
                )));
            }
        }
        for mon in &self.monitors {
            if !known(&mon.chardev) {
                return Err(CliError(format!(
                    "-mon chardev={}: chardev '{}' not found",
                    mon.chardev, mon.chardev
                )));
            }
        }
        let stdios =
            self.chardevs.iter().filter(|c| matches!(c.backend, BackendSpec::Stdio { .. })).count();
        if stdios > 1 {
            return Err(CliError("cannot use stdio by multiple character devices".into()));
        }
        Ok(())
    }
}

/// What a TCP server's address exposes to the network.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exposure {
    /// Loopback only, as the user asked: nothing to say. A host name that does not resolve
    /// ends up here too; creating the chardev then fails with the resolver's error.
    Loopback,
    /// No host, which QEMU takes as every interface: the demo listens on this loopback
    /// address instead, and says so.
    Confined(&'static str),
    /// An address that other machines can reach (`0.0.0.0`, `::`, a LAN address, a name that
    /// resolves to one), named by the user: it stays, with a warning.
    Network,
}

/// Decides what a server on `host` (as `host=` or a legacy `tcp:HOST:PORT` gives it, brackets
/// allowed) exposes. `ipv4`/`ipv6` are the socket's family options: with IPv6 only, no host
/// becomes `::1` rather than `127.0.0.1`. `resolve` maps a host name to its addresses (the
/// system resolver in the demo, a table in tests); literal addresses are not resolved.
pub fn exposure(
    host: &str,
    ipv4: Option<bool>,
    ipv6: Option<bool>,
    resolve: impl FnOnce(&str) -> Vec<IpAddr>,
) -> Exposure {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    if bare.is_empty() {
        let v6_only = ipv4 == Some(false) || (ipv6 == Some(true) && ipv4 != Some(true));
        return Exposure::Confined(if v6_only { "::1" } else { "127.0.0.1" });
    }
    let addrs = match bare.parse::<IpAddr>() {
        Ok(ip) => vec![ip],
        Err(_) => resolve(bare),
    };
    // `::ffff:127.0.0.1` is loopback too.
    if addrs.iter().all(|ip| ip.to_canonical().is_loopback()) {
        Exposure::Loopback
    } else {
        Exposure::Network
    }
}

/// The system resolver, for [`exposure`]: every address `host` has, none if it has none.
pub fn resolve(host: &str) -> Vec<IpAddr> {
    (host, 0).to_socket_addrs().map(|addrs| addrs.map(|a| a.ip()).collect()).unwrap_or_default()
}

/// The demo's listening policy, where it departs from QEMU on purpose: a monitor has no
/// password, and QEMU's `tcp::4444,server=on` (no host) listens on every interface. Here
/// every TCP server the command line makes (`-chardev`, `-serial`, `-monitor`, `-qmp`, and
/// `-incoming tcp:`) with no host listens on loopback only, with a note saying so and how to
/// ask for more; one on an address that other machines can reach stays as asked, with a
/// warning. Adds the lines to `config.notices`. The library keeps QEMU's meaning; this is
/// the embedder's choice.
pub fn confine_listeners(config: &mut Config, resolve: impl Fn(&str) -> Vec<IpAddr>) {
    let mut notices = Vec::new();
    for spec in &mut config.chardevs {
        let BackendSpec::Socket(socket) = &mut spec.backend else { continue };
        if !socket.server {
            continue;
        }
        let SocketAddrSpec::Inet { host, port, ipv4, ipv6, .. } = &mut socket.addr else {
            continue;
        };
        let (what, risk) = role(&config.monitors, config.serial.as_deref(), &spec.id);
        match exposure(host, *ipv4, *ipv6, &resolve) {
            Exposure::Loopback => {}
            Exposure::Confined(local) => {
                notices.push(confined_note(&what, local, port));
                *host = local.into();
            }
            Exposure::Network => notices.push(network_warning(&what, host, port, risk)),
        }
    }
    if let Some(addr) = config.incoming.as_deref().and_then(|uri| uri.strip_prefix("tcp:")) {
        if let Some((host, port)) = split_host_port(addr) {
            let what = "the incoming migration";
            let risk = "anyone who connects first replaces the machine's memory";
            match exposure(&host, None, None, &resolve) {
                Exposure::Loopback => {}
                Exposure::Confined(local) => {
                    notices.push(confined_note(what, local, &port));
                    config.incoming = Some(format!("tcp:{}", join_host_port(local, &port)));
                }
                Exposure::Network => notices.push(network_warning(what, &host, &port, risk)),
            }
        }
    }
    config.notices.extend(notices);
}

/// Who uses chardev `id`, for the notes: a name and what a stranger on it could do.
fn role(monitors: &[MonitorConfig], serial: Option<&str>, id: &str) -> (String, &'static str) {
    match monitors.iter().find(|m| m.chardev == id).map(|m| m.mode) {
        Some(MonitorMode::Readline) => (
            format!("the monitor on chardev '{id}'"),
            "anyone who connects controls the machine, without a password",
        ),
        Some(MonitorMode::Control { .. }) => (
            format!("the QMP monitor on chardev '{id}'"),
            "anyone who connects controls the machine, without a password",
        ),
        None if serial == Some(id) => (
            format!("the serial port on chardev '{id}'"),
            "anyone who connects gets the guest's console",
        ),
        None => (format!("chardev '{id}'"), "anyone who connects can talk to it"),
    }
}

fn confined_note(what: &str, local: &str, port: &str) -> String {
    let any = if local.contains(':') { "::" } else { "0.0.0.0" };
    format!(
        "note: {what} listens on {} only (QEMU would listen on every interface); \
         to ask for that, name the address: host={any}, or tcp:{}",
        join_host_port(local, port),
        join_host_port(any, port)
    )
}

fn network_warning(what: &str, host: &str, port: &str, risk: &str) -> String {
    format!(
        "warning: {what} listens on {}, reachable from the network: {risk}",
        join_host_port(host.trim_start_matches('[').trim_end_matches(']'), port)
    )
}

/// `HOST:PORT`, with an IPv6 address in brackets.
fn join_host_port(host: &str, port: &str) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// `HOST:PORT` or `[V6]:PORT` (host possibly empty) into its parts.
fn split_host_port(s: &str) -> Option<(String, String)> {
    let (host, port) = match s.strip_prefix('[') {
        Some(rest) => rest.split_once("]:")?,
        None => s.rsplit_once(':')?,
    };
    Some((host.to_string(), port.to_string()))
}

/// `-add-fd fd=N,set=M[,opaque=S]`, checked as QEMU's `parse_add_fd` checks it.
fn parse_add_fd(value: &str) -> Result<AddFd, String> {
    let mut fd = None;
    let mut set = None;
    let mut opaque = None;
    for (k, v) in split_options(value, "fd").map_err(|e| e.to_string())? {
        match k.as_str() {
            "fd" => fd = v.parse::<i32>().ok().filter(|n| *n >= 0).or(Some(-1)),
            "set" => set = v.parse::<i64>().ok().filter(|n| *n >= 0).or(Some(-1)),
            "opaque" => opaque = Some(v),
            other => return Err(format!("Invalid parameter '{other}'")),
        }
    }
    let fd = fd.filter(|n| *n >= 0).ok_or("fd option is required and must be non-negative")?;
    if fd <= 2 {
        return Err("fd cannot be a standard I/O stream".into());
    }
    let set = set.filter(|n| *n >= 0).ok_or("set option is required and must be non-negative")?;
    Ok(AddFd { fd, set, opaque })
}

//! `qemu-system-x86_64`'s command line, the part a serial console needs, parsed with the same
//! meanings and defaults. Every error names the option and is found before anything opens.

use std::path::PathBuf;

use chardev::compat::{parse_compat, Compat};
use chardev::options::{self, split_options, BackendSpec, ChardevSpec};

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
         -h, --help        this help\n\
         --version         the version\n"
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
                "nographic" => raw.nographic = true,
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
    nographic: bool,
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
        };
        let mut default_serial = !self.nodefaults;
        let mut default_monitor = !self.nodefaults;
        let mut serial_seen = false;
        let mut compat_monitors = 0;
        let mut qmp_monitors = 0;
        for (name, value) in &self.options {
            let fail = |e: &dyn std::fmt::Display| err(name, value, e);
            match name.as_str() {
                "chardev" => config.chardevs.push(ChardevSpec::parse(value).map_err(|e| fail(&e))?),
                "serial" => {
                    default_serial = false;
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
                            qmp_monitors += 1;
                            // QEMU labels -qmp chardevs compat_monitorN too.
                            compat_monitors += 1;
                            let _ = qmp_monitors;
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
                "echr" => {
                    return Err(fail(
                        &"a different escape character is not supported; Ctrl-A it is",
                    ))
                }
                _ => return Err(fail(&"invalid option")),
            }
        }
        // QEMU's -nographic defaults (vl.c); here there are no graphics, so always so.
        let _ = self.nographic;
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
        Ok(config)
    }
}

fn stdio(id: &str) -> ChardevSpec {
    ChardevSpec {
        id: id.into(),
        backend: BackendSpec::Stdio { signal: true },
        mux: false,
        log: None,
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

//! QEMU's legacy chardev strings, as `-serial`, `-monitor` and `-parallel` take them
//! (QEMU's `qemu_chr_parse_compat`): `stdio`, `pty`, `file:PATH`, `tcp:HOST:PORT,server=on`,
//! `unix:PATH,server=on,wait=off`, `mon:stdio`, `chardev:ID`, ... Each becomes the same
//! [`ChardevSpec`] that `-chardev` would give.
//!
//! ```
//! use chardev::compat::{parse_compat, Compat};
//!
//! let (c, monitor) = parse_compat("mon:tcp:127.0.0.1:4444,server=on,wait=off", "serial0")?;
//! let Compat::New(spec) = c else { panic!() };
//! assert!(spec.mux && monitor);
//! # Ok::<(), chardev::Error>(())
//! ```

use std::path::PathBuf;

use crate::error::{Error, Result};
use crate::options::{BackendSpec, BacklogFull, ChardevSpec, DEFAULT_PTY_BACKLOG};

/// What a legacy string asks for.
// Made once per command-line option and matched at once: boxing the spec would only make
// every caller's match noisier.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Compat {
    /// A new chardev.
    New(ChardevSpec),
    /// `chardev:ID`: a chardev made with `-chardev`.
    Existing(String),
    /// `none`: no device at all.
    None,
}

/// Parses a legacy string into a chardev named `id`; the `bool` is true for `mon:`, which
/// puts a human monitor on a mux with the device (as QEMU's `-serial mon:stdio`).
pub fn parse_compat(s: &str, id: &str) -> Result<(Compat, bool)> {
    if let Some(rest) = s.strip_prefix("mon:") {
        let (compat, _) = parse_compat(rest, id)?;
        let Compat::New(mut spec) = compat else {
            return Err(invalid(s));
        };
        spec.mux = true;
        // QEMU: `mon:stdio` keeps Ctrl-C for the guest; Ctrl-A x quits.
        if let BackendSpec::Stdio { signal } = &mut spec.backend {
            *signal = false;
        }
        return Ok((Compat::New(spec), true));
    }
    let simple = |backend| {
        Ok((
            Compat::New(ChardevSpec {
                id: id.into(),
                backend,
                mux: false,
                log: None,
                overflow: Default::default(),
            }),
            false,
        ))
    };
    match s {
        "none" => return Ok((Compat::None, false)),
        "null" => return simple(BackendSpec::Null),
        "stdio" => return simple(BackendSpec::Stdio { signal: true }),
        "pty" => {
            return simple(BackendSpec::Pty {
                path: None,
                backlog: DEFAULT_PTY_BACKLOG,
                when_full: BacklogFull::DropOldest,
                history: 0,
            })
        }
        // There is no graphical console here; QEMU's `vc` default becomes a sink.
        "vc" => return simple(BackendSpec::Null),
        _ => {}
    }
    if s.starts_with("vc:") {
        return simple(BackendSpec::Null);
    }
    if let Some(id_ref) = s.strip_prefix("chardev:") {
        return Ok((Compat::Existing(id_ref.to_string()), false));
    }
    let spec = |text: String| ChardevSpec::parse(&text).map(|spec| (Compat::New(spec), false));
    let id_part = format!("id={}", escape(id));
    if let Some(path) = s.strip_prefix("file:") {
        return spec(format!("file,{id_part},path={}", escape(path)));
    }
    if let Some(path) = s.strip_prefix("pipe:") {
        return spec(format!("pipe,{id_part},path={}", escape(path)));
    }
    if let Some(rest) = s.strip_prefix("unix:") {
        // `unix:PATH,opts`: the path ends at the first single comma.
        let (path, opts) = split_first_option(rest);
        return spec(format!("socket,{id_part},path={}{}", escape(&path), opts));
    }
    for (prefix, extra) in
        [("tcp:", ""), ("telnet:", ",telnet=on"), ("websocket:", ",websocket=on")]
    {
        if let Some(rest) = s.strip_prefix(prefix) {
            let (addr, opts) = split_first_option(rest);
            let (host, port) = split_host_port(&addr).ok_or_else(|| invalid(s))?;
            return spec(format!("socket,{id_part},host={host},port={port}{extra}{opts}"));
        }
    }
    if let Some(rest) = s.strip_prefix("udp:") {
        // udp:[host]:port[@[localaddr]:localport]
        let (remote, local) = rest.split_once('@').map_or((rest, None), |(r, l)| (r, Some(l)));
        let (host, port) = split_host_port(remote).ok_or_else(|| invalid(s))?;
        let mut text = format!("udp,{id_part},port={port}");
        if !host.is_empty() {
            text.push_str(&format!(",host={host}"));
        }
        if let Some(local) = local {
            let (laddr, lport) = split_host_port(local).ok_or_else(|| invalid(s))?;
            if !laddr.is_empty() {
                text.push_str(&format!(",localaddr={laddr}"));
            }
            text.push_str(&format!(",localport={lport}"));
        }
        return spec(text);
    }
    if s.starts_with("/dev/") {
        return simple(BackendSpec::Serial { path: PathBuf::from(s) });
    }
    Err(invalid(s))
}

fn invalid(s: &str) -> Error {
    Error::option("chardev", s, format!("'{s}' is not a valid char driver"))
}

/// Doubles commas so a value survives QEMU's option syntax.
fn escape(value: &str) -> String {
    value.replace(',', ",,")
}

/// Splits `first,rest` at the first comma that is not doubled; the rest keeps its comma.
fn split_first_option(s: &str) -> (String, String) {
    let bytes = s.as_bytes();
    let mut first = String::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b',' {
            if bytes.get(i + 1) == Some(&b',') {
                first.push(',');
                i += 2;
                continue;
            }
            return (first, s[i..].to_string());
        }
        let ch = s[i..].chars().next().unwrap_or_default();
        first.push(ch);
        i += ch.len_utf8().max(1);
    }
    (first, String::new())
}

/// `host:port`, `:port`, `[v6]:port`; the host may be empty.
fn split_host_port(s: &str) -> Option<(String, String)> {
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        let (h, p) = rest.split_once("]:")?;
        (h, p)
    } else {
        s.rsplit_once(':')?
    };
    (!port.is_empty()).then(|| (host.to_string(), port.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::options::{SocketAddrSpec, SocketSpec};

    fn new(s: &str) -> (ChardevSpec, bool) {
        match parse_compat(s, "serial0").unwrap() {
            (Compat::New(spec), mon) => (spec, mon),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn simple_words() {
        assert_eq!(new("stdio").0.backend, BackendSpec::Stdio { signal: true });
        assert_eq!(new("null").0.backend, BackendSpec::Null);
        assert_eq!(
            new("pty").0.backend,
            BackendSpec::Pty {
                path: None,
                backlog: DEFAULT_PTY_BACKLOG,
                when_full: BacklogFull::DropOldest,
                history: 0,
            }
        );
        assert_eq!(parse_compat("none", "s").unwrap().0, Compat::None);
        assert_eq!(parse_compat("chardev:c0", "s").unwrap().0, Compat::Existing("c0".into()));
        assert_eq!(new("/dev/ttyS0").0.backend, BackendSpec::Serial { path: "/dev/ttyS0".into() });
    }

    #[test]
    fn mon_stdio_is_a_muxed_stdio_without_signals() {
        let (spec, mon) = new("mon:stdio");
        assert!(mon && spec.mux);
        assert_eq!(spec.backend, BackendSpec::Stdio { signal: false });
        assert_eq!(spec.id, "serial0");
    }

    #[test]
    fn tcp_and_telnet_with_options() {
        let (spec, _) = new("tcp::4444,server=on,wait=off");
        let BackendSpec::Socket(SocketSpec {
            addr: SocketAddrSpec::Inet { host, port, .. },
            server,
            wait,
            telnet,
            ..
        }) = spec.backend
        else {
            panic!()
        };
        assert_eq!(
            (host.as_str(), port.as_str(), server, wait, telnet),
            ("", "4444", true, false, false)
        );
        let (spec, _) = new("telnet:127.0.0.1:5555,server,nowait");
        let BackendSpec::Socket(s) = spec.backend else { panic!() };
        assert!(s.telnet && s.server && !s.wait);
    }

    #[test]
    fn unix_paths_keep_doubled_commas() {
        let (spec, _) = new("unix:/tmp/a,,b.sock,server=on,wait=off");
        let BackendSpec::Socket(SocketSpec {
            addr: SocketAddrSpec::Unix { path, .. }, server, ..
        }) = spec.backend
        else {
            panic!()
        };
        assert_eq!(path, PathBuf::from("/tmp/a,b.sock"));
        assert!(server);
    }

    #[test]
    fn udp_with_local_address() {
        let (spec, _) = new("udp:127.0.0.1:5555@:6666");
        let BackendSpec::Udp(u) = spec.backend else { panic!() };
        assert_eq!(
            (u.host.as_str(), u.port.as_str(), u.localport.as_deref()),
            ("127.0.0.1", "5555", Some("6666"))
        );
    }

    #[test]
    fn unknown_strings_are_named() {
        let err = parse_compat("bogus:thing", "s").unwrap_err().to_string();
        assert!(err.contains("'bogus:thing' is not a valid char driver"), "{err}");
        let err = parse_compat("tcp:nohostport", "s").unwrap_err().to_string();
        assert!(err.contains("tcp:nohostport"), "{err}");
    }
}

//! `-chardev` option strings, as QEMU users write them, and what they parse into.

use std::path::PathBuf;

use chardev::error::Error;
use chardev::options::{
    parse_bool, parse_size, split_options, BackendSpec, BacklogFull, ChardevSpec, LogSpec,
    SocketAddrSpec, SocketSpec, UdpSpec, DEFAULT_PTY_BACKLOG,
};

// ---------------------------------------------------------------------------------------
// helpers

/// Parses a string that must be valid.
fn parse(s: &str) -> ChardevSpec {
    match ChardevSpec::parse(s) {
        Ok(spec) => spec,
        Err(e) => panic!("{s:?} was refused: {e}"),
    }
}

/// Parses a string that must be refused, and returns why.
fn refuse(s: &str) -> Error {
    match ChardevSpec::parse(s) {
        Ok(spec) => panic!("{s:?} was accepted as {spec:?}"),
        Err(e) => e,
    }
}

/// `s` must fail with `Error::Option` for `key=value`, and the message must say so and why.
fn assert_option_error(s: &str, key: &str, value: &str, reason: &str) {
    let e = refuse(s);
    match &e {
        Error::Option { key: k, value: v, .. } => {
            assert_eq!((k.as_str(), v.as_str()), (key, value), "{s:?}: {e}");
        }
        other => panic!("{s:?}: expected an option error for '{key}', got {other:?}"),
    }
    assert_message_names(&e, key, value, reason);
}

/// The error's Display names the key and value (as `'key=value'`, or `'key'` when the value is
/// empty) and contains `reason`.
fn assert_message_names(e: &Error, key: &str, value: &str, reason: &str) {
    let text = e.to_string();
    let named = if value.is_empty() { format!("'{key}'") } else { format!("'{key}={value}'") };
    assert!(text.contains(&named), "{text:?} does not name {named}");
    assert!(text.contains(reason), "{text:?} does not say {reason:?}");
}

/// `s` must fail because `backend` does not take `key`.
fn assert_unknown_option(s: &str, backend: &str, key: &str) {
    let e = refuse(s);
    assert!(
        matches!(&e, Error::UnknownOption { backend: b, key: k } if b == backend && k == key),
        "{s:?}: {e:?}"
    );
    let text = e.to_string();
    assert!(text.contains(&format!("'{key}'")) && text.contains(&format!("'{backend}'")), "{text}");
}

/// `s` must fail because `backend` needs `key`.
fn assert_missing_option(s: &str, backend: &str, key: &str) {
    let e = refuse(s);
    assert!(
        matches!(&e, Error::MissingOption { backend: b, key: k } if b == backend && k == key),
        "{s:?}: {e:?}"
    );
    assert!(e.to_string().contains(&format!("'{key}'")), "{e}");
}

/// The socket options of a string that must parse as a socket.
fn socket(s: &str) -> SocketSpec {
    match parse(s).backend {
        BackendSpec::Socket(sock) => sock,
        other => panic!("{s:?} is not a socket: {other:?}"),
    }
}

/// The udp options of a string that must parse as udp.
fn udp(s: &str) -> UdpSpec {
    match parse(s).backend {
        BackendSpec::Udp(udp) => udp,
        other => panic!("{s:?} is not udp: {other:?}"),
    }
}

fn owned(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

fn split(s: &str, implied: &str) -> Vec<(String, String)> {
    match split_options(s, implied) {
        Ok(pairs) => pairs,
        Err(e) => panic!("{s:?} did not split: {e}"),
    }
}

// ---------------------------------------------------------------------------------------
// the QEMU string shapes, one per backend

#[test]
fn file_with_append() {
    let spec = parse("file,id=f0,path=/tmp/x,append=on");
    assert_eq!(
        spec,
        ChardevSpec {
            id: "f0".into(),
            backend: BackendSpec::File { out: "/tmp/x".into(), input: None, append: true },
            mux: false,
            log: None,
            overflow: Default::default(),
        }
    );
    assert_eq!(spec.backend.kind(), "file");
}

#[test]
fn file_defaults_to_truncate_and_takes_an_input_path() {
    let spec = parse("file,id=f0,path=/tmp/out,input-path=/tmp/in");
    assert_eq!(
        spec.backend,
        BackendSpec::File { out: "/tmp/out".into(), input: Some("/tmp/in".into()), append: false }
    );
}

#[test]
fn backend_key_may_be_written_out() {
    assert_eq!(parse("backend=file,id=f0,path=/tmp/x"), parse("file,id=f0,path=/tmp/x"));
    // ... and need not come first.
    assert_eq!(parse("id=f0,path=/tmp/x,backend=file"), parse("file,id=f0,path=/tmp/x"));
}

#[test]
fn unix_server_without_wait() {
    let sock = socket("socket,id=s0,path=/tmp/s,server=on,wait=off");
    assert_eq!(
        sock,
        SocketSpec {
            addr: SocketAddrSpec::Unix { path: "/tmp/s".into(), abstract_: false, tight: true },
            server: true,
            wait: false,
            nodelay: false,
            telnet: false,
            tn3270: false,
            websocket: false,
            reconnect_ms: 0,
            mode: None,
            clients: 1,
            history: 0,
            queue: None,
            backlog: None,
            tls: None,
        }
    );
}

#[test]
fn unix_server_mode_is_octal_like_chmod() {
    let mode = |m: &str| socket(&format!("socket,id=s,path=/tmp/s,server=on,mode={m}")).mode;
    assert_eq!(mode("0600"), Some(0o600));
    assert_eq!(mode("600"), Some(0o600));
    assert_eq!(mode("0660"), Some(0o660));
    assert_eq!(mode("0777"), Some(0o777));
    assert_eq!(mode("0"), Some(0));
    assert_eq!(mode("000644"), Some(0o644));
    // With wait (the default) too, and through the legacy `unix:` form.
    assert_eq!(socket("socket,id=s,path=/tmp/s,server=on,wait=on,mode=600").mode, Some(0o600));
    let (spec, _) =
        chardev::compat::parse_compat("unix:/tmp/s,server=on,wait=off,mode=0660", "s").unwrap();
    let chardev::compat::Compat::New(ChardevSpec { backend: BackendSpec::Socket(s), .. }) = spec
    else {
        panic!("unix: is a socket")
    };
    assert_eq!(s.mode, Some(0o660));
    // Absent: None, bind's `0777 & ~umask` as in QEMU.
    assert_eq!(socket("socket,id=s,path=/tmp/s,server=on").mode, None);
}

#[test]
fn classic_short_form_server_nowait() {
    let sock = socket("socket,id=s,host=127.0.0.1,port=4444,server,nowait");
    assert!(sock.server);
    assert!(!sock.wait);
    assert_eq!(
        sock.addr,
        SocketAddrSpec::Inet {
            host: "127.0.0.1".into(),
            port: "4444".into(),
            to: None,
            ipv4: None,
            ipv6: None
        }
    );
}

#[test]
fn a_server_waits_by_default_and_a_client_never_does() {
    let server = socket("socket,id=s,path=/tmp/s,server=on");
    assert!(server.server && server.wait);
    let client = socket("socket,id=s,path=/tmp/s");
    assert!(!client.server && !client.wait);
}

#[test]
fn ringbuf_size_takes_size_suffixes() {
    let spec = parse("ringbuf,id=r,size=64K");
    assert_eq!(spec.backend, BackendSpec::Ringbuf { size: 65536 });
    assert_eq!(parse("ringbuf,id=r,size=1024").backend, BackendSpec::Ringbuf { size: 1024 });
    assert_eq!(parse("ringbuf,id=r,size=2M").backend, BackendSpec::Ringbuf { size: 2 << 20 });
}

#[test]
fn memory_is_ringbuf_with_the_default_size() {
    let spec = parse("memory,id=m");
    assert_eq!(spec.backend, BackendSpec::Ringbuf { size: 65536 });
    assert_eq!(spec.backend.kind(), "ringbuf");
    assert_eq!(parse("ringbuf,id=m").backend, BackendSpec::Ringbuf { size: 65536 });
}

#[test]
fn telnet_server_on_ipv6_loopback() {
    let sock = socket("socket,id=t,host=::1,port=0,server=on,telnet=on");
    assert!(sock.server && sock.telnet && sock.wait);
    assert!(!sock.tn3270 && !sock.websocket);
    assert_eq!(
        sock.addr,
        SocketAddrSpec::Inet {
            host: "::1".into(),
            port: "0".into(),
            to: None,
            ipv4: None,
            ipv6: None
        }
    );
}

#[test]
fn socket_protocol_options() {
    let sock =
        socket("socket,id=s,host=localhost,port=80,server=on,tn3270=on,websocket=on,nodelay=on");
    assert!(sock.tn3270 && sock.websocket && sock.nodelay);
    assert!(socket("socket,id=s,path=/tmp/s,delay=off").nodelay);
    assert!(!socket("socket,id=s,path=/tmp/s,delay=on").nodelay);
    // The short form `nodelay` is QEMU's `delay=off`.
    assert!(socket("socket,id=s,path=/tmp/s,nodelay").nodelay);
}

#[test]
fn socket_inet_options() {
    let sock = socket("socket,id=s,host=0.0.0.0,port=5000,to=5010,ipv4=on,ipv6=off,server=on");
    assert_eq!(
        sock.addr,
        SocketAddrSpec::Inet {
            host: "0.0.0.0".into(),
            port: "5000".into(),
            to: Some(5010),
            ipv4: Some(true),
            ipv6: Some(false),
        }
    );
    // An empty host listens on every address; the port may be a service name.
    let sock = socket("socket,id=s,host=,port=telnet,server=on");
    assert!(
        matches!(sock.addr, SocketAddrSpec::Inet { ref host, ref port, .. } if host.is_empty() && port == "telnet")
    );
}

#[test]
fn socket_unix_options() {
    let sock = socket("socket,id=s,path=name,abstract=on,tight=off,server=on");
    assert_eq!(
        sock.addr,
        SocketAddrSpec::Unix { path: "name".into(), abstract_: true, tight: false }
    );
}

#[test]
fn socket_on_a_passed_fd() {
    let sock = socket("socket,id=s,fd=3,server=on,wait=off");
    assert_eq!(sock.addr, SocketAddrSpec::Fd("3".into()));
    assert_eq!(socket("socket,id=s,fd=mysock").addr, SocketAddrSpec::Fd("mysock".into()));
}

#[test]
fn socket_reconnect_in_milliseconds_and_legacy_seconds() {
    assert_eq!(socket("socket,id=s,host=h,port=1,reconnect-ms=250").reconnect_ms, 250);
    assert_eq!(socket("socket,id=s,host=h,port=1,reconnect=2").reconnect_ms, 2000);
    assert_eq!(socket("socket,id=s,path=/tmp/s").reconnect_ms, 0);
}

#[test]
fn udp_defaults_to_localhost() {
    let spec = parse("udp,id=u,port=5555");
    assert_eq!(spec.backend.kind(), "udp");
    assert_eq!(
        udp("udp,id=u,port=5555"),
        UdpSpec {
            host: "localhost".into(),
            port: "5555".into(),
            localaddr: None,
            localport: None,
            ipv4: None,
            ipv6: None,
        }
    );
}

#[test]
fn udp_with_local_side() {
    let u = udp("udp,id=u,host=10.0.0.1,port=5555,localaddr=0.0.0.0,localport=6666,ipv4=on");
    assert_eq!(u.host, "10.0.0.1");
    assert_eq!(u.localaddr.as_deref(), Some("0.0.0.0"));
    assert_eq!(u.localport.as_deref(), Some("6666"));
    assert_eq!(u.ipv4, Some(true));
    // An empty host is QEMU's "localhost" too.
    assert_eq!(udp("udp,id=u,host=,port=1").host, "localhost");
}

#[test]
fn pty_with_and_without_symlink() {
    assert_eq!(
        parse("pty,id=p,path=/tmp/link").backend,
        BackendSpec::Pty {
            path: Some("/tmp/link".into()),
            backlog: 65536,
            when_full: BacklogFull::DropOldest,
            history: 0,
        }
    );
    assert_eq!(
        parse("pty,id=p").backend,
        BackendSpec::Pty {
            path: None,
            backlog: 65536,
            when_full: BacklogFull::DropOldest,
            history: 0,
        }
    );
}

#[test]
fn pty_backlog_full_drops_the_oldest_by_default_or_waits() {
    let when_full = |s: &str| match parse(s).backend {
        BackendSpec::Pty { when_full, .. } => when_full,
        other => panic!("{s:?} is not a pty: {other:?}"),
    };
    assert_eq!(when_full("pty,id=p"), BacklogFull::DropOldest);
    assert_eq!(when_full("pty,id=p,backlog-full=drop"), BacklogFull::DropOldest);
    assert_eq!(when_full("pty,id=p,backlog-full=wait"), BacklogFull::Wait);
    assert_option_error("pty,id=p,backlog-full=block", "backlog-full", "block", "'drop' or 'wait'");
    assert_unknown_option("socket,id=s,path=/x,backlog-full=wait", "socket", "backlog-full");
}

#[test]
fn pty_backlog_is_a_size_64k_by_default_and_may_be_zero() {
    assert_eq!(DEFAULT_PTY_BACKLOG, 64 * 1024);
    let backlog = |s: &str| match parse(s).backend {
        BackendSpec::Pty { backlog, .. } => backlog,
        other => panic!("{s:?} is not a pty: {other:?}"),
    };
    assert_eq!(backlog("pty,id=p"), DEFAULT_PTY_BACKLOG);
    assert_eq!(backlog("pty,id=p,backlog=1M"), 1 << 20);
    assert_eq!(backlog("pty,id=p,backlog=4096"), 4096);
    assert_eq!(backlog("pty,id=p,backlog=0"), 0);
    assert_eq!(backlog("pty,id=p,path=/tmp/l,backlog=16k"), 16 << 10);
    assert_option_error("pty,id=p,backlog=lots", "backlog", "lots", "expects a size");
    assert_option_error("pty,id=p,backlog=-1", "backlog", "-1", "expects a size");
    // Ptys and (issue 18) sockets keep a backlog; serial lines do not.
    assert_unknown_option("tty,id=t,path=/dev/ttyS0,backlog=1K", "tty", "backlog");
    assert_eq!(socket("socket,id=s,path=/x,backlog=1K").backlog, Some(1024));
    assert_option_error("socket,id=s,path=/x,backlog=0", "backlog", "0", "at least 1 byte");
    assert_option_error(
        "socket,id=s,path=/x,backlog=65M",
        "backlog",
        "65M",
        "is larger than the maximum backlog, 64M",
    );
    assert_option_error(
        "socket,id=s,path=/x,server=on,clients=2,backlog=1k",
        "backlog",
        "1024",
        "not with clients= or history=",
    );
}

#[test]
fn tty_is_serial() {
    let spec = parse("tty,id=t,path=/dev/ttyS0");
    assert_eq!(spec.backend, BackendSpec::Serial { path: "/dev/ttyS0".into() });
    assert_eq!(spec.backend.kind(), "serial");
    assert_eq!(parse("serial,id=t,path=/dev/ttyS0"), spec);
}

#[test]
fn stdio_with_mux_and_log() {
    let spec = parse("stdio,id=s,signal=off,mux=on,logfile=/tmp/l,logappend=on");
    assert_eq!(
        spec,
        ChardevSpec {
            id: "s".into(),
            backend: BackendSpec::Stdio { signal: false },
            mux: true,
            log: Some(LogSpec {
                path: "/tmp/l".into(),
                append: true,
                timestamp: false,
                rotation: None
            }),
            overflow: Default::default(),
        }
    );
}

#[test]
fn stdio_defaults_to_signals_and_logs_truncate() {
    let spec = parse("stdio,id=s,logfile=/tmp/l");
    assert_eq!(spec.backend, BackendSpec::Stdio { signal: true });
    assert!(!spec.mux);
    assert_eq!(
        spec.log,
        Some(LogSpec { path: "/tmp/l".into(), append: false, timestamp: false, rotation: None })
    );
}

#[test]
fn logappend_without_logfile_logs_nothing() {
    assert_eq!(parse("null,id=n,logappend=on").log, None);
}

#[test]
fn logtimestamp_is_accepted_as_a_bool() {
    assert_eq!(
        parse("null,id=n,logfile=/tmp/l,logtimestamp=on").log.map(|l| l.path),
        Some(PathBuf::from("/tmp/l"))
    );
    assert_option_error(
        "null,id=n,logtimestamp=sometimes",
        "logtimestamp",
        "sometimes",
        "expects 'on' or 'off'",
    );
}

#[test]
fn null_and_every_kind_name() {
    assert_eq!(parse("null,id=n").backend, BackendSpec::Null);
    let kinds = [
        ("null,id=a", "null"),
        ("file,id=a,path=/x", "file"),
        ("pipe,id=a,path=/x", "pipe"),
        ("ringbuf,id=a", "ringbuf"),
        ("memory,id=a", "ringbuf"),
        ("stdio,id=a", "stdio"),
        ("socket,id=a,path=/x", "socket"),
        ("udp,id=a,port=1", "udp"),
        ("pty,id=a", "pty"),
        ("serial,id=a,path=/x", "serial"),
        ("tty,id=a,path=/x", "serial"),
    ];
    for (s, kind) in kinds {
        assert_eq!(parse(s).backend.kind(), kind, "{s}");
    }
    assert_eq!(parse("pipe,id=a,path=/tmp/p").backend, BackendSpec::Pipe { path: "/tmp/p".into() });
}

#[test]
fn from_str_is_parse() {
    let spec: ChardevSpec = match "null,id=n".parse() {
        Ok(spec) => spec,
        Err(e) => panic!("{e}"),
    };
    assert_eq!(spec, parse("null,id=n"));
    assert!("null".parse::<ChardevSpec>().is_err());
}

// ---------------------------------------------------------------------------------------
// QemuOpts syntax

#[test]
fn double_comma_is_a_literal_comma() {
    assert_eq!(parse("file,id=f,path=/tmp/a,,b").backend.kind(), "file");
    assert_eq!(
        parse("file,id=f,path=/tmp/a,,b,append=on").backend,
        BackendSpec::File { out: "/tmp/a,b".into(), input: None, append: true }
    );
    // At the end of the string, and twice in a row.
    assert_eq!(
        parse("file,id=f,path=/tmp/a,,").backend,
        BackendSpec::File { out: "/tmp/a,".into(), input: None, append: false }
    );
    assert_eq!(split("path=a,,,,b", ""), owned(&[("path", "a,,b")]));
    // In the implied first value too.
    assert_eq!(split("a,,b,c=d", "backend"), owned(&[("backend", "a,b"), ("c", "d")]));
}

#[test]
fn a_single_trailing_comma_is_ignored() {
    assert_eq!(parse("null,id=n,"), parse("null,id=n"));
    assert_eq!(split("a=1,", ""), owned(&[("a", "1")]));
}

#[test]
fn a_value_may_contain_equals_signs() {
    assert_eq!(split("path=/tmp/a=b", ""), owned(&[("path", "/tmp/a=b")]));
}

#[test]
fn the_last_repeat_of_a_key_wins_but_the_first_id() {
    assert_eq!(
        parse("file,id=f,path=/a,path=/b,append=on,append=off").backend,
        BackendSpec::File { out: "/b".into(), input: None, append: false }
    );
    // QEMU 7.2: `-chardev null,id=s,id=t` makes the chardev 's' (QemuOpts' id is the first).
    assert_eq!(parse("null,id=a,id=b").id, "a");
}

#[test]
fn issue_15_option_checks_as_strict_as_qemus() {
    let err = |s: &str| ChardevSpec::parse(s).unwrap_err().to_string();
    // QEMU: "Port range ... is invalid"-like refusal; a range must not be empty.
    let e = err("socket,id=s,host=127.0.0.1,port=45000,to=44000,server=on,wait=off");
    assert!(e.contains("'to' is below 'port'"), "{e}");
    // The largest ring is 1G; QEMU aborts at creation with 2^62.
    let e = err("ringbuf,id=r,size=4611686018427387904");
    assert!(e.contains("larger than the maximum ring, 1G"), "{e}");
    assert!(ChardevSpec::parse("ringbuf,id=r,size=1G").is_ok());
}

#[test]
fn split_keeps_order_and_repeats() {
    assert_eq!(
        split("socket,id=s,server,nowait,port=1,port=2", "backend"),
        owned(&[
            ("backend", "socket"),
            ("id", "s"),
            ("server", "on"),
            ("wait", "off"),
            ("port", "1"),
            ("port", "2"),
        ])
    );
}

#[test]
fn split_without_an_implied_key_reads_a_first_bare_element_as_a_flag() {
    assert_eq!(split("server,path=/x", ""), owned(&[("server", "on"), ("path", "/x")]));
    assert_eq!(split("", "backend"), owned(&[]));
}

#[test]
fn the_implied_key_is_only_the_first_element() {
    // A later bare word is a short-form flag, so the backend stays missing.
    assert_eq!(split("id=x,file", "backend"), owned(&[("id", "x"), ("file", "on")]));
    assert_option_error("id=x,file", "backend", "", "no backend type given");
}

#[test]
fn an_empty_key_is_refused() {
    let e = match split_options("null,=x", "backend") {
        Ok(pairs) => panic!("accepted as {pairs:?}"),
        Err(e) => e,
    };
    assert!(
        matches!(&e, Error::Option { key, value, .. } if key.is_empty() && value == "x"),
        "{e:?}"
    );
    // A stray empty element after a bare flag (",," is an escape only inside values).
    assert!(split_options("null,server,,x", "backend").is_err());
    // A bare "no" names no flag.
    assert!(split_options("null,no", "backend").is_err());
}

#[test]
fn every_boolean_spelling() {
    for word in ["on", "yes", "true", "y"] {
        assert!(matches!(parse_bool("k", word), Ok(true)), "{word}");
        let spec = parse(&format!("file,id=f,path=/x,append={word}"));
        assert!(matches!(spec.backend, BackendSpec::File { append: true, .. }), "{word}");
    }
    for word in ["off", "no", "false", "n"] {
        assert!(matches!(parse_bool("k", word), Ok(false)), "{word}");
        let spec = parse(&format!("file,id=f,path=/x,append={word}"));
        assert!(matches!(spec.backend, BackendSpec::File { append: false, .. }), "{word}");
    }
}

#[test]
fn short_form_booleans() {
    assert!(parse("null,id=n,mux").mux);
    assert!(!parse("null,id=n,mux=on,nomux").mux);
    assert!(matches!(parse("stdio,id=s,nosignal").backend, BackendSpec::Stdio { signal: false }));
}

#[test]
fn a_bad_boolean_names_key_and_value() {
    for word in ["ON", "1", "0", "maybe", ""] {
        let e = match parse_bool("server", word) {
            Ok(b) => panic!("{word:?} parsed as {b}"),
            Err(e) => e,
        };
        assert!(matches!(&e, Error::Option { key, value, .. } if key == "server" && value == word));
        assert_message_names(&e, "server", word, "expects 'on' or 'off'");
    }
    assert_option_error("socket,id=s,path=/x,server=maybe", "server", "maybe", "'on' or 'off'");
    assert_option_error("null,id=n,mux=2", "mux", "2", "'on' or 'off'");
    assert_option_error("stdio,id=s,signal=of", "signal", "of", "'on' or 'off'");
    assert_option_error("udp,id=u,port=1,ipv4=v4", "ipv4", "v4", "'on' or 'off'");
}

#[test]
fn sizes() {
    let cases = [
        ("0", 0),
        ("512", 512),
        ("512B", 512),
        ("1k", 1024),
        ("1K", 1024),
        ("2M", 2 << 20),
        ("3G", 3 << 30),
        ("1T", 1 << 40),
        ("1P", 1 << 50),
        ("7E", 7 << 60),
    ];
    for (text, bytes) in cases {
        assert_eq!(parse_size("size", text).ok(), Some(bytes), "{text}");
    }
}

#[test]
fn bad_sizes_name_key_and_value() {
    for text in ["", "K", "12Q", "1.5K", "-1", "1KB", " 1"] {
        match parse_size("size", text) {
            Ok(n) => panic!("{text:?} parsed as {n}"),
            Err(e) => assert_message_names(&e, "size", text, "expects a size"),
        }
    }
    for text in ["16E", "99999999999999999999", "17179869184G"] {
        match parse_size("size", text) {
            Ok(n) => panic!("{text:?} parsed as {n}"),
            Err(e) => assert_message_names(&e, "size", text, "too large"),
        }
    }
}

// ---------------------------------------------------------------------------------------
// errors: backend and id

#[test]
fn an_empty_string_names_the_missing_backend() {
    assert_option_error("", "backend", "", "no backend type given");
    assert_option_error(",id=x", "backend", "", "no backend type given");
    assert_option_error("id=x", "backend", "", "no backend type given");
}

#[test]
fn an_unknown_backend_is_named() {
    let e = refuse("bogus,id=x");
    assert!(matches!(&e, Error::UnknownBackend(name) if name == "bogus"), "{e:?}");
    assert!(e.to_string().contains("'bogus'"));
    // Type names are case sensitive, as in QEMU.
    assert!(matches!(refuse("FILE,id=x,path=/x"), Error::UnknownBackend(_)));
}

#[test]
fn the_id_is_required() {
    assert_missing_option("null", "null", "id");
    assert_missing_option("file,path=/tmp/x", "file", "id");
}

#[test]
fn parse_with_id_fills_a_missing_id_only() {
    let spec = match ChardevSpec::parse_with_id("file,path=/tmp/x", "tool0") {
        Ok(spec) => spec,
        Err(e) => panic!("{e}"),
    };
    assert_eq!(spec.id, "tool0");
    assert_eq!(spec.backend.kind(), "file");
    let spec = match ChardevSpec::parse_with_id("null,id=mine", "tool0") {
        Ok(spec) => spec,
        Err(e) => panic!("{e}"),
    };
    assert_eq!(spec.id, "mine");
    // The filled-in id must be well formed too.
    assert!(ChardevSpec::parse_with_id("null", "0bad").is_err());
}

#[test]
fn ids_are_qemu_identifiers() {
    for good in ["a", "serial0", "Mon-1.x_y", &"a".repeat(127)] {
        assert_eq!(parse(&format!("null,id={good}")).id, good);
    }
    for bad in ["0abc", "-a", "_a", "a b", "a/b", "a:b", "é", "aé"] {
        assert_option_error(&format!("null,id={bad}"), "id", bad, "identifier");
    }
    assert_option_error("null,id=", "id", "", "identifier");
    let long = "a".repeat(128);
    assert_option_error(&format!("null,id={long}"), "id", &long, "127");
}

// ---------------------------------------------------------------------------------------
// errors: keys a backend does not take, or needs

#[test]
fn each_backend_takes_only_its_own_keys() {
    assert_unknown_option("null,id=n,path=/x", "null", "path");
    assert_unknown_option("file,id=f,path=/x,size=1", "file", "size");
    assert_unknown_option("pipe,id=p,path=/x,append=on", "pipe", "append");
    assert_unknown_option("ringbuf,id=r,signal=on", "ringbuf", "signal");
    assert_unknown_option("memory,id=r,path=/x", "memory", "path");
    assert_unknown_option("stdio,id=s,path=/x", "stdio", "path");
    assert_unknown_option("socket,id=s,path=/x,localport=1", "socket", "localport");
    assert_unknown_option("udp,id=u,port=1,server=on", "udp", "server");
    assert_unknown_option("pty,id=p,size=1", "pty", "size");
    assert_unknown_option("tty,id=t,path=/dev/ttyS0,signal=off", "tty", "signal");
    // A short-form flag is a key like any other.
    assert_unknown_option("null,id=n,server", "null", "server");
    assert_unknown_option("null,id=n,bogus=1", "null", "bogus");
}

#[test]
fn required_paths() {
    assert_missing_option("file,id=f", "file", "path");
    assert_missing_option("file,id=f,input-path=/tmp/in", "file", "path");
    assert_missing_option("pipe,id=p", "pipe", "path");
    assert_missing_option("serial,id=s", "serial", "path");
    assert_missing_option("tty,id=s", "tty", "path");
}

#[test]
fn empty_paths_are_refused() {
    assert_option_error("file,id=f,path=", "path", "", "must not be empty");
    assert_option_error("file,id=f,path=/x,input-path=", "input-path", "", "must not be empty");
    assert_option_error("pty,id=p,path=", "path", "", "must not be empty");
    assert_option_error("null,id=n,logfile=", "logfile", "", "must not be empty");
}

#[test]
fn ringbuf_size_must_be_a_power_of_two() {
    assert_option_error("ringbuf,id=r,size=1000", "size", "1000", "must be a power of two");
    assert_option_error("ringbuf,id=r,size=0", "size", "0", "must be a power of two");
    assert_option_error("ringbuf,id=r,size=3K", "size", "3K", "must be a power of two");
    assert_option_error("memory,id=r,size=lots", "size", "lots", "expects a size");
}

#[test]
fn udp_needs_a_port() {
    assert_missing_option("udp,id=u", "udp", "port");
    assert_missing_option("udp,id=u,host=h,port=", "udp", "port");
}

// ---------------------------------------------------------------------------------------
// errors: socket

#[test]
fn socket_needs_exactly_one_address() {
    let reason = "None or one of 'path', 'fd' or 'host' option required.";
    assert_option_error("socket,id=s,server=on", "path", "", reason);
    assert_option_error("socket,id=s,path=/x,host=h,port=1", "host", "h", reason);
    assert_option_error("socket,id=s,path=/x,fd=3", "fd", "3", reason);
    assert_option_error("socket,id=s,host=h,port=1,fd=3", "fd", "3", reason);
}

#[test]
fn socket_host_needs_a_port() {
    assert_missing_option("socket,id=s,host=localhost", "socket", "port");
}

#[test]
fn socket_address_options_must_fit_the_address() {
    assert_option_error(
        "socket,id=s,host=h,port=1,abstract=on",
        "abstract",
        "on",
        "only valid with 'path'",
    );
    assert_option_error(
        "socket,id=s,host=h,port=1,tight=off",
        "tight",
        "off",
        "only valid with 'path'",
    );
    assert_option_error("socket,id=s,path=/x,to=10", "to", "10", "only valid with 'host'");
    assert_option_error("socket,id=s,path=/x,ipv4=on", "ipv4", "on", "only valid with 'host'");
    assert_option_error("socket,id=s,path=/x,ipv6=on", "ipv6", "on", "only valid with 'host'");
    assert_option_error("socket,id=s,path=/x,port=1", "port", "1", "only valid with 'host'");
    assert_option_error("socket,id=s,fd=3,abstract=on", "abstract", "on", "only valid with 'path'");
    assert_option_error("socket,id=s,fd=3,port=1", "port", "1", "only valid with 'host'");
}

#[test]
fn socket_mode_is_permission_bits_in_octal() {
    let reason = "expects octal permission bits as for chmod, from 0 to 0777 (e.g. 0600 or 660)";
    for bad in ["999", "abc", "0o600", "1777", "4755", "-600", "+600", "u=rw", "0x1ff", "6 0 0"] {
        let s = format!("socket,id=s,path=/x,server=on,mode={bad}");
        assert_option_error(&s, "mode", bad, reason);
    }
    assert_option_error("socket,id=s,path=/x,server=on,mode=", "mode", "", reason);
    assert_option_error(
        "socket,id=s,path=/x,server=on,mode=77777777777777777777",
        "mode",
        "77777777777777777777",
        reason,
    );
    let e = refuse("socket,id=s,path=/x,server=on,mode=999");
    assert_eq!(
        e.to_string(),
        "chardev option 'mode=999': expects octal permission bits as for chmod, from 0 to 0777 \
         (e.g. 0600 or 660)"
    );
}

#[test]
fn socket_mode_is_for_unix_servers_with_a_file() {
    let only_path = "only valid with 'path'";
    assert_option_error("socket,id=s,host=h,port=1,server=on,mode=0600", "mode", "0600", only_path);
    assert_option_error("socket,id=s,host=h,port=1,mode=0600", "mode", "0600", only_path);
    assert_option_error("socket,id=s,fd=3,server=on,mode=0600", "mode", "0600", only_path);
    // Checked before the value, like the other address options.
    assert_option_error("socket,id=s,host=h,port=1,server=on,mode=abc", "mode", "abc", only_path);
    assert_option_error(
        "socket,id=s,path=/x,mode=0600",
        "mode",
        "0600",
        "'mode' option is incompatible with socket in client connect mode",
    );
    assert_option_error(
        "socket,id=s,path=/x,server=off,mode=0600",
        "mode",
        "0600",
        "'mode' option is incompatible with socket in client connect mode",
    );
    assert_option_error(
        "socket,id=s,path=name,abstract=on,server=on,mode=0600",
        "mode",
        "0600",
        "'mode' option is incompatible with 'abstract': an abstract socket has no file",
    );
    // Other backends do not take it: QEMU's own answer for every backend.
    assert_unknown_option("file,id=f,path=/x,mode=0600", "file", "mode");
    assert_unknown_option("udp,id=u,port=1,mode=0600", "udp", "mode");
}

#[test]
fn socket_mode_of_a_built_spec_is_checked_too() {
    let server = |mode, server, abstract_| {
        let mut s = socket("socket,id=s,path=/x,server=on,wait=off");
        s.mode = Some(mode);
        s.server = server;
        s.addr = SocketAddrSpec::Unix { path: "/x".into(), abstract_, tight: true };
        ChardevSpec {
            id: "s".into(),
            backend: BackendSpec::Socket(s),
            mux: false,
            log: None,
            overflow: Default::default(),
        }
    };
    server(0o600, true, false).check().unwrap();
    assert_eq!(
        server(0o1777, true, false).check().unwrap_err().to_string(),
        "chardev option 'mode=1777': expects octal permission bits as for chmod, from 0 to 0777 \
         (e.g. 0600 or 660)"
    );
    let e = server(0o600, false, false).check().unwrap_err().to_string();
    assert!(e.contains("'mode=0600'") && e.contains("client connect mode"), "{e}");
    let e = server(0o600, true, true).check().unwrap_err().to_string();
    assert!(e.contains("'abstract'"), "{e}");
    let mut tcp = server(0o600, true, false);
    let BackendSpec::Socket(s) = &mut tcp.backend else { unreachable!() };
    s.addr = SocketAddrSpec::Inet {
        host: "h".into(),
        port: "1".into(),
        to: None,
        ipv4: None,
        ipv6: None,
    };
    assert!(tcp.check().unwrap_err().to_string().contains("only valid with 'path'"));
}

#[test]
fn socket_numbers_are_checked() {
    assert_option_error("socket,id=s,host=h,port=1,to=70000", "to", "70000", "port number");
    assert_option_error("socket,id=s,host=h,port=1,to=x", "to", "x", "number");
    assert_option_error(
        "socket,id=s,host=h,port=1,reconnect-ms=-5",
        "reconnect-ms",
        "-5",
        "number",
    );
    assert_option_error("socket,id=s,host=h,port=1,reconnect=soon", "reconnect", "soon", "number");
    assert_option_error(
        "socket,id=s,host=h,port=1,reconnect=18446744073709552",
        "reconnect",
        "18446744073709552",
        "too large",
    );
}

#[test]
fn wait_is_for_servers_only() {
    let reason = "'wait' option is incompatible with socket in client connect mode";
    assert_option_error("socket,id=s,path=/x,wait=on", "wait", "on", reason);
    assert_option_error("socket,id=s,path=/x,wait=off", "wait", "off", reason);
    assert_option_error("socket,id=s,host=h,port=1,nowait", "wait", "off", reason);
}

#[test]
fn delay_and_nodelay_exclude_each_other() {
    assert_option_error(
        "socket,id=s,path=/x,delay=off,nodelay=on",
        "delay",
        "off",
        "'delay' and 'nodelay' are mutually exclusive",
    );
}

#[test]
fn websocket_is_for_servers_only() {
    assert_option_error(
        "socket,id=s,host=h,port=1,websocket=on",
        "websocket",
        "on",
        "Websocket client is not implemented",
    );
}

#[test]
fn reconnect_rules() {
    assert_option_error(
        "socket,id=s,host=h,port=1,reconnect=1,reconnect-ms=1000",
        "reconnect",
        "1",
        "'reconnect' and 'reconnect-ms' are mutually exclusive",
    );
    assert_option_error(
        "socket,id=s,host=h,port=1,server=on,reconnect=1",
        "reconnect",
        "1",
        "'reconnect' option is incompatible with socket in server listen mode",
    );
    assert_option_error(
        "socket,id=s,host=h,port=1,server=on,reconnect-ms=100",
        "reconnect-ms",
        "100",
        "'reconnect-ms' option is incompatible with socket in server listen mode",
    );
    assert_option_error("socket,id=s,fd=3,reconnect=1", "reconnect", "1", "incompatible with 'fd'");
    assert_option_error(
        "socket,id=s,fd=3,reconnect-ms=5",
        "reconnect-ms",
        "5",
        "incompatible with 'fd'",
    );
}

#[test]
fn many_viewers_keys_are_checked_and_named() {
    let spec = socket("socket,id=s,path=/tmp/s,server=on,wait=off,clients=4,history=1M,queue=256k");
    assert_eq!((spec.clients, spec.history, spec.queue), (4, 1 << 20, Some(256 << 10)));
    let spec = socket("socket,id=s,path=/tmp/s,server=on,wait=off,history=64k");
    assert_eq!((spec.clients, spec.history, spec.queue), (1, 64 << 10, None));
    let server = "socket,id=s,path=/tmp/s,server=on,wait=off";
    assert_option_error(&format!("{server},clients=0"), "clients", "0", "must be between 1 and 64");
    assert_option_error(
        &format!("{server},clients=65"),
        "clients",
        "65",
        "must be between 1 and 64",
    );
    assert_option_error(&format!("{server},clients=x"), "clients", "x", "");
    assert_option_error(
        &format!("{server},history=65M"),
        "history",
        "65M",
        "is larger than the maximum history, 64M",
    );
    assert_option_error(&format!("{server},history=1Q"), "history", "1Q", "expects a size");
    assert_option_error(&format!("{server},clients=2,queue=0"), "queue", "0", "at least 1 byte");
    assert_option_error(&format!("{server},queue=4k"), "queue", "4k", "only with clients above 1");
    assert_option_error(
        "socket,id=s,path=/tmp/s,clients=2",
        "clients",
        "2",
        "only for a server (server=on)",
    );
    assert_option_error(
        "socket,id=s,host=h,port=1,reconnect-ms=100,history=1k",
        "history",
        "1k",
        "only for a server (server=on)",
    );
}

#[test]
fn overflow_policy_is_block_by_default_drop_on_request_and_nothing_else() {
    use chardev::options::Overflow;
    assert_eq!(parse("null,id=n").overflow, Overflow::Block);
    assert_eq!(parse("null,id=n,overflow=block").overflow, Overflow::Block);
    assert_eq!(parse("socket,id=s,path=/tmp/s,overflow=drop").overflow, Overflow::Drop);
    assert_option_error("null,id=n,overflow=wait", "overflow", "wait", "expects 'block' or 'drop'");
}

#[test]
fn tls_keys_parse_and_are_checked_against_the_role_and_the_address() {
    let s =
        socket("socket,id=s,host=127.0.0.1,port=1,server=on,wait=off,tls-creds=tls0,tls-authz=az0");
    let tls = s.tls.expect("tls");
    assert_eq!((tls.creds.as_str(), tls.authz.as_deref()), ("tls0", Some("az0")));
    let s = socket("socket,id=s,path=/tmp/x,tls-creds=t,tls-hostname=server.example");
    assert_eq!(s.tls.and_then(|t| t.hostname).as_deref(), Some("server.example"));
    assert_option_error(
        "socket,id=s,host=h,port=1,tls-authz=az0",
        "tls-authz",
        "az0",
        "'tls_authz' option requires 'tls_creds' option",
    );
    assert_option_error(
        "socket,id=s,host=h,port=1,tls-hostname=x",
        "tls-hostname",
        "x",
        "needs 'tls-creds'",
    );
    assert_option_error(
        "socket,id=s,host=h,port=1,tls-creds=t,tls-authz=az0",
        "tls-authz",
        "az0",
        "only for a server",
    );
    assert_option_error(
        "socket,id=s,host=h,port=1,server=on,tls-creds=t,tls-hostname=x",
        "tls-hostname",
        "x",
        "only for a client",
    );
    assert_option_error(
        "socket,id=s,fd=3,tls-creds=t",
        "tls-creds",
        "t",
        "incompatible with 'fd' address type as client",
    );
}

// ---------------------------------------------------------------------------------------
// robustness

/// A tiny deterministic generator, so the test needs no extra dependency.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self, bound: usize) -> usize {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        ((self.0 >> 33) as usize) % bound
    }
}

#[test]
fn no_input_panics() {
    let pieces = [
        ",",
        ",,",
        "=",
        "no",
        "id",
        "a",
        "é",
        "socket",
        "file",
        "ringbuf",
        "udp",
        "path",
        "host",
        "port",
        "server",
        "wait",
        "size",
        "64K",
        "on",
        "off",
        "fd",
        "3",
        "reconnect",
        "reconnect-ms",
        "to",
        "99999999999999999999999",
        "logfile",
        "mux",
        "\u{0}",
        " ",
        "tls-creds",
        "delay",
        "nodelay",
    ];
    let mut rng = Lcg(42);
    for _ in 0..20_000 {
        let len = rng.next(12);
        let s: String = (0..len).map(|_| pieces[rng.next(pieces.len())]).collect();
        // Either result is fine; a panic fails the test.
        let _ = ChardevSpec::parse(&s);
        let _ = ChardevSpec::parse_with_id(&s, "x");
        let _ = split_options(&s, "");
        let _ = parse_size("size", &s);
    }
}

#[test]
fn syslog_options_parse_with_their_defaults() {
    use chardev::options::{SyslogFacility, SyslogFormat, SyslogSpec};
    let spec: ChardevSpec = "syslog,id=vm0".parse().expect("parse");
    assert_eq!(spec.backend, BackendSpec::Syslog(SyslogSpec::default()));
    assert_eq!(
        SyslogSpec::default(),
        SyslogSpec {
            path: None,
            facility: SyslogFacility::User,
            format: SyslogFormat::Rfc3164,
            tag: None
        }
    );
    let spec: ChardevSpec =
        "syslog,id=vm0,path=/tmp/l.sock,facility=local7,format=rfc5424,tag=web.1"
            .parse()
            .expect("parse");
    assert_eq!(
        spec.backend,
        BackendSpec::Syslog(SyslogSpec {
            path: Some("/tmp/l.sock".into()),
            facility: SyslogFacility::Local(7),
            format: SyslogFormat::Rfc5424,
            tag: Some("web.1".into()),
        })
    );
    for name in ["user", "daemon", "authpriv", "local0", "local7"] {
        let f = SyslogFacility::from_name(name).expect(name);
        assert_eq!(f.name(), name);
    }
    assert_eq!(SyslogFacility::from_name("local7").map(SyslogFacility::code), Some(23));
    let e = ChardevSpec::parse("syslog,id=vm0,port=5").expect_err("unknown key").to_string();
    assert!(e.contains("port"), "{e}");
}

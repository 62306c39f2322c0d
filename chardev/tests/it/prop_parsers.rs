//! Property tests of the option parsers: `-chardev` strings (`ChardevSpec::parse`,
//! `split_options`) and legacy `-serial` strings (`parse_compat`). They never panic, and a
//! spec printed back in QEMU's syntax, commas doubled, parses to the same spec.

use std::path::PathBuf;

use chardev::compat::{parse_compat, Compat};
use chardev::options::{split_options, BacklogFull, LogSpec, SocketAddrSpec, SocketSpec};
use chardev::{BackendSpec, ChardevSpec};
use proptest::prelude::*;

/// A value as QEMU's option syntax writes it: every `,` doubled.
fn escape(value: &str) -> String {
    value.replace(',', ",,")
}

/// Strings made of the characters the parser cares about, so that cases reach past the
/// first error: separators, `=`, `no`, backend names and keys.
fn option_soup() -> impl Strategy<Value = String> {
    let atoms = prop::sample::select(vec![
        ",",
        ",,",
        "=",
        "no",
        "id=",
        "x",
        "file",
        "socket",
        "ringbuf",
        "pty",
        "udp",
        "mon:",
        "tcp:",
        "unix:",
        "path=",
        "host=",
        "port=",
        "fd=",
        "size=",
        "64K",
        "on",
        "off",
        "server",
        "wait",
        "reconnect=",
        "reconnect-ms=",
        "mux=on",
        "logfile=",
        "to=",
        "backlog=",
        "backlog-full=wait",
        "mode=",
        "0600",
        "abstract=on",
        "[",
        "]:",
        ":",
        "@",
        "é",
        "\u{0}",
    ]);
    prop::collection::vec(atoms, 0..16).prop_map(|parts| parts.concat())
}

/// A chardev id QEMU accepts.
fn id() -> impl Strategy<Value = String> {
    "[A-Za-z][A-Za-z0-9._-]{0,40}"
}

/// A non-empty path with commas, `=`, spaces and non-ASCII in it.
fn path() -> impl Strategy<Value = PathBuf> {
    "[a-z/,=. é_-]{1,24}".prop_map(PathBuf::from)
}

fn text(path: &std::path::Path) -> String {
    escape(path.to_str().expect("generated paths are UTF-8"))
}

/// A backend and its `-chardev` text without `id=`.
fn backend() -> impl Strategy<Value = (BackendSpec, String)> {
    prop_oneof![
        Just((BackendSpec::Null, "null".to_string())),
        (path(), prop::option::of(path()), any::<bool>()).prop_map(|(out, input, append)| {
            let mut s = format!("file,path={}", text(&out));
            if let Some(input) = &input {
                s.push_str(&format!(",input-path={}", text(input)));
            }
            s.push_str(if append { ",append=on" } else { ",append=off" });
            (BackendSpec::File { out, input, append }, s)
        }),
        path().prop_map(|p| {
            let s = format!("pipe,path={}", text(&p));
            (BackendSpec::Pipe { path: p }, s)
        }),
        (0u32..31).prop_map(|shift| {
            let size = 1usize << shift;
            (BackendSpec::Ringbuf { size }, format!("ringbuf,size={size}"))
        }),
        (prop::option::of(path()), 0usize..1 << 20, any::<bool>()).prop_map(
            |(p, backlog, wait)| {
                let mut s = format!("pty,backlog={backlog}");
                if let Some(p) = &p {
                    s.push_str(&format!(",path={}", text(p)));
                }
                let when_full = if wait {
                    s.push_str(",backlog-full=wait");
                    BacklogFull::Wait
                } else {
                    BacklogFull::DropOldest
                };
                (BackendSpec::Pty { path: p, backlog, when_full, history: 0 }, s)
            }
        ),
        path().prop_map(|p| {
            let s = format!("serial,path={}", text(&p));
            (BackendSpec::Serial { path: p }, s)
        }),
        (path(), any::<bool>(), any::<bool>(), any::<bool>(), prop::option::of(0u32..=0o777))
            .prop_map(|(p, server, abstract_, telnet, mode)| {
                // `mode=` only for a server with a socket file; written with and without
                // chmod's leading 0.
                let mode = mode.filter(|_| server && !abstract_);
                let mode_text = match mode {
                    Some(m) if m % 2 == 0 => format!(",mode=0{m:o}"),
                    Some(m) => format!(",mode={m:o}"),
                    None => String::new(),
                };
                let s = format!(
                    "socket,path={},server={},abstract={},telnet={}{}{mode_text}",
                    text(&p),
                    if server { "on" } else { "off" },
                    if abstract_ { "on" } else { "off" },
                    if telnet { "on" } else { "off" },
                    if server { ",wait=off" } else { "" },
                );
                let spec = SocketSpec {
                    addr: SocketAddrSpec::Unix { path: p, abstract_, tight: true },
                    server,
                    wait: false,
                    nodelay: false,
                    telnet,
                    tn3270: false,
                    websocket: false,
                    reconnect_ms: 0,
                    mode,
                    clients: 1,
                    history: 0,
                    queue: None,
                    backlog: None,
                    tls: None,
                };
                (BackendSpec::Socket(spec), s)
            }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn the_parsers_never_panic_on_any_string(s in any::<String>()) {
        let _ = split_options(&s, "backend");
        let _ = ChardevSpec::parse(&s);
        let _ = ChardevSpec::parse_with_id(&s, "c0");
        let _ = parse_compat(&s, "serial0");
    }

    #[test]
    fn the_parsers_never_panic_on_option_like_strings(s in option_soup()) {
        let _ = split_options(&s, "backend");
        let _ = split_options(&s, "");
        if let Ok(spec) = ChardevSpec::parse_with_id(&s, "c0") {
            // What the command line accepts, QMP's check accepts too.
            prop_assert!(spec.check().is_ok(), "{s:?} -> {spec:?}");
        }
        if let Ok((Compat::New(spec), _)) = parse_compat(&s, "serial0") {
            prop_assert!(spec.check().is_ok(), "{s:?} -> {spec:?}");
        }
    }

    #[test]
    fn pairs_printed_with_doubled_commas_split_back(
        pairs in prop::collection::vec(("[a-z][a-z-]{0,8}", "\\PC{0,12}"), 1..6)
    ) {
        let text: Vec<String> = pairs.iter().map(|(k, v)| format!("{k}={}", escape(v))).collect();
        let back = split_options(&text.join(","), "").unwrap();
        prop_assert_eq!(back, pairs);
    }

    #[test]
    fn a_printed_spec_parses_to_the_same_spec(
        id in id(),
        (backend, text) in backend(),
        mux in any::<bool>(),
        log in prop::option::of((path(), any::<bool>())),
    ) {
        let mut s = format!("{text},id={id},mux={}", if mux { "on" } else { "off" });
        let log = log.map(|(path, append)| {
            s.push_str(&format!(",logfile={},logappend={}", self::text(&path), append));
            LogSpec { path, append, timestamp: false, rotation: None }
        });
        let want = ChardevSpec { id, backend, mux, log, overflow: Default::default() };
        prop_assert_eq!(ChardevSpec::parse(&s).unwrap(), want, "{}", s);
    }

    #[test]
    fn legacy_file_and_unix_paths_keep_their_commas(p in path(), server in any::<bool>()) {
        let (spec, monitor) = parse_compat(&format!("file:{}", p.display()), "serial0").unwrap();
        prop_assert!(!monitor);
        let Compat::New(spec) = spec else { panic!("file: is a new chardev") };
        prop_assert_eq!(spec.backend, BackendSpec::File { out: p.clone(), input: None, append: false });

        let opts = if server { ",server=on,wait=off" } else { "" };
        let (spec, _) = parse_compat(&format!("unix:{}{opts}", text(&p)), "serial0").unwrap();
        let Compat::New(ChardevSpec { backend: BackendSpec::Socket(s), .. }) = spec else {
            panic!("unix: is a socket")
        };
        prop_assert_eq!(s.addr, SocketAddrSpec::Unix { path: p, abstract_: false, tight: true });
        prop_assert_eq!(s.server, server);
    }
}

// ---- regressions found by the fuzz targets -----------------------------------------------

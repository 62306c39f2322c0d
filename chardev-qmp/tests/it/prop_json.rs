//! Property tests of QMP's input side: `JsonStream` finds the same values whatever the read
//! boundaries, survives garbage and goes on with the next command; `backend_spec`
//! (chardev-add's `backend`) never panics on any JSON.

use chardev_qmp::backend_spec;
use chardev_qmp::json::JsonStream;
use proptest::prelude::*;
use serde_json::{Map, Value};

/// JSON without floats (serde_json does not promise to read back every float bit for bit).
fn json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        // Quotes, backslashes, braces and non-ASCII inside strings.
        "[a-z\"\\\\{}\\[\\] é\u{1F600}\n\t]{0,12}".prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec(("[a-z\"\\\\{]{0,6}", inner), 0..6)
                .prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
}

/// A QMP-like top-level object.
fn object() -> impl Strategy<Value = Value> {
    prop::collection::vec(("[a-z-]{1,12}", json()), 0..5)
        .prop_map(|kv| Value::Object(kv.into_iter().collect::<Map<_, _>>()))
}

/// Pushes `bytes` in the pieces `cuts` makes of it.
fn push_in_pieces(bytes: &[u8], cuts: &[usize]) -> Vec<Result<Value, String>> {
    let mut cuts: Vec<usize> = cuts.iter().map(|&c| c % (bytes.len() + 1)).collect();
    cuts.sort_unstable();
    let mut stream = JsonStream::default();
    let mut out = Vec::new();
    let mut start = 0;
    for end in cuts.into_iter().chain([bytes.len()]) {
        out.extend(stream.push(&bytes[start..end]).into_iter().map(|p| p.value));
        start = end;
    }
    out
}

/// A backend-ish object: a known type and data with known and unknown keys.
fn backend_like() -> impl Strategy<Value = Value> {
    let kinds = prop::sample::select(vec![
        "null", "file", "pipe", "serial", "tty", "ringbuf", "memory", "stdio", "pty", "socket",
        "udp", "bogus",
    ]);
    let keys = prop::sample::select(vec![
        "out",
        "in",
        "append",
        "device",
        "size",
        "signal",
        "path",
        "backlog",
        "backlog-full",
        "addr",
        "server",
        "wait",
        "nodelay",
        "telnet",
        "tn3270",
        "websocket",
        "reconnect",
        "reconnect-ms",
        "remote",
        "local",
        "type",
        "data",
        "host",
        "port",
        "fd",
        "str",
        "logfile",
        "logappend",
        "logtimestamp",
        "abstract",
        "tight",
    ]);
    let field = (
        keys,
        prop_oneof![
            json(),
            Just(serde_json::json!({"type": "inet", "data": {"host": "h", "port": "1"}})),
            Just(serde_json::json!({"type": "unix", "data": {"path": "/p"}}))
        ],
    );
    (kinds, prop::collection::vec(field, 0..6)).prop_map(|(kind, fields)| {
        let data: Map<String, Value> =
            fields.into_iter().map(|(k, v)| (k.to_string(), v)).collect();
        serde_json::json!({"type": kind, "data": data})
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn any_split_of_valid_objects_yields_the_same_objects(
        objects in prop::collection::vec(object(), 1..6),
        separators in prop::collection::vec(prop::sample::select(vec!["", " ", "\n", "\r\n", "\t "]), 6),
        cuts in prop::collection::vec(any::<usize>(), 0..8),
    ) {
        let mut text = String::new();
        for (object, sep) in objects.iter().zip(&separators) {
            text.push_str(&serde_json::to_string(object).unwrap());
            text.push_str(sep);
        }
        let got = push_in_pieces(text.as_bytes(), &cuts);
        let want: Vec<Result<Value, String>> = objects.into_iter().map(Ok).collect();
        prop_assert_eq!(got, want, "{}", text);
    }

    #[test]
    fn garbage_never_panics(
        garbage in prop::collection::vec(any::<u8>(), 0..512),
        cuts in prop::collection::vec(any::<usize>(), 0..8),
    ) {
        let whole = push_in_pieces(&garbage, &[]);
        prop_assert_eq!(push_in_pieces(&garbage, &cuts), whole);
    }

    #[test]
    fn the_stream_goes_on_after_bare_garbage(
        // Typos outside any object or string: bad keywords, stray closers, binary.
        garbage in prop::collection::vec(any::<u8>().prop_filter("outside", |b| !b"\"{[".contains(b)), 0..64),
        object in object(),
        cuts in prop::collection::vec(any::<usize>(), 0..4),
    ) {
        let mut bytes = garbage.clone();
        bytes.push(b'\n');
        bytes.extend_from_slice(serde_json::to_string(&object).unwrap().as_bytes());
        let got = push_in_pieces(&bytes, &cuts);
        prop_assert_eq!(got.last(), Some(&Ok(object)));
    }

    #[test]
    fn the_stream_goes_on_after_an_invalid_object(
        junk in "[a-z:,0-9 ]{0,24}",
        object in object(),
    ) {
        let bytes = format!("{{{junk}}} [{junk},] {}", serde_json::to_string(&object).unwrap());
        let got: Vec<_> =
            JsonStream::default().push(bytes.as_bytes()).into_iter().map(|p| p.value).collect();
        prop_assert_eq!(got.last(), Some(&Ok(object)), "{}", bytes);
    }

    #[test]
    fn backend_spec_never_panics_on_any_json(value in json()) {
        let _ = backend_spec("c0", &value);
    }

    #[test]
    fn backend_spec_never_panics_on_backend_like_json(value in backend_like()) {
        if let Ok(spec) = backend_spec("c0", &value) {
            prop_assert!(spec.check().is_ok(), "{value} -> {spec:?}");
        }
    }
}

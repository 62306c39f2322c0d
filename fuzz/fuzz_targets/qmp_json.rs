//! QMP's input side without a machine: `JsonStream::push` splits bytes into JSON values the
//! same way whatever the read boundaries (also across the size limit), and `backend_spec`
//! (chardev-add's `backend`) never panics on any value the stream yields.
#![no_main]

use chardev_qmp::backend_spec;
use chardev_qmp::json::JsonStream;
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

fuzz_target!(|data: &[u8]| {
    let Some((&split, data)) = data.split_first() else { return };
    let values = |parsed: Vec<chardev_qmp::json::Parsed>| -> Vec<Result<Value, String>> {
        parsed.into_iter().map(|p| p.value).collect()
    };
    let whole = values(JsonStream::default().push(data));
    let mut stream = JsonStream::default();
    let at = usize::from(split) % (data.len() + 1);
    let mut parts = values(stream.push(&data[..at]));
    parts.extend(values(stream.push(&data[at..])));
    assert_eq!(whole, parts, "split at {at} changes the values");
    // The same across the size limit: a value over it is one error, whatever the split.
    let small = values(JsonStream::with_limit(64).push(data));
    let mut stream = JsonStream::with_limit(64);
    let mut small_parts = values(stream.push(&data[..at]));
    small_parts.extend(values(stream.push(&data[at..])));
    assert_eq!(small, small_parts, "split at {at} changes the values over the limit");
    for value in whole.into_iter().flatten() {
        let _ = backend_spec("fuzz0", &value);
        if let Some(backend) = value.pointer("/arguments/backend") {
            let _ = backend_spec("fuzz0", backend);
        }
        let _ = backend_spec(
            "fuzz0",
            &Value::Object(
                [("type".to_string(), Value::String("socket".into())), ("data".to_string(), value)]
                    .into_iter()
                    .collect(),
            ),
        );
    }
});

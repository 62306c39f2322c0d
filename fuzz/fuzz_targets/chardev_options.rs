//! `-chardev` strings (`ChardevSpec::parse`, `split_options`) and the legacy `-serial`
//! strings (`parse_compat`): never a panic, and whatever parses passes `ChardevSpec::check`,
//! the rule QMP's `chardev-add` applies to the same spec.
#![no_main]

use chardev::compat::{parse_compat, Compat};
use chardev::options::{split_options, ChardevSpec};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|s: &str| {
    let _ = split_options(s, "backend");
    let _ = split_options(s, "");
    for spec in
        [ChardevSpec::parse(s), ChardevSpec::parse_with_id(s, "fuzz0")].into_iter().flatten()
    {
        if let Err(e) = spec.check() {
            panic!("{s:?} parses to {spec:?}, which check() rejects: {e}");
        }
    }
    if let Ok((Compat::New(spec), _)) = parse_compat(s, "serial0") {
        if let Err(e) = spec.check() {
            panic!("compat {s:?} parses to {spec:?}, which check() rejects: {e}");
        }
    }
});

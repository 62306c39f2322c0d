//! The telnet input filter: no panic, read boundaries do not matter, and data escaped with
//! `escape_into` comes back unchanged, with no break.
#![no_main]

use chardev_socket::telnet::{escape_into, TelnetInput};
use libfuzzer_sys::fuzz_target;

fn filter(
    state: &mut TelnetInput,
    chunk: &[u8],
    base: usize,
    out: &mut Vec<u8>,
    breaks: &mut Vec<usize>,
) {
    let mut buf = chunk.to_vec();
    let n = state.filter(&mut buf, |at| breaks.push(base + at));
    assert!(n <= chunk.len());
    out.extend_from_slice(&buf[..n]);
}

fuzz_target!(|data: &[u8]| {
    let Some((&split, data)) = data.split_first() else { return };
    let (mut whole, mut whole_breaks) = (Vec::new(), Vec::new());
    filter(&mut TelnetInput::default(), data, 0, &mut whole, &mut whole_breaks);

    let at = usize::from(split) % (data.len() + 1);
    let (mut parts, mut parts_breaks) = (Vec::new(), Vec::new());
    let mut state = TelnetInput::default();
    filter(&mut state, &data[..at], 0, &mut parts, &mut parts_breaks);
    let base = parts.len();
    filter(&mut state, &data[at..], base, &mut parts, &mut parts_breaks);
    assert_eq!((&whole, &whole_breaks), (&parts, &parts_breaks), "split at {at}");

    let mut escaped = Vec::new();
    escape_into(data, &mut escaped);
    let (mut back, mut breaks) = (Vec::new(), Vec::new());
    filter(&mut TelnetInput::default(), &escaped, 0, &mut back, &mut breaks);
    assert_eq!(back, data);
    assert!(breaks.is_empty());
});

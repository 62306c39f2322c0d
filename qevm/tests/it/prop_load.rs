//! Property tests of the migration stream reader: `load` returns an error or a result for
//! any bytes and for valid streams cut, flipped or spliced, quickly and without a panic.

use std::time::{Duration, Instant};

use proptest::prelude::*;
use qevm::{DeviceState, Loader, Progress, Snapshot, PAGE_SIZE};

/// Sixteen pages of destination RAM.
const PAGES: usize = 16;

/// How long one load of a few KiB may take; a reader that spins or waits fails here.
const BOUND: Duration = Duration::from_secs(2);

/// A valid stream of a 16-page machine: some pages zero, some data, and two devices.
fn valid_stream(seed: u8) -> Vec<u8> {
    let mut ram = vec![0u8; PAGES * PAGE_SIZE];
    for page in (0..PAGES).filter(|p| (p + usize::from(seed)) % 3 == 0) {
        ram[page * PAGE_SIZE..][..PAGE_SIZE].fill(seed ^ page as u8 | 1);
    }
    let devices = [
        DeviceState::new("serial", 0, 1, vec![seed; 12]),
        DeviceState::new("guest-shell", 0, 1, b"echo hi".to_vec()),
    ];
    let mut out = Vec::new();
    let snapshot = Snapshot { machine_type: "pc", ram: &ram, devices: &devices };
    qevm::save(&mut out, &snapshot, &Progress::new()).unwrap();
    out
}

/// A change to a valid stream.
#[derive(Debug, Clone)]
enum Mutation {
    /// XOR a byte.
    Flip(usize, u8),
    /// Cut the stream here.
    Truncate(usize),
    /// Put bytes in here.
    Insert(usize, Vec<u8>),
    /// Overwrite 8 bytes with a big-endian number (lengths, flags, offsets).
    Be64(usize, u64),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), 1u8..).prop_map(|(at, x)| Mutation::Flip(at, x)),
        any::<usize>().prop_map(Mutation::Truncate),
        (any::<usize>(), prop::collection::vec(any::<u8>(), 1..16))
            .prop_map(|(at, b)| Mutation::Insert(at, b)),
        (any::<usize>(), prop_oneof![Just(u64::MAX), Just(0), Just(1 << 32), any::<u64>()])
            .prop_map(|(at, v)| Mutation::Be64(at, v)),
    ]
}

fn apply(stream: &mut Vec<u8>, m: &Mutation) {
    let len = stream.len();
    match m {
        Mutation::Flip(at, x) => stream[at % len] ^= x,
        Mutation::Truncate(at) => stream.truncate(at % len),
        Mutation::Insert(at, bytes) => {
            let at = at % (len + 1);
            stream.splice(at..at, bytes.iter().copied());
        }
        Mutation::Be64(at, v) => {
            let at = at % len.saturating_sub(8).max(1);
            let end = (at + 8).min(len);
            stream[at..end].copy_from_slice(&v.to_be_bytes()[..end - at]);
        }
    }
}

/// Loads `bytes` both ways a destination can, within [`BOUND`].
fn load_bounded(bytes: &[u8]) -> Result<(), String> {
    let started = Instant::now();
    let mut ram = vec![0u8; PAGES * PAGE_SIZE];
    let ours = qevm::load(bytes, "pc", &mut ram);
    let qemu = Loader::new("pc").fixed_size("serial", 12).load(bytes, &mut ram);
    let took = started.elapsed();
    assert!(took < BOUND, "loading {} bytes took {took:?}", bytes.len());
    ours.map(|_| ()).or(qemu.map(|_| ())).map_err(|e| e.to_string())
}

#[test]
fn the_generated_stream_is_valid() {
    for seed in 0..3 {
        load_bounded(&valid_stream(seed)).unwrap();
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..4096)) {
        let _ = load_bounded(&bytes);
    }

    #[test]
    fn a_valid_header_with_arbitrary_bytes_after_it_never_panics(
        cut in 0usize..64,
        tail in prop::collection::vec(any::<u8>(), 0..2048),
    ) {
        let mut stream = valid_stream(0);
        stream.truncate(cut);
        stream.extend_from_slice(&tail);
        let _ = load_bounded(&stream);
    }

    #[test]
    fn mutated_streams_never_panic(
        seed in any::<u8>(),
        mutations in prop::collection::vec(mutation(), 1..4),
    ) {
        let mut stream = valid_stream(seed);
        for m in &mutations {
            if stream.is_empty() {
                break;
            }
            apply(&mut stream, m);
        }
        let _ = load_bounded(&stream);
    }
}

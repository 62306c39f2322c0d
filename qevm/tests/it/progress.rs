//! Progress moves while saving, and a cancel stops the save at the next part.

use std::io::Read;
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Mutex};

use qevm::{Error, Progress};

use crate::{devices, ram_image, reader, save_on_thread, DEADLINE};

#[test]
fn progress_moves_while_saving_and_cancel_stops_it() {
    let ram = Arc::new(Mutex::new(ram_image(4096))); // 16 MiB
    let (a, b) = UnixStream::pair().unwrap();
    let progress = Arc::new(Progress::new());
    let saved = save_on_thread(a.into(), ram, devices(), Arc::clone(&progress));
    let mut b = reader(b);

    // Read 6 MB; what another thread sees of `transferred` follows the reader.
    let mut got = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut seen = Vec::new();
    while got.len() < 6_000_000 {
        let n = b.read(&mut buf).unwrap();
        assert!(n > 0, "the stream ended early");
        got.extend_from_slice(&buf[..n]);
        seen.push(progress.transferred());
    }
    // (The count is stored just after each write returns, so it may trail the reader.)
    assert!(seen.windows(2).all(|w| w[0] <= w[1]));
    assert!(seen.last() > seen.first() && seen[0] > 0, "{:?}", (seen[0], seen.last()));
    let stats = progress.ram();
    assert_eq!(stats.total, 16 << 20);
    assert!(stats.remaining < stats.total, "{stats:?}");

    // migrate_cancel: the writer stops at the next part boundary; the destination sees a
    // truncated stream and refuses it.
    progress.cancel();
    b.read_to_end(&mut got).unwrap();
    assert!(matches!(saved.recv_timeout(DEADLINE).unwrap(), Err(Error::Cancelled)));
    assert_eq!(progress.transferred(), got.len() as u64);
    assert!(got.len() < 12 << 20, "stopped soon, not at the end: {} bytes", got.len());
    let mut back = vec![0u8; 16 << 20];
    match qevm::load(&got[..], "pc", &mut back) {
        Err(Error::Truncated { offset, .. }) => assert_eq!(offset, got.len() as u64),
        other => panic!("{other:?}"),
    }
}

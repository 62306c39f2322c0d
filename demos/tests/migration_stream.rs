//! The migration stream as QEMU 7.2 writes it: a machine saved and loaded back across a real
//! socketpair, the stream's structure read independently of the module, a stream captured
//! from a real QEMU 7.2 (`tests/fixtures/`), a writer that stays blocking when its socket is
//! made non-blocking, and corrupt or truncated streams that fail cleanly.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::io::{Read, Write};
use std::ops::Range;
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use demos::migration::{
    self, BlockingWriter, DeviceState, Error, Loader, Progress, Snapshot, PAGE_SIZE,
};
use vm_superio::serial::SerialState;

/// How long any single wait in a test may take before the test fails.
const DEADLINE: Duration = Duration::from_secs(30);

/// The QEMU 7.2 stream of `-machine none -m 2` with 8218 bytes loaded at 0x3000 (see
/// `fixtures/README.md`).
const QEMU_STREAM: &[u8] = include_bytes!("fixtures/qemu-7.2-none-2m.migstream");

// ---- the largest allocation a thread makes, to show that length fields are capped -----

/// The system allocator, noting the largest allocation of threads that ask it to.
struct Tracking;

thread_local! {
    static TRACKING: Cell<bool> = const { Cell::new(false) };
    static LARGEST: Cell<usize> = const { Cell::new(0) };
}

fn note(size: usize) {
    let _ = TRACKING.try_with(|on| {
        if on.get() {
            let _ = LARGEST.try_with(|l| l.set(l.get().max(size)));
        }
    });
}

// SAFETY: every call goes to the system allocator with the caller's arguments unchanged;
// `note` only touches const-initialised thread-locals, which never allocate.
unsafe impl GlobalAlloc for Tracking {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        // SAFETY: forwarded as the caller gave it.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        // SAFETY: forwarded as the caller gave it.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded as the caller gave it.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note(new_size);
        // SAFETY: forwarded as the caller gave it.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Tracking = Tracking;

/// Runs `f`, returning its result and the largest single allocation it made.
fn largest_allocation<T>(f: impl FnOnce() -> T) -> (T, usize) {
    LARGEST.with(|l| l.set(0));
    TRACKING.with(|t| t.set(true));
    let r = f();
    TRACKING.with(|t| t.set(false));
    (r, LARGEST.with(|l| l.get()))
}

// ---- machines to save ------------------------------------------------------------------

/// xorshift64*: pseudo-random bytes that do not compress and repeat in no page.
fn fill_random(buf: &mut [u8], seed: u64) {
    let mut x = seed | 1;
    for chunk in buf.chunks_mut(8) {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        let v = x.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes();
        chunk.copy_from_slice(&v[..chunk.len()]);
    }
}

/// RAM of `pages` pages where pages with `i % 4 < 2` hold random data (half the RAM), the
/// others are zero but for page 3, whose last byte only is set.
fn ram_image(pages: usize) -> Vec<u8> {
    let mut ram = vec![0u8; pages * PAGE_SIZE];
    for (i, page) in ram.chunks_mut(PAGE_SIZE).enumerate() {
        if i % 4 < 2 {
            fill_random(page, i as u64 * 7919 + 1);
        }
    }
    if pages > 3 {
        ram[4 * PAGE_SIZE - 1] = 0x01;
    }
    ram
}

fn data_pages(ram: &[u8]) -> usize {
    ram.chunks(PAGE_SIZE).filter(|p| p.iter().any(|&b| b != 0)).count()
}

fn devices() -> Vec<DeviceState> {
    let uart = SerialState {
        interrupt_enable: 0x01,
        line_status: 0x61,
        in_buffer: b"typed ahead".to_vec(),
        ..SerialState::default()
    };
    vec![
        migration::serial_section(0, &uart),
        DeviceState::new(migration::GUEST_SHELL, 0, 1, 12_345_678u64.to_be_bytes().to_vec()),
    ]
}

fn save_to_vec(ram: &[u8], devices: &[DeviceState]) -> Vec<u8> {
    save_to_vec_as(ram, "pc", devices)
}

/// Saves on a thread of its own into `fd`; the result comes on the channel.
fn save_on_thread(
    fd: OwnedFd,
    ram: Arc<Mutex<Vec<u8>>>,
    devices: Vec<DeviceState>,
    progress: Arc<Progress>,
) -> mpsc::Receiver<Result<u64, Error>> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let r = BlockingWriter::new(fd).map_err(|e| Error::io("use the fd", 0, e)).and_then(|w| {
            migration::save(
                w,
                &Snapshot { machine_type: "pc", ram: &*ram, devices: &devices },
                &progress,
            )
        });
        let _ = tx.send(r);
    });
    rx
}

/// Bytes waiting to be read on `s` (FIONREAD).
fn queued(s: &UnixStream) -> usize {
    use std::os::fd::AsRawFd;
    let mut n: nix::libc::c_int = 0;
    // SAFETY: FIONREAD writes one int through the valid pointer given.
    let rc = unsafe { nix::libc::ioctl(s.as_raw_fd(), nix::libc::FIONREAD, &mut n) };
    assert_eq!(rc, 0, "FIONREAD: {}", std::io::Error::last_os_error());
    n as usize
}

fn reader(s: UnixStream) -> UnixStream {
    s.set_read_timeout(Some(DEADLINE)).unwrap();
    s
}

/// Reads `len` bytes, at most `piece` bytes at a time, pausing `pause` between reads: a
/// reader slower than the writer.
fn read_slowly(s: &mut UnixStream, len: usize, piece: usize, pause: Duration) -> Vec<u8> {
    let end = Instant::now() + DEADLINE;
    let mut all = Vec::new();
    let mut buf = vec![0u8; piece];
    while all.len() < len {
        assert!(Instant::now() < end, "the writer did not finish within {DEADLINE:?}");
        let want = piece.min(len - all.len());
        match s.read(&mut buf[..want]) {
            Ok(0) => break,
            Ok(n) => all.extend_from_slice(&buf[..n]),
            Err(e) => panic!("read after {} bytes: {e}", all.len()),
        }
        std::thread::sleep(pause);
    }
    all
}

// ---- an independent reading of a stream, from the reference's description ------------

/// What a stream holds, found without the module's parser.
#[derive(Debug, Default)]
struct Walk {
    machine_type: String,
    /// (type byte, section id, name for START and FULL)
    sections: Vec<(u8, u32, Option<String>)>,
    zero_records: usize,
    page_records: usize,
    /// Records that name their block (no CONTINUE flag).
    named_records: usize,
    page_data: Vec<Range<usize>>,
    device_data: Vec<Range<usize>>,
    /// Offsets of every section id field, in headers and footers.
    id_fields: Vec<usize>,
    /// Offset just after the RAM section's END (and its footer).
    ram_end: usize,
    eof_at: usize,
    vmdesc: Range<usize>,
}

struct Cursor<'a> {
    s: &'a [u8],
    at: usize,
}

impl Cursor<'_> {
    fn take(&mut self, n: usize) -> &[u8] {
        let v = &self.s[self.at..self.at + n];
        self.at += n;
        v
    }
    fn u8(&mut self) -> u8 {
        self.take(1)[0]
    }
    fn be32(&mut self) -> u32 {
        u32::from_be_bytes(self.take(4).try_into().unwrap())
    }
    fn be64(&mut self) -> u64 {
        u64::from_be_bytes(self.take(8).try_into().unwrap())
    }
    fn idstr(&mut self) -> String {
        let n = self.u8() as usize;
        String::from_utf8(self.take(n).to_vec()).unwrap()
    }
}

/// Walks `stream`; `state_len(name, rest)` says how many bytes a device's state takes
/// (QEMU's vmstate has no length of its own).
fn walk(stream: &[u8], state_len: &dyn Fn(&str, &[u8]) -> usize) -> Walk {
    let mut c = Cursor { s: stream, at: 0 };
    let mut w = Walk::default();
    assert_eq!(c.take(4), b"QEVM");
    assert_eq!(c.be32(), 3);
    assert_eq!(c.u8(), 0x07);
    let n = c.be32() as usize;
    w.machine_type = String::from_utf8(c.take(n).to_vec()).unwrap();
    let footer = |c: &mut Cursor<'_>, w: &mut Walk, id: u32| {
        assert_eq!(c.u8(), 0x7e, "footer at {}", c.at - 1);
        w.id_fields.push(c.at);
        assert_eq!(c.be32(), id);
    };
    loop {
        let kind = c.u8();
        match kind {
            0x01 | 0x04 => {
                w.id_fields.push(c.at);
                let id = c.be32();
                let name = c.idstr();
                let (_instance, _version) = (c.be32(), c.be32());
                w.sections.push((kind, id, Some(name.clone())));
                if kind == 0x01 {
                    let v = c.be64();
                    assert_eq!(v & 0xfff, 0x04, "MEM_SIZE");
                    let mut left = v & !0xfff;
                    while left > 0 {
                        let _block = c.idstr();
                        left -= c.be64();
                    }
                    assert_eq!(c.be64(), 0x10, "EOS");
                } else {
                    let len = state_len(&name, &stream[c.at..]);
                    w.device_data.push(c.at..c.at + len);
                    c.take(len);
                }
                footer(&mut c, &mut w, id);
            }
            0x02 | 0x03 => {
                w.id_fields.push(c.at);
                let id = c.be32();
                w.sections.push((kind, id, None));
                loop {
                    let v = c.be64();
                    if v == 0x10 {
                        break;
                    }
                    if v & 0x20 == 0 {
                        w.named_records += 1;
                        c.idstr();
                    }
                    match v & 0xfff & !0x20 {
                        0x02 => {
                            assert_eq!(c.u8(), 0);
                            w.zero_records += 1;
                        }
                        0x08 => {
                            w.page_data.push(c.at..c.at + PAGE_SIZE);
                            c.take(PAGE_SIZE);
                            w.page_records += 1;
                        }
                        flags => panic!("flags {flags:#x} at {}", c.at - 8),
                    }
                }
                footer(&mut c, &mut w, id);
                if kind == 0x03 {
                    w.ram_end = c.at;
                }
            }
            0x00 => {
                w.eof_at = c.at - 1;
                break;
            }
            other => panic!("section type {other:#x} at {}", c.at - 1),
        }
    }
    assert_eq!(c.u8(), 0x06, "QEMU_VM_VMDESCRIPTION");
    let len = c.be32() as usize;
    w.vmdesc = c.at..c.at + len;
    c.take(len);
    assert_eq!(c.at, stream.len(), "nothing after the vmdesc");
    w
}

/// How this module frames a device's state: a be32 size, then the bytes.
fn sized(_name: &str, rest: &[u8]) -> usize {
    4 + u32::from_be_bytes(rest[..4].try_into().unwrap()) as usize
}

fn vmdesc_json(stream: &[u8], w: &Walk) -> serde_json::Value {
    serde_json::from_slice(&stream[w.vmdesc.clone()]).unwrap()
}

// ---- round trips -----------------------------------------------------------------------

#[test]
fn a_64_mib_machine_crosses_a_socketpair_page_for_page() {
    let pages = (64 << 20) / PAGE_SIZE;
    let ram = ram_image(pages);
    assert_eq!(data_pages(&ram), pages / 2 + 1); // 32 MiB of random data, and page 3
    let devices = devices();
    let (a, b) = UnixStream::pair().unwrap();
    let progress = Arc::new(Progress::new());
    let saved = save_on_thread(
        a.into(),
        Arc::new(Mutex::new(ram.clone())),
        devices.clone(),
        Arc::clone(&progress),
    );

    let mut back = vec![0xeeu8; ram.len()];
    let incoming = migration::load(reader(b), "pc", &mut back).unwrap();
    let written = saved.recv_timeout(DEADLINE).unwrap().unwrap();

    let differing = back.chunks(PAGE_SIZE).zip(ram.chunks(PAGE_SIZE)).position(|(x, y)| x != y);
    assert_eq!(differing, None, "first page that differs");
    assert_eq!(incoming.devices, devices);
    assert_eq!(incoming.bytes, written);
    assert_eq!(incoming.data_pages as usize, pages / 2 + 1);
    assert_eq!(incoming.zero_pages as usize, pages / 2 - 1);
    let uart = migration::serial_state(incoming.device(migration::SERIAL, 0).unwrap()).unwrap();
    assert_eq!(uart.in_buffer, b"typed ahead");
    let stats = progress.ram();
    assert_eq!((stats.transferred, stats.remaining, stats.total), (written, 0, 64 << 20));
    assert_eq!((stats.normal as usize, stats.duplicate as usize), (pages / 2 + 1, pages / 2 - 1));
}

#[test]
fn the_stream_has_qemus_structure() {
    let ram = ram_image(2048 + 5); // more than two parts, the last one short
    let devices = devices();
    let stream = save_to_vec(&ram, &devices);
    let w = walk(&stream, &sized);

    // Header: magic, version 3, then the configuration section with the machine type.
    assert_eq!(&stream[..17], b"QEVM\x00\x00\x00\x03\x07\x00\x00\x00\x02pc\x01\x00");
    assert_eq!(w.machine_type, "pc");
    // The RAM section: START with "ram" instance 0 version 4 and one block "ram".
    assert_eq!(
        &stream[15..15 + 50],
        [
            &[0x01, 0, 0, 0, 1, 3][..],
            b"ram",
            &[0, 0, 0, 0, 0, 0, 0, 4],
            &((ram.len() as u64) | 4).to_be_bytes(),
            &[3],
            b"ram",
            &(ram.len() as u64).to_be_bytes(),
            &0x10u64.to_be_bytes(),
            &[0x7e, 0, 0, 0, 1],
        ]
        .concat()
    );
    // Then three PARTs (1024 + 1024 + 5 pages), END, and a FULL per device, ids in order.
    let kinds: Vec<(u8, u32)> = w.sections.iter().map(|(k, id, _)| (*k, *id)).collect();
    assert_eq!(kinds, [(1, 1), (2, 1), (2, 1), (2, 1), (3, 1), (4, 2), (4, 3)]);
    // A ZERO record for every zero page, a PAGE record for every other; one record names
    // the block, the rest continue it.
    assert_eq!(w.page_records, data_pages(&ram));
    assert_eq!(w.zero_records, ram.len() / PAGE_SIZE - data_pages(&ram));
    assert_eq!(w.named_records, 1);
    // The vmdesc names the SECTION_FULLs, in order, and the stream does not end in 0x00.
    let full: Vec<&str> =
        w.sections.iter().filter_map(|(k, _, n)| (*k == 4).then_some(n.as_deref()?)).collect();
    assert_eq!(full, ["serial", "guest-shell"]);
    let vmdesc = vmdesc_json(&stream, &w);
    assert_eq!(vmdesc["page_size"], 4096);
    let names: Vec<&str> =
        vmdesc["devices"].as_array().unwrap().iter().map(|d| d["name"].as_str().unwrap()).collect();
    assert_eq!(names, full);
    assert_eq!(w.eof_at, stream.len() - w.vmdesc.len() - 6);
    assert_ne!(stream.last(), Some(&0));
    // The vmdesc describes each state's layout truly: its field sizes add up to the bytes
    // in the section, as QEMU's analyze-migration.py needs.
    for (device, range) in vmdesc["devices"].as_array().unwrap().iter().zip(&w.device_data) {
        let sizes: u64 =
            device["fields"].as_array().unwrap().iter().map(|f| f["size"].as_u64().unwrap()).sum();
        assert_eq!(sizes as usize, range.len(), "{}", device["name"]);
    }
}

// ---- real QEMU -------------------------------------------------------------------------

/// QEMU's "timer" and "globalstate" states, sized as its vmdesc describes them.
fn qemu_loader() -> Loader<'static> {
    Loader::new("none").fixed_size("timer", 24).fixed_size("globalstate", 104)
}

/// What QEMU loaded at 0x3000 when the fixture was captured.
fn fixture_blob() -> Vec<u8> {
    let mut blob: Vec<u8> = (0..8192u32).map(|i| ((i * 7 + 3) % 256) as u8).collect();
    blob.extend_from_slice(b"QEMU 7.2 fixture page tail");
    blob
}

#[test]
fn a_stream_from_qemu_7_2_loads() {
    let mut ram = vec![0xffu8; 2 << 20];
    let incoming = qemu_loader().load(QEMU_STREAM, &mut ram).unwrap();

    let mut expected = vec![0u8; 2 << 20];
    expected[0x3000..0x3000 + 8218].copy_from_slice(&fixture_blob());
    assert!(ram == expected, "the RAM QEMU sent");
    assert_eq!((incoming.zero_pages, incoming.data_pages), (509, 3));
    assert_eq!(incoming.machine_type, "none");
    assert_eq!(incoming.bytes, QEMU_STREAM.len() as u64);
    let names: Vec<(&str, u32, u32)> =
        incoming.devices.iter().map(|d| (d.name.as_str(), d.instance_id, d.version_id)).collect();
    assert_eq!(names, [("timer", 0, 2), ("globalstate", 0, 1)]);
    // globalstate: a uint32 size, then the run state in a 100-byte buffer.
    let global = &incoming.device("globalstate", 0).unwrap().data;
    assert_eq!(&global[..12], b"\0\0\0\x08running\0");

    // The sizes given to the loader are the ones QEMU's vmdesc describes.
    let vmdesc: serde_json::Value =
        serde_json::from_str(incoming.vmdesc.as_deref().unwrap()).unwrap();
    for device in vmdesc["devices"].as_array().unwrap() {
        let sizes: u64 =
            device["fields"].as_array().unwrap().iter().map(|f| f["size"].as_u64().unwrap()).sum();
        let name = device["name"].as_str().unwrap();
        assert_eq!(migration::StateLayout::Fixed(sizes as usize), qemu_loader().layout(name));
    }

    // The independent walker agrees, and QEMU's stream too ends with the JSON, not 0x00.
    let w = walk(QEMU_STREAM, &|name, _| if name == "timer" { 24 } else { 104 });
    assert_eq!((w.zero_records, w.page_records, w.named_records), (509, 3, 1));
    assert_ne!(QEMU_STREAM.last(), Some(&0));
}

#[test]
fn our_framing_is_qemus_byte_for_byte() {
    // The same machine as the fixture's: "none", 2 MiB, the same bytes at 0x3000.
    let mut ram = vec![0u8; 2 << 20];
    ram[0x3000..0x3000 + 8218].copy_from_slice(&fixture_blob());
    let ours = save_to_vec_as(&ram, "none", &devices());
    let qemu_walk = walk(QEMU_STREAM, &|name, _| if name == "timer" { 24 } else { 104 });
    let our_walk = walk(&ours, &sized);

    // Section ids differ (QEMU numbered RAM 2, after "timer" and an inactive section); with
    // the id fields blanked, everything up to the end of the RAM section is the same bytes:
    // header, configuration, START, one PART of 512 records, END, and every footer.
    let blank = |s: &[u8], w: &Walk| {
        let mut s = s.to_vec();
        for &at in &w.id_fields {
            s[at..at + 4].fill(0);
        }
        s
    };
    let (q, o) = (blank(QEMU_STREAM, &qemu_walk), blank(&ours, &our_walk));
    assert_eq!(qemu_walk.ram_end, our_walk.ram_end);
    assert!(q[..qemu_walk.ram_end] == o[..our_walk.ram_end], "RAM sections differ");
    let kinds = |w: &Walk| w.sections.iter().map(|(k, _, _)| *k).collect::<Vec<_>>();
    assert_eq!(kinds(&qemu_walk), kinds(&our_walk)); // 1 2 3 4 4

    // Device sections: the walker read both streams' SECTION_FULLs (0x04, id, idstr,
    // instance, version, state, 0x7e and the same id) and found QEMU_VM_EOF then the vmdesc.
    assert_eq!((qemu_walk.device_data.len(), our_walk.device_data.len()), (2, 2));
    assert_eq!((QEMU_STREAM[qemu_walk.eof_at], ours[our_walk.eof_at]), (0, 0));
    // The vmdesc is written as QEMU writes it: its spacing, and its keys in its order.
    let prefix = "{\"page_size\": 4096, \"devices\": [{\"name\": \"";
    let keys =
        ["\"name\": ", "\"instance_id\": ", "\"vmsd_name\": ", "\"version\": ", "\"fields\": ["];
    for json in [&QEMU_STREAM[qemu_walk.vmdesc.clone()], &ours[our_walk.vmdesc.clone()]] {
        let json = std::str::from_utf8(json).unwrap();
        assert!(json.starts_with(prefix), "{json}");
        let at: Vec<usize> = keys.iter().map(|k| json.find(k).unwrap()).collect();
        assert!(at.windows(2).all(|w| w[0] < w[1]), "{json}");
    }
}

fn save_to_vec_as(ram: &[u8], machine_type: &str, devices: &[DeviceState]) -> Vec<u8> {
    let mut out = Vec::new();
    let ram = ram.to_vec();
    migration::save(&mut out, &Snapshot { machine_type, ram: &ram, devices }, &Progress::new())
        .unwrap();
    out
}

// ---- the blocking writer ---------------------------------------------------------------

#[test]
fn the_writer_blocks_when_its_socket_is_made_non_blocking_behind_its_back() {
    let ram = ram_image(1024); // 4 MiB, half of it data: far more than a socket buffers
    let devices = devices();
    let expected = save_to_vec(&ram, &devices);

    let (a, b) = UnixStream::pair().unwrap();
    let meddler_fd = a.try_clone().unwrap(); // the same open file description
    chardev::fd::set_nonblocking(&a, true).unwrap();
    let done = Arc::new(AtomicBool::new(false));
    let meddler = {
        let done = Arc::clone(&done);
        std::thread::spawn(move || {
            // Flip O_NONBLOCK for as long as the save runs, ending with it set.
            while !done.load(Ordering::Acquire) {
                chardev::fd::set_nonblocking(&meddler_fd, false).unwrap();
                chardev::fd::set_nonblocking(&meddler_fd, true).unwrap();
                std::thread::yield_now();
            }
        })
    };
    let saved =
        save_on_thread(a.into(), Arc::new(Mutex::new(ram)), devices, Arc::new(Progress::new()));
    // A reader that starts late and reads in small pieces: the writer meets a full socket
    // with O_NONBLOCK set again and again.
    let mut b = reader(b);
    let end = Instant::now() + DEADLINE;
    while queued(&b) < 64 * 1024 {
        assert!(Instant::now() < end, "the save never filled the socket");
        std::thread::sleep(Duration::from_millis(1));
    }
    let got = read_slowly(&mut b, expected.len(), 3000, Duration::from_micros(20));
    let written = saved.recv_timeout(DEADLINE).unwrap();
    done.store(true, Ordering::Release);
    meddler.join().unwrap(); // its copy of the fd closes: the stream ends here
    let mut after = Vec::new();
    b.read_to_end(&mut after).unwrap();

    assert_eq!(written.unwrap(), expected.len() as u64);
    assert_eq!((got.len(), after.len()), (expected.len(), 0));
    assert!(got == expected, "the stream differs from the one a fast reader got");
}

#[test]
fn a_regular_file_takes_the_stream() {
    let ram = ram_image(300);
    let devices = devices();
    let file = tempfile::tempfile().unwrap();
    let out = BlockingWriter::new(file.try_clone().unwrap().into()).unwrap();
    let snapshot = Snapshot { machine_type: "pc", ram: &ram, devices: &devices };
    let written = migration::save(out, &snapshot, &Progress::new()).unwrap();

    let mut stream = Vec::new();
    std::io::Seek::rewind(&mut &file).unwrap(); // the offset is shared with the writer's fd
    (&file).read_to_end(&mut stream).unwrap();
    assert_eq!(written, stream.len() as u64);
    assert!(stream == save_to_vec(&ram, &devices));
    std::io::Seek::rewind(&mut &file).unwrap();
    let mut back = vec![0u8; ram.len()];
    migration::load(&file, "pc", &mut back).unwrap();
    assert!(back == ram);
}

#[test]
fn a_reader_that_leaves_early_is_an_epipe_error() {
    let ram = Arc::new(Mutex::new(ram_image(1024)));

    // A socket: the reader takes 100 KB and closes.
    let (a, mut b) = UnixStream::pair().unwrap();
    let saved = save_on_thread(a.into(), Arc::clone(&ram), devices(), Arc::new(Progress::new()));
    b.set_read_timeout(Some(DEADLINE)).unwrap();
    let mut first = vec![0u8; 100_000];
    b.read_exact(&mut first).unwrap();
    drop(b);
    let e = saved.recv_timeout(DEADLINE).unwrap().unwrap_err();
    assert!(
        e.to_string().starts_with("migration: cannot write the migration stream (at byte "),
        "{e}"
    );
    match e {
        Error::Io { source, offset, .. } => {
            assert_eq!(source.kind(), std::io::ErrorKind::BrokenPipe);
            assert!(offset >= 100_000);
        }
        other => panic!("{other}"),
    }

    // A pipe, non-blocking: the same.
    let (r, w) = nix::unistd::pipe().unwrap();
    chardev::fd::set_nonblocking(&w, true).unwrap();
    let saved = save_on_thread(w, Arc::clone(&ram), devices(), Arc::new(Progress::new()));
    let mut r = std::fs::File::from(r);
    let mut got = 0;
    while got < 10_000 {
        // A pipe has no read timeout: poll first, so that a stalled writer fails the test.
        let ready = chardev::fd::wait_readable(std::os::fd::AsFd::as_fd(&r), Some(DEADLINE));
        assert!(ready.unwrap(), "nothing from the pipe within {DEADLINE:?} after {got} bytes");
        let n = r.read(&mut first[got..10_000]).unwrap();
        assert!(n > 0, "the writer closed the pipe after {got} bytes");
        got += n;
    }
    drop(r);
    let e = saved.recv_timeout(DEADLINE).unwrap().unwrap_err();
    match e {
        Error::Io { source, .. } => assert_eq!(source.kind(), std::io::ErrorKind::BrokenPipe),
        other => panic!("{other}"),
    }
}

#[test]
fn a_socket_whose_reader_left_raises_no_sigpipe() {
    use nix::sys::signal::{SigSet, Signal};
    use nix::sys::signalfd::{SfdFlags, SignalFd};
    // Rust ignores SIGPIPE, so a write without MSG_NOSIGNAL would return EPIPE too; a
    // blocked signal stays pending even when ignored, so a signalfd shows whether the
    // kernel raised one. Blocked on this thread only, and the writes happen here.
    let mut pipe_signal = SigSet::empty();
    pipe_signal.add(Signal::SIGPIPE);
    pipe_signal.thread_block().unwrap();
    let sfd = SignalFd::with_flags(&pipe_signal, SfdFlags::SFD_NONBLOCK).unwrap();

    let (a, b) = UnixStream::pair().unwrap();
    drop(b);
    let mut w = BlockingWriter::new(a.into()).unwrap();
    w.write_all(b"state").unwrap(); // buffered
    let e = w.flush().unwrap_err();
    let raised_by_send = sfd.read_signal().unwrap();

    // The detector works: write(2) on a pipe without a reader raises it.
    let (r, pw) = nix::unistd::pipe().unwrap();
    drop(r);
    let e2 = std::fs::File::from(pw).write(b"x").unwrap_err();
    let raised_by_write = sfd.read_signal().unwrap();
    pipe_signal.thread_unblock().unwrap();

    assert_eq!(e.kind(), std::io::ErrorKind::BrokenPipe);
    assert_eq!(e2.kind(), std::io::ErrorKind::BrokenPipe);
    assert!(raised_by_send.is_none(), "send raised SIGPIPE");
    assert!(raised_by_write.is_some(), "the signalfd did not see write(2)'s SIGPIPE");
}

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
    match migration::load(&got[..], "pc", &mut back) {
        Err(Error::Truncated { offset, .. }) => assert_eq!(offset, got.len() as u64),
        other => panic!("{other:?}"),
    }
}

// ---- corrupt and truncated streams -----------------------------------------------------

/// A small machine's stream: 8 pages, 3 with data.
fn small_stream() -> (Vec<u8>, Vec<u8>, Vec<DeviceState>) {
    let mut ram = vec![0u8; 8 * PAGE_SIZE];
    fill_random(&mut ram[PAGE_SIZE..2 * PAGE_SIZE], 1);
    fill_random(&mut ram[2 * PAGE_SIZE..3 * PAGE_SIZE], 2);
    ram[7 * PAGE_SIZE] = 0x80;
    let devices = devices();
    let stream = save_to_vec(&ram, &devices);
    (ram, stream, devices)
}

#[test]
fn every_flipped_byte_is_an_error_or_lands_in_the_data() {
    let (ram, stream, devices) = small_stream();
    let w = walk(&stream, &sized);
    let inside = |ranges: &[Range<usize>], at: usize| ranges.iter().position(|r| r.contains(&at));
    let mut loaded_in_data = 0;
    let mut vmdesc_flips = (0, 0); // (loaded, refused)
    for at in 0..stream.len() {
        for mask in [0x01u8, 0x80, 0xff] {
            let mut bad = stream.clone();
            bad[at] ^= mask;
            let mut back = vec![0u8; ram.len()];
            let r = migration::load(&bad[..], "pc", &mut back);
            if let Some(i) = inside(&w.page_data, at) {
                // No checksum: the page loads with that byte changed, and nothing else does.
                let incoming = r.unwrap_or_else(|e| panic!("flip {mask:#x} at {at}: {e}"));
                let offset = at - w.page_data[i].start;
                let page_start = back
                    .chunks(PAGE_SIZE)
                    .zip(ram.chunks(PAGE_SIZE))
                    .position(|(x, y)| x != y)
                    .unwrap()
                    * PAGE_SIZE;
                assert_eq!(back[page_start + offset], ram[page_start + offset] ^ mask);
                back[page_start + offset] ^= mask;
                assert!(back == ram);
                assert_eq!(incoming.devices, devices);
                loaded_in_data += 1;
            } else if let Some(i) =
                inside(&w.device_data, at).filter(|&i| at >= w.device_data[i].start + 4)
            {
                // Inside a device's state (after its size): the state changes, opaque to
                // the stream; its own decoder judges it.
                let incoming = r.unwrap_or_else(|e| panic!("flip {mask:#x} at {at}: {e}"));
                let mut changed = devices.clone();
                changed[i].data[at - w.device_data[i].start - 4] ^= mask;
                assert_eq!(incoming.devices, changed);
                assert!(back == ram);
                loaded_in_data += 1;
            } else if w.vmdesc.contains(&at) {
                // The vmdesc's names, instance ids, versions and page size are checked;
                // the rest of it only describes and may change.
                match r {
                    Ok(incoming) => {
                        assert!(back == ram);
                        assert_eq!(incoming.devices, devices);
                        vmdesc_flips.0 += 1;
                    }
                    Err(Error::Format { offset, .. }) => {
                        assert_eq!(offset, w.vmdesc.start as u64);
                        vmdesc_flips.1 += 1;
                    }
                    Err(e) => panic!("flip {mask:#x} at {at}: {e:?}"),
                }
            } else {
                let e = r.expect_err(&format!("flip {mask:#x} at {at} loaded"));
                assert!(
                    matches!(
                        e,
                        Error::Format { .. }
                            | Error::Truncated { .. }
                            | Error::RamSize { .. }
                            | Error::MachineType { .. }
                    ),
                    "flip {mask:#x} at {at}: {e:?}"
                );
            }
        }
    }
    assert!(loaded_in_data > 3 * PAGE_SIZE * 3);
    // Most of the vmdesc is names, numbers and syntax, which are checked.
    assert!(vmdesc_flips.1 > vmdesc_flips.0, "{vmdesc_flips:?}");
}

#[test]
fn every_truncation_is_an_error_but_the_missing_vmdesc() {
    let (ram, stream, _) = small_stream();
    let w = walk(&stream, &sized);
    for len in 0..stream.len() {
        let mut back = vec![0u8; ram.len()];
        let r = migration::load(&stream[..len], "pc", &mut back);
        if len == w.eof_at + 1 {
            // Ends right after QEMU_VM_EOF: accepted, as QEMU accepts it, with no vmdesc.
            assert_eq!(r.unwrap().vmdesc, None);
            assert!(back == ram);
            continue;
        }
        match r {
            Err(Error::Truncated { offset, .. }) => assert_eq!(offset, len as u64, "at {len}"),
            other => panic!("truncated at {len}: {other:?}"),
        }
    }
}

#[test]
fn huge_length_fields_allocate_nothing_huge() {
    let (ram, stream, _) = small_stream();
    let w = walk(&stream, &sized);
    let set_be32 = |at: usize, v: u32| {
        let mut s = stream.clone();
        s[at..at + 4].copy_from_slice(&v.to_be_bytes());
        s
    };
    let serial_size_at = w.device_data[0].start;
    let vmdesc_len_at = w.vmdesc.start - 4;
    let cases = [
        // the machine type's length
        (set_be32(9, u32::MAX), "byte 9: machine type length 4294967295 exceeds the limit of 256"),
        (
            set_be32(serial_size_at, u32::MAX),
            "claims 4294967295 bytes, more than the limit of 1048576",
        ),
        (set_be32(serial_size_at, migration::MAX_DEVICE_STATE_LEN as u32), "ends at byte"),
        (
            set_be32(vmdesc_len_at, u32::MAX),
            "vmdesc length 4294967295 exceeds the limit of 16777216",
        ),
        (set_be32(vmdesc_len_at, migration::MAX_VMDESC_LEN as u32), "inside the vmdesc"),
    ];
    for (bad, expected) in cases {
        let mut back = vec![0u8; ram.len()];
        let (r, largest) =
            largest_allocation(|| migration::load(&bad[..], "pc", &mut back).map(|_| ()));
        let e = r.unwrap_err().to_string();
        assert!(e.contains(expected), "{e}\nexpected: {expected}");
        assert!(largest <= 128 * 1024, "{expected}: an allocation of {largest} bytes");
    }
    // The whole stream, loaded, allocates no more than its own size: the reader's buffer.
    let mut back = vec![0u8; ram.len()];
    let (r, largest) =
        largest_allocation(|| migration::load(&stream[..], "pc", &mut back).map(|_| ()));
    r.unwrap();
    assert!(largest <= 64 * 1024, "largest allocation {largest}");
}

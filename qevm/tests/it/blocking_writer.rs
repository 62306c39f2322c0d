//! The blocking writer: it stays blocking when its socket is made non-blocking behind its
//! back, takes a regular file, and turns a reader that left into an `EPIPE` error without
//! a SIGPIPE.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use qevm::{BlockingWriter, Error, Progress, Snapshot};

use crate::{
    devices, ram_image, reader, save_on_thread, save_to_vec, set_nonblocking, wait_readable,
    DEADLINE,
};

/// Bytes waiting to be read on `s` (FIONREAD).
fn queued(s: &UnixStream) -> usize {
    use std::os::fd::AsRawFd;
    let mut n: nix::libc::c_int = 0;
    // SAFETY: FIONREAD writes one int through the valid pointer given.
    let rc = unsafe { nix::libc::ioctl(s.as_raw_fd(), nix::libc::FIONREAD, &mut n) };
    assert_eq!(rc, 0, "FIONREAD: {}", std::io::Error::last_os_error());
    n as usize
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

#[test]
fn the_writer_blocks_when_its_socket_is_made_non_blocking_behind_its_back() {
    let ram = ram_image(1024); // 4 MiB, half of it data: far more than a socket buffers
    let devices = devices();
    let expected = save_to_vec(&ram, &devices);

    let (a, b) = UnixStream::pair().unwrap();
    let meddler_fd = a.try_clone().unwrap(); // the same open file description
    set_nonblocking(&a, true).unwrap();
    let done = Arc::new(AtomicBool::new(false));
    let meddler = {
        let done = Arc::clone(&done);
        std::thread::spawn(move || {
            // Flip O_NONBLOCK for as long as the save runs, ending with it set.
            while !done.load(Ordering::Acquire) {
                set_nonblocking(&meddler_fd, false).unwrap();
                set_nonblocking(&meddler_fd, true).unwrap();
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
    let written = qevm::save(out, &snapshot, &Progress::new()).unwrap();

    let mut stream = Vec::new();
    std::io::Seek::rewind(&mut &file).unwrap(); // the offset is shared with the writer's fd
    (&file).read_to_end(&mut stream).unwrap();
    assert_eq!(written, stream.len() as u64);
    assert!(stream == save_to_vec(&ram, &devices));
    std::io::Seek::rewind(&mut &file).unwrap();
    let mut back = vec![0u8; ram.len()];
    qevm::load(&file, "pc", &mut back).unwrap();
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
    set_nonblocking(&w, true).unwrap();
    let saved = save_on_thread(w, Arc::clone(&ram), devices(), Arc::new(Progress::new()));
    let mut r = std::fs::File::from(r);
    let mut got = 0;
    while got < 10_000 {
        // A pipe has no read timeout: poll first, so that a stalled writer fails the test.
        let ready = wait_readable(&r, DEADLINE);
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

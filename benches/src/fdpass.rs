//! P6, fd passing: a peer sends messages of one byte and one fd (SCM_RIGHTS) into a unix
//! socket chardev, whose loop makes each fd blocking and close-on-exec (the fd contract)
//! and hands it to a frontend that drops it; against a blocking `recvmsg` loop on a
//! socketpair that does the same to each fd.
//!
//! The sender is the same in both: one thread sending the same blocking fd (`/dev/null`)
//! again and again, so that the receiver's contract check finds it blocking already and
//! costs two `fcntl` reads, as it does for well-behaved peers.

use std::fs::File;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::mpsc::channel;
use std::time::Instant;

use chardev::fd::{make_passed_fd_blocking, recv_with_fds, send_with_fds};

use crate::fixture::{timed_feed, wait_opened, Chardevs, FdSink};
use crate::peer::{self, STARTUP};
use crate::proc_status::{cpu_time, Who};
use crate::{transfer_deadline, Context, Result, Transfer};

/// Sends `count` one-byte messages, each with `fd` attached.
fn send(socket: &UnixStream, fd: &File, count: u64) -> std::io::Result<()> {
    for _ in 0..count {
        let n = send_with_fds(socket.as_fd(), b"F", &[fd.as_fd()])?;
        if n != 1 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
    }
    Ok(())
}

/// `count` fds from a peer into a unix socket chardev's frontend (a socket under `dir`).
/// With `check`, the frontend also checks that each fd arrived blocking.
pub fn chardev(dir: &Path, count: u64, check: bool) -> Result<Transfer> {
    let chardevs = Chardevs::new()?;
    let path = dir.join("p6.sock");
    let handle = chardevs.unix_server("p6", &path, "")?;
    let (tx, notes) = channel();
    handle.set_frontend(FdSink::new(count, check, tx));
    let peer = peer::connect(&path)?;
    let fd = File::open("/dev/null").context("open /dev/null")?;
    wait_opened(&notes, STARTUP)?;
    timed_feed(chardevs, &notes, transfer_deadline(count * 1000), move || send(&peer, &fd, count))
}

/// The baseline: `count` fds through a socketpair into a blocking `recvmsg` loop that makes
/// each fd blocking (it already is) and closes it.
pub fn raw(count: u64, check: bool) -> Result<Transfer> {
    let (tx, rx) = UnixStream::pair().context("socketpair")?;
    rx.set_read_timeout(Some(transfer_deadline(count * 1000))).context("set a read timeout")?;
    let fd = File::open("/dev/null").context("open /dev/null")?;
    let mut buf = vec![0u8; 64 * 1024];
    let mut fds: Vec<OwnedFd> = Vec::with_capacity(chardev::fd::MAX_FDS_PER_MESSAGE);
    let (mut bytes, mut received) = (0u64, 0u64);

    let cpu = cpu_time(Who::Process)?;
    let start = Instant::now();
    let sender = std::thread::spawn(move || send(&tx, &fd, count));
    while received < count {
        let got = recv_with_fds(rx.as_fd(), &mut buf, &mut fds).context("recvmsg")?;
        if got.bytes == 0 {
            break;
        }
        bytes += got.bytes as u64;
        for fd in fds.drain(..) {
            make_passed_fd_blocking(fd.as_fd()).context("make a received fd blocking")?;
            if check && chardev::fd::is_nonblocking(&fd).context("check a received fd")? {
                return Err("a received fd is not blocking".into());
            }
            received += 1;
        }
    }
    let at = Instant::now();
    sender.join().map_err(|_| "the sender panicked")?.context("send fds into the socketpair")?;
    let cpu = cpu_time(Who::Process)? - cpu;
    if received != count || bytes != count {
        return Err(format!("{received} fds and {bytes} bytes arrived, {count} of each sent"));
    }
    Ok(Transfer { units: received, elapsed: at - start, cpu })
}

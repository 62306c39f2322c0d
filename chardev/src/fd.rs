//! The fd contract (the seed): blocking mode, close-on-exec and ownership of file descriptors.
//!
//! File descriptors that reach a frontend are blocking, whatever state their sender left them
//! in; code that wants non-blocking I/O on an fd sets it itself with [`set_nonblocking`]. These
//! helpers work on any fd kind (file, pipe, pty, socket), read the flags before they write
//! them, make no second syscall when the fd is already in the wanted state, and return every
//! error instead of swallowing it (QEMU's `qemu_socket_set_block` ignores fcntl failures).
//!
//! Ownership is in the types: functions lend with [`BorrowedFd`]/[`AsFd`] and hand out
//! [`OwnedFd`]. A raw fd number enters the library in exactly one place, [`take_inherited`],
//! the `fd=N` boundary.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use nix::errno::Errno;
use nix::fcntl::{fcntl, FcntlArg, FdFlag, OFlag};

use crate::error::{Error, Result};

/// Turns `O_NONBLOCK` on or off for `fd`, changing nothing when it is already so.
///
/// The flag lives on the open file description, which other processes holding the same
/// description see too: a frontend that makes a passed fd non-blocking changes its sender's
/// copy as well, which is why the library never does it on their behalf.
pub fn set_nonblocking(fd: impl AsFd, nonblocking: bool) -> Result<()> {
    let fd = fd.as_fd();
    let flags = OFlag::from_bits_retain(
        fcntl(fd, FcntlArg::F_GETFL)
            .map_err(|e| Error::io("read the status flags of an fd", e.into()))?,
    );
    if flags.contains(OFlag::O_NONBLOCK) == nonblocking {
        return Ok(());
    }
    let new = if nonblocking { flags | OFlag::O_NONBLOCK } else { flags - OFlag::O_NONBLOCK };
    fcntl(fd, FcntlArg::F_SETFL(new))
        .map_err(|e| Error::io("set O_NONBLOCK on an fd", e.into()))?;
    Ok(())
}

/// Turns close-on-exec on or off for `fd`, changing nothing when it is already so.
pub fn set_cloexec(fd: impl AsFd, cloexec: bool) -> Result<()> {
    let fd = fd.as_fd();
    let flags = FdFlag::from_bits_retain(
        fcntl(fd, FcntlArg::F_GETFD)
            .map_err(|e| Error::io("read the fd flags of an fd", e.into()))?,
    );
    if flags.contains(FdFlag::FD_CLOEXEC) == cloexec {
        return Ok(());
    }
    let new = if cloexec { flags | FdFlag::FD_CLOEXEC } else { flags - FdFlag::FD_CLOEXEC };
    fcntl(fd, FcntlArg::F_SETFD(new))
        .map_err(|e| Error::io("set FD_CLOEXEC on an fd", e.into()))?;
    Ok(())
}

/// Whether `O_NONBLOCK` is set on `fd`.
pub fn is_nonblocking(fd: impl AsFd) -> Result<bool> {
    let flags = fcntl(fd.as_fd(), FcntlArg::F_GETFL)
        .map_err(|e| Error::io("read the status flags of an fd", e.into()))?;
    Ok(OFlag::from_bits_retain(flags).contains(OFlag::O_NONBLOCK))
}

/// Whether close-on-exec is set on `fd`.
pub fn is_cloexec(fd: impl AsFd) -> Result<bool> {
    let flags = fcntl(fd.as_fd(), FcntlArg::F_GETFD)
        .map_err(|e| Error::io("read the fd flags of an fd", e.into()))?;
    Ok(FdFlag::from_bits_retain(flags).contains(FdFlag::FD_CLOEXEC))
}

/// Makes a freshly received fd follow the contract: blocking and close-on-exec.
///
/// Called on every fd that arrives over SCM_RIGHTS before any frontend can see it.
pub fn make_passed_fd_blocking(fd: BorrowedFd<'_>) -> Result<()> {
    set_nonblocking(fd, false)?;
    set_cloexec(fd, true)
}

/// Takes ownership of an fd number the process inherited (`fd=N` on a command line).
///
/// The number must name an open fd, which from now on belongs to the returned `OwnedFd` and
/// is closed with it; it is made close-on-exec so that it does not leak into children.
pub fn take_inherited(fd: RawFd) -> Result<OwnedFd> {
    if fd < 0 {
        return Err(Error::option("fd", &fd.to_string(), "is not a file descriptor number"));
    }
    // Check that the number is open before anything claims it.
    fcntl_getfd(fd).map_err(|e| Error::Io {
        op: "use inherited fd",
        path: Some(format!("fd {fd}").into()),
        source: e.into(),
    })?;
    // SAFETY: the fd is open (F_GETFD succeeded) and the user handed us this number with
    // `fd=N`, which transfers it to us as QEMU's `fd=` does: nothing else in the process
    // owns or closes it from here on.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    set_cloexec(&owned, true)?;
    Ok(owned)
}

fn fcntl_getfd(fd: RawFd) -> std::result::Result<(), Errno> {
    // SAFETY: F_GETFD only reads the descriptor table entry; on a closed number the kernel
    // answers EBADF and nothing happens.
    let r = unsafe { nix::libc::fcntl(fd, nix::libc::F_GETFD) };
    Errno::result(r).map(drop)
}

/// Duplicates `fd` into a new close-on-exec `OwnedFd`.
pub fn dup(fd: impl AsFd) -> Result<OwnedFd> {
    fd.as_fd().try_clone_to_owned().map_err(|e| Error::io("duplicate an fd", e))
}

/// Waits until `fd` is writable (or has hung up), for at most `timeout` (`None`: for ever).
///
/// This is how `write_all` waits for a peer to drain: the kernel wakes us, nothing sleeps
/// and retries. Returns `Ok(true)` when the fd can take more (or the next write will report
/// the hang-up), `Ok(false)` on timeout.
pub fn wait_writable(fd: BorrowedFd<'_>, timeout: Option<std::time::Duration>) -> io::Result<bool> {
    wait_for(fd, nix::poll::PollFlags::POLLOUT, timeout)
}

/// Waits until `fd` is readable (or has hung up), for at most `timeout` (`None`: for ever).
pub fn wait_readable(fd: BorrowedFd<'_>, timeout: Option<std::time::Duration>) -> io::Result<bool> {
    wait_for(fd, nix::poll::PollFlags::POLLIN, timeout)
}

fn wait_for(
    fd: BorrowedFd<'_>,
    flags: nix::poll::PollFlags,
    timeout: Option<std::time::Duration>,
) -> io::Result<bool> {
    use nix::poll::{poll, PollFd, PollTimeout};
    let deadline = timeout.map(|t| std::time::Instant::now() + t);
    loop {
        let left = match deadline {
            None => PollTimeout::NONE,
            Some(d) => {
                let ms = d.saturating_duration_since(std::time::Instant::now()).as_millis();
                PollTimeout::try_from(ms.min(i32::MAX as u128) as i32).unwrap_or(PollTimeout::MAX)
            }
        };
        let mut fds = [PollFd::new(fd, flags)];
        match poll(&mut fds, left) {
            Ok(0) => return Ok(false),
            Ok(_) => return Ok(true),
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

/// The raw number of `fd`, for log lines and filenames only.
pub fn number(fd: impl AsFd) -> RawFd {
    fd.as_fd().as_raw_fd()
}

/// At most this many fds are kept from one message (QEMU's `SOCKET_MAX_FDS`); the kernel
/// closes the rest and reports it as control-data truncation.
pub const MAX_FDS_PER_MESSAGE: usize = 16;

/// What one [`recv_with_fds`] got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Received {
    /// Bytes placed in the buffer; 0 means the peer closed the stream.
    pub bytes: usize,
    /// Fds were sent that did not fit (`MSG_CTRUNC`): the kernel closed them.
    pub truncated: bool,
}

/// Control buffer for [`MAX_FDS_PER_MESSAGE`] fds, aligned as `cmsghdr` wants. It lives on
/// the stack: receiving never allocates.
#[repr(C, align(8))]
struct ControlBuffer([u8; 128]);

/// Receives bytes and SCM_RIGHTS fds from a stream socket, without blocking on a
/// non-blocking socket. Every fd becomes an [`OwnedFd`] at once, close-on-exec from the
/// start (`MSG_CMSG_CLOEXEC`); they are appended to `fds`. Their O_NONBLOCK state is left as
/// the sender had it: the event loop clears it before a frontend sees them.
pub fn recv_with_fds(
    socket: BorrowedFd<'_>,
    buf: &mut [u8],
    fds: &mut Vec<OwnedFd>,
) -> io::Result<Received> {
    use nix::libc;
    const _: () = assert!(
        std::mem::size_of::<ControlBuffer>()
            >= (std::mem::size_of::<libc::cmsghdr>() + 4 * MAX_FDS_PER_MESSAGE + 8)
    );
    let mut control = ControlBuffer([0; 128]);
    // Only room for MAX_FDS_PER_MESSAGE fds is offered, so the kernel truncates beyond it.
    // SAFETY: CMSG_SPACE only computes a size.
    let control_len = unsafe { libc::CMSG_SPACE((4 * MAX_FDS_PER_MESSAGE) as u32) } as usize;
    let mut iov = libc::iovec { iov_base: buf.as_mut_ptr().cast(), iov_len: buf.len() };
    // SAFETY: an all-zero msghdr is a valid "no name, no iov, no control" header.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.0.as_mut_ptr().cast();
    msg.msg_controllen = control_len.min(control.0.len()) as _;
    let n = loop {
        // SAFETY: msg points at our live buffer and control area, with their true lengths.
        let n = unsafe { libc::recvmsg(socket.as_raw_fd(), &mut msg, libc::MSG_CMSG_CLOEXEC) };
        if n >= 0 {
            break n as usize;
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    };
    // Walk every control message (libuv #4358: process them all, so none leaks).
    // SAFETY: msg was filled by recvmsg; the CMSG macros stay within msg_controllen.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
        while !cmsg.is_null() {
            let hdr = &*cmsg;
            if hdr.cmsg_level == libc::SOL_SOCKET && hdr.cmsg_type == libc::SCM_RIGHTS {
                let data = libc::CMSG_DATA(cmsg);
                let len = hdr.cmsg_len as usize - (data as usize - cmsg as usize);
                for i in 0..len / 4 {
                    let raw = std::ptr::read_unaligned(data.cast::<RawFd>().add(i));
                    // SAFETY: the kernel just installed this fd in our table for us alone.
                    fds.push(OwnedFd::from_raw_fd(raw));
                }
            }
            cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
        }
    }
    Ok(Received { bytes: n, truncated: msg.msg_flags & libc::MSG_CTRUNC != 0 })
}

/// Sends bytes on a stream socket with `fds` attached (SCM_RIGHTS) when there are any, and
/// never raises SIGPIPE (`MSG_NOSIGNAL`): a vanished peer is an `EPIPE` error.
pub fn send_with_fds(
    socket: BorrowedFd<'_>,
    buf: &[u8],
    fds: &[BorrowedFd<'_>],
) -> io::Result<usize> {
    use nix::libc;
    if fds.len() > MAX_FDS_PER_MESSAGE {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("Only {MAX_FDS_PER_MESSAGE} FDs can be sent, got {}", fds.len()),
        ));
    }
    let mut control = ControlBuffer([0; 128]);
    let mut iov = libc::iovec { iov_base: buf.as_ptr() as *mut _, iov_len: buf.len() };
    // SAFETY: an all-zero msghdr is a valid "no name, no iov, no control" header.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    if !fds.is_empty() {
        let payload = (4 * fds.len()) as u32;
        msg.msg_control = control.0.as_mut_ptr().cast();
        // SAFETY: CMSG_SPACE/CMSG_LEN only compute sizes; the buffer holds 16 fds (checked
        // above), and CMSG_FIRSTHDR/CMSG_DATA point inside it.
        unsafe {
            msg.msg_controllen = libc::CMSG_SPACE(payload) as _;
            let cmsg = libc::CMSG_FIRSTHDR(&msg);
            (*cmsg).cmsg_level = libc::SOL_SOCKET;
            (*cmsg).cmsg_type = libc::SCM_RIGHTS;
            (*cmsg).cmsg_len = libc::CMSG_LEN(payload) as _;
            let data = libc::CMSG_DATA(cmsg).cast::<RawFd>();
            for (i, fd) in fds.iter().enumerate() {
                std::ptr::write_unaligned(data.add(i), fd.as_raw_fd());
            }
        }
    }
    loop {
        // SAFETY: msg points at the caller's bytes and our control area, with true lengths;
        // the fds are borrowed and stay open for the call.
        let n = unsafe { libc::sendmsg(socket.as_raw_fd(), &msg, libc::MSG_NOSIGNAL) };
        if n >= 0 {
            return Ok(n as usize);
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// Sends several buffers on a stream socket in one `sendmsg` (at most `IOV_MAX` of them),
/// never raising SIGPIPE (`MSG_NOSIGNAL`). Returns the bytes sent; may be partial.
pub fn send_vectored(socket: BorrowedFd<'_>, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
    use nix::libc;
    const IOV_MAX: usize = 1024;
    let bufs = &bufs[..bufs.len().min(IOV_MAX)];
    // SAFETY: an all-zero msghdr is a valid "no name, no iov, no control" header.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    // IoSlice is guaranteed ABI-compatible with iovec on Unix.
    msg.msg_iov = bufs.as_ptr() as *mut libc::iovec;
    msg.msg_iovlen = bufs.len() as _;
    loop {
        // SAFETY: msg points at the caller's live slices with their true lengths; the kernel
        // only reads them.
        let n = unsafe { libc::sendmsg(socket.as_raw_fd(), &msg, libc::MSG_NOSIGNAL) };
        if n >= 0 {
            return Ok(n as usize);
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// A pipe to move bytes between two fds inside the kernel with [`splice`]: both ends
/// non-blocking and close-on-exec, `(read end, write end)`, and its capacity: `size` where
/// the kernel allows it (`F_SETPIPE_SZ`, capped by `/proc/sys/fs/pipe-max-size` for
/// unprivileged users), else the default (64 KiB).
pub fn splice_pipe(size: usize) -> io::Result<(OwnedFd, OwnedFd, usize)> {
    let (r, w) = nix::unistd::pipe2(OFlag::O_NONBLOCK | OFlag::O_CLOEXEC)?;
    let wanted = i32::try_from(size).unwrap_or(i32::MAX);
    let capacity = match fcntl(&w, FcntlArg::F_SETPIPE_SZ(wanted)) {
        Ok(n) => n,
        Err(_) => fcntl(&w, FcntlArg::F_GETPIPE_SZ)?,
    };
    Ok((r, w, usize::try_from(capacity).unwrap_or(0)))
}

/// Moves up to `len` bytes from `from` to `to` with splice(2), one of them a pipe, without
/// blocking on the pipe (`SPLICE_F_NONBLOCK`; a non-blocking socket does not block either).
/// The bytes never reach user space. Returns how many moved; 0 at the end of `from`. Like
/// write(2), a splice into a socket whose peer has gone raises SIGPIPE unless it is ignored
/// (the Rust runtime ignores it).
pub fn splice(from: BorrowedFd<'_>, to: BorrowedFd<'_>, len: usize) -> io::Result<usize> {
    loop {
        // SAFETY: both fds are open for the call (borrowed); null offsets use and move the
        // files' own positions, as splice(2) requires for pipes and sockets.
        let n = unsafe {
            nix::libc::splice(
                from.as_raw_fd(),
                std::ptr::null_mut(),
                to.as_raw_fd(),
                std::ptr::null_mut(),
                len,
                nix::libc::SPLICE_F_MOVE | nix::libc::SPLICE_F_NONBLOCK,
            )
        };
        match usize::try_from(n) {
            Ok(n) => return Ok(n),
            Err(_) => {
                let e = io::Error::last_os_error();
                if e.kind() != io::ErrorKind::Interrupted {
                    return Err(e);
                }
            }
        }
    }
}

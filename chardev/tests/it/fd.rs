//! The fd contract helpers on every fd kind, including their error paths.

use std::fs::OpenOptions;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::net::UnixStream;

use chardev::fd::{self, is_cloexec, is_nonblocking, set_cloexec, set_nonblocking};

fn each_kind() -> Vec<(&'static str, OwnedFd)> {
    let file = tempfile::tempfile().unwrap();
    let (r, w) = nix::unistd::pipe().unwrap();
    let (a, b) = UnixStream::pair().unwrap();
    let pty = nix::pty::openpty(None, None).unwrap();
    drop((w, b, pty.slave));
    vec![("file", file.into()), ("pipe", r), ("socketpair", a.into()), ("pty master", pty.master)]
}

#[test]
fn nonblocking_round_trips_on_every_fd_kind() {
    for (kind, fd) in each_kind() {
        set_nonblocking(&fd, false).unwrap();
        assert!(!is_nonblocking(&fd).unwrap(), "{kind}");
        set_nonblocking(&fd, true).unwrap();
        assert!(is_nonblocking(&fd).unwrap(), "{kind}");
        set_nonblocking(&fd, true).unwrap(); // already so: still fine
        assert!(is_nonblocking(&fd).unwrap(), "{kind}");
        set_nonblocking(&fd, false).unwrap();
        assert!(!is_nonblocking(&fd).unwrap(), "{kind}");
    }
}

#[test]
fn cloexec_round_trips_on_every_fd_kind() {
    for (kind, fd) in each_kind() {
        set_cloexec(&fd, false).unwrap();
        assert!(!is_cloexec(&fd).unwrap(), "{kind}");
        set_cloexec(&fd, true).unwrap();
        set_cloexec(&fd, true).unwrap();
        assert!(is_cloexec(&fd).unwrap(), "{kind}");
    }
}

#[test]
fn other_status_flags_survive() {
    // Read-modify-write: O_APPEND must stay when O_NONBLOCK changes.
    let dir = tempfile::tempdir().unwrap();
    let f = OpenOptions::new().append(true).create(true).open(dir.path().join("f")).unwrap();
    set_nonblocking(&f, true).unwrap();
    set_nonblocking(&f, false).unwrap();
    let flags = nix::fcntl::fcntl(f.as_fd(), nix::fcntl::FcntlArg::F_GETFL).unwrap();
    assert!(nix::fcntl::OFlag::from_bits_retain(flags).contains(nix::fcntl::OFlag::O_APPEND));
}

#[test]
fn the_flag_is_shared_by_duplicates_as_the_kernel_keeps_it() {
    // Why the library never sets it on a passed fd: the sender's copy changes too.
    let (a, _b) = UnixStream::pair().unwrap();
    let dup = fd::dup(&a).unwrap();
    set_nonblocking(&dup, true).unwrap();
    assert!(is_nonblocking(&a).unwrap());
    assert!(is_cloexec(&dup).unwrap(), "dup must be close-on-exec");
}

#[test]
fn make_passed_fd_blocking_clears_nonblock_and_sets_cloexec() {
    let (a, _b) = UnixStream::pair().unwrap();
    set_nonblocking(&a, true).unwrap();
    set_cloexec(&a, false).unwrap();
    fd::make_passed_fd_blocking(a.as_fd()).unwrap();
    assert!(!is_nonblocking(&a).unwrap());
    assert!(is_cloexec(&a).unwrap());
}

#[test]
fn errors_are_returned_not_swallowed() {
    // An O_PATH fd refuses F_SETFL with EBADF.
    let dir = tempfile::tempdir().unwrap();
    let path_fd =
        OpenOptions::new().read(true).custom_flags(nix::libc::O_PATH).open(dir.path()).unwrap();
    let err = set_nonblocking(&path_fd, true).unwrap_err();
    assert_eq!(err.io_kind(), Some(std::io::Error::from_raw_os_error(nix::libc::EBADF).kind()));
    let source = std::error::Error::source(&err).unwrap().to_string();
    assert!(source.contains("Bad file descriptor"), "{source}");
}

#[test]
fn take_inherited_refuses_a_closed_number_with_ebadf() {
    // A high number that no other test thread is likely to be handed meanwhile.
    let f = tempfile::tempfile().unwrap();
    let high = nix::fcntl::fcntl(f.as_fd(), nix::fcntl::FcntlArg::F_DUPFD_CLOEXEC(1000)).unwrap();
    nix::unistd::close(high).unwrap();
    let n = high;
    let err = fd::take_inherited(n).unwrap_err();
    assert!(err.to_string().contains(&format!("fd {n}")), "{err}");
    assert!(err.to_string().contains("Bad file descriptor"), "{err}");
    let err = fd::take_inherited(-1).unwrap_err();
    assert!(err.to_string().contains("fd=-1"), "{err}");
}

#[test]
fn take_inherited_owns_and_sets_cloexec() {
    let f = tempfile::tempfile().unwrap();
    set_cloexec(&f, false).unwrap();
    let n = std::os::fd::IntoRawFd::into_raw_fd(f);
    let owned = fd::take_inherited(n).unwrap();
    assert!(is_cloexec(&owned).unwrap());
    assert_eq!(fd::number(&owned), n);
}

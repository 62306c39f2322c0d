//! From the spec's address to sockets: unix paths (and Linux's abstract names), tcp hosts
//! and ports over IPv4 and IPv6, and inherited `fd=N` sockets.

use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::os::fd::{AsFd, OwnedFd};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::SocketAddr as UnixAddr;
use std::path::Path;

use chardev::error::{Error, Result};

/// `sun_path`'s size on Linux; abstract names with `tight=off` are padded to fill it.
const SUN_PATH_LEN: usize = 108;

/// The unix address for `path` (or the abstract name `path` when `abstract_`).
pub fn unix_addr(path: &Path, abstract_: bool, tight: bool) -> Result<UnixAddr> {
    let shown = path.display().to_string();
    let too_long = || {
        Error::option(
            "path",
            &shown,
            format!("is longer than the unix socket limit of {} bytes", SUN_PATH_LEN - 1),
        )
    };
    if abstract_ {
        let mut name = path.as_os_str().as_encoded_bytes().to_vec();
        if name.len() > SUN_PATH_LEN - 1 {
            return Err(too_long());
        }
        if !tight {
            name.resize(SUN_PATH_LEN - 1, 0);
        }
        return UnixAddr::from_abstract_name(&name).map_err(|_| too_long());
    }
    if path.as_os_str().is_empty() {
        return Err(Error::option("path", "", "must not be empty"));
    }
    if path.as_os_str().as_encoded_bytes().contains(&0) {
        return Err(Error::option("path", &shown, "contains a NUL byte"));
    }
    UnixAddr::from_pathname(path).map_err(|_| too_long())
}

/// Makes room for a server socket at `path`: a stale socket file is removed, a live one
/// (someone accepts on it) is "in use", and anything that is not a socket is never touched
/// (QEMU unlinks whatever is there).
pub fn clear_stale_socket(path: &Path) -> Result<()> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Error::io_path("inspect", path, e)),
    };
    if !meta.file_type().is_socket() {
        return Err(Error::option(
            "path",
            &path.display().to_string(),
            "exists and is not a socket; refusing to replace it",
        ));
    }
    if is_listening(path) {
        return Err(Error::io_path(
            "listen on",
            path,
            io::Error::new(
                io::ErrorKind::AddrInUse,
                "Address already in use (another server is listening there)",
            ),
        ));
    }
    std::fs::remove_file(path).map_err(|e| Error::io_path("remove the stale socket", path, e))
}

/// Whether a server listens on the unix socket at `path`. Read from `/proc/net/unix` (a
/// listening entry, `__SO_ACCEPTCON` in its flags, with that path), so that the check does
/// not itself connect and leave a vanishing client in that server's backlog; where /proc is
/// not there, a connect decides.
fn is_listening(path: &Path) -> bool {
    const ACCEPTCON: u32 = 0x0001_0000;
    let Ok(table) = std::fs::read_to_string("/proc/net/unix") else {
        return std::os::unix::net::UnixStream::connect(path).is_ok();
    };
    let wanted = path.as_os_str().as_encoded_bytes();
    let absolute = std::fs::canonicalize(path).ok();
    table.lines().skip(1).any(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let (Some(flags), Some(entry)) = (fields.get(3), fields.get(7)) else { return false };
        let listening = u32::from_str_radix(flags, 16).is_ok_and(|f| f & ACCEPTCON != 0);
        let same = entry.as_bytes() == wanted
            || absolute
                .as_deref()
                .is_some_and(|a| a.as_os_str().as_encoded_bytes() == entry.as_bytes());
        listening && same
    })
}

/// The addresses `host`:`port` resolves to, of the families the options allow.
pub fn inet_addrs(
    host: &str,
    port: &str,
    ipv4: Option<bool>,
    ipv6: Option<bool>,
    server: bool,
) -> Result<Vec<SocketAddr>> {
    let port_num: u16 = port
        .parse()
        .map_err(|_| Error::option("port", port, "must be a port number from 0 to 65535"))?;
    // QEMU: an empty host means every address (servers) or localhost (clients).
    let host = match (host, server) {
        ("", true) if ipv6 == Some(true) || ipv4 == Some(false) => "::",
        ("", true) => "0.0.0.0",
        ("", false) => "localhost",
        // `[::1]` is an IPv6 address in brackets; a bracket on one side only is no address.
        (h, _) => match h.strip_prefix('[') {
            Some(inner) => inner
                .strip_suffix(']')
                .ok_or_else(|| Error::option("host", h, "has '[' without the closing ']'"))?,
            None if h.ends_with(']') => {
                return Err(Error::option("host", h, "has ']' without the opening '['"))
            }
            None => h,
        },
    };
    let addrs: Vec<SocketAddr> = (host, port_num)
        .to_socket_addrs()
        .map_err(|e| Error::Io {
            op: "resolve",
            path: Some(format!("{host}:{port}").into()),
            source: e,
        })?
        .filter(|a| family_allowed(a.is_ipv4(), ipv4, ipv6))
        .collect();
    if addrs.is_empty() {
        return Err(Error::option("host", host, "has no address of the family asked for"));
    }
    Ok(addrs)
}

/// `ipv4=on` alone means IPv4 only, `ipv6=on` alone IPv6 only, `=off` excludes a family.
fn family_allowed(is_v4: bool, ipv4: Option<bool>, ipv6: Option<bool>) -> bool {
    let (this, other) = if is_v4 { (ipv4, ipv6) } else { (ipv6, ipv4) };
    match (this, other) {
        (Some(false), _) => false,
        (Some(true), _) => true,
        (None, Some(true)) => false,
        (None, _) => true,
    }
}

/// Formats a tcp endpoint as QEMU does: IPv6 in brackets.
pub fn host_port(addr: &SocketAddr) -> String {
    match addr {
        SocketAddr::V4(a) => format!("{}:{}", a.ip(), a.port()),
        SocketAddr::V6(a) => format!("[{}]:{}", a.ip(), a.port()),
    }
}

/// What an inherited socket is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FdKind {
    /// A unix-domain socket (can pass fds).
    pub unix: bool,
    /// Listening (accept on it) rather than connected.
    pub listening: bool,
}

/// Checks that an inherited fd is a stream socket and tells what kind.
pub fn inspect_fd(fd: &OwnedFd, name: &str) -> Result<FdKind> {
    use nix::sys::socket::{
        getsockname, getsockopt, sockopt, AddressFamily, SockType, SockaddrLike, SockaddrStorage,
    };
    let not_socket = || Error::Fd(format!("File descriptor '{name}' is not a socket"));
    let ty = getsockopt(&fd.as_fd(), sockopt::SockType).map_err(|_| not_socket())?;
    if ty != SockType::Stream {
        return Err(Error::Fd(format!("File descriptor '{name}' is not a stream socket")));
    }
    let listening = getsockopt(&fd.as_fd(), sockopt::AcceptConn).map_err(|_| not_socket())?;
    let local: SockaddrStorage =
        getsockname(std::os::fd::AsRawFd::as_raw_fd(fd)).map_err(|_| not_socket())?;
    Ok(FdKind { unix: local.family() == Some(AddressFamily::Unix), listening })
}

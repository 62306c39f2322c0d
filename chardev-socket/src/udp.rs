//! `udp`: a connected datagram socket. Each frontend write is one datagram; a datagram
//! larger than the frontend can take is handed over in pieces, none of it lost.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use chardev::backend::refuse_fds;
use chardev::error::{Error, Result};
use chardev::options::{BackendSpec, ChardevSpec};
use chardev::registry::BuildContext;
use chardev::{Chardev, Input, Io};
use mio::Interest;

use crate::address;

/// The largest datagram UDP can carry.
const MAX_DATAGRAM: usize = 65536;

/// A `udp` chardev.
#[derive(Debug)]
pub struct Udp {
    socket: mio::net::UdpSocket,
    ipv6: bool,
    /// The unread rest of a datagram larger than the frontend's room; allocated on need.
    rest: Vec<u8>,
    rest_at: usize,
}

/// Builds a `udp` backend: binds `localaddr:localport` and connects to `host:port`.
pub fn build(spec: &ChardevSpec, _cx: &BuildContext<'_>) -> Result<Box<dyn Chardev>> {
    let BackendSpec::Udp(u) = &spec.backend else {
        return Err(Error::UnknownBackend(spec.backend.kind().into()));
    };
    let remote = address::inet_addrs(&u.host, &u.port, u.ipv4, u.ipv6, false)?[0];
    let any = if remote.is_ipv4() { "0.0.0.0" } else { "::" };
    let local_host = u.localaddr.as_deref().filter(|h| !h.is_empty()).unwrap_or(any);
    let local_port = u.localport.as_deref().unwrap_or("0");
    let local = address::inet_addrs(local_host, local_port, u.ipv4, u.ipv6, true)?[0];
    let socket = std::net::UdpSocket::bind(local).map_err(|e| Error::Io {
        op: "bind",
        path: Some(address::host_port(&local).into()),
        source: e,
    })?;
    socket.connect(remote).map_err(|e| Error::Io {
        op: "connect to",
        path: Some(address::host_port(&remote).into()),
        source: e,
    })?;
    socket.set_nonblocking(true).map_err(|e| Error::io("make a socket non-blocking", e))?;
    Ok(Box::new(Udp {
        socket: mio::net::UdpSocket::from_std(socket),
        ipv6: remote.is_ipv6(),
        rest: Vec::new(),
        rest_at: 0,
    }))
}

impl Chardev for Udp {
    fn register(&mut self, io: &mut Io<'_>) -> Result<()> {
        // As QEMU's: a datagram socket is never "opened", so no Opened event.
        io.register(&mut self.socket, 0, Interest::READABLE)
            .map_err(|e| Error::io("watch a udp socket", e))
    }

    fn deregister(&mut self, registry: &mio::Registry) {
        let _ = registry.deregister(&mut self.socket);
    }

    fn read(&mut self, _io: &mut Io<'_>, buf: &mut [u8], _fds: &mut Vec<OwnedFd>) -> Input {
        if self.rest_at < self.rest.len() {
            let n = buf.len().min(self.rest.len() - self.rest_at);
            buf[..n].copy_from_slice(&self.rest[self.rest_at..self.rest_at + n]);
            self.rest_at += n;
            return Input::Data(n);
        }
        let result = if buf.len() >= MAX_DATAGRAM {
            self.socket.recv(buf)
        } else {
            self.rest.resize(MAX_DATAGRAM, 0);
            let got = self.socket.recv(&mut self.rest);
            let len = *got.as_ref().unwrap_or(&0);
            self.rest.truncate(len);
            got.map(|len| {
                let n = len.min(buf.len());
                buf[..n].copy_from_slice(&self.rest[..n]);
                self.rest_at = n;
                n
            })
        };
        match result {
            Ok(n) => Input::Data(n),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Input::WouldBlock,
            Err(e) => {
                // ECONNREFUSED from an ICMP error, say: the socket stays usable.
                log::debug!("udp chardev: {e}");
                Input::Data(0)
            }
        }
    }

    fn write(&mut self, buf: &[u8], fds: &[BorrowedFd<'_>]) -> io::Result<usize> {
        refuse_fds("udp", fds)?;
        // The largest UDP payload: 65535 less the IP and UDP headers.
        let max = if self.ipv6 { 65535 - 8 } else { 65535 - 20 - 8 };
        self.socket.send(&buf[..buf.len().min(max)])
    }

    fn write_fd(&self) -> Option<BorrowedFd<'_>> {
        Some(self.socket.as_fd())
    }

    fn kind(&self) -> &'static str {
        "udp"
    }
}

//! `serial` (alias `tty`): a host serial line such as `/dev/ttyS0` or `/dev/ttyUSB0` (QEMU's
//! `char-serial`).
//!
//! Opened raw at 115200 8N1, as QEMU opens it. The frontend (a UART model) sets speed,
//! parity and framing, sends breaks, and reads and sets the modem lines through its
//! [`FrontendHandle`](chardev::FrontendHandle); they reach the device through termios.
//! `Opened` at once, `Closed` when the device goes away (end of input or EIO: a USB adapter
//! pulled out). Errors name the device: not a tty, permission denied, a speed no UART has.

use std::fs::File;
use std::io;
use std::os::fd::{BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

use chardev::backends::fd_stream::{FdStream, Output};
use chardev::error::{Error, Result};
use chardev::fdset::OpenHow;
use chardev::options::{BackendSpec, ChardevSpec};
use chardev::registry::BuildContext;
use chardev::serial::{ModemLines, SerialLine, SerialParams};
use chardev::{Chardev, Input, Io};

use crate::termios;

/// Builds a `serial` backend on the device at `path=`.
/// `/dev/fdset/N` names a tty passed in an fd set.
pub fn build(spec: &ChardevSpec, cx: &BuildContext<'_>) -> Result<Box<dyn Chardev>> {
    let BackendSpec::Serial { path } = &spec.backend else {
        return Err(Error::UnknownBackend(spec.backend.kind().into()));
    };
    let how =
        OpenHow { read: true, write: true, nonblocking: true, noctty: true, ..OpenHow::default() };
    let fd = cx.open(path, &how).map_err(|e| match e {
        Error::Io { source, .. } => Error::io_path("open serial device", path, source),
        other => other,
    })?;
    Ok(Box::new(Serial::from_fd(std::fs::File::from(fd), path)?))
}

/// A `serial` chardev: an [`FdStream`] over the tty, and termios for the line.
#[derive(Debug)]
pub struct Serial {
    stream: FdStream,
    /// The same open file as the stream's, for the line's ioctls.
    control: File,
    path: PathBuf,
}

impl Serial {
    /// Opens the tty at `path` for the loop (non-blocking, not as our controlling terminal),
    /// raw at 115200 8N1; fails if it cannot be opened or is not a tty.
    pub fn open(path: &Path) -> Result<Serial> {
        Serial::from_fd(termios::open_tty(path, "open serial device")?, path)
    }

    /// A serial line on a tty opened for the loop (non-blocking, and on a description of
    /// our own); set raw at 115200 8N1.
    fn from_fd(file: std::fs::File, path: &Path) -> Result<Serial> {
        termios::init_serial(&file, path)?;
        let control =
            file.try_clone().map_err(|e| Error::io_path("duplicate the fd of", path, e))?;
        Ok(Serial {
            stream: FdStream::new("serial", Some(OwnedFd::from(file)), Output::Input),
            control,
            path: path.to_path_buf(),
        })
    }

    /// The device's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Chardev for Serial {
    fn register(&mut self, io: &mut Io<'_>) -> Result<()> {
        self.stream.register(io)
    }

    fn deregister(&mut self, registry: &mio::Registry) {
        self.stream.deregister(registry);
    }

    fn ready(&mut self, io: &mut Io<'_>, source: usize, event: &mio::event::Event) {
        self.stream.ready(io, source, event);
    }

    fn read(&mut self, io: &mut Io<'_>, buf: &mut [u8], fds: &mut Vec<OwnedFd>) -> Input {
        self.stream.read(io, buf, fds)
    }

    fn write(&mut self, buf: &[u8], fds: &[BorrowedFd<'_>]) -> io::Result<usize> {
        self.stream.write(buf, fds)
    }

    fn write_fd(&self) -> Option<BorrowedFd<'_>> {
        self.stream.write_fd()
    }

    fn serial_line(&mut self) -> Option<&mut dyn SerialLine> {
        Some(self)
    }

    fn kind(&self) -> &'static str {
        "serial"
    }
}

impl SerialLine for Serial {
    /// Blocks the caller for the break's 0.25 to 0.5 s, as in QEMU.
    fn send_break(&mut self) -> Result<()> {
        termios::send_break(&self.control, &self.path)
    }

    fn set_params(&mut self, params: &SerialParams) -> Result<()> {
        termios::set_serial_params(&self.control, &self.path, params)
    }

    fn modem_lines(&mut self) -> Result<ModemLines> {
        termios::modem_lines(&self.control, &self.path)
    }

    fn set_modem_lines(&mut self, lines: ModemLines) -> Result<()> {
        termios::set_modem_lines(&self.control, &self.path, lines)
    }
}

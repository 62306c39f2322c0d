//! `pipe`: a pair of fifos `PATH.in` and `PATH.out`, or `PATH` for both ways, as QEMU opens
//! them (read-write, so that neither open nor read waits for the other side). Fifos are
//! never created here: the user makes them with mkfifo.

use std::fs::{File, OpenOptions};
use std::os::fd::OwnedFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use crate::backends::fd_stream::{FdStream, Output};
use crate::chardev::Chardev;
use crate::error::{Error, Result};
use crate::options::{BackendSpec, ChardevSpec};
use crate::registry::BuildContext;

/// Builds a `pipe` backend.
pub fn build(spec: &ChardevSpec, _cx: &BuildContext<'_>) -> Result<Box<dyn Chardev>> {
    let BackendSpec::Pipe { path } = &spec.backend else {
        return Err(Error::UnknownBackend(spec.backend.kind().into()));
    };
    let with = |suffix: &str| {
        let mut p = path.clone().into_os_string();
        p.push(suffix);
        PathBuf::from(p)
    };
    let stream = match (open_rw(&with(".in")), open_rw(&with(".out"))) {
        (Ok(input), Ok(output)) => {
            FdStream::new("pipe", Some(OwnedFd::from(input)), Output::Fd(output))
        }
        _ => {
            let both = open_rw(path).map_err(|e| Error::io_path("open", path, e))?;
            FdStream::new("pipe", Some(OwnedFd::from(both)), Output::Input)
        }
    };
    Ok(Box::new(stream))
}

fn open_rw(path: &Path) -> std::io::Result<File> {
    OpenOptions::new().read(true).write(true).custom_flags(nix::libc::O_NONBLOCK).open(path)
}

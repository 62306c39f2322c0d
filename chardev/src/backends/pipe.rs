//! `pipe`: a pair of fifos `PATH.in` and `PATH.out`, or `PATH` for both ways, as QEMU opens
//! them (read-write, so that neither open nor read waits for the other side). Fifos are
//! never created here: the user makes them with mkfifo.

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use crate::backend::Chardev;
use crate::backends::fd_stream::{FdStream, Output};
use crate::error::{Error, Result};
use crate::fdset::OpenHow;
use crate::options::{BackendSpec, ChardevSpec};
use crate::registry::BuildContext;

/// Builds a `pipe` backend.
pub fn build(spec: &ChardevSpec, cx: &BuildContext<'_>) -> Result<Box<dyn Chardev>> {
    let BackendSpec::Pipe { path } = &spec.backend else {
        return Err(Error::UnknownBackend(spec.backend.kind().into()));
    };
    let with = |suffix: &str| {
        let mut p = path.clone().into_os_string();
        p.push(suffix);
        PathBuf::from(p)
    };
    let stream = match (open_rw(cx, &with(".in")), open_rw(cx, &with(".out"))) {
        (Ok(input), Ok(output)) => FdStream::new("pipe", Some(input), Output::Fd(output.into())),
        _ => FdStream::new("pipe", Some(open_rw(cx, path)?), Output::Input),
    };
    Ok(Box::new(stream))
}

/// `/dev/fdset/N` works here too; `/dev/fdset/N.in` does not parse, so a set is used for
/// both ways, as in QEMU.
fn open_rw(cx: &BuildContext<'_>, path: &Path) -> Result<OwnedFd> {
    cx.open(path, &OpenHow { read: true, write: true, nonblocking: true, ..OpenHow::default() })
}

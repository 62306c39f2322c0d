//! `file`: output to a file (created 0666, truncated unless `append=on`), input from
//! `input-path` if given. As QEMU: open at creation, `Opened` at once, `Closed` at the end
//! of the input.

use std::fs::OpenOptions;
use std::os::fd::OwnedFd;
use std::os::unix::fs::OpenOptionsExt;

use crate::backends::fd_stream::{FdStream, Output};
use crate::chardev::Chardev;
use crate::error::{Error, Result};
use crate::options::{BackendSpec, ChardevSpec};
use crate::registry::BuildContext;

/// Builds a `file` backend.
pub fn build(spec: &ChardevSpec, _cx: &BuildContext<'_>) -> Result<Box<dyn Chardev>> {
    let BackendSpec::File { out, input, append } = &spec.backend else {
        return Err(Error::UnknownBackend(spec.backend.kind().into()));
    };
    let mut options = OpenOptions::new();
    options.write(true).create(true).mode(0o666).custom_flags(nix::libc::O_NONBLOCK);
    if *append {
        options.append(true);
    } else {
        options.truncate(true);
    }
    let output = options.open(out).map_err(|e| Error::io_path("open", out, e))?;
    let input = match input {
        // Non-blocking so that a fifo without a writer cannot hang the open; the description
        // is our own, so nobody else sees the flag.
        Some(path) => Some(OwnedFd::from(
            OpenOptions::new()
                .read(true)
                .custom_flags(nix::libc::O_NONBLOCK)
                .open(path)
                .map_err(|e| Error::io_path("open", path, e))?,
        )),
        None => None,
    };
    Ok(Box::new(FdStream::new("file", input, Output::Fd(output))))
}

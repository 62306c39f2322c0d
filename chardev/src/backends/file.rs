//! `file`: output to a file (created 0666, truncated unless `append=on`), input from
//! `input-path` if given. As QEMU: open at creation, `Opened` at once, `Closed` at the end
//! of the input.

use crate::backend::Chardev;
use crate::backends::fd_stream::{FdStream, Output};
use crate::error::{Error, Result};
use crate::fdset::OpenHow;
use crate::options::{BackendSpec, ChardevSpec};
use crate::registry::BuildContext;

/// Builds a `file` backend.
pub fn build(spec: &ChardevSpec, cx: &BuildContext<'_>) -> Result<Box<dyn Chardev>> {
    let BackendSpec::File { out, input, append } = &spec.backend else {
        return Err(Error::UnknownBackend(spec.backend.kind().into()));
    };
    // Non-blocking: a fifo (or a pipe from virtlogd in an fd set) must not stall the loop.
    // The description is our own, so nobody else sees the flag (see `fdset::open_path`).
    let output = cx.open(out, &OpenHow { nonblocking: true, ..OpenHow::output(*append) })?;
    let input = match input {
        // Non-blocking too, so that a fifo without a writer cannot hang the open.
        Some(path) => {
            Some(cx.open(path, &OpenHow { read: true, nonblocking: true, ..OpenHow::default() })?)
        }
        None => None,
    };
    Ok(Box::new(FdStream::new("file", input, Output::Fd(output.into()))))
}

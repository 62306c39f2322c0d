//! `null`: output vanishes, no input ever comes, and it never opens (as QEMU's).

use std::io;
use std::os::fd::BorrowedFd;

use crate::backend::{refuse_fds, Chardev, Io};
use crate::error::Result;
use crate::options::ChardevSpec;
use crate::registry::BuildContext;

/// The `null` backend.
#[derive(Debug, Default)]
pub struct Null;

/// Builds a `null` backend.
pub fn build(_spec: &ChardevSpec, _cx: &BuildContext<'_>) -> Result<Box<dyn Chardev>> {
    Ok(Box::new(Null))
}

impl Chardev for Null {
    fn register(&mut self, _io: &mut Io<'_>) -> Result<()> {
        // QEMU's null chardev deliberately never sends OPENED.
        Ok(())
    }

    fn deregister(&mut self, _registry: &mio::Registry) {}

    fn write(&mut self, buf: &[u8], fds: &[BorrowedFd<'_>]) -> io::Result<usize> {
        refuse_fds("null", fds)?;
        Ok(buf.len())
    }

    fn kind(&self) -> &'static str {
        "null"
    }
}

//! `ringbuf` (alias `memory`): output goes into a ring that keeps the newest bytes, read back
//! by management (`ringbuf-read`). There is no input side.
//!
//! Management's commands on a ringbuf (`ringbuf-write`, `ringbuf-read`) are methods of
//! [`Registry`], defined here with the backend they act on and reaching it with
//! [`Registry::with_backend`].

use std::io;
use std::os::fd::BorrowedFd;

use crate::backend::{refuse_fds, Chardev, Io};
use crate::error::{Error, Result};
use crate::frontend::callbacks::Event;
use crate::options::{BackendSpec, ChardevSpec, MAX_RINGBUF_SIZE};
use crate::registry::{BuildContext, Registry};

/// A ring of a power-of-two size that overwrites its oldest bytes when full.
#[derive(Debug)]
pub struct Ringbuf {
    size: usize,
    /// Allocated at the first write, so that idle ringbufs cost no memory.
    ring: Vec<u8>,
    /// Total bytes ever written and read; their difference is what the ring holds.
    prod: u64,
    cons: u64,
}

/// Builds a `ringbuf` backend.
pub fn build(spec: &ChardevSpec, _cx: &BuildContext<'_>) -> Result<Box<dyn Chardev>> {
    match spec.backend {
        BackendSpec::Ringbuf { size } => Ok(Box::new(Ringbuf::new(size)?)),
        _ => Err(Error::UnknownBackend(spec.backend.kind().into())),
    }
}

impl Ringbuf {
    /// A ring of `size` bytes; `size` must be a power of two (QEMU's rule) and at most
    /// [`MAX_RINGBUF_SIZE`].
    pub fn new(size: usize) -> Result<Ringbuf> {
        if !size.is_power_of_two() {
            return Err(Error::option("size", &size.to_string(), "must be a power of two"));
        }
        if size > MAX_RINGBUF_SIZE {
            return Err(Error::option(
                "size",
                &size.to_string(),
                "is larger than the maximum ring, 1G",
            ));
        }
        Ok(Ringbuf { size, ring: Vec::new(), prod: 0, cons: 0 })
    }

    /// How many bytes the ring holds.
    pub fn len(&self) -> usize {
        (self.prod - self.cons) as usize
    }

    /// Whether the ring holds nothing.
    pub fn is_empty(&self) -> bool {
        self.prod == self.cons
    }

    /// Appends `data`, dropping the oldest bytes when the ring is full. The ring is
    /// allocated at the first push; if the memory cannot be had, that push fails and nothing
    /// is kept (the process does not abort).
    pub fn push(&mut self, data: &[u8]) -> Result<()> {
        if self.ring.is_empty() {
            let mut ring = Vec::new();
            ring.try_reserve_exact(self.size).map_err(|e| {
                Error::io("allocate the ring", io::Error::new(io::ErrorKind::OutOfMemory, e))
            })?;
            ring.resize(self.size, 0);
            self.ring = ring;
        }
        // Of more than a ring's worth, only the newest bytes survive.
        let skip = data.len().saturating_sub(self.size);
        self.prod += skip as u64;
        let mut rest = &data[skip..];
        while !rest.is_empty() {
            let at = (self.prod % self.size as u64) as usize;
            let n = rest.len().min(self.size - at);
            self.ring[at..at + n].copy_from_slice(&rest[..n]);
            self.prod += n as u64;
            rest = &rest[n..];
        }
        if self.prod - self.cons > self.size as u64 {
            self.cons = self.prod - self.size as u64;
        }
        Ok(())
    }

    /// Takes up to `max` of the oldest bytes.
    pub fn pop(&mut self, max: usize) -> Vec<u8> {
        let n = max.min(self.len());
        let mut out = Vec::with_capacity(n);
        while out.len() < n {
            let at = (self.cons % self.size as u64) as usize;
            let k = (n - out.len()).min(self.size - at);
            out.extend_from_slice(&self.ring[at..at + k]);
            self.cons += k as u64;
        }
        out
    }
}

impl Chardev for Ringbuf {
    fn register(&mut self, io: &mut Io<'_>) -> Result<()> {
        io.event(Event::Opened);
        Ok(())
    }

    fn deregister(&mut self, _registry: &mio::Registry) {}

    fn write(&mut self, buf: &[u8], fds: &[BorrowedFd<'_>]) -> io::Result<usize> {
        refuse_fds("ringbuf", fds)?;
        self.push(buf)?;
        Ok(buf.len())
    }

    fn kind(&self) -> &'static str {
        "ringbuf"
    }
}

impl Registry {
    /// Appends to a ringbuf's ring (`ringbuf-write`; the frontend does not see it).
    pub fn ringbuf_write(&self, id: &str, data: &[u8]) -> Result<()> {
        self.with_ringbuf(id, |rb| rb.push(data))?
    }

    /// Takes up to `size` of the oldest bytes from a ringbuf (`ringbuf-read`).
    pub fn ringbuf_read(&self, id: &str, size: usize) -> Result<Vec<u8>> {
        if size == 0 {
            return Err(Error::option("size", "0", "size must be greater than zero"));
        }
        self.with_ringbuf(id, |rb| rb.pop(size))
    }

    /// [`Registry::with_backend`] with QEMU's words for what goes wrong.
    fn with_ringbuf<T>(&self, id: &str, f: impl FnOnce(&mut Ringbuf) -> T) -> Result<T> {
        self.with_backend(id, f).map_err(|e| match e {
            Error::NotFound(_) => Error::option("device", id, format!("Device '{id}' not found")),
            Error::WrongBackend { .. } => {
                Error::option("device", id, format!("{id} is not a ringbuf device"))
            }
            other => other,
        })
    }
}

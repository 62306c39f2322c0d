//! Saving: a [`Snapshot`] written as a stream in QEMU's order (header, configuration, the RAM
//! section, one `SECTION_FULL` per device, `QEMU_VM_EOF`, the vmdesc), counting progress as
//! the bytes go out.

use std::io::{self, Write};
use std::sync::atomic::Ordering;

use crate::wire::{self, put_be32, put_footer, put_idstr, put_u8, MAX_MACHINE_TYPE_LEN};
use crate::{
    ram, vmdesc, DeviceState, Error, Progress, RamSource, Result, MAX_DEVICE_STATE_LEN, PAGE_SIZE,
    RAM_SECTION_ID,
};

/// Everything [`save`] writes.
#[derive(Clone, Copy)]
pub struct Snapshot<'a> {
    /// The machine type, sent in the configuration section; a QEMU destination refuses
    /// another (`pc-i440fx-7.2`, `none`, ...).
    pub machine_type: &'a str,
    /// Guest RAM, one block named [`RAM_BLOCK`](crate::RAM_BLOCK); a multiple of
    /// [`PAGE_SIZE`] bytes.
    pub ram: &'a dyn RamSource,
    /// The devices, one `SECTION_FULL` each, in this order.
    pub devices: &'a [DeviceState],
}

impl std::fmt::Debug for Snapshot<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Snapshot")
            .field("machine_type", &self.machine_type)
            .field("ram_size", &self.ram.size())
            .field("devices", &self.devices)
            .finish()
    }
}

/// A `Write` that counts what it passes on into [`Progress::transferred`].
pub(crate) struct Counted<'p, W> {
    inner: W,
    progress: &'p Progress,
    written: u64,
}

impl<W: Write> Counted<'_, W> {
    /// `write_all` of several slices, vectored (no copy into a stream buffer), counting each
    /// partial write as it happens.
    pub(crate) fn put_vectored(&mut self, mut slices: &mut [io::IoSlice<'_>]) -> Result<()> {
        io::IoSlice::advance_slices(&mut slices, 0);
        while !slices.is_empty() {
            match self.inner.write_vectored(slices) {
                Ok(0) => {
                    let e = io::ErrorKind::WriteZero.into();
                    return Err(Error::io("write the migration stream", self.written, e));
                }
                Ok(n) => {
                    io::IoSlice::advance_slices(&mut slices, n);
                    self.written += n as u64;
                    self.progress.transferred.store(self.written, Ordering::Relaxed);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(Error::io("write the migration stream", self.written, e)),
            }
        }
        Ok(())
    }

    /// `write_all`, counting each partial write as it happens.
    pub(crate) fn put(&mut self, mut bytes: &[u8]) -> Result<()> {
        while !bytes.is_empty() {
            match self.inner.write(bytes) {
                Ok(0) => {
                    let e = io::ErrorKind::WriteZero.into();
                    return Err(Error::io("write the migration stream", self.written, e));
                }
                Ok(n) => {
                    bytes = &bytes[n..];
                    self.written += n as u64;
                    self.progress.transferred.store(self.written, Ordering::Relaxed);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(Error::io("write the migration stream", self.written, e)),
            }
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<()> {
        self.inner.flush().map_err(|e| Error::io("flush the migration stream", self.written, e))
    }
}

fn check_snapshot(snapshot: &Snapshot<'_>, ram_size: usize) -> Result<()> {
    if ram_size == 0 || ram_size % PAGE_SIZE != 0 {
        return Err(Error::Invalid(format!(
            "RAM of {ram_size} bytes cannot be saved: it must be a non-zero multiple of \
             {PAGE_SIZE} bytes"
        )));
    }
    if snapshot.machine_type.len() > MAX_MACHINE_TYPE_LEN {
        return Err(Error::Invalid(format!(
            "machine type '{}' is longer than {MAX_MACHINE_TYPE_LEN} bytes",
            snapshot.machine_type
        )));
    }
    for (i, d) in snapshot.devices.iter().enumerate() {
        if d.name.is_empty() || d.name.len() > 255 {
            return Err(Error::Invalid(format!(
                "device section name '{}' must be 1 to 255 bytes long",
                d.name
            )));
        }
        if d.data.len() > MAX_DEVICE_STATE_LEN {
            return Err(Error::Invalid(format!(
                "state of device '{}' is {} bytes, more than the {MAX_DEVICE_STATE_LEN} a \
                 stream may carry",
                d.name,
                d.data.len()
            )));
        }
        let dup = snapshot.devices[..i]
            .iter()
            .any(|o| o.name == d.name && o.instance_id == d.instance_id);
        if dup {
            return Err(Error::Invalid(format!(
                "device '{}' instance {} is given twice",
                d.name, d.instance_id
            )));
        }
    }
    Ok(())
}

/// Writes `snapshot` to `out` as a QEMU 7.2 migration stream; returns the bytes written.
///
/// Progress goes to `progress` as the stream is written; between parts the writer checks
/// [`Progress::is_cancelled`] and stops with [`Error::Cancelled`], leaving a truncated
/// stream that every destination refuses. `out` is flushed at the end.
pub fn save<W: Write>(out: W, snapshot: &Snapshot<'_>, progress: &Progress) -> Result<u64> {
    let ram_size = snapshot.ram.size();
    check_snapshot(snapshot, ram_size)?;
    let pages = ram_size / PAGE_SIZE;
    progress.total.store(ram_size as u64, Ordering::Relaxed);
    progress.remaining.store(ram_size as u64, Ordering::Relaxed);

    let mut out = Counted { inner: out, progress, written: 0 };
    let ram_id = RAM_SECTION_ID;
    let mut buf = Vec::with_capacity(ram::HEADERS_CAPACITY);

    // Header and configuration (vmstate_configuration: a uint32 length and the name).
    put_be32(&mut buf, wire::MAGIC);
    put_be32(&mut buf, wire::VERSION);
    put_u8(&mut buf, wire::CONFIGURATION);
    put_be32(&mut buf, snapshot.machine_type.len() as u32);
    buf.extend_from_slice(snapshot.machine_type.as_bytes());
    ram::put_start(&mut buf, ram_id, ram_size);
    out.put(&buf)?;

    ram::put_parts(&mut out, snapshot.ram, pages, ram_id, &mut buf, progress)?;
    if progress.is_cancelled() {
        return Err(Error::Cancelled);
    }

    // `buf` holds what the last part left unwritten: the END section follows it.
    ram::put_end(&mut buf, ram_id);

    // One SECTION_FULL per device, ids following RAM's.
    for (i, device) in snapshot.devices.iter().enumerate() {
        let id = ram_id + 1 + i as u32;
        put_u8(&mut buf, wire::SECTION_FULL);
        put_be32(&mut buf, id);
        put_idstr(&mut buf, &device.name);
        put_be32(&mut buf, device.instance_id);
        put_be32(&mut buf, device.version_id);
        put_be32(&mut buf, device.data.len() as u32);
        buf.extend_from_slice(&device.data);
        put_footer(&mut buf, id);
    }

    put_u8(&mut buf, wire::EOF);
    let json = vmdesc::json(snapshot.devices);
    put_u8(&mut buf, wire::VMDESCRIPTION);
    put_be32(&mut buf, json.len() as u32);
    buf.extend_from_slice(json.as_bytes());
    out.put(&buf)?;
    out.flush()?;
    Ok(out.written)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{load_err, small};
    use crate::RamStats;

    #[test]
    fn progress_counts_what_was_written() {
        let (ram, devices) = small();
        let progress = Progress::new();
        let mut out = Vec::new();
        let n = save(
            &mut out,
            &Snapshot { machine_type: "pc", ram: &ram, devices: &devices },
            &progress,
        )
        .unwrap();
        assert_eq!(n, out.len() as u64);
        let stats = progress.ram();
        assert_eq!(
            stats,
            RamStats {
                transferred: out.len() as u64,
                total: ram.len() as u64,
                remaining: 0,
                duplicate: 6,
                normal: 2,
                normal_bytes: 2 * PAGE_SIZE as u64,
            }
        );
    }

    #[test]
    fn a_cancelled_save_stops_before_the_pages() {
        let (ram, devices) = small();
        let progress = Progress::new();
        progress.cancel();
        let mut out = Vec::new();
        let r = save(
            &mut out,
            &Snapshot { machine_type: "pc", ram: &ram, devices: &devices },
            &progress,
        );
        assert!(matches!(r, Err(Error::Cancelled)), "{r:?}");
        // Header, configuration and the RAM section's start only: a destination refuses it.
        assert_eq!(out.len(), 15 + 50);
        assert!(load_err(&out, ram.len()).contains("ends at byte 65"));
    }

    #[test]
    fn what_cannot_be_a_stream_is_refused_before_writing() {
        let mut out = Vec::new();
        let p = Progress::new();
        let odd = vec![0u8; PAGE_SIZE + 1];
        let e = save(&mut out, &Snapshot { machine_type: "pc", ram: &odd, devices: &[] }, &p);
        assert!(e.unwrap_err().to_string().contains("multiple of 4096"));
        let ram = vec![0u8; PAGE_SIZE];
        let twice = [DeviceState::new("x", 0, 1, vec![]), DeviceState::new("x", 0, 1, vec![])];
        let e = save(&mut out, &Snapshot { machine_type: "pc", ram: &ram, devices: &twice }, &p);
        assert_eq!(e.unwrap_err().to_string(), "migration: device 'x' instance 0 is given twice");
        let long = [DeviceState::new(&"n".repeat(256), 0, 1, vec![])];
        let e = save(&mut out, &Snapshot { machine_type: "pc", ram: &ram, devices: &long }, &p);
        assert!(e.is_err());
        assert!(out.is_empty());
    }
}

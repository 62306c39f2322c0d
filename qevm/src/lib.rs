//! QEMU's migration stream, version 3, for any VMM: a machine's RAM and device state written
//! as QEMU 7.2 writes it (`migrate`), and read back on a destination (`-incoming`).
//!
//! A stream is a header, then sections, each closed by a footer that repeats its id:
//!
//! ```text
//! "QEVM" 3  CONFIGURATION(machine type)
//! SECTION_START  "ram" v4: MEM_SIZE total, one block "ram", EOS
//! SECTION_PART   page records (ZERO or PAGE, CONTINUE after the first), EOS   ... repeated
//! SECTION_END    EOS
//! SECTION_FULL   one per device ("serial", "guest-shell", ...), the device's state
//! EOF  VMDESCRIPTION {"page_size": 4096, "devices": [...]}
//! ```
//!
//! [`save`] writes a [`Snapshot`] (RAM read through [`RamSource`], each device's state an
//! opaque [`DeviceState`]) to any `Write`, counting into a [`Progress`] that another thread
//! reads and may cancel; to an fd, use a [`BlockingWriter`]. [`load`] (or a [`Loader`]) reads
//! it back into the destination's RAM, checking every field, and returns the device states
//! by name in an [`Incoming`]:
//!
//! ```
//! use qevm::{DeviceState, Progress, Snapshot, PAGE_SIZE};
//!
//! // A machine of four pages, one of them with data, and one device.
//! let mut ram = vec![0u8; 4 * PAGE_SIZE];
//! ram[PAGE_SIZE..][..5].copy_from_slice(b"hello");
//! let devices = [DeviceState::new("guest-shell", 0, 1, b"uptime=12.5".to_vec())];
//! let mut stream = Vec::new();
//! let snapshot = Snapshot { machine_type: "pc", ram: &ram, devices: &devices };
//! qevm::save(&mut stream, &snapshot, &Progress::new())?;
//!
//! // The destination: the same machine type, RAM of the same size.
//! let mut back = vec![0u8; 4 * PAGE_SIZE];
//! let incoming = qevm::load(&stream[..], "pc", &mut back)?;
//! assert_eq!(back, ram);
//! assert_eq!((incoming.zero_pages, incoming.data_pages), (3, 1));
//! assert_eq!(incoming.device("guest-shell", 0).unwrap().data, b"uptime=12.5");
//! # Ok::<(), qevm::Error>(())
//! ```
//!
//! What this crate writes and accepts, as decided:
//! * Section ids are numbered as QEMU numbers them, in registration order, each section
//!   its own, repeated by its PART, END and footer: "ram" is section 1, the devices follow
//!   in the order given (2, 3, ...). Id 0 stays unused: QEMU 7.2's loader finds the section
//!   of a PART or END by id, and takes every section not loaded yet for id 0, so RAM with
//!   id 0 loads into the wrong section there ("timer: incoming version_id 0 is too old").
//!   QEMU itself never gives RAM id 0 (its CPU timer registers first; RAM is 2 on x86).
//! * A device's state is opaque to the stream. QEMU's vmstate has no length field, so a
//!   reader must know each device's layout to find its end: this crate writes every
//!   device's state as a vmstate of two fields, `size` (uint32) and `data` (a buffer of
//!   `size` bytes), and says so in the vmdesc, where QEMU's own tools read layouts. A
//!   [`Loader`] can be told the fixed size of foreign devices (QEMU's "timer" is 24 bytes).
//! * A stream that ends right after `QEMU_VM_EOF`, without the vmdesc, is accepted, as
//!   QEMU's own loader accepts it: the vmdesc only describes state already read and checked,
//!   so nothing is lost. A vmdesc that starts must be whole, valid JSON, name the device
//!   sections in order, and say `"page_size": 4096`; [`Incoming::vmdesc`] tells which case
//!   it was.
//! * Every page of RAM must be sent at least once (QEMU sends each page once and re-sends
//!   pages dirtied meanwhile); a page no record covers is an error, which catches a corrupt
//!   page offset. ZERO records must carry a zero fill byte (QEMU 7.2 writes nothing else).
//! * The format has no checksum: a changed byte inside a page's 4096 bytes or inside a
//!   device's state loads, with that byte changed. Everything else that changes is an error.
//! * Loading writes straight into the destination's RAM; after an error the RAM holds a
//!   partial image (as on QEMU, a failed incoming migration leaves the destination unusable).
//!
//! With the `uart` feature (on by default), `serial_section` and `serial_state` turn
//! vm-superio's 16550 state into a versioned "serial" section and back.

// Every public item says what it is for, and can be printed in an embedder's debug output.
#![deny(missing_docs, missing_debug_implementations)]

mod blocking; // BlockingWriter: a buffered Write to an fd that blocks whatever O_NONBLOCK says
mod device; // DeviceState, and how a SECTION_FULL frames it (StateLayout)
mod error; // Error: format, truncation, mismatch, cancel and I/O errors, at stream offsets
mod loader; // load, Loader, Incoming: a stream read back, every field checked
mod progress; // Progress, RamStats: what query-migrate reads and migrate_cancel sets
mod ram; // the RAM section: RamSource, page records (ZERO or PAGE) written and read
#[cfg(feature = "uart")]
mod uart; // the 16550 UART's state as a "serial" section (feature `uart`)
mod untouched; // pages never written read as zero: /proc/self/pagemap says which, unread
mod vmdesc; // the JSON after QEMU_VM_EOF: written as QEMU formats it, checked on load
mod wire; // savevm.c's constants, and the stream's fields written and read at offsets
mod writer; // save, Snapshot: the stream written in QEMU's order

#[cfg(test)]
mod testing; // what the unit tests share: a small machine, saved

pub use blocking::BlockingWriter;
pub use device::{DeviceState, StateLayout, GUEST_SHELL, MAX_DEVICE_STATE_LEN};
pub use error::{Error, Result};
pub use loader::{load, Incoming, Loader};
pub use progress::{Progress, RamStats};
pub use ram::{RamSource, PAGES_PER_PART, PAGE_SIZE, RAM_BLOCK, RAM_SECTION_ID};
#[cfg(feature = "uart")]
pub use uart::{serial_section, serial_state, SERIAL, SERIAL_VERSION};
pub use vmdesc::MAX_VMDESC_LEN;
pub use wire::MAX_MACHINE_TYPE_LEN;
pub use writer::{save, Snapshot};

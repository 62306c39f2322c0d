//! What goes wrong while saving or loading a stream: every variant says where in the stream
//! (or in which device's state) and why.

use std::fmt;
use std::io;

/// What went wrong while saving or loading a migration stream.
#[derive(Debug)]
pub enum Error {
    /// The stream breaks the format: what is wrong, and at which byte offset of the stream.
    Format {
        /// Offset of the offending item from the stream's first byte.
        offset: u64,
        /// What is wrong with it.
        reason: String,
    },
    /// The stream ended before it was complete.
    Truncated {
        /// How many bytes the stream had.
        offset: u64,
        /// What was being read when it ended.
        reading: &'static str,
    },
    /// The stream's RAM is not the size of the destination's RAM.
    RamSize {
        /// Bytes of RAM in the stream.
        stream: u64,
        /// Bytes of RAM on the destination.
        destination: u64,
    },
    /// The stream comes from another machine type.
    MachineType {
        /// The machine type in the stream.
        stream: String,
        /// The destination's machine type.
        destination: String,
    },
    /// A device's state blob is not what its decoder expects.
    DeviceState {
        /// The section name.
        name: String,
        /// What is wrong.
        reason: String,
    },
    /// What the caller asked to save cannot be written as a stream.
    Invalid(String),
    /// The migration was cancelled (`migrate_cancel`) before it finished.
    Cancelled,
    /// Reading or writing failed.
    Io {
        /// What was being done.
        op: &'static str,
        /// Bytes of the stream read or written before the failure.
        offset: u64,
        /// The underlying error.
        source: io::Error,
    },
}

/// This crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// An I/O error while doing `op`, `offset` bytes into the stream.
    pub fn io(op: &'static str, offset: u64, source: io::Error) -> Error {
        Error::Io { op, offset, source }
    }

    pub(crate) fn format(offset: u64, reason: impl Into<String>) -> Error {
        Error::Format { offset, reason: reason.into() }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Format { offset, reason } => {
                write!(f, "migration stream, byte {offset}: {reason}")
            }
            Error::Truncated { offset, reading } => {
                write!(f, "migration stream ends at byte {offset}, inside {reading}")
            }
            Error::RamSize { stream, destination } => write!(
                f,
                "migration stream has {stream} bytes of RAM, this machine has {destination}"
            ),
            Error::MachineType { stream, destination } => {
                write!(f, "Machine type received is '{stream}' and local is '{destination}'")
            }
            Error::DeviceState { name, reason } => {
                write!(f, "migration: state of device '{name}': {reason}")
            }
            Error::Invalid(reason) => write!(f, "migration: {reason}"),
            Error::Cancelled => write!(f, "migration cancelled"),
            Error::Io { op, offset, source } => {
                write!(f, "migration: cannot {op} (at byte {offset}): {source}")
            }
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

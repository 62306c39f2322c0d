//! The one error type of the chardev library crates.

use std::fmt;
use std::io;
use std::path::PathBuf;

/// Everything that can go wrong when chardevs are parsed, created, changed or used.
///
/// Each variant carries what a user needs to fix the problem: the option and value, the
/// chardev id, or the path and the operation that failed.
#[derive(Debug)]
pub enum Error {
    /// An option has a bad value, or cannot be combined with the others.
    Option {
        /// The option's key as the user wrote it (`size`, `path`, ...).
        key: String,
        /// The value as the user wrote it (empty when the key itself is the problem).
        value: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A key that the chosen backend does not know.
    UnknownOption {
        /// The backend type (`file`, `socket`, ...).
        backend: String,
        /// The unknown key.
        key: String,
    },
    /// A key that the chosen backend needs was not given.
    MissingOption {
        /// The backend type (`file`, `socket`, ...).
        backend: String,
        /// The missing key.
        key: String,
    },
    /// No backend of that type is known to the registry.
    UnknownBackend(String),
    /// A chardev with that id already exists.
    Exists(String),
    /// No chardev has that id.
    NotFound(String),
    /// The chardev has a frontend attached (or is the base of a mux) and cannot go.
    Busy(String),
    /// The chardev already has a frontend (or its mux is full).
    InUse(String),
    /// The backend cannot do what was asked (pass fds, send a break, ...).
    Unsupported {
        /// The chardev id or backend type.
        what: String,
        /// The operation it cannot do.
        operation: &'static str,
    },
    /// The chardev's backend is not of the type asked for ([`Registry::with_backend`]).
    ///
    /// [`Registry::with_backend`]: crate::Registry::with_backend
    WrongBackend {
        /// The chardev id.
        id: String,
        /// What its backend is, as QEMU names backend types (`null`, `socket`; `mux` for
        /// the mux chardev of `mux=on`).
        kind: &'static str,
        /// The Rust type that was asked for (`Ringbuf`).
        expected: &'static str,
    },
    /// The chardev has no connection to a peer right now (writes fail with this, as QEMU's EIO).
    NotConnected(String),
    /// The event loop that served this chardev is gone.
    LoopGone,
    /// A chardev with sessions has none with this number (ended already, or never was).
    NoSession {
        /// The chardev's id.
        id: String,
        /// The session number asked for.
        session: u64,
    },
    /// A passed fd (`getfd`, `add-fd`, `/dev/fdset/N`) cannot be found or used; the text is
    /// QEMU's where QEMU has one.
    Fd(String),
    /// An I/O error, with what was being done and on what.
    Io {
        /// What was being done ("open", "read", "set O_NONBLOCK on", ...).
        op: &'static str,
        /// The path or object it was done on, if any.
        path: Option<PathBuf>,
        /// The underlying error.
        source: io::Error,
    },
}

/// The library's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// An I/O error while doing `op` on `path`.
    pub fn io_path(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        Error::Io { op, path: Some(path.into()), source }
    }

    /// An I/O error while doing `op`, on nothing with a path.
    pub fn io(op: &'static str, source: io::Error) -> Self {
        Error::Io { op, path: None, source }
    }

    /// A bad option value.
    pub fn option(key: &str, value: &str, reason: impl Into<String>) -> Self {
        Error::Option { key: key.into(), value: value.into(), reason: reason.into() }
    }

    /// The underlying `io::ErrorKind`, where this error came from an I/O call.
    pub fn io_kind(&self) -> Option<io::ErrorKind> {
        match self {
            Error::Io { source, .. } => Some(source.kind()),
            _ => None,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Option { key, value, reason } if value.is_empty() => {
                write!(f, "chardev option '{key}': {reason}")
            }
            Error::Option { key, value, reason } => {
                write!(f, "chardev option '{key}={value}': {reason}")
            }
            Error::UnknownOption { backend, key } => {
                write!(f, "Invalid parameter '{key}' for chardev backend '{backend}'")
            }
            Error::MissingOption { backend, key } => {
                write!(f, "chardev: {backend}: Parameter '{key}' is missing")
            }
            Error::UnknownBackend(kind) => write!(f, "'{kind}' is not a valid char driver name"),
            Error::Exists(id) => write!(f, "Chardev with id '{id}' already exists"),
            Error::NotFound(id) => write!(f, "Chardev '{id}' not found"),
            Error::Busy(id) => write!(f, "Chardev '{id}' is busy"),
            Error::InUse(id) => write!(f, "chardev '{id}' is already in use"),
            Error::Unsupported { what, operation } => {
                write!(f, "chardev '{what}' cannot {operation}")
            }
            Error::WrongBackend { id, kind, expected } => {
                write!(f, "chardev '{id}' is a {kind} backend, not a {expected}")
            }
            Error::NotConnected(id) => write!(f, "chardev '{id}' is not connected"),
            Error::LoopGone => write!(f, "the chardev event loop has stopped"),
            Error::NoSession { id, session } => {
                write!(f, "chardev '{id}' has no session {session}")
            }
            Error::Fd(text) => f.write_str(text),
            Error::Io { op, path: Some(path), source } => {
                write!(f, "cannot {op} '{}': {source}", path.display())
            }
            Error::Io { op, path: None, source } => write!(f, "cannot {op}: {source}"),
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

/// An I/O error from a frontend handle (`write_all`), for callers that use `?` with both.
impl From<io::Error> for Error {
    fn from(source: io::Error) -> Error {
        Error::Io { op: "do chardev I/O", path: None, source }
    }
}

impl From<Error> for io::Error {
    fn from(e: Error) -> io::Error {
        let kind = match &e {
            Error::Io { source, .. } => source.kind(),
            Error::NotConnected(_) | Error::LoopGone => io::ErrorKind::NotConnected,
            Error::Unsupported { .. } => io::ErrorKind::Unsupported,
            _ => io::ErrorKind::InvalidInput,
        };
        io::Error::new(kind, e)
    }
}

//! The backends every embedder gets: `null`, `file`, `pipe`, `ringbuf` (alias `memory`),
//! `stdio`, `hub` (one frontend over other chardevs) and `syslog` (lines of output as syslog
//! records: it needs only a unix datagram socket). Each is one file that reads like its siblings.

pub mod fd_stream;
pub mod file;
pub mod hub;
pub mod null;
pub mod pipe;
pub mod ringbuf;
pub mod stdio;
pub mod syslog;

use crate::registry::Registry;

/// Registers the core backends' constructors with `registry`.
pub(crate) fn register_core(registry: &Registry) {
    registry.register_backend("null", null::build);
    registry.register_backend("file", file::build);
    registry.register_backend("pipe", pipe::build);
    registry.register_backend("ringbuf", ringbuf::build);
    registry.register_backend("stdio", stdio::build);
    registry.register_backend("hub", hub::build);
    registry.register_backend("syslog", syslog::build);
}

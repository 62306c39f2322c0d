//! A device's saved state, opaque to the stream, and how a `SECTION_FULL` frames it so that
//! a reader finds its end.

use std::io::Read;

use crate::wire::Stream;
use crate::{Error, Result};

/// The largest device state a stream may carry; a larger length field is corruption.
pub const MAX_DEVICE_STATE_LEN: usize = 1 << 20;

/// The section name of the guest shell's state (an opaque blob its owner defines).
pub const GUEST_SHELL: &str = "guest-shell";

/// One device's saved state: a `SECTION_FULL` of the stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceState {
    /// The section's idstr ("serial", "guest-shell"): how the destination finds it.
    pub name: String,
    /// Which device of that name (0 for the first).
    pub instance_id: u32,
    /// The version of the state's layout, for the destination's decoder.
    pub version_id: u32,
    /// The state itself, opaque to the stream.
    pub data: Vec<u8>,
}

impl DeviceState {
    /// A device's state.
    pub fn new(name: &str, instance_id: u32, version_id: u32, data: Vec<u8>) -> DeviceState {
        DeviceState { name: name.to_owned(), instance_id, version_id, data }
    }
}

/// How a device section's state is framed, so that a reader finds its end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StateLayout {
    /// A uint32 length, then that many bytes: how [`save`](crate::save) writes every device.
    Sized,
    /// Exactly this many bytes: a QEMU device whose vmstate has only fixed-size fields and
    /// no subsection (QEMU's "timer" is 24 bytes, "globalstate" 104).
    Fixed(usize),
}

/// The state of the device section `name`, framed as `layout` says.
pub(crate) fn read_state<R: Read>(
    s: &mut Stream<R>,
    layout: StateLayout,
    name: &str,
) -> Result<Vec<u8>> {
    let len = match layout {
        StateLayout::Fixed(len) => len,
        StateLayout::Sized => {
            let at = s.pos;
            let len = s.be32("a device state's size")? as usize;
            if len > MAX_DEVICE_STATE_LEN {
                return Err(Error::format(
                    at,
                    format!(
                        "state of device '{name}' claims {len} bytes, more than the limit of \
                         {MAX_DEVICE_STATE_LEN}"
                    ),
                ));
            }
            len
        }
    };
    s.bytes(len, "a device's state")
}

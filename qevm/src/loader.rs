//! Loading: a stream read back on a destination, every field checked, the RAM written
//! straight into the destination's RAM and the device states returned by name.

use std::io::Read;

use crate::device::read_state;
use crate::ram::{self, LoadState};
use crate::wire::{self, section_name, Stream, MAX_MACHINE_TYPE_LEN};
use crate::{vmdesc, DeviceState, Error, Result, StateLayout, PAGE_SIZE, RAM_BLOCK};

/// What came out of a stream besides the RAM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Incoming {
    /// The machine type from the configuration section.
    pub machine_type: String,
    /// The device sections, in stream order.
    pub devices: Vec<DeviceState>,
    /// The vmdesc JSON, checked against the device sections; `None` when the stream ended
    /// after `QEMU_VM_EOF` without one.
    pub vmdesc: Option<String>,
    /// Pages that came as ZERO records.
    pub zero_pages: u64,
    /// Pages that came with their data.
    pub data_pages: u64,
    /// The stream's length in bytes.
    pub bytes: u64,
}

impl Incoming {
    /// The device section named `name` with instance `instance_id`.
    pub fn device(&self, name: &str, instance_id: u32) -> Option<&DeviceState> {
        self.devices.iter().find(|d| d.name == name && d.instance_id == instance_id)
    }
}

/// Reads streams for a destination: its machine type, and the layouts of device sections
/// that [`save`](crate::save) did not write.
#[derive(Debug, Clone)]
pub struct Loader<'a> {
    machine_type: &'a str,
    fixed: Vec<(&'a str, usize)>,
}

/// Reads a stream written by [`save`](crate::save) (or by QEMU, if its devices are known to
/// a [`Loader`]) into `ram`, for a destination of machine type `machine_type`.
///
/// `ram` is the destination's RAM, of its size: every page is overwritten.
pub fn load<R: Read>(input: R, machine_type: &str, ram: &mut [u8]) -> Result<Incoming> {
    Loader::new(machine_type).load(input, ram)
}

impl<'a> Loader<'a> {
    /// A loader for a destination of machine type `machine_type`; device sections are
    /// read as [`StateLayout::Sized`].
    pub fn new(machine_type: &'a str) -> Loader<'a> {
        Loader { machine_type, fixed: Vec::new() }
    }

    /// Reads the section `name` as [`StateLayout::Fixed`]`(len)`.
    pub fn fixed_size(mut self, name: &'a str, len: usize) -> Loader<'a> {
        self.fixed.push((name, len));
        self
    }

    /// How the device section `name` is framed.
    pub fn layout(&self, name: &str) -> StateLayout {
        match self.fixed.iter().find(|(n, _)| *n == name) {
            Some(&(_, len)) => StateLayout::Fixed(len),
            None => StateLayout::Sized,
        }
    }

    /// Reads a stream from `input` (blocking reads, buffered here) into `ram`.
    ///
    /// Reading stops after the vmdesc; bytes the buffer read beyond it are dropped.
    pub fn load<R: Read>(&self, input: R, ram: &mut [u8]) -> Result<Incoming> {
        if ram.is_empty() || ram.len() % PAGE_SIZE != 0 {
            return Err(Error::Invalid(format!(
                "destination RAM of {} bytes cannot be loaded: it must be a non-zero multiple \
                 of {PAGE_SIZE} bytes",
                ram.len()
            )));
        }
        let mut stream = Stream::new(input);
        let mut state = LoadState::new(ram.len());
        let machine_type = header(&mut stream, self.machine_type)?;
        let devices = sections(&mut stream, self, ram, &mut state)?;
        let vmdesc = vmdesc::read(&mut stream, &devices)?;
        Ok(Incoming {
            machine_type,
            devices: devices.into_iter().map(|(_, d)| d).collect(),
            vmdesc,
            zero_pages: state.zero_pages,
            data_pages: state.data_pages,
            bytes: stream.pos,
        })
    }
}

/// Magic, version and configuration; returns the machine type.
fn header<R: Read>(s: &mut Stream<R>, machine_type: &str) -> Result<String> {
    let magic = s.be32("the magic number")?;
    if magic != wire::MAGIC {
        return Err(Error::format(
            0,
            format!(
                "not a QEMU migration stream (magic 0x{magic:08x}, expected 0x5145564d 'QEVM')"
            ),
        ));
    }
    let version = s.be32("the stream version")?;
    if version != wire::VERSION {
        return Err(Error::format(
            4,
            format!("stream version {version} is not supported (only version 3)"),
        ));
    }
    let at = s.pos;
    let kind = s.u8("the configuration section")?;
    if kind != wire::CONFIGURATION {
        return Err(Error::format(
            at,
            format!("expected the configuration section (0x07), found 0x{kind:02x}"),
        ));
    }
    let at = s.pos;
    let len = s.be32("the machine type")? as usize;
    if len > MAX_MACHINE_TYPE_LEN {
        return Err(Error::format(
            at,
            format!("machine type length {len} exceeds the limit of {MAX_MACHINE_TYPE_LEN}"),
        ));
    }
    let name = s.bytes(len, "the machine type")?;
    let name = String::from_utf8(name)
        .map_err(|_| Error::format(at + 4, "the machine type is not UTF-8"))?;
    if name != machine_type {
        return Err(Error::MachineType { stream: name, destination: machine_type.to_owned() });
    }
    Ok(name)
}

/// The sections up to and including `QEMU_VM_EOF`; returns the device sections with ids.
fn sections<R: Read>(
    s: &mut Stream<R>,
    loader: &Loader<'_>,
    ram: &mut [u8],
    state: &mut LoadState,
) -> Result<Vec<(u32, DeviceState)>> {
    let mut devices: Vec<(u32, DeviceState)> = Vec::new();
    loop {
        let at = s.pos;
        let kind = s.u8("the next section")?;
        let out_of_order = |expected: &str| {
            Error::format(
                at,
                format!("{} (0x{kind:02x}) where {expected} belongs", section_name(kind)),
            )
        };
        match kind {
            wire::SECTION_START => {
                if state.ram_id.is_some() {
                    return Err(out_of_order("no second SECTION_START"));
                }
                let id = s.be32("a section header")?;
                let name = s.idstr("a section name")?;
                let instance = s.be32("a section header")?;
                let version = s.be32("a section header")?;
                if name != wire::RAM_SECTION || instance != 0 {
                    return Err(Error::format(
                        at,
                        format!(
                            "section '{name}' instance {instance} is not an iterative section \
                             this machine has (only 'ram' instance 0)"
                        ),
                    ));
                }
                if version != wire::RAM_VERSION {
                    return Err(Error::format(
                        at,
                        format!("section 'ram' version {version} is not supported (only 4)"),
                    ));
                }
                state.ram_id = Some(id);
                ram::load_setup(s, ram.len())?;
                s.footer(id, wire::RAM_SECTION)?;
            }
            wire::SECTION_PART | wire::SECTION_END => {
                let id = s.be32("a section header")?;
                let Some(ram_id) = state.ram_id.filter(|_| !state.ended) else {
                    return Err(out_of_order("the RAM section's START or the devices"));
                };
                if id != ram_id {
                    return Err(Error::format(
                        at,
                        format!(
                            "{} of section id {id}; the RAM section is id {ram_id}",
                            section_name(kind)
                        ),
                    ));
                }
                ram::load_pages(s, ram, state)?;
                s.footer(id, wire::RAM_SECTION)?;
                if kind == wire::SECTION_END {
                    state.ended = true;
                    if let Some(page) = state.sent.iter().position(|&sent| !sent) {
                        return Err(Error::format(
                            at,
                            format!(
                                "the RAM section ends but page 0x{:x} of block '{RAM_BLOCK}' was \
                                 never sent",
                                page * PAGE_SIZE
                            ),
                        ));
                    }
                }
            }
            wire::SECTION_FULL => {
                if !state.ended {
                    return Err(out_of_order("the RAM section"));
                }
                let id = s.be32("a section header")?;
                let name = s.idstr("a section name")?;
                let instance_id = s.be32("a section header")?;
                let version_id = s.be32("a section header")?;
                if Some(id) == state.ram_id || devices.iter().any(|(i, _)| *i == id) {
                    return Err(Error::format(
                        at,
                        format!("section '{name}' reuses section id {id}"),
                    ));
                }
                if devices.iter().any(|(_, d)| d.name == name && d.instance_id == instance_id) {
                    return Err(Error::format(
                        at,
                        format!("device '{name}' instance {instance_id} comes twice"),
                    ));
                }
                let data = read_state(s, loader.layout(&name), &name)?;
                s.footer(id, &name)?;
                devices.push((id, DeviceState { name, instance_id, version_id, data }));
            }
            wire::EOF => {
                if !state.ended {
                    return Err(out_of_order("the rest of the RAM section"));
                }
                return Ok(devices);
            }
            wire::SUBSECTION | wire::VMDESCRIPTION | wire::CONFIGURATION | wire::COMMAND => {
                return Err(out_of_order("a section"));
            }
            _ => {
                return Err(Error::format(at, format!("unknown section type 0x{kind:02x}")));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{load_err, saved, small};
    use crate::GUEST_SHELL;

    #[test]
    fn a_saved_machine_loads_back_with_its_ram_and_devices() {
        let (ram, devices) = small();
        let stream = saved(&ram, &devices);
        let mut back = vec![0x55u8; ram.len()]; // stale contents are overwritten
        let incoming = load(&stream[..], "pc", &mut back).unwrap();
        assert_eq!(back, ram);
        assert_eq!(incoming.devices, devices);
        assert_eq!(incoming.machine_type, "pc");
        assert_eq!((incoming.zero_pages, incoming.data_pages), (6, 2));
        assert_eq!(incoming.bytes, stream.len() as u64);
        assert_eq!(incoming.vmdesc.as_deref(), Some(vmdesc::json(&devices).as_str()));
        assert_eq!(incoming.device(GUEST_SHELL, 0).unwrap().data, b"uptime-offset=1.5");
        assert!(incoming.device(GUEST_SHELL, 1).is_none());
    }

    #[test]
    fn another_machine_type_is_refused_as_qemu_refuses_it() {
        let (ram, devices) = small();
        let stream = saved(&ram, &devices);
        let mut back = vec![0u8; ram.len()];
        let e = load(&stream[..], "q35", &mut back).unwrap_err();
        assert_eq!(e.to_string(), "Machine type received is 'pc' and local is 'q35'");
    }

    #[test]
    fn section_order_and_footers_are_checked() {
        let (ram, devices) = small();
        let stream = saved(&ram, &devices);
        // The END section: before the device sections, EOF and the vmdesc.
        let full: usize = devices.iter().map(|d| 23 + d.name.len() + d.data.len()).sum();
        let end_at = stream.len() - vmdesc::json(&devices).len() - 5 - 1 - full - 18;
        assert_eq!(stream[end_at], wire::SECTION_END);
        let mut twice = stream[..end_at].to_vec();
        twice.extend_from_slice(&stream[end_at..end_at + 18]); // END
        twice.extend_from_slice(&stream[end_at..]); // END again
        assert!(load_err(&twice, ram.len()).contains(
            "QEMU_VM_SECTION_END (0x03) where the RAM section's START or the devices belongs"
        ));

        let mut footer = stream.clone();
        footer[end_at + 17] = 9;
        assert!(load_err(&footer, ram.len()).contains(&format!(
            "byte {}: footer of section 'ram' (id 1) names section id 9",
            end_at + 13
        )));

        let mut early_eof = stream[..end_at].to_vec();
        early_eof.push(wire::EOF);
        assert!(load_err(&early_eof, ram.len())
            .contains("QEMU_VM_EOF (0x00) where the rest of the RAM section belongs"));
    }
}

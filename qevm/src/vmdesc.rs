//! The vmdesc: the JSON after `QEMU_VM_EOF` that describes each device's state for QEMU's
//! tools. Written as QEMU's JSON writer formats it; on load, checked against the device
//! sections already read, or absent.

use std::io::Read;

use crate::wire::{self, Stream};
use crate::{DeviceState, Error, Result, PAGE_SIZE};

/// The largest vmdesc JSON a stream may carry (QEMU 7.2's `pc` machine writes 96 KiB).
pub const MAX_VMDESC_LEN: usize = 16 << 20;

/// The vmdesc, formatted as QEMU's JSON writer formats it (`", "` and `": "`, keys in
/// QEMU's order), describing each device's state as its `size` and `data` fields.
pub(crate) fn json(devices: &[DeviceState]) -> String {
    let quote = |s: &str| serde_json::Value::from(s).to_string();
    let described: Vec<String> = devices
        .iter()
        .map(|d| {
            format!(
                "{{\"name\": {name}, \"instance_id\": {}, \"vmsd_name\": {name}, \"version\": {}, \
                 \"fields\": [{{\"name\": \"size\", \"type\": \"uint32\", \"size\": 4}}, \
                 {{\"name\": \"data\", \"type\": \"buffer\", \"size\": {}}}]}}",
                d.instance_id,
                d.version_id,
                d.data.len(),
                name = quote(&d.name),
            )
        })
        .collect();
    format!("{{\"page_size\": {PAGE_SIZE}, \"devices\": [{}]}}", described.join(", "))
}

/// After `QEMU_VM_EOF`: the end of the input, or the vmdesc, checked against `devices`.
pub(crate) fn read<R: Read>(
    s: &mut Stream<R>,
    devices: &[(u32, DeviceState)],
) -> Result<Option<String>> {
    let at = s.pos;
    match s.maybe_u8()? {
        None => return Ok(None),
        Some(wire::VMDESCRIPTION) => {}
        Some(kind) => {
            return Err(Error::format(
                at,
                format!(
                    "0x{kind:02x} after QEMU_VM_EOF, where QEMU_VM_VMDESCRIPTION (0x06) or the \
                     end belongs"
                ),
            ))
        }
    }
    let len_at = s.pos;
    let len = s.be32("the vmdesc length")? as usize;
    if len > MAX_VMDESC_LEN {
        return Err(Error::format(
            len_at,
            format!("vmdesc length {len} exceeds the limit of {MAX_VMDESC_LEN}"),
        ));
    }
    let json_at = s.pos;
    let bytes = s.bytes(len, "the vmdesc")?;
    let bad = |reason: String| Error::format(json_at, format!("vmdesc: {reason}"));
    let text = String::from_utf8(bytes).map_err(|_| bad("not UTF-8".into()))?;
    let value: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| bad(format!("not JSON: {e}")))?;
    if value.get("page_size").and_then(serde_json::Value::as_u64) != Some(PAGE_SIZE as u64) {
        return Err(bad(format!("\"page_size\" is not {PAGE_SIZE}")));
    }
    let listed = value
        .get("devices")
        .and_then(serde_json::Value::as_array)
        .ok_or_else(|| bad("no \"devices\" list".into()))?;
    if listed.len() != devices.len() {
        return Err(bad(format!(
            "lists {} devices, the stream has {} device sections",
            listed.len(),
            devices.len()
        )));
    }
    for (i, (entry, (_, device))) in listed.iter().zip(devices).enumerate() {
        let name = entry.get("name").and_then(serde_json::Value::as_str);
        let instance = entry.get("instance_id").and_then(serde_json::Value::as_u64);
        if name != Some(device.name.as_str()) || instance != Some(device.instance_id.into()) {
            return Err(bad(format!(
                "device {i} is {} instance {}, the stream's section is '{}' instance {}",
                name.map_or("(no name)".to_owned(), |n| format!("'{n}'")),
                instance.map_or("(none)".to_owned(), |n| n.to_string()),
                device.name,
                device.instance_id
            )));
        }
        if let Some(version) = entry.get("version") {
            if version.as_u64() != Some(device.version_id.into()) {
                return Err(bad(format!(
                    "device '{}' has version {version}, its section version {}",
                    device.name, device.version_id
                )));
            }
        }
    }
    Ok(Some(text))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load;
    use crate::testing::{load_err, saved, small};

    #[test]
    fn the_vmdesc_is_formatted_as_qemu_formats_it() {
        let devices = [DeviceState::new("serial", 0, 1, vec![0; 12])];
        assert_eq!(
            json(&devices),
            "{\"page_size\": 4096, \"devices\": [{\"name\": \"serial\", \"instance_id\": 0, \
             \"vmsd_name\": \"serial\", \"version\": 1, \"fields\": [{\"name\": \"size\", \
             \"type\": \"uint32\", \"size\": 4}, {\"name\": \"data\", \"type\": \"buffer\", \
             \"size\": 12}]}]}"
        );
        assert_eq!(json(&[]), "{\"page_size\": 4096, \"devices\": []}");
        // Names are JSON strings, escaped.
        let odd = [DeviceState::new("a\"b", 0, 1, vec![])];
        let v: serde_json::Value = serde_json::from_str(&json(&odd)).unwrap();
        assert_eq!(v["devices"][0]["name"], "a\"b");
    }

    #[test]
    fn a_stream_without_vmdesc_is_accepted_and_says_so() {
        let (ram, devices) = small();
        let stream = saved(&ram, &devices);
        let json_len = json(&devices).len();
        let without = &stream[..stream.len() - json_len - 5];
        assert_eq!(without.last(), Some(&wire::EOF));
        let mut back = vec![0u8; ram.len()];
        let incoming = load(without, "pc", &mut back).unwrap();
        assert_eq!(incoming.vmdesc, None);
        assert_eq!(back, ram);
        assert_eq!(incoming.devices, devices);
    }

    #[test]
    fn the_vmdesc_must_name_the_device_sections() {
        let (ram, devices) = small();
        let stream = saved(&ram, &devices);
        let json_at = stream.len() - json(&devices).len();
        let mut renamed = stream.clone();
        let swapped = json(&[devices[1].clone(), devices[0].clone()]);
        renamed.truncate(json_at);
        renamed.extend_from_slice(swapped.as_bytes());
        let e = load_err(&renamed, ram.len());
        assert_eq!(
            e,
            format!(
                "migration stream, byte {json_at}: vmdesc: device 0 is 'guest-shell' instance \
                 0, the stream's section is 'serial' instance 0"
            )
        );
        let mut trailing = stream.clone();
        trailing.truncate(json_at - 5);
        trailing.push(0x42);
        assert!(load_err(&trailing, ram.len()).contains(
            "0x42 after QEMU_VM_EOF, where QEMU_VM_VMDESCRIPTION (0x06) or the end belongs"
        ));
    }
}

//! `stdio`: placeholder until the terminal handling lands.

use crate::chardev::Chardev;
use crate::error::{Error, Result};
use crate::options::ChardevSpec;
use crate::registry::BuildContext;

/// Builds a `stdio` backend.
pub fn build(_spec: &ChardevSpec, _cx: &BuildContext<'_>) -> Result<Box<dyn Chardev>> {
    Err(Error::Unsupported { what: "stdio".into(), operation: "open yet" })
}

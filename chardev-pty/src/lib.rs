//! chardev-pty backends for the chardev crate (under construction).

// Library code never unwraps what a peer or a user controls.
#![cfg_attr(not(test), warn(clippy::unwrap_used))]

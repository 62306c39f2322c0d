//! Demo programs for the chardev crates.

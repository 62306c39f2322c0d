//! chardev-socket backends for the chardev crate (under construction).

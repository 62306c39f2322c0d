//! chardev-pty backends for the chardev crate (under construction).

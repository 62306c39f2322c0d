//! Benchmarks for the chardev crates.

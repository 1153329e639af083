//! The workloads of `cargo xtask bench` (being built).
fn main() {}

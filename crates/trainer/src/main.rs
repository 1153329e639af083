//! The `trainer` binary.
fn main() {}

//! The `trainer` library: data readers, training loops and evaluation behind the `trainer` binary.

pub mod data;

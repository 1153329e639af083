//! Examples of each crate used on its own; see `examples/examples/*.rs` and README.md.

/// The Rust code of README.md, compiled and run as a doc test so that it stays true.
#[doc = include_str!("../../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;

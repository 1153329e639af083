//! Examples of each crate used on its own; see `examples/examples/*.rs` and README.md.

//! The `models` crate (being built).

pub mod ops;

//! The `models` crate (being built).

//! The `augment` crate (being built).

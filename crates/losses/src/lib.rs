//! The `losses` crate (being built).

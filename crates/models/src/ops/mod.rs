//! Fast CPU kernels as candle custom ops (being built).

//! Fast CPU kernels as candle custom ops: im2col/GEMM convolution and fused batch norm.
//!
//! Each public function here is a drop-in replacement for a stock candle expression and gives
//! the same values and gradients (within float tolerance):
//!
//! | fast op | stock candle expression |
//! | --- | --- |
//! | [`conv2d`]`(xs, w, padding, stride)` | `xs.conv2d(w, padding, stride, 1, 1)` |
//! | [`batch_norm`]`(xs, bn, train)` | `bn.forward_t(xs, train)` |
//! | [`batch_norm_relu`]`(xs, bn, train)` | `bn.forward_t(xs, train)?.relu()` |
//! | [`batch_norm_add_relu`]`(xs, bn, residual, train)` | `(bn.forward_t(xs, train)? + residual)?.relu()` |
//!
//! The fast path runs on CPU tensors of dtype `f32` or `f64`; every other device or dtype
//! (CUDA, Metal, `f16`, `bf16`) takes the stock candle ops, so nothing changes there.
//! The kernels use rayon's global pool (`RAYON_NUM_THREADS`), like candle itself.

mod batch_norm;
mod conv2d;
mod cpu;
mod im2col;

pub use batch_norm::{batch_norm, batch_norm_add_relu, batch_norm_relu};
pub use conv2d::conv2d;

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
//! | [`conv2d_bn_eval`]`(xs, w, padding, stride, bn, residual, relu)` | `bn.forward_t(&xs.conv2d(w, padding, stride, 1, 1)?, false)`, `+ residual`, `.relu()` |
//! | [`conv2d_bn_train`]`(xs, w, padding, stride, bn, residual, relu)` | the same with `bn.forward_t(.., true)` |
//!
//! The fast path runs on CPU tensors of dtype `f32` or `f64`; every other device or dtype
//! (CUDA, Metal, `f16`, `bf16`) takes the stock candle ops, so nothing changes there.
//! The kernels use rayon's global pool (`RAYON_NUM_THREADS`), like candle itself.
//!
//! A program that trains on CPU should also call [`retain_freed_memory`] once at start-up
//! (it changes a process-wide `malloc` setting, so no op does it by itself).

mod alloc;
mod batch_norm;
mod conv2d;
mod conv_bn;
mod cpu;
mod im2col;

pub use alloc::retain_freed_memory;
pub use batch_norm::{
    batch_norm, batch_norm_add_relu, batch_norm_relu, sync_supported, ChannelSums, SyncBatchNorm,
};
pub use conv2d::conv2d;
pub use conv_bn::{conv2d_bn_eval, conv2d_bn_train};

//! Shared input checks and numerically careful building blocks (L2 normalisation, log-softmax, masking).

use candle_core::{bail, DType, Device, Result, Tensor};

/// Returns `(rows, cols)` of a rank-2 tensor, or an error naming `func` and `arg`.
pub(crate) fn dims2(func: &str, arg: &str, xs: &Tensor) -> Result<(usize, usize)> {
    match xs.dims() {
        &[r, c] => Ok((r, c)),
        dims => bail!("{func}: {arg} must have rank 2 (N, D), got shape {dims:?}"),
    }
}

/// Errors unless `a` and `b` have the same shape.
pub(crate) fn same_shape(
    func: &str,
    a_name: &str,
    a: &Tensor,
    b_name: &str,
    b: &Tensor,
) -> Result<()> {
    if a.dims() != b.dims() {
        bail!(
            "{func}: {a_name} {:?} and {b_name} {:?} must have the same shape",
            a.dims(),
            b.dims()
        )
    }
    Ok(())
}

/// Errors unless `xs` holds floating point numbers.
pub(crate) fn float_dtype(func: &str, arg: &str, xs: &Tensor) -> Result<()> {
    if !xs.dtype().is_float() {
        bail!(
            "{func}: {arg} must be a float tensor (f32 or f64), got {:?}",
            xs.dtype()
        )
    }
    Ok(())
}

/// Errors unless `a` and `b` have the same dtype and device.
pub(crate) fn same_kind(
    func: &str,
    a_name: &str,
    a: &Tensor,
    b_name: &str,
    b: &Tensor,
) -> Result<()> {
    if a.dtype() != b.dtype() {
        bail!(
            "{func}: {a_name} ({:?}) and {b_name} ({:?}) must have the same dtype",
            a.dtype(),
            b.dtype()
        )
    }
    if !a.device().same_device(b.device()) {
        bail!("{func}: {a_name} and {b_name} must be on the same device")
    }
    Ok(())
}

/// Errors unless `value` is finite and strictly positive.
pub(crate) fn positive(func: &str, name: &str, value: f64) -> Result<()> {
    if !(value.is_finite() && value > 0.0) {
        bail!("{func}: {name} must be finite and > 0, got {value}")
    }
    Ok(())
}

/// Row-wise L2 normalisation, `x / max(‖x‖₂, 1e-12)` like `torch.nn.functional.normalize`.
///
/// The norm is taken as `sqrt(max(Σx², 1e-24))`, which has the same value and keeps the
/// gradient finite for an all-zero row (a plain `sqrt(0)` would give `0/0` in backward).
pub(crate) fn l2_normalize(xs: &Tensor) -> Result<Tensor> {
    let last = xs.rank().saturating_sub(1);
    let norm = xs.sqr()?.sum_keepdim(last)?.maximum(1e-24)?.sqrt()?;
    xs.broadcast_div(&norm)
}

/// Log-softmax over dimension 1 of a rank-2 tensor; the shift by the row maximum is detached
/// (it cancels mathematically, so it carries no gradient).
pub(crate) fn log_softmax(xs: &Tensor) -> Result<Tensor> {
    let shifted = xs.broadcast_sub(&xs.max_keepdim(1)?.detach())?;
    shifted.broadcast_sub(&shifted.exp()?.sum_keepdim(1)?.log()?)
}

/// Softmax over dimension 1 of a rank-2 tensor (detached maximum, see [`log_softmax`]).
pub(crate) fn softmax(xs: &Tensor) -> Result<Tensor> {
    let e = xs.broadcast_sub(&xs.max_keepdim(1)?.detach())?.exp()?;
    e.broadcast_div(&e.sum_keepdim(1)?)
}

/// Row-wise log-sum-exp over dimension 1 of a rank-2 tensor, kept as `(M, 1)`.
pub(crate) fn logsumexp(xs: &Tensor) -> Result<Tensor> {
    let max = xs.max_keepdim(1)?.detach();
    xs.broadcast_sub(&max)?
        .exp()?
        .sum_keepdim(1)?
        .log()?
        .broadcast_add(&max)
}

/// An additive `(m, m)` mask: `-big` on the diagonal, 0 elsewhere.
///
/// `big` is chosen by the caller so that `exp(x - big - max)` underflows to exactly 0 for
/// every bounded similarity `x`; this excludes self-similarities exactly, like `-inf`, but
/// without `0 · inf = NaN` anywhere in the backward pass.
pub(crate) fn diagonal_mask(m: usize, big: f64, dtype: DType, device: &Device) -> Result<Tensor> {
    Tensor::eye(m, dtype, device)?.affine(-big, 0.0)
}

/// The diagonal penalty for similarities bounded by `1 / temperature` in magnitude.
pub(crate) fn mask_value(temperature: f64) -> f64 {
    2.0 / temperature + 1.0e4
}

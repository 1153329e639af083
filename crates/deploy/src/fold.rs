//! Batch norm folded into the layer before it, for inference.
//!
//! In evaluation a batch norm is the affine map `y = γ·(x − μ)/√(σ² + ε) + β` per channel, with
//! the running mean μ and variance σ². After a bias-free convolution or a linear layer `x = W·u
//! + b` it folds into that layer: with `s = γ/√(σ² + ε)`,
//!
//! ```text
//! W' = s · W   (row c of W, the kernel of output channel c, scaled by s_c)
//! b' = s · (b − μ) + β
//! ```
//!
//! computed in `f64` and rounded once to `f32`.

use std::collections::HashMap;

use candle_core::{DType, Result, Tensor};

/// A layer's weight and bias after folding, row-major `f32`.
#[derive(Debug, Clone, PartialEq)]
pub struct Folded {
    /// `(c_out, …)`: the weight with its leading (output) dimension scaled.
    pub weight: Vec<f32>,
    /// `(c_out,)`.
    pub bias: Vec<f32>,
}

/// The tensor `name` of `tensors` as `f32` values, checked to have `dims`.
pub fn tensor_f32(
    tensors: &HashMap<String, Tensor>,
    name: &str,
    dims: &[usize],
) -> Result<Vec<f32>> {
    let Some(t) = tensors.get(name) else {
        candle_core::bail!("no tensor `{name}`")
    };
    if t.dims() != dims {
        candle_core::bail!(
            "tensor `{name}` has shape {:?}, expected {dims:?}",
            t.dims()
        )
    }
    t.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()
}

/// Folds the batch norm under the path `bn` (`{bn}.weight`, `.bias`, `.running_mean`,
/// `.running_var`, each `(c_out,)`) into `weight` `(c_out, …)` and `bias` (`None`: zero).
///
/// # Shapes
/// - `weight`: `c_out · k` values (row-major, `k` per output channel)
/// - `bias`: `c_out` values, or `None`
/// - returns [`Folded`] of the same sizes
pub fn fold_batch_norm(
    weight: &[f32],
    bias: Option<&[f32]>,
    tensors: &HashMap<String, Tensor>,
    bn: &str,
    eps: f64,
) -> Result<Folded> {
    let c_out = match bias {
        Some(b) => b.len(),
        None => tensors
            .get(&format!("{bn}.running_mean"))
            .map_or(0, Tensor::elem_count),
    };
    if c_out == 0 || weight.len() % c_out != 0 {
        candle_core::bail!(
            "fold_batch_norm: a weight of {} values does not split into the {c_out} channels of `{bn}`",
            weight.len()
        )
    }
    let get = |p: &str| tensor_f32(tensors, &format!("{bn}.{p}"), &[c_out]);
    let (gamma, beta, mean, var) = (
        get("weight")?,
        get("bias")?,
        get("running_mean")?,
        get("running_var")?,
    );
    let per = weight.len() / c_out;
    let mut folded = Folded {
        weight: Vec::with_capacity(weight.len()),
        bias: Vec::with_capacity(c_out),
    };
    for c in 0..c_out {
        let s = f64::from(gamma[c]) / (f64::from(var[c]) + eps).sqrt();
        folded.weight.extend(
            weight[c * per..(c + 1) * per]
                .iter()
                .map(|&w| (f64::from(w) * s) as f32),
        );
        let b = bias.map_or(0.0, |b| f64::from(b[c]));
        folded
            .bias
            .push((s * (b - f64::from(mean[c])) + f64::from(beta[c])) as f32);
    }
    Ok(folded)
}

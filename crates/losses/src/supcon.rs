//! Supervised contrastive loss (SupCon): the labels say which views are positives.

use candle_core::{bail, DType, Result, Tensor};

use crate::common::{dims2, float_dtype, l2_normalize, logsumexp, mask_value, positive};

/// Supervised contrastive loss, `L^sup_out` of Khosla et al., "Supervised Contrastive
/// Learning" (NeurIPS 2020, eq. 2).
///
/// The rows of `features` are L2-normalised, `s_ij = z_i · z_j / τ`, and the positives of
/// anchor `i` are the other rows with the same label, `P(i) = {p ≠ i : y_p = y_i}`:
///
/// ```text
/// loss = 1/|A| Σ_{i ∈ A} 1/|P(i)| Σ_{p ∈ P(i)} [ −s_ip + log Σ_{j ≠ i} exp(s_ij) ]
/// ```
///
/// where `A` is the set of anchors with at least one positive (an anchor alone in its class
/// has nothing to pull towards and is left out). There is no `τ / τ_base` factor (the
/// reference code's `base_temperature`): multiply the result if you want it.
/// For several views of each image, concatenate the views and repeat the labels.
///
/// # Shapes
/// - `features`: `(M, D)`, float.
/// - `labels`: `(M,)`, any integer dtype (**class indices, not one-hot**).
/// - returns `()`.
///
/// # Errors
/// If `features` is not rank 2, `labels` is not `(M,)`, no anchor has a positive, or
/// `temperature` is not finite and > 0.
///
/// # Example
/// ```
/// # fn main() -> candle_core::Result<()> {
/// use candle_core::{Device, Tensor};
/// let dev = Device::Cpu;
/// let feats = Tensor::new(&[[1f32, 0.], [0.9, 0.1], [0., 1.], [0.1, 0.9]], &dev)?;
/// let labels = Tensor::new(&[0u32, 0, 1, 1], &dev)?;
/// let loss = losses::supcon(&feats, &labels, 0.1)?;
/// assert!(loss.to_scalar::<f32>()? < 0.01);
/// # Ok(()) }
/// ```
pub fn supcon(features: &Tensor, labels: &Tensor, temperature: f64) -> Result<Tensor> {
    const F: &str = "supcon";
    let (m, _) = dims2(F, "features", features)?;
    float_dtype(F, "features", features)?;
    if labels.dims() != [m] {
        bail!(
            "supcon: labels {:?} must have shape ({m},) to match features {:?}",
            labels.dims(),
            features.dims()
        )
    }
    if labels.dtype().is_float() {
        bail!(
            "supcon: labels must be integer class indices, got {:?}",
            labels.dtype()
        )
    }
    positive(F, "temperature", temperature)?;
    let z = l2_normalize(features)?;
    contrastive_with_positives(F, &z, &labels.to_device(z.device())?, temperature)
}

/// The shared core of [`supcon`] and [`nt_xent_multi`](crate::nt_xent_multi): `z` is already
/// normalised, `(M, D)`; `labels` is `(M,)`.
pub(crate) fn contrastive_with_positives(
    func: &str,
    z: &Tensor,
    labels: &Tensor,
    temperature: f64,
) -> Result<Tensor> {
    let m = z.dim(0)?;
    let dtype = z.dtype();
    let same = labels
        .unsqueeze(1)?
        .broadcast_eq(&labels.unsqueeze(0)?)?
        .to_dtype(dtype)?;
    let eye = Tensor::eye(m, dtype, z.device())?;
    let pos_mask = (same - &eye)?;
    let n_pos = pos_mask.sum(1)?;
    let has_pos = n_pos.gt(0.0)?.to_dtype(dtype)?;
    let n_anchors = has_pos
        .to_dtype(DType::F64)?
        .sum_all()?
        .to_scalar::<f64>()?;
    if n_anchors < 1.0 {
        bail!("{func}: no anchor has a positive (every label of {m} rows is unique)")
    }
    let z_scaled = z.affine(1.0 / temperature, 0.0)?;
    let sims = z_scaled.matmul(&z.t()?)?;
    let lse = logsumexp(&(&sims + eye.affine(-mask_value(temperature), 0.0)?)?)?;
    // -log p_ij = lse_i - s_ij, finite everywhere (the diagonal is zeroed by pos_mask).
    let neg_log_prob = sims.broadcast_sub(&lse)?.neg()?;
    let per_anchor = (pos_mask * neg_log_prob)?
        .sum(1)?
        .div(&n_pos.maximum(1.0)?)?;
    (per_anchor * has_pos)?.sum_all()? / n_anchors
}

//! NT-Xent, SimCLR's normalised-temperature cross-entropy, for two views and for V ≥ 2 views.

use candle_core::{bail, Result, Tensor};

use crate::common::{
    diagonal_mask, dims2, float_dtype, l2_normalize, logsumexp, mask_value, positive, same_kind,
    same_shape,
};
use crate::nt_xent_fused;
use crate::supcon::contrastive_with_positives;

/// NT-Xent (normalised temperature-scaled cross-entropy), the contrastive loss of SimCLR.
///
/// The rows of `z_a` and `z_b` are L2-normalised and stacked into `z = [z_a; z_b]`
/// (2N views); `s_ij = z_i · z_j / τ`. The positive `p(i)` of view `i` is the other view of the
/// same image (`i ± N`); the self-similarity `s_ii` is excluded from the denominator:
///
/// ```text
/// loss = 1/(2N) Σ_i [ −s_{i,p(i)} + log Σ_{j ≠ i} exp(s_ij) ]
/// ```
///
/// This is the loss of Chen et al., "A Simple Framework for Contrastive Learning of Visual
/// Representations" (ICML 2020), and what `lightly.loss.NTXentLoss(temperature)` computes by
/// default (no memory bank). Computed from one `(2N, 2N)` similarity matrix with a stable
/// log-sum-exp. On the CPU in f32/f64 this runs as one fused op (one GEMM forward, one
/// backward, rows in parallel on rayon's pool, results independent of the thread count);
/// other devices and dtypes use candle's ops. See [`nt_xent_blocked`](crate::nt_xent_blocked) for a version that never holds
/// that matrix whole.
///
/// # Shapes
/// - `z_a`: `(N, D)`, projections of the first view of N images, N ≥ 2.
/// - `z_b`: `(N, D)`, projections of the second view, same order.
/// - returns `()`: a scalar in the dtype of the inputs (f32 or f64).
///
/// # Errors
/// If the inputs are not rank 2, differ in shape, dtype or device, N < 2, or
/// `temperature` is not finite and > 0.
///
/// # Example
/// ```
/// # fn main() -> candle_core::Result<()> {
/// use candle_core::{Device, Tensor};
/// let z_a = Tensor::new(&[[1f32, 0.], [0., 1.]], &Device::Cpu)?;
/// let z_b = Tensor::new(&[[2f32, 0.1], [0.1, 2.]], &Device::Cpu)?;
/// let loss = losses::nt_xent(&z_a, &z_b, 0.5)?;
/// assert_eq!(loss.dims(), &[] as &[usize]);
/// assert!(loss.to_scalar::<f32>()? < 1.0);
/// # Ok(()) }
/// ```
pub fn nt_xent(z_a: &Tensor, z_b: &Tensor, temperature: f64) -> Result<Tensor> {
    const F: &str = "nt_xent";
    let (n, _) = dims2(F, "z_a", z_a)?;
    dims2(F, "z_b", z_b)?;
    same_shape(F, "z_a", z_a, "z_b", z_b)?;
    float_dtype(F, "z_a", z_a)?;
    same_kind(F, "z_a", z_a, "z_b", z_b)?;
    positive(F, "temperature", temperature)?;
    if n < 2 {
        bail!(
            "nt_xent: needs N >= 2 images (the negatives come from the batch), got z_a {:?}",
            z_a.dims()
        )
    }
    let z = l2_normalize(&Tensor::cat(&[z_a, z_b], 0)?)?;
    if nt_xent_fused::applies(&z) {
        return nt_xent_fused::nt_xent_fused(&z, n, temperature);
    }
    // The other view of each row: [z_b; z_a].
    let z_pos = Tensor::cat(&[z.narrow(0, n, n)?, z.narrow(0, 0, n)?], 0)?;
    let z_scaled = z.affine(1.0 / temperature, 0.0)?;
    let positives = (&z_scaled * &z_pos)?.sum(1)?;
    let sims = z_scaled.matmul(&z.t()?)?;
    let mask = diagonal_mask(2 * n, mask_value(temperature), z.dtype(), z.device())?;
    let lse = logsumexp(&(sims + mask)?)?.squeeze(1)?;
    (lse - positives)?.mean_all()
}

/// NT-Xent over V ≥ 2 views of the same N images (multi-crop SimCLR).
///
/// All VN rows are L2-normalised, `s_ij = z_i · z_j / τ`; the positives `P(i)` of view `i` are
/// the V − 1 other views of its image; every view is an anchor:
///
/// ```text
/// loss = 1/(VN) Σ_i 1/(V−1) Σ_{p ∈ P(i)} [ −s_ip + log Σ_{j ≠ i} exp(s_ij) ]
/// ```
///
/// With V = 2 this is exactly [`nt_xent`]. It is the supervised contrastive loss
/// ([`supcon`](crate::supcon)) with the image index as the label (Khosla et al., "Supervised
/// Contrastive Learning", NeurIPS 2020, eq. 2; Chen et al., SimCLR, ICML 2020).
///
/// # Shapes
/// - `views`: V tensors, each `(N, D)`, V ≥ 2, N ≥ 1 (with N = 1 the negatives are absent and
///   the loss is 0).
/// - returns `()`.
///
/// # Errors
/// If fewer than two views are given, they differ in shape, dtype or device, are not rank 2,
/// or `temperature` is not finite and > 0.
///
/// # Example
/// ```
/// # fn main() -> candle_core::Result<()> {
/// use candle_core::{Device, Tensor};
/// let dev = Device::Cpu;
/// let v1 = Tensor::new(&[[1f64, 0.], [0., 1.]], &dev)?;
/// let v2 = Tensor::new(&[[1f64, 0.1], [0.1, 1.]], &dev)?;
/// let v3 = Tensor::new(&[[1f64, -0.1], [-0.1, 1.]], &dev)?;
/// let loss = losses::nt_xent_multi(&[v1.clone(), v2.clone(), v3], 0.5)?;
/// let two = losses::nt_xent_multi(&[v1.clone(), v2.clone()], 0.5)?;
/// let plain = losses::nt_xent(&v1, &v2, 0.5)?;
/// let diff = (two - plain)?.abs()?.to_scalar::<f64>()?;
/// assert!(diff < 1e-12);
/// # let _ = loss;
/// # Ok(()) }
/// ```
pub fn nt_xent_multi(views: &[Tensor], temperature: f64) -> Result<Tensor> {
    const F: &str = "nt_xent_multi";
    if views.len() < 2 {
        bail!("nt_xent_multi: needs at least 2 views, got {}", views.len())
    }
    let first = &views[0];
    let (n, _) = dims2(F, "views[0]", first)?;
    float_dtype(F, "views[0]", first)?;
    for (v, view) in views.iter().enumerate().skip(1) {
        dims2(F, &format!("views[{v}]"), view)?;
        same_shape(F, "views[0]", first, &format!("views[{v}]"), view)?;
        same_kind(F, "views[0]", first, &format!("views[{v}]"), view)?;
    }
    positive(F, "temperature", temperature)?;
    let z = l2_normalize(&Tensor::cat(views, 0)?)?;
    let image = Tensor::arange(0u32, n as u32, z.device())?.repeat(views.len())?;
    contrastive_with_positives(F, &z, &image, temperature)
}

//! Relational distillation: RKD distance and angle, PKT, and similarity-preserving (SP) losses.

use candle_core::{bail, Result, Tensor};

use crate::common::{dims2, float_dtype, l2_normalize, same_kind};

/// Checks a `(N, Ds)` student against a `(N, Dt)` teacher; returns N.
fn paired(func: &str, student: &Tensor, teacher: &Tensor, min_n: usize) -> Result<usize> {
    let (n, _) = dims2(func, "student", student)?;
    let (n_t, _) = dims2(func, "teacher", teacher)?;
    if n != n_t {
        bail!(
            "{func}: student {:?} and teacher {:?} must have the same batch size",
            student.dims(),
            teacher.dims()
        )
    }
    if n < min_n {
        bail!(
            "{func}: needs N >= {min_n} samples, got student {:?}",
            student.dims()
        )
    }
    float_dtype(func, "student", student)?;
    same_kind(func, "student", student, "teacher", teacher)?;
    Ok(n)
}

/// Smooth L1 (Huber, β = 1) averaged over all elements:
/// `0.5·min(|x|,1)² + |x| − min(|x|,1)`, which is `0.5x²` for `|x| < 1` and `|x| − 0.5` otherwise.
fn smooth_l1_mean(x: &Tensor) -> Result<Tensor> {
    let abs = x.abs()?;
    let small = abs.minimum(1.0)?;
    ((small.sqr()? * 0.5)? + (abs - small)?)?.mean_all()
}

/// Euclidean distances of all pairs of rows, normalised by their off-diagonal mean, as in the
/// RKD reference code: `sqrt(max(‖e_i‖² + ‖e_j‖² − 2 e_i·e_j, 1e-12))`, diagonal 0.
fn normalised_distances(e: &Tensor, n: usize) -> Result<Tensor> {
    let sq = e.sqr()?.sum_keepdim(1)?;
    let d2 = sq
        .broadcast_add(&sq.t()?)?
        .sub(&e.matmul(&e.t()?)?.affine(2.0, 0.0)?)?;
    let off_diag = Tensor::eye(n, e.dtype(), e.device())?.affine(-1.0, 1.0)?;
    let d = (d2.maximum(1e-12)?.sqrt()? * off_diag)?;
    let mean = (d.sum_all()? / (n * (n - 1)) as f64)?;
    d.broadcast_div(&mean)
}

/// RKD distance loss of Park et al., "Relational Knowledge Distillation" (CVPR 2019):
///
/// ```text
/// ψ_D(x_i, x_j) = ‖x_i − x_j‖ / μ,  μ = mean_{i≠j} ‖x_i − x_j‖
/// loss = 1/N² Σ_{i,j} smooth_l1(ψ_D(s_i, s_j) − ψ_D(t_i, t_j))
/// ```
///
/// Unweighted (the paper weights it by 25). The teacher is detached. Student and teacher may
/// have different widths. Flatten feature maps to `(N, ·)` first.
///
/// # Shapes
/// - `student`: `(N, Ds)`, `teacher`: `(N, Dt)`, N ≥ 2.
/// - returns `()`.
///
/// # Errors
/// Rank ≠ 2, different N, N < 2.
///
/// # Example
/// ```
/// # fn main() -> candle_core::Result<()> {
/// use candle_core::{Device, Tensor};
/// let t = Tensor::new(&[[0f32, 0.], [1., 0.], [0., 2.]], &Device::Cpu)?;
/// let s = (&t * 3.0)?; // the same shape, scaled: the same relations
/// assert!(losses::rkd_distance(&s, &t)?.to_scalar::<f32>()? < 1e-10);
/// # Ok(()) }
/// ```
pub fn rkd_distance(student: &Tensor, teacher: &Tensor) -> Result<Tensor> {
    let n = paired("rkd_distance", student, teacher, 2)?;
    let d_s = normalised_distances(student, n)?;
    let d_t = normalised_distances(&teacher.detach(), n)?;
    smooth_l1_mean(&(d_s - d_t)?)
}

/// Cosines of the angles `∠(x_i, x_j, x_k)` at `x_j`: `(N, N, N)`.
fn angles(e: &Tensor) -> Result<Tensor> {
    // diffs[i, j] = e_j − e_i, normalised (zero on the diagonal).
    let diffs = l2_normalize(&e.unsqueeze(0)?.broadcast_sub(&e.unsqueeze(1)?)?)?;
    diffs.matmul(&diffs.transpose(1, 2)?)
}

/// RKD angle loss of Park et al., "Relational Knowledge Distillation" (CVPR 2019):
///
/// ```text
/// ψ_A(x_i, x_j, x_k) = ⟨(x_j − x_i)/‖x_j − x_i‖, (x_k − x_i)/‖x_k − x_i‖⟩
/// loss = 1/N³ Σ_{i,j,k} smooth_l1(ψ_A(s) − ψ_A(t))
/// ```
///
/// Unweighted (the paper weights it by 50). Uses `(N, N, N)` memory. The teacher is detached.
///
/// # Shapes
/// - `student`: `(N, Ds)`, `teacher`: `(N, Dt)`, N ≥ 2.
/// - returns `()`.
///
/// # Errors
/// Rank ≠ 2, different N, N < 2.
///
/// # Example
/// ```
/// # fn main() -> candle_core::Result<()> {
/// use candle_core::{Device, Tensor};
/// let t = Tensor::new(&[[0f32, 0.], [1., 0.], [0., 2.]], &Device::Cpu)?;
/// let s = (&t * 3.0)?;
/// assert!(losses::rkd_angle(&s, &t)?.to_scalar::<f32>()? < 1e-10);
/// # Ok(()) }
/// ```
pub fn rkd_angle(student: &Tensor, teacher: &Tensor) -> Result<Tensor> {
    paired("rkd_angle", student, teacher, 2)?;
    smooth_l1_mean(&(angles(student)? - angles(&teacher.detach())?)?)
}

/// Probabilistic knowledge transfer (PKT) of Passalis and Tefas, "Learning Deep
/// Representations with Probabilistic Knowledge Transfer" (ECCV 2018), with the cosine kernel
/// of the reference code (ε = 1e-7):
///
/// ```text
/// x̂_i = x_i / (‖x_i‖ + ε),  K_ij = (x̂_i·x̂_j + 1) / 2,  P_ij = K_ij / Σ_j K_ij
/// loss = 1/N² Σ_{i,j} P^t_ij log((P^t_ij + ε) / (P^s_ij + ε))
/// ```
///
/// The teacher is detached. An all-zero row has an undefined gradient, as in PyTorch.
///
/// # Shapes
/// - `student`: `(N, Ds)`, `teacher`: `(N, Dt)`.
/// - returns `()`.
///
/// # Errors
/// Rank ≠ 2, different N.
///
/// # Example
/// ```
/// # fn main() -> candle_core::Result<()> {
/// use candle_core::{Device, Tensor};
/// let t = Tensor::new(&[[1f32, 0.], [0., 1.], [1., 1.]], &Device::Cpu)?;
/// assert!(losses::pkt_loss(&t, &t)?.to_scalar::<f32>()?.abs() < 1e-6);
/// # Ok(()) }
/// ```
pub fn pkt_loss(student: &Tensor, teacher: &Tensor) -> Result<Tensor> {
    const EPS: f64 = 1e-7;
    paired("pkt_loss", student, teacher, 1)?;
    let kernel = |x: &Tensor| -> Result<Tensor> {
        let x = x.broadcast_div(&(x.sqr()?.sum_keepdim(1)?.sqrt()? + EPS)?)?;
        let k = x.matmul(&x.t()?)?.affine(0.5, 0.5)?;
        k.broadcast_div(&k.sum_keepdim(1)?)
    };
    let p_s = kernel(student)?;
    let p_t = kernel(&teacher.detach())?;
    let ratio = ((&p_t + EPS)? / (p_s + EPS)?)?;
    (p_t * ratio.log()?)?.mean_all()
}

/// Similarity-preserving distillation (SP) of Tung and Mori, "Similarity-Preserving Knowledge
/// Distillation" (ICCV 2019):
///
/// ```text
/// G = normalize_rows(F Fᵀ),  F = features flattened to (N, ·)
/// loss = 1/N² ‖G^t − G^s‖²_F
/// ```
///
/// Rows normalised like `F.normalize` (`max(‖·‖, 1e-12)`). The teacher is detached.
///
/// # Shapes
/// - `student`: `(N, …)`, e.g. `(N, Cs, H, W)`; `teacher`: `(N, …)`, any widths.
/// - returns `()`.
///
/// # Errors
/// Rank < 2, different N.
///
/// # Example
/// ```
/// # fn main() -> candle_core::Result<()> {
/// use candle_core::{DType, Device, Tensor};
/// let f = Tensor::arange(0f32, 24., &Device::Cpu)?.reshape((2, 3, 2, 2))?;
/// assert!(losses::sp_loss(&f, &(&f * 2.0)?)?.to_scalar::<f32>()? < 1e-10);
/// # Ok(()) }
/// ```
pub fn sp_loss(student: &Tensor, teacher: &Tensor) -> Result<Tensor> {
    const F: &str = "sp_loss";
    if student.rank() < 2 || teacher.rank() < 2 || student.dim(0)? != teacher.dim(0)? {
        bail!(
            "{F}: student {:?} and teacher {:?} must be (N, ...) with rank >= 2 and the same N",
            student.dims(),
            teacher.dims()
        )
    }
    float_dtype(F, "student", student)?;
    same_kind(F, "student", student, "teacher", teacher)?;
    let n = student.dim(0)?;
    let gram = |x: &Tensor| -> Result<Tensor> {
        let x = x.flatten_from(1)?;
        l2_normalize(&x.matmul(&x.t()?)?)
    };
    let diff = (gram(&teacher.detach())? - gram(student)?)?;
    diff.sqr()?.sum_all()? / (n * n) as f64
}

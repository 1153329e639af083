//! Memory-efficient NT-Xent: the 2N × 2N similarity matrix is processed in blocks with a
//! running log-sum-exp (as flash attention does), forward and backward, through a CustomOp.

use candle_core::{bail, CpuStorage, CustomOp1, DType, Device, Layout, Result, Shape, Tensor};

use crate::common::{
    diagonal_mask, dims2, float_dtype, l2_normalize, mask_value, positive, same_kind, same_shape,
};

/// NT-Xent with the same value and gradient as [`nt_xent`](crate::nt_xent), computed without
/// ever holding the `(2N, 2N)` similarity matrix.
///
/// Same formula (Chen et al., SimCLR, ICML 2020):
///
/// ```text
/// loss = 1/(2N) Σ_i [ −s_{i,p(i)} + log Σ_{j ≠ i} exp(s_ij) ],  s_ij = ẑ_i · ẑ_j / τ
/// ```
///
/// The forward pass walks `block_size × block_size` tiles of `s`, keeping a running maximum
/// and a running sum of exponentials per row (the online softmax of Milakov & Gimelshein 2018,
/// used by FlashAttention, Dao et al. 2022). The backward pass recomputes each tile from the
/// saved per-row log-sum-exp and accumulates
/// `∂L/∂ẑ = 1/τ · [(W + Wᵀ) ẑ − (g + g_p) ⊙ ẑ_p]`, `W_ij = g_i · softmax_ij`, tile by tile.
/// Peak extra memory is `O(block_size² + N·D)` instead of `O(N²)`.
///
/// The op's forward runs on the CPU; tensors on another device are copied there and the
/// result copied back (the gradient follows the copies).
///
/// # Shapes
/// - `z_a`, `z_b`: `(N, D)`, N ≥ 2.
/// - `block_size`: tile side, ≥ 1 (e.g. 1024).
/// - returns `()`.
///
/// # Errors
/// As [`nt_xent`](crate::nt_xent), plus `block_size == 0` and dtypes other than f32/f64.
///
/// # Example
/// ```
/// # fn main() -> candle_core::Result<()> {
/// use candle_core::{Device, Tensor};
/// let dev = Device::Cpu;
/// let z_a = Tensor::new(&[[1f64, 0.], [0., 1.], [1., 1.]], &dev)?;
/// let z_b = Tensor::new(&[[2f64, 0.1], [0.1, 2.], [1., 0.9]], &dev)?;
/// let plain = losses::nt_xent(&z_a, &z_b, 0.5)?.to_scalar::<f64>()?;
/// let blocked = losses::nt_xent_blocked(&z_a, &z_b, 0.5, 2)?.to_scalar::<f64>()?;
/// assert!((plain - blocked).abs() < 1e-12);
/// # Ok(()) }
/// ```
pub fn nt_xent_blocked(
    z_a: &Tensor,
    z_b: &Tensor,
    temperature: f64,
    block_size: usize,
) -> Result<Tensor> {
    const F: &str = "nt_xent_blocked";
    let (n, _) = dims2(F, "z_a", z_a)?;
    dims2(F, "z_b", z_b)?;
    same_shape(F, "z_a", z_a, "z_b", z_b)?;
    float_dtype(F, "z_a", z_a)?;
    same_kind(F, "z_a", z_a, "z_b", z_b)?;
    positive(F, "temperature", temperature)?;
    if !matches!(z_a.dtype(), DType::F32 | DType::F64) {
        bail!(
            "nt_xent_blocked: only f32 and f64 are supported, got {:?}",
            z_a.dtype()
        )
    }
    if n < 2 {
        bail!(
            "nt_xent_blocked: needs N >= 2 images, got z_a {:?}",
            z_a.dims()
        )
    }
    if block_size == 0 {
        bail!("nt_xent_blocked: block_size must be >= 1")
    }
    let device = z_a.device().clone();
    let z = l2_normalize(&Tensor::cat(&[z_a, z_b], 0)?)?
        .to_device(&Device::Cpu)?
        .contiguous()?;
    let op = NtXentBlocked {
        n,
        temperature,
        block: block_size,
    };
    let per_anchor = z.apply_op1(op)?;
    per_anchor.to_device(&device)?.mean_all()
}

/// The op: input `ẑ` `(2N, D)` (rows normalised), output the per-anchor losses `(2N,)`.
#[derive(Debug, Clone, Copy)]
struct NtXentBlocked {
    n: usize,
    temperature: f64,
    block: usize,
}

/// Block start offsets over `m` rows, the diagonal block `diag` last.
fn column_order(m: usize, block: usize, diag: usize) -> impl Iterator<Item = usize> {
    (0..m)
        .step_by(block)
        .filter(move |&j| j != diag)
        .chain(std::iter::once(diag))
}

impl NtXentBlocked {
    /// `ẑ_p`: row `i` holds the other view of row `i`'s image.
    fn swapped(&self, z: &Tensor) -> Result<Tensor> {
        Tensor::cat(&[z.narrow(0, self.n, self.n)?, z.narrow(0, 0, self.n)?], 0)
    }

    /// The similarity tile `s[i0.., j0..]`, diagonal masked when `i0 == j0`.
    fn tile(&self, z_scaled_i: &Tensor, z: &Tensor, i0: usize, j0: usize) -> Result<Tensor> {
        let bj = self.block.min(z.dim(0)? - j0);
        let s = z_scaled_i.matmul(&z.narrow(0, j0, bj)?.t()?)?;
        if i0 == j0 {
            s + diagonal_mask(bj, mask_value(self.temperature), z.dtype(), z.device())?
        } else {
            Ok(s)
        }
    }

    /// Per-anchor losses `(2N,)` by blocks with a running log-sum-exp; `z` carries no graph.
    fn forward(&self, z: &Tensor) -> Result<Tensor> {
        let m = z.dim(0)?;
        let z_scaled = z.affine(1.0 / self.temperature, 0.0)?;
        let positives = (&z_scaled * self.swapped(z)?)?.sum(1)?;
        let mut lse_blocks = Vec::new();
        for i0 in (0..m).step_by(self.block) {
            let bi = self.block.min(m - i0);
            let zi = z_scaled.narrow(0, i0, bi)?;
            let mut run: Option<(Tensor, Tensor)> = None;
            for j0 in column_order(m, self.block, i0) {
                let s = self.tile(&zi, z, i0, j0)?;
                let block_max = s.max_keepdim(1)?;
                run = Some(match run {
                    None => {
                        let sum = s.broadcast_sub(&block_max)?.exp()?.sum_keepdim(1)?;
                        (block_max, sum)
                    }
                    Some((max, sum)) => {
                        let new_max = max.maximum(&block_max)?;
                        let rescaled = (sum * (max - &new_max)?.exp()?)?;
                        let sum = (rescaled + s.broadcast_sub(&new_max)?.exp()?.sum_keepdim(1)?)?;
                        (new_max, sum)
                    }
                });
            }
            let Some((max, sum)) = run else {
                bail!("nt_xent_blocked: empty row block")
            };
            lse_blocks.push((sum.log()? + max)?);
        }
        Tensor::cat(&lse_blocks, 0)?.squeeze(1)? - positives
    }

    /// `∂L/∂ẑ` from the saved per-anchor losses and their upstream gradient, tile by tile.
    fn backward(&self, z: &Tensor, per_anchor: &Tensor, grad: &Tensor) -> Result<Tensor> {
        let m = z.dim(0)?;
        let inv_t = 1.0 / self.temperature;
        let z_scaled = z.affine(inv_t, 0.0)?;
        let z_pos = self.swapped(z)?;
        let lse = (per_anchor + (&z_scaled * &z_pos)?.sum(1)?)?.unsqueeze(1)?;
        let grad = grad.unsqueeze(1)?;
        let starts: Vec<usize> = (0..m).step_by(self.block).collect();
        let mut acc = starts
            .iter()
            .map(|&s| Tensor::zeros((self.block.min(m - s), z.dim(1)?), z.dtype(), z.device()))
            .collect::<Result<Vec<_>>>()?;
        for (bi_idx, &i0) in starts.iter().enumerate() {
            let bi = self.block.min(m - i0);
            let zi = z.narrow(0, i0, bi)?;
            let zi_scaled = z_scaled.narrow(0, i0, bi)?;
            let lse_i = lse.narrow(0, i0, bi)?;
            let g_i = grad.narrow(0, i0, bi)?;
            for (bj_idx, &j0) in starts.iter().enumerate() {
                let bj = self.block.min(m - j0);
                let zj = z.narrow(0, j0, bj)?;
                let s = self.tile(&zi_scaled, z, i0, j0)?;
                let w = s.broadcast_sub(&lse_i)?.exp()?.broadcast_mul(&g_i)?;
                acc[bi_idx] = (&acc[bi_idx] + w.matmul(&zj)?)?;
                acc[bj_idx] = (&acc[bj_idx] + w.t()?.matmul(&zi)?)?;
            }
        }
        let weights = (&grad + self.swapped(&grad)?)?;
        (Tensor::cat(&acc, 0)? - z_pos.broadcast_mul(&weights)?)?.affine(inv_t, 0.0)
    }
}

impl CustomOp1 for NtXentBlocked {
    fn name(&self) -> &'static str {
        "nt_xent_blocked"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let (m, d) = layout.shape().dims2()?;
        if !layout.is_contiguous() || m != 2 * self.n {
            bail!(
                "nt_xent_blocked: internal layout mismatch ({:?})",
                layout.shape()
            )
        }
        let range = layout.start_offset()..layout.start_offset() + m * d;
        let out = match storage {
            CpuStorage::F32(v) => {
                let z = Tensor::from_slice(&v[range], (m, d), &Device::Cpu)?;
                CpuStorage::F32(self.forward(&z)?.to_vec1::<f32>()?)
            }
            CpuStorage::F64(v) => {
                let z = Tensor::from_slice(&v[range], (m, d), &Device::Cpu)?;
                CpuStorage::F64(self.forward(&z)?.to_vec1::<f64>()?)
            }
            _ => bail!("nt_xent_blocked: only f32 and f64 are supported"),
        };
        Ok((out, Shape::from(m)))
    }

    fn bwd(&self, arg: &Tensor, res: &Tensor, grad_res: &Tensor) -> Result<Option<Tensor>> {
        // Detached: the tiles must not be kept alive by a graph of the gradient.
        self.backward(&arg.detach(), &res.detach(), &grad_res.detach())
            .map(Some)
    }
}

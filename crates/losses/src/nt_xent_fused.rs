//! The fused CPU kernel behind [`nt_xent`](crate::nt_xent) for f32/f64: one GEMM for the
//! similarities, a parallel row-wise log-sum-exp, one GEMM for the gradient.
//!
//! Forward, on the L2-normalised `ẑ` `(M, D)`, `M = 2N`:
//!
//! ```text
//! S = ẑ ẑᵀ / τ                      (one GEMM into an M × M buffer)
//! lse_i = log Σ_{j ≠ i} exp(s_ij)   (rows in parallel, read-only: max, then Σ exp)
//! loss  = 1/M Σ_i (lse_i − s_{i,p(i)})
//! ```
//!
//! `S` and `lse` are kept for the backward pass. With `P_ij = exp(s_ij − lse_i)` (the softmax
//! rows, self excluded), `G = P − onehot(p)` and `p` an involution (`p(p(i)) = i`):
//!
//! ```text
//! ∂L/∂ẑ = (G + Gᵀ) ẑ · g / (M τ),   (G + Gᵀ)_ij = exp(s_ij − lse_i) + exp(s_ij − lse_j) − 2 δ_{j,p(i)}
//! ```
//!
//! using `s_ji = s_ij`: the buffer becomes `G + Gᵀ` in place, row by row with no transpose,
//! then one GEMM. Peak extra memory is the one `M × M` buffer. The work is split by shape
//! only and every sum runs in a fixed order, so the results do not depend on the number of
//! threads.

use std::sync::Mutex;

use candle_core::{bail, CpuStorage, CustomOp1, DType, Device, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

/// Whether the fused kernel handles `z` (CPU, f32 or f64).
pub(crate) fn applies(z: &Tensor) -> bool {
    z.device().is_cpu() && matches!(z.dtype(), DType::F32 | DType::F64)
}

/// NT-Xent of the L2-normalised `z` `(2N, D)` (checked by the caller) as a scalar, through
/// the fused op; its gradient flows back into `z`.
pub(crate) fn nt_xent_fused(z: &Tensor, n: usize, temperature: f64) -> Result<Tensor> {
    let (m, _) = z.dims2()?;
    if m != 2 * n || m.checked_mul(m).is_none() {
        bail!(
            "nt_xent: internal shape mismatch {:?} for N = {n}",
            z.dims()
        )
    }
    let op = NtXentFused {
        n,
        temperature,
        saved: Mutex::new(None),
    };
    z.contiguous()?.apply_op1(op)
}

/// The op: input `ẑ` `(2N, D)`, output the mean loss `()`.
struct NtXentFused {
    n: usize,
    temperature: f64,
    /// The forward's similarities and log-sum-exps, taken by the first backward pass.
    saved: Mutex<Option<Saved>>,
}

/// What the forward pass leaves for the backward pass.
enum Saved {
    F32(Rows<f32>),
    F64(Rows<f64>),
}

/// `s` `(M, M)` row-major, the similarities with `s_ii = −∞`; `lse_i = log Σ_{j ≠ i} exp(s_ij)`.
struct Rows<T> {
    s: Vec<T>,
    lse: Vec<T>,
}

/// The float types the kernel runs on (f32 and f64, which `gemm` has kernels for).
trait Elem: candle_core::WithDType {
    /// `exp(x)` for `x` ≤ about 0 (the largest similarity minus a log-sum-exp).
    fn exp(x: Self) -> Self;
    /// Wraps the kept buffers.
    fn save(rows: Rows<Self>) -> Saved;
    /// Unwraps the kept buffers if they are of this type.
    fn unsave(saved: Saved) -> Option<Rows<Self>>;
}

impl Elem for f32 {
    #[inline(always)]
    fn exp(x: f32) -> f32 {
        exp_f32(x)
    }
    fn save(rows: Rows<f32>) -> Saved {
        Saved::F32(rows)
    }
    fn unsave(saved: Saved) -> Option<Rows<f32>> {
        match saved {
            Saved::F32(rows) => Some(rows),
            Saved::F64(_) => None,
        }
    }
}

impl Elem for f64 {
    #[inline(always)]
    fn exp(x: f64) -> f64 {
        x.exp()
    }
    fn save(rows: Rows<f64>) -> Saved {
        Saved::F64(rows)
    }
    fn unsave(saved: Saved) -> Option<Rows<f64>> {
        match saved {
            Saved::F64(rows) => Some(rows),
            Saved::F32(_) => None,
        }
    }
}

/// `exp(x)` for `x ≤ 0` in f32, written so that the compiler vectorises a loop of it: Cody–Waite
/// reduction `x = k ln 2 + r`, `|r| ≤ ln 2 / 2`, Cephes' degree-6 polynomial for `exp(r)`
/// (about 1 ulp), `2^k` built in the exponent bits. Below `ln(f32::MIN_POSITIVE)` it returns
/// `f32::MIN_POSITIVE` (1.2e-38) instead of a subnormal or 0, harmless next to a row sum ≥ 1;
/// NaN stays NaN.
#[inline(always)]
fn exp_f32(x: f32) -> f32 {
    const LOWEST: f32 = -87.336_54;
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const ROUND: f32 = 12_582_912.0; // 1.5 · 2^23: adding it rounds to an integer.
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    let x = if x < LOWEST { LOWEST } else { x };
    let k = (x * LOG2E + ROUND) - ROUND;
    let r = x - k * LN2_HI - k * LN2_LO;
    let mut p = 1.987_569_1e-4_f32;
    p = p * r + 1.398_199_9e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 1.666_666_5e-1;
    p = p * r + 0.5;
    let e = p * r * r + r + 1.0;
    let scale = f32::from_bits(((k as i32 + 127) << 23) as u32);
    e * scale
}

/// Lanes of the row reductions (a fixed number: the order of every sum depends on shape only).
const LANES: usize = 16;

/// The maximum of `row`, ignoring NaN.
fn row_max<T: Elem>(row: &[T]) -> T {
    let lowest = T::from_f64(f64::NEG_INFINITY);
    let mut acc = [lowest; LANES];
    let chunks = row.chunks_exact(LANES);
    let tail = chunks.remainder();
    for c in chunks {
        for (a, &x) in acc.iter_mut().zip(c) {
            if x > *a {
                *a = x;
            }
        }
    }
    let mut best = lowest;
    for &x in acc.iter().chain(tail) {
        if x > best {
            best = x;
        }
    }
    best
}

/// `Σ_j exp(row[j] − shift)` in f64, in a fixed order.
fn row_exp_sum<T: Elem>(row: &[T], shift: T) -> f64 {
    let mut acc = [0f64; LANES];
    let chunks = row.chunks_exact(LANES);
    let tail = chunks.remainder();
    for c in chunks {
        for (a, &x) in acc.iter_mut().zip(c) {
            *a += T::exp(x - shift).to_f64();
        }
    }
    acc.iter().sum::<f64>()
        + tail
            .iter()
            .map(|&x| T::exp(x - shift).to_f64())
            .sum::<f64>()
}

/// The positive of row `i`: the other view of the same image.
fn partner(i: usize, n: usize) -> usize {
    if i < n {
        i + n
    } else {
        i - n
    }
}

/// Parallelism for `gemm`: the current rayon pool's threads (the split is over output tiles;
/// the sum over `k` runs in the same order whatever the count).
fn parallelism() -> gemm::Parallelism {
    match rayon::current_num_threads() {
        0 | 1 => gemm::Parallelism::None,
        t => gemm::Parallelism::Rayon(t),
    }
}

/// `dst (m, n) = beta · lhs (m, k) · rhs (k, n)`, all row-major except `rhs` given by strides.
///
/// # Safety
/// `dst` holds `m · n` elements, `lhs` `m · k`, and `rhs` covers every `(kk, j)` at
/// `kk · rhs_rs + j · rhs_cs` for `kk < k`, `j < n`.
#[allow(clippy::too_many_arguments)]
unsafe fn matmul<T: Elem>(
    (m, n, k): (usize, usize, usize),
    dst: &mut [T],
    lhs: &[T],
    rhs: &[T],
    (rhs_rs, rhs_cs): (usize, usize),
    beta: T,
) {
    // SAFETY: the caller guarantees the extents; row-major strides for `dst` and `lhs`.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            n as isize,
            false,
            lhs.as_ptr(),
            1,
            k as isize,
            rhs.as_ptr(),
            rhs_cs as isize,
            rhs_rs as isize,
            T::from_f64(0.0),
            beta,
            false,
            false,
            false,
            parallelism(),
        )
    }
}

/// The forward pass on `z` `(m, d)` row-major: the mean loss and the kept rows.
fn forward<T: Elem>(z: &[T], m: usize, d: usize, n: usize, temperature: f64) -> (f64, Rows<T>) {
    let mut s = vec![T::from_f64(0.0); m * m];
    if d > 0 {
        // SAFETY: `s` is m × m, `z` is m × d; zᵀ (d × m) is z read with strides (1, d).
        unsafe {
            matmul(
                (m, m, d),
                &mut s,
                z,
                z,
                (1, d),
                T::from_f64(1.0 / temperature),
            )
        };
    }
    let per_row: Vec<(f64, T)> = s
        .par_chunks_mut(m)
        .enumerate()
        .map(|(i, row)| {
            let positive = row[partner(i, n)].to_f64();
            // Self-similarity excluded: −∞ never wins the maximum and adds nothing to the sum.
            row[i] = T::from_f64(f64::NEG_INFINITY);
            let max = row_max(row);
            let lse = max.to_f64() + row_exp_sum(row, max).ln();
            (lse - positive, T::from_f64(lse))
        })
        .collect();
    let total: f64 = per_row.iter().map(|&(l, _)| l).sum();
    let lse = per_row.into_iter().map(|(_, l)| l).collect();
    (total / m as f64, Rows { s, lse })
}

/// The backward pass: `∂L/∂ẑ` `(m, d)` for the upstream gradient `grad`.
///
/// `S` is symmetric, so `P_ji = exp(s_ij − lse_j)` and row `i` of `P + Pᵀ` is
/// `exp(s_ij − lse_i) + exp(s_ij − lse_j)`: formed in place row by row, no transpose.
fn backward<T: Elem>(
    rows: Rows<T>,
    z: &[T],
    (m, d, n): (usize, usize, usize),
    temperature: f64,
    grad: f64,
) -> Vec<T> {
    let Rows { mut s, lse } = rows;
    let two = T::from_f64(2.0);
    s.par_chunks_mut(m).enumerate().for_each(|(i, row)| {
        let lse_i = lse[i];
        for (x, &lse_j) in row.iter_mut().zip(&lse) {
            let v = *x;
            *x = T::exp(v - lse_i) + T::exp(v - lse_j);
        }
        row[i] = T::from_f64(0.0);
        row[partner(i, n)] -= two;
    });
    let mut dz = vec![T::from_f64(0.0); m * d];
    if d > 0 {
        let scale = T::from_f64(grad / (m as f64 * temperature));
        // SAFETY: `dz` is m × d, `s` is m × m, `z` is m × d row-major (strides (d, 1)).
        unsafe { matmul((m, d, m), &mut dz, &s, z, (d, 1), scale) };
    }
    dz
}

impl NtXentFused {
    /// Runs the forward pass on `z` and returns the loss, keeping the rows for backward.
    fn run<T: Elem>(&self, z: &[T], m: usize, d: usize) -> Result<T> {
        let (loss, rows) = forward(z, m, d, self.n, self.temperature);
        *self.lock()? = Some(T::save(rows));
        Ok(T::from_f64(loss))
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, Option<Saved>>> {
        self.saved
            .lock()
            .map_err(|_| candle_core::Error::Msg("nt_xent: poisoned state".into()))
    }

    /// `∂L/∂ẑ` as a tensor; recomputes the forward rows if an earlier backward took them.
    fn grad<T: Elem>(&self, z: &Tensor, grad: f64) -> Result<Tensor> {
        let (m, d) = z.dims2()?;
        let zs = z.flatten_all()?.to_vec1::<T>()?;
        let saved = self.lock()?.take().and_then(T::unsave);
        let rows = match saved {
            Some(rows) => rows,
            None => forward(&zs, m, d, self.n, self.temperature).1,
        };
        let dz = backward(rows, &zs, (m, d, self.n), self.temperature, grad);
        Tensor::from_vec(dz, (m, d), &Device::Cpu)
    }
}

impl CustomOp1 for NtXentFused {
    fn name(&self) -> &'static str {
        "nt_xent_fused"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let (m, d) = layout.shape().dims2()?;
        if !layout.is_contiguous() || m != 2 * self.n {
            bail!("nt_xent: internal layout mismatch ({:?})", layout.shape())
        }
        let range = layout.start_offset()..layout.start_offset() + m * d;
        let out = match storage {
            CpuStorage::F32(v) => CpuStorage::F32(vec![self.run(&v[range], m, d)?]),
            CpuStorage::F64(v) => CpuStorage::F64(vec![self.run(&v[range], m, d)?]),
            _ => bail!("nt_xent: the fused kernel takes f32 or f64"),
        };
        Ok((out, Shape::from(())))
    }

    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad_res: &Tensor) -> Result<Option<Tensor>> {
        let grad = grad_res.to_dtype(DType::F64)?.to_scalar::<f64>()?;
        let z = arg.detach();
        let dz = match z.dtype() {
            DType::F32 => self.grad::<f32>(&z, grad)?,
            DType::F64 => self.grad::<f64>(&z, grad)?,
            dtype => bail!("nt_xent: the fused kernel takes f32 or f64, got {dtype:?}"),
        };
        Ok(Some(dz.to_device(arg.device())?))
    }
}

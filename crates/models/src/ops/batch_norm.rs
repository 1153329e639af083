//! Batch normalisation fused with ReLU (and with a residual add), forward and backward, as
//! candle custom ops multi-threaded over channels and images.

use std::cell::RefCell;
use std::sync::{Arc, OnceLock};

use candle_core::backend::BackendStorage;
use candle_core::{
    bail, CpuStorage, CustomOp2, CustomOp3, DType, Layout, Result, Shape, Tensor, WithDType,
};
use candle_nn::{BatchNorm, ModuleT};
use rayon::prelude::*;

use super::cpu::{fast_path, slice, uninit_vec, with_data};

/// Batch norm, a drop-in for `bn.forward_t(xs, train)` with a fast CPU path.
///
/// `y = (x - μ) / sqrt(σ² + ε) · γ + β` per channel (Ioffe & Szegedy, 2015), as
/// `torch.nn.BatchNorm2d`. In training `μ`, `σ²` are the batch statistics over every axis but
/// the channel one (biased variance), and the running statistics are updated as PyTorch and
/// candle do: `running = (1 - momentum) · running + momentum · batch`, with the *unbiased*
/// batch variance for `running_var`. In evaluation the running statistics are used.
///
/// **The running statistics are written in place** into `bn.running_mean()` and
/// `bn.running_var()` (through `Tensor::slice_set`), exactly where `candle_nn::BatchNorm`
/// keeps them, so the module and a checkpoint of its `VarMap` see the update.
/// The fast path assumes the default `BatchNormConfig::remove_mean = true` (the only setting
/// used by ResNets), which `candle_nn::BatchNorm` does not expose.
///
/// # Shapes
/// - `xs`: `(B, C, ...)` (e.g. `(B, C, H, W)`), `bn` over `C` features
/// - returns the shape of `xs`
///
/// # Example
/// ```
/// use candle_core::{DType, Device, Tensor};
/// use candle_nn::{BatchNormConfig, VarBuilder, VarMap};
/// let vm = VarMap::new();
/// let vb = VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu);
/// let bn = candle_nn::batch_norm(4, BatchNormConfig::default(), vb)?;
/// let xs = Tensor::arange(0f32, 32., &Device::Cpu)?.reshape((2, 4, 2, 2))?;
/// let ys = models::ops::batch_norm(&xs, &bn, true)?;
/// assert_eq!(ys.dims(), &[2, 4, 2, 2]);
/// # Ok::<(), candle_core::Error>(())
/// ```
pub fn batch_norm(xs: &Tensor, bn: &BatchNorm, train: bool) -> Result<Tensor> {
    bn_impl(xs, bn, None, false, train)
}

/// Batch norm followed by ReLU, fused: a drop-in for `bn.forward_t(xs, train)?.relu()`.
///
/// `y = max(0, (x - μ) / sqrt(σ² + ε) · γ + β)`; statistics and running-statistics updates
/// exactly as in [`batch_norm`].
///
/// # Shapes
/// - `xs`: `(B, C, ...)`
/// - returns the shape of `xs`
///
/// # Example
/// ```
/// use candle_core::{DType, Device, Tensor};
/// use candle_nn::{BatchNormConfig, VarBuilder, VarMap};
/// let vm = VarMap::new();
/// let vb = VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu);
/// let bn = candle_nn::batch_norm(4, BatchNormConfig::default(), vb)?;
/// let xs = Tensor::arange(0f32, 32., &Device::Cpu)?.reshape((2, 4, 2, 2))?;
/// let ys = models::ops::batch_norm_relu(&xs, &bn, false)?;
/// assert!(ys.flatten_all()?.min(0)?.to_scalar::<f32>()? >= 0.0);
/// # Ok::<(), candle_core::Error>(())
/// ```
pub fn batch_norm_relu(xs: &Tensor, bn: &BatchNorm, train: bool) -> Result<Tensor> {
    bn_impl(xs, bn, None, true, train)
}

/// The end of a residual block, fused: a drop-in for
/// `(bn.forward_t(xs, train)? + residual)?.relu()`.
///
/// `y = max(0, (x - μ) / sqrt(σ² + ε) · γ + β + residual)`; statistics and running-statistics
/// updates exactly as in [`batch_norm`]. Gradients flow to `xs`, `γ`, `β` and `residual`.
///
/// # Shapes
/// - `xs`: `(B, C, ...)`
/// - `residual`: the shape of `xs`
/// - returns the shape of `xs`
///
/// # Example
/// ```
/// use candle_core::{DType, Device, Tensor};
/// use candle_nn::{BatchNormConfig, VarBuilder, VarMap};
/// let vm = VarMap::new();
/// let vb = VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu);
/// let bn = candle_nn::batch_norm(4, BatchNormConfig::default(), vb)?;
/// let xs = Tensor::arange(0f32, 32., &Device::Cpu)?.reshape((2, 4, 2, 2))?;
/// let ys = models::ops::batch_norm_add_relu(&xs, &bn, &xs, true)?;
/// assert_eq!(ys.dims(), xs.dims());
/// # Ok::<(), candle_core::Error>(())
/// ```
pub fn batch_norm_add_relu(
    xs: &Tensor,
    bn: &BatchNorm,
    residual: &Tensor,
    train: bool,
) -> Result<Tensor> {
    if residual.dims() != xs.dims() {
        bail!(
            "batch_norm_add_relu: residual {:?} must have the shape of xs {:?}",
            residual.dims(),
            xs.dims()
        );
    }
    bn_impl(xs, bn, Some(residual), true, train)
}

/// Sums over every process of a data-parallel job, for synchronised batch norm: implemented by
/// the training loop over its collective (MPI), used by the batch-norm kernels inside a
/// [`SyncBatchNorm`] scope.
pub trait ChannelSums: Send + Sync {
    /// Replaces every value of `sums` by its sum over all processes (each process passes the
    /// same length).
    fn all_reduce(&self, sums: &mut [f64]) -> Result<()>;
}

thread_local! {
    static SYNC: RefCell<Option<Arc<dyn ChannelSums>>> = const { RefCell::new(None) };
}

/// Synchronised batch norm (SimCLR's "global BN") on this thread while the guard lives: every
/// training-mode batch norm of the CPU kernels ([`batch_norm`], [`batch_norm_relu`],
/// [`batch_norm_add_relu`], [`conv2d_bn_train`](crate::ops::conv2d_bn_train)) normalises with the
/// statistics of the batch of **all** processes, its per-channel sums all-reduced through
/// [`ChannelSums`] in the forward pass (`Σx`, then `Σ(x − μ)²`) and in the backward pass
/// (`Σdy`, `Σdy·(x − μ)`). The input's gradient is then that of the sum of every process's loss
/// (what data-parallel training averages); `γ` and `β` get this process's share.
/// The running statistics are updated with the global ones, so they stay equal on every
/// process. Evaluation mode is unaffected.
///
/// Forward and backward must run on the thread that holds the guard. Other devices (the stock
/// candle batch norm) are not synchronised: [`sync_supported`] tells.
pub struct SyncBatchNorm {
    previous: Option<Arc<dyn ChannelSums>>,
}

impl SyncBatchNorm {
    /// Synchronises the batch norms of this thread through `sums` until the guard is dropped.
    pub fn enter(sums: Arc<dyn ChannelSums>) -> Self {
        let previous = SYNC.with(|s| s.borrow_mut().replace(sums));
        Self { previous }
    }
}

impl Drop for SyncBatchNorm {
    fn drop(&mut self) {
        let previous = self.previous.take();
        SYNC.with(|s| *s.borrow_mut() = previous);
    }
}

/// The synchronisation of this thread's batch norms, if any.
fn current_sync() -> Option<Arc<dyn ChannelSums>> {
    SYNC.with(|s| s.borrow().clone())
}

/// Whether synchronised batch norm is available for tensors on `device` with `dtype` (the CPU
/// kernels: f32 and f64 on the CPU).
pub fn sync_supported(device: &candle_core::Device, dtype: DType) -> bool {
    device.is_cpu() && matches!(dtype, DType::F32 | DType::F64)
}

/// The stock candle composition, for devices and dtypes without a fast path.
fn stock(
    xs: &Tensor,
    bn: &BatchNorm,
    residual: Option<&Tensor>,
    relu: bool,
    train: bool,
) -> Result<Tensor> {
    let ys = bn.forward_t(xs, train)?;
    let ys = match residual {
        Some(r) => (ys + r)?,
        None => ys,
    };
    if relu {
        ys.relu()
    } else {
        Ok(ys)
    }
}

fn bn_impl(
    xs: &Tensor,
    bn: &BatchNorm,
    residual: Option<&Tensor>,
    relu: bool,
    train: bool,
) -> Result<Tensor> {
    let dims = xs.dims();
    if dims.len() < 2 {
        bail!("batch_norm: xs must be (B, C, ...), got {dims:?}");
    }
    let c = dims[1];
    let rm = bn.running_mean();
    let rv = bn.running_var();
    if rm.dims() != [c] || rv.dims() != [c] {
        bail!(
            "batch_norm: xs {dims:?} has {c} channels but the running statistics are {:?}",
            rm.dims()
        );
    }
    let dt = xs.dtype();
    let same = |t: &Tensor| t.dtype() == dt && t.device().same_device(xs.device());
    let affine_ok = bn.weight_and_bias().is_none_or(|(w, b)| same(w) && same(b));
    if !fast_path(xs) || !affine_ok || !same(rm) || !same(rv) || residual.is_some_and(|r| !same(r))
    {
        if train && current_sync().is_some() {
            bail!(
                "batch_norm: synchronised batch norm runs on the CPU kernels (f32, f64), not on {:?} {dt:?} tensors",
                xs.device().location()
            );
        }
        return stock(xs, bn, residual, relu, train);
    }
    let b = dims[0];
    let s: usize = dims[2..].iter().product();
    let m = b * s;
    if train && m < 2 {
        bail!("batch_norm: training needs more than one value per channel, got xs {dims:?}");
    }
    let gb = affine_params(bn, c, xs)?;
    let stats = Arc::new(OnceLock::new());
    if !train {
        // A fresh lock: setting it cannot fail.
        let _ = stats.set(Stats::running(bn)?);
    }
    let op = BnOp {
        dims: (b, c, s),
        relu,
        batch_stats: train,
        eps: bn.eps(),
        stats: stats.clone(),
        sync: if train { current_sync() } else { None },
    };
    let xs = xs.contiguous()?;
    let ys = match residual {
        Some(r) => xs.apply_op3_arc(&gb, &r.contiguous()?, Arc::new(Box::new(op)))?,
        None => xs.apply_op2_arc(&gb, Arc::new(Box::new(op)))?,
    };
    if train {
        update_running(bn, &stats)?;
    }
    Ok(ys)
}

/// `[γ; β]` of `bn` as one `(2, C)` tensor (ones and zeros without affine parameters).
pub(crate) fn affine_params(bn: &BatchNorm, c: usize, xs: &Tensor) -> Result<Tensor> {
    match bn.weight_and_bias() {
        Some((w, bias)) => Tensor::stack(&[w, bias], 0),
        None => Tensor::stack(
            &[
                Tensor::ones(c, xs.dtype(), xs.device())?,
                Tensor::zeros(c, xs.dtype(), xs.device())?,
            ],
            0,
        ),
    }
}

/// Updates the running statistics of `bn` in place from the batch statistics a training
/// forward pass left in `stats`.
pub(crate) fn update_running(bn: &BatchNorm, stats: &OnceLock<Stats>) -> Result<()> {
    let Some(st) = stats.get() else {
        bail!("batch_norm: the forward pass left no batch statistics")
    };
    let (rm, rv) = (bn.running_mean(), bn.running_var());
    let c = st.mean.len();
    let mom = bn.momentum();
    let m = st.count;
    let unbias = m / (m - 1.0);
    let update = |running: &Tensor, batch: &[f64], scale: f64| -> Result<()> {
        let old = running.to_dtype(DType::F64)?.to_vec1::<f64>()?;
        let new: Vec<f64> = old
            .iter()
            .zip(batch)
            .map(|(o, v)| (1.0 - mom) * o + mom * scale * v)
            .collect();
        let new = Tensor::from_vec(new, c, running.device())?.to_dtype(running.dtype())?;
        running.slice_set(&new, 0, 0)
    };
    update(rm, &st.mean, 1.0)?;
    update(rv, &st.var, unbias)
}

/// Per-channel statistics: mean, biased variance and `1 / sqrt(var + eps)`, over `count`
/// values per channel (of every process under [`SyncBatchNorm`]).
pub(crate) struct Stats {
    mean: Vec<f64>,
    var: Vec<f64>,
    invstd: Vec<f64>,
    count: f64,
}

impl Stats {
    /// The running statistics of `bn`, which evaluation mode normalises with.
    pub(crate) fn running(bn: &BatchNorm) -> Result<Self> {
        let mean = bn.running_mean().to_dtype(DType::F64)?.to_vec1::<f64>()?;
        let var = bn.running_var().to_dtype(DType::F64)?.to_vec1::<f64>()?;
        let invstd = var.iter().map(|v| 1.0 / (v + bn.eps()).sqrt()).collect();
        Ok(Self {
            mean,
            var,
            invstd,
            count: 0.0,
        })
    }
}

pub(crate) struct BnOp {
    /// `(B, C, S)`: batch, channels, elements per channel and image.
    dims: (usize, usize, usize),
    relu: bool,
    /// Batch statistics (training) or the running ones given in `stats` (evaluation).
    batch_stats: bool,
    eps: f64,
    stats: Arc<OnceLock<Stats>>,
    /// Synchronised batch norm: the all-reduce of the per-channel sums.
    sync: Option<Arc<dyn ChannelSums>>,
}

/// Independent partial sums per reduction (one SIMD register of `f32`).
const LANES: usize = 16;
/// Elements masked at a time into a stack buffer by [`grad_sums`].
const BLOCK: usize = 256;

/// `xs` cut at the last multiple of [`LANES`].
fn split_lanes<T>(xs: &[T]) -> (&[T], &[T]) {
    xs.split_at(xs.len() / LANES * LANES)
}

/// `(Σ (x - shift), Σ (x - shift)²)` over a slice, each in [`LANES`] independent lanes.
///
/// One reduction per loop: a loop that updates two lane arrays at once is not vectorised by
/// the compiler (it pairs the two sums instead), two loops over the same (cached) slice are.
fn shifted_sums<T: WithDType>(xs: &[T], shift: T) -> (f64, f64) {
    let zero = T::from_f64(0.0);
    let (body, rest) = split_lanes(xs);
    let mut s1 = [zero; LANES];
    for ch in body.chunks_exact(LANES) {
        let ch = &ch[..LANES];
        for l in 0..LANES {
            s1[l] += ch[l] - shift;
        }
    }
    let mut s2 = [zero; LANES];
    for ch in body.chunks_exact(LANES) {
        let ch = &ch[..LANES];
        for l in 0..LANES {
            let d = ch[l] - shift;
            s2[l] += d * d;
        }
    }
    let (mut a, mut b) = (0f64, 0f64);
    for l in 0..LANES {
        a += s1[l].to_f64();
        b += s2[l].to_f64();
    }
    for &v in rest {
        let d = (v - shift).to_f64();
        a += d;
        b += d * d;
    }
    (a, b)
}

/// `(Σ(x − shift), Σ(x − shift)²)` over channel `ci` of `x` `(b, c, s)`.
fn channel_sums<T: WithDType>(
    x: &[T],
    (b, c, s): (usize, usize, usize),
    ci: usize,
    shift: T,
) -> (f64, f64) {
    let (mut s1, mut s2) = (0f64, 0f64);
    for bi in 0..b {
        let o = (bi * c + ci) * s;
        let (a, q) = shifted_sums(&x[o..o + s], shift);
        s1 += a;
        s2 += q;
    }
    (s1, s2)
}

fn batch_stats<T: WithDType>(x: &[T], (b, c, s): (usize, usize, usize), eps: f64) -> Stats {
    let m = (b * s) as f64;
    let ms: Vec<(f64, f64)> = (0..c)
        .into_par_iter()
        .map(|ci| {
            let shift = x[ci * s];
            let (s1, s2) = channel_sums(x, (b, c, s), ci, shift);
            let mean_d = s1 / m;
            (shift.to_f64() + mean_d, (s2 / m - mean_d * mean_d).max(0.0))
        })
        .collect();
    let (mean, var): (Vec<f64>, Vec<f64>) = ms.into_iter().unzip();
    let invstd = var.iter().map(|v| 1.0 / (v + eps).sqrt()).collect();
    Stats {
        mean,
        var,
        invstd,
        count: m,
    }
}

/// The statistics of the batch of every process ([`SyncBatchNorm`]): `Σx` and the count
/// all-reduced for the mean, then `Σ(x − μ)` and `Σ(x − μ)²` for the variance.
fn synced_batch_stats<T: WithDType>(
    x: &[T],
    (b, c, s): (usize, usize, usize),
    eps: f64,
    sync: &dyn ChannelSums,
) -> Result<Stats> {
    let zero = T::from_f64(0.0);
    let mut sums: Vec<f64> = (0..c)
        .into_par_iter()
        .map(|ci| channel_sums(x, (b, c, s), ci, zero).0)
        .collect();
    sums.push((b * s) as f64);
    sync.all_reduce(&mut sums)?;
    let m = sums[c];
    if m < 2.0 {
        bail!("batch_norm: training needs more than one value per channel over all processes, got {m}");
    }
    let mean: Vec<f64> = sums[..c].iter().map(|v| v / m).collect();
    let mut centred: Vec<f64> = (0..c)
        .into_par_iter()
        .flat_map_iter(|ci| {
            let (s1, s2) = channel_sums(x, (b, c, s), ci, T::from_f64(mean[ci]));
            [s1, s2]
        })
        .collect();
    sync.all_reduce(&mut centred)?;
    let (mut mu, mut var) = (Vec::with_capacity(c), Vec::with_capacity(c));
    for ci in 0..c {
        // The shift is μ rounded to T: correct by the mean of the centred values.
        let mean_d = centred[2 * ci] / m;
        mu.push(T::from_f64(mean[ci]).to_f64() + mean_d);
        var.push((centred[2 * ci + 1] / m - mean_d * mean_d).max(0.0));
    }
    let invstd = var.iter().map(|v| 1.0 / (v + eps).sqrt()).collect();
    Ok(Stats {
        mean: mu,
        var,
        invstd,
        count: m,
    })
}

/// Per channel `(a, sh)` with `y = x·a + sh` before the residual and the ReLU:
/// `a = γ / sqrt(σ² + ε)`, `sh = β - μ·a`, rounded to `T` once. The forward pass and the
/// backward pass's ReLU gate ([`Gate::ByInput`]) share them, so that both compute the same `v`,
/// and [`super::conv2d_bn_eval`] applies them in its epilogue, so that it equals this op.
pub(crate) fn affine_coef<T: WithDType>(gb: &[T], st: &Stats, c: usize) -> Vec<(T, T)> {
    (0..c)
        .map(|ci| {
            let scale = gb[ci].to_f64() * st.invstd[ci];
            (
                T::from_f64(scale),
                T::from_f64(gb[c + ci].to_f64() - st.mean[ci] * scale),
            )
        })
        .collect()
}

fn bn_fwd<T: WithDType>(
    x: &[T],
    gb: &[T],
    r: Option<&[T]>,
    dims: (usize, usize, usize),
    st: &Stats,
    relu: bool,
) -> Vec<T> {
    let (_, c, s) = dims;
    let zero = T::from_f64(0.0);
    let coef = affine_coef(gb, st, c);
    // Every element is written below.
    let mut out = uninit_vec::<T>(x.len());
    if out.is_empty() {
        return out;
    }
    out.par_chunks_mut(c * s).enumerate().for_each(|(bi, o)| {
        let base = bi * c * s;
        for (ci, &(a, sh)) in coef.iter().enumerate() {
            let xs = &x[base + ci * s..base + (ci + 1) * s];
            let os = &mut o[ci * s..(ci + 1) * s];
            match r {
                Some(r) => {
                    let rs = &r[base + ci * s..base + (ci + 1) * s];
                    for ((ov, &xv), &rv) in os.iter_mut().zip(xs).zip(rs) {
                        let v = xv * a + sh + rv;
                        *ov = if relu && v < zero { zero } else { v };
                    }
                }
                None => {
                    for (ov, &xv) in os.iter_mut().zip(xs) {
                        let v = xv * a + sh;
                        *ov = if relu && v < zero { zero } else { v };
                    }
                }
            }
        }
    });
    out
}

/// `b` mutable chunks of `len` elements of `v`, or `b` times `None` without `v`.
fn image_chunks<T: WithDType>(
    v: &mut Option<Vec<T>>,
    b: usize,
    len: usize,
) -> Vec<Option<&mut [T]>> {
    match v {
        Some(v) => v.chunks_mut(len).map(Some).collect(),
        None => (0..b).map(|_| None).collect(),
    }
}

/// How the ReLU gates the output gradient `dy` into `dy'` in the backward pass.
#[derive(Clone, Copy)]
enum Gate<T> {
    /// No ReLU: `dy' = dy`.
    Open,
    /// `dy' = dy` where the output `y > 0`, else 0 (a residual was added before the ReLU).
    ByOutput,
    /// `dy' = dy` where `x·a + sh > 0`, else 0: the pre-activation recomputed from the input
    /// with the forward pass's own `(a, sh)` ([`affine_coef`]), bit for bit the value whose
    /// sign the forward pass tested (`y = max(0, v)`, so `y ≤ 0` exactly when `v ≤ 0`), which
    /// spares reading `y` (without a residual).
    ByInput(T, T),
}

impl<T: WithDType> Gate<T> {
    /// `dy'` for one value: `dy` gated by the output `y` or the input `x`.
    #[inline]
    fn apply(self, dy: T, y: T, x: T) -> T {
        match self {
            Gate::Open => dy,
            Gate::ByOutput => masked(dy, y),
            Gate::ByInput(a, sh) => masked(dy, x * a + sh),
        }
    }
}

/// `(Σ dy', Σ dy' · (x - mean))` over one channel of one image, each in [`LANES`] independent
/// lanes, where `dy'` is `dy` through the ReLU `gate`.
///
/// The gate is applied in a separate loop, [`BLOCK`] elements at a time, into a stack buffer,
/// and each sum has a loop of its own: that is what the compiler vectorises (see
/// [`shifted_sums`]).
fn grad_sums<T: WithDType>(dy: &[T], y: &[T], x: &[T], mean: T, gate: Gate<T>) -> (f64, f64) {
    let zero = T::from_f64(0.0);
    let mut buf = [zero; BLOCK];
    let (mut a1, mut a2) = ([zero; LANES], [zero; LANES]);
    let (mut s1, mut s2) = (0f64, 0f64);
    for (bi, (dyb, xb)) in dy.chunks(BLOCK).zip(x.chunks(BLOCK)).enumerate() {
        let d: &[T] = match gate {
            Gate::Open => dyb,
            Gate::ByOutput => {
                let yb = &y[bi * BLOCK..bi * BLOCK + dyb.len()];
                let t = &mut buf[..dyb.len()];
                for ((t, &dv), &yv) in t.iter_mut().zip(dyb).zip(yb) {
                    *t = masked(dv, yv);
                }
                t
            }
            Gate::ByInput(a, sh) => {
                let t = &mut buf[..dyb.len()];
                for ((t, &dv), &xv) in t.iter_mut().zip(dyb).zip(xb) {
                    *t = masked(dv, xv * a + sh);
                }
                t
            }
        };
        let (dc, drest) = split_lanes(d);
        let (xc, xrest) = split_lanes(xb);
        for ch in dc.chunks_exact(LANES) {
            let ch = &ch[..LANES];
            for l in 0..LANES {
                a1[l] += ch[l];
            }
        }
        for (ch, xv) in dc.chunks_exact(LANES).zip(xc.chunks_exact(LANES)) {
            let (ch, xv) = (&ch[..LANES], &xv[..LANES]);
            for l in 0..LANES {
                a2[l] += ch[l] * (xv[l] - mean);
            }
        }
        for (&dv, &xv) in drest.iter().zip(xrest) {
            s1 += dv.to_f64();
            s2 += (dv * (xv - mean)).to_f64();
        }
    }
    for l in 0..LANES {
        s1 += a1[l].to_f64();
        s2 += a2[l].to_f64();
    }
    (s1, s2)
}

/// `dy` through the ReLU mask of the output (or of the pre-activation, which has the same
/// sign test): 0 where `y ≤ 0`.
#[inline]
fn masked<T: WithDType>(dy: T, y: T) -> T {
    if y <= T::from_f64(0.0) {
        T::from_f64(0.0)
    } else {
        dy
    }
}

pub(crate) type Grads<T> = (Option<Vec<T>>, Option<Vec<T>>, Option<Vec<T>>);

impl BnOp {
    /// A training-mode batch norm over `dims = (B, C, S)`: batch statistics, left in the
    /// returned lock by the forward pass.
    pub(crate) fn train(
        dims: (usize, usize, usize),
        relu: bool,
        eps: f64,
    ) -> (Self, Arc<OnceLock<Stats>>) {
        let stats = Arc::new(OnceLock::new());
        let op = Self {
            dims,
            relu,
            batch_stats: true,
            eps,
            stats: stats.clone(),
            sync: current_sync(),
        };
        (op, stats)
    }

    fn stats(&self) -> Result<&Stats> {
        match self.stats.get() {
            Some(s) => Ok(s),
            None => bail!("batch_norm: backward before forward"),
        }
    }

    pub(crate) fn fwd<T: WithDType>(&self, x: &[T], gb: &[T], r: Option<&[T]>) -> Result<Vec<T>> {
        if self.batch_stats && self.stats.get().is_none() {
            // A fresh op runs its forward pass once; if it ran before, keep those statistics.
            let st = match &self.sync {
                Some(sync) => synced_batch_stats(x, self.dims, self.eps, &**sync)?,
                None => batch_stats(x, self.dims, self.eps),
            };
            let _ = self.stats.set(st);
        }
        Ok(bn_fwd(x, gb, r, self.dims, self.stats()?, self.relu))
    }

    /// Gradients for `(x, [γ; β], residual)`, each only if asked for.
    pub(crate) fn bwd_slices<T: WithDType>(
        &self,
        x: &[T],
        gb: &[T],
        y: &[T],
        dy: &[T],
        residual: bool,
        need: (bool, bool, bool),
    ) -> Result<Grads<T>> {
        let (b, c, s) = self.dims;
        let st = self.stats()?;
        let zero = T::from_f64(0.0);
        // The ReLU gate per channel: by the input where no residual was added before the ReLU.
        let gates: Vec<Gate<T>> = if !self.relu {
            vec![Gate::Open; c]
        } else if residual {
            vec![Gate::ByOutput; c]
        } else {
            affine_coef(gb, st, c)
                .into_iter()
                .map(|(a, sh)| Gate::ByInput(a, sh))
                .collect()
        };
        // Per channel: Σ dy' and Σ dy' · (x - μ), where dy' is dy through the ReLU gate.
        let sums: Vec<(f64, f64)> = (0..c)
            .into_par_iter()
            .map(|ci| {
                let mean = T::from_f64(st.mean[ci]);
                let (mut s1, mut s2) = (0f64, 0f64);
                for bi in 0..b {
                    let o = (bi * c + ci) * s;
                    let (a, q) =
                        grad_sums(&dy[o..o + s], &y[o..o + s], &x[o..o + s], mean, gates[ci]);
                    s1 += a;
                    s2 += q;
                }
                (s1, s2)
            })
            .collect();
        // γ and β: this process's sums (`local`). The input: those of every process when
        // synchronised (`sums`), else the same local ones.
        let local = sums;
        let synced = match (&self.sync, self.batch_stats) {
            (Some(sync), true) => {
                let mut flat: Vec<f64> = local.iter().flat_map(|&(a, q)| [a, q]).collect();
                sync.all_reduce(&mut flat)?;
                Some(flat.chunks(2).map(|p| (p[0], p[1])).collect::<Vec<_>>())
            }
            _ => None,
        };
        let (sums, m) = match &synced {
            Some(global) => (global, st.count),
            None => (&local, (b * s) as f64),
        };
        let dgb = need.1.then(|| {
            let mut g = vec![zero; 2 * c];
            for (ci, &(sdy, sdyx)) in local.iter().enumerate() {
                g[ci] = T::from_f64(sdyx * st.invstd[ci]);
                g[c + ci] = T::from_f64(sdy);
            }
            g
        });
        // dx = α·dy' + β·x + γ₀ per channel.
        let coef: Vec<(T, T, T)> = (0..c)
            .map(|ci| {
                let (sdy, sdyx) = sums[ci];
                let k = gb[ci].to_f64() * st.invstd[ci];
                if self.batch_stats {
                    let dgamma = sdyx * st.invstd[ci];
                    let beta = -k * st.invstd[ci] * dgamma / m;
                    let g0 = -k * sdy / m - beta * st.mean[ci];
                    (T::from_f64(k), T::from_f64(beta), T::from_f64(g0))
                } else {
                    (T::from_f64(k), zero, zero)
                }
            })
            .collect();
        // dx and the residual's gradient (dy' itself) in one pass over dy (and y or x for the
        // gate). Both are written in full below.
        let mut dx = need.0.then(|| uninit_vec::<T>(x.len()));
        let mut dr = need.2.then(|| uninit_vec::<T>(x.len()));
        if !x.is_empty() && (need.0 || need.2) {
            let (dxs, drs) = (
                image_chunks(&mut dx, b, c * s),
                image_chunks(&mut dr, b, c * s),
            );
            dxs.into_par_iter()
                .zip(drs)
                .enumerate()
                .for_each(|(bi, (mut dxo, mut dro))| {
                    let base = bi * c * s;
                    for (ci, &(al, be, g0)) in coef.iter().enumerate() {
                        let r = base + ci * s..base + (ci + 1) * s;
                        let (dyc, yc, xc) = (&dy[r.clone()], &y[r.clone()], &x[r]);
                        let l = ci * s..(ci + 1) * s;
                        let gate = gates[ci];
                        if let Some(o) = dxo.as_deref_mut() {
                            let o = &mut o[l.clone()];
                            // One loop per gate, so that each reads only what it needs.
                            match gate {
                                Gate::Open => {
                                    for ((ov, &d), &xv) in o.iter_mut().zip(dyc).zip(xc) {
                                        *ov = al * d + be * xv + g0;
                                    }
                                }
                                Gate::ByOutput => {
                                    for (((ov, &d), &yv), &xv) in
                                        o.iter_mut().zip(dyc).zip(yc).zip(xc)
                                    {
                                        *ov = al * masked(d, yv) + be * xv + g0;
                                    }
                                }
                                Gate::ByInput(a, sh) => {
                                    for ((ov, &d), &xv) in o.iter_mut().zip(dyc).zip(xc) {
                                        *ov = al * masked(d, xv * a + sh) + be * xv + g0;
                                    }
                                }
                            }
                        }
                        if let Some(o) = dro.as_deref_mut() {
                            for (((ov, &d), &yv), &xv) in o[l].iter_mut().zip(dyc).zip(yc).zip(xc) {
                                *ov = gate.apply(d, yv, xv);
                            }
                        }
                    }
                });
        }
        Ok((dx, dgb, dr))
    }

    fn bwd_typed<T: WithDType>(
        &self,
        x: &Tensor,
        gb: &Tensor,
        r: Option<&Tensor>,
        y: &Tensor,
        dy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let need = (x.track_op(), gb.track_op(), r.is_some_and(|r| r.track_op()));
        if !need.0 && !need.1 && !need.2 {
            return Ok((None, None, None));
        }
        let (dx, dgb, dr) = with_data::<T, _>(x, |xd| {
            with_data::<T, _>(gb, |gd| {
                with_data::<T, _>(y, |yd| {
                    with_data::<T, _>(dy, |dyd| {
                        self.bwd_slices(xd, gd, yd, dyd, r.is_some(), need)
                    })
                })
            })
        })?;
        let dx = dx
            .map(|v| Tensor::from_vec(v, x.shape(), x.device()))
            .transpose()?;
        let dgb = dgb
            .map(|v| Tensor::from_vec(v, gb.shape(), gb.device()))
            .transpose()?;
        let dr = match (dr, r) {
            (Some(v), Some(r)) => Some(Tensor::from_vec(v, r.shape(), r.device())?),
            _ => None,
        };
        Ok((dx, dgb, dr))
    }

    fn bwd_any(
        &self,
        x: &Tensor,
        gb: &Tensor,
        r: Option<&Tensor>,
        y: &Tensor,
        dy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        match x.dtype() {
            DType::F32 => self.bwd_typed::<f32>(x, gb, r, y, dy),
            DType::F64 => self.bwd_typed::<f64>(x, gb, r, y, dy),
            d => bail!("models-batch-norm: unsupported dtype {d:?}"),
        }
    }
}

impl CustomOp2 for BnOp {
    fn name(&self) -> &'static str {
        "models-batch-norm"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let out = match s1.dtype() {
            DType::F32 => f32::to_cpu_storage_owned(self.fwd(
                slice::<f32>(s1, l1)?,
                slice::<f32>(s2, l2)?,
                None,
            )?),
            DType::F64 => f64::to_cpu_storage_owned(self.fwd(
                slice::<f64>(s1, l1)?,
                slice::<f64>(s2, l2)?,
                None,
            )?),
            d => bail!("models-batch-norm: unsupported dtype {d:?}"),
        };
        Ok((out, l1.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        gb: &Tensor,
        res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let (dx, dgb, _) = self.bwd_any(x, gb, None, res, grad)?;
        Ok((dx, dgb))
    }
}

impl CustomOp3 for BnOp {
    fn name(&self) -> &'static str {
        "models-batch-norm-add-relu"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let out = match s1.dtype() {
            DType::F32 => f32::to_cpu_storage_owned(self.fwd(
                slice::<f32>(s1, l1)?,
                slice::<f32>(s2, l2)?,
                Some(slice::<f32>(s3, l3)?),
            )?),
            DType::F64 => f64::to_cpu_storage_owned(self.fwd(
                slice::<f64>(s1, l1)?,
                slice::<f64>(s2, l2)?,
                Some(slice::<f64>(s3, l3)?),
            )?),
            d => bail!("models-batch-norm-add-relu: unsupported dtype {d:?}"),
        };
        Ok((out, l1.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        gb: &Tensor,
        r: &Tensor,
        res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        self.bwd_any(x, gb, Some(r), res, grad)
    }
}

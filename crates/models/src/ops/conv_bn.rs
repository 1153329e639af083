//! A convolution and the batch norm after it (+ residual, + ReLU) as one op: in evaluation the
//! batch norm as a per-channel scale and bias applied in the GEMM's epilogue, in training one
//! custom op whose intermediate (the convolution's output) never enters the autograd graph.

use std::sync::{Arc, OnceLock};

use candle_core::backend::BackendStorage;
use candle_core::{
    bail, CpuStorage, CustomOp2, CustomOp3, DType, Layout, Result, Shape, Tensor, WithDType,
};
use candle_nn::BatchNorm;

use super::batch_norm::{affine_coef, affine_params, update_running, BnOp, Stats};
use super::conv2d::{conv_bwd, conv_fwd, geometry, Epilogue};
use super::cpu::{fast_path, slice, with_data};
use super::im2col::ConvGeom;

/// Convolution then batch norm in evaluation mode (running statistics), then optionally a
/// residual add and a ReLU, with the batch norm applied in the convolution's epilogue: a drop-in for
/// `batch_norm(&conv2d(xs, w, padding, stride)?, bn, false)` (+ `residual`, then ReLU when
/// `relu`), as [`super::conv2d`], [`super::batch_norm`], [`super::batch_norm_relu`] and
/// [`super::batch_norm_add_relu`] compute it.
///
/// With `s = γ / sqrt(σ²_running + ε)` and `t = β - μ_running · s` per output channel,
/// `bn(conv(x, w)) = conv(x, w)·s + t`; the fast path applies `·s + t`, the residual and the
/// ReLU to each tile of the output right after its GEMM, while it is in cache: one pass and one
/// output buffer instead of three, and the same result as the unfused ops bit for bit. (Folding
/// `s` into the kernel instead, as PyTorch's `torch.fx` `fuse_conv_bn_eval` does, would copy
/// every kernel on every call: the kernel may be a view of trained weights that change between
/// calls, so a folded copy cannot be kept.)
///
/// The fast path runs on CPU `f32`/`f64` tensors when **nothing asks for a gradient** (no
/// argument is a variable or the result of a tracked op, e.g. a frozen teacher built on
/// detached weights, see [`crate::ResNet::detached`]): its result records no graph. Otherwise,
/// and on other devices and dtypes, the unfused ops run, with their gradients.
///
/// # Shapes
/// - `xs`: `(B, C_in, H, W)`
/// - `w`: `(C_out, C_in, K_h, K_w)`; `bn` over `C_out` features
/// - `residual`: the shape of the result
/// - returns `(B, C_out, (H + 2·padding - K_h) / stride + 1, (W + 2·padding - K_w) / stride + 1)`
///
/// # Example
/// ```
/// use candle_core::{DType, Device, Tensor};
/// use candle_nn::{BatchNormConfig, VarBuilder};
/// let dev = Device::Cpu;
/// let vb = VarBuilder::zeros(DType::F32, &dev);
/// let bn = candle_nn::batch_norm(4, BatchNormConfig::default(), vb)?;
/// let xs = Tensor::ones((2, 3, 8, 8), DType::F32, &dev)?;
/// let w = Tensor::ones((4, 3, 3, 3), DType::F32, &dev)?;
/// let fused = models::ops::conv2d_bn_eval(&xs, &w, 1, 1, &bn, None, true)?;
/// let plain = models::ops::batch_norm_relu(&models::ops::conv2d(&xs, &w, 1, 1)?, &bn, false)?;
/// let diff = (fused - plain)?.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()?;
/// assert!(diff < 1e-5);
/// # Ok::<(), candle_core::Error>(())
/// ```
pub fn conv2d_bn_eval(
    xs: &Tensor,
    w: &Tensor,
    padding: usize,
    stride: usize,
    bn: &BatchNorm,
    residual: Option<&Tensor>,
    relu: bool,
) -> Result<Tensor> {
    let geom = geometry(xs, w, padding, stride)?;
    let out_dims = check_bn("conv2d_bn_eval", &geom, w, bn, residual)?;
    let (rm, rv) = (bn.running_mean(), bn.running_var());
    // The running statistics are candle variables (updated in place in training) but are
    // buffers, not parameters: like the fused batch norm ops, this op gives them no gradient.
    let mut args = vec![w];
    if let Some((g, b)) = bn.weight_and_bias() {
        args.extend([g, b]);
    }
    args.extend(residual);
    let dt = xs.dtype();
    let same = |t: &Tensor| t.dtype() == dt && t.device().same_device(xs.device());
    let plain = |t: &Tensor| same(t) && !t.track_op();
    if !fast_path(xs) || xs.track_op() || !args.iter().all(|t| plain(t)) || !same(rm) || !same(rv) {
        return unfused(xs, w, padding, stride, bn, residual, relu, false);
    }
    // s = γ / sqrt(var + ε), t = β - μ·s per channel, as the batch norm op computes them.
    let st = Stats::running(bn)?;
    let gb = affine_params(bn, geom.c_out, xs)?;
    let out = match dt {
        DType::F32 => Tensor::from_vec(
            fused_eval::<f32>(&geom, xs, w, &gb, &st, residual, relu)?,
            &out_dims,
            xs.device(),
        )?,
        DType::F64 => Tensor::from_vec(
            fused_eval::<f64>(&geom, xs, w, &gb, &st, residual, relu)?,
            &out_dims,
            xs.device(),
        )?,
        d => bail!("conv2d_bn_eval: unsupported dtype {d:?}"),
    };
    Ok(out)
}

/// Checks the batch norm and the residual against the convolution; returns the output dims.
fn check_bn(
    what: &str,
    geom: &ConvGeom,
    w: &Tensor,
    bn: &BatchNorm,
    residual: Option<&Tensor>,
) -> Result<[usize; 4]> {
    let (rm, rv) = (bn.running_mean(), bn.running_var());
    if rm.dims() != [geom.c_out] || rv.dims() != [geom.c_out] {
        bail!(
            "{what}: w {:?} has {} output channels but the running statistics are {:?}",
            w.dims(),
            geom.c_out,
            rm.dims()
        );
    }
    let out_dims = [geom.b, geom.c_out, geom.out_h, geom.out_w];
    if let Some(r) = residual {
        if r.dims() != out_dims {
            bail!(
                "{what}: residual {:?} must have the shape of the output {out_dims:?}",
                r.dims()
            );
        }
    }
    Ok(out_dims)
}

/// The unfused ops, with gradients.
#[allow(clippy::too_many_arguments)]
fn unfused(
    xs: &Tensor,
    w: &Tensor,
    padding: usize,
    stride: usize,
    bn: &BatchNorm,
    residual: Option<&Tensor>,
    relu: bool,
    train: bool,
) -> Result<Tensor> {
    let h = super::conv2d(xs, w, padding, stride)?;
    match (residual, relu) {
        (None, false) => super::batch_norm(&h, bn, train),
        (None, true) => super::batch_norm_relu(&h, bn, train),
        (Some(r), true) => super::batch_norm_add_relu(&h, bn, r, train),
        (Some(r), false) => super::batch_norm(&h, bn, train)? + r,
    }
}

/// The convolution with the epilogue `·s + t (+ residual), ReLU` per output channel, `(s, t)`
/// the batch norm op's own coefficients ([`affine_coef`]) from `[γ; β]` and the running
/// statistics.
fn fused_eval<T: WithDType>(
    g: &ConvGeom,
    xs: &Tensor,
    w: &Tensor,
    gb: &Tensor,
    st: &Stats,
    residual: Option<&Tensor>,
    relu: bool,
) -> Result<Vec<T>> {
    let (scale, bias): (Vec<T>, Vec<T>) =
        with_data::<T, _>(gb, |gbd| Ok(affine_coef(gbd, st, g.c_out)))?
            .into_iter()
            .unzip();
    with_data::<T, _>(w, |wd| {
        with_data::<T, _>(xs, |xd| {
            let run = |r: Option<&[T]>| {
                let epi = Epilogue {
                    scale: Some(&scale),
                    bias: Some(&bias),
                    residual: r,
                    relu,
                };
                conv_fwd(g, xd, wd, Some(&epi))
            };
            match residual {
                Some(r) => with_data::<T, _>(r, |rd| Ok(run(Some(rd)))),
                None => Ok(run(None)),
            }
        })
    })
}

/// Convolution then batch norm in training mode (batch statistics, running statistics updated),
/// then optionally a residual add and a ReLU, as one op: a drop-in for
/// `batch_norm(&conv2d(xs, w, padding, stride)?, bn, true)` (+ `residual`, then ReLU when
/// `relu`), with the same values, gradients and running-statistics updates as
/// [`super::conv2d`] followed by [`super::batch_norm`], [`super::batch_norm_relu`] or
/// [`super::batch_norm_add_relu`].
///
/// The convolution's output stays inside the op (kept for its backward pass) instead of
/// becoming a tensor of the autograd graph: the backward pass hands the batch norm's input
/// gradient straight to the convolution's, where candle would allocate a zero tensor of the
/// activation's size and add the gradient to it. Gradients flow to `xs`, `w`, `bn`'s weight
/// and bias and `residual`; the fast path runs on CPU `f32`/`f64` tensors, other devices and
/// dtypes run the unfused ops.
///
/// # Shapes
/// - `xs`: `(B, C_in, H, W)`
/// - `w`: `(C_out, C_in, K_h, K_w)`; `bn` over `C_out` features
/// - `residual`: the shape of the result
/// - returns `(B, C_out, (H + 2·padding - K_h) / stride + 1, (W + 2·padding - K_w) / stride + 1)`
///
/// # Example
/// ```
/// use candle_core::{DType, Device, Tensor, Var};
/// use candle_nn::{BatchNormConfig, VarBuilder, VarMap};
/// let dev = Device::Cpu;
/// let vm = VarMap::new();
/// let bn = candle_nn::batch_norm(4, BatchNormConfig::default(), VarBuilder::from_varmap(&vm, DType::F32, &dev))?;
/// let xs = Tensor::arange(0f32, 384., &dev)?.reshape((2, 3, 8, 8))?;
/// let w = Var::ones((4, 3, 3, 3), DType::F32, &dev)?;
/// let ys = models::ops::conv2d_bn_train(&xs, &w, 1, 1, &bn, None, true)?;
/// let grads = ys.sum_all()?.backward()?;
/// assert_eq!(grads.get(&w).map(|g| g.dims().to_vec()), Some(vec![4, 3, 3, 3]));
/// # Ok::<(), candle_core::Error>(())
/// ```
pub fn conv2d_bn_train(
    xs: &Tensor,
    w: &Tensor,
    padding: usize,
    stride: usize,
    bn: &BatchNorm,
    residual: Option<&Tensor>,
    relu: bool,
) -> Result<Tensor> {
    let geom = geometry(xs, w, padding, stride)?;
    let out_dims = check_bn("conv2d_bn_train", &geom, w, bn, residual)?;
    let dt = xs.dtype();
    let same = |t: &Tensor| t.dtype() == dt && t.device().same_device(xs.device());
    let mut args = vec![w, bn.running_mean(), bn.running_var()];
    if let Some((g, b)) = bn.weight_and_bias() {
        args.extend([g, b]);
    }
    args.extend(residual);
    if !fast_path(xs) || !args.iter().all(|t| same(t)) {
        return unfused(xs, w, padding, stride, bn, residual, relu, true);
    }
    let p = geom.p();
    let m = geom.b * p;
    if m < 2 {
        bail!(
            "conv2d_bn_train: training needs more than one value per channel, got an output of {out_dims:?}"
        );
    }
    // The kernel and [γ; β] travel as one flat argument (a custom op takes three at most).
    let gb = affine_params(bn, geom.c_out, xs)?;
    let wgb = Tensor::cat(&[&w.flatten_all()?, &gb.flatten_all()?], 0)?;
    let (bn_op, stats) = BnOp::train((geom.b, geom.c_out, p), relu, bn.eps());
    let op = ConvBnOp {
        geom,
        bn: bn_op,
        h: OnceLock::new(),
    };
    let xs = xs.contiguous()?;
    let ys = match residual {
        Some(r) => xs.apply_op3_arc(&wgb, &r.contiguous()?, Arc::new(Box::new(op)))?,
        None => xs.apply_op2_arc(&wgb, Arc::new(Box::new(op)))?,
    };
    update_running(bn, &stats)?;
    Ok(ys)
}

/// The training-mode convolution + batch norm of [`conv2d_bn_train`].
struct ConvBnOp {
    geom: ConvGeom,
    bn: BnOp,
    /// The convolution's output, kept for the backward pass.
    h: OnceLock<CpuStorage>,
}

type Grads3 = (Option<Tensor>, Option<Tensor>, Option<Tensor>);

impl ConvBnOp {
    fn out_shape(&self) -> Shape {
        let g = &self.geom;
        Shape::from((g.b, g.c_out, g.out_h, g.out_w))
    }

    fn fwd<T: WithDType>(&self, x: &[T], wgb: &[T], r: Option<&[T]>) -> Result<CpuStorage> {
        let (w, gb) = wgb.split_at(self.geom.c_out * self.geom.k());
        let h = conv_fwd(&self.geom, x, w, None);
        let ys = self.bn.fwd(&h, gb, r)?;
        // A fresh op runs its forward pass once; if it ran before, keep that output.
        let _ = self.h.set(T::to_cpu_storage_owned(h));
        Ok(T::to_cpu_storage_owned(ys))
    }

    fn fwd_any(
        &self,
        (s1, l1): (&CpuStorage, &Layout),
        (s2, l2): (&CpuStorage, &Layout),
        r: Option<(&CpuStorage, &Layout)>,
    ) -> Result<(CpuStorage, Shape)> {
        let out = match s1.dtype() {
            DType::F32 => self.fwd(
                slice::<f32>(s1, l1)?,
                slice::<f32>(s2, l2)?,
                r.map(|(s, l)| slice::<f32>(s, l)).transpose()?,
            )?,
            DType::F64 => self.fwd(
                slice::<f64>(s1, l1)?,
                slice::<f64>(s2, l2)?,
                r.map(|(s, l)| slice::<f64>(s, l)).transpose()?,
            )?,
            d => bail!("models-conv-bn: unsupported dtype {d:?}"),
        };
        Ok((out, self.out_shape()))
    }

    fn bwd_typed<T: WithDType>(
        &self,
        x: &Tensor,
        wgb: &Tensor,
        r: Option<&Tensor>,
        y: &Tensor,
        dy: &Tensor,
    ) -> Result<Grads3> {
        let (need_x, need_wgb) = (x.track_op(), wgb.track_op());
        let need_r = r.is_some_and(|r| r.track_op());
        if !need_x && !need_wgb && !need_r {
            return Ok((None, None, None));
        }
        let Some(h) = self.h.get() else {
            bail!("conv2d_bn_train: backward before forward")
        };
        let h = h.as_slice::<T>()?;
        let wlen = self.geom.c_out * self.geom.k();
        let (dx, dwgb, dr) = with_data::<T, _>(x, |xd| {
            with_data::<T, _>(wgb, |wgbd| {
                with_data::<T, _>(y, |yd| {
                    with_data::<T, _>(dy, |dyd| {
                        let (w, gb) = wgbd.split_at(wlen);
                        let need_dh = need_x || need_wgb;
                        let (dh, dgb, dr) = self.bn.bwd_slices(
                            h,
                            gb,
                            yd,
                            dyd,
                            r.is_some(),
                            (need_dh, need_wgb, need_r),
                        )?;
                        let (dx, dw) = match &dh {
                            Some(dh) => conv_bwd(&self.geom, xd, w, dh, need_x, need_wgb),
                            None => (None, None),
                        };
                        let dwgb = match (dw, dgb) {
                            (Some(mut dw), Some(dgb)) => {
                                dw.extend_from_slice(&dgb);
                                Some(dw)
                            }
                            _ => None,
                        };
                        Ok((dx, dwgb, dr))
                    })
                })
            })
        })?;
        let dx = dx
            .map(|v| Tensor::from_vec(v, x.shape(), x.device()))
            .transpose()?;
        let dwgb = dwgb
            .map(|v| Tensor::from_vec(v, wgb.shape(), wgb.device()))
            .transpose()?;
        let dr = match (dr, r) {
            (Some(v), Some(r)) => Some(Tensor::from_vec(v, r.shape(), r.device())?),
            _ => None,
        };
        Ok((dx, dwgb, dr))
    }

    fn bwd_any(
        &self,
        x: &Tensor,
        wgb: &Tensor,
        r: Option<&Tensor>,
        y: &Tensor,
        dy: &Tensor,
    ) -> Result<Grads3> {
        match x.dtype() {
            DType::F32 => self.bwd_typed::<f32>(x, wgb, r, y, dy),
            DType::F64 => self.bwd_typed::<f64>(x, wgb, r, y, dy),
            d => bail!("models-conv-bn: unsupported dtype {d:?}"),
        }
    }
}

impl CustomOp2 for ConvBnOp {
    fn name(&self) -> &'static str {
        "models-conv-bn"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        self.fwd_any((s1, l1), (s2, l2), None)
    }

    fn bwd(
        &self,
        x: &Tensor,
        wgb: &Tensor,
        res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let (dx, dwgb, _) = self.bwd_any(x, wgb, None, res, grad)?;
        Ok((dx, dwgb))
    }
}

impl CustomOp3 for ConvBnOp {
    fn name(&self) -> &'static str {
        "models-conv-bn-add-relu"
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
        self.fwd_any((s1, l1), (s2, l2), Some((s3, l3)))
    }

    fn bwd(
        &self,
        x: &Tensor,
        wgb: &Tensor,
        r: &Tensor,
        res: &Tensor,
        grad: &Tensor,
    ) -> Result<Grads3> {
        self.bwd_any(x, wgb, Some(r), res, grad)
    }
}

//! The optimizers Candle lacks: SGD with momentum, Nesterov and decoupled parameter groups; LARS; AdamW
//! with weight-decay exclusion. Plus global gradient norm and clipping.
//!
//! Parameter groups follow solo-learn: weight decay (and LARS's trust ratio) apply to parameters of rank
//! ≥ 2 (convolution and linear weights) and never to rank ≤ 1 ones (batch-norm weights and biases, linear
//! biases). Batch-norm running statistics are not parameters and are never handed to an optimizer.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};

use candle_core::backend::BackendStorage;
use candle_core::backprop::GradStore;
use candle_core::{bail, CpuStorage, DType, InplaceOp3, Layout, Tensor, Var, WithDType};
use candle_nn::VarMap;

use crate::config::{OptimConfig, OptimizerKind};
use crate::Result;

/// One trainable variable and its group.
#[derive(Debug, Clone)]
pub struct Param {
    /// Path in the `VarMap` (torchvision key).
    pub name: String,
    /// The variable.
    pub var: Var,
    /// Whether weight decay (and LARS adaptation) applies: rank ≥ 2.
    pub decay: bool,
}

/// The trainable variables of `varmap` whose path starts with one of `prefixes` ("" for all), sorted by
/// path, without batch-norm running statistics.
pub fn trainable_params(varmap: &VarMap, prefixes: &[&str]) -> Vec<Param> {
    let data = varmap.data().lock().unwrap_or_else(|e| e.into_inner());
    let mut params: Vec<Param> = data
        .iter()
        .filter(|(name, _)| !models::is_batch_norm_buffer(name))
        .filter(|(name, _)| prefixes.iter().any(|p| name.starts_with(p)))
        .map(|(name, var)| Param {
            name: name.clone(),
            var: var.clone(),
            decay: var.rank() >= 2,
        })
        .collect();
    params.sort_by(|a, b| a.name.cmp(&b.name));
    params
}

/// The L2 norm of all gradients of `params` together.
pub fn grad_norm(params: &[Param], grads: &GradStore) -> Result<f64> {
    let mut sq = 0.0f64;
    for p in params {
        if let Some(g) = grads.get(p.var.as_tensor()) {
            sq += g
                .sqr()?
                .sum_all()?
                .to_dtype(candle_core::DType::F64)?
                .to_scalar::<f64>()?;
        }
    }
    Ok(sq.sqrt())
}

/// An optimizer over a fixed set of [`Param`]s; its state can be saved and restored.
#[derive(Debug)]
pub struct Optimizer {
    kind: OptimizerKind,
    momentum: f64,
    nesterov: bool,
    weight_decay: f64,
    lars_eta: f64,
    params: Vec<Param>,
    /// Per parameter: momentum buffer (SGD, LARS) or first moment (AdamW).
    first: Vec<Option<Tensor>>,
    /// Per parameter: second moment (AdamW).
    second: Vec<Option<Tensor>>,
    /// Per parameter: whether `first` may be shared with a tensor outside the optimizer (so it must
    /// be copied before an in-place update).
    lent: Vec<AtomicBool>,
    steps: usize,
}

const ADAM_BETA2: f64 = 0.999;
const ADAM_EPS: f64 = 1e-8;
const LARS_EPS: f64 = 1e-8;

impl Optimizer {
    /// An optimizer of kind `cfg.optimizer` over `params`.
    pub fn new(params: Vec<Param>, cfg: &OptimConfig) -> Self {
        let n = params.len();
        Self {
            kind: cfg.optimizer,
            momentum: cfg.momentum,
            nesterov: cfg.nesterov,
            weight_decay: cfg.weight_decay,
            lars_eta: cfg.lars_eta,
            params,
            first: vec![None; n],
            second: vec![None; n],
            lent: (0..n).map(|_| AtomicBool::new(false)).collect(),
            steps: 0,
        }
    }

    /// The parameters this optimizer updates.
    pub fn params(&self) -> &[Param] {
        &self.params
    }

    /// Steps taken so far.
    pub fn steps(&self) -> usize {
        self.steps
    }

    /// One update with learning rate `lr`; gradients are multiplied by `grad_scale` first (clipping).
    ///
    /// The gradients are detached first, so that no optimizer state keeps the step's graph (and
    /// its activations) alive. SGD and LARS on CPU `f32`/`f64` update the momentum buffer and the
    /// weights in place, in one fused pass each (`SgdMomentum`, `SgdApply`); other devices
    /// and dtypes use the same formula in tensor ops.
    pub fn step(&mut self, grads: &GradStore, lr: f64, grad_scale: f64) -> Result<()> {
        self.steps += 1;
        for i in 0..self.params.len() {
            let p = &self.params[i];
            let Some(g) = grads.get(p.var.as_tensor()) else {
                continue;
            };
            let g = g.detach();
            let w = p.var.as_tensor();
            match self.kind {
                OptimizerKind::Sgd | OptimizerKind::Lars => {
                    let decay = if p.decay { self.weight_decay } else { 0.0 };
                    let mut trust = 1.0;
                    if self.kind == OptimizerKind::Lars && p.decay {
                        let w_norm = l2_norm(w)?;
                        let g_norm = l2_norm(&g)? * grad_scale.abs();
                        if w_norm > 0.0 && g_norm > 0.0 {
                            trust = self.lars_eta * w_norm
                                / (g_norm + w_norm * self.weight_decay + LARS_EPS);
                        }
                    }
                    let upd = SgdUpdate {
                        grad_scale,
                        decay,
                        trust,
                        momentum: self.momentum,
                        nesterov: self.nesterov,
                        lr,
                    };
                    if fused_ok(w, &g) && self.first[i].as_ref().is_none_or(|b| fused_ok(w, b)) {
                        let g = g.contiguous()?;
                        if self.momentum > 0.0 {
                            // A buffer handed out by `state_tensors` or taken in by `load_state`
                            // may be shared: copy it before writing to it.
                            let buf = match self.first[i].take() {
                                Some(b) if self.lent[i].swap(false, Ordering::Relaxed) => {
                                    b.copy()?
                                }
                                Some(b) => b,
                                None => w.zeros_like()?,
                            };
                            buf.inplace_op3(&g, w, &SgdMomentum(upd))?;
                            w.inplace_op3(&g, &buf, &SgdApply(upd))?;
                            self.first[i] = Some(buf);
                        } else {
                            w.inplace_op3(&g, &g, &SgdApply(upd))?;
                        }
                    } else {
                        let d = upd.tensor_step(w, &g, &mut self.first[i])?;
                        p.var.set(&(w - (d * lr)?)?)?;
                    }
                }
                OptimizerKind::Adamw => {
                    let g = if grad_scale != 1.0 {
                        (g * grad_scale)?
                    } else {
                        g
                    };
                    let b1 = self.momentum;
                    let m = match &self.first[i] {
                        Some(m) => ((m * b1)? + (&g * (1.0 - b1))?)?,
                        None => (&g * (1.0 - b1))?,
                    };
                    let v = match &self.second[i] {
                        Some(v) => ((v * ADAM_BETA2)? + (g.sqr()? * (1.0 - ADAM_BETA2))?)?,
                        None => (g.sqr()? * (1.0 - ADAM_BETA2))?,
                    };
                    let t = self.steps as i32;
                    let m_hat = (&m / (1.0 - b1.powi(t)))?;
                    let v_hat = (&v / (1.0 - ADAM_BETA2.powi(t)))?;
                    let mut w_new = if p.decay && self.weight_decay > 0.0 {
                        (w * (1.0 - lr * self.weight_decay))?
                    } else {
                        w.clone()
                    };
                    w_new = (w_new - ((m_hat / (v_hat.sqrt()? + ADAM_EPS)?)? * lr)?)?;
                    p.var.set(&w_new)?;
                    self.first[i] = Some(m);
                    self.second[i] = Some(v);
                }
            }
        }
        Ok(())
    }

    /// The optimizer state as named tensors (`optimizer.first.<param>`, `optimizer.second.<param>`),
    /// for a checkpoint.
    ///
    /// The tensors handed out are never changed afterwards: the next step copies a lent momentum
    /// buffer before updating it in place.
    pub fn state_tensors(&self) -> Vec<(String, Tensor)> {
        let mut out = Vec::new();
        for (i, p) in self.params.iter().enumerate() {
            if let Some(t) = &self.first[i] {
                self.lent[i].store(true, Ordering::Relaxed);
                out.push((format!("optimizer.first.{}", p.name), t.clone()));
            }
            if let Some(t) = &self.second[i] {
                out.push((format!("optimizer.second.{}", p.name), t.clone()));
            }
        }
        out
    }

    /// Restores the state written by [`Optimizer::state_tensors`] and the step count.
    pub fn load_state(&mut self, tensors: &HashMap<String, Tensor>, steps: usize) -> Result<()> {
        for (i, p) in self.params.iter().enumerate() {
            for (slot, kind) in [
                (&mut self.first[i], "first"),
                (&mut self.second[i], "second"),
            ] {
                if let Some(t) = tensors.get(&format!("optimizer.{kind}.{}", p.name)) {
                    if t.dims() != p.var.dims() {
                        return Err(crate::Error::Checkpoint(format!(
                            "optimizer state for `{}` has shape {:?}, the parameter has {:?}",
                            p.name,
                            t.dims(),
                            p.var.dims()
                        )));
                    }
                    *slot = Some(t.to_device(p.var.device())?.to_dtype(p.var.dtype())?);
                    self.lent[i].store(true, Ordering::Relaxed);
                }
            }
        }
        self.steps = steps;
        Ok(())
    }
}

/// `sqrt(Σ t²)` of a whole tensor, in `f64`.
fn l2_norm(t: &Tensor) -> candle_core::Result<f64> {
    t.sqr()?
        .sum_all()?
        .sqrt()?
        .to_dtype(DType::F64)?
        .to_scalar::<f64>()
}

/// Whether the fused in-place update applies: CPU tensors of one float dtype and shape.
fn fused_ok(w: &Tensor, t: &Tensor) -> bool {
    w.device().is_cpu()
        && t.device().is_cpu()
        && matches!(w.dtype(), DType::F32 | DType::F64)
        && t.dtype() == w.dtype()
        && t.dims() == w.dims()
        && w.is_contiguous()
}

/// One SGD/LARS update of one parameter (PyTorch's `torch.optim.SGD` formula):
/// `g' = trust · (grad_scale · g + decay · w)`, `buf = momentum · buf + g'`,
/// `d = g' + momentum · buf` (Nesterov) or `buf` (or `g'` without momentum), `w -= lr · d`.
#[derive(Debug, Clone, Copy)]
struct SgdUpdate {
    grad_scale: f64,
    /// Weight decay of this parameter (0 for rank ≤ 1 parameters).
    decay: f64,
    /// LARS's trust ratio (1 for SGD).
    trust: f64,
    momentum: f64,
    nesterov: bool,
    lr: f64,
}

impl SgdUpdate {
    /// `g'` of one element, in the order of the tensor formula.
    #[inline]
    fn grad<T: WithDType>(&self, g: T, w: T) -> T {
        let mut v = if self.grad_scale != 1.0 {
            g * T::from_f64(self.grad_scale)
        } else {
            g
        };
        if self.decay > 0.0 {
            v += w * T::from_f64(self.decay);
        }
        if self.trust != 1.0 {
            v *= T::from_f64(self.trust);
        }
        v
    }

    /// The direction `d` in tensor ops (devices and dtypes without the fused path); updates the
    /// momentum buffer `buf`.
    fn tensor_step(&self, w: &Tensor, g: &Tensor, buf: &mut Option<Tensor>) -> Result<Tensor> {
        let mut g = if self.grad_scale != 1.0 {
            (g * self.grad_scale)?
        } else {
            g.clone()
        };
        if self.decay > 0.0 {
            g = (g + (w * self.decay)?)?;
        }
        if self.trust != 1.0 {
            g = (g * self.trust)?;
        }
        if self.momentum <= 0.0 {
            return Ok(g);
        }
        let b = match buf.as_ref() {
            Some(b) => ((b * self.momentum)? + &g)?,
            None => g.clone(),
        };
        let d = if self.nesterov {
            (&g + (&b * self.momentum)?)?
        } else {
            b.clone()
        };
        *buf = Some(b);
        Ok(d)
    }
}

/// The contiguous `T` data of a CPU storage.
fn data<'a, T: WithDType>(s: &'a CpuStorage, l: &Layout) -> candle_core::Result<&'a [T]> {
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&s.as_slice::<T>()?[a..b]),
        None => bail!("optimizer: expected a contiguous tensor"),
    }
}

/// The contiguous range of a layout.
fn range(l: &Layout) -> candle_core::Result<std::ops::Range<usize>> {
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(a..b),
        None => bail!("optimizer: expected a contiguous tensor"),
    }
}

/// In place on the momentum buffer, from `(g, w)`: `buf = momentum · buf + g'`.
struct SgdMomentum(SgdUpdate);

/// In place on the weights, from `(g, buf)`: `w -= lr · d`.
struct SgdApply(SgdUpdate);

impl SgdMomentum {
    fn run<T: WithDType>(&self, buf: &mut [T], g: &[T], w: &[T]) {
        let u = &self.0;
        let m = T::from_f64(u.momentum);
        for ((b, &gv), &wv) in buf.iter_mut().zip(g).zip(w) {
            *b = *b * m + u.grad(gv, wv);
        }
    }
}

impl SgdApply {
    fn run<T: WithDType>(&self, w: &mut [T], g: &[T], buf: &[T]) {
        let u = &self.0;
        let (m, lr) = (T::from_f64(u.momentum), T::from_f64(u.lr));
        for ((wv, &gv), &bv) in w.iter_mut().zip(g).zip(buf) {
            let d = if u.momentum <= 0.0 {
                u.grad(gv, *wv)
            } else if u.nesterov {
                u.grad(gv, *wv) + bv * m
            } else {
                bv
            };
            *wv -= d * lr;
        }
    }
}

/// Checks the three slices have one length.
fn same_len(a: usize, b: usize, c: usize) -> candle_core::Result<()> {
    if a != b || a != c {
        bail!("optimizer: parameter, gradient and momentum sizes differ ({a}, {b}, {c})")
    }
    Ok(())
}

macro_rules! sgd_inplace_op {
    ($op:ty, $name:literal) => {
        impl InplaceOp3 for $op {
            fn name(&self) -> &'static str {
                $name
            }

            fn cpu_fwd(
                &self,
                s1: &mut CpuStorage,
                l1: &Layout,
                s2: &CpuStorage,
                l2: &Layout,
                s3: &CpuStorage,
                l3: &Layout,
            ) -> candle_core::Result<()> {
                let r = range(l1)?;
                match s1 {
                    CpuStorage::F32(a) => {
                        let (b, c) = (data::<f32>(s2, l2)?, data::<f32>(s3, l3)?);
                        same_len(r.len(), b.len(), c.len())?;
                        self.run(&mut a[r], b, c);
                    }
                    CpuStorage::F64(a) => {
                        let (b, c) = (data::<f64>(s2, l2)?, data::<f64>(s3, l3)?);
                        same_len(r.len(), b.len(), c.len())?;
                        self.run(&mut a[r], b, c);
                    }
                    other => bail!("{}: unsupported dtype {:?}", $name, other.dtype()),
                }
                Ok(())
            }
        }
    };
}

sgd_inplace_op!(SgdMomentum, "sgd-momentum");
sgd_inplace_op!(SgdApply, "sgd-apply");

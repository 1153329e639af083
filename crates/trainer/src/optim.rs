//! The optimizers Candle lacks: SGD with momentum, Nesterov and decoupled parameter groups; LARS; AdamW
//! with weight-decay exclusion. Plus global gradient norm and clipping.
//!
//! Parameter groups follow solo-learn: weight decay (and LARS's trust ratio) apply to parameters of rank
//! ≥ 2 (convolution and linear weights) and never to rank ≤ 1 ones (batch-norm weights and biases, linear
//! biases). Batch-norm running statistics are not parameters and are never handed to an optimizer.

use std::collections::HashMap;

use candle_core::backprop::GradStore;
use candle_core::{Tensor, Var};
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
    pub fn step(&mut self, grads: &GradStore, lr: f64, grad_scale: f64) -> Result<()> {
        self.steps += 1;
        for i in 0..self.params.len() {
            let p = &self.params[i];
            let Some(g) = grads.get(p.var.as_tensor()) else {
                continue;
            };
            let mut g = if grad_scale != 1.0 {
                (g * grad_scale)?
            } else {
                g.clone()
            };
            let w = p.var.as_tensor();
            match self.kind {
                OptimizerKind::Sgd | OptimizerKind::Lars => {
                    if p.decay && self.weight_decay > 0.0 {
                        g = (g + (w * self.weight_decay)?)?;
                    }
                    if self.kind == OptimizerKind::Lars && p.decay {
                        let w_norm = w
                            .sqr()?
                            .sum_all()?
                            .sqrt()?
                            .to_dtype(candle_core::DType::F64)?
                            .to_scalar::<f64>()?;
                        let g_raw = grads.get(w).map(|t| t * grad_scale).transpose()?;
                        let g_norm = match g_raw {
                            Some(t) => t
                                .sqr()?
                                .sum_all()?
                                .sqrt()?
                                .to_dtype(candle_core::DType::F64)?
                                .to_scalar::<f64>()?,
                            None => 0.0,
                        };
                        if w_norm > 0.0 && g_norm > 0.0 {
                            let trust = self.lars_eta * w_norm
                                / (g_norm + w_norm * self.weight_decay + LARS_EPS);
                            g = (g * trust)?;
                        }
                    }
                    let d = if self.momentum > 0.0 {
                        let buf = match &self.first[i] {
                            Some(b) => ((b * self.momentum)? + &g)?,
                            None => g.clone(),
                        };
                        let d = if self.nesterov {
                            (&g + (&buf * self.momentum)?)?
                        } else {
                            buf.clone()
                        };
                        self.first[i] = Some(buf);
                        d
                    } else {
                        g
                    };
                    p.var.set(&(w - (d * lr)?)?)?;
                }
                OptimizerKind::Adamw => {
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
    pub fn state_tensors(&self) -> Vec<(String, Tensor)> {
        let mut out = Vec::new();
        for (i, p) in self.params.iter().enumerate() {
            if let Some(t) = &self.first[i] {
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
                }
            }
        }
        self.steps = steps;
        Ok(())
    }
}

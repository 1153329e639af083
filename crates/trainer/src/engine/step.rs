//! One optimisation step: the objective's loss, its gradients, the non-finite checks, gradient
//! clipping and the optimizer's update. [`descend`] is the only place in the workspace that calls
//! `backward` and an optimizer step: the engine's steps, the linear probe and the benchmarks all
//! go through it.

use candle_core::Tensor;

use crate::config::OptimConfig;
use crate::net::Net;
use crate::objective::{Batch, Objective};
use crate::optim::{grad_norm, Optimizer};
use crate::schedule::learning_rate;
use crate::{Error, Result};

/// What one step measured.
#[derive(Debug, Clone)]
pub struct StepStats {
    /// Each loss part's value (the first is the total).
    pub values: Vec<(&'static str, f64)>,
    /// The global gradient norm before clipping.
    pub grad_norm: f64,
    /// The learning rate of the update.
    pub lr: f64,
}

/// Where a step happens, for error messages.
#[derive(Debug, Clone, Copy)]
pub struct StepAt<'a> {
    /// The phase (`teacher`, `student`).
    pub phase: &'a str,
    /// The epoch of the step.
    pub epoch: usize,
}

pub(crate) fn scalar(t: &Tensor) -> Result<f64> {
    Ok(t.to_dtype(candle_core::DType::F64)?.to_scalar::<f64>()?)
}

/// One step of `objective` on `batch`: loss, backward, gradient norm, clipping to
/// `cfg.grad_clip`, and the update at the schedule's learning rate for the optimizer's step count.
///
/// A non-finite loss part or gradient norm is an [`Error::NonFinite`] naming the step, and no
/// update is made.
pub fn train_step(
    net: &Net,
    objective: &dyn Objective,
    batch: &Batch,
    optim: &mut Optimizer,
    cfg: &OptimConfig,
    steps_per_epoch: usize,
    at: StepAt,
) -> Result<StepStats> {
    let parts = objective.loss(net, batch)?;
    let step = optim.steps();
    let non_finite = |part: String, value: f64| Error::NonFinite {
        phase: at.phase.to_string(),
        step,
        epoch: at.epoch,
        part,
        value,
    };
    let mut values = Vec::with_capacity(parts.len());
    for (name, t) in &parts {
        let v = scalar(t)?;
        if !v.is_finite() {
            return Err(non_finite(format!("`{name}` loss"), v));
        }
        values.push((*name, v));
    }
    let lr = learning_rate(cfg, step, steps_per_epoch);
    let gnorm = descend(&parts[0].1, optim, lr, cfg.grad_clip, at)?;
    Ok(StepStats {
        values,
        grad_norm: gnorm,
        lr,
    })
}

/// The update half of a step: the gradients of `loss`, their global norm, clipping to
/// `grad_clip` (0: none) and the optimizer's update at `lr`. Returns the norm before clipping; a
/// non-finite norm is an [`Error::NonFinite`] and no update is made.
pub fn descend(
    loss: &Tensor,
    optim: &mut Optimizer,
    lr: f64,
    grad_clip: f64,
    at: StepAt,
) -> Result<f64> {
    let grads = loss.backward()?;
    let gnorm = grad_norm(optim.params(), &grads)?;
    if !gnorm.is_finite() {
        return Err(Error::NonFinite {
            phase: at.phase.to_string(),
            step: optim.steps(),
            epoch: at.epoch,
            part: "gradient norm".into(),
            value: gnorm,
        });
    }
    let scale = if grad_clip > 0.0 && gnorm > grad_clip {
        grad_clip / gnorm
    } else {
        1.0
    };
    optim.step(&grads, lr, scale)?;
    Ok(gnorm)
}

//! One optimisation step: the objective's loss, its gradients, the non-finite checks, gradient
//! clipping and the optimizer's update. [`descend`] is the only place in the workspace that calls
//! `backward` and an optimizer step: the engine's steps, the linear probe and the benchmarks all
//! go through it. In data-parallel training ([`crate::dist`]) the gradients are averaged over
//! the ranks between the backward pass and the update.

use candle_core::Tensor;

use crate::config::OptimConfig;
use crate::dist::{all_reduce_gradients, Collective, Single};
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
    /// Whether some rank asked to stop (Ctrl-C) before this step's update.
    pub interrupted: bool,
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
/// With several ranks (`world`), `batch` is this rank's shard: the gradients are averaged over
/// the ranks before the update, and the returned loss values are the means over the ranks (the
/// global batch's); `interrupted` (Ctrl-C on this rank) travels with the gradients, so every rank
/// sees the same [`StepStats::interrupted`] and stops at the same step.
///
/// A non-finite loss part or gradient norm is an [`Error::NonFinite`] naming the step, and no
/// update is made.
#[allow(clippy::too_many_arguments)]
pub fn train_step(
    net: &Net,
    objective: &dyn Objective,
    batch: &Batch,
    optim: &mut Optimizer,
    cfg: &OptimConfig,
    steps_per_epoch: usize,
    at: StepAt,
    world: &dyn Collective,
    interrupted: bool,
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
    let mut flags = vec![if interrupted { 1.0 } else { 0.0 }];
    flags.extend(values.iter().map(|(_, v)| *v as f32));
    let (gnorm, sums) = descend_shared(&parts[0].1, optim, lr, cfg.grad_clip, at, world, &flags)?;
    let w = world.world_size();
    if w > 1 {
        for ((_, v), s) in values.iter_mut().zip(&sums[1..]) {
            *v = f64::from(*s) / w as f64;
        }
    }
    Ok(StepStats {
        values,
        grad_norm: gnorm,
        lr,
        interrupted: sums[0] > 0.0,
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
    Ok(descend_shared(loss, optim, lr, grad_clip, at, &Single, &[])?.0)
}

/// [`descend`] on one rank of `world`: the gradients are averaged over the ranks (with `flags`
/// summed over the ranks in the same message) before the norm and the update. Returns the norm
/// and the summed flags.
pub fn descend_shared(
    loss: &Tensor,
    optim: &mut Optimizer,
    lr: f64,
    grad_clip: f64,
    at: StepAt,
    world: &dyn Collective,
    flags: &[f32],
) -> Result<(f64, Vec<f32>)> {
    let mut grads = loss.backward()?;
    let flags = all_reduce_gradients(world, optim.params(), &mut grads, flags)?;
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
    Ok((gnorm, flags))
}

//! Learning-rate schedules: linear warm-up, then cosine decay or steps.

use crate::config::{OptimConfig, ScheduleKind};

/// The learning rate at `step` (0-based) of a run of `steps_per_epoch × cfg.epochs` steps.
///
/// Warm-up: `lr · (step + 1) / warmup_steps` for the first `warmup_epochs · steps_per_epoch` steps.
/// Cosine: `lr · ½ (1 + cos(π · t))`, with `t` the fraction of the post-warm-up steps done.
/// Step: `lr · gamma^k`, with `k` the number of milestones at or before the current epoch.
/// Linear: `lr · (1 − t)`, `t` as for the cosine.
pub fn learning_rate(cfg: &OptimConfig, step: usize, steps_per_epoch: usize) -> f64 {
    let total = (cfg.epochs * steps_per_epoch).max(1);
    let warmup = ((cfg.warmup_epochs * steps_per_epoch as f64).round() as usize).min(total);
    if step < warmup {
        return cfg.lr * (step + 1) as f64 / warmup as f64;
    }
    match cfg.schedule {
        ScheduleKind::Cosine => {
            let t = (step - warmup) as f64 / (total - warmup).max(1) as f64;
            cfg.lr * 0.5 * (1.0 + (std::f64::consts::PI * t.min(1.0)).cos())
        }
        ScheduleKind::Linear => {
            let t = (step - warmup) as f64 / (total - warmup).max(1) as f64;
            cfg.lr * (1.0 - t.min(1.0))
        }
        ScheduleKind::Step => {
            let epoch = step / steps_per_epoch.max(1);
            let k = cfg.step_milestones.iter().filter(|&&m| m <= epoch).count();
            cfg.lr * cfg.step_gamma.powi(k as i32)
        }
    }
}

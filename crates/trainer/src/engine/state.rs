//! Where a phase stands, as its checkpoints record it and `--resume` restores it.
//!
//! `last.safetensors` holds the network's variables, the optimizer's state, the weight average
//! (`ema.`, when the phase keeps one) and, in its metadata,
//! the epoch and the batches done in it, the step, the best metric so far and the loss sums of a
//! partly done epoch: everything a resumed run needs to continue as the uninterrupted one would.

use std::collections::BTreeMap;
use std::path::Path;

use candle_core::{Device, Tensor};

use super::ema::Ema;
use crate::checkpoint::{self, meta, Checkpoint};
use crate::config::Config;
use crate::net::Net;
use crate::optim::Optimizer;
use crate::Result;

/// Metadata key: batches done in the checkpoint's epoch (0 at an epoch's end).
const BATCH: &str = "batch";
/// Metadata key: the loss sums of a partly done epoch (JSON list of `[name, sum]`).
const EPOCH_SUMS: &str = "epoch_sums";
/// Metadata key: steps summed in [`EPOCH_SUMS`].
const EPOCH_COUNT: &str = "epoch_count";
/// Metadata key: updates of the weight average (`ema.` tensors).
const EMA_UPDATES: &str = "ema_updates";
/// Metadata key: the phase's training wall time so far, seconds ([`Trained::seconds`]).
const TRAIN_SECONDS: &str = "train_seconds";
/// Metadata key: training images the phase has stepped through so far ([`Trained::images`]).
const TRAIN_IMAGES: &str = "train_images";

/// What a phase has cost so far, over every run that trained it (a resumed phase reports its
/// whole training, not only the last run's; 0 in checkpoints written before this was recorded).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Trained {
    /// Wall time, seconds (training with its epoch evaluations and checkpoints).
    pub seconds: f64,
    /// Training images stepped through.
    pub images: usize,
}

/// The running sums of an epoch's loss parts.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EpochSums {
    /// Per loss part, the sum of its values.
    pub sums: Vec<(String, f64)>,
    /// Steps summed.
    pub count: usize,
}

impl EpochSums {
    /// Adds one step's values.
    pub fn add(&mut self, values: &[(&'static str, f64)]) {
        if self.sums.is_empty() {
            self.sums = values.iter().map(|(n, _)| (n.to_string(), 0.0)).collect();
        }
        for (s, (_, v)) in self.sums.iter_mut().zip(values) {
            s.1 += v;
        }
        self.count += 1;
    }

    /// Per loss part, the mean over the steps.
    pub fn means(&self) -> impl Iterator<Item = (&str, f64)> {
        let n = self.count.max(1) as f64;
        self.sums.iter().map(move |(k, s)| (k.as_str(), s / n))
    }
}

/// A phase's position: where training continues from.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainState {
    /// The epoch in progress (or the next one, at an epoch's end).
    pub epoch: usize,
    /// Batches of `epoch` already done.
    pub batch: usize,
    /// The best epoch metric so far.
    pub best: f64,
    /// The loss sums of the batches already done in `epoch`.
    pub sums: EpochSums,
    /// Time and images spent on the phase up to this state.
    pub trained: Trained,
}

impl TrainState {
    /// The start of training.
    pub fn start() -> Self {
        Self {
            epoch: 0,
            batch: 0,
            best: f64::NEG_INFINITY,
            sums: EpochSums::default(),
            trained: Trained::default(),
        }
    }

    /// The state `last` records, with the network's variables, the optimizer's state and the
    /// weight average loaded from it.
    pub fn restore(
        last: &Path,
        net: &Net,
        optim: &mut Optimizer,
        ema: Option<&mut Ema>,
        device: &Device,
    ) -> Result<Self> {
        let ckpt = Checkpoint::load(last, device)?;
        checkpoint::load_into_varmap(&net.varmap, &ckpt, "", last, &net.arch)?;
        optim.load_state(&ckpt.tensors, ckpt.meta(meta::STEP).unwrap_or(0))?;
        if let Some(ema) = ema {
            ema.restore(&ckpt.tensors, ckpt.meta(EMA_UPDATES).unwrap_or(0))?;
        }
        let batch = ckpt.meta(BATCH).unwrap_or(0);
        let sums = if batch > 0 {
            EpochSums {
                sums: ckpt
                    .metadata
                    .get(EPOCH_SUMS)
                    .and_then(|t| serde_json::from_str(t).ok())
                    .unwrap_or_default(),
                count: ckpt.meta(EPOCH_COUNT).unwrap_or(0),
            }
        } else {
            EpochSums::default()
        };
        Ok(Self {
            epoch: ckpt.meta(meta::EPOCH).unwrap_or(0),
            batch,
            best: ckpt.meta(meta::BEST).unwrap_or(f64::NEG_INFINITY),
            sums,
            trained: Trained {
                seconds: ckpt.meta(TRAIN_SECONDS).unwrap_or(0.0),
                images: ckpt.meta(TRAIN_IMAGES).unwrap_or(0),
            },
        })
    }

    /// The checkpoint metadata of this state after `steps` optimizer steps.
    fn metadata(&self, steps: usize) -> Vec<(&'static str, String)> {
        let mut md = vec![
            (meta::EPOCH, self.epoch.to_string()),
            (BATCH, self.batch.to_string()),
            (meta::STEP, steps.to_string()),
            (meta::BEST, self.best.to_string()),
            (TRAIN_SECONDS, self.trained.seconds.to_string()),
            (TRAIN_IMAGES, self.trained.images.to_string()),
        ];
        if self.batch > 0 {
            md.push((
                EPOCH_SUMS,
                serde_json::to_string(&self.sums.sums).unwrap_or_default(),
            ));
            md.push((EPOCH_COUNT, self.sums.count.to_string()));
        }
        md
    }

    /// Writes the trained `net` at this state to `path` (atomically) with what a resume needs:
    /// the optimizer's state and the weight average (a `last` checkpoint).
    pub fn save_last(
        &self,
        path: &Path,
        net: &Net,
        optim: &Optimizer,
        ema: Option<&Ema>,
        cfg: &Config,
        role: &str,
    ) -> Result<()> {
        let mut md = self.metadata(optim.steps());
        let mut extra = optim.state_tensors();
        if let Some(e) = ema {
            md.push((EMA_UPDATES, e.updates().to_string()));
            extra.extend(e.tensors());
        }
        save_net(path, net, extra, optim.steps(), &md, cfg, role)
    }

    /// Writes the network a phase keeps (the trained one, or its weight average) at this state to
    /// `path` (atomically), without optimizer state (a `best` checkpoint).
    pub fn save_model(
        &self,
        path: &Path,
        net: &Net,
        steps: usize,
        cfg: &Config,
        role: &str,
    ) -> Result<()> {
        save_net(path, net, vec![], steps, &self.metadata(steps), cfg, role)
    }
}

/// Writes `net` (with `num_batches_tracked` = `steps`) and the `tensors` beside it to `path` with
/// the standard metadata (architecture, classes, role, the configuration) plus `extra`.
pub fn save_net(
    path: &Path,
    net: &Net,
    tensors: Vec<(String, Tensor)>,
    steps: usize,
    extra: &[(&str, String)],
    cfg: &Config,
    role: &str,
) -> Result<()> {
    let mut all = checkpoint::varmap_tensors(&net.varmap, steps);
    all.extend(tensors);
    let tensors = all;
    let mut md = BTreeMap::new();
    md.insert(meta::ARCH.to_string(), net.arch.clone());
    md.insert(meta::NUM_CLASSES.to_string(), net.num_classes.to_string());
    md.insert(meta::ROLE.to_string(), role.to_string());
    md.insert(meta::CONFIG.to_string(), cfg.to_toml()?);
    for (k, v) in extra {
        md.insert(k.to_string(), v.clone());
    }
    checkpoint::save(path, &tensors, &md)
}

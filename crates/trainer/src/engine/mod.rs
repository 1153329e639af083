//! The training engine: the one loop every phase of every command, and the study, trains through.
//!
//! [`Engine::fit`] trains a [`Net`] on an [`Objective`] for the epochs of an [`OptimConfig`]:
//!
//! 1. **Batches in a seeded order.** The order of the training images in epoch `e` is a ChaCha8
//!    shuffle seeded by `(seed ^ salt, e)`; the last incomplete batch is dropped. Each
//!    augmentation is drawn from `(seed ^ salt, e, image, view)` on a prefetch thread.
//! 2. **Steps** ([`step::train_step`]): the objective's loss parts, backward, the gradient norm,
//!    non-finite checks (a NaN or infinite loss or gradient stops the run naming the step and the
//!    part), clipping, the optimizer's update at the schedule's learning rate.
//! 3. **Metrics and progress**: a `metrics.jsonl` line every `log_every` steps and per epoch
//!    (each loss part, lr, gradient norm, throughput, the epoch metric); a progress bar, or plain
//!    lines with `--quiet`.
//! 4. **Checkpoints** ([`state`]): `last.safetensors` at every epoch's end, every
//!    `checkpoint_every` steps and on Ctrl-C; `best.safetensors`, the network the phase keeps,
//!    when the epoch metric improves (`eval.keep = "best"`) or at every epoch's end (`"last"`);
//!    with a weight average (`ema_decay`) that is the average. Weights that are no longer finite are
//!    never written.
//! 5. **Resume**: from `last`, also mid-epoch: the resumed run sees exactly the batches, views and
//!    updates of the uninterrupted one, so it ends with the same weights and metrics.
//!
//! 6. **Ranks** ([`crate::dist`]): with several processes each rank trains on its shard of
//!    every global batch (its views are those the single process would draw), the gradients are
//!    averaged over the ranks, and rank 0 alone evaluates and writes metrics, checkpoints and
//!    progress. `sync_bn` normalises with the statistics of the global batch.
//!
//! What differs between phases is the [`Objective`] (see [`crate::objective`]).

pub mod ema;
pub mod progress;
pub mod state;
pub mod step;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use candle_core::{Device, Tensor};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use serde_json::json;

use crate::config::{Config, Keep, OptimConfig};
use crate::data::Split;
use crate::dist::{World, WorldSums};
use crate::eval::Evaluator;
use crate::metrics::{retain_metrics, MetricsLog};
use crate::net::Net;
use crate::objective::{Batch, Objective};
use crate::optim::{trainable_params, Optimizer};
use crate::schedule::learning_rate;
use crate::{Error, Result};

use ema::Ema;
use progress::Progress;
use state::{TrainState, Trained};
use step::{scalar, StepAt};

/// What every phase shares: the configuration, the device, the data, Ctrl-C.
pub struct Ctx<'a> {
    /// The resolved configuration.
    pub cfg: &'a Config,
    /// Where tensors live.
    pub device: Device,
    /// The data.
    pub split: &'a Split,
    /// The training images, shared with the augmentation thread.
    pub train_images: Arc<Vec<u8>>,
    /// Set by Ctrl-C: stop after writing a checkpoint.
    pub interrupt: &'a AtomicBool,
    /// The processes of the job ([`crate::dist::world`]).
    pub world: World,
}

impl<'a> Ctx<'a> {
    /// The context of `cfg` on `split`, opening `cfg.device`.
    pub fn new(cfg: &'a Config, split: &'a Split, interrupt: &'a AtomicBool) -> Result<Self> {
        Ok(Self {
            cfg,
            device: crate::device::open_device(&cfg.device)?,
            split,
            train_images: Arc::new(split.train.images.clone()),
            interrupt,
            world: crate::dist::world(),
        })
    }

    /// The same context with another configuration (a phase's variant of the run's).
    pub fn with_config<'b>(&'b self, cfg: &'b Config) -> Ctx<'b> {
        Ctx {
            cfg,
            device: self.device.clone(),
            split: self.split,
            train_images: self.train_images.clone(),
            interrupt: self.interrupt,
            world: self.world.clone(),
        }
    }

    /// The evaluator of this run's data and settings.
    pub fn evaluator(&self) -> Result<Evaluator<'_>> {
        Evaluator::new(
            self.split,
            &self.cfg.eval,
            self.cfg.data.image_size,
            self.cfg.seed,
            &self.device,
        )
    }

    /// Whether this process writes the run's files and messages: rank 0 (the only one of a
    /// single process).
    pub fn is_root(&self) -> bool {
        self.world.rank() == 0
    }

    /// Prints a line (stdout when quiet, else stderr beside the progress bars); rank 0 only.
    pub fn say(&self, line: &str) {
        if !self.is_root() {
            return;
        }
        if self.cfg.quiet {
            println!("{line}");
        } else {
            eprintln!("{line}");
        }
    }
}

/// The result of one phase.
#[derive(Debug, Clone)]
pub struct PhaseOutcome {
    /// The phase folder.
    pub dir: PathBuf,
    /// `best.safetensors` (by the phase's epoch metric) or `last` when there was no evaluation.
    pub best: PathBuf,
    /// Per epoch (trained by this call): the `metrics.jsonl` epoch record.
    pub history: Vec<serde_json::Value>,
    /// Wall time of the training, seconds, over every run of the phase (see [`state::Trained`]).
    pub seconds: f64,
    /// Training throughput, images per second (over the same runs).
    pub images_per_second: f64,
}

/// A training phase: its name (`teacher`, `student`; the `phase` of its metrics and messages),
/// its seed salt, its optimisation, its folder.
#[derive(Debug, Clone, Copy)]
pub struct Phase<'a> {
    /// Name of the phase.
    pub name: &'static str,
    /// XORed into the run's seed for the batch order and the augmentations.
    pub salt: u64,
    /// Epochs, batch size, optimizer, schedule.
    pub optim: &'a OptimConfig,
    /// Where `last`, `best` and `metrics.jsonl` go.
    pub dir: &'a Path,
    /// Continue from `dir/last.safetensors` when it exists.
    pub resume: bool,
}

/// The batches of epoch `epoch`: a ChaCha8 shuffle of `0..n` seeded by `(seed, epoch)`, cut into
/// full batches of `batch` images.
pub fn shuffled_batches(n: usize, batch: usize, seed: u64, epoch: usize) -> Vec<Vec<usize>> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed ^ ((epoch as u64 + 1) << 32));
    let mut order: Vec<usize> = (0..n).collect();
    order.shuffle(&mut rng);
    order.chunks_exact(batch).map(<[usize]>::to_vec).collect()
}

/// The first variable of `net` that holds a NaN or an infinity, if any (an update that blew up).
fn non_finite_variable(net: &Net) -> Result<Option<(String, f64)>> {
    let data = net.varmap.data().lock().unwrap_or_else(|e| e.into_inner());
    let mut names: Vec<&String> = data.keys().collect();
    names.sort();
    for name in names {
        // A sum is finite exactly when every element is (short of overflowing 3.4e38).
        let sum = scalar(&data[name].as_tensor().sum_all()?)?;
        if !sum.is_finite() {
            return Ok(Some((name.clone(), sum)));
        }
    }
    Ok(None)
}

/// Refuses to write a checkpoint of weights that are no longer finite: the last good one is kept.
fn check_finite(net: &Net, phase: &str, step: usize, epoch: usize) -> Result<()> {
    match non_finite_variable(net)? {
        None => Ok(()),
        Some((name, value)) => Err(Error::NonFinite {
            phase: phase.to_string(),
            step,
            epoch,
            part: format!("sum of the weights after the update (`{name}`)"),
            value,
        }),
    }
}

/// Whether some rank was interrupted (Ctrl-C) by the end of an epoch: every rank calls this at
/// every epoch's end and gets the same answer.
fn interrupted_at_epoch_end(ctx: &Ctx) -> Result<bool> {
    let mut flag = [if ctx.interrupt.load(Ordering::SeqCst) {
        1f32
    } else {
        0.0
    }];
    ctx.world.all_reduce_f32(&mut flag)?;
    Ok(flag[0] > 0.0)
}

/// The training engine of a run (see the module docs).
pub struct Engine<'c, 'a> {
    ctx: &'c Ctx<'a>,
}

impl<'c, 'a> Engine<'c, 'a> {
    /// The engine of `ctx`'s run.
    pub fn new(ctx: &'c Ctx<'a>) -> Self {
        Self { ctx }
    }

    /// Where training starts: the restored state of `last` when resuming (trimming
    /// `metrics.jsonl` to it), else the beginning (removing an old `metrics.jsonl`).
    fn start(
        &self,
        net: &Net,
        optim: &mut Optimizer,
        ema: Option<&mut Ema>,
        phase: &Phase,
    ) -> Result<TrainState> {
        let last = phase.dir.join("last.safetensors");
        let metrics_path = phase.dir.join("metrics.jsonl");
        if !(phase.resume && last.exists()) {
            if metrics_path.exists() && self.ctx.is_root() {
                std::fs::remove_file(&metrics_path)
                    .map_err(|e| Error::Io(metrics_path.clone(), e))?;
            }
            return Ok(TrainState::start());
        }
        let state = TrainState::restore(&last, net, optim, ema, &self.ctx.device)?;
        let steps = optim.steps();
        if !self.ctx.is_root() {
            return Ok(state);
        }
        let warning = retain_metrics(&metrics_path, |r| match r["kind"].as_str() {
            Some("step") => r["step"].as_u64().is_some_and(|s| (s as usize) <= steps),
            Some("epoch") => r["epoch"]
                .as_u64()
                .is_some_and(|e| (e as usize) < state.epoch),
            _ => false,
        })?;
        if let Some(w) = warning {
            self.ctx.say(&format!("warning: {w}"));
        }
        self.ctx.say(&format!(
            "{}: resuming from {} (epoch {}, batch {}, step {steps})",
            phase.name,
            last.display(),
            state.epoch,
            state.batch
        ));
        Ok(state)
    }

    /// Trains `net` on `objective` through `phase` (see the module docs).
    pub fn fit(&self, net: &Net, objective: &dyn Objective, phase: Phase) -> Result<PhaseOutcome> {
        let ctx = self.ctx;
        let cfg = ctx.cfg;
        let dir = phase.dir;
        std::fs::create_dir_all(dir).map_err(|e| Error::Io(dir.to_path_buf(), e))?;
        let train = &ctx.split.train;
        let bs = phase.optim.batch_size;
        if bs > train.len() {
            return Err(Error::Config(format!(
                "{}: batch size {bs} is larger than the training set ({} images); lower --batch-size",
                phase.name,
                train.len()
            )));
        }
        let steps_per_epoch = train.len() / bs;
        let world = &ctx.world;
        let (rank, ranks, root) = (world.rank(), world.world_size(), ctx.is_root());
        if bs % ranks != 0 {
            return Err(Error::Config(format!(
                "{}: batch size {bs} cannot be split over {ranks} processes; choose a batch size divisible by {ranks}",
                phase.name
            )));
        }
        // Synchronised batch norm for this phase's training steps (dropped when it returns).
        let _sync_bn = if cfg.sync_bn && ranks > 1 {
            if !models::ops::sync_supported(&ctx.device, candle_core::DType::F32) {
                return Err(Error::Config(format!(
                    "--sync-bn runs on the CPU batch-norm kernels; the device is {}",
                    cfg.device
                )));
            }
            Some(models::ops::SyncBatchNorm::enter(Arc::new(WorldSums(
                world.clone(),
            ))))
        } else {
            None
        };
        let mut optim = Optimizer::new(trainable_params(&net.varmap, &[""]), phase.optim);
        let last = dir.join("last.safetensors");
        let best_path = dir.join("best.safetensors");
        let mut ema = if phase.optim.ema_decay > 0.0 {
            Some(Ema::new(net, phase.optim.ema_decay)?)
        } else {
            None
        };
        let mut state = self.start(net, &mut optim, ema.as_mut(), &phase)?;
        crate::dist::check_replicas(&**world, optim.params())?;
        let mut log = if root {
            Some(MetricsLog::open(&dir.join("metrics.jsonl"))?)
        } else {
            None
        };
        let seed = cfg.seed ^ phase.salt;
        let evaluator = ctx.evaluator()?;
        let t_start = Instant::now();
        let before = state.trained;
        let mut images_done = 0usize;
        let mut history = Vec::new();
        while state.epoch < phase.optim.epochs {
            let epoch = state.epoch;
            let batches = shuffled_batches(train.len(), bs, seed, epoch);
            // This rank's shard of every batch still to train.
            let todo: Vec<Vec<usize>> = batches[state.batch..]
                .iter()
                .map(|b| Ok(crate::dist::shard(b, rank, ranks)?.to_vec()))
                .collect::<Result<_>>()?;
            let bar = Progress::epoch(
                cfg.quiet || !root,
                phase.name,
                epoch,
                phase.optim.epochs,
                steps_per_epoch,
                state.batch,
            );
            let epoch_start = Instant::now();
            let mut counted_here = 0usize;
            let prefetch = objective.views().prefetch(
                ctx.train_images.clone(),
                (train.height, train.width),
                todo.clone(),
                seed,
                epoch as u64,
                2,
            )?;
            for (views, indices) in prefetch.zip(todo) {
                let views: Vec<Tensor> = views?
                    .iter()
                    .map(|v| v.to_device(&ctx.device))
                    .collect::<candle_core::Result<_>>()?;
                let labels: Vec<u32> = indices.iter().map(|&i| train.labels[i]).collect();
                let labels = Tensor::from_vec(labels, indices.len(), &ctx.device)?;
                let batch = Batch {
                    views,
                    indices,
                    labels,
                    world: world.clone(),
                };
                let at = StepAt {
                    phase: phase.name,
                    epoch,
                };
                let stats = step::train_step(
                    net,
                    objective,
                    &batch,
                    &mut optim,
                    phase.optim,
                    steps_per_epoch,
                    at,
                    &**world,
                    ctx.interrupt.load(Ordering::SeqCst),
                )?;
                if let Some(e) = ema.as_mut() {
                    e.update(net)?;
                }
                images_done += batch.indices.len() * ranks;
                state.trained = Trained {
                    seconds: before.seconds + t_start.elapsed().as_secs_f64(),
                    images: before.images + images_done,
                };
                counted_here += 1;
                state.batch += 1;
                state.sums.add(&stats.values);
                let ips =
                    (counted_here * bs) as f64 / epoch_start.elapsed().as_secs_f64().max(1e-9);
                if let Some(log) = log.as_mut().filter(|_| optim.steps() % cfg.log_every == 0) {
                    let mut rec = json!({"kind": "step", "phase": phase.name, "epoch": epoch,
                        "step": optim.steps(), "lr": stats.lr, "grad_norm": stats.grad_norm,
                        "images_per_s": ips});
                    for (n, v) in &stats.values {
                        rec[*n] = json!(v);
                    }
                    log.write(&rec)?;
                }
                bar.step(ips, &stats.values, stats.lr);
                // Every rank sees the same flag (it travelled with the gradients).
                let interrupted = stats.interrupted;
                // A periodic checkpoint inside the epoch; the epoch's last step is followed by the epoch-end one.
                let periodic = cfg.checkpoint_every > 0
                    && optim.steps() % cfg.checkpoint_every == 0
                    && state.batch < batches.len();
                if interrupted || periodic {
                    check_finite(net, phase.name, optim.steps(), epoch)?;
                    if root {
                        state.save_last(&last, net, &optim, ema.as_ref(), cfg, phase.name)?;
                    }
                    if interrupted {
                        bar.abandon();
                        return Err(Error::Interrupted { epoch, path: last });
                    }
                }
            }
            bar.finish();
            check_finite(net, phase.name, optim.steps(), epoch)?;
            let train_seconds = epoch_start.elapsed().as_secs_f64();
            // Rank 0 evaluates; the others wait for it at the next step's all-reduce.
            let evaluate = root
                && (cfg.eval.every > 0 && ((epoch + 1) % cfg.eval.every == 0)
                    || epoch + 1 == phase.optim.epochs);
            // The network the phase keeps: the weight average when there is one.
            let kept = ema.as_ref().map_or(net, Ema::net);
            let figures = if evaluate {
                evaluator.epoch_figures(kept, objective.metric(), objective.trains_classifier())?
            } else {
                vec![]
            };
            let metric = figures.first().map(|f| f.1);
            let mut rec = json!({"kind": "epoch", "phase": phase.name, "epoch": epoch,
                "step": optim.steps(),
                "lr": learning_rate(phase.optim, optim.steps().saturating_sub(1), steps_per_epoch),
                "images_per_s": (counted_here * bs) as f64 / train_seconds.max(1e-9),
                "seconds": train_seconds});
            for (n, m) in state.sums.means() {
                rec[n] = json!(m);
            }
            for (k, v) in &figures {
                rec[*k] = json!(v);
            }
            if let Some(log) = log.as_mut() {
                log.write(&rec)?;
            }
            let mut line = format!("{} epoch {}/{}:", phase.name, epoch + 1, phase.optim.epochs);
            for (n, m) in state.sums.means() {
                line.push_str(&format!(" {n} {m:.4}"));
            }
            for (k, v) in &figures {
                line.push_str(&format!(" {k} {:.2}%", 100.0 * v));
            }
            line.push_str(&format!(
                " ({:.0} img/s, {train_seconds:.1} s)",
                (state.sums.count * bs) as f64 / train_seconds.max(1e-9)
            ));
            ctx.say(&line);
            history.push(rec);
            state = TrainState {
                epoch: epoch + 1,
                batch: 0,
                best: state.best,
                sums: Default::default(),
                trained: Trained {
                    seconds: before.seconds + t_start.elapsed().as_secs_f64(),
                    images: before.images + images_done,
                },
            };
            let keep = match cfg.eval.keep {
                Keep::Best => metric.filter(|&m| m > state.best),
                Keep::Last => Some(metric.unwrap_or(f64::NAN)),
            };
            if let Some(m) = keep.filter(|_| root) {
                state.best = m;
                state.save_model(&best_path, kept, optim.steps(), cfg, phase.name)?;
            }
            if root {
                state.save_last(&last, net, &optim, ema.as_ref(), cfg, phase.name)?;
            }
            if interrupted_at_epoch_end(ctx)? {
                return Err(Error::Interrupted {
                    epoch: epoch + 1,
                    path: last,
                });
            }
        }
        if root && !best_path.exists() {
            // No epoch was evaluated (or none improved on −∞): keep the final network.
            let kept = ema.as_ref().map_or(net, Ema::net);
            state.save_model(&best_path, kept, optim.steps(), cfg, phase.name)?;
        }
        // The others may read `best` next (a teacher's targets): wait until rank 0 wrote it.
        world.barrier()?;
        // Over every run of the phase (a resumed phase counts its earlier runs too).
        let seconds = before.seconds + t_start.elapsed().as_secs_f64();
        Ok(PhaseOutcome {
            dir: dir.to_path_buf(),
            best: best_path,
            history,
            seconds,
            images_per_second: (before.images + images_done) as f64 / seconds.max(1e-9),
        })
    }
}

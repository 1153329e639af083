//! The training loop shared by every phase, and the teacher and student phases built on it.
//!
//! Reproducibility: the order of the training images in epoch `e` is a ChaCha8 shuffle seeded by
//! `(seed, phase, e)`, and every augmentation is drawn from `(seed, phase, e, image, view)`, so a run
//! resumed from any checkpoint (even one written mid-epoch on Ctrl-C) sees exactly the batches the
//! uninterrupted run would have seen.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use candle_core::{Device, Tensor};
use indicatif::{ProgressBar, ProgressStyle};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use serde_json::json;

use crate::checkpoint::{self, meta, Checkpoint};
use crate::config::{Config, OptimConfig, TeacherMethod};
use crate::data::Split;
use crate::eval::{self, EvalReport};
use crate::metrics::{retain_metrics, MetricsLog};
use crate::net::Net;
use crate::optim::{grad_norm, trainable_params, Optimizer};
use crate::schedule::learning_rate;
use crate::{Error, Result};

/// CIFAR normalisation used by every pipeline of the trainer.
pub const MEAN: [f32; 3] = [0.4914, 0.4822, 0.4465];
/// See [`MEAN`].
pub const STD: [f32; 3] = [0.2470, 0.2435, 0.2616];

/// What every phase shares.
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
}

impl Ctx<'_> {
    /// The evaluation pipeline: resize to the image size and normalise, no augmentation.
    pub fn eval_pipeline(&self) -> Result<augment::Pipeline> {
        Ok(augment::presets::eval(self.cfg.data.image_size)?.with_normalize(MEAN, STD)?)
    }

    fn say(&self, line: &str) {
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
    /// Per epoch: (epoch, mean loss parts, metric).
    pub history: Vec<serde_json::Value>,
    /// Wall time of the training, seconds.
    pub seconds: f64,
    /// Training throughput, images per second.
    pub images_per_second: f64,
}

/// An evaluation metric of a network (higher is better).
type MetricFn<'a> = dyn Fn(&Net) -> Result<f64> + 'a;

/// The loss parts of one step; the first is the total that is minimised.
pub type LossParts = Vec<(&'static str, Tensor)>;

/// A training phase: what `fit` needs beyond the network.
struct Phase<'a> {
    name: &'static str,
    salt: u64,
    optim: &'a OptimConfig,
    views: augment::MultiView,
    loss: &'a dyn Fn(&[Tensor], &Tensor) -> Result<LossParts>,
    metric_name: &'static str,
    metric: &'a dyn Fn(&Net) -> Result<f64>,
}

fn shuffled_batches(n: usize, batch: usize, seed: u64, epoch: usize) -> Vec<Vec<usize>> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed ^ ((epoch as u64 + 1) << 32));
    let mut order: Vec<usize> = (0..n).collect();
    order.shuffle(&mut rng);
    order.chunks_exact(batch).map(<[usize]>::to_vec).collect()
}

fn scalar(t: &Tensor) -> Result<f64> {
    Ok(t.to_dtype(candle_core::DType::F64)?.to_scalar::<f64>()?)
}

fn save_checkpoint(
    path: &Path,
    net: &Net,
    optim: Option<&Optimizer>,
    meta_extra: &[(&str, String)],
    cfg: &Config,
    role: &str,
) -> Result<()> {
    let steps = optim.map_or(0, Optimizer::steps);
    let mut tensors = checkpoint::varmap_tensors(&net.varmap, steps);
    if let Some(o) = optim {
        tensors.extend(o.state_tensors());
    }
    let mut md = BTreeMap::new();
    md.insert(meta::ARCH.to_string(), net.arch.clone());
    md.insert(meta::NUM_CLASSES.to_string(), net.num_classes.to_string());
    md.insert(meta::ROLE.to_string(), role.to_string());
    md.insert(meta::CONFIG.to_string(), cfg.to_toml()?);
    for (k, v) in meta_extra {
        md.insert(k.to_string(), v.clone());
    }
    checkpoint::save(path, &tensors, &md)
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

/// Trains `net` through `phase`, in `dir`; resumes from `dir/last.safetensors` when `cfg.resume`.
fn fit(ctx: &Ctx, dir: &Path, net: &Net, phase: Phase, resume: bool) -> Result<PhaseOutcome> {
    let cfg = ctx.cfg;
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
    let params = trainable_params(&net.varmap, &[""]);
    let mut optim = Optimizer::new(params, phase.optim);
    let last = dir.join("last.safetensors");
    let best_path = dir.join("best.safetensors");
    let metrics_path = dir.join("metrics.jsonl");
    let (mut start_epoch, mut start_batch, mut best) = (0usize, 0usize, f64::NEG_INFINITY);
    // Loss sums of a partly done epoch (restored from a mid-epoch checkpoint).
    let mut resumed_sums: Vec<(String, f64)> = Vec::new();
    let mut resumed_count = 0usize;
    if resume && last.exists() {
        let ckpt = Checkpoint::load(&last, &ctx.device)?;
        checkpoint::load_into_varmap(&net.varmap, &ckpt, "", &last, &net.arch)?;
        let steps: usize = ckpt.meta(meta::STEP).unwrap_or(0);
        optim.load_state(&ckpt.tensors, steps)?;
        start_epoch = ckpt.meta(meta::EPOCH).unwrap_or(0);
        start_batch = ckpt.meta("batch").unwrap_or(0);
        best = ckpt.meta(meta::BEST).unwrap_or(f64::NEG_INFINITY);
        if start_batch > 0 {
            resumed_sums = ckpt
                .metadata
                .get("epoch_sums")
                .and_then(|t| serde_json::from_str(t).ok())
                .unwrap_or_default();
            resumed_count = ckpt.meta("epoch_count").unwrap_or(0);
        }
        let warning = retain_metrics(&metrics_path, |r| match r["kind"].as_str() {
            Some("step") => r["step"].as_u64().is_some_and(|s| (s as usize) <= steps),
            Some("epoch") => r["epoch"]
                .as_u64()
                .is_some_and(|e| (e as usize) < start_epoch),
            _ => false,
        })?;
        if let Some(w) = warning {
            ctx.say(&format!("warning: {w}"));
        }
        ctx.say(&format!(
            "{}: resuming from {} (epoch {start_epoch}, batch {start_batch}, step {steps})",
            phase.name,
            last.display()
        ));
    } else if metrics_path.exists() {
        std::fs::remove_file(&metrics_path).map_err(|e| Error::Io(metrics_path.clone(), e))?;
    }
    let mut log = MetricsLog::open(&metrics_path)?;
    let seed = cfg.seed ^ phase.salt;
    let dims = (train.height, train.width);
    let labels_all = &train.labels;
    let t_start = Instant::now();
    let mut images_done = 0usize;
    let mut history = Vec::new();
    for epoch in start_epoch..phase.optim.epochs {
        let batches = shuffled_batches(train.len(), bs, seed, epoch);
        let skip = if epoch == start_epoch { start_batch } else { 0 };
        let todo: Vec<Vec<usize>> = batches[skip..].to_vec();
        let bar = if cfg.quiet {
            ProgressBar::hidden()
        } else {
            let bar = ProgressBar::new(steps_per_epoch as u64);
            bar.set_style(
                ProgressStyle::with_template("{prefix} [{bar:25}] {pos}/{len} {msg} ETA {eta}")
                    .unwrap_or_else(|_| ProgressStyle::default_bar())
                    .progress_chars("=> "),
            );
            bar.set_prefix(format!(
                "{} {}/{}",
                phase.name,
                epoch + 1,
                phase.optim.epochs
            ));
            bar.set_position(skip as u64);
            bar
        };
        let epoch_start = Instant::now();
        let mut sums: Vec<(String, f64)> = Vec::new();
        let mut count = 0usize;
        if epoch == start_epoch && skip > 0 {
            sums = std::mem::take(&mut resumed_sums);
            count = resumed_count;
        }
        let mut counted_here = 0usize;
        let prefetch = phase.views.prefetch(
            ctx.train_images.clone(),
            dims,
            todo.clone(),
            seed,
            epoch as u64,
            2,
        )?;
        for (b, (views, indices)) in prefetch.zip(todo.iter()).enumerate() {
            let batch_idx = skip + b;
            let views: Vec<Tensor> = views?
                .iter()
                .map(|v| v.to_device(&ctx.device))
                .collect::<candle_core::Result<_>>()?;
            let labels: Vec<u32> = indices.iter().map(|&i| labels_all[i]).collect();
            let labels = Tensor::from_vec(labels, indices.len(), &ctx.device)?;
            let parts = (phase.loss)(&views, &labels)?;
            let step = optim.steps();
            let mut values = Vec::with_capacity(parts.len());
            for (name, t) in &parts {
                let v = scalar(t)?;
                if !v.is_finite() {
                    return Err(Error::NonFinite {
                        phase: phase.name.to_string(),
                        step,
                        epoch,
                        part: format!("`{name}` loss"),
                        value: v,
                    });
                }
                values.push((*name, v));
            }
            let grads = parts[0].1.backward()?;
            let gnorm = grad_norm(optim.params(), &grads)?;
            if !gnorm.is_finite() {
                return Err(Error::NonFinite {
                    phase: phase.name.to_string(),
                    step,
                    epoch,
                    part: "gradient norm".into(),
                    value: gnorm,
                });
            }
            let clip = phase.optim.grad_clip;
            let scale = if clip > 0.0 && gnorm > clip {
                clip / gnorm
            } else {
                1.0
            };
            let lr = learning_rate(phase.optim, step, steps_per_epoch);
            optim.step(&grads, lr, scale)?;
            images_done += indices.len();
            count += 1;
            counted_here += 1;
            if sums.is_empty() {
                sums = values.iter().map(|(n, _)| (n.to_string(), 0.0)).collect();
            }
            for (s, (_, v)) in sums.iter_mut().zip(&values) {
                s.1 += v;
            }
            let ips = (counted_here * bs) as f64 / epoch_start.elapsed().as_secs_f64().max(1e-9);
            if optim.steps() % cfg.log_every == 0 {
                let mut rec = json!({"kind": "step", "phase": phase.name, "epoch": epoch, "step": optim.steps(),
                    "lr": lr, "grad_norm": gnorm, "images_per_s": ips});
                for (n, v) in &values {
                    rec[*n] = json!(v);
                }
                log.write(&rec)?;
            }
            let parts_msg: Vec<String> =
                values.iter().map(|(n, v)| format!("{n} {v:.4}")).collect();
            bar.set_message(format!("{ips:.0} img/s {} lr {lr:.4}", parts_msg.join(" ")));
            bar.inc(1);
            let interrupted = ctx.interrupt.load(Ordering::SeqCst);
            // A periodic checkpoint inside the epoch; the epoch's last step is followed by the epoch-end one.
            let periodic = cfg.checkpoint_every > 0
                && optim.steps() % cfg.checkpoint_every == 0
                && batch_idx + 1 < batches.len();
            if interrupted || periodic {
                check_finite(net, phase.name, optim.steps(), epoch)?;
                let extra = [
                    (meta::EPOCH, epoch.to_string()),
                    ("batch", (batch_idx + 1).to_string()),
                    (meta::STEP, optim.steps().to_string()),
                    (meta::BEST, best.to_string()),
                    (
                        "epoch_sums",
                        serde_json::to_string(&sums).unwrap_or_default(),
                    ),
                    ("epoch_count", count.to_string()),
                ];
                save_checkpoint(&last, net, Some(&optim), &extra, cfg, phase.name)?;
                if interrupted {
                    bar.abandon();
                    return Err(Error::Interrupted { epoch, path: last });
                }
            }
        }
        bar.finish_and_clear();
        check_finite(net, phase.name, optim.steps(), epoch)?;
        let train_seconds = epoch_start.elapsed().as_secs_f64();
        let evaluate = cfg.eval.every > 0 && ((epoch + 1) % cfg.eval.every == 0)
            || epoch + 1 == phase.optim.epochs;
        let metric = if evaluate {
            Some((phase.metric)(net)?)
        } else {
            None
        };
        let mut rec = json!({"kind": "epoch", "phase": phase.name, "epoch": epoch, "step": optim.steps(),
            "lr": learning_rate(phase.optim, optim.steps().saturating_sub(1), steps_per_epoch),
            "images_per_s": (counted_here * bs) as f64 / train_seconds.max(1e-9), "seconds": train_seconds});
        for (n, s) in &sums {
            rec[n.as_str()] = json!(s / count.max(1) as f64);
        }
        if let Some(m) = metric {
            rec[phase.metric_name] = json!(m);
        }
        log.write(&rec)?;
        let mut line = format!("{} epoch {}/{}:", phase.name, epoch + 1, phase.optim.epochs);
        for (n, s) in &sums {
            line.push_str(&format!(" {n} {:.4}", s / count.max(1) as f64));
        }
        if let Some(m) = metric {
            line.push_str(&format!(" {} {:.2}%", phase.metric_name, 100.0 * m));
        }
        line.push_str(&format!(
            " ({:.0} img/s, {train_seconds:.1} s)",
            (count * bs) as f64 / train_seconds.max(1e-9)
        ));
        ctx.say(&line);
        history.push(rec);
        let extra_for = |best: f64| {
            [
                (meta::EPOCH, (epoch + 1).to_string()),
                ("batch", "0".to_string()),
                (meta::STEP, optim.steps().to_string()),
                (meta::BEST, best.to_string()),
            ]
        };
        if let Some(m) = metric {
            if m > best {
                best = m;
                save_checkpoint(&best_path, net, None, &extra_for(best), cfg, phase.name)?;
            }
        }
        save_checkpoint(&last, net, Some(&optim), &extra_for(best), cfg, phase.name)?;
        if ctx.interrupt.load(Ordering::SeqCst) {
            return Err(Error::Interrupted {
                epoch: epoch + 1,
                path: last,
            });
        }
    }
    if !best_path.exists() {
        // Atomically too: a crash must not leave a half-copied `best` that a resume would trust.
        let bytes = std::fs::read(&last).map_err(|e| Error::Io(last.clone(), e))?;
        checkpoint::write_atomic(&best_path, &bytes)?;
    }
    let seconds = t_start.elapsed().as_secs_f64();
    Ok(PhaseOutcome {
        dir: dir.to_path_buf(),
        best: best_path,
        history,
        seconds,
        images_per_second: images_done as f64 / seconds.max(1e-9),
    })
}

fn cross_entropy_smoothed(logits: &Tensor, labels: &Tensor, eps: f64) -> Result<Tensor> {
    let log_p = candle_nn::ops::log_softmax(logits, candle_core::D::Minus1)?;
    let nll = candle_nn::loss::nll(&log_p, labels)?;
    if eps == 0.0 {
        return Ok(nll);
    }
    let uniform = log_p.mean(candle_core::D::Minus1)?.mean_all()?.neg()?;
    Ok(((nll * (1.0 - eps))? + (uniform * eps)?)?)
}

fn supervised_pipeline(size: usize) -> Result<augment::Pipeline> {
    let t = augment::Compose::new()
        .then(augment::RandomResizedCrop::new((size, size))?.with_scale(0.6, 1.0)?)
        .then(augment::RandomHorizontalFlip::new(0.5)?);
    Ok(augment::Pipeline::new(t, size)?.with_normalize(MEAN, STD)?)
}

fn simclr_views(size: usize) -> Result<augment::MultiView> {
    let p = if size > 64 {
        augment::presets::simclr_imagenet(size)?
    } else {
        augment::presets::simclr_cifar(size)?
    };
    Ok(augment::MultiView::repeat(p.with_normalize(MEAN, STD)?, 2)?)
}

/// kNN accuracy of `net`'s backbone features, train set as memory, test set as queries.
pub fn knn_metric(ctx: &Ctx, net: &Net) -> Result<f64> {
    let p = ctx.eval_pipeline()?;
    let tr = eval::extract(net, &ctx.split.train, &p, &ctx.device, 256)?;
    let te = eval::extract(net, &ctx.split.test, &p, &ctx.device, 256)?;
    eval::knn_accuracy(
        &tr.features,
        &ctx.split.train.labels,
        &te.features,
        &ctx.split.test.labels,
        tr.dim,
        ctx.split.train.num_classes(),
        ctx.cfg.eval.knn_k,
        ctx.cfg.eval.knn_temperature,
    )
}

fn classifier_metric(ctx: &Ctx, net: &Net) -> Result<f64> {
    let te = eval::extract(
        net,
        &ctx.split.test,
        &ctx.eval_pipeline()?,
        &ctx.device,
        256,
    )?;
    Ok(eval::accuracy(
        &te.logits,
        te.classes,
        &ctx.split.test.labels,
    ))
}

/// Fits `fc` as a linear probe on the frozen backbone (for SimCLR-trained networks) and writes it.
fn fit_classifier(ctx: &Ctx, net: &Net) -> Result<f64> {
    let p = ctx.eval_pipeline()?;
    let tr = eval::extract(net, &ctx.split.train, &p, &ctx.device, 256)?;
    let te = eval::extract(net, &ctx.split.test, &p, &ctx.device, 256)?;
    let probe = eval::linear_probe(
        &tr.features,
        &ctx.split.train.labels,
        &te.features,
        &ctx.split.test.labels,
        tr.dim,
        ctx.split.train.num_classes(),
        ctx.cfg.eval.linear_epochs,
        ctx.cfg.eval.linear_lr,
        ctx.cfg.seed,
    )?;
    let data = net.varmap.data().lock().unwrap_or_else(|e| e.into_inner());
    for (name, t) in [("fc.weight", &probe.weight), ("fc.bias", &probe.bias)] {
        if let Some(var) = data.get(name) {
            var.set(&t.to_device(var.device())?)?;
        }
    }
    Ok(probe.accuracy)
}

/// Trains (or imports) the teacher into `dir`; returns the phase outcome and the teacher's best checkpoint.
pub fn train_teacher(ctx: &Ctx, dir: &Path, resume: bool) -> Result<PhaseOutcome> {
    let cfg = ctx.cfg;
    let t = &cfg.teacher;
    let classes = ctx.split.train.num_classes();
    std::fs::create_dir_all(dir).map_err(|e| Error::Io(dir.to_path_buf(), e))?;
    if let Some(from) = &t.from {
        let (net, _) = Net::from_checkpoint(
            from,
            Some(&t.arch),
            classes,
            cfg.data.image_size,
            &ctx.device,
        )?;
        if net.num_classes != classes {
            return Err(Error::Checkpoint(format!(
                "{}: the teacher has {} classes, the data {classes}",
                from.display(),
                net.num_classes
            )));
        }
        let best = dir.join("best.safetensors");
        save_checkpoint(
            &best,
            &net,
            None,
            &[(meta::EPOCH, "0".into())],
            cfg,
            "teacher",
        )?;
        ctx.say(&format!(
            "teacher: imported {} ({}) into {}",
            from.display(),
            t.arch,
            best.display()
        ));
        return Ok(PhaseOutcome {
            dir: dir.to_path_buf(),
            best,
            history: vec![],
            seconds: 0.0,
            images_per_second: 0.0,
        });
    }
    let size = cfg.data.image_size;
    let (projection, views) = match t.method {
        TeacherMethod::Supervised => (
            None,
            augment::MultiView::repeat(supervised_pipeline(size)?, 1)?,
        ),
        TeacherMethod::Simclr => (Some(&cfg.student.projection), simclr_views(size)?),
    };
    let net = Net::new(&t.arch, classes, size, projection, cfg.seed, &ctx.device)?;
    let smoothing = t.label_smoothing;
    let temperature = cfg.student.temperature;
    let loss = |views: &[Tensor], labels: &Tensor| -> Result<LossParts> {
        match t.method {
            TeacherMethod::Supervised => {
                let (f, _) = net.forward(&views[0], true)?;
                Ok(vec![(
                    "cross_entropy",
                    cross_entropy_smoothed(&f.logits, labels, smoothing)?,
                )])
            }
            TeacherMethod::Simclr => {
                let xs = Tensor::cat(&[&views[0], &views[1]], 0)?;
                let (_, z) = net.forward(&xs, true)?;
                let z = z.ok_or_else(|| {
                    Error::Config("SimCLR teacher without projection head".into())
                })?;
                let n = views[0].dim(0)?;
                Ok(vec![(
                    "contrastive",
                    losses::nt_xent(&z.narrow(0, 0, n)?, &z.narrow(0, n, n)?, temperature)?,
                )])
            }
        }
    };
    let (metric_name, metric): (&'static str, Box<MetricFn>) = match t.method {
        TeacherMethod::Supervised => (
            "test_accuracy",
            Box::new(|n: &Net| classifier_metric(ctx, n)),
        ),
        TeacherMethod::Simclr => ("knn_accuracy", Box::new(|n: &Net| knn_metric(ctx, n))),
    };
    let phase = Phase {
        name: "teacher",
        salt: 0x7EAC,
        optim: &t.optim,
        views,
        loss: &loss,
        metric_name,
        metric: &*metric,
    };
    let outcome = fit(ctx, dir, &net, phase, resume)?;
    if t.method == TeacherMethod::Simclr {
        // The classifier of a SimCLR teacher is a linear probe on its best backbone.
        let ckpt = Checkpoint::load(&outcome.best, &ctx.device)?;
        checkpoint::load_into_varmap(&net.varmap, &ckpt, "", &outcome.best, &net.arch)?;
        let acc = fit_classifier(ctx, &net)?;
        ctx.say(&format!(
            "teacher: linear probe on the SimCLR backbone: {:.2}% test accuracy",
            100.0 * acc
        ));
        let md: Vec<(&str, String)> = ckpt
            .metadata
            .iter()
            .filter(|(k, _)| k.as_str() != meta::CONFIG)
            .map(|(k, v)| (k.as_str(), v.clone()))
            .collect();
        save_checkpoint(&outcome.best, &net, None, &md, cfg, "teacher")?;
    }
    Ok(outcome)
}

/// Loads the student's teacher (None when α = 0 and no teacher is given).
pub fn load_teacher(ctx: &Ctx) -> Result<Option<Net>> {
    let s = &ctx.cfg.student;
    let classes = ctx.split.train.num_classes();
    let Some(path) = &s.teacher else {
        if s.alpha > 0.0 {
            return Err(Error::Config(format!(
                "distill: --alpha {} needs a teacher: pass --teacher FILE.safetensors (or --alpha 0 for plain SimCLR)",
                s.alpha
            )));
        }
        return Ok(None);
    };
    let (mut net, _) = Net::from_checkpoint(
        path,
        s.teacher_arch.as_deref(),
        classes,
        ctx.cfg.data.image_size,
        &ctx.device,
    )?;
    if net.num_classes != classes {
        return Err(Error::Checkpoint(format!(
            "{}: the teacher has {} classes, the data {classes}",
            path.display(),
            net.num_classes
        )));
    }
    // The teacher is frozen: a detached copy takes the folded conv + batch-norm evaluation path
    // and builds no autograd graph.
    net.backbone = net.backbone.detached()?;
    Ok(Some(net))
}

/// Distils a student into `dir` with `(1 − α)·NT-Xent + α·KD·T²` (α from the configuration).
pub fn train_student(ctx: &Ctx, dir: &Path, resume: bool) -> Result<(PhaseOutcome, Net)> {
    let cfg = ctx.cfg;
    let s = &cfg.student;
    let classes = ctx.split.train.num_classes();
    let teacher = load_teacher(ctx)?;
    let student = Net::new(
        &s.arch,
        classes,
        cfg.data.image_size,
        Some(&s.projection),
        cfg.seed.wrapping_add(1),
        &ctx.device,
    )?;
    let objective = losses::SimClrDistillation::new(losses::SimClrDistillationConfig {
        temperature: s.temperature,
        kd_temperature: s.kd_temperature,
        alpha: s.alpha,
    })?;
    let loss = |views: &[Tensor], _labels: &Tensor| -> Result<LossParts> {
        let n = views[0].dim(0)?;
        let xs = Tensor::cat(&[&views[0], &views[1]], 0)?;
        let (f, z) = student.forward(&xs, true)?;
        let z = z.ok_or_else(|| Error::Config("student without projection head".into()))?;
        let (za, zb) = (z.narrow(0, 0, n)?, z.narrow(0, n, n)?);
        match &teacher {
            Some(t) if s.alpha > 0.0 => {
                let t_logits = candle_core::ModuleT::forward_t(&t.backbone, &xs, false)?.detach();
                let l = objective.forward(&f.logits, &t_logits, &za, &zb)?;
                Ok(vec![
                    ("total", l.total),
                    ("contrastive", l.contrastive),
                    ("distillation", l.distillation),
                ])
            }
            _ => {
                let c = losses::nt_xent(&za, &zb, s.temperature)?;
                Ok(vec![("total", c.clone()), ("contrastive", c)])
            }
        }
    };
    let metric = |n: &Net| knn_metric(ctx, n);
    let views = simclr_views(cfg.data.image_size)?;
    let phase = Phase {
        name: "student",
        salt: 0x57D,
        optim: &s.optim,
        views,
        loss: &loss,
        metric_name: "knn_accuracy",
        metric: &metric,
    };
    let outcome = fit(ctx, dir, &student, phase, resume)?;
    Ok((outcome, student))
}

/// Every figure for the network in `ckpt_path`.
pub fn evaluate_checkpoint(
    ctx: &Ctx,
    ckpt_path: &Path,
    arch: Option<&str>,
    classifier_trained: bool,
    linear: bool,
) -> Result<EvalReport> {
    let classes = ctx.split.train.num_classes();
    let (net, _) = Net::from_checkpoint(
        ckpt_path,
        arch,
        classes,
        ctx.cfg.data.image_size,
        &ctx.device,
    )?;
    evaluate(ctx, &net, classifier_trained, linear)
}

/// Every figure for `net`.
pub fn evaluate(
    ctx: &Ctx,
    net: &Net,
    classifier_trained: bool,
    linear: bool,
) -> Result<EvalReport> {
    let p = ctx.eval_pipeline()?;
    let tr = eval::extract(net, &ctx.split.train, &p, &ctx.device, 256)?;
    let te = eval::extract(net, &ctx.split.test, &p, &ctx.device, 256)?;
    let (train_l, test_l) = (&ctx.split.train.labels, &ctx.split.test.labels);
    let classes = ctx.split.train.num_classes();
    let classifier_accuracy = (classifier_trained && te.classes == classes)
        .then(|| eval::accuracy(&te.logits, te.classes, test_l));
    let knn = eval::knn_accuracy(
        &tr.features,
        train_l,
        &te.features,
        test_l,
        tr.dim,
        classes,
        ctx.cfg.eval.knn_k,
        ctx.cfg.eval.knn_temperature,
    )?;
    let linear_probe_accuracy = if linear {
        Some(
            eval::linear_probe(
                &tr.features,
                train_l,
                &te.features,
                test_l,
                tr.dim,
                classes,
                ctx.cfg.eval.linear_epochs,
                ctx.cfg.eval.linear_lr,
                ctx.cfg.seed,
            )?
            .accuracy,
        )
    } else {
        None
    };
    Ok(EvalReport {
        classifier_accuracy,
        knn_accuracy: knn,
        linear_probe_accuracy,
        test_images: test_l.len(),
    })
}

//! The device check (`trainer device-check`): every numeric path of the trainer on a device
//! against the CPU on the same inputs, as one JSON report.
//!
//! - **Losses**: NT-Xent, supervised contrastive, KD and the combined SimCLR + KD loss, value and
//!   gradients.
//! - **Networks**: every ResNet the project trains as teacher or student (`resnet8`, `resnet8x4`,
//!   `resnet20`, `resnet18`): logits and pooled features of a training-mode forward, the
//!   gradient of every variable, and the batch-norm running statistics it updated.
//! - **Optimizers**: SGD (Nesterov), LARS and AdamW, three steps from the same gradients.
//! - **Training**: a short `trainer distill` run (α = 0.5, fresh seeded teacher) on each device:
//!   every logged loss and the final evaluation.
//!
//! Each comparison reports `max_abs = max |device − cpu|` and `max_rel = max_abs / max |cpu|`
//! and passes when `max_rel ≤ tolerance` (f32 kernels that sum in another order differ by a few
//! ulps per operation; the tolerances are stated per kind below). With `--device cpu` the check
//! runs the CPU against itself: every difference must then be exactly zero (the trainer is
//! deterministic), which is how CI exercises this code on machines without a GPU.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use candle_core::{DType, Device, Tensor, Var};
use rand::{Rng, SeedableRng};
use serde::Serialize;

use crate::config::{Config, OptimConfig, OptimizerKind};
use crate::net::Net;
use crate::optim::{trainable_params, Optimizer};
use crate::{Error, Result};

/// Relative tolerance of a loss value or gradient.
pub const LOSS_TOLERANCE: f64 = 1e-4;
/// Relative tolerance of a network's outputs, gradients and running statistics.
pub const NETWORK_TOLERANCE: f64 = 1e-3;
/// Relative tolerance of the weights after three optimizer steps.
pub const OPTIMIZER_TOLERANCE: f64 = 1e-4;
/// Relative tolerance of a short training run's losses (errors compound over the steps).
pub const TRAINING_TOLERANCE: f64 = 1e-2;
/// The architectures checked: the students' and the teachers' sizes.
pub const ARCHS: [&str; 4] = ["resnet8", "resnet8x4", "resnet20", "resnet18"];

/// What to check where.
#[derive(Debug, Clone)]
pub struct CheckOptions {
    /// The device under test (`cpu`, `cuda`, `cuda:N`, `metal`).
    pub device: String,
    /// The data of the training check (a `--data` source with 10 classes).
    pub data: String,
    /// A folder for the training check's runs.
    pub work: PathBuf,
    /// Steps of the training check.
    pub train_steps: usize,
    /// Images per network forward in the network checks.
    pub batch: usize,
}

impl Default for CheckOptions {
    fn default() -> Self {
        Self {
            device: "cpu".into(),
            data: "sample".into(),
            work: PathBuf::from("runs/device-check"),
            train_steps: 20,
            batch: 8,
        }
    }
}

/// One tensor (or set of tensors) on the device against the CPU.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Comparison {
    /// What was compared, e.g. `resnet20/grad/layer1.0.conv1.weight` (the worst tensor of a set).
    pub name: String,
    /// `max |device − cpu|`.
    pub max_abs: f64,
    /// `max_abs / max |cpu|`.
    pub max_rel: f64,
    /// The largest `max_rel` that passes.
    pub tolerance: f64,
    /// `max_rel ≤ tolerance` (and both finite).
    pub pass: bool,
}

/// The whole check.
#[derive(Debug, Clone, Serialize)]
pub struct CheckReport {
    /// The device under test, as given.
    pub device: String,
    /// The device as Candle describes it.
    pub device_debug: String,
    /// Every comparison, in order: losses, networks, optimizers, training.
    pub comparisons: Vec<Comparison>,
    /// The training check's per-step loss on the CPU and on the device (`total` of each step).
    pub train_losses_cpu: Vec<f64>,
    /// The same on the device.
    pub train_losses_device: Vec<f64>,
    /// Wall time of each part, seconds.
    pub seconds: Vec<(String, f64)>,
    /// Every comparison passed.
    pub pass: bool,
}

/// Compares `device` against `cpu` (same shape), moving both to the CPU in f64.
pub fn compare(name: &str, device: &Tensor, cpu: &Tensor, tolerance: f64) -> Result<Comparison> {
    if device.dims() != cpu.dims() {
        return Err(Error::Config(format!(
            "{name}: the device gave shape {:?}, the CPU {:?}",
            device.dims(),
            cpu.dims()
        )));
    }
    let d = device
        .to_device(&Device::Cpu)?
        .to_dtype(DType::F64)?
        .flatten_all()?
        .to_vec1::<f64>()?;
    let c = cpu
        .to_device(&Device::Cpu)?
        .to_dtype(DType::F64)?
        .flatten_all()?
        .to_vec1::<f64>()?;
    Ok(from_values(name, &d, &c, tolerance))
}

fn from_values(name: &str, device: &[f64], cpu: &[f64], tolerance: f64) -> Comparison {
    let mut max_abs = 0f64;
    let mut scale = 0f64;
    let mut finite = true;
    for (a, b) in device.iter().zip(cpu) {
        finite &= a.is_finite() && b.is_finite();
        max_abs = max_abs.max((a - b).abs());
        scale = scale.max(b.abs());
    }
    let max_rel = if max_abs == 0.0 {
        0.0
    } else {
        max_abs / scale.max(1e-30)
    };
    Comparison {
        name: name.to_string(),
        max_abs,
        max_rel,
        tolerance,
        pass: finite && device.len() == cpu.len() && max_rel <= tolerance,
    }
}

/// The worst comparison of a set (by `max_rel / tolerance`), named `prefix/worst tensor`; all of a
/// set pass when the worst does.
fn worst(prefix: &str, set: Vec<Comparison>) -> Comparison {
    let fails = set.iter().find(|c| !c.pass).cloned();
    let worst = fails.or_else(|| {
        set.into_iter()
            .max_by(|a, b| a.max_rel.total_cmp(&b.max_rel))
    });
    match worst {
        Some(mut c) => {
            c.name = format!("{prefix}/{}", c.name);
            c
        }
        None => from_values(prefix, &[], &[], 0.0),
    }
}

/// A seeded tensor of uniform values in [−scale, scale) on the CPU.
fn uniform(seed: u64, shape: &[usize], scale: f32) -> Result<Tensor> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let n: usize = shape.iter().product();
    let v: Vec<f32> = (0..n)
        .map(|_| (rng.random::<f32>() * 2.0 - 1.0) * scale)
        .collect();
    Ok(Tensor::from_vec(v, shape, &Device::Cpu)?)
}

/// A loss of some variables, evaluated on each device: its value and the gradient of each input.
fn loss_check(
    name: &str,
    inputs: &[Tensor],
    device: &Device,
    f: impl Fn(&[Tensor]) -> candle_core::Result<Tensor>,
) -> Result<Comparison> {
    let run = |dev: &Device| -> Result<(Tensor, Vec<Tensor>)> {
        let vars = inputs
            .iter()
            .map(|t| Ok(Var::from_tensor(&t.to_device(dev)?)?))
            .collect::<Result<Vec<_>>>()?;
        let ts: Vec<Tensor> = vars.iter().map(|v| v.as_tensor().clone()).collect();
        let loss = f(&ts)?;
        let grads = loss.backward()?;
        let g = ts
            .iter()
            .map(|t| {
                grads
                    .get(t)
                    .cloned()
                    .ok_or_else(|| Error::Config(format!("{name}: no gradient")))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok((loss, g))
    };
    let (cpu_loss, cpu_grads) = run(&Device::Cpu)?;
    let (dev_loss, dev_grads) = run(device)?;
    let mut set = vec![compare("value", &dev_loss, &cpu_loss, LOSS_TOLERANCE)?];
    for (i, (d, c)) in dev_grads.iter().zip(&cpu_grads).enumerate() {
        set.push(compare(&format!("grad{i}"), d, c, LOSS_TOLERANCE)?);
    }
    Ok(worst(name, set))
}

/// The losses: value and gradient of every input.
pub fn check_losses(device: &Device) -> Result<Vec<Comparison>> {
    let (n, d, classes) = (32, 128, 10);
    let z_a = uniform(1, &[n, d], 1.0)?;
    let z_b = uniform(2, &[n, d], 1.0)?;
    let student = uniform(3, &[n, classes], 3.0)?;
    let teacher = uniform(4, &[n, classes], 3.0)?;
    let labels: Vec<u32> = (0..2 * n as u32).map(|i| i % classes as u32).collect();
    let labels = Tensor::from_vec(labels, 2 * n, &Device::Cpu)?;
    let combined = losses::SimClrDistillation::new(losses::SimClrDistillationConfig {
        temperature: 0.5,
        kd_temperature: 4.0,
        alpha: 0.5,
    })?;
    let on = |t: &Tensor, like: &Tensor| t.to_device(like.device());
    Ok(vec![
        loss_check("nt_xent", &[z_a.clone(), z_b.clone()], device, |t| {
            losses::nt_xent(&t[0], &t[1], 0.5)
        })?,
        loss_check("supcon", &[Tensor::cat(&[&z_a, &z_b], 0)?], device, |t| {
            losses::supcon(&t[0], &on(&labels, &t[0])?, 0.1)
        })?,
        loss_check("kd_loss", std::slice::from_ref(&student), device, |t| {
            losses::kd_loss(&t[0], &on(&teacher, &t[0])?, 4.0)
        })?,
        loss_check(
            "simclr_distillation",
            &[student.clone(), z_a.clone(), z_b.clone()],
            device,
            |t| {
                Ok(combined
                    .forward(&t[0], &on(&teacher, &t[0])?, &t[1], &t[2])?
                    .total)
            },
        )?,
    ])
}

/// Every variable of a network (running statistics included), by name, on the CPU.
fn variables(net: &Net) -> Vec<(String, Tensor)> {
    let data = net.varmap.data().lock().unwrap_or_else(|e| e.into_inner());
    let mut v: Vec<(String, Tensor)> = data
        .iter()
        .map(|(k, var)| (k.clone(), var.as_tensor().clone()))
        .collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

/// One training-mode forward and backward of `arch` on the same seeded weights and images: the
/// logits, the pooled features, every gradient and the updated running statistics.
pub fn check_network(arch: &str, batch: usize, device: &Device) -> Result<Vec<Comparison>> {
    let images = uniform(10, &[batch, 3, 32, 32], 2.0)?;
    let weights = uniform(11, &[batch, 10], 1.0)?;
    let run = |dev: &Device| -> Result<(Net, Tensor, Tensor, candle_core::backprop::GradStore)> {
        let net = Net::new(arch, 10, 32, None, 7, dev)?;
        let (f, _) = net.forward(&images.to_device(dev)?, true)?;
        // A loss whose gradient differs per logit: Σ w ⊙ logits.
        let loss = (&f.logits * weights.to_device(dev)?)?.sum_all()?;
        let grads = loss.backward()?;
        Ok((net, f.logits, f.pooled, grads))
    };
    let (cpu_net, cpu_logits, cpu_pooled, cpu_grads) = run(&Device::Cpu)?;
    let (dev_net, dev_logits, dev_pooled, dev_grads) = run(device)?;
    let mut out = vec![
        compare(
            &format!("{arch}/logits"),
            &dev_logits,
            &cpu_logits,
            NETWORK_TOLERANCE,
        )?,
        compare(
            &format!("{arch}/pooled"),
            &dev_pooled,
            &cpu_pooled,
            NETWORK_TOLERANCE,
        )?,
    ];
    let (mut grads, mut stats) = (vec![], vec![]);
    let dev_vars = variables(&dev_net);
    for ((name, c), (_, d)) in variables(&cpu_net).iter().zip(&dev_vars) {
        if models::is_batch_norm_buffer(name) {
            stats.push(compare(name, d, c, NETWORK_TOLERANCE)?);
        } else {
            let (Some(gc), Some(gd)) = (cpu_grads.get(c), dev_grads.get(d)) else {
                return Err(Error::Config(format!("{arch}: no gradient for {name}")));
            };
            grads.push(compare(name, gd, gc, NETWORK_TOLERANCE)?);
        }
    }
    out.push(worst(&format!("{arch}/grad"), grads));
    out.push(worst(&format!("{arch}/running_stats"), stats));
    Ok(out)
}

/// Three steps of each optimizer from the same weights and gradients (resnet8, batch 4).
pub fn check_optimizers(device: &Device) -> Result<Vec<Comparison>> {
    let images = uniform(20, &[4, 3, 32, 32], 2.0)?;
    let mut out = vec![];
    for (label, kind, nesterov) in [
        ("sgd_nesterov", OptimizerKind::Sgd, true),
        ("lars", OptimizerKind::Lars, false),
        ("adamw", OptimizerKind::Adamw, false),
    ] {
        let cfg = OptimConfig {
            optimizer: kind,
            nesterov,
            momentum: 0.9,
            weight_decay: 5e-4,
            ..OptimConfig::default()
        };
        let run = |dev: &Device| -> Result<Vec<(String, Tensor)>> {
            let net = Net::new("resnet8", 10, 32, None, 3, dev)?;
            let mut opt = Optimizer::new(trainable_params(&net.varmap, &[""]), &cfg);
            let x = images.to_device(dev)?;
            for _ in 0..3 {
                let (f, _) = net.forward(&x, true)?;
                let loss = f.logits.sqr()?.mean_all()?;
                let grads = loss.backward()?;
                opt.step(&grads, 0.05, 1.0)?;
            }
            Ok(variables(&net))
        };
        let cpu = run(&Device::Cpu)?;
        let dev = run(device)?;
        let set = cpu
            .iter()
            .zip(&dev)
            .map(|((name, c), (_, d))| compare(name, d, c, OPTIMIZER_TOLERANCE))
            .collect::<Result<Vec<_>>>()?;
        out.push(worst(&format!("optimizer/{label}"), set));
    }
    Ok(out)
}

/// The `total` loss of every step record of a run folder's `metrics.jsonl`.
fn step_losses(dir: &Path) -> Result<Vec<f64>> {
    let (records, _) = crate::metrics::read_metrics(&dir.join("metrics.jsonl"))?;
    Ok(records
        .iter()
        .filter(|r| r["kind"] == "step")
        .filter_map(|r| r["total"].as_f64())
        .collect())
}

/// A short `trainer distill` (α = 0.5, from a freshly initialised resnet8 teacher) on the CPU and
/// on the device: every step's loss and the final figures.
pub fn check_training(opts: &CheckOptions) -> Result<(Vec<Comparison>, Vec<f64>, Vec<f64>)> {
    std::fs::create_dir_all(&opts.work).map_err(|e| Error::Io(opts.work.clone(), e))?;
    // The teacher: seeded weights, the same file for both runs.
    let teacher = opts.work.join("teacher.safetensors");
    let net = Net::new("resnet8", 10, 32, None, 5, &Device::Cpu)?;
    let mut md = std::collections::BTreeMap::new();
    md.insert(crate::checkpoint::meta::ARCH.to_string(), "resnet8".into());
    md.insert(
        crate::checkpoint::meta::NUM_CLASSES.to_string(),
        "10".into(),
    );
    crate::checkpoint::save(&teacher, &variables(&net), &md)?;

    let batch = 32;
    let mut cfg = Config {
        quiet: true,
        log_every: 1,
        checkpoint_every: 0,
        ..Config::default()
    };
    cfg.data.source = opts.data.clone();
    cfg.data.train_per_class = (opts.train_steps * batch).div_ceil(10);
    cfg.data.test_per_class = 10;
    cfg.student.arch = "resnet8".into();
    cfg.student.teacher = Some(teacher);
    cfg.student.alpha = 0.5;
    cfg.student.optim.epochs = 1;
    cfg.student.optim.batch_size = batch;
    cfg.student.optim.warmup_epochs = 0.0;
    cfg.eval.linear_epochs = 5;
    cfg.eval.knn_k = 10;
    let interrupt = AtomicBool::new(false);
    let mut runs = vec![];
    for (label, device) in [("cpu", "cpu"), ("device", opts.device.as_str())] {
        let mut c = cfg.clone();
        c.device = device.to_string();
        c.out = opts.work.join(label);
        if c.out.exists() {
            std::fs::remove_dir_all(&c.out).map_err(|e| Error::Io(c.out.clone(), e))?;
        }
        let summary = crate::run::run_distill(&c, false, &interrupt)?;
        let eval = summary
            .rows
            .first()
            .map(|r| r.eval.clone())
            .ok_or_else(|| Error::Config("the training check wrote no summary row".into()))?;
        runs.push((step_losses(&c.out)?, eval));
    }
    let (cpu_losses, cpu_eval) = &runs[0];
    let (dev_losses, dev_eval) = &runs[1];
    let mut out = vec![from_values(
        "training/step_losses",
        dev_losses,
        cpu_losses,
        TRAINING_TOLERANCE,
    )];
    if cpu_losses.len() != dev_losses.len() || cpu_losses.is_empty() {
        out[0].pass = false;
    }
    let figures = |e: &crate::eval::EvalReport| {
        [
            e.classifier_accuracy.unwrap_or(f64::NAN),
            e.knn_accuracy,
            e.linear_probe_accuracy.unwrap_or(f64::NAN),
        ]
    };
    // Accuracies are fractions of test images: allow one image in a hundred to flip.
    let (d, c) = (figures(dev_eval), figures(cpu_eval));
    let mut acc = from_values("training/accuracies", &d, &c, 0.01);
    acc.max_rel = acc.max_abs;
    acc.pass = d.iter().chain(&c).all(|v| v.is_finite()) && acc.max_abs <= 0.01;
    out.push(acc);
    Ok((out, cpu_losses.clone(), dev_losses.clone()))
}

/// Runs every check of `opts` (see the module docs).
pub fn run_check(opts: &CheckOptions) -> Result<CheckReport> {
    if opts.train_steps == 0 || opts.batch == 0 {
        return Err(Error::Config(format!(
            "device check: --steps ({}) and the batch ({}) must be at least 1",
            opts.train_steps, opts.batch
        )));
    }
    let device = crate::device::open_device(&opts.device)?;
    let mut comparisons = vec![];
    let mut seconds = vec![];
    let t = Instant::now();
    comparisons.extend(check_losses(&device)?);
    seconds.push(("losses".to_string(), t.elapsed().as_secs_f64()));
    for arch in ARCHS {
        let t = Instant::now();
        comparisons.extend(check_network(arch, opts.batch, &device)?);
        seconds.push((arch.to_string(), t.elapsed().as_secs_f64()));
    }
    let t = Instant::now();
    comparisons.extend(check_optimizers(&device)?);
    seconds.push(("optimizers".to_string(), t.elapsed().as_secs_f64()));
    let t = Instant::now();
    let (train, train_losses_cpu, train_losses_device) = check_training(opts)?;
    comparisons.extend(train);
    seconds.push(("training".to_string(), t.elapsed().as_secs_f64()));
    let pass = comparisons.iter().all(|c| c.pass);
    Ok(CheckReport {
        device: opts.device.clone(),
        device_debug: format!("{device:?}"),
        comparisons,
        train_losses_cpu,
        train_losses_device,
        seconds,
        pass,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_difference_beyond_the_tolerance_fails_and_names_its_size() -> Result<()> {
        let cpu = Tensor::new(&[1f32, -4.0, 2.0], &Device::Cpu)?;
        let same = compare("same", &cpu, &cpu, 0.0)?;
        assert!(same.pass && same.max_abs == 0.0 && same.max_rel == 0.0);
        let off = Tensor::new(&[1f32, -4.0, 2.01], &Device::Cpu)?;
        let c = compare("off", &off, &cpu, 1e-3)?;
        assert!(!c.pass);
        assert!((c.max_abs - 0.01).abs() < 1e-6, "{c:?}");
        assert!((c.max_rel - 0.0025).abs() < 1e-6, "{c:?}");
        assert!(compare("off", &off, &cpu, 1e-2)?.pass);
        let nan = Tensor::new(&[1f32, f32::NAN, 2.0], &Device::Cpu)?;
        assert!(!compare("nan", &nan, &cpu, 1.0)?.pass);
        assert!(compare("shape", &cpu.reshape((3, 1))?, &cpu, 1.0).is_err());
        Ok(())
    }

    #[test]
    fn the_worst_of_a_set_is_reported_and_a_failure_wins() {
        let ok = |name: &str, rel: f64| Comparison {
            name: name.into(),
            max_abs: rel,
            max_rel: rel,
            tolerance: 1e-3,
            pass: rel <= 1e-3,
        };
        let w = worst("net", vec![ok("a", 1e-5), ok("b", 1e-4), ok("c", 1e-6)]);
        assert_eq!(w.name, "net/b");
        assert!(w.pass);
        let w = worst("net", vec![ok("a", 1e-5), ok("b", 1e-2), ok("c", 1e-1)]);
        assert!(!w.pass);
        assert!(w.name == "net/b" || w.name == "net/c");
    }
}

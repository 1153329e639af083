//! The workloads of `cargo xtask bench` (issue 7): the figures the trainer's speed depends on,
//! each printed as one JSON line
//! `{"figure": NAME, "value": X, "unit": U, "peak_rss_mib": P, "start_rss_mib": S}`.
//!
//! ```sh
//! RAYON_NUM_THREADS=2 cargo bench -p trainer --bench train_bench                 # every figure
//! RAYON_NUM_THREADS=2 cargo bench -p trainer --bench train_bench -- --runs 9 nt_xent_fwd_bwd_n1024_d128
//! ```
//!
//! The binary runs each figure named (default: all) in a child process of its own (itself, with
//! `--child` and the figure's name), so that `peak_rss_mib` (`VmHWM` of `/proc/self/status` at the end
//! of the child) is the peak memory of that one workload; `start_rss_mib` is the resident set
//! before the workload was built. Each value is the median of `--runs`
//! (default 5) timed runs after one untimed warm-up run. Each child first calls
//! [`models::ops::retain_freed_memory`], as a training program should.
//! `crates/trainer/benches/bench_torch.py` runs the same workloads in PyTorch.
//!
//! | figure | workload | unit |
//! | --- | --- | --- |
//! | `teacher_resnet18_forward` | ResNet-18 (CIFAR stem, 10 classes), eval, 128 views, no gradient | views/s |
//! | `student_resnet8x4_simclr_step` | resnet8x4 + MLP 256→256→128, train mode, NT-Xent(0.5) on the two halves, backward, SGD | views/s |
//! | `distill_step_r18_to_r8x4` | the teacher without gradient, then 0.5·NT-Xent(0.5) + 0.5·KD(T=4) for the student, backward, SGD | views/s |
//! | `nt_xent_fwd_bwd_n1024_d128` | `nt_xent` forward + backward, N = 1024 pairs, D = 128 | ms |
//! | `nt_xent_fwd_bwd_n4096_d128` | the same, N = 4096 | ms |
//! | `simclr_aug_two_views_1thread` | `simclr_cifar(32)`, two views of 512 random `u8` images, one thread | images/s |
//! | `sgemm_2048` | one `(2048, 2048) × (2048, 2048)` f32 matmul: the machine's GEMM ceiling | GFLOP/s |
//!
//! The SGD step is the trainer's (`trainer::engine::step::descend`: backward, gradient norm, update):
//! [`trainer::optim::Optimizer`] over
//! [`trainer::optim::trainable_params`], lr 0.05, momentum 0.9, weight decay 5e-4 (not on rank ≤ 1
//! parameters). The teacher is built on detached copies of its weights, so its forward pass records
//! no graph (PyTorch's `torch.no_grad()`).

use std::collections::HashMap;
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, ModuleT, Shape, Tensor, Var};
use candle_nn::{Init, VarBuilder, VarMap};
use models::{ProjectionHead, ProjectionHeadConfig, ResNet, ResNetConfig, Stem};
use trainer::config::{OptimConfig, OptimizerKind};
use trainer::engine::step::{descend, StepAt};
use trainer::optim::{trainable_params, Optimizer};

/// Views per step: 64 images × 2 views.
const VIEWS: usize = 128;
/// Images of the augmentation figure.
const AUG_IMAGES: usize = 512;
const LR: f64 = 0.05;

/// One figure: its name, its unit, and how to measure it (returns the value for `runs` runs).
struct Figure {
    name: &'static str,
    unit: &'static str,
    run: fn(usize) -> Result<f64>,
}

const FIGURES: [Figure; 7] = [
    Figure {
        name: "teacher_resnet18_forward",
        unit: "views/s",
        run: teacher_forward,
    },
    Figure {
        name: "student_resnet8x4_simclr_step",
        unit: "views/s",
        run: student_step,
    },
    Figure {
        name: "distill_step_r18_to_r8x4",
        unit: "views/s",
        run: distill_step,
    },
    Figure {
        name: "nt_xent_fwd_bwd_n1024_d128",
        unit: "ms",
        run: |runs| nt_xent_fwd_bwd(1024, runs),
    },
    Figure {
        name: "nt_xent_fwd_bwd_n4096_d128",
        unit: "ms",
        run: |runs| nt_xent_fwd_bwd(4096, runs),
    },
    Figure {
        name: "simclr_aug_two_views_1thread",
        unit: "images/s",
        run: augment_two_views,
    },
    Figure {
        name: "sgemm_2048",
        unit: "GFLOP/s",
        run: sgemm,
    },
];

fn main() -> Result<()> {
    let mut runs = 5usize;
    let mut child = false;
    let mut names = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            // cargo bench passes --bench to harness-less benches.
            "--bench" => {}
            // Measure the figures here rather than in child processes.
            "--child" => child = true,
            "--runs" => {
                let v = args.next().context("--runs needs a value")?;
                runs = v.parse().with_context(|| format!("--runs {v}"))?;
                if runs == 0 {
                    bail!("--runs must be at least 1")
                }
            }
            "--list" => {
                for f in &FIGURES {
                    println!("{}\t{}", f.name, f.unit);
                }
                return Ok(());
            }
            "-h" | "--help" => {
                eprintln!(
                    "usage: train_bench [--runs N] [--list] [FIGURE...]\n\
                     each FIGURE (default: all) is measured in a child process of its own"
                );
                return Ok(());
            }
            other if other.starts_with('-') => bail!("unknown option {other}"),
            other => {
                if !FIGURES.iter().any(|f| f.name == other) {
                    bail!(
                        "unknown figure {other}; known: {}",
                        FIGURES.map(|f| f.name).join(", ")
                    )
                }
                names.push(other.to_string());
            }
        }
    }
    if names.is_empty() {
        names = FIGURES.iter().map(|f| f.name.to_string()).collect();
    }
    if !child {
        eprintln!(
            "# train_bench: {} threads (RAYON_NUM_THREADS={}), median of {runs} runs after a warm-up",
            candle_core::utils::get_num_threads(),
            std::env::var("RAYON_NUM_THREADS").unwrap_or_else(|_| "unset".into())
        );
        // Each figure in its own process, so that its peak memory is its own.
        let exe = std::env::current_exe().context("locating the bench binary")?;
        let mut failed = Vec::new();
        for name in &names {
            let status = Command::new(&exe)
                .args(["--child", "--runs", &runs.to_string(), name])
                .status()
                .with_context(|| format!("running {} {name}", exe.display()))?;
            if !status.success() {
                failed.push(name.as_str());
            }
        }
        if !failed.is_empty() {
            bail!("figures failed: {}", failed.join(", "))
        }
        return Ok(());
    }
    // As a training program should: keep freed tensor memory for the next step.
    models::ops::retain_freed_memory();
    for name in names {
        let Some(f) = FIGURES.iter().find(|f| f.name == name) else {
            continue;
        };
        let base = proc_status_mib("VmRSS:");
        let value = (f.run)(runs).with_context(|| f.name.to_string())?;
        let peak = proc_status_mib("VmHWM:");
        let mib = |m: Option<f64>| m.map_or("null".to_string(), |m| format!("{m:.1}"));
        println!(
            "{{\"figure\": \"{}\", \"value\": {value:.3}, \"unit\": \"{}\", \"peak_rss_mib\": {}, \"start_rss_mib\": {}}}",
            f.name,
            f.unit,
            mib(peak),
            mib(base)
        );
    }
    Ok(())
}

/// A memory line of `/proc/self/status` in MiB, where `/proc` has it: `VmHWM:` is the peak
/// resident set so far, `VmRSS:` the current one.
fn proc_status_mib(key: &str) -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with(key))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

/// Seconds of each of `runs` calls of `step`, after one warm-up call; returns the median.
fn median_secs(name: &str, runs: usize, mut step: impl FnMut() -> Result<()>) -> Result<f64> {
    step()?;
    let mut secs = Vec::with_capacity(runs);
    for _ in 0..runs {
        let t = Instant::now();
        step()?;
        secs.push(t.elapsed().as_secs_f64());
    }
    secs.sort_by(f64::total_cmp);
    let median = if runs % 2 == 1 {
        secs[runs / 2]
    } else {
        0.5 * (secs[runs / 2 - 1] + secs[runs / 2])
    };
    eprintln!(
        "# {name}: median {:.2} ms (min {:.2}, max {:.2}) over {runs} runs",
        median * 1e3,
        secs[0] * 1e3,
        secs[runs - 1] * 1e3
    );
    Ok(median)
}

/// A seeded standard-normal tensor (the same on every run of the bench).
fn randn(shape: impl Into<Shape>, seed: u64) -> Result<Tensor> {
    Ok(models::init::seeded_tensor(
        Init::Randn {
            mean: 0.0,
            stdev: 1.0,
        },
        &shape.into(),
        seed,
        "bench-input",
        DType::F32,
        &Device::Cpu,
    )?)
}

fn cifar(cfg: ResNetConfig) -> ResNetConfig {
    cfg.with_stem(Stem::Cifar)
}

/// The teacher ResNet-18 on plain (untracked) tensors: its forward pass records no graph.
fn frozen_teacher() -> Result<ResNet> {
    let cfg = cifar(ResNetConfig::resnet18(10));
    let varmap = VarMap::new();
    let vb = models::init::seeded_var_builder(&varmap, 1, DType::F32, &Device::Cpu);
    ResNet::new(&cfg, vb)?;
    let tensors: HashMap<String, Tensor> = varmap
        .data()
        .lock()
        .map_err(|_| anyhow::anyhow!("poisoned VarMap"))?
        .iter()
        .map(|(k, v): (&String, &Var)| (k.clone(), v.as_tensor().detach()))
        .collect();
    let vb = VarBuilder::from_tensors(tensors, DType::F32, &Device::Cpu);
    Ok(ResNet::new(&cfg, vb)?)
}

/// The student (resnet8x4 with SimCLR's 256→256→128 MLP), its variables and the trainer's SGD.
struct Student {
    backbone: ResNet,
    head: ProjectionHead,
    optimizer: Optimizer,
    _varmap: VarMap,
}

impl Student {
    fn new() -> Result<Self> {
        let varmap = VarMap::new();
        let vb = models::init::seeded_var_builder(&varmap, 2, DType::F32, &Device::Cpu);
        let backbone = ResNet::new(&cifar(ResNetConfig::resnet8x4(10)), vb.clone())?;
        let head = ProjectionHead::new(
            &ProjectionHeadConfig {
                input_dim: backbone.feature_dim(),
                hidden_dim: 256,
                output_dim: 128,
                num_layers: 2,
                batch_norm: false,
            },
            vb.pp("projector"),
        )?;
        let optim = OptimConfig {
            lr: LR,
            optimizer: OptimizerKind::Sgd,
            momentum: 0.9,
            nesterov: false,
            weight_decay: 5e-4,
            ..OptimConfig::default()
        };
        let optimizer = Optimizer::new(trainable_params(&varmap, &[""]), &optim);
        Ok(Self {
            backbone,
            head,
            optimizer,
            _varmap: varmap,
        })
    }

    /// One training step on `xs` with `loss(logits, z_a, z_b)`.
    fn step(
        &mut self,
        xs: &Tensor,
        loss: impl Fn(&Tensor, &Tensor, &Tensor) -> Result<Tensor>,
    ) -> Result<()> {
        let f = self.backbone.forward_features(xs, true)?;
        let z = self.head.forward_t(&f.pooled, true)?;
        let n = xs.dim(0)? / 2;
        let loss = loss(&f.logits, &z.narrow(0, 0, n)?, &z.narrow(0, n, n)?)?;
        let at = StepAt {
            phase: "bench",
            epoch: 0,
        };
        descend(&loss, &mut self.optimizer, LR, 0.0, at)?;
        Ok(())
    }
}

fn teacher_forward(runs: usize) -> Result<f64> {
    let teacher = frozen_teacher()?;
    let xs = randn((VIEWS, 3, 32, 32), 10)?;
    let secs = median_secs("teacher_resnet18_forward", runs, || {
        teacher.forward_t(&xs, false)?;
        Ok(())
    })?;
    Ok(VIEWS as f64 / secs)
}

fn student_step(runs: usize) -> Result<f64> {
    let mut student = Student::new()?;
    let xs = randn((VIEWS, 3, 32, 32), 11)?;
    let secs = median_secs("student_resnet8x4_simclr_step", runs, || {
        student.step(&xs, |_, za, zb| Ok(losses::nt_xent(za, zb, 0.5)?))
    })?;
    Ok(VIEWS as f64 / secs)
}

fn distill_step(runs: usize) -> Result<f64> {
    let teacher = frozen_teacher()?;
    let mut student = Student::new()?;
    let xs = randn((VIEWS, 3, 32, 32), 12)?;
    let secs = median_secs("distill_step_r18_to_r8x4", runs, || {
        let t_logits = teacher.forward_t(&xs, false)?;
        student.step(&xs, |logits, za, zb| {
            let c = losses::nt_xent(za, zb, 0.5)?;
            let d = losses::kd_loss(logits, &t_logits, 4.0)?;
            Ok(((c * 0.5)? + (d * 0.5)?)?)
        })
    })?;
    Ok(VIEWS as f64 / secs)
}

fn nt_xent_fwd_bwd(n: usize, runs: usize) -> Result<f64> {
    let z_a = Var::from_tensor(&randn((n, 128), 13)?)?;
    let z_b = Var::from_tensor(&randn((n, 128), 14)?)?;
    let name = format!("nt_xent_fwd_bwd_n{n}_d128");
    let secs = median_secs(&name, runs, || {
        let loss = losses::nt_xent(z_a.as_tensor(), z_b.as_tensor(), 0.5)?;
        loss.backward()?;
        Ok(())
    })?;
    Ok(secs * 1e3)
}

fn augment_two_views(runs: usize) -> Result<f64> {
    let views = augment::MultiView::repeat(augment::presets::simclr_cifar(32)?, 2)?;
    let images: Vec<u8> = randn(AUG_IMAGES * 3 * 32 * 32, 15)?
        .to_vec1::<f32>()?
        .into_iter()
        .map(|v| ((v * 64.0 + 128.0).clamp(0.0, 255.0)) as u8)
        .collect();
    let indices: Vec<usize> = (0..AUG_IMAGES).collect();
    let pool = rayon::ThreadPoolBuilder::new().num_threads(1).build()?;
    let mut epoch = 0u64;
    let secs = pool.install(|| {
        median_secs("simclr_aug_two_views_1thread", runs, || {
            epoch += 1;
            let out = views.apply_batch(&images, (32, 32), &indices, 0, epoch)?;
            if out.len() != 2 {
                bail!("expected 2 views, got {}", out.len())
            }
            Ok(())
        })
    })?;
    Ok(AUG_IMAGES as f64 / secs)
}

fn sgemm(runs: usize) -> Result<f64> {
    const N: usize = 2048;
    let a = randn((N, N), 16)?;
    let b = randn((N, N), 17)?;
    let secs = median_secs("sgemm_2048", runs, || {
        a.matmul(&b)?;
        Ok(())
    })?;
    Ok(2.0 * (N as f64).powi(3) / secs / 1e9)
}

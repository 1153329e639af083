//! The CIFAR-10 distillation study driver (`cargo xtask study`): a supervised ResNet-18 teacher, one
//! student architecture trained five ways, every figure to `results/`.
//!
//! The study (issue 9):
//! 1. a ResNet-18 (CIFAR stem) teacher trained on the labels (`trainer::train::train_teacher`);
//! 2. a student trained five ways with the same epochs, augmentation (two SimCLR views per image),
//!    initialisation and batch order: supervised (cross-entropy on both views), SimCLR only (α = 0),
//!    KD only (α = 1) and SimCLR + KD at the other α values of the configuration;
//! 3. each evaluated on the test set: classifier head (where trained), weighted kNN (k = 200, T = 0.1)
//!    and a linear probe; mean ± standard deviation over the seeds.
//!
//! **Teacher targets are computed once.** On this 2-core CPU a ResNet-18 forward pass costs about 25
//! times a resnet20 one, and `trainer distill` runs the teacher on both views of every image at every
//! step, which would take the whole hour for one student. The students here distil instead from the
//! teacher's logits on the *un-augmented* training image, computed once ("fixed teacher" targets in
//! the terms of Beyer et al. 2022, *Knowledge distillation: A good teacher is patient and
//! consistent*): the same loss, `(1 − α)·NT-Xent + α·KD·T²`, with a cheaper, less consistent target.
//! The student loop below otherwise mirrors the trainer's (same optimizer, schedule, views).

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use candle_core::{DType, Tensor};
use clap::Parser;
use plotters::prelude::*;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use trainer::data::Split;
use trainer::eval::{self, EvalReport};
use trainer::metrics::MetricsLog;
use trainer::net::Net;
use trainer::optim::{trainable_params, Optimizer};
use trainer::schedule::learning_rate;
use trainer::train::{Ctx, MEAN, STD};
use trainer::Config;

/// The CIFAR-10 distillation study: ResNet-18 teacher, one student trained five ways, results/.
#[derive(Parser, Debug)]
#[command(name = "study")]
struct Cli {
    /// The study configuration (TOML: `seeds`, `alphas`, and a `[trainer]` table of trainer options).
    #[arg(long, default_value = "configs/cifar10_cpu_study.toml")]
    config: PathBuf,
    /// A tiny end-to-end run (configs/cifar10_cpu_quick.toml), results to target/study/quick/results.
    #[arg(long)]
    quick: bool,
    /// Directory with CIFAR-10's train.tar.gz and test.tar.gz (relative to the workspace root).
    #[arg(long, default_value = "../shared/data/cifar10")]
    data_dir: String,
    /// Where the run folders go.
    #[arg(long)]
    runs: Option<PathBuf>,
    /// Where the report, JSON and plots go.
    #[arg(long)]
    results: Option<PathBuf>,
    /// Seeds of the students (overrides the configuration), e.g. `--seeds 0,1,2`.
    #[arg(long, value_delimiter = ',')]
    seeds: Option<Vec<u64>>,
    /// Reuse the teacher in the runs folder when it is there.
    #[arg(long)]
    reuse_teacher: bool,
    /// Rewrite the report and plots from the results JSON of an earlier run (no training).
    #[arg(long)]
    report_only: bool,
    /// With `--report-only`: results JSON files of further seeds (runs with `--reuse-teacher
    /// --seeds ...`) whose students are added to the report; their wall time is added too.
    #[arg(long, value_delimiter = ',')]
    merge: Vec<PathBuf>,
    /// Train only the students that use the teacher (α > 0): for a teacher ablation whose
    /// supervised and SimCLR-only students would repeat the main run's.
    #[arg(long)]
    skip_baselines: bool,
    /// Train only these students, by key: `supervised`, `alpha_0` (SimCLR only), `alpha_1` (KD only),
    /// `alpha_A` for the configuration's other α (e.g. `--methods alpha_0,alpha_1`).
    #[arg(long, value_delimiter = ',')]
    methods: Option<Vec<String>>,
    /// Only parse and validate the configuration (a study file, or a plain trainer file), then exit.
    #[arg(long)]
    check: bool,
}

/// The study configuration file.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct StudyConfig {
    /// Seeds of the students (the teacher uses `trainer.seed`).
    seeds: Vec<u64>,
    /// α of the SimCLR + KD students besides 0 (SimCLR only) and 1 (KD only).
    alphas: Vec<f64>,
    /// Training images per class for the teacher (the first N of each class). The students, and every
    /// kNN bank and linear probe, use the first `trainer.data.train_per_class` of those (the transfer
    /// set). Default: the students' number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    teacher_train_per_class: Option<usize>,
    /// Trainer options: data subset, teacher, student, eval.
    trainer: Config,
}

/// How a student is trained.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Method {
    /// Cross-entropy on the labels, both views.
    Supervised,
    /// `(1 − α)·NT-Xent + α·KD·T²`.
    Distill(f64),
}

impl Method {
    fn label(self) -> String {
        match self {
            Method::Supervised => "supervised (labels)".into(),
            Method::Distill(0.0) => "SimCLR only (α = 0)".into(),
            Method::Distill(1.0) => "KD only (α = 1)".into(),
            Method::Distill(a) => format!("SimCLR + KD (α = {a})"),
        }
    }
    fn key(self) -> String {
        match self {
            Method::Supervised => "supervised".into(),
            Method::Distill(a) => format!("alpha_{a}"),
        }
    }
    fn has_classifier(self) -> bool {
        !matches!(self, Method::Distill(a) if a == 0.0)
    }
}

/// One trained student.
#[derive(Debug, Clone, Serialize)]
struct StudentResult {
    method: String,
    key: String,
    seed: u64,
    eval: EvalReport,
    train_seconds: f64,
    images_per_second: f64,
    epochs: Vec<Value>,
}

fn scalar(t: &Tensor) -> Result<f64> {
    Ok(t.to_dtype(DType::F64)?.to_scalar::<f64>()?)
}

/// Test-set classifier accuracy and kNN accuracy of `net` (one feature extraction).
fn quick_eval(ctx: &Ctx, net: &Net) -> Result<(f64, f64)> {
    let p = ctx.eval_pipeline()?;
    let tr = eval::extract(net, &ctx.split.train, &p, &ctx.device, 256)?;
    let te = eval::extract(net, &ctx.split.test, &p, &ctx.device, 256)?;
    let classes = ctx.split.train.num_classes();
    let acc = eval::accuracy(&te.logits, te.classes, &ctx.split.test.labels);
    let knn = eval::knn_accuracy(
        &tr.features,
        &ctx.split.train.labels,
        &te.features,
        &ctx.split.test.labels,
        tr.dim,
        classes,
        ctx.cfg.eval.knn_k,
        ctx.cfg.eval.knn_temperature,
    )?;
    Ok((acc, knn))
}

/// The teacher: supervised cross-entropy on one view (random resized crop 0.6–1, flip), as
/// `trainer teacher` trains it, with the trainer's [`Optimizer`]. Returns the network, epoch records and seconds.
fn train_teacher(ctx: &Ctx, dir: &Path) -> Result<(Net, Vec<Value>, f64)> {
    let cfg = ctx.cfg;
    let t = &cfg.teacher;
    let train = &ctx.split.train;
    let size = cfg.data.image_size;
    std::fs::create_dir_all(dir)?;
    let net = Net::new(
        &t.arch,
        train.num_classes(),
        size,
        None,
        cfg.seed,
        &ctx.device,
    )?;
    let mut sgd = Optimizer::new(trainable_params(&net.varmap, &[""]), &t.optim);
    let pipeline = augment::Pipeline::new(
        augment::Compose::new()
            .then(augment::RandomResizedCrop::new((size, size))?.with_scale(0.6, 1.0)?)
            .then(augment::RandomHorizontalFlip::new(0.5)?),
        size,
    )?
    .with_normalize(MEAN, STD)?;
    let views = augment::MultiView::repeat(pipeline, 1)?;
    let bs = t.optim.batch_size;
    let steps_per_epoch = train.len() / bs;
    let metrics_path = dir.join("metrics.jsonl");
    if metrics_path.exists() {
        std::fs::remove_file(&metrics_path)?;
    }
    let mut log = MetricsLog::open(&metrics_path)?;
    let images = Arc::new(train.images.clone());
    let seed = cfg.seed ^ 0x7EAC;
    let mut seconds = 0.0;
    let mut history = Vec::new();
    for epoch in 0..t.optim.epochs {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed ^ ((epoch as u64 + 1) << 32));
        let mut order: Vec<usize> = (0..train.len()).collect();
        order.shuffle(&mut rng);
        let batches: Vec<Vec<usize>> = order.chunks_exact(bs).map(<[usize]>::to_vec).collect();
        let e0 = Instant::now();
        let mut sum = 0.0;
        let prefetch = views.prefetch(
            images.clone(),
            (train.height, train.width),
            batches.clone(),
            seed,
            epoch as u64,
            2,
        )?;
        for (b, (v, indices)) in prefetch.zip(batches.iter()).enumerate() {
            let v = v?;
            let labels: Vec<u32> = indices.iter().map(|&i| train.labels[i]).collect();
            let labels = Tensor::from_vec(labels, indices.len(), &ctx.device)?;
            let (f, _) = net.forward(&v[0].to_device(&ctx.device)?, true)?;
            let loss = candle_nn::loss::cross_entropy(&f.logits, &labels)?;
            let l = scalar(&loss)?;
            if !l.is_finite() {
                bail!("teacher: non-finite loss at epoch {epoch}, batch {b}");
            }
            sum += l;
            let grads = loss.backward()?;
            let lr = learning_rate(&t.optim, sgd.steps(), steps_per_epoch);
            sgd.step(&grads, lr, 1.0)?;
            if (b + 1) % 10 == 0 {
                println!(
                    "  teacher epoch {} batch {}/{}: loss {l:.4} ({:.1} img/s)",
                    epoch + 1,
                    b + 1,
                    steps_per_epoch,
                    ((b + 1) * bs) as f64 / e0.elapsed().as_secs_f64()
                );
            }
        }
        let secs = e0.elapsed().as_secs_f64();
        seconds += secs;
        let rec = json!({"kind": "epoch", "phase": "teacher", "epoch": epoch, "step": sgd.steps(),
            "seconds": secs, "images_per_s": (steps_per_epoch * bs) as f64 / secs.max(1e-9),
            "cross_entropy": sum / steps_per_epoch.max(1) as f64});
        log.write(&rec)?;
        println!("teacher epoch {}/{}: {rec}", epoch + 1, t.optim.epochs);
        history.push(rec);
    }
    net.varmap.save(dir.join("teacher.safetensors"))?;
    Ok((net, history, seconds))
}

/// Trains one student in `dir` (see the module docs); `teacher_logits`: `(N_train, C)`.
fn train_student(
    ctx: &Ctx,
    method: Method,
    seed: u64,
    teacher_logits: Option<&Tensor>,
    dir: &Path,
) -> Result<StudentResult> {
    let cfg = ctx.cfg;
    let s = &cfg.student;
    let train = &ctx.split.train;
    let classes = train.num_classes();
    std::fs::create_dir_all(dir)?;
    let net = Net::new(
        &s.arch,
        classes,
        cfg.data.image_size,
        Some(&s.projection),
        seed.wrapping_add(1),
        &ctx.device,
    )?;
    let mut optim = Optimizer::new(trainable_params(&net.varmap, &[""]), &s.optim);
    let alpha = match method {
        Method::Distill(a) => a,
        Method::Supervised => 0.0,
    };
    let objective = losses::SimClrDistillation::new(losses::SimClrDistillationConfig {
        temperature: s.temperature,
        kd_temperature: s.kd_temperature,
        alpha,
    })?;
    let views = augment::MultiView::repeat(
        augment::presets::simclr_cifar(cfg.data.image_size)?.with_normalize(MEAN, STD)?,
        2,
    )?;
    let bs = s.optim.batch_size;
    if bs > train.len() {
        bail!(
            "batch size {bs} is larger than the training set ({})",
            train.len()
        );
    }
    let steps_per_epoch = train.len() / bs;
    let metrics_path = dir.join("metrics.jsonl");
    if metrics_path.exists() {
        std::fs::remove_file(&metrics_path)?;
    }
    let mut log = MetricsLog::open(&metrics_path)?;
    let images = Arc::new(train.images.clone());
    let dims = (train.height, train.width);
    let t0 = Instant::now();
    let mut train_seconds = 0.0;
    let mut images_done = 0usize;
    let mut epochs = Vec::new();
    let mut final_eval = None;
    // The same batch order and views for every method of a seed.
    let order_seed = seed ^ 0x57D;
    for epoch in 0..s.optim.epochs {
        let mut rng =
            rand_chacha::ChaCha8Rng::seed_from_u64(order_seed ^ ((epoch as u64 + 1) << 32));
        let mut order: Vec<usize> = (0..train.len()).collect();
        order.shuffle(&mut rng);
        let batches: Vec<Vec<usize>> = order.chunks_exact(bs).map(<[usize]>::to_vec).collect();
        let e0 = Instant::now();
        let mut sums: Vec<(&'static str, f64)> = Vec::new();
        let prefetch = views.prefetch(
            images.clone(),
            dims,
            batches.clone(),
            order_seed,
            epoch as u64,
            2,
        )?;
        for (v, indices) in prefetch.zip(batches.iter()) {
            let v = v?;
            let n = indices.len();
            let xs = Tensor::cat(&[&v[0], &v[1]], 0)?.to_device(&ctx.device)?;
            let (f, z) = net.forward(&xs, true)?;
            let parts: Vec<(&'static str, Tensor)> = match method {
                Method::Supervised => {
                    let labels: Vec<u32> = indices
                        .iter()
                        .chain(indices.iter())
                        .map(|&i| train.labels[i])
                        .collect();
                    let labels = Tensor::from_vec(labels, 2 * n, &ctx.device)?;
                    let ce = candle_nn::loss::cross_entropy(&f.logits, &labels)?;
                    vec![("cross_entropy", ce)]
                }
                Method::Distill(a) => {
                    let z = z.context("student without projection head")?;
                    let (za, zb) = (z.narrow(0, 0, n)?, z.narrow(0, n, n)?);
                    if a == 0.0 {
                        let c = losses::nt_xent(&za, &zb, s.temperature)?;
                        vec![("total", c.clone()), ("contrastive", c)]
                    } else {
                        let tl = teacher_logits.context("a KD student needs teacher logits")?;
                        let idx: Vec<u32> = indices
                            .iter()
                            .chain(indices.iter())
                            .map(|&i| i as u32)
                            .collect();
                        let idx = Tensor::from_vec(idx, 2 * n, tl.device())?;
                        let t = tl.index_select(&idx, 0)?.to_device(&ctx.device)?;
                        let l = objective.forward(&f.logits, &t, &za, &zb)?;
                        vec![
                            ("total", l.total),
                            ("contrastive", l.contrastive),
                            ("distillation", l.distillation),
                        ]
                    }
                }
            };
            let step = optim.steps();
            let values: Vec<(&'static str, f64)> = parts
                .iter()
                .map(|(k, t)| Ok((*k, scalar(t)?)))
                .collect::<Result<_>>()?;
            if values.iter().any(|(_, v)| !v.is_finite()) {
                bail!(
                    "{}: non-finite loss at step {step}: {values:?}",
                    method.label()
                );
            }
            let grads = parts[0].1.backward()?;
            let lr = learning_rate(&s.optim, step, steps_per_epoch);
            optim.step(&grads, lr, 1.0)?;
            images_done += n;
            if sums.is_empty() {
                sums = values.iter().map(|(k, _)| (*k, 0.0)).collect();
            }
            for (acc, (_, v)) in sums.iter_mut().zip(&values) {
                acc.1 += v;
            }
        }
        let secs = e0.elapsed().as_secs_f64();
        train_seconds += secs;
        let mut rec = json!({"kind": "epoch", "phase": "student", "method": method.key(), "seed": seed,
            "epoch": epoch, "step": optim.steps(), "seconds": secs,
            "images_per_s": (steps_per_epoch * bs) as f64 / secs.max(1e-9)});
        for (k, v) in &sums {
            rec[*k] = json!(v / steps_per_epoch.max(1) as f64);
        }
        let every = cfg.eval.every;
        if epoch + 1 == s.optim.epochs {
            // The last epoch's figures are the final evaluation's (one feature extraction, not two).
            let e = trainer::train::evaluate(ctx, &net, method.has_classifier(), true)?;
            rec["knn_accuracy"] = json!(e.knn_accuracy);
            if let Some(acc) = e.classifier_accuracy {
                rec["test_accuracy"] = json!(acc);
            }
            final_eval = Some(e);
        } else if every > 0 && (epoch + 1) % every == 0 {
            let (acc, knn) = quick_eval(ctx, &net)?;
            rec["knn_accuracy"] = json!(knn);
            if method.has_classifier() {
                rec["test_accuracy"] = json!(acc);
            }
        }
        log.write(&rec)?;
        println!(
            "  {} seed {seed} epoch {}/{}: {rec}",
            method.label(),
            epoch + 1,
            s.optim.epochs
        );
        epochs.push(rec);
    }
    let eval = match final_eval {
        Some(e) => e,
        None => trainer::train::evaluate(ctx, &net, method.has_classifier(), true)?,
    };
    println!(
        "  {} seed {seed}: {:?} ({:.0} s in all)",
        method.label(),
        eval,
        t0.elapsed().as_secs_f64()
    );
    Ok(StudentResult {
        method: method.label(),
        key: method.key(),
        seed,
        eval,
        train_seconds,
        images_per_second: images_done as f64 / train_seconds.max(1e-9),
        epochs,
    })
}

fn mean_std(xs: &[f64]) -> (f64, f64) {
    let n = xs.len().max(1) as f64;
    let m = xs.iter().sum::<f64>() / n;
    let var = if xs.len() > 1 {
        xs.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (xs.len() - 1) as f64
    } else {
        0.0
    };
    (m, var.sqrt())
}

fn fmt_pm(xs: &[f64]) -> String {
    if xs.is_empty() {
        return "–".into();
    }
    let (m, s) = mean_std(xs);
    if xs.len() > 1 {
        format!("{:.2} ± {:.2}%", 100.0 * m, 100.0 * s)
    } else {
        format!("{:.2}%", 100.0 * m)
    }
}

/// Bar chart: kNN, linear-probe and classifier accuracy per method (means; error bars = std).
fn plot_bars(path: &Path, rows: &[(String, [Vec<f64>; 3])]) -> Result<()> {
    let draw = || -> std::result::Result<(), Box<dyn std::error::Error>> {
        let root = SVGBackend::new(path, (1000, 460)).into_drawing_area();
        root.fill(&WHITE)?;
        let n = rows.len();
        let mut chart = ChartBuilder::on(&root)
            .caption("CIFAR-10 test accuracy per method (%)", ("sans-serif", 20))
            .margin(15)
            .x_label_area_size(60)
            .y_label_area_size(50)
            .build_cartesian_2d(0.0..n as f64, 0.0..100.0)?;
        let labels: Vec<String> = rows.iter().map(|r| r.0.clone()).collect();
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(n * 2 + 1)
            .x_label_formatter(&|x: &f64| {
                let i = x.floor() as usize;
                if (x - i as f64 - 0.5).abs() < 1e-6 && i < labels.len() {
                    labels[i].clone()
                } else {
                    String::new()
                }
            })
            .y_desc("accuracy (%)")
            .draw()?;
        let names = ["kNN (k = 200)", "linear probe", "classifier head"];
        let colors = [BLUE, GREEN, RED];
        for (m, (name, color)) in names.iter().zip(colors).enumerate() {
            let mut rects = Vec::new();
            let mut bars = Vec::new();
            for (i, (_, vals)) in rows.iter().enumerate() {
                if vals[m].is_empty() {
                    continue;
                }
                let (mean, std) = mean_std(&vals[m]);
                let x0 = i as f64 + 0.1 + 0.27 * m as f64;
                rects.push(Rectangle::new(
                    [(x0, 0.0), (x0 + 0.25, 100.0 * mean)],
                    color.filled(),
                ));
                if std > 0.0 {
                    let xc = x0 + 0.125;
                    bars.push(PathElement::new(
                        vec![(xc, 100.0 * (mean - std)), (xc, 100.0 * (mean + std))],
                        BLACK.stroke_width(2),
                    ));
                }
            }
            chart
                .draw_series(rects)?
                .label(*name)
                .legend(move |(x, y)| {
                    Rectangle::new([(x, y - 5), (x + 12, y + 5)], color.filled())
                });
            chart.draw_series(bars)?;
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()?;
        root.present()?;
        Ok(())
    };
    draw().map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
}

fn main() -> Result<()> {
    // As `trainer` does: reuse freed tensor memory between steps (glibc only).
    models::ops::retain_freed_memory();
    let cli = Cli::parse();
    let config_path = if cli.quick {
        PathBuf::from("configs/cifar10_cpu_quick.toml")
    } else {
        cli.config.clone()
    };
    let text = std::fs::read_to_string(&config_path)
        .with_context(|| format!("reading {}", config_path.display()))?;
    if cli.check && !text.contains("[trainer") {
        Config::from_toml_str(&text)?.validate()?;
        println!("{}: a valid trainer configuration", config_path.display());
        return Ok(());
    }
    let mut study: StudyConfig =
        toml::from_str(&text).with_context(|| format!("parsing {}", config_path.display()))?;
    if let Some(seeds) = &cli.seeds {
        study.seeds = seeds.clone();
    }
    if study.seeds.is_empty() {
        bail!("{}: seeds must not be empty", config_path.display());
    }
    let runs = cli.runs.clone().unwrap_or_else(|| {
        if cli.quick {
            PathBuf::from("target/study/quick")
        } else {
            PathBuf::from("target/study/full")
        }
    });
    let results = cli.results.clone().unwrap_or_else(|| {
        if cli.quick {
            runs.join("results")
        } else {
            PathBuf::from("results")
        }
    });
    std::fs::create_dir_all(&runs)?;
    std::fs::create_dir_all(&results)?;
    if cli.report_only {
        return report_only(&results, &cli.merge);
    }
    let mut cfg = study.trainer.clone();
    cfg.data.source = format!("cifar10-tar:{}", cli.data_dir);
    cfg.out = runs.join("teacher");
    cfg.quiet = true;
    cfg.validate()?;
    if cli.check {
        println!("{}: a valid study configuration", config_path.display());
        return Ok(());
    }
    let wall = Instant::now();

    println!("loading {} ...", cfg.data.source);
    // The teacher's training set; the students' transfer set is the first images of each class of it.
    let student_per_class = cfg.data.train_per_class;
    let teacher_per_class = study.teacher_train_per_class.unwrap_or(student_per_class);
    if student_per_class > 0 && (teacher_per_class == 0 || teacher_per_class < student_per_class) {
        bail!(
            "teacher_train_per_class ({teacher_per_class}) must be at least trainer.data.train_per_class \
             ({student_per_class}): the transfer set is a part of the teacher's training set"
        );
    }
    let mut load_cfg = cfg.clone();
    load_cfg.data.train_per_class = teacher_per_class;
    let teacher_split: Split = trainer::run::load_data(&load_cfg)?;
    let split = Split {
        train: if student_per_class > 0 {
            teacher_split.train.take_per_class(student_per_class)
        } else {
            teacher_split.train.clone()
        },
        test: teacher_split.test.clone(),
    };
    let load_seconds = wall.elapsed().as_secs_f64();
    println!(
        "data: {} training images for the teacher, {} for the students, {} test images, {} classes ({load_seconds:.0} s)",
        teacher_split.train.len(),
        split.train.len(),
        split.test.len(),
        split.train.num_classes()
    );
    let interrupt = AtomicBool::new(false);
    let device = trainer::device::open_device(&cfg.device)?;
    let ctx = Ctx {
        cfg: &cfg,
        device: device.clone(),
        split: &split,
        train_images: Arc::new(split.train.images.clone()),
        interrupt: &interrupt,
    };
    let teacher_ctx = Ctx {
        cfg: &cfg,
        device: device.clone(),
        split: &teacher_split,
        train_images: Arc::new(Vec::new()),
        interrupt: &interrupt,
    };

    // The students to train (checked before the teacher's hour, not after it).
    let mut methods = vec![
        Method::Supervised,
        Method::Distill(0.0),
        Method::Distill(1.0),
    ];
    methods.extend(study.alphas.iter().map(|&a| Method::Distill(a)));
    if cli.skip_baselines {
        methods.retain(|m| matches!(m, Method::Distill(a) if *a > 0.0));
    }
    if let Some(keys) = &cli.methods {
        let known: Vec<String> = methods.iter().map(|m| m.key()).collect();
        if let Some(k) = keys.iter().find(|k| !known.contains(k)) {
            bail!("--methods: no student {k:?} in this study (its students: {known:?})");
        }
        methods.retain(|m| keys.contains(&m.key()));
    }

    // 1. The teacher.
    let teacher_dir = runs.join("teacher");
    let saved = teacher_dir.join("teacher.safetensors");
    let t0 = Instant::now();
    let (teacher, teacher_seconds, mut teacher_history) = if cli.reuse_teacher && saved.exists() {
        println!("teacher: reusing {}", saved.display());
        let mut net = Net::new(
            &cfg.teacher.arch,
            split.train.num_classes(),
            cfg.data.image_size,
            None,
            cfg.seed,
            &device,
        )?;
        net.varmap.load(&saved)?;
        // The reused teacher's epochs and training time, from its metrics.jsonl.
        let (records, _) = trainer::metrics::read_metrics(&teacher_dir.join("metrics.jsonl"))?;
        let history: Vec<Value> = records
            .into_iter()
            .filter(|r| r["kind"] == "epoch")
            .collect();
        let secs = history.iter().filter_map(|r| r["seconds"].as_f64()).sum();
        (net, secs, history)
    } else {
        println!(
            "teacher: {} supervised, {} epochs ...",
            cfg.teacher.arch, cfg.teacher.optim.epochs
        );
        let (net, history, secs) = train_teacher(&teacher_ctx, &teacher_dir)?;
        (net, secs, history)
    };
    let p = ctx.eval_pipeline()?;
    let e0 = Instant::now();
    let tr = eval::extract(&teacher, &split.train, &p, &device, 256)?;
    let te = eval::extract(&teacher, &split.test, &p, &device, 256)?;
    let classes = split.train.num_classes();
    let teacher_eval = EvalReport {
        classifier_accuracy: Some(eval::accuracy(&te.logits, te.classes, &split.test.labels)),
        knn_accuracy: eval::knn_accuracy(
            &tr.features,
            &split.train.labels,
            &te.features,
            &split.test.labels,
            tr.dim,
            classes,
            cfg.eval.knn_k,
            cfg.eval.knn_temperature,
        )?,
        linear_probe_accuracy: Some(
            eval::linear_probe(
                &tr.features,
                &split.train.labels,
                &te.features,
                &split.test.labels,
                tr.dim,
                classes,
                cfg.eval.linear_epochs,
                cfg.eval.linear_lr,
                cfg.seed,
            )?
            .accuracy,
        ),
        test_images: split.test.len(),
    };
    let teacher_train_acc = eval::accuracy(&tr.logits, tr.classes, &split.train.labels);
    if let (Some(last), Some(acc)) = (teacher_history.last_mut(), teacher_eval.classifier_accuracy)
    {
        last["test_accuracy"] = json!(acc);
    }
    let teacher_logits =
        Tensor::from_vec(tr.logits.clone(), (split.train.len(), tr.classes), &device)?;
    println!(
        "teacher: {teacher_eval:?}, train accuracy {:.2}% ({:.0} s training, {:.0} s evaluation and targets)",
        100.0 * teacher_train_acc,
        teacher_seconds,
        e0.elapsed().as_secs_f64()
    );
    let teacher_total = t0.elapsed().as_secs_f64();

    // 2. The students.
    let mut students = Vec::new();
    for &seed in &study.seeds {
        for &m in &methods {
            let dir = runs.join(format!("student_{}_seed{seed}", m.key()));
            println!(
                "student {} ({}), seed {seed} ...",
                m.label(),
                cfg.student.arch
            );
            let r = train_student(&ctx, m, seed, Some(&teacher_logits), &dir)?;
            students.push(r);
            // Write the report after every student: a partial study still leaves its figures.
            write_report(
                &results,
                &study,
                &cfg,
                &cli.data_dir,
                &methods,
                &teacher_eval,
                teacher_train_acc,
                teacher_seconds,
                &teacher_history,
                &students,
                wall.elapsed().as_secs_f64(),
                load_seconds,
                teacher_total,
                (teacher_split.train.len(), split.train.len()),
            )?;
        }
    }
    println!(
        "study done in {:.0} s; report in {}",
        wall.elapsed().as_secs_f64(),
        results.display()
    );
    Ok(())
}

fn eval_from_json(v: &Value) -> EvalReport {
    EvalReport {
        classifier_accuracy: v["classifier_accuracy"].as_f64(),
        knn_accuracy: v["knn_accuracy"].as_f64().unwrap_or(f64::NAN),
        linear_probe_accuracy: v["linear_probe_accuracy"].as_f64(),
        test_images: v["test_images"].as_u64().unwrap_or(0) as usize,
    }
}

/// `--report-only`: the report and plots again from `results/cifar10_cpu_study.json`.
fn report_only(results: &Path, merge: &[PathBuf]) -> Result<()> {
    let read = |path: &Path| -> Result<Value> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        Ok(serde_json::from_str(&text)?)
    };
    let j = read(&results.join("cifar10_cpu_study.json"))?;
    let mut study: StudyConfig = serde_json::from_value(j["config"].clone())?;
    let f = |v: &Value| v.as_f64().unwrap_or(f64::NAN);
    let t = &j["teacher"];
    let mut all: Vec<Value> = j["students"].as_array().cloned().unwrap_or_default();
    let mut wall = f(&j["wall_seconds"]);
    for m in merge {
        let other = read(m)?;
        all.extend(other["students"].as_array().cloned().unwrap_or_default());
        wall += f(&other["wall_seconds"]);
        for seed in other["config"]["seeds"]
            .as_array()
            .cloned()
            .unwrap_or_default()
        {
            if let Some(seed) = seed.as_u64() {
                if !study.seeds.contains(&seed) {
                    study.seeds.push(seed);
                }
            }
        }
    }
    let students: Vec<StudentResult> = all
        .iter()
        .map(|s| StudentResult {
            method: s["method"].as_str().unwrap_or_default().to_string(),
            key: s["key"].as_str().unwrap_or_default().to_string(),
            seed: s["seed"].as_u64().unwrap_or(0),
            eval: eval_from_json(&s["eval"]),
            train_seconds: f(&s["train_seconds"]),
            images_per_second: f(&s["images_per_second"]),
            epochs: s["epochs"].as_array().cloned().unwrap_or_default(),
        })
        .collect();
    let mut methods = vec![
        Method::Supervised,
        Method::Distill(0.0),
        Method::Distill(1.0),
    ];
    methods.extend(study.alphas.iter().map(|&a| Method::Distill(a)));
    // The students the run trained (`--methods`): as its JSON lists them, or else those with results.
    match j["methods"].as_array() {
        Some(keys) => methods.retain(|m| keys.iter().any(|k| k.as_str() == Some(&m.key()))),
        None => methods.retain(|m| students.iter().any(|s| s.key == m.key())),
    }
    write_report(
        results,
        &study,
        &study.trainer,
        j["data_dir"].as_str().unwrap_or_default(),
        &methods,
        &eval_from_json(&t["eval"]),
        f(&t["train_accuracy"]),
        f(&t["train_seconds"]),
        t["epochs"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default(),
        &students,
        wall,
        f(&j["data_load_seconds"]),
        f(&t["seconds_with_eval_and_targets"]),
        (
            j["teacher_train_images"]
                .as_u64()
                .or(j["train_images"].as_u64())
                .unwrap_or_default() as usize,
            j["train_images"].as_u64().unwrap_or_default() as usize,
        ),
    )?;
    println!("rewrote the report in {}", results.display());
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn write_report(
    results: &Path,
    study: &StudyConfig,
    cfg: &Config,
    data_dir: &str,
    methods: &[Method],
    teacher_eval: &EvalReport,
    teacher_train_acc: f64,
    teacher_seconds: f64,
    teacher_history: &[Value],
    students: &[StudentResult],
    wall_seconds: f64,
    load_seconds: f64,
    teacher_total: f64,
    (teacher_train_images, students_train_images): (usize, usize),
) -> Result<()> {
    let pick = |m: Method| -> Vec<&StudentResult> {
        students.iter().filter(|s| s.key == m.key()).collect()
    };
    let mut table = String::from(
        "| method | classifier acc | kNN acc (k = 200, T = 0.1) | linear-probe acc | train time / seed | seeds |\n\
         | --- | ---: | ---: | ---: | ---: | ---: |\n",
    );
    let t = teacher_eval;
    table.push_str(&format!(
        "| teacher: {} supervised | {} | {} | {} | {:.0} s | 1 |\n",
        cfg.teacher.arch,
        fmt_pm(&t.classifier_accuracy.into_iter().collect::<Vec<_>>()),
        fmt_pm(&[t.knn_accuracy]),
        fmt_pm(&t.linear_probe_accuracy.into_iter().collect::<Vec<_>>()),
        teacher_seconds
    ));
    let mut bars = vec![(
        format!("teacher {}", cfg.teacher.arch),
        [
            vec![t.knn_accuracy],
            t.linear_probe_accuracy.into_iter().collect(),
            t.classifier_accuracy.into_iter().collect(),
        ],
    )];
    let mut aggregates = Vec::new();
    for &m in methods {
        let rs = pick(m);
        if rs.is_empty() {
            continue;
        }
        let cls: Vec<f64> = rs
            .iter()
            .filter_map(|r| r.eval.classifier_accuracy)
            .collect();
        let knn: Vec<f64> = rs.iter().map(|r| r.eval.knn_accuracy).collect();
        let lin: Vec<f64> = rs
            .iter()
            .filter_map(|r| r.eval.linear_probe_accuracy)
            .collect();
        let secs: Vec<f64> = rs.iter().map(|r| r.train_seconds).collect();
        table.push_str(&format!(
            "| student {}: {} | {} | {} | {} | {:.0} s | {} |\n",
            cfg.student.arch,
            m.label(),
            fmt_pm(&cls),
            fmt_pm(&knn),
            fmt_pm(&lin),
            mean_std(&secs).0,
            rs.len()
        ));
        let short = match m {
            Method::Supervised => "supervised".to_string(),
            Method::Distill(0.0) => "SimCLR".to_string(),
            Method::Distill(1.0) => "KD".to_string(),
            Method::Distill(a) => format!("SimCLR+KD {a}"),
        };
        bars.push((short, [knn.clone(), lin.clone(), cls.clone()]));
        let ms = |xs: &[f64]| {
            let (m, s) = mean_std(xs);
            json!({"values": xs, "mean": m, "std": s})
        };
        aggregates.push(json!({"method": m.label(), "key": m.key(),
            "classifier_accuracy": ms(&cls), "knn_accuracy": ms(&knn),
            "linear_probe_accuracy": ms(&lin), "train_seconds": ms(&secs)}));
    }
    plot_bars(&results.join("cifar10_cpu_study_accuracy.svg"), &bars)?;
    let mut curves: Vec<(String, Vec<Value>)> = vec![];
    if !teacher_history.is_empty() {
        curves.push(("teacher".into(), teacher_history.to_vec()));
    }
    let first_seed = study.seeds[0];
    for r in students.iter().filter(|r| r.seed == first_seed) {
        curves.push((r.key.clone(), r.epochs.clone()));
    }
    trainer::report::plot_curves(&results.join("cifar10_cpu_study_curves.svg"), &curves)?;
    let json = json!({
        "title": "CIFAR-10 distillation study on a 2-core CPU",
        "config": study,
        "data_dir": data_dir,
        "teacher_train_images": teacher_train_images,
        "train_images": students_train_images,
        "test_images": teacher_eval.test_images,
        "wall_seconds": wall_seconds,
        "data_load_seconds": load_seconds,
        "teacher": {"arch": cfg.teacher.arch, "eval": teacher_eval, "train_accuracy": teacher_train_acc,
                    "train_seconds": teacher_seconds, "seconds_with_eval_and_targets": teacher_total,
                    "epochs": teacher_history},
        "methods": methods.iter().map(|m| m.key()).collect::<Vec<_>>(),
        "students": students,
        "aggregates": aggregates,
    });
    trainer::checkpoint::write_atomic(
        &results.join("cifar10_cpu_study.json"),
        serde_json::to_string_pretty(&json)?.as_bytes(),
    )?;
    let mut gains = String::new();
    if !pick(Method::Distill(0.0)).is_empty() {
        // Paired by seed: each student against the SimCLR-only student of the same seed (same
        // initialisation, batches and views), mean ± standard deviation over the seeds.
        let base: Vec<(u64, f64)> = pick(Method::Distill(0.0))
            .iter()
            .map(|r| (r.seed, r.eval.knn_accuracy))
            .collect();
        let diffs = |m: Method| -> Vec<f64> {
            pick(m)
                .iter()
                .filter_map(|r| {
                    base.iter()
                        .find(|(s, _)| *s == r.seed)
                        .map(|(_, b)| r.eval.knn_accuracy - b)
                })
                .collect()
        };
        gains.push_str(
            "kNN accuracy minus the SimCLR-only student's of the same seed, in points (mean ± std over seeds):",
        );
        for &m in methods {
            let d = diffs(m);
            if matches!(m, Method::Distill(a) if a == 0.0) || d.is_empty() {
                continue;
            }
            let (mean, std) = mean_std(&d);
            let name = match m {
                Method::Supervised => "supervised".to_string(),
                Method::Distill(a) => format!("α = {a}"),
            };
            if d.len() > 1 {
                gains.push_str(&format!(
                    " {name}: {:+.2} ± {:.2};",
                    100.0 * mean,
                    100.0 * std
                ));
            } else {
                gains.push_str(&format!(" {name}: {:+.2};", 100.0 * mean));
            }
        }
        let (b, _) = mean_std(&base.iter().map(|x| x.1).collect::<Vec<_>>());
        gains.push_str(&format!(" teacher: {:+.2}.", 100.0 * (t.knn_accuracy - b)));
        let n = t.test_images.max(1) as f64;
        gains.push_str(&format!(
            " One accuracy near {:.0}% on {} test images has a binomial standard error of {:.2} points.\n",
            100.0 * b,
            t.test_images,
            100.0 * (b * (1.0 - b) / n).sqrt()
        ));
    }
    let findings = findings(t, &pick, methods);
    let md = format!(
        "{}\n{table}\n{gains}\n{findings}\n{}",
        HEAD.replace("{TRAIN}", &(cfg.data.train_per_class.to_string()))
            .replace("{T_IMAGES}", &teacher_train_images.to_string())
            .replace("{WAYS}", &methods.len().to_string())
            .replace("{S_IMAGES}", &students_train_images.to_string())
            .replace("{TEST}", &(cfg.data.test_per_class.to_string()))
            .replace("{T_EPOCHS}", &cfg.teacher.optim.epochs.to_string())
            .replace("{S_EPOCHS}", &cfg.student.optim.epochs.to_string())
            .replace("{S_ARCH}", &cfg.student.arch)
            .replace("{T_ARCH}", &cfg.teacher.arch)
            .replace(
                "{SEEDS}",
                &format!(
                    "{:?} ({} of {} runs done)",
                    study.seeds,
                    students.len(),
                    study.seeds.len() * methods.len()
                ),
            )
            .replace("{WALL}", &format!("{:.1}", wall_seconds / 60.0))
            .replace("{TRAIN_ACC}", &format!("{:.2}", 100.0 * teacher_train_acc)),
        TAIL
    );
    trainer::checkpoint::write_atomic(&results.join("cifar10_cpu_study.md"), md.as_bytes())?;
    Ok(())
}

/// Sentences computed from the figures: is the teacher better than the supervised student, how close
/// the KD-only student comes to the teacher.
fn findings<'a>(
    t: &EvalReport,
    pick: &dyn Fn(Method) -> Vec<&'a StudentResult>,
    _methods: &[Method],
) -> String {
    let mean_of = |rs: Vec<&StudentResult>, f: &dyn Fn(&StudentResult) -> Option<f64>| {
        let v: Vec<f64> = rs.into_iter().filter_map(f).collect();
        (!v.is_empty()).then(|| mean_std(&v).0)
    };
    let mut out = String::new();
    let t_cls = t.classifier_accuracy.unwrap_or(f64::NAN);
    if let Some(sup) = mean_of(pick(Method::Supervised), &|r| r.eval.classifier_accuracy) {
        out.push_str(&format!(
            "Teacher against the supervised student (classifier accuracy): {:.2}% vs {:.2}%: the teacher is {}.",
            100.0 * t_cls,
            100.0 * sup,
            if t_cls > sup { "better" } else { "**worse**" }
        ));
    }
    if let Some(kd) = mean_of(pick(Method::Distill(1.0)), &|r| r.eval.classifier_accuracy) {
        out.push_str(&format!(
            " The KD-only student reaches {:.2}% classifier accuracy, {:.0}% of the teacher's.",
            100.0 * kd,
            100.0 * kd / t_cls
        ));
    }
    let mut out = out.trim_start().to_string();
    out.push('\n');
    out
}

/// The report's opening (placeholders in braces are filled in).
const HEAD: &str = "# CIFAR-10 distillation study on a 2-core CPU

Teacher {T_ARCH} (CIFAR stem), supervised, {T_EPOCHS} epoch(s) on {T_IMAGES} training images (the first of
each class). Student {S_ARCH}, {S_EPOCHS} epochs on the transfer set, the first {TRAIN} of those images per
class ({S_IMAGES} images), trained {WAYS} ways with the same epochs, views, initialisation and batch order
per seed. Every model is evaluated on the first {TEST} test images of each class; the kNN bank and the
linear probe's training set are the transfer set, for the teacher too. Seeds: {SEEDS}. Wall time: {WALL}
min. Teacher accuracy on the transfer set: {TRAIN_ACC}%.
";

/// The report's closing section: how the study is run (no figures: those are above and in the JSON).
const TAIL: &str = r#"## How the study is run

- **Losses.** Supervised: cross-entropy on both SimCLR views. The others:
  `(1 − α)·NT-Xent(T = 0.5) + α·KD(T = 4)·T²` (`losses::SimClrDistillation`, checked against PyTorch):
  α = 0 is SimCLR alone, α = 1 is KD alone. Student: backbone, 10-class head, and a projection MLP for
  the NT-Xent term; SGD with momentum 0.9, weight decay 5e-4 (not on batch-norm parameters or
  biases), warm-up then cosine (the trainer's optimizer and schedule).
- **The teacher knows more than the student because it has seen more labelled images**, not because it
  trained longer: a ResNet-18 learns far more per image than a resnet8 but costs ~25× more per view
  trained on a CPU (about 22 against 540 views/s on the 2-core machine), so an hour cannot train it past its student on the same few thousand images. The students
  then distil on a transfer set that is a part of the teacher's training data (the usual setting of
  compressing a model trained on a large labelled set; RepDistiller instead trains both on the same
  50,000 images for 240 epochs).
- **Teacher targets are computed once, on the un-augmented image.** `trainer distill` runs the teacher
  on both views at every step; with ResNet-18 at ~90 images/s forward that alone would take the hour
  for one student. The study distils from the teacher's logits on the clean image instead (Beyer et al.
  2022 call this a "fixed teacher"; consistent, per-view targets are better), the same loss otherwise.
- **Evaluation.** Classifier: the trained head (not for SimCLR only). kNN: weighted, k = 200, T = 0.1,
  on the backbone's pooled features. Linear probe: a linear classifier trained on frozen features.

**Beside the published numbers.** lightly's SimCLR ResNet-18 reaches 84.7% kNN accuracy on CIFAR-10
after 200 epochs of all 50,000 images at batch 512 on a GPU; RepDistiller's KD adds 0.8–1.6 points on
CIFAR-100 after 240 epochs, with teachers at 72–79% that beat their students by 3–8 points. The
students here are resnet8s (78 k parameters, ~1/140 of ResNet-18) that see a few tens of thousands of
images, so their absolute accuracies say that the pipeline learns, nothing about its ceiling; what the
study can show is the ordering of the methods. `configs/cifar10_gpu_reproduce.toml` (all 50,000 images,
ResNet-18 teacher on RepDistiller's 240-epoch schedule, resnet8x4 students for 240 epochs at batch 512,
three seeds) and `configs/cifar10_simclr_resnet18_gpu.toml` (SimCLR ResNet-18, 200 epochs, batch 512,
for the 84.7% reference) are the configurations for that scale.

**Student budget.** `results/student_budget/` (`configs/cifar10_cpu_student_budget.toml`, reusing the
study's teacher) trains the SimCLR-only, KD-only and α = 0.9 students of seed 0 for 18 epochs instead of 6:
whether the gap to SimCLR and the distance to the teacher are set by the students' short training.

Files: `cifar10_cpu_study.json` (every figure, every epoch record, the configuration),
`cifar10_cpu_study_accuracy.svg` (accuracy per method), `cifar10_cpu_study_curves.svg` (loss and test
accuracy per epoch). Run folders: `target/study/` (not committed). Reproduce: `cargo xtask study`
(`--quick` for a two-minute end-to-end check; `--reuse-teacher --seeds 3,4 --results DIR`, then
`--report-only --merge DIR/cifar10_cpu_study.json`, adds seeds to an existing report).
"#;

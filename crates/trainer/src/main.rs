//! The `trainer` binary: `trainer [run|teacher|distill|eval|smoke] [OPTIONS]`; see `trainer --help`.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use trainer::config::{OptimizerKind, ScheduleKind, TeacherMethod};
use trainer::Config;

/// Contrastive self-supervised learning with knowledge distillation: a ResNet teacher distilled into a
/// small ResNet student with (1 − α)·NT-Xent + α·KD·T². With no command: `run` on the bundled sample.
#[derive(Parser, Debug)]
#[command(name = "trainer", version)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Teacher, distilled student, SimCLR-only student, evaluation and a summary table.
    Run(RunArgs),
    /// Train (supervised or SimCLR) or import a teacher.
    Teacher(TeacherArgs),
    /// Distil a student from a teacher checkpoint on the combined loss.
    Distill(DistillArgs),
    /// Classifier, kNN and linear-probe accuracy of a checkpoint.
    Eval(EvalArgs),
    /// A tiny `run` on a slice of the bundled sample (CI's smoke test).
    Smoke(Common),
}

#[derive(Args, Debug, Default, Clone)]
struct Common {
    /// `sample`, `cifar10:DIR`, `cifar100:DIR`, `cifar100-coarse:DIR`, `folder:DIR` (with train/ and test/), `cifar10-tar:DIR`.
    #[arg(long)]
    data: Option<String>,
    /// Architecture (student for run/distill, teacher for teacher).
    #[arg(long)]
    arch: Option<String>,
    /// Epochs.
    #[arg(long)]
    epochs: Option<usize>,
    /// Images per step.
    #[arg(long)]
    batch_size: Option<usize>,
    /// Peak learning rate.
    #[arg(long)]
    lr: Option<f64>,
    /// sgd, lars or adamw.
    #[arg(long, value_enum)]
    optimizer: Option<Optimizer>,
    /// cosine or step.
    #[arg(long, value_enum)]
    schedule: Option<Schedule>,
    /// Epochs of linear warm-up.
    #[arg(long)]
    warmup_epochs: Option<f64>,
    /// Weight decay (never on batch-norm parameters and biases).
    #[arg(long)]
    weight_decay: Option<f64>,
    /// Clip the global gradient norm (0: off).
    #[arg(long)]
    grad_clip: Option<f64>,
    /// Image side fed to the networks.
    #[arg(long)]
    image_size: Option<usize>,
    /// Use only the first N training images per class.
    #[arg(long)]
    train_per_class: Option<usize>,
    /// Use only the first N test images per class.
    #[arg(long)]
    test_per_class: Option<usize>,
    /// Seed of every random choice.
    #[arg(long)]
    seed: Option<u64>,
    /// Worker threads (0: one per core).
    #[arg(long)]
    threads: Option<usize>,
    /// cpu, cuda, cuda:N or metal.
    #[arg(long)]
    device: Option<String>,
    /// The run folder.
    #[arg(long)]
    out: Option<PathBuf>,
    /// A TOML file with any of the options (the command line overrides it).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Also checkpoint every N optimizer steps inside an epoch (0: at epoch ends and on Ctrl-C only).
    #[arg(long)]
    checkpoint_every: Option<usize>,
    /// Continue from the run folder's last checkpoints.
    #[arg(long)]
    resume: bool,
    /// Plain log lines instead of progress bars.
    #[arg(long)]
    quiet: bool,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
enum Optimizer {
    Sgd,
    Lars,
    Adamw,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
enum Schedule {
    Cosine,
    Step,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
enum Method {
    Supervised,
    Simclr,
}

#[derive(Args, Debug, Default, Clone)]
struct StudentArgs {
    /// Weight of the KD term: 0 = plain SimCLR, 1 = plain KD.
    #[arg(long)]
    alpha: Option<f64>,
    /// NT-Xent temperature.
    #[arg(long)]
    temperature: Option<f64>,
    /// KD temperature.
    #[arg(long)]
    kd_temperature: Option<f64>,
    /// Projection head output width.
    #[arg(long)]
    proj_dim: Option<usize>,
    /// Projection head hidden width (0: the backbone's width).
    #[arg(long)]
    proj_hidden: Option<usize>,
    /// Linear layers of the projection head.
    #[arg(long)]
    proj_layers: Option<usize>,
    /// Architecture of the teacher when its checkpoint does not say.
    #[arg(long)]
    teacher_arch: Option<String>,
}

#[derive(Args, Debug, Clone)]
struct RunArgs {
    #[command(flatten)]
    common: Common,
    #[command(flatten)]
    student: StudentArgs,
    /// Teacher epochs (default: those of the configuration).
    #[arg(long)]
    teacher_epochs: Option<usize>,
}

#[derive(Args, Debug, Clone)]
struct TeacherArgs {
    #[command(flatten)]
    common: Common,
    /// supervised or simclr.
    #[arg(long, value_enum)]
    method: Option<Method>,
    /// Label smoothing of the cross-entropy.
    #[arg(long)]
    label_smoothing: Option<f64>,
    /// Import a torchvision-format safetensors checkpoint instead of training.
    #[arg(long)]
    from: Option<PathBuf>,
}

#[derive(Args, Debug, Clone)]
struct DistillArgs {
    #[command(flatten)]
    common: Common,
    #[command(flatten)]
    student: StudentArgs,
    /// The teacher checkpoint (safetensors).
    #[arg(long)]
    teacher: Option<PathBuf>,
}

#[derive(Args, Debug, Clone)]
struct EvalArgs {
    #[command(flatten)]
    common: Common,
    /// The checkpoint to evaluate.
    #[arg(long)]
    checkpoint: PathBuf,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    json: bool,
    /// Skip the linear probe.
    #[arg(long)]
    no_linear: bool,
}

enum Phases {
    Teacher,
    Student,
    Both,
}

fn base_config(c: &Common) -> Result<Config> {
    match &c.config {
        Some(p) => Ok(Config::from_toml_file(p)?),
        None => Ok(Config::default()),
    }
}

fn apply_common(cfg: &mut Config, c: &Common, phases: Phases) {
    let mut optims = match phases {
        Phases::Teacher => vec![&mut cfg.teacher.optim],
        Phases::Student => vec![&mut cfg.student.optim],
        Phases::Both => vec![&mut cfg.teacher.optim, &mut cfg.student.optim],
    };
    for o in optims.iter_mut() {
        if let Some(v) = c.epochs {
            o.epochs = v;
        }
        if let Some(v) = c.batch_size {
            o.batch_size = v;
        }
        if let Some(v) = c.lr {
            o.lr = v;
        }
        if let Some(v) = c.optimizer {
            o.optimizer = match v {
                Optimizer::Sgd => OptimizerKind::Sgd,
                Optimizer::Lars => OptimizerKind::Lars,
                Optimizer::Adamw => OptimizerKind::Adamw,
            };
        }
        if let Some(v) = c.schedule {
            o.schedule = match v {
                Schedule::Cosine => ScheduleKind::Cosine,
                Schedule::Step => ScheduleKind::Step,
            };
        }
        if let Some(v) = c.warmup_epochs {
            o.warmup_epochs = v;
        }
        if let Some(v) = c.weight_decay {
            o.weight_decay = v;
        }
        if let Some(v) = c.grad_clip {
            o.grad_clip = v;
        }
    }
    if let Some(v) = &c.arch {
        match phases {
            Phases::Teacher => cfg.teacher.arch = v.clone(),
            Phases::Student | Phases::Both => cfg.student.arch = v.clone(),
        }
    }
    if let Some(v) = &c.data {
        cfg.data.source = v.clone();
    }
    if let Some(v) = c.image_size {
        cfg.data.image_size = v;
    }
    if let Some(v) = c.train_per_class {
        cfg.data.train_per_class = v;
    }
    if let Some(v) = c.test_per_class {
        cfg.data.test_per_class = v;
    }
    if let Some(v) = c.seed {
        cfg.seed = v;
    }
    if let Some(v) = c.threads {
        cfg.threads = v;
    }
    if let Some(v) = &c.device {
        cfg.device = v.clone();
    }
    if let Some(v) = &c.out {
        cfg.out = v.clone();
    }
    if let Some(v) = c.checkpoint_every {
        cfg.checkpoint_every = v;
    }
    cfg.quiet |= c.quiet;
}

fn apply_student(cfg: &mut Config, s: &StudentArgs) {
    if let Some(v) = s.alpha {
        cfg.student.alpha = v;
    }
    if let Some(v) = s.temperature {
        cfg.student.temperature = v;
    }
    if let Some(v) = s.kd_temperature {
        cfg.student.kd_temperature = v;
    }
    if let Some(v) = s.proj_dim {
        cfg.student.projection.output_dim = v;
    }
    if let Some(v) = s.proj_hidden {
        cfg.student.projection.hidden_dim = v;
    }
    if let Some(v) = s.proj_layers {
        cfg.student.projection.num_layers = v;
    }
    if let Some(v) = &s.teacher_arch {
        cfg.student.teacher_arch = Some(v.clone());
    }
}

/// The smoke run: every phase, tiny, on a slice of the bundled sample.
fn smoke_config(c: &Common) -> Result<Config> {
    let mut cfg = base_config(c)?;
    cfg.out = PathBuf::from("runs/smoke");
    cfg.data.train_per_class = 16;
    cfg.data.test_per_class = 8;
    cfg.teacher.arch = "resnet8".into();
    cfg.student.arch = "resnet8".into();
    for o in [&mut cfg.teacher.optim, &mut cfg.student.optim] {
        o.epochs = 2;
        o.batch_size = 32;
        o.warmup_epochs = 0.0;
    }
    cfg.eval.linear_epochs = 5;
    cfg.eval.knn_k = 20;
    apply_common(&mut cfg, c, Phases::Both);
    Ok(cfg)
}

fn set_threads(cfg: &Config) -> Result<()> {
    let n = if cfg.threads == 0 {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    } else {
        cfg.threads
    };
    // Candle's CPU kernels read RAYON_NUM_THREADS; set it before any pool exists.
    std::env::set_var("RAYON_NUM_THREADS", n.to_string());
    rayon::ThreadPoolBuilder::new()
        .num_threads(n)
        .build_global()
        .context("starting the thread pool")?;
    Ok(())
}

fn main() {
    // Keep freed tensor memory for the next step instead of returning it to the kernel (glibc
    // only; a process-wide setting, hence here and not in a library).
    models::ops::retain_freed_memory();
    if let Err(e) = real_main() {
        // The chain of causes, each once: many messages already quote their cause.
        let mut msg = e.to_string();
        for cause in e.chain().skip(1) {
            let c = cause.to_string();
            if !msg.contains(&c) {
                msg.push_str(": ");
                msg.push_str(&c);
            }
        }
        eprintln!("error: {msg}");
        std::process::exit(match e.downcast_ref::<trainer::Error>() {
            Some(trainer::Error::Interrupted { .. }) => 130,
            _ => 1,
        });
    }
}

fn real_main() -> Result<()> {
    let cli = Cli::parse();
    let interrupt = Arc::new(AtomicBool::new(false));
    {
        let flag = interrupt.clone();
        ctrlc::set_handler(move || {
            if flag.swap(true, Ordering::SeqCst) {
                eprintln!("\nsecond Ctrl-C: stopping now");
                std::process::exit(130);
            }
            eprintln!(
                "\nCtrl-C: stopping after writing a checkpoint (press again to stop at once)"
            );
        })
        .context("installing the Ctrl-C handler")?;
    }
    let command = cli.command.unwrap_or(Command::Run(RunArgs {
        common: Common::default(),
        student: StudentArgs::default(),
        teacher_epochs: None,
    }));
    match command {
        Command::Run(a) => {
            let mut cfg = base_config(&a.common)?;
            apply_common(&mut cfg, &a.common, Phases::Both);
            apply_student(&mut cfg, &a.student);
            if let Some(e) = a.teacher_epochs {
                cfg.teacher.optim.epochs = e;
            }
            cfg.validate()?;
            set_threads(&cfg)?;
            let s = trainer::run::run_all(&cfg, a.common.resume, &interrupt)?;
            println!("\n{}", s.markdown);
            println!("run folder: {}", s.out.display());
        }
        Command::Smoke(c) => {
            let cfg = smoke_config(&c)?;
            cfg.validate()?;
            set_threads(&cfg)?;
            let s = trainer::run::run_all(&cfg, c.resume, &interrupt)?;
            println!("\n{}", s.markdown);
        }
        Command::Teacher(a) => {
            let mut cfg = base_config(&a.common)?;
            if a.common.out.is_none() && a.common.config.is_none() {
                cfg.out = PathBuf::from("runs/teacher");
            }
            apply_common(&mut cfg, &a.common, Phases::Teacher);
            if let Some(m) = a.method {
                cfg.teacher.method = match m {
                    Method::Supervised => TeacherMethod::Supervised,
                    Method::Simclr => TeacherMethod::Simclr,
                };
            }
            if let Some(v) = a.label_smoothing {
                cfg.teacher.label_smoothing = v;
            }
            if a.from.is_some() {
                cfg.teacher.from = a.from;
            }
            cfg.validate()?;
            set_threads(&cfg)?;
            let s = trainer::run::run_teacher(&cfg, a.common.resume, &interrupt)?;
            println!("\n{}", s.markdown);
        }
        Command::Distill(a) => {
            let mut cfg = base_config(&a.common)?;
            if a.common.out.is_none() && a.common.config.is_none() {
                cfg.out = PathBuf::from("runs/distill");
            }
            apply_common(&mut cfg, &a.common, Phases::Student);
            apply_student(&mut cfg, &a.student);
            if a.teacher.is_some() {
                cfg.student.teacher = a.teacher;
            }
            cfg.validate()?;
            set_threads(&cfg)?;
            let s = trainer::run::run_distill(&cfg, a.common.resume, &interrupt)?;
            println!("\n{}", s.markdown);
        }
        Command::Eval(a) => {
            let mut cfg = base_config(&a.common)?;
            apply_common(&mut cfg, &a.common, Phases::Student);
            cfg.validate()?;
            set_threads(&cfg)?;
            let r = trainer::run::run_eval(
                &cfg,
                &a.checkpoint,
                a.common.arch.as_deref(),
                !a.no_linear,
            )?;
            if a.json {
                println!("{}", serde_json::to_string(&r)?);
            } else {
                let pct =
                    |v: Option<f64>| v.map_or("–".to_string(), |v| format!("{:.2}%", 100.0 * v));
                println!("checkpoint: {}", a.checkpoint.display());
                println!("classifier accuracy:   {}", pct(r.classifier_accuracy));
                println!(
                    "kNN accuracy (k={}):  {}",
                    cfg.eval.knn_k,
                    pct(Some(r.knn_accuracy))
                );
                println!("linear probe accuracy: {}", pct(r.linear_probe_accuracy));
                println!("test images: {}", r.test_images);
            }
        }
    }
    Ok(())
}

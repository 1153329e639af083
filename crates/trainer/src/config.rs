//! [`Config`]: every option of a run, with defaults, TOML round-trip, validation and the command
//! line, all from one definition.
//!
//! A run's configuration comes from the defaults, then a `--config FILE.toml`, then the command line
//! (each later source overrides the earlier). Each option is declared once, as a field here: its
//! doc comment is both the TOML key's documentation and the `--help` text, its serde name is the
//! TOML key, and its `#[arg]` attribute the flag. The command line only *overlays* a
//! configuration: every flag is optional, and [`clap::FromArgMatches::update_from_arg_matches`]
//! sets exactly the fields whose flags were given. The resolved configuration is written to the run
//! folder as `config.toml`, and reading that file back gives the same configuration.

use std::path::{Path, PathBuf};

use clap::ArgAction;
use serde::{Deserialize, Serialize};

use crate::Error;

/// The optimizer of a training phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum OptimizerKind {
    /// SGD with momentum (and optional Nesterov).
    Sgd,
    /// LARS (You et al. 2017), as SimCLR trains: SGD with momentum and a layer-wise trust ratio.
    Lars,
    /// AdamW (Loshchilov & Hutter 2019).
    Adamw,
}

/// The learning-rate schedule after warm-up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum ScheduleKind {
    /// Cosine decay to 0 over the remaining steps.
    Cosine,
    /// Multiply by `step_gamma` at each epoch of `step_milestones`.
    Step,
    /// Linear decay to 0 over the remaining steps (with the warm-up: the one-cycle schedule of the
    /// fast CIFAR training recipes).
    Linear,
}

/// Which network a phase keeps as its result (`best.safetensors`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Keep {
    /// The network of the epoch with the best epoch metric (measured on the test set).
    Best,
    /// The network at the end of training (no selection on the test set).
    Last,
}

/// The augmentation of a supervised teacher.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum TeacherAugment {
    /// Random resized crop (scale 0.6–1) and horizontal flip.
    ResizedCrop,
    /// Random crop with `crop_padding` pixels of zero padding and horizontal flip: the standard
    /// CIFAR augmentation (He et al. 2016) of the fast-training recipes.
    CropFlip,
}

/// How a teacher is trained.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum TeacherMethod {
    /// Cross-entropy on the labels (optional label smoothing).
    Supervised,
    /// SimCLR pre-training (NT-Xent on two views); the classifier is then fitted as a linear probe.
    Simclr,
}

/// What a student is trained on (see [`crate::objective`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum StudentObjective {
    /// `(1 − α)·NT-Xent + α·KD·T²` on two SimCLR views: α = 0 is SimCLR, α = 1 Hinton KD.
    SimclrKd,
    /// Cross-entropy on the labels of both SimCLR views: the supervised baseline.
    Supervised,
}

/// Where a distilling student's teacher logits come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum TeacherTargets {
    /// The teacher runs on the student's own views at every step (eval mode, no gradient).
    Online,
    /// The teacher's logits on each un-augmented training image, computed once before training
    /// and looked up by image index (a "fixed teacher", Beyer et al. 2022): far cheaper for a
    /// large teacher, less consistent targets.
    Fixed,
}

/// Optimisation of one training phase.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, clap::Args)]
#[serde(deny_unknown_fields, default)]
pub struct OptimConfig {
    /// Passes over the training set.
    #[arg(long, required = false)]
    pub epochs: usize,
    /// Images per step (each seen in two views where the method uses views).
    #[arg(long, required = false)]
    pub batch_size: usize,
    /// Peak learning rate (reached after warm-up).
    #[arg(long, required = false)]
    pub lr: f64,
    /// The optimizer.
    #[arg(long, required = false, value_enum)]
    pub optimizer: OptimizerKind,
    /// Momentum of SGD and LARS; β1 of AdamW.
    #[arg(long, required = false)]
    pub momentum: f64,
    /// Nesterov momentum (SGD only).
    #[arg(long, required = false, num_args = 0..=1, default_missing_value = "true", action = ArgAction::Set)]
    pub nesterov: bool,
    /// Weight decay; never applied to batch-norm parameters and biases (as solo-learn does).
    #[arg(long, required = false)]
    pub weight_decay: f64,
    /// The schedule after warm-up.
    #[arg(long, required = false, value_enum)]
    pub schedule: ScheduleKind,
    /// Epochs of linear warm-up from 0 to `lr`.
    #[arg(long, required = false)]
    pub warmup_epochs: f64,
    /// Epochs at which the step schedule multiplies the rate by `step_gamma` (comma-separated).
    #[arg(long, required = false, value_delimiter = ',')]
    pub step_milestones: Vec<usize>,
    /// Factor of the step schedule.
    #[arg(long, required = false)]
    pub step_gamma: f64,
    /// LARS trust coefficient η.
    #[arg(long, required = false)]
    pub lars_eta: f64,
    /// Clip the global gradient norm to this value (0: no clipping).
    #[arg(long, required = false)]
    pub grad_clip: f64,
    /// Decay of an exponential moving average of the weights and batch-norm statistics, updated
    /// after every step (0: none), as `torch.optim.swa_utils.AveragedModel` with
    /// `get_ema_multi_avg_fn(decay)` and `use_buffers=True`. The phase evaluates and keeps the
    /// average.
    #[arg(long, required = false)]
    pub ema_decay: f64,
}

impl Default for OptimConfig {
    fn default() -> Self {
        Self {
            epochs: 10,
            batch_size: 128,
            lr: 0.1,
            optimizer: OptimizerKind::Sgd,
            momentum: 0.9,
            nesterov: false,
            weight_decay: 5e-4,
            schedule: ScheduleKind::Cosine,
            warmup_epochs: 0.0,
            step_milestones: vec![],
            step_gamma: 0.1,
            lars_eta: 0.02,
            grad_clip: 0.0,
            ema_decay: 0.0,
        }
    }
}

/// The data of a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, clap::Args)]
#[serde(deny_unknown_fields, default)]
pub struct DataConfig {
    /// Where the images come from: `sample`, `cifar10:DIR`, `cifar100:DIR`, `cifar100-coarse:DIR`,
    /// `folder:DIR` (with train/ and test/), `cifar10-tar:DIR`.
    #[arg(long = "data", required = false)]
    pub source: String,
    /// Side of the (square) images fed to the networks.
    #[arg(long, required = false)]
    pub image_size: usize,
    /// Use only the first N training images of each class (0: all).
    #[arg(long, required = false)]
    pub train_per_class: usize,
    /// Use only the first N test images of each class (0: all).
    #[arg(long, required = false)]
    pub test_per_class: usize,
}

impl Default for DataConfig {
    fn default() -> Self {
        Self {
            source: "sample".into(),
            image_size: 32,
            train_per_class: 0,
            test_per_class: 0,
        }
    }
}

/// The teacher phase.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, clap::Args)]
#[serde(deny_unknown_fields, default)]
pub struct TeacherConfig {
    /// Architecture of the teacher (resnet18/34/50/101/152, resnet8/14/20/32/44/56/110, resnet8x4,
    /// resnet32x4).
    #[arg(long, required = false)]
    pub arch: String,
    /// Supervised or SimCLR training.
    #[arg(long, required = false, value_enum)]
    pub method: TeacherMethod,
    /// Label smoothing of the supervised cross-entropy.
    #[arg(long, required = false)]
    pub label_smoothing: f64,
    /// The augmentation of a supervised teacher.
    #[arg(long, required = false, value_enum)]
    pub augmentation: TeacherAugment,
    /// Zero padding of the `crop-flip` augmentation, pixels per side.
    #[arg(long, required = false)]
    pub crop_padding: usize,
    /// Import this torchvision-format safetensors checkpoint instead of training.
    #[arg(long)]
    pub from: Option<PathBuf>,
    /// Optimisation.
    #[command(flatten)]
    pub optim: OptimConfig,
}

impl Default for TeacherConfig {
    fn default() -> Self {
        Self {
            arch: "resnet20".into(),
            method: TeacherMethod::Supervised,
            label_smoothing: 0.0,
            augmentation: TeacherAugment::ResizedCrop,
            crop_padding: 4,
            from: None,
            optim: OptimConfig {
                epochs: 15,
                batch_size: 64,
                lr: 0.05,
                warmup_epochs: 1.0,
                ..OptimConfig::default()
            },
        }
    }
}

/// The projection head of SimCLR (student, or a SimCLR teacher).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, clap::Args)]
#[serde(deny_unknown_fields, default)]
pub struct ProjectionConfig {
    /// Hidden width of the projection head (0: the backbone's feature width).
    #[arg(long = "proj-hidden", required = false)]
    pub hidden_dim: usize,
    /// Output width of the projection head.
    #[arg(long = "proj-dim", required = false)]
    pub output_dim: usize,
    /// Linear layers of the projection head.
    #[arg(long = "proj-layers", required = false)]
    pub num_layers: usize,
    /// Batch norm after the projection head's hidden layers.
    #[arg(long = "proj-batch-norm", required = false, num_args = 0..=1, default_missing_value = "true", action = ArgAction::Set)]
    pub batch_norm: bool,
}

impl Default for ProjectionConfig {
    fn default() -> Self {
        Self {
            hidden_dim: 0,
            output_dim: 128,
            num_layers: 2,
            batch_norm: true,
        }
    }
}

impl ProjectionConfig {
    /// The head's shape for [`models::Network`].
    pub fn spec(&self) -> models::ProjectionSpec {
        models::ProjectionSpec {
            hidden_dim: self.hidden_dim,
            output_dim: self.output_dim,
            num_layers: self.num_layers,
            batch_norm: self.batch_norm,
        }
    }
}

/// The distillation phase: a student on `(1 − α)·NT-Xent + α·KD·T²`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, clap::Args)]
#[serde(deny_unknown_fields, default)]
pub struct StudentConfig {
    /// Architecture of the student.
    #[arg(long, required = false)]
    pub arch: String,
    /// What the student is trained on.
    #[arg(long, required = false, value_enum)]
    pub objective: StudentObjective,
    /// The teacher checkpoint (set by `trainer run` to the teacher it trained).
    #[arg(long)]
    pub teacher: Option<PathBuf>,
    /// Architecture of the teacher, needed when its checkpoint does not say it (e.g. an imported
    /// torchvision file); when given, it is used as is.
    #[arg(long)]
    pub teacher_arch: Option<String>,
    /// Where the teacher's logits come from: its forward pass on the student's views at every
    /// step, or its logits on the un-augmented images computed once.
    #[arg(long, required = false, value_enum)]
    pub teacher_targets: TeacherTargets,
    /// Weight of the distillation term: 0 is plain SimCLR, 1 plain KD.
    #[arg(long, required = false)]
    pub alpha: f64,
    /// NT-Xent temperature.
    #[arg(long, required = false)]
    pub temperature: f64,
    /// KD temperature.
    #[arg(long, required = false)]
    pub kd_temperature: f64,
    /// The projection head.
    #[command(flatten)]
    pub projection: ProjectionConfig,
    /// Optimisation.
    #[command(flatten)]
    pub optim: OptimConfig,
}

impl Default for StudentConfig {
    fn default() -> Self {
        Self {
            arch: "resnet8".into(),
            objective: StudentObjective::SimclrKd,
            teacher: None,
            teacher_arch: None,
            teacher_targets: TeacherTargets::Online,
            alpha: 0.5,
            temperature: 0.5,
            kd_temperature: 4.0,
            projection: ProjectionConfig::default(),
            optim: OptimConfig {
                epochs: 15,
                batch_size: 128,
                lr: 0.1,
                warmup_epochs: 1.0,
                ..OptimConfig::default()
            },
        }
    }
}

/// Evaluation settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, clap::Args)]
#[serde(deny_unknown_fields, default)]
pub struct EvalConfig {
    /// Neighbours of the weighted kNN classifier.
    #[arg(long, required = false)]
    pub knn_k: usize,
    /// Temperature of the kNN weights `exp(sim / T)`.
    #[arg(long, required = false)]
    pub knn_temperature: f64,
    /// Epochs of the linear probe.
    #[arg(long, required = false)]
    pub linear_epochs: usize,
    /// Learning rate of the linear probe (SGD, momentum 0.9, cosine).
    #[arg(long, required = false)]
    pub linear_lr: f64,
    /// Evaluate on the test set every N epochs while training (0: only at the end).
    #[arg(long = "eval-every", required = false)]
    pub every: usize,
    /// Which network a phase keeps as its result: the best epoch's by the epoch metric, or the
    /// last one's.
    #[arg(long, required = false, value_enum)]
    pub keep: Keep,
    /// Test-time flip: the logits and features of every image are the mean of the image's and of
    /// its horizontal mirror's.
    #[arg(long, required = false, num_args = 0..=1, default_missing_value = "true", action = ArgAction::Set)]
    pub tta_flip: bool,
}

impl Default for EvalConfig {
    fn default() -> Self {
        Self {
            knn_k: 200,
            knn_temperature: 0.1,
            linear_epochs: 100,
            linear_lr: 0.1,
            every: 1,
            keep: Keep::Best,
            tta_flip: false,
        }
    }
}

/// Everything a run needs.
///
/// The command line of each `trainer` command flattens the run options below, [`DataConfig`] and
/// [`EvalConfig`], plus the phase it trains: [`TeacherConfig`] (`trainer teacher`) or
/// [`StudentConfig`] (`trainer distill`, `trainer run`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, clap::Args)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Seed of every random choice (initialisation, shuffling, augmentation).
    #[arg(long, required = false)]
    pub seed: u64,
    /// Worker threads (0: one per core).
    #[arg(long, required = false)]
    pub threads: usize,
    /// `cpu`, `cuda`, `cuda:N` or `metal`.
    #[arg(long, required = false)]
    pub device: String,
    /// The run folder.
    #[arg(long, required = false)]
    pub out: PathBuf,
    /// Plain log lines instead of progress bars.
    #[arg(long, required = false, num_args = 0..=1, default_missing_value = "true", action = ArgAction::Set)]
    pub quiet: bool,
    /// Log a metrics line every N steps.
    #[arg(long, required = false)]
    pub log_every: usize,
    /// Also write `last.safetensors` every N optimizer steps inside an epoch (0: only at epoch ends
    /// and on Ctrl-C). A crash then costs at most N steps; each write is atomic.
    #[arg(long, required = false)]
    pub checkpoint_every: usize,
    /// Synchronised batch norm across the processes of an `mpirun` job (SimCLR's global BN): the
    /// batch statistics of the global batch instead of each process's shard.
    #[arg(long, required = false, num_args = 0..=1, default_missing_value = "true", action = ArgAction::Set)]
    pub sync_bn: bool,
    /// Seconds a process of an `mpirun` job waits in one collective before it stops the job (a
    /// rank that died or hangs); 0: wait forever.
    #[arg(long, required = false)]
    pub collective_timeout: f64,
    /// The data.
    #[command(flatten)]
    pub data: DataConfig,
    /// The teacher phase.
    #[arg(skip)]
    pub teacher: TeacherConfig,
    /// The student phase.
    #[arg(skip)]
    pub student: StudentConfig,
    /// Evaluation.
    #[command(flatten)]
    pub eval: EvalConfig,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            seed: 0,
            threads: 0,
            device: "cpu".into(),
            out: PathBuf::from("runs/latest"),
            quiet: false,
            log_every: 10,
            checkpoint_every: 0,
            sync_bn: false,
            collective_timeout: 1800.0,
            data: DataConfig::default(),
            teacher: TeacherConfig::default(),
            student: StudentConfig::default(),
            eval: EvalConfig::default(),
        }
    }
}

/// The largest accepted `data.image_size`: a larger value is almost surely a typo, and would allocate
/// gigabytes per image.
pub const MAX_IMAGE_SIZE: usize = 1024;

/// The largest accepted width of the projection head.
pub const MAX_PROJECTION_DIM: usize = 65_536;

/// The largest accepted `threads`: creating more worker threads than this takes minutes and
/// helps nothing.
pub const MAX_THREADS: usize = 1024;

/// `key (--flag)`: a configuration key and the flag that sets it, looked up in the command-line
/// definition of the struct `T` that holds the key's last segment, so that an error message can
/// only name a flag that exists.
pub fn named<T: clap::Args>(key: &str) -> String {
    let field = key.rsplit('.').next().unwrap_or(key);
    let cmd = T::augment_args(clap::Command::new("config"));
    let long = cmd
        .get_arguments()
        .find(|a| a.get_id() == field)
        .and_then(|a| a.get_long());
    match long {
        Some(long) => format!("{key} (--{long})"),
        None => key.to_string(),
    }
}

fn at_most(name: &str, v: usize, max: usize) -> Result<(), Error> {
    if v > max {
        return Err(Error::Config(format!(
            "{name} must be at most {max}, got {v}"
        )));
    }
    Ok(())
}

fn positive(name: &str, v: usize) -> Result<(), Error> {
    if v == 0 {
        return Err(Error::Config(format!("{name} must be at least 1, got {v}")));
    }
    Ok(())
}

fn positive_f(name: &str, v: f64) -> Result<(), Error> {
    if !(v.is_finite() && v > 0.0) {
        return Err(Error::Config(format!(
            "{name} must be a positive number, got {v}"
        )));
    }
    Ok(())
}

fn non_negative(name: &str, v: f64) -> Result<(), Error> {
    if !(v.is_finite() && v >= 0.0) {
        return Err(Error::Config(format!(
            "{name} must be zero or positive, got {v}"
        )));
    }
    Ok(())
}

fn fraction(name: &str, v: f64, closed: bool) -> Result<(), Error> {
    let ok = if closed {
        (0.0..=1.0).contains(&v)
    } else {
        (0.0..1.0).contains(&v)
    };
    if !ok {
        let range = if closed { "[0, 1]" } else { "[0, 1)" };
        return Err(Error::Config(format!("{name} must be in {range}, got {v}")));
    }
    Ok(())
}

fn known_arch(name: &str, arch: &str) -> Result<(), Error> {
    models::ResNetConfig::by_name(arch, 10).map_err(|_| {
        Error::Config(format!(
            "{name}: unknown architecture {arch:?} (known: {})",
            models::RESNET_NAMES.join(", ")
        ))
    })?;
    Ok(())
}

impl OptimConfig {
    /// Checks every value; `p` is the key of this table (`teacher.optim`, `student.optim`).
    fn validate(&self, p: &str) -> Result<(), Error> {
        let n = |field: &str| named::<Self>(&format!("{p}.{field}"));
        positive(&n("epochs"), self.epochs)?;
        positive(&n("batch_size"), self.batch_size)?;
        positive_f(&n("lr"), self.lr)?;
        fraction(&n("momentum"), self.momentum, false)?;
        non_negative(&n("weight_decay"), self.weight_decay)?;
        non_negative(&n("warmup_epochs"), self.warmup_epochs)?;
        if self.warmup_epochs > self.epochs as f64 {
            return Err(Error::Config(format!(
                "{} ({}) must not exceed {} ({})",
                n("warmup_epochs"),
                self.warmup_epochs,
                n("epochs"),
                self.epochs
            )));
        }
        positive_f(&n("step_gamma"), self.step_gamma)?;
        positive_f(&n("lars_eta"), self.lars_eta)?;
        non_negative(&n("grad_clip"), self.grad_clip)?;
        fraction(&n("ema_decay"), self.ema_decay, false)?;
        Ok(())
    }
}

impl Config {
    /// Reads a TOML file; unknown keys, wrong types and bad values are errors naming the key.
    pub fn from_toml_file(path: &Path) -> Result<Self, Error> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::Io(path.to_path_buf(), e))?;
        Self::from_toml_str(&text).map_err(|e| Error::Config(format!("{}: {e}", path.display())))
    }

    /// Parses TOML text (see [`Config::from_toml_file`]).
    pub fn from_toml_str(text: &str) -> Result<Self, Error> {
        let cfg: Config = toml::from_str(text).map_err(|e| Error::Config(e.to_string()))?;
        Ok(cfg)
    }

    /// The configuration as TOML text.
    pub fn to_toml(&self) -> Result<String, Error> {
        toml::to_string_pretty(self).map_err(|e| Error::Config(e.to_string()))
    }

    /// Checks every value; the error names the key, its flag and the value.
    pub fn validate(&self) -> Result<(), Error> {
        self.data.source.parse::<crate::data::DataSource>()?;
        let data = |f: &str| named::<DataConfig>(&format!("data.{f}"));
        positive(&data("image_size"), self.data.image_size)?;
        at_most(&data("image_size"), self.data.image_size, MAX_IMAGE_SIZE)?;
        positive(&named::<Self>("log_every"), self.log_every)?;
        at_most(&named::<Self>("threads"), self.threads, MAX_THREADS)?;
        non_negative(
            &named::<Self>("collective_timeout"),
            self.collective_timeout,
        )?;
        crate::device::parse_device(&self.device)?;
        known_arch(&named::<TeacherConfig>("teacher.arch"), &self.teacher.arch)?;
        known_arch(&named::<StudentConfig>("student.arch"), &self.student.arch)?;
        if let Some(arch) = &self.student.teacher_arch {
            known_arch(&named::<StudentConfig>("student.teacher_arch"), arch)?;
        }
        fraction(
            &named::<TeacherConfig>("teacher.label_smoothing"),
            self.teacher.label_smoothing,
            false,
        )?;
        at_most(
            &named::<TeacherConfig>("teacher.crop_padding"),
            self.teacher.crop_padding,
            MAX_IMAGE_SIZE,
        )?;
        self.teacher.optim.validate("teacher.optim")?;
        self.student.optim.validate("student.optim")?;
        let s = |f: &str| named::<StudentConfig>(&format!("student.{f}"));
        fraction(&s("alpha"), self.student.alpha, true)?;
        positive_f(&s("temperature"), self.student.temperature)?;
        positive_f(&s("kd_temperature"), self.student.kd_temperature)?;
        let proj = &self.student.projection;
        let p = |f: &str| named::<ProjectionConfig>(&format!("student.projection.{f}"));
        positive(&p("output_dim"), proj.output_dim)?;
        positive(&p("num_layers"), proj.num_layers)?;
        at_most(&p("output_dim"), proj.output_dim, MAX_PROJECTION_DIM)?;
        at_most(&p("hidden_dim"), proj.hidden_dim, MAX_PROJECTION_DIM)?;
        at_most(&p("num_layers"), proj.num_layers, 64)?;
        // NT-Xent contrasts each image with the other images of its batch: one image has no negatives.
        let contrastive = [
            (
                "student.optim",
                &self.student.optim,
                self.student.objective == StudentObjective::SimclrKd,
            ),
            (
                "teacher.optim",
                &self.teacher.optim,
                self.teacher.method == TeacherMethod::Simclr && self.teacher.from.is_none(),
            ),
        ];
        for (key, o, nt_xent) in contrastive {
            if nt_xent && o.batch_size < 2 {
                return Err(Error::Config(format!(
                    "{} {} is too small for NT-Xent (SimCLR), which needs at least 2 images per \
                     batch as negatives of each other",
                    named::<OptimConfig>(&format!("{key}.batch_size")),
                    o.batch_size
                )));
            }
        }
        let e = |f: &str| named::<EvalConfig>(&format!("eval.{f}"));
        positive(&e("knn_k"), self.eval.knn_k)?;
        positive_f(&e("knn_temperature"), self.eval.knn_temperature)?;
        positive_f(&e("linear_lr"), self.eval.linear_lr)?;
        Ok(())
    }
}

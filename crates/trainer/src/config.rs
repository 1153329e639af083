//! [`Config`]: every option of a run, with defaults, TOML round-trip and validation.
//!
//! A run's configuration comes from the defaults, then a `--config FILE.toml`, then the command line
//! (each later source overrides the earlier). The resolved configuration is written to the run folder
//! as `config.toml`, and reading that file back gives the same configuration.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::Error;

/// The optimizer of a training phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ScheduleKind {
    /// Cosine decay to 0 over the remaining steps.
    Cosine,
    /// Multiply by `step_gamma` at each epoch of `step_milestones`.
    Step,
}

/// How a teacher is trained.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TeacherMethod {
    /// Cross-entropy on the labels (optional label smoothing).
    Supervised,
    /// SimCLR pre-training (NT-Xent on two views); the classifier is then fitted as a linear probe.
    Simclr,
}

/// Optimisation of one training phase.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OptimConfig {
    /// Passes over the training set.
    pub epochs: usize,
    /// Images per step (each seen in two views where the method uses views).
    pub batch_size: usize,
    /// Peak learning rate (reached after warm-up).
    pub lr: f64,
    /// The optimizer.
    pub optimizer: OptimizerKind,
    /// Momentum of SGD and LARS; β1 of AdamW.
    pub momentum: f64,
    /// Nesterov momentum (SGD only).
    pub nesterov: bool,
    /// Weight decay; never applied to batch-norm parameters and biases (as solo-learn does).
    pub weight_decay: f64,
    /// The schedule after warm-up.
    pub schedule: ScheduleKind,
    /// Epochs of linear warm-up from 0 to `lr`.
    pub warmup_epochs: f64,
    /// Epochs at which the step schedule multiplies the rate by `step_gamma`.
    pub step_milestones: Vec<usize>,
    /// Factor of the step schedule.
    pub step_gamma: f64,
    /// LARS trust coefficient η.
    pub lars_eta: f64,
    /// Clip the global gradient norm to this value (0: no clipping).
    pub grad_clip: f64,
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
        }
    }
}

/// The data of a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DataConfig {
    /// Where the images come from: see [`crate::data::DataSource`].
    pub source: String,
    /// Side of the (square) images fed to the networks.
    pub image_size: usize,
    /// Use only the first N training images of each class (0: all).
    pub train_per_class: usize,
    /// Use only the first N test images of each class (0: all).
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
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TeacherConfig {
    /// Architecture (one of `models::RESNET_NAMES`).
    pub arch: String,
    /// Supervised or SimCLR training.
    pub method: TeacherMethod,
    /// Label smoothing of the supervised cross-entropy.
    pub label_smoothing: f64,
    /// Import this torchvision-format safetensors checkpoint instead of training.
    pub from: Option<PathBuf>,
    /// Optimisation.
    pub optim: OptimConfig,
}

impl Default for TeacherConfig {
    fn default() -> Self {
        Self {
            arch: "resnet20".into(),
            method: TeacherMethod::Supervised,
            label_smoothing: 0.0,
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
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProjectionConfig {
    /// Hidden width (0: the backbone's feature width).
    pub hidden_dim: usize,
    /// Output width.
    pub output_dim: usize,
    /// Number of linear layers.
    pub num_layers: usize,
    /// Batch norm after hidden layers.
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

/// The distillation phase: a student on `(1 − α)·NT-Xent + α·KD·T²`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StudentConfig {
    /// Architecture of the student.
    pub arch: String,
    /// The teacher checkpoint (set by `trainer run` to the teacher it trained).
    pub teacher: Option<PathBuf>,
    /// Architecture of the teacher, when its checkpoint does not say (e.g. an imported torchvision file).
    pub teacher_arch: Option<String>,
    /// Weight of the distillation term: 0 is plain SimCLR, 1 plain KD.
    pub alpha: f64,
    /// NT-Xent temperature.
    pub temperature: f64,
    /// KD temperature.
    pub kd_temperature: f64,
    /// The projection head.
    pub projection: ProjectionConfig,
    /// Optimisation.
    pub optim: OptimConfig,
}

impl Default for StudentConfig {
    fn default() -> Self {
        Self {
            arch: "resnet8".into(),
            teacher: None,
            teacher_arch: None,
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
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EvalConfig {
    /// Neighbours of the weighted kNN classifier.
    pub knn_k: usize,
    /// Temperature of the kNN weights `exp(sim / T)`.
    pub knn_temperature: f64,
    /// Epochs of the linear probe.
    pub linear_epochs: usize,
    /// Learning rate of the linear probe (SGD, momentum 0.9, cosine).
    pub linear_lr: f64,
    /// Evaluate on the test set every N epochs while training (0: only at the end).
    pub every: usize,
}

impl Default for EvalConfig {
    fn default() -> Self {
        Self {
            knn_k: 200,
            knn_temperature: 0.1,
            linear_epochs: 100,
            linear_lr: 0.1,
            every: 1,
        }
    }
}

/// Everything a run needs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Seed of every random choice (initialisation, shuffling, augmentation).
    pub seed: u64,
    /// Worker threads (0: one per core).
    pub threads: usize,
    /// `cpu`, `cuda`, `cuda:N` or `metal`.
    pub device: String,
    /// The run folder.
    pub out: PathBuf,
    /// Plain log lines instead of progress bars.
    pub quiet: bool,
    /// Log a metrics line every N steps.
    pub log_every: usize,
    /// Also write `last.safetensors` every N optimizer steps inside an epoch (0: only at epoch ends and
    /// on Ctrl-C). A crash then costs at most N steps; each write is atomic (see
    /// [`crate::checkpoint::write_atomic`]).
    pub checkpoint_every: usize,
    /// The data.
    pub data: DataConfig,
    /// The teacher phase.
    pub teacher: TeacherConfig,
    /// The student phase.
    pub student: StudentConfig,
    /// Evaluation.
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

impl OptimConfig {
    fn validate(&self, p: &str) -> Result<(), Error> {
        positive(&format!("{p}.epochs (--epochs)"), self.epochs)?;
        positive(&format!("{p}.batch_size (--batch-size)"), self.batch_size)?;
        positive_f(&format!("{p}.lr (--lr)"), self.lr)?;
        if !(0.0..1.0).contains(&self.momentum) {
            return Err(Error::Config(format!(
                "{p}.momentum must be in [0, 1), got {}",
                self.momentum
            )));
        }
        non_negative(&format!("{p}.weight_decay"), self.weight_decay)?;
        non_negative(&format!("{p}.warmup_epochs"), self.warmup_epochs)?;
        if self.warmup_epochs > self.epochs as f64 {
            return Err(Error::Config(format!(
                "{p}.warmup_epochs ({}) must not exceed {p}.epochs ({})",
                self.warmup_epochs, self.epochs
            )));
        }
        positive_f(&format!("{p}.step_gamma"), self.step_gamma)?;
        positive_f(&format!("{p}.lars_eta"), self.lars_eta)?;
        non_negative(&format!("{p}.grad_clip"), self.grad_clip)?;
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

    /// Checks every value; the error names the option and the value.
    pub fn validate(&self) -> Result<(), Error> {
        self.data.source.parse::<crate::data::DataSource>()?;
        positive("data.image_size (--image-size)", self.data.image_size)?;
        at_most(
            "data.image_size (--image-size)",
            self.data.image_size,
            MAX_IMAGE_SIZE,
        )?;
        positive("log_every", self.log_every)?;
        crate::device::parse_device(&self.device)?;
        for (key, arch) in [
            ("teacher.arch", &self.teacher.arch),
            ("student.arch", &self.student.arch),
        ] {
            models::ResNetConfig::by_name(arch, 10).map_err(|_| {
                Error::Config(format!(
                    "{key}: unknown architecture {arch:?} (known: {})",
                    models::RESNET_NAMES.join(", ")
                ))
            })?;
        }
        if let Some(arch) = &self.student.teacher_arch {
            models::ResNetConfig::by_name(arch, 10).map_err(|_| {
                Error::Config(format!(
                    "student.teacher_arch: unknown architecture {arch:?} (known: {})",
                    models::RESNET_NAMES.join(", ")
                ))
            })?;
        }
        if !(0.0..1.0).contains(&self.teacher.label_smoothing) {
            return Err(Error::Config(format!(
                "teacher.label_smoothing must be in [0, 1), got {}",
                self.teacher.label_smoothing
            )));
        }
        self.teacher.optim.validate("teacher")?;
        self.student.optim.validate("student")?;
        if !(0.0..=1.0).contains(&self.student.alpha) {
            return Err(Error::Config(format!(
                "student.alpha (--alpha) must be in [0, 1], got {}",
                self.student.alpha
            )));
        }
        positive_f("student.temperature", self.student.temperature)?;
        positive_f("student.kd_temperature", self.student.kd_temperature)?;
        positive(
            "student.projection.output_dim",
            self.student.projection.output_dim,
        )?;
        positive(
            "student.projection.num_layers",
            self.student.projection.num_layers,
        )?;
        at_most(
            "student.projection.output_dim (--proj-dim)",
            self.student.projection.output_dim,
            MAX_PROJECTION_DIM,
        )?;
        at_most(
            "student.projection.hidden_dim (--proj-hidden)",
            self.student.projection.hidden_dim,
            MAX_PROJECTION_DIM,
        )?;
        at_most(
            "student.projection.num_layers (--proj-layers)",
            self.student.projection.num_layers,
            64,
        )?;
        // NT-Xent contrasts each image with the other images of its batch: one image has no negatives.
        let contrastive = [
            ("student", &self.student.optim, true),
            (
                "teacher",
                &self.teacher.optim,
                self.teacher.method == TeacherMethod::Simclr && self.teacher.from.is_none(),
            ),
        ];
        for (p, o, nt_xent) in contrastive {
            if nt_xent && o.batch_size < 2 {
                return Err(Error::Config(format!(
                    "{p}.batch_size (--batch-size) {} is too small for NT-Xent (SimCLR), which needs \
                     at least 2 images per batch as negatives of each other",
                    o.batch_size
                )));
            }
        }
        positive("eval.knn_k", self.eval.knn_k)?;
        positive_f("eval.knn_temperature", self.eval.knn_temperature)?;
        positive_f("eval.linear_lr", self.eval.linear_lr)?;
        Ok(())
    }
}

//! The `trainer` command line, derived from the configuration types.
//!
//! Every option of a run is a field of [`Config`] (or of a table in it) with a clap `#[arg]`
//! attribute: its flag, `--help` text, TOML key and validation are declared once there. A command
//! flattens the tables it uses:
//!
//! | command | options |
//! | --- | --- |
//! | `teacher` | run options, `[data]`, `[eval]`, `[teacher]` (with its `[teacher.optim]`) |
//! | `distill` | run options, `[data]`, `[eval]`, `[student]` (with `[student.optim]`, `[student.projection]`) |
//! | `run`, `smoke` | as `distill`; the optimisation flags (`--epochs`, `--lr`, …) set both phases, `--teacher-epochs` the teacher's epochs alone; `run` imports the bundled teacher (`teacher.from = "bundled"`) unless `--train-teacher` (a source tree without one trains its teacher) |
//! | `eval` | run options, `[data]`, `[eval]`, `--checkpoint`, `--arch`, `--json`, `--no-linear` |
//! | `bench-infer` | run options, `[data]`, `[eval]`, `--run`, `--checkpoint`, `--arch`, `--samples`, `--json` |
//! | `export` | its own ([`ExportArgs`]): no configuration |
//! | `device-check` | its own ([`DeviceCheckArgs`]): no configuration |
//!
//! All but `export` and `device-check` take `--config FILE.toml` (every key; the command line overrides it) and `--resume`. The
//! command line *overlays* the configuration: a flag sets its key only when it is given
//! ([`clap::FromArgMatches::update_from_arg_matches`]).

use std::marker::PhantomData;
use std::path::PathBuf;

use clap::{ArgMatches, Args, FromArgMatches, Parser, Subcommand};

use crate::config::{Config, OptimConfig, StudentConfig, TeacherConfig};
use crate::Result;

/// Contrastive self-supervised learning with knowledge distillation: a ResNet teacher distilled into
/// a small ResNet student with (1 − α)·NT-Xent + α·KD·T². With no command: `run` on the bundled
/// sample.
#[derive(Parser, Debug, Clone)]
#[command(name = "trainer", version)]
pub struct Cli {
    /// The command (default: `run`).
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// A `trainer` command with its options.
#[derive(Subcommand, Debug, Clone)]
pub enum Command {
    /// Teacher, distilled student, SimCLR-only student, evaluation and a summary table.
    Run(Options<RunLayout>),
    /// Train (supervised or SimCLR) or import a teacher.
    Teacher(Options<TeacherLayout>),
    /// Distil a student from a teacher checkpoint on the combined loss.
    Distill(Options<DistillLayout>),
    /// Classifier, kNN and linear-probe accuracy of a checkpoint.
    Eval(Options<EvalLayout>),
    /// A tiny `run` on a slice of the bundled sample (CI's smoke test).
    Smoke(Options<RunLayout>),
    /// Export a checkpoint as an ONNX file (batch norms folded), checked by tract before it is
    /// written.
    Export(ExportArgs),
    /// Inference speed, sizes and accuracy of a teacher and its students: the compression report.
    BenchInfer(Options<BenchInferLayout>),
    /// Every numeric path (losses, ResNets, optimizers, a short distillation) on a device against
    /// the CPU, as a JSON report; exits with 1 when a comparison fails.
    DeviceCheck(DeviceCheckArgs),
}

/// `trainer device-check`'s options.
#[derive(Args, Debug, Clone)]
pub struct DeviceCheckArgs {
    /// The device under test: `cpu` (the CPU against itself: every difference must be zero),
    /// `cuda`, `cuda:N` or `metal`.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// The data of the short distillation (10 classes; `sample`: the bundled sample).
    #[arg(long, default_value = "sample")]
    pub data: String,
    /// The folder for the report (`report.json`) and the distillation runs.
    #[arg(long, default_value = "runs/device-check")]
    pub out: PathBuf,
    /// Steps of the short distillation.
    #[arg(long, default_value_t = 20)]
    pub steps: usize,
    /// CPU threads (0: one per core).
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
}

/// The options of every command besides the configuration's.
#[derive(Args, Debug, Clone, Default)]
pub struct FileArgs {
    /// A TOML file with any of the options (the command line overrides it).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Continue from the run folder's last checkpoints.
    #[arg(long)]
    pub resume: bool,
}

/// `trainer run`'s own options.
#[derive(Args, Debug, Clone, Default)]
pub struct RunArgs {
    /// Teacher epochs (`teacher.optim.epochs`; the optimisation flags set both phases).
    #[arg(long)]
    pub teacher_epochs: Option<usize>,
    /// Train the teacher (with the `[teacher]` settings) instead of importing `teacher.from`
    /// (by default the bundled CIFAR-10 teacher).
    #[arg(long)]
    pub train_teacher: bool,
}

/// `trainer eval`'s own options.
#[derive(Args, Debug, Clone)]
pub struct EvalArgs {
    /// The checkpoint to evaluate.
    #[arg(long)]
    pub checkpoint: PathBuf,
    /// Architecture of the checkpoint, needed when its metadata does not say it (when given, it is
    /// used as is: a checkpoint of another architecture is an error naming the first tensor).
    #[arg(long)]
    pub arch: Option<String>,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Skip the linear probe.
    #[arg(long)]
    pub no_linear: bool,
}

/// `trainer export`'s options.
#[derive(Args, Debug, Clone)]
pub struct ExportArgs {
    /// The checkpoint (safetensors, torchvision keys; `bundled`: the bundled teacher).
    #[arg(long)]
    pub checkpoint: PathBuf,
    /// The ONNX file to write.
    #[arg(long)]
    pub onnx: PathBuf,
    /// Architecture of the checkpoint, needed when its metadata does not say it (when given, it is
    /// used as is: a checkpoint of another architecture is an error naming the first tensor).
    #[arg(long)]
    pub arch: Option<String>,
    /// What the graph takes: `normalized` (f32, as the trainer feeds its networks), `unit` (f32 in
    /// [0, 1]) or `uint8` (the normalisation then happens inside the graph).
    #[arg(long, default_value = "normalized")]
    pub input: deploy::onnx::InputKind,
    /// Outputs, comma-separated: `logits`, `features`, `projection`.
    #[arg(long, default_value = "logits", value_delimiter = ',')]
    pub output: Vec<deploy::onnx::OutputKind>,
    /// Fixed input side (default: the checkpoint's training size, else free).
    #[arg(long)]
    pub image_size: Option<usize>,
    /// Skip the check of the export against our forward pass.
    #[arg(long)]
    pub no_verify: bool,
}

/// `trainer bench-infer`'s own options (the models; `--data`, `--image-size`, `--threads`,
/// `--device` and `--out` are the run options).
#[derive(Args, Debug, Clone)]
pub struct BenchInferArgs {
    /// A `trainer run` folder: its teacher and two students, accuracies from its `summary.json`.
    #[arg(long)]
    pub run: Option<PathBuf>,
    /// More checkpoints (repeatable; `bundled`: the bundled teacher), after the run's. The first
    /// model is the reference of the ratios. Their classifier accuracy is measured on `--data`'s
    /// test split.
    #[arg(long)]
    pub checkpoint: Vec<PathBuf>,
    /// Architecture of the checkpoint, needed when its metadata does not say it (when given, it is
    /// used as is: a checkpoint of another architecture is an error naming the first tensor).
    #[arg(long)]
    pub arch: Option<String>,
    /// Timed passes at batch 1 (and a sixth of them, at least 3, at batch 64).
    #[arg(long, default_value_t = 100)]
    pub samples: usize,
    /// Print the JSON report instead of the Markdown.
    #[arg(long)]
    pub json: bool,
}

/// Which configuration tables a command exposes and how its flags land in a [`Config`].
pub trait Layout: Clone + std::fmt::Debug + Send + Sync + 'static {
    /// Adds the command's arguments.
    fn augment(cmd: clap::Command) -> clap::Command;
    /// Sets the keys whose flags are in `m`.
    fn overlay(cfg: &mut Config, m: &ArgMatches) -> Result<(), clap::Error>;
    /// The run folder when neither `--out` nor `--config` gives one.
    fn default_out() -> Option<&'static str> {
        None
    }
    /// The command's defaults that differ from [`Config::default`] (without `--config`).
    fn preset(_cfg: &mut Config) {}
}

/// The run options and `--config`/`--resume`; a flag given twice keeps its last value.
fn common(cmd: clap::Command) -> clap::Command {
    FileArgs::augment_args(Config::augment_args(cmd.args_override_self(true)))
}

/// `teacher`: the run options and `[teacher]`.
#[derive(Debug, Clone)]
pub struct TeacherLayout;

impl Layout for TeacherLayout {
    fn augment(cmd: clap::Command) -> clap::Command {
        TeacherConfig::augment_args(common(cmd).next_help_heading("Teacher"))
    }
    fn overlay(cfg: &mut Config, m: &ArgMatches) -> Result<(), clap::Error> {
        cfg.update_from_arg_matches(m)?;
        cfg.teacher.update_from_arg_matches(m)
    }
    fn default_out() -> Option<&'static str> {
        Some("runs/teacher")
    }
}

/// `distill`: the run options and `[student]`.
#[derive(Debug, Clone)]
pub struct DistillLayout;

impl Layout for DistillLayout {
    fn augment(cmd: clap::Command) -> clap::Command {
        StudentConfig::augment_args(common(cmd).next_help_heading("Student"))
    }
    fn overlay(cfg: &mut Config, m: &ArgMatches) -> Result<(), clap::Error> {
        cfg.update_from_arg_matches(m)?;
        cfg.student.update_from_arg_matches(m)
    }
    fn default_out() -> Option<&'static str> {
        Some("runs/distill")
    }
}

/// `run` and `smoke`: as `distill`, with the optimisation flags applied to both phases.
#[derive(Debug, Clone)]
pub struct RunLayout;

impl Layout for RunLayout {
    fn augment(cmd: clap::Command) -> clap::Command {
        RunArgs::augment_args(DistillLayout::augment(cmd))
    }
    fn overlay(cfg: &mut Config, m: &ArgMatches) -> Result<(), clap::Error> {
        DistillLayout::overlay(cfg, m)?;
        <OptimConfig as FromArgMatches>::update_from_arg_matches(&mut cfg.teacher.optim, m)?;
        let own = RunArgs::from_arg_matches(m)?;
        if let Some(e) = own.teacher_epochs {
            cfg.teacher.optim.epochs = e;
        }
        if own.train_teacher {
            cfg.teacher.from = None;
        }
        Ok(())
    }
    /// `run` distils from the bundled teacher unless told otherwise (or, in a source tree that
    /// has none yet, trains its teacher as `--train-teacher` does).
    fn preset(cfg: &mut Config) {
        if crate::checkpoint::bundled_teacher().exists() {
            cfg.teacher.from = Some(PathBuf::from(crate::checkpoint::BUNDLED));
        }
    }
}

/// `eval`: the run options and the checkpoint.
#[derive(Debug, Clone)]
pub struct EvalLayout;

impl Layout for EvalLayout {
    fn augment(cmd: clap::Command) -> clap::Command {
        EvalArgs::augment_args(common(cmd).next_help_heading("Checkpoint"))
    }
    fn overlay(cfg: &mut Config, m: &ArgMatches) -> Result<(), clap::Error> {
        cfg.update_from_arg_matches(m)
    }
}

/// `bench-infer`: the run options and the models. Without `--out` (or `out` in `--config`), the
/// report is written into the `--run` folder, else only printed.
#[derive(Debug, Clone)]
pub struct BenchInferLayout;

impl Layout for BenchInferLayout {
    fn augment(cmd: clap::Command) -> clap::Command {
        BenchInferArgs::augment_args(common(cmd).next_help_heading("Models"))
    }
    fn overlay(cfg: &mut Config, m: &ArgMatches) -> Result<(), clap::Error> {
        cfg.update_from_arg_matches(m)
    }
    /// No report folder unless one is given.
    fn preset(cfg: &mut Config) {
        cfg.out = PathBuf::new();
    }
}

/// The parsed options of one command (kept as clap's matches, resolved by [`Options::config`]).
#[derive(Debug, Clone)]
pub struct Options<L> {
    matches: ArgMatches,
    layout: PhantomData<L>,
}

impl<L: Layout> Options<L> {
    /// `--config` and `--resume`.
    pub fn file(&self) -> FileArgs {
        FileArgs::from_arg_matches(&self.matches).unwrap_or_default()
    }

    /// Arguments of the command beyond the configuration (e.g. [`EvalArgs`]).
    pub fn args<T: FromArgMatches>(&self) -> Result<T, clap::Error> {
        T::from_arg_matches(&self.matches)
    }

    /// The configuration: `--config FILE` (or the defaults), then `preset`, then the flags given.
    pub fn config_with(&self, preset: impl FnOnce(&mut Config)) -> Result<Config> {
        let file = self.file();
        let mut cfg = match &file.config {
            Some(p) => Config::from_toml_file(p)?,
            None => {
                let mut cfg = Config::default();
                if let Some(out) = L::default_out() {
                    cfg.out = PathBuf::from(out);
                }
                L::preset(&mut cfg);
                cfg
            }
        };
        preset(&mut cfg);
        L::overlay(&mut cfg, &self.matches).map_err(|e| crate::Error::Config(e.to_string()))?;
        Ok(cfg)
    }

    /// The configuration: `--config FILE` (or the defaults), then the flags given.
    pub fn config(&self) -> Result<Config> {
        self.config_with(|_| {})
    }
}

impl<L: Layout> Default for Options<L> {
    /// No flag given.
    fn default() -> Self {
        let matches = L::augment(clap::Command::new("trainer"))
            .try_get_matches_from(["trainer"])
            .unwrap_or_default();
        Self {
            matches,
            layout: PhantomData,
        }
    }
}

impl<L: Layout> FromArgMatches for Options<L> {
    fn from_arg_matches(matches: &ArgMatches) -> Result<Self, clap::Error> {
        Ok(Self {
            matches: matches.clone(),
            layout: PhantomData,
        })
    }

    fn update_from_arg_matches(&mut self, matches: &ArgMatches) -> Result<(), clap::Error> {
        self.matches = matches.clone();
        Ok(())
    }
}

impl<L: Layout> Args for Options<L> {
    fn augment_args(cmd: clap::Command) -> clap::Command {
        L::augment(cmd)
    }

    fn augment_args_for_update(cmd: clap::Command) -> clap::Command {
        L::augment(cmd)
    }
}

//! The CIFAR-10 distillation study (`cargo xtask study`): a teacher, one student architecture
//! trained several ways and seeds, every figure to a results folder.
//!
//! The study is a driver over the library, not a second training loop:
//! 1. the teacher is [`phases::train_teacher`] (through the engine, with resume) on
//!    `teacher_train_per_class` images per class;
//! 2. every student is exactly a `trainer distill --teacher-targets fixed` run with some options
//!    ([`Method::student_config`]): the supervised baseline (`--objective supervised`), SimCLR only
//!    (α = 0), KD only (α = 1) and SimCLR + KD at the configuration's other α, per seed, on the
//!    first `trainer.data.train_per_class` of the teacher's images (the transfer set). Its teacher
//!    logits are computed once, on the un-augmented images, and shared by all students;
//! 3. each student is evaluated as `trainer distill` evaluates it (its `best` checkpoint:
//!    classifier where trained, weighted kNN, linear probe), and the report is written from the
//!    typed [`StudyResults`] after every student.
//!
//! **Resume.** Every phase folder is an engine folder (`last`, `best`, `metrics.jsonl`) named by
//! its method, seed and a tag of its configuration (so that studies of other configurations, e.g.
//! a longer student budget, share the teacher but never a student), and a finished phase also
//! writes its result (`teacher.json`, `result.json`). A study started again
//! reuses the finished phases (after checking that they were trained with the same
//! configuration), resumes the unfinished one from its last checkpoint, and so ends with the
//! same figures as an uninterrupted study.

pub mod report;

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::config::{Config, StudentObjective, TeacherTargets};
use crate::data::Split;
use crate::engine::Ctx;
use crate::eval::EvalReport;
use crate::net::Net;
use crate::objective::Teacher;
use crate::{phases, run, Error, Result};

/// The study configuration file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StudyConfig {
    /// Seeds of the students (the teacher uses `trainer.seed`).
    pub seeds: Vec<u64>,
    /// α of the SimCLR + KD students besides 0 (SimCLR only) and 1 (KD only).
    pub alphas: Vec<f64>,
    /// Training images per class for the teacher (the first N of each class). The students, and every
    /// kNN bank and linear probe, use the first `trainer.data.train_per_class` of those (the transfer
    /// set). Default: the students' number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub teacher_train_per_class: Option<usize>,
    /// A trained teacher to distil from instead of training one: a checkpoint file, or
    /// `"bundled"` (the project's CIFAR-10 teacher, `data/teachers/cifar10`). Its architecture and
    /// classes come from the file (`trainer.teacher` is then unused), its epoch curve from the
    /// `metrics.jsonl` beside it, if there is one. Excludes `teacher_train_per_class`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub teacher_checkpoint: Option<PathBuf>,
    /// Trainer options: data subset, teacher, student, eval.
    pub trainer: Config,
}

impl StudyConfig {
    /// Reads a study file; unknown keys are errors naming the key and the file.
    pub fn from_toml_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::Io(path.to_path_buf(), e))?;
        toml::from_str(&text).map_err(|e| Error::Config(format!("{}: {e}", path.display())))
    }

    /// Refuses contradictory settings, naming them.
    pub fn validate(&self) -> Result<()> {
        if self.seeds.is_empty() {
            return Err(Error::Config("seeds must not be empty".into()));
        }
        let student_per_class = self.trainer.data.train_per_class;
        if let Some(ckpt) = &self.teacher_checkpoint {
            if let Some(n) = self.teacher_train_per_class {
                return Err(Error::Config(format!(
                    "teacher_train_per_class ({n}) sets the images of a teacher the study trains, \
                     but teacher_checkpoint ({}) names a trained one: keep one of the two",
                    ckpt.display()
                )));
            }
            return Ok(());
        }
        let teacher_per_class = self.teacher_train_per_class.unwrap_or(student_per_class);
        if student_per_class > 0
            && (teacher_per_class == 0 || teacher_per_class < student_per_class)
        {
            return Err(Error::Config(format!(
                "teacher_train_per_class ({teacher_per_class}) must be at least \
                 trainer.data.train_per_class ({student_per_class}): the transfer set is a part of \
                 the teacher's training set"
            )));
        }
        Ok(())
    }

    /// Every student method of the study, in report order.
    pub fn methods(&self) -> Vec<Method> {
        let mut methods = vec![
            Method::Supervised,
            Method::Distill(0.0),
            Method::Distill(1.0),
        ];
        methods.extend(self.alphas.iter().map(|&a| Method::Distill(a)));
        methods
    }
}

/// How a student is trained.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Method {
    /// Cross-entropy on the labels, both views.
    Supervised,
    /// `(1 − α)·NT-Xent + α·KD·T²`.
    Distill(f64),
}

impl Method {
    /// The report's name of the method.
    pub fn label(self) -> String {
        match self {
            Method::Supervised => "supervised (labels)".into(),
            Method::Distill(0.0) => "SimCLR only (α = 0)".into(),
            Method::Distill(1.0) => "KD only (α = 1)".into(),
            Method::Distill(a) => format!("SimCLR + KD (α = {a})"),
        }
    }

    /// Its key (`supervised`, `alpha_0`, `alpha_1`, `alpha_0.5`, …).
    pub fn key(self) -> String {
        match self {
            Method::Supervised => "supervised".into(),
            Method::Distill(a) => format!("alpha_{a}"),
        }
    }

    /// The `trainer distill` configuration of this method's student of `seed`, distilling from
    /// `teacher`, in `dir`.
    pub fn student_config(self, base: &Config, seed: u64, teacher: &Path, dir: &Path) -> Config {
        let mut cfg = base.clone();
        cfg.seed = seed;
        cfg.out = dir.to_path_buf();
        let s = &mut cfg.student;
        match self {
            Method::Supervised => {
                s.objective = StudentObjective::Supervised;
                s.teacher = None;
            }
            Method::Distill(a) => {
                s.objective = StudentObjective::SimclrKd;
                s.alpha = a;
                s.teacher = (a > 0.0).then(|| teacher.to_path_buf());
                s.teacher_arch = Some(base.teacher.arch.clone());
                s.teacher_targets = TeacherTargets::Fixed;
            }
        }
        cfg
    }
}

/// The teacher's figures.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TeacherResult {
    /// Architecture.
    pub arch: String,
    /// On the test set, with the transfer set as kNN bank and linear-probe training set.
    pub eval: EvalReport,
    /// Accuracy on the transfer set.
    pub train_accuracy: f64,
    /// Sum of the epochs' training time, seconds.
    pub train_seconds: f64,
    /// Training, evaluation and the students' targets, seconds.
    pub seconds_with_eval_and_targets: f64,
    /// The `metrics.jsonl` epoch records.
    pub epochs: Vec<Value>,
    /// The configuration it was trained with (TOML), to refuse a stale reuse.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub config: String,
}

/// One trained student.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StudentResult {
    /// The method's label.
    pub method: String,
    /// The method's key.
    pub key: String,
    /// Its seed.
    pub seed: u64,
    /// Its figures.
    pub eval: EvalReport,
    /// Sum of the epochs' training time, seconds.
    pub train_seconds: f64,
    /// Training throughput, images per second.
    pub images_per_second: f64,
    /// The `metrics.jsonl` epoch records.
    pub epochs: Vec<Value>,
    /// The study's wall time when this student was done, seconds (over every session).
    #[serde(default)]
    pub elapsed_seconds: f64,
    /// The configuration it was trained with (TOML), to refuse a stale reuse.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub config: String,
}

/// Mean, standard deviation (n − 1) and the values of one figure over the seeds.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Stat {
    /// The values.
    pub values: Vec<f64>,
    /// Their mean.
    pub mean: f64,
    /// Their sample standard deviation (0 for one value).
    pub std: f64,
}

impl Stat {
    /// The statistics of `values`.
    pub fn of(values: &[f64]) -> Self {
        let (mean, std) = mean_std(values);
        Self {
            values: values.to_vec(),
            mean,
            std,
        }
    }
}

/// Mean and sample standard deviation.
pub fn mean_std(xs: &[f64]) -> (f64, f64) {
    let n = xs.len().max(1) as f64;
    let m = xs.iter().sum::<f64>() / n;
    let var = if xs.len() > 1 {
        xs.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (xs.len() - 1) as f64
    } else {
        0.0
    };
    (m, var.sqrt())
}

/// A method's figures over its seeds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Aggregate {
    /// The method's label.
    pub method: String,
    /// The method's key.
    pub key: String,
    /// Classifier accuracy.
    pub classifier_accuracy: Stat,
    /// kNN accuracy.
    pub knn_accuracy: Stat,
    /// Linear-probe accuracy.
    pub linear_probe_accuracy: Stat,
    /// Training time.
    pub train_seconds: Stat,
}

/// Everything the study measured: the JSON file, and what the report is written from.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StudyResults {
    /// The report's title.
    pub title: String,
    /// The study configuration.
    pub config: StudyConfig,
    /// The data folder.
    pub data_dir: String,
    /// Training images of the teacher.
    pub teacher_train_images: usize,
    /// Training images of the students (the transfer set).
    pub train_images: usize,
    /// Test images.
    pub test_images: usize,
    /// Wall time of the study, seconds.
    pub wall_seconds: f64,
    /// Time to load the data, seconds.
    pub data_load_seconds: f64,
    /// The teacher.
    pub teacher: TeacherResult,
    /// The keys of the methods trained, in report order.
    pub methods: Vec<String>,
    /// Every student.
    pub students: Vec<StudentResult>,
    /// Per method, over the seeds (computed from `students`).
    pub aggregates: Vec<Aggregate>,
}

impl StudyResults {
    /// The methods of `methods` (keys) in the configuration's order.
    pub fn methods(&self) -> Vec<Method> {
        self.config
            .methods()
            .into_iter()
            .filter(|m| self.methods.contains(&m.key()))
            .collect()
    }

    /// The students of `m`.
    pub fn students_of(&self, m: Method) -> Vec<&StudentResult> {
        self.students.iter().filter(|s| s.key == m.key()).collect()
    }

    /// Recomputes [`StudyResults::aggregates`] from the students.
    pub fn aggregate(&mut self) {
        self.aggregates = self
            .methods()
            .into_iter()
            .filter_map(|m| {
                let rs = self.students_of(m);
                if rs.is_empty() {
                    return None;
                }
                let pick = |f: &dyn Fn(&StudentResult) -> Option<f64>| -> Vec<f64> {
                    rs.iter().filter_map(|r| f(r)).collect()
                };
                Some(Aggregate {
                    method: m.label(),
                    key: m.key(),
                    classifier_accuracy: Stat::of(&pick(&|r| r.eval.classifier_accuracy)),
                    knn_accuracy: Stat::of(&pick(&|r| Some(r.eval.knn_accuracy))),
                    linear_probe_accuracy: Stat::of(&pick(&|r| r.eval.linear_probe_accuracy)),
                    train_seconds: Stat::of(&pick(&|r| Some(r.train_seconds))),
                })
            })
            .collect();
    }
}

/// Where the study runs and what it trains.
#[derive(Debug, Clone)]
pub struct StudyPlan {
    /// The configuration.
    pub study: StudyConfig,
    /// The folder with CIFAR-10's `train.tar.gz` and `test.tar.gz`.
    pub data_dir: String,
    /// Where the phase folders go.
    pub runs: PathBuf,
    /// Where the report, JSON and plots go.
    pub results: PathBuf,
    /// The students to train (a subset of the configuration's methods).
    pub methods: Vec<Method>,
}

/// What the study tells its caller as it goes (the library prints nothing).
pub trait Observer {
    /// A line of progress.
    fn say(&self, line: &str);
}

/// The epoch records of a phase folder's `metrics.jsonl`.
fn epoch_records(dir: &Path) -> Result<Vec<Value>> {
    if !dir.join("metrics.jsonl").exists() {
        return Ok(vec![]);
    }
    let (records, _) = crate::metrics::read_metrics(&dir.join("metrics.jsonl"))?;
    Ok(records
        .into_iter()
        .filter(|r| r["kind"] == "epoch")
        .collect())
}

fn seconds(epochs: &[Value]) -> f64 {
    epochs.iter().filter_map(|r| r["seconds"].as_f64()).sum()
}

/// A finished phase's result, if its file exists and was made with `config` (TOML).
fn reusable<T: serde::de::DeserializeOwned>(
    path: &Path,
    config: &str,
    config_of: impl Fn(&T) -> &str,
) -> Result<Option<T>> {
    if !path.exists() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(path).map_err(|e| Error::Io(path.to_path_buf(), e))?;
    let r: T = serde_json::from_str(&text)
        .map_err(|e| Error::Config(format!("{}: {e}", path.display())))?;
    if config_of(&r) != config {
        return Err(Error::Config(format!(
            "{} was trained with another configuration than this study's; remove its folder \
             (or pass --fresh, or another --runs) to train it again",
            path.display()
        )));
    }
    Ok(Some(r))
}

/// What determines a student's figures: its configuration without the run folder and the
/// settings that change no number (threads, printing, checkpoint frequency), as TOML.
fn student_identity(cfg: &Config) -> Result<String> {
    let mut c = cfg.clone();
    c.out = PathBuf::new();
    c.threads = 0;
    c.quiet = true;
    c.checkpoint_every = 0;
    c.to_toml()
}

/// What determines the teacher: the seed, the data, the teacher's own table and the evaluation
/// (which picks its best epoch), as TOML.
fn teacher_identity(cfg: &Config) -> Result<String> {
    let c = Config {
        seed: cfg.seed,
        data: cfg.data.clone(),
        teacher: cfg.teacher.clone(),
        eval: cfg.eval.clone(),
        ..Config::default()
    };
    student_identity(&c)
}

/// A short, stable tag of an identity (FNV-1a), so that phases of different configurations never
/// share a folder and the same one is found again.
fn tag(identity: &str) -> String {
    fnv(identity.as_bytes())[..8].to_string()
}

/// The FNV-1a hash of `bytes`, 16 hex digits.
fn fnv(bytes: &[u8]) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}")
}

fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    let text = serde_json::to_string_pretty(value).map_err(|e| Error::Config(e.to_string()))?;
    crate::checkpoint::write_atomic(path, text.as_bytes())
}

/// Runs the study of `plan` (see the module docs), reusing and resuming what `plan.runs` holds,
/// and writes the report after the teacher and after every student.
pub fn run(plan: &StudyPlan, interrupt: &AtomicBool, obs: &dyn Observer) -> Result<StudyResults> {
    let study = &plan.study;
    let wall = Instant::now();
    let mut cfg = study.trainer.clone();
    cfg.data.source = format!("cifar10-tar:{}", plan.data_dir);
    cfg.quiet = true;
    cfg.validate()?;
    std::fs::create_dir_all(&plan.runs).map_err(|e| Error::Io(plan.runs.clone(), e))?;
    std::fs::create_dir_all(&plan.results).map_err(|e| Error::Io(plan.results.clone(), e))?;

    obs.say(&format!("loading {} ...", cfg.data.source));
    // The teacher's training set; the students' transfer set is the first images of each class of it.
    let student_per_class = cfg.data.train_per_class;
    let teacher_per_class = study.teacher_train_per_class.unwrap_or(student_per_class);
    let mut load_cfg = cfg.clone();
    load_cfg.data.train_per_class = teacher_per_class;
    let teacher_split: Split = run::load_data(&load_cfg)?;
    let split = Split {
        train: if student_per_class > 0 {
            teacher_split.train.take_per_class(student_per_class)
        } else {
            teacher_split.train.clone()
        },
        test: teacher_split.test.clone(),
    };
    let load_seconds = wall.elapsed().as_secs_f64();
    obs.say(&format!(
        "data: {} training images for the teacher, {} for the students, {} test images, {} classes ({load_seconds:.0} s)",
        teacher_split.train.len(),
        split.train.len(),
        split.test.len(),
        split.train.num_classes()
    ));

    // 1. The teacher: trained here (through the engine, resumed), or a trained checkpoint.
    let t0 = Instant::now();
    let (teacher_cfg, best, teacher_dir, teacher_ref) = match &study.teacher_checkpoint {
        Some(named) => {
            let file = crate::checkpoint::resolve(named);
            let bytes = std::fs::read(&file).map_err(|e| Error::Io(file.clone(), e))?;
            // The name and the content: a retrained bundle is another teacher.
            let identity = format!(
                "teacher_checkpoint = {:?}\ncontent = \"{}\"\n",
                named.display().to_string(),
                fnv(&bytes)
            );
            let dir = plan
                .runs
                .join(format!("teacher_checkpoint_{}", tag(&identity)));
            // A checkpoint names its own architecture: the students' configurations and the
            // report say it.
            let ckpt = crate::checkpoint::Checkpoint::load(&file, &candle_core::Device::Cpu)?;
            cfg.teacher.arch = ckpt
                .metadata
                .get(crate::checkpoint::meta::ARCH)
                .cloned()
                .ok_or_else(|| {
                    Error::Checkpoint(format!(
                        "{}: the file does not say its architecture",
                        file.display()
                    ))
                })?;
            std::fs::create_dir_all(&dir).map_err(|e| Error::Io(dir.clone(), e))?;
            obs.say(&format!("teacher: the checkpoint {}", named.display()));
            (identity, file, dir, named.clone())
        }
        None => {
            let identity = teacher_identity(&load_cfg)?;
            let dir = plan.runs.join(format!("teacher_{}", tag(&identity)));
            let best = dir.join("best.safetensors");
            load_cfg.out = dir.clone();
            (identity, best.clone(), dir, best)
        }
    };
    let teacher_json = teacher_dir.join("teacher.json");
    let previous = reusable::<TeacherResult>(&teacher_json, &teacher_cfg, |r| &r.config)?;
    if study.teacher_checkpoint.is_none() {
        if previous.is_none() {
            obs.say(&format!(
                "teacher: {} {:?}, {} epochs ...",
                cfg.teacher.arch, cfg.teacher.method, cfg.teacher.optim.epochs
            ));
            run::prepare_out(&load_cfg)?;
            let teacher_ctx = Ctx::new(&load_cfg, &teacher_split, interrupt)?;
            phases::train_teacher(&teacher_ctx, &teacher_dir, true)?;
        } else {
            obs.say(&format!("teacher: reusing {}", best.display()));
        }
    }
    let ctx = Ctx::new(&cfg, &split, interrupt)?;
    let (teacher, _) = Net::from_checkpoint(
        &best,
        Some(&cfg.teacher.arch),
        split.train.num_classes(),
        cfg.data.image_size,
        &ctx.device,
    )?;
    // One extraction gives the teacher's figures and the students' fixed targets.
    let ev = ctx.evaluator()?;
    let f = ev.features(&teacher, true)?;
    let teacher_eval = ev.report_from(&f, true, true)?;
    let train_accuracy = ev.train_accuracy(&f)?;
    let tr = f
        .train
        .as_ref()
        .ok_or_else(|| Error::Config("no train features".into()))?;
    let targets = candle_core::Tensor::from_vec(
        tr.logits.clone(),
        (split.train.len(), tr.classes),
        &ctx.device,
    )?;
    let epochs = match study.teacher_checkpoint {
        // The curve of the run that made the checkpoint, as it was recorded.
        Some(_) => best.parent().map_or(Ok(vec![]), epoch_records)?,
        None => {
            let mut epochs = epoch_records(&teacher_dir)?;
            if let (Some(last), Some(acc)) = (epochs.last_mut(), teacher_eval.classifier_accuracy) {
                last["test_accuracy"] = serde_json::json!(acc);
            }
            epochs
        }
    };
    let elapsed_before = previous
        .as_ref()
        .map_or(0.0, |p| p.seconds_with_eval_and_targets);
    let teacher_result = TeacherResult {
        arch: cfg.teacher.arch.clone(),
        eval: teacher_eval,
        train_accuracy,
        train_seconds: seconds(&epochs),
        seconds_with_eval_and_targets: if previous.is_some() {
            elapsed_before
        } else {
            t0.elapsed().as_secs_f64()
        },
        epochs,
        config: teacher_cfg,
    };
    write_json(&teacher_json, &teacher_result)?;
    obs.say(&format!(
        "teacher: {:?}, train accuracy {:.2}% ({:.0} s training)",
        teacher_result.eval,
        100.0 * train_accuracy,
        teacher_result.train_seconds
    ));

    // 2. The students.
    let mut results = StudyResults {
        title: "CIFAR-10 distillation study on a 2-core CPU".into(),
        config: study.clone(),
        data_dir: plan.data_dir.clone(),
        teacher_train_images: teacher_split.train.len(),
        train_images: split.train.len(),
        test_images: split.test.len(),
        wall_seconds: 0.0,
        data_load_seconds: load_seconds,
        teacher: teacher_result,
        methods: plan.methods.iter().map(|m| m.key()).collect(),
        students: vec![],
        aggregates: vec![],
    };
    let mut base_elapsed = results.teacher.seconds_with_eval_and_targets + load_seconds;
    let session = Instant::now();
    for &seed in &study.seeds {
        for &m in &plan.methods {
            let toml =
                student_identity(&m.student_config(&cfg, seed, &teacher_ref, Path::new("")))?;
            let dir = plan
                .runs
                .join(format!("student_{}_seed{seed}_{}", m.key(), tag(&toml)));
            let scfg = m.student_config(&cfg, seed, &teacher_ref, &dir);
            let result_path = dir.join("result.json");
            let r = match reusable::<StudentResult>(&result_path, &toml, |r| &r.config)? {
                Some(r) => {
                    obs.say(&format!(
                        "student {} seed {seed}: reusing {}",
                        m.label(),
                        result_path.display()
                    ));
                    base_elapsed = base_elapsed.max(r.elapsed_seconds);
                    r
                }
                None => {
                    obs.say(&format!(
                        "student {} ({}), seed {seed} ...",
                        m.label(),
                        cfg.student.arch
                    ));
                    let sctx = ctx.with_config(&scfg);
                    run::prepare_out(&scfg)?;
                    let teacher = (m != Method::Supervised && scfg.student.alpha > 0.0)
                        .then(|| Teacher::Fixed(targets.clone()));
                    let s = run::train_and_evaluate_student(&sctx, true, teacher)?;
                    let epochs = epoch_records(&dir)?;
                    let train_seconds = seconds(&epochs);
                    let images = epochs.len()
                        * (split.train.len() / scfg.student.optim.batch_size)
                        * scfg.student.optim.batch_size;
                    let r = StudentResult {
                        method: m.label(),
                        key: m.key(),
                        seed,
                        eval: s.eval,
                        train_seconds,
                        images_per_second: images as f64 / train_seconds.max(1e-9),
                        epochs,
                        elapsed_seconds: base_elapsed + session.elapsed().as_secs_f64(),
                        config: toml,
                    };
                    write_json(&result_path, &r)?;
                    obs.say(&format!("student {} seed {seed}: {:?}", m.label(), r.eval));
                    r
                }
            };
            results.students.push(r);
            results.wall_seconds = base_elapsed + session.elapsed().as_secs_f64();
            results.aggregate();
            // Write the report after every student: a partial study still leaves its figures.
            report::write(&plan.results, &results)?;
        }
    }
    results.wall_seconds = base_elapsed + session.elapsed().as_secs_f64();
    results.aggregate();
    report::write(&plan.results, &results)?;
    Ok(results)
}

/// Reads a results JSON written by [`report::write`].
pub fn read_results(path: &Path) -> Result<StudyResults> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::Io(path.to_path_buf(), e))?;
    serde_json::from_str(&text).map_err(|e| Error::Config(format!("{}: {e}", path.display())))
}

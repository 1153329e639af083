//! The trainer's commands as functions: `run` (the whole method), `teacher`, `distill`, `eval`.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use serde_json::{json, Value};

use crate::config::Config;
use crate::data::{DataSource, Split};
use crate::eval::EvalReport;
use crate::metrics::read_metrics;
use crate::net::Net;
use crate::report::{markdown_table, plot_curves, Row};
use crate::train::{self, Ctx};
use crate::{Error, Result};

/// Loads the configured data (and its per-class subsets).
pub fn load_data(cfg: &Config) -> Result<Split> {
    let source: DataSource = cfg.data.source.parse()?;
    let mut split = source.load(cfg.data.image_size)?;
    if cfg.data.train_per_class > 0 {
        split.train = split.train.take_per_class(cfg.data.train_per_class);
    }
    if cfg.data.test_per_class > 0 {
        split.test = split.test.take_per_class(cfg.data.test_per_class);
    }
    Ok(split)
}

fn prepare_out(cfg: &Config) -> Result<()> {
    let out = &cfg.out;
    std::fs::create_dir_all(out).map_err(|e| Error::Io(out.clone(), e))?;
    crate::checkpoint::write_atomic(&out.join("config.toml"), cfg.to_toml()?.as_bytes())
}

fn epoch_records(dir: &Path) -> Result<Vec<Value>> {
    let (records, _) = read_metrics(&dir.join("metrics.jsonl"))?;
    Ok(records
        .into_iter()
        .filter(|r| r["kind"] == "epoch")
        .collect())
}

fn row(model: &str, net: &Net, eval: EvalReport, outcome: &train::PhaseOutcome) -> Row {
    Row {
        model: model.to_string(),
        arch: net.arch.clone(),
        parameters: net.backbone.num_parameters(),
        eval,
        train_seconds: outcome.seconds,
        images_per_second: outcome.images_per_second,
    }
}

/// What a command produced.
#[derive(Debug, Clone)]
pub struct Summary {
    /// The table rows.
    pub rows: Vec<Row>,
    /// The Markdown summary (also written to `summary.md`).
    pub markdown: String,
    /// The run folder.
    pub out: PathBuf,
}

fn write_summary(
    cfg: &Config,
    classes: usize,
    title: &str,
    rows: Vec<Row>,
    curves: &[(String, Vec<Value>)],
    notes: &str,
) -> Result<Summary> {
    let out = &cfg.out;
    let svg = out.join("curves.svg");
    plot_curves(&svg, curves)?;
    let mut md = format!("# {title}\n\n");
    md.push_str(&format!(
        "Data: `{}` ({} classes), image size {}, seed {}, device {}.\n\n",
        cfg.data.source, classes, cfg.data.image_size, cfg.seed, cfg.device
    ));
    md.push_str(&markdown_table(&rows));
    md.push('\n');
    md.push_str(notes);
    md.push_str("\nTraining curves: `curves.svg`; every figure: `summary.json`, `*/metrics.jsonl`; configuration: `config.toml`.\n");
    crate::checkpoint::write_atomic(&out.join("summary.md"), md.as_bytes())?;
    let json = serde_json::to_string_pretty(&json!({"title": title, "rows": rows}))
        .map_err(|e| Error::Config(e.to_string()))?;
    crate::checkpoint::write_atomic(&out.join("summary.json"), json.as_bytes())?;
    Ok(Summary {
        rows,
        markdown: md,
        out: out.clone(),
    })
}

fn ctx<'a>(cfg: &'a Config, split: &'a Split, interrupt: &'a AtomicBool) -> Result<Ctx<'a>> {
    Ok(Ctx {
        cfg,
        device: crate::device::open_device(&cfg.device)?,
        split,
        train_images: Arc::new(split.train.images.clone()),
        interrupt,
    })
}

/// `trainer run`: teacher, distilled student (α from the configuration), SimCLR-only student (α = 0),
/// evaluation of all three and the summary, under `cfg.out`.
pub fn run_all(cfg: &Config, resume: bool, interrupt: &AtomicBool) -> Result<Summary> {
    cfg.validate()?;
    prepare_out(cfg)?;
    let split = load_data(cfg)?;
    let c = ctx(cfg, &split, interrupt)?;
    let teacher_dir = cfg.out.join("teacher");
    let teacher = train::train_teacher(&c, &teacher_dir, resume)?;

    let mut kd_cfg = cfg.clone();
    kd_cfg.student.teacher = Some(teacher.best.clone());
    kd_cfg.student.teacher_arch = Some(cfg.teacher.arch.clone());
    let alpha = kd_cfg.student.alpha;
    let kd_ctx = Ctx {
        cfg: &kd_cfg,
        ..ctx(&kd_cfg, &split, interrupt)?
    };
    let kd_dir = cfg.out.join("student_distilled");
    let (kd, kd_net) = train::train_student(&kd_ctx, &kd_dir, resume)?;

    let mut base_cfg = cfg.clone();
    base_cfg.student.alpha = 0.0;
    base_cfg.student.teacher = None;
    let base_ctx = ctx(&base_cfg, &split, interrupt)?;
    let base_dir = cfg.out.join("student_simclr");
    let (base, base_net) = train::train_student(&base_ctx, &base_dir, resume)?;

    let (teacher_net, _) = Net::from_checkpoint(
        &teacher.best,
        Some(&cfg.teacher.arch),
        split.train.num_classes(),
        cfg.data.image_size,
        &c.device,
    )?;
    let load_best = |net: &Net, path: &Path| -> Result<()> {
        let ck = crate::checkpoint::Checkpoint::load(path, &c.device)?;
        crate::checkpoint::load_into_varmap(&net.varmap, &ck, "", path, &net.arch)
    };
    load_best(&kd_net, &kd.best)?;
    load_best(&base_net, &base.best)?;
    let rows = vec![
        row(
            &format!("teacher ({:?})", cfg.teacher.method).to_lowercase(),
            &teacher_net,
            train::evaluate(&c, &teacher_net, true, true)?,
            &teacher,
        ),
        row(
            &format!("student, SimCLR + KD (α = {alpha})"),
            &kd_net,
            train::evaluate(&kd_ctx, &kd_net, alpha > 0.0, true)?,
            &kd,
        ),
        row(
            "student, SimCLR only (α = 0)",
            &base_net,
            train::evaluate(&base_ctx, &base_net, false, true)?,
            &base,
        ),
    ];
    let curves = vec![
        ("teacher".to_string(), epoch_records(&teacher_dir)?),
        ("distilled".to_string(), epoch_records(&kd_dir)?),
        ("simclr".to_string(), epoch_records(&base_dir)?),
    ];
    let notes = format!(
        "Teacher: {} ({:?}), {} epochs. Students: {}, {} epochs, two SimCLR views per image, \
         loss (1 − α)·NT-Xent(T = {}) + α·KD(T = {})·T². kNN: k = {}, T = {}. Linear probe: {} epochs on frozen features.\n",
        cfg.teacher.arch,
        cfg.teacher.method,
        cfg.teacher.optim.epochs,
        cfg.student.arch,
        cfg.student.optim.epochs,
        cfg.student.temperature,
        cfg.student.kd_temperature,
        cfg.eval.knn_k,
        cfg.eval.knn_temperature,
        cfg.eval.linear_epochs
    );
    write_summary(
        cfg,
        split.train.num_classes(),
        "SimCLR + knowledge distillation run",
        rows,
        &curves,
        &notes,
    )
}

/// `trainer teacher`: trains or imports the teacher into `cfg.out`.
pub fn run_teacher(cfg: &Config, resume: bool, interrupt: &AtomicBool) -> Result<Summary> {
    cfg.validate()?;
    prepare_out(cfg)?;
    let split = load_data(cfg)?;
    let c = ctx(cfg, &split, interrupt)?;
    let outcome = train::train_teacher(&c, &cfg.out, resume)?;
    let (net, _) = Net::from_checkpoint(
        &outcome.best,
        Some(&cfg.teacher.arch),
        split.train.num_classes(),
        cfg.data.image_size,
        &c.device,
    )?;
    let rows = vec![row(
        "teacher",
        &net,
        train::evaluate(&c, &net, true, true)?,
        &outcome,
    )];
    write_summary(
        cfg,
        split.train.num_classes(),
        "Teacher",
        rows,
        &[("teacher".into(), epoch_records(&cfg.out)?)],
        "",
    )
}

/// `trainer distill`: trains a student on the combined loss into `cfg.out`.
pub fn run_distill(cfg: &Config, resume: bool, interrupt: &AtomicBool) -> Result<Summary> {
    cfg.validate()?;
    prepare_out(cfg)?;
    let split = load_data(cfg)?;
    let c = ctx(cfg, &split, interrupt)?;
    let (outcome, net) = train::train_student(&c, &cfg.out, resume)?;
    let ck = crate::checkpoint::Checkpoint::load(&outcome.best, &c.device)?;
    crate::checkpoint::load_into_varmap(&net.varmap, &ck, "", &outcome.best, &net.arch)?;
    let alpha = cfg.student.alpha;
    let rows = vec![row(
        &format!("student (α = {alpha})"),
        &net,
        train::evaluate(&c, &net, alpha > 0.0, true)?,
        &outcome,
    )];
    write_summary(
        cfg,
        split.train.num_classes(),
        "Distilled student",
        rows,
        &[("student".into(), epoch_records(&cfg.out)?)],
        "",
    )
}

/// `trainer eval`: classifier, kNN and linear-probe accuracy of a checkpoint on the test set.
pub fn run_eval(
    cfg: &Config,
    checkpoint: &Path,
    arch: Option<&str>,
    linear: bool,
) -> Result<EvalReport> {
    cfg.validate()?;
    let split = load_data(cfg)?;
    let interrupt = AtomicBool::new(false);
    let c = ctx(cfg, &split, &interrupt)?;
    let ck = crate::checkpoint::Checkpoint::load(checkpoint, &c.device)?;
    // A student trained with α = 0 has an untrained classifier: report it as absent.
    let untrained_fc = ck
        .metadata
        .get(crate::checkpoint::meta::CONFIG)
        .and_then(|t| Config::from_toml_str(t).ok())
        .is_some_and(|k| {
            ck.metadata
                .get(crate::checkpoint::meta::ROLE)
                .is_some_and(|r| r == "student")
                && k.student.alpha == 0.0
        });
    train::evaluate_checkpoint(&c, checkpoint, arch, !untrained_fc, linear)
}

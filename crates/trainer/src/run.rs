//! The trainer's commands as functions: `run` (the whole method), `teacher`, `distill`, `eval`.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

use serde_json::{json, Value};

use crate::config::Config;
use crate::data::{DataSource, Split};
use crate::engine::{Ctx, PhaseOutcome};
use crate::eval::EvalReport;
use crate::metrics::read_metrics;
use crate::net::Net;
use crate::phases;
use crate::report::{markdown_table, plot_curves, Row};
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

/// Creates the run folder and writes the resolved `config.toml` into it (rank 0 writes it).
pub fn prepare_out(cfg: &Config) -> Result<()> {
    let out = &cfg.out;
    std::fs::create_dir_all(out).map_err(|e| Error::Io(out.clone(), e))?;
    if crate::dist::world().rank() != 0 {
        return Ok(());
    }
    crate::checkpoint::write_atomic(&out.join("config.toml"), cfg.to_toml()?.as_bytes())
}

fn epoch_records(dir: &Path) -> Result<Vec<Value>> {
    let (records, _) = read_metrics(&dir.join("metrics.jsonl"))?;
    Ok(records
        .into_iter()
        .filter(|r| r["kind"] == "epoch")
        .collect())
}

fn row(model: &str, net: &Net, eval: EvalReport, outcome: &PhaseOutcome) -> Row {
    Row {
        model: model.to_string(),
        arch: net.arch.clone(),
        parameters: net.backbone().num_parameters(),
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

impl Summary {
    /// The summary of a rank other than 0 in data-parallel training: rank 0 reports.
    fn empty(cfg: &Config) -> Self {
        Self {
            rows: vec![],
            markdown: String::new(),
            out: cfg.out.clone(),
        }
    }
}

/// Refuses to run `what` as one of several processes (it is not data-parallel).
pub fn single_process(what: &str) -> Result<()> {
    let w = crate::dist::world().world_size();
    if w > 1 {
        return Err(Error::Config(format!(
            "{what} runs in one process (started as one of {w} ranks): under mpirun, use `trainer teacher` and `trainer distill`"
        )));
    }
    Ok(())
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
    md.push_str(&markdown_table(&rows, cfg.eval.knn_k));
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

/// The configured teacher of `ctx.cfg`'s student, as the targets it asks for (None without one).
fn teacher_of(ctx: &Ctx) -> Result<Option<crate::objective::Teacher>> {
    match phases::load_teacher(ctx)? {
        Some(net) => Ok(Some(phases::teacher_targets(ctx, &net)?)),
        None => Ok(None),
    }
}

/// A student of `ctx.cfg` trained into `dir` from its configured teacher.
fn distill(ctx: &Ctx, dir: &Path, resume: bool) -> Result<(PhaseOutcome, Net)> {
    phases::train_student(ctx, dir, resume, teacher_of(ctx)?)
}

/// Loads `path` into `net`'s variables.
fn load_best(net: &Net, path: &Path, device: &candle_core::Device) -> Result<()> {
    let ck = crate::checkpoint::Checkpoint::load(path, device)?;
    crate::checkpoint::load_into_varmap(&net.varmap, &ck, "", path, &net.arch)
}

/// `trainer run`: teacher, distilled student (α from the configuration), SimCLR-only student (α = 0),
/// evaluation of all three and the summary, under `cfg.out`.
pub fn run_all(cfg: &Config, resume: bool, interrupt: &AtomicBool) -> Result<Summary> {
    single_process("trainer run")?;
    cfg.validate()?;
    prepare_out(cfg)?;
    let split = load_data(cfg)?;
    let c = Ctx::new(cfg, &split, interrupt)?;
    let teacher_dir = cfg.out.join("teacher");
    let teacher = phases::train_teacher(&c, &teacher_dir, resume)?;

    let mut kd_cfg = cfg.clone();
    kd_cfg.student.teacher = Some(teacher.best.clone());
    kd_cfg.student.teacher_arch = None;
    let alpha = kd_cfg.student.alpha;
    let kd_ctx = c.with_config(&kd_cfg);
    let kd_dir = cfg.out.join("student_distilled");
    let (kd, kd_net) = distill(&kd_ctx, &kd_dir, resume)?;

    let mut base_cfg = cfg.clone();
    base_cfg.student.alpha = 0.0;
    base_cfg.student.teacher = None;
    let base_ctx = c.with_config(&base_cfg);
    let base_dir = cfg.out.join("student_simclr");
    let (base, base_net) = distill(&base_ctx, &base_dir, resume)?;

    let (teacher_net, _) = Net::from_checkpoint(
        &teacher.best,
        None,
        split.train.num_classes(),
        cfg.data.image_size,
        &c.device,
    )?;
    load_best(&kd_net, &kd.best, &c.device)?;
    load_best(&base_net, &base.best, &c.device)?;
    let rows = vec![
        row(
            &match &cfg.teacher.from {
                Some(from) => format!("teacher ({})", from.display()),
                None => format!("teacher ({:?})", cfg.teacher.method).to_lowercase(),
            },
            &teacher_net,
            c.evaluator()?.report(&teacher_net, true, true)?,
            &teacher,
        ),
        row(
            &format!("student, SimCLR + KD (α = {alpha})"),
            &kd_net,
            kd_ctx.evaluator()?.report(&kd_net, alpha > 0.0, true)?,
            &kd,
        ),
        row(
            "student, SimCLR only (α = 0)",
            &base_net,
            base_ctx.evaluator()?.report(&base_net, false, true)?,
            &base,
        ),
    ];
    let curves = vec![
        ("teacher".to_string(), epoch_records(&teacher_dir)?),
        ("distilled".to_string(), epoch_records(&kd_dir)?),
        ("simclr".to_string(), epoch_records(&base_dir)?),
    ];
    let teacher_note = match &cfg.teacher.from {
        Some(from) => format!(
            "{} imported from `{}` (not trained in this run)",
            teacher_net.arch,
            from.display()
        ),
        None => format!(
            "{} ({:?}), {} epochs",
            cfg.teacher.arch, cfg.teacher.method, cfg.teacher.optim.epochs
        ),
    };
    let mut notes = format!(
        "Teacher: {teacher_note}. Students: {}, {} epochs, two SimCLR views per image, \
         loss (1 − α)·NT-Xent(T = {}) + α·KD(T = {})·T² (teacher targets: {:?}). kNN: k = {}, T = {}. Linear probe: {} epochs on frozen features.\n",
        cfg.student.arch,
        cfg.student.optim.epochs,
        cfg.student.temperature,
        cfg.student.kd_temperature,
        cfg.student.teacher_targets,
        cfg.eval.knn_k,
        cfg.eval.knn_temperature,
        cfg.eval.linear_epochs
    );
    let models: Vec<_> = rows
        .iter()
        .zip([&teacher.best, &kd.best, &base.best])
        .map(|(r, best)| (r.model.clone(), best.clone(), (&r.eval).into()))
        .collect();
    let compression =
        crate::compression::for_run(&cfg.out, &models, cfg.data.image_size, &c.device)?;
    notes.push('\n');
    notes.push_str(&compression.markdown);
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
    let c = Ctx::new(cfg, &split, interrupt)?;
    let outcome = phases::train_teacher(&c, &cfg.out, resume)?;
    if !c.is_root() {
        return Ok(Summary::empty(cfg));
    }
    let (net, _) = Net::from_checkpoint(
        &outcome.best,
        None,
        split.train.num_classes(),
        cfg.data.image_size,
        &c.device,
    )?;
    let rows = vec![row(
        "teacher",
        &net,
        c.evaluator()?.report(&net, true, true)?,
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
    let c = Ctx::new(cfg, &split, interrupt)?;
    if !c.is_root() {
        // The other ranks train; rank 0 evaluates and writes the summary.
        phases::train_student(&c, &cfg.out, resume, teacher_of(&c)?)?;
        return Ok(Summary::empty(cfg));
    }
    let s = train_and_evaluate_student(&c, resume, teacher_of(&c)?)?;
    let alpha = cfg.student.alpha;
    let rows = vec![row(
        &format!("student (α = {alpha})"),
        &s.net,
        s.eval,
        &s.outcome,
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
    let c = Ctx::new(cfg, &split, &interrupt)?;
    let (net, ck) = Net::from_checkpoint(
        checkpoint,
        arch,
        split.train.num_classes(),
        cfg.data.image_size,
        &c.device,
    )?;
    c.evaluator()?
        .report(&net, checkpoint_has_classifier(&ck), linear)
}

/// A trained and evaluated student.
#[derive(Debug)]
pub struct StudentRun {
    /// The phase's outcome.
    pub outcome: PhaseOutcome,
    /// The student, with its `best` weights.
    pub net: Net,
    /// Its figures.
    pub eval: EvalReport,
}

/// Trains the student of `ctx.cfg` into `ctx.cfg.out` distilling from `teacher`, loads its `best`
/// checkpoint and evaluates it (classifier where trained, kNN, linear probe): the student of
/// `trainer distill` and of the study.
pub fn train_and_evaluate_student(
    ctx: &Ctx,
    resume: bool,
    teacher: Option<crate::objective::Teacher>,
) -> Result<StudentRun> {
    let (outcome, net) = phases::train_student(ctx, &ctx.cfg.out, resume, teacher)?;
    load_best(&net, &outcome.best, &ctx.device)?;
    let eval = ctx
        .evaluator()?
        .report(&net, student_has_classifier(&ctx.cfg.student), true)?;
    Ok(StudentRun { outcome, net, eval })
}

/// Whether a checkpoint's classifier was trained: not a student's whose recorded configuration
/// has no classifier ([`student_has_classifier`]), e.g. one trained with α = 0.
pub fn checkpoint_has_classifier(ck: &crate::checkpoint::Checkpoint) -> bool {
    let student = ck
        .metadata
        .get(crate::checkpoint::meta::ROLE)
        .is_some_and(|r| r == "student");
    let untrained = student
        && ck
            .metadata
            .get(crate::checkpoint::meta::CONFIG)
            .and_then(|t| Config::from_toml_str(t).ok())
            .is_some_and(|k| !student_has_classifier(&k.student));
    !untrained
}

/// Whether a student trained with `s` has a trained classifier head: not a SimCLR-only one.
pub fn student_has_classifier(s: &crate::config::StudentConfig) -> bool {
    s.objective != crate::config::StudentObjective::SimclrKd || s.alpha > 0.0
}

//! The CIFAR-10 distillation study driver (`cargo xtask study`): a command line over
//! [`trainer::study`], which trains the teacher and every student through the training engine and
//! writes the report. Stopped at any moment (Ctrl-C, a crash, a reboot) and started again with the
//! same command, it continues where it stopped.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use clap::Parser;
use trainer::study::{self, Observer, StudyConfig, StudyPlan};
use trainer::Config;

/// The CIFAR-10 distillation study: a teacher, one student trained several ways, results/.
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
    /// Where the run folders go (a study started again continues from them).
    #[arg(long)]
    runs: Option<PathBuf>,
    /// Where the report, JSON and plots go.
    #[arg(long)]
    results: Option<PathBuf>,
    /// Seeds of the students (overrides the configuration), e.g. `--seeds 0,1,2`.
    #[arg(long, value_delimiter = ',')]
    seeds: Option<Vec<u64>>,
    /// Start over: remove the run folders first instead of continuing from them.
    #[arg(long)]
    fresh: bool,
    /// Rewrite the report and plots from the results JSON of an earlier run (no training).
    #[arg(long)]
    report_only: bool,
    /// With `--report-only`: results JSON files of further seeds (runs with `--seeds ...` and
    /// another `--results`) whose students are added to the report; their wall time is added too.
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

/// Prints the study's progress.
struct Print;

impl Observer for Print {
    fn say(&self, line: &str) {
        println!("{line}");
    }
}

/// `--report-only`: the report and plots again from the results JSON (plus `--merge`d ones).
fn report_only(results: &std::path::Path, merge: &[PathBuf]) -> Result<()> {
    let mut r = study::read_results(&results.join("cifar10_cpu_study.json"))?;
    for m in merge {
        let other = study::read_results(m)?;
        r.students.extend(other.students);
        r.wall_seconds += other.wall_seconds;
        for seed in other.config.seeds {
            if !r.config.seeds.contains(&seed) {
                r.config.seeds.push(seed);
            }
        }
    }
    r.aggregate();
    study::report::write(results, &r)?;
    println!("rewrote the report in {}", results.display());
    Ok(())
}

fn main() -> Result<()> {
    if let Some(n) = trainer::dist::launched_world_size().filter(|&n| n > 1) {
        anyhow::bail!("the study runs in one process (started as one of {n} ranks by mpirun)");
    }
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
    let mut config = StudyConfig::from_toml_file(&config_path)?;
    if let Some(seeds) = &cli.seeds {
        config.seeds = seeds.clone();
    }
    config
        .validate()
        .with_context(|| format!("{}", config_path.display()))?;
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
    if cli.report_only {
        return report_only(&results, &cli.merge);
    }
    // The students to train (checked before the teacher's hour, not after it).
    let mut methods = config.methods();
    if cli.skip_baselines {
        methods.retain(|m| matches!(m, study::Method::Distill(a) if *a > 0.0));
    }
    if let Some(keys) = &cli.methods {
        let known: Vec<String> = methods.iter().map(|m| m.key()).collect();
        if let Some(k) = keys.iter().find(|k| !known.contains(k)) {
            bail!("--methods: no student {k:?} in this study (its students: {known:?})");
        }
        methods.retain(|m| keys.contains(&m.key()));
    }
    let mut check = config.trainer.clone();
    check.data.source = format!("cifar10-tar:{}", cli.data_dir);
    check.validate()?;
    if cli.check {
        println!("{}: a valid study configuration", config_path.display());
        return Ok(());
    }
    if cli.fresh && runs.exists() {
        std::fs::remove_dir_all(&runs).with_context(|| format!("removing {}", runs.display()))?;
    }
    let interrupt = Arc::new(AtomicBool::new(false));
    {
        let flag = interrupt.clone();
        ctrlc::set_handler(move || {
            if flag.swap(true, Ordering::SeqCst) {
                std::process::exit(130);
            }
            eprintln!(
                "\nCtrl-C: stopping after writing a checkpoint (start the study again to continue)"
            );
        })
        .context("installing the Ctrl-C handler")?;
    }
    let plan = StudyPlan {
        study: config,
        data_dir: cli.data_dir.clone(),
        runs,
        results: results.clone(),
        methods,
    };
    let r = study::run(&plan, &interrupt, &Print)?;
    println!(
        "study done in {:.0} s; report in {}",
        r.wall_seconds,
        results.display()
    );
    Ok(())
}

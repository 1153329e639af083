//! The `trainer` binary: `trainer [run|teacher|distill|eval|smoke|export|bench-infer|device-check] [OPTIONS]`; see `trainer --help`.
//! The command line is [`trainer::cli`], derived from the configuration types.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::{Context, Result};
use clap::Parser;
use trainer::cli::{BenchInferArgs, Cli, Command, DeviceCheckArgs, EvalArgs};
use trainer::Config;

/// The smoke run: every phase, tiny, on a slice of the bundled sample.
fn smoke_preset(cfg: &mut Config) {
    cfg.out = PathBuf::from("runs/smoke");
    // The smoke run trains every phase, the teacher included.
    cfg.teacher.from = None;
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
}

/// Processes of this job on this machine (`mpirun` says so in the environment), else 1.
fn local_ranks() -> usize {
    [
        "OMPI_COMM_WORLD_LOCAL_SIZE",
        "MPI_LOCALNRANKS",
        "SLURM_NTASKS_PER_NODE",
    ]
    .iter()
    .find_map(|k| std::env::var(k).ok()?.parse::<usize>().ok())
    .unwrap_or(1)
    .max(1)
}

fn set_threads(cfg: &Config) -> Result<()> {
    let n = if cfg.threads == 0 {
        // One thread per core, the cores shared among this machine's ranks.
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        (cores / local_ranks()).max(1)
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

/// Validates `cfg`, starts its thread pool and sets the collectives' timeout.
fn ready(cfg: Config) -> Result<Config> {
    cfg.validate()?;
    set_threads(&cfg)?;
    let t = cfg.collective_timeout;
    trainer::dist::world().set_timeout((t > 0.0).then(|| std::time::Duration::from_secs_f64(t)));
    Ok(cfg)
}

fn main() {
    // Keep freed tensor memory for the next step instead of returning it to the kernel (glibc
    // only; a process-wide setting, hence here and not in a library).
    models::ops::retain_freed_memory();
    // MPI (under mpirun) is set up first and finalised last, by `launch.finish()`.
    let result = trainer::dist::init()
        .map_err(anyhow::Error::from)
        .and_then(|launch| {
            let r = real_main();
            let world = trainer::dist::world();
            if let Err(e) = &r {
                if world.world_size() > 1 && exit_code(e) != 130 {
                    // The other ranks may be waiting in a collective for this one: stop them all.
                    // (Ctrl-C stops every rank at the same step: they finish normally.)
                    eprintln!(
                        "error: rank {} of {}: {}",
                        world.rank(),
                        world.world_size(),
                        message(e)
                    );
                    world.abort(exit_code(e));
                }
            }
            launch.finish();
            r
        });
    if let Err(e) = result {
        eprintln!("error: {}", message(&e));
        std::process::exit(exit_code(&e));
    }
}

/// The chain of causes, each once: many messages already quote their cause.
fn message(e: &anyhow::Error) -> String {
    let mut msg = e.to_string();
    for cause in e.chain().skip(1) {
        let c = cause.to_string();
        if !msg.contains(&c) {
            msg.push_str(": ");
            msg.push_str(&c);
        }
    }
    msg
}

/// 130 for an interrupted run (Ctrl-C), 1 for any other error.
fn exit_code(e: &anyhow::Error) -> i32 {
    match e.downcast_ref::<trainer::Error>() {
        Some(trainer::Error::Interrupted { .. }) => 130,
        _ => 1,
    }
}

/// Prints a result line: rank 0 only (the only rank of a single process).
fn say(text: &str) {
    if trainer::dist::world().rank() == 0 {
        println!("{text}");
    }
}

/// `trainer device-check`: the report to `OUT/report.json`, a table to stdout, exit 1 on a failure.
fn device_check(a: DeviceCheckArgs) -> Result<()> {
    let cfg = Config {
        threads: a.threads,
        device: a.device.clone(),
        ..Config::default()
    };
    ready(cfg)?;
    let opts = trainer::device_check::CheckOptions {
        device: a.device,
        data: a.data,
        work: a.out.clone(),
        train_steps: a.steps,
        ..Default::default()
    };
    let r = trainer::device_check::run_check(&opts)?;
    std::fs::create_dir_all(&a.out).with_context(|| format!("creating {}", a.out.display()))?;
    let path = a.out.join("report.json");
    std::fs::write(&path, serde_json::to_string_pretty(&r)?)
        .with_context(|| format!("writing {}", path.display()))?;
    println!(
        "| check | max abs | max rel | tolerance | pass |\n| --- | ---: | ---: | ---: | --- |"
    );
    for c in &r.comparisons {
        println!(
            "| {} | {:.3e} | {:.3e} | {:.0e} | {} |",
            c.name,
            c.max_abs,
            c.max_rel,
            c.tolerance,
            if c.pass { "yes" } else { "**no**" }
        );
    }
    println!("report: {}", path.display());
    if !r.pass {
        anyhow::bail!(
            "{}: some comparisons failed (see {})",
            r.device,
            path.display()
        );
    }
    Ok(())
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
    let command = cli
        .command
        .unwrap_or_else(|| Command::Run(Default::default()));
    if !matches!(command, Command::Teacher(_) | Command::Distill(_)) {
        trainer::run::single_process("this command")?;
    }
    match command {
        Command::Run(o) => {
            let cfg = ready(o.config()?)?;
            let s = trainer::run::run_all(&cfg, o.file().resume, &interrupt)?;
            say(&format!(
                "\n{}\nrun folder: {}",
                s.markdown,
                s.out.display()
            ));
        }
        Command::Smoke(o) => {
            let cfg = ready(o.config_with(smoke_preset)?)?;
            let s = trainer::run::run_all(&cfg, o.file().resume, &interrupt)?;
            say(&format!("\n{}", s.markdown));
        }
        Command::Teacher(o) => {
            let cfg = ready(o.config()?)?;
            let s = trainer::run::run_teacher(&cfg, o.file().resume, &interrupt)?;
            say(&format!("\n{}", s.markdown));
        }
        Command::Distill(o) => {
            let cfg = ready(o.config()?)?;
            let s = trainer::run::run_distill(&cfg, o.file().resume, &interrupt)?;
            say(&format!("\n{}", s.markdown));
        }
        Command::Eval(o) => {
            let a: EvalArgs = o.args()?;
            let cfg = ready(o.config()?)?;
            let r = trainer::run::run_eval(&cfg, &a.checkpoint, a.arch.as_deref(), !a.no_linear)?;
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
        Command::Export(a) => {
            let e = trainer::export::export_checkpoint(&a.into())?;
            println!("{}", serde_json::to_string_pretty(&e)?);
        }
        Command::DeviceCheck(a) => device_check(a)?,
        Command::BenchInfer(o) => {
            let a: BenchInferArgs = o.args()?;
            let cfg = ready(o.config()?)?;
            let r = trainer::compression::bench_infer(&cfg, &a)?;
            if a.json {
                println!("{}", serde_json::to_string(&r.json)?);
            } else {
                println!("{}", r.markdown);
            }
        }
    }
    Ok(())
}

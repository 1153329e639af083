//! Crash safety of the real binary: SIGKILL at random moments then `--resume`, and Ctrl-C (SIGINT).
//!
//! Both compare the resumed run with an uninterrupted one: the metrics without their wall-clock fields
//! and the tensors of every best checkpoint must be identical.

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context};
use rand::{Rng, SeedableRng};

type Result<T> = anyhow::Result<T>;

const BIN: &str = env!("CARGO_BIN_EXE_trainer");

/// Phase folders of `trainer run`, in the order they train.
const PHASES: [&str; 3] = ["teacher", "student_distilled", "student_simclr"];

/// A tiny `trainer run`: resnet8 everywhere, 4 images per class, batch 4, a checkpoint after every step
/// (so that kills land during checkpoint writes too).
fn tiny_toml(epochs: usize) -> String {
    format!(
        "quiet = true\nlog_every = 1\ncheckpoint_every = 1\n\
         [data]\ntrain_per_class = 4\ntest_per_class = 2\n\
         [teacher]\narch = \"resnet8\"\n\
         [teacher.optim]\nepochs = {epochs}\nbatch_size = 4\nwarmup_epochs = 0.5\n\
         [student]\narch = \"resnet8\"\n\
         [student.optim]\nepochs = {epochs}\nbatch_size = 4\nwarmup_epochs = 0.5\n\
         [eval]\nlinear_epochs = 2\nknn_k = 5\n"
    )
}

fn spawn(args: &[&str], config: &Path, out: &Path, log: &Path, resume: bool) -> Result<Child> {
    let mut cmd = Command::new(BIN);
    cmd.args(args)
        .arg("--config")
        .arg(config)
        .arg("--out")
        .arg(out)
        .args(["--threads", "1"]);
    if resume {
        cmd.arg("--resume");
    }
    let file = std::fs::File::create(log)?;
    Ok(cmd
        .stdin(Stdio::null())
        .stdout(file.try_clone()?)
        .stderr(file)
        .spawn()?)
}

fn run_to_end(args: &[&str], config: &Path, out: &Path, log: &Path) -> Result<()> {
    let status = spawn(args, config, out, log, false)?.wait()?;
    let text = std::fs::read_to_string(log)?;
    ensure!(status.success(), "uninterrupted run failed: {text}");
    Ok(())
}

/// Same metrics (without timing) and same best-checkpoint tensors in `dir` as in `reference`.
fn assert_same_run(reference: &Path, dir: &Path, phases: &[&str]) -> Result<()> {
    for phase in phases {
        let (a, b) = (reference.join(phase), dir.join(phase));
        let ma = common::metrics_without_timing(&a.join("metrics.jsonl"));
        let mb = common::metrics_without_timing(&b.join("metrics.jsonl"));
        ensure!(!ma.is_empty(), "{phase}: no metrics in the reference");
        ensure!(
            ma == mb,
            "{phase}: the resumed run's metrics differ from the uninterrupted run's\n{ma:?}\n{mb:?}"
        );
        let (ta, tb) = (
            common::tensor_bytes(&a.join("best.safetensors"))?,
            common::tensor_bytes(&b.join("best.safetensors"))?,
        );
        ensure!(
            ta.len() == tb.len(),
            "{phase}: best checkpoints hold different tensors"
        );
        for ((na, da), (nb, db)) in ta.iter().zip(&tb) {
            ensure!(
                na == nb && da == db,
                "{phase}: tensor {na} of the best checkpoint differs after the kills"
            );
        }
    }
    Ok(())
}

/// The step stored in each phase's `last.safetensors` (0 when absent); every one must load.
fn checkpoint_steps(out: &Path) -> Result<Vec<usize>> {
    let mut steps = Vec::new();
    for phase in PHASES {
        let last = out.join(phase).join("last.safetensors");
        if !last.exists() {
            steps.push(0);
            continue;
        }
        let ck = trainer::checkpoint::Checkpoint::load(&last, &candle_core::Device::Cpu)
            .with_context(|| format!("a kill left {} unreadable", last.display()))?;
        steps.push(ck.meta("step").unwrap_or(0));
        let best = out.join(phase).join("best.safetensors");
        if best.exists() {
            trainer::checkpoint::Checkpoint::load(&best, &candle_core::Device::Cpu)
                .with_context(|| format!("a kill left {} unreadable", best.display()))?;
        }
        // A torn last line is allowed (the reader skips it and says so); anything else is an error.
        trainer::metrics::read_metrics(&out.join(phase).join("metrics.jsonl"))?;
    }
    Ok(steps)
}

fn no_panic(log: &Path) -> Result<String> {
    let text = std::fs::read_to_string(log)?;
    ensure!(
        !text.contains("panicked") && !text.contains("backtrace"),
        "{}: {text}",
        log.display()
    );
    Ok(text)
}

#[test]
fn sigkill_at_random_moments_then_resume_equals_uninterrupted() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let config = dir.path().join("tiny.toml");
    std::fs::write(&config, tiny_toml(4))?;
    let reference = dir.path().join("reference");
    let t0 = Instant::now();
    run_to_end(&["run"], &config, &reference, &dir.path().join("ref.log"))?;
    let whole = t0.elapsed();

    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(8);
    let (mut kills, mut lives) = (0usize, 0usize);
    let mut kills_in = [0usize; 3];
    let mut kills_in_writes = 0usize;
    // Lives last 0.1 s to 0.4 s (the whole run takes ~5 s here); the upper bound grows after a life that
    // made no progress, so a slow (loaded) machine still gets through. A killed run that ends before
    // 20 kills in all is followed by another one, from scratch; each must end equal to the reference.
    let min_ms = 100;
    let mut max_ms = 400;
    let mut attempt = 0;
    while kills < 20 || kills_in[0] < 2 || kills_in[1] < 2 {
        attempt += 1;
        ensure!(
            attempt <= 8,
            "{kills} kills in {attempt} killed runs: {kills_in:?}"
        );
        let out = dir.path().join(format!("killed{attempt}"));
        let mut last_steps = vec![0usize; 3];
        let mut first_life = true;
        loop {
            lives += 1;
            ensure!(
                lives <= 400,
                "no end after {lives} lives ({kills} kills): the run makes no progress between kills"
        );
            let log = dir.path().join(format!("life{lives}.log"));
            let had_checkpoint = out.join("teacher/last.safetensors").exists();
            let mut child = spawn(&["run"], &config, &out, &log, !first_life)?;
            first_life = false;
            let delay = Duration::from_millis(rng.random_range(min_ms..max_ms));
            let deadline = Instant::now() + delay;
            let finished = loop {
                if let Some(status) = child.try_wait()? {
                    break Some(status);
                }
                if Instant::now() >= deadline {
                    break None;
                }
                std::thread::sleep(Duration::from_millis(5));
            };
            if let Some(status) = finished {
                let text = no_panic(&log)?;
                ensure!(status.success(), "life {lives} failed: {text}");
                break;
            }
            child.kill()?;
            child.wait()?;
            kills += 1;
            no_panic(&log)?;
            // Where did it land? The last phase folder that exists is the one being trained.
            let phase = PHASES
                .iter()
                .rposition(|p| out.join(p).join("metrics.jsonl").exists())
                .unwrap_or(0);
            kills_in[phase] += 1;
            if PHASES
                .iter()
                .any(|p| out.join(p).join("last.safetensors.tmp").exists())
            {
                kills_in_writes += 1;
            }
            // Every checkpoint left behind is whole, and none goes back in time.
            let steps = checkpoint_steps(&out)?;
            for (p, (now, before)) in steps.iter().zip(&last_steps).enumerate() {
                ensure!(
                    now >= before,
                    "{}: the checkpoint went back from step {before} to {now} after kill {kills}",
                    PHASES[p]
                );
            }
            if steps == last_steps {
                max_ms += max_ms / 4;
            }
            last_steps = steps;
            if had_checkpoint {
                // Killed before it got to say anything, or it said it resumed.
                let text = std::fs::read_to_string(&log)?;
                let resumed = text.contains("resuming from") || text.trim().is_empty();
                ensure!(resumed, "life {lives} did not say it resumed: {text}");
            }
        }
        assert_same_run(&reference, &out, &PHASES)?;
        ensure!(
            common::summary_evals(&reference)? == common::summary_evals(&out)?,
            "the final evaluation differs"
        );
    }
    eprintln!(
        "{kills} kills in {lives} lives: teacher {}, distilled student {}, SimCLR student {}; \
         {kills_in_writes} with a checkpoint write in flight; uninterrupted run {whole:?}; {attempt} killed run(s)",
        kills_in[0], kills_in[1], kills_in[2]
    );
    Ok(())
}

fn send_sigint(child: &Child) -> Result<()> {
    let status = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()?;
    ensure!(status.success(), "kill -INT failed");
    Ok(())
}

fn wait_for_lines(path: &Path, n: usize, child: &mut Child) -> Result<()> {
    let start = Instant::now();
    loop {
        let lines = std::fs::read_to_string(path)
            .map(|t| t.lines().count())
            .unwrap_or(0);
        if lines >= n {
            return Ok(());
        }
        if let Some(s) = child.try_wait()? {
            bail!(
                "the trainer ended ({s}) before {} had {n} lines",
                path.display()
            );
        }
        ensure!(
            start.elapsed() < Duration::from_secs(120),
            "timed out waiting for {}",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn sigint_writes_a_checkpoint_says_so_exits_130_and_resumes() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let config = dir.path().join("tiny.toml");
    // No periodic checkpoints: the one written on Ctrl-C is the only mid-epoch one.
    std::fs::write(
        &config,
        tiny_toml(2).replace("checkpoint_every = 1", "checkpoint_every = 0"),
    )?;
    let reference = dir.path().join("reference");
    run_to_end(
        &["teacher"],
        &config,
        &reference,
        &dir.path().join("ref.log"),
    )?;

    let out = dir.path().join("interrupted");
    let log = dir.path().join("first.log");
    let mut child = spawn(&["teacher"], &config, &out, &log, false)?;
    // Three step lines in: mid-way through the first epoch (10 steps per epoch).
    wait_for_lines(&out.join("metrics.jsonl"), 3, &mut child)?;
    send_sigint(&child)?;
    let status = child.wait()?;
    let text = no_panic(&log)?;
    ensure!(
        status.code() == Some(130),
        "exit {status:?}, want 130: {text}"
    );
    ensure!(
        text.contains("Ctrl-C: stopping after writing a checkpoint")
            && text.contains("error: interrupted: stopped after writing the checkpoint")
            && text.contains("last.safetensors")
            && text.contains("--resume"),
        "{text}"
    );
    let ck = trainer::checkpoint::Checkpoint::load(
        &out.join("last.safetensors"),
        &candle_core::Device::Cpu,
    )?;
    let batch: usize = ck.meta("batch").context("batch")?;
    ensure!(
        ck.meta::<usize>("epoch") == Some(0) && batch >= 3,
        "{:?}",
        ck.metadata
    );

    let log2 = dir.path().join("resume.log");
    let status = spawn(&["teacher"], &config, &out, &log2, true)?.wait()?;
    let text = no_panic(&log2)?;
    ensure!(status.success(), "{text}");
    ensure!(text.contains("resuming from"), "{text}");
    let phases = [""];
    assert_same_run(&reference, &out, &phases)?;
    Ok(())
}

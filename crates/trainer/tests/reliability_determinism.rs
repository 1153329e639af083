//! Determinism: the same seed and data give bit-identical metrics and checkpoints on the CPU with one
//! and with two threads (the real binary on the bundled sample).

mod common;

use std::path::Path;
use std::process::Command;

use anyhow::ensure;

type Result<T> = anyhow::Result<T>;

fn run(config: &Path, out: &Path, threads: &str) -> Result<()> {
    let o = Command::new(env!("CARGO_BIN_EXE_trainer"))
        .args(["run", "--threads", threads, "--config"])
        .arg(config)
        .arg("--out")
        .arg(out)
        .output()?;
    ensure!(
        o.status.success(),
        "{threads} threads: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    Ok(())
}

#[test]
fn one_and_two_threads_give_bit_identical_runs() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let config = dir.path().join("tiny.toml");
    std::fs::write(
        &config,
        "quiet = true\nlog_every = 1\nseed = 11\n\
         [data]\ntrain_per_class = 4\ntest_per_class = 2\n\
         [teacher]\narch = \"resnet8\"\n[teacher.optim]\nepochs = 2\nbatch_size = 8\n\
         [student]\narch = \"resnet8\"\n[student.optim]\nepochs = 2\nbatch_size = 8\n\
         [eval]\nlinear_epochs = 3\nknn_k = 5\n",
    )?;
    let (one, two) = (dir.path().join("one"), dir.path().join("two"));
    run(&config, &one, "1")?;
    run(&config, &two, "2")?;
    for phase in ["teacher", "student_distilled", "student_simclr"] {
        let a = common::metrics_without_timing(&one.join(phase).join("metrics.jsonl"));
        let b = common::metrics_without_timing(&two.join(phase).join("metrics.jsonl"));
        ensure!(a.len() > 4, "{phase}: too few metrics lines");
        ensure!(a == b, "{phase}: 1 and 2 threads differ\n{a:?}\n{b:?}");
        for f in ["best.safetensors", "last.safetensors"] {
            ensure!(
                common::tensor_bytes(&one.join(phase).join(f))?
                    == common::tensor_bytes(&two.join(phase).join(f))?,
                "{phase}/{f}: 1 and 2 threads give different tensors"
            );
        }
    }
    ensure!(
        common::summary_evals(&one)? == common::summary_evals(&two)?,
        "the final evaluation differs between 1 and 2 threads"
    );
    Ok(())
}

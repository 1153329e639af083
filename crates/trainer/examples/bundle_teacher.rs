//! Writes a trained teacher run as the project's bundled teacher (what `cargo xtask teacher`
//! runs after training): `teacher.safetensors` (the run's `best.safetensors`, weights stored in
//! half precision), the run's `config.toml` and `metrics.jsonl`.
//!
//! `cargo run --release -p trainer --example bundle_teacher -- RUN_DIR OUT_DIR [--f32]`

use std::path::PathBuf;

use anyhow::{bail, Context, Result};

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (run, out, full) = match args.as_slice() {
        [run, out] => (PathBuf::from(run), PathBuf::from(out), false),
        [run, out, flag] if flag == "--f32" => (PathBuf::from(run), PathBuf::from(out), true),
        _ => bail!("usage: bundle_teacher RUN_DIR OUT_DIR [--f32]"),
    };
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    let best = run.join("best.safetensors");
    let dst = out.join("teacher.safetensors");
    if full {
        std::fs::copy(&best, &dst).with_context(|| format!("copying {}", best.display()))?;
    } else {
        trainer::checkpoint::save_half(&best, &dst)?;
    }
    for f in ["config.toml", "metrics.jsonl"] {
        let from = run.join(f);
        std::fs::copy(&from, out.join(f)).with_context(|| format!("copying {}", from.display()))?;
    }
    println!(
        "{} ({} bytes) from {}",
        dst.display(),
        std::fs::metadata(&dst)?.len(),
        best.display()
    );
    Ok(())
}

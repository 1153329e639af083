//! Helpers shared by the trainer's integration tests: a tiny configuration and metric comparison.
#![allow(dead_code)]

use std::io::Write;
use std::path::Path;

use serde_json::Value;
use trainer::Config;

/// A configuration that trains every phase in a few seconds on a slice of the bundled sample.
pub fn tiny(out: &Path) -> Config {
    let mut cfg = Config {
        out: out.to_path_buf(),
        quiet: true,
        log_every: 2,
        ..Config::default()
    };
    cfg.data.train_per_class = 8;
    cfg.data.test_per_class = 4;
    cfg.teacher.arch = "resnet8".into();
    cfg.student.arch = "resnet8".into();
    for o in [&mut cfg.teacher.optim, &mut cfg.student.optim] {
        o.epochs = 2;
        o.batch_size = 16;
        o.warmup_epochs = 0.5;
    }
    cfg.eval.linear_epochs = 3;
    cfg.eval.knn_k = 10;
    cfg
}

/// The records of a `metrics.jsonl` without the wall-clock fields, which differ between runs.
pub fn metrics_without_timing(path: &Path) -> Vec<Value> {
    let (records, warning) = trainer::metrics::read_metrics(path).expect("metrics");
    assert!(warning.is_none(), "{warning:?}");
    records
        .into_iter()
        .map(|mut r| {
            if let Some(o) = r.as_object_mut() {
                o.remove("images_per_s");
                o.remove("seconds");
            }
            r
        })
        .collect()
}

/// The tensors of a safetensors file, by name (sorted), as raw bytes: for bit-exact comparisons.
pub fn tensor_bytes(path: &Path) -> anyhow::Result<Vec<(String, Vec<u8>)>> {
    let bytes = std::fs::read(path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    let st = safetensors::SafeTensors::deserialize(&bytes)?;
    let mut out: Vec<(String, Vec<u8>)> = st
        .tensors()
        .into_iter()
        .map(|(n, v)| (n, v.data().to_vec()))
        .collect();
    out.sort();
    Ok(out)
}

/// Writes the `split` folder (`train` or `test`) of the image folder `root` as a gzipped tarball, the
/// layout of the CIFAR-10 JPEG tarballs.
pub fn tar_gz(path: &Path, split: &str, root: &Path) -> anyhow::Result<()> {
    let file = std::fs::File::create(path)?;
    let mut builder = tar::Builder::new(flate2::write::GzEncoder::new(
        file,
        flate2::Compression::fast(),
    ));
    builder.append_dir_all(split, root.join(split))?;
    builder.into_inner()?.finish()?.flush()?;
    Ok(())
}

/// The `eval` record of every row of a run folder's `summary.json`: the final evaluation, to
/// compare two runs that must agree.
pub fn summary_evals(run: &Path) -> anyhow::Result<Vec<Value>> {
    let v: Value = serde_json::from_str(&std::fs::read_to_string(run.join("summary.json"))?)?;
    let rows = v["rows"]
        .as_array()
        .ok_or_else(|| anyhow::anyhow!("{}: no rows", run.join("summary.json").display()))?;
    Ok(rows.iter().map(|r| r["eval"].clone()).collect())
}

//! The compression report: teacher against its students — accuracy, parameters, size on disk and
//! as ONNX, latency and throughput on this machine, and the speed-up over the teacher
//! (`compression.md` and `compression.json` in the run folder, the table also in `summary.md`).
//!
//! [`measure_checkpoint`] gathers one model's figures (sizes, [`crate::infer`] timings) from its
//! checkpoint; [`compression_report`] turns a list of them, the reference (teacher) first, into
//! Markdown and JSON; [`write_compression_report`] writes both files.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use serde::Serialize;
use serde_json::{json, Value};

use crate::checkpoint::Checkpoint;
use crate::cli::BenchInferArgs;
use crate::config::Config;
use crate::eval::Evaluator;
use crate::export::checkpoint_spec;
use crate::infer::{time_inference, InferenceOptions, InferenceTiming};
use crate::net::Net;
use crate::report::pct;
use crate::{Error, Result};

/// The accuracies of a model on the test set (`None`: not measured, or a classifier that was
/// never trained, as a SimCLR-only student's).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Accuracy {
    /// Accuracy of the network's own classifier `fc`.
    pub classifier: Option<f64>,
    /// Weighted kNN accuracy on the backbone's features.
    pub knn: Option<f64>,
    /// Linear-probe accuracy on the frozen backbone.
    pub linear_probe: Option<f64>,
}

impl From<&crate::eval::EvalReport> for Accuracy {
    fn from(r: &crate::eval::EvalReport) -> Self {
        Self {
            classifier: r.classifier_accuracy,
            knn: Some(r.knn_accuracy),
            linear_probe: r.linear_probe_accuracy,
        }
    }
}

/// Everything the report says about one model.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ModelFigures {
    /// Row label (`teacher`, `student, SimCLR + KD`, …).
    pub label: String,
    /// The checkpoint.
    pub checkpoint: PathBuf,
    /// Architecture.
    pub arch: String,
    /// Image side of the timings.
    pub image_size: usize,
    /// Trainable parameters of the backbone and classifier (not the projection head, which
    /// inference does not use).
    pub parameters: usize,
    /// Size of the checkpoint file.
    pub checkpoint_bytes: u64,
    /// Size of the exported ONNX file (logits, batch norms folded): what a deployment ships.
    pub onnx_bytes: u64,
    /// Test accuracies.
    pub accuracy: Accuracy,
    /// Speed on this machine.
    pub timing: InferenceTiming,
}

/// Loads a checkpoint and measures its sizes and its speed on `image_size`² images.
/// `accuracy` is passed through; see [`test_accuracy`] to measure the classifier's.
pub fn measure_checkpoint(
    label: &str,
    path: &Path,
    arch: Option<&str>,
    accuracy: Accuracy,
    image_size: usize,
    device: &Device,
    opts: &InferenceOptions,
) -> Result<ModelFigures> {
    let ckpt = Checkpoint::load(path, &Device::Cpu)?;
    let spec = checkpoint_spec(&ckpt, path, arch)?;
    let file = crate::checkpoint::resolve(path);
    let checkpoint_bytes = std::fs::metadata(&file)
        .map_err(|e| Error::Io(file.clone(), e))?
        .len();
    let onnx = deploy::onnx::export(&spec, &ckpt.tensors, &Default::default())
        .map_err(|e| Error::Checkpoint(format!("{}: cannot export: {e}", path.display())))?;
    let onnx_bytes = deploy::onnx::to_bytes(&onnx).len() as u64;
    let tensors: HashMap<String, Tensor> = ckpt
        .tensors
        .iter()
        .map(|(k, t)| Ok((k.clone(), t.to_device(device)?)))
        .collect::<Result<_>>()?;
    let (net, _) = spec.build(&tensors, device)?;
    let timing = time_inference(&net, image_size, device, opts)?;
    Ok(ModelFigures {
        label: label.to_string(),
        checkpoint: path.to_path_buf(),
        arch: spec.arch.clone(),
        image_size,
        parameters: net.num_parameters(),
        checkpoint_bytes,
        onnx_bytes,
        accuracy,
        timing,
    })
}

/// Test accuracy of a checkpoint's own classifier (the evaluator's preprocessing and test set),
/// or `None` when its classifier was never trained ([`crate::run::checkpoint_has_classifier`]) or
/// has another number of classes than the data.
pub fn test_accuracy(
    evaluator: &Evaluator,
    path: &Path,
    arch: Option<&str>,
    classes: usize,
    image_size: usize,
    device: &Device,
) -> Result<Option<f64>> {
    let (net, ckpt) = Net::from_checkpoint(path, arch, classes, image_size, device)?;
    if !crate::run::checkpoint_has_classifier(&ckpt) || net.num_classes != classes {
        return Ok(None);
    }
    Ok(Some(
        evaluator.classifier_accuracy(&evaluator.features(&net, false)?),
    ))
}

/// The report in both forms.
#[derive(Debug, Clone)]
pub struct CompressionReport {
    /// A Markdown section: heading, table, how it was measured.
    pub markdown: String,
    /// Every figure (the rows as [`ModelFigures`], plus the ratios and the machine).
    pub json: Value,
}

fn mb(bytes: u64) -> f64 {
    bytes as f64 / 1e6
}

/// The processor's model name (Linux `/proc/cpuinfo`), for the report's footnote.
pub fn cpu_name() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into())
}

/// The report of `models`, the first one (the teacher) the reference of every ratio:
/// compression = its parameters / the model's, speed-up at batch 1 = its latency / the model's,
/// at batch 64 = the model's throughput / its.
pub fn compression_report(models: &[ModelFigures]) -> CompressionReport {
    let threads = rayon::current_num_threads();
    let cpu = cpu_name();
    let mut md = String::from("## Compression\n\n");
    let mut rows = Vec::with_capacity(models.len());
    if let Some(reference) = models.first() {
        let batch = reference.timing.batch;
        md.push_str(&format!(
            "| model | arch | params | compression | ONNX MB | checkpoint MB | classifier acc | kNN acc | linear probe acc | ms/image (batch 1) | images/s (batch {batch}) | speed-up (batch 1) | speed-up (batch {batch}) |\n\
             | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n"
        ));
        for m in models {
            let compression = reference.parameters as f64 / m.parameters.max(1) as f64;
            let speedup_1 = reference.timing.ms_per_image / m.timing.ms_per_image;
            let speedup_b = m.timing.images_per_second / reference.timing.images_per_second;
            md.push_str(&format!(
                "| {} | {} | {} | {compression:.1}× | {:.2} | {:.2} | {} | {} | {} | {:.3} | {:.0} | {speedup_1:.2}× | {speedup_b:.2}× |\n",
                m.label,
                m.arch,
                m.parameters,
                mb(m.onnx_bytes),
                mb(m.checkpoint_bytes),
                pct(m.accuracy.classifier),
                pct(m.accuracy.knn),
                pct(m.accuracy.linear_probe),
                m.timing.ms_per_image,
                m.timing.images_per_second,
            ));
            rows.push(json!({
                "figures": m,
                "compression": compression,
                "speedup_batch1": speedup_1,
                "speedup_batch": speedup_b,
            }));
        }
        md.push_str(&format!(
            "\nSpeed on this machine ({cpu}, {threads} threads), our CPU kernels (`ResNet::detached`: batch norm, \
             residual and ReLU in each convolution's epilogue), {}×{} images: median latency of {} passes at batch 1, \
             median of {} passes at batch {batch}, after warm-up. Ratios against the first row. \
             MB are 10⁶ bytes; the ONNX file is the backbone and classifier with batch norms folded (`trainer export`).\n",
            reference.image_size,
            reference.image_size,
            reference.timing.samples_batch1,
            reference.timing.samples_batch,
        ));
    }
    CompressionReport {
        markdown: md,
        json: json!({ "cpu": cpu, "threads": threads, "models": rows }),
    }
}

/// Writes `compression.md` and `compression.json` into `dir` (atomically).
pub fn write_compression_report(dir: &Path, report: &CompressionReport) -> Result<()> {
    crate::checkpoint::write_atomic(&dir.join("compression.md"), report.markdown.as_bytes())?;
    let json = serde_json::to_string_pretty(&report.json)
        .map_err(|e| Error::Config(format!("compression.json: {e}")))?;
    crate::checkpoint::write_atomic(&dir.join("compression.json"), json.as_bytes())
}

/// The three models of a `trainer run` folder, in report order: (label, checkpoint).
pub fn run_checkpoints(dir: &Path) -> Vec<(&'static str, PathBuf)> {
    [
        ("teacher", "teacher"),
        ("student, SimCLR + KD", "student_distilled"),
        ("student, SimCLR only", "student_simclr"),
    ]
    .into_iter()
    .map(|(label, sub)| (label, dir.join(sub).join("best.safetensors")))
    .collect()
}

/// The accuracies `summary.json` of a run folder holds, row by row (empty when it has none).
pub fn run_accuracies(dir: &Path) -> Vec<Accuracy> {
    let Ok(text) = std::fs::read_to_string(dir.join("summary.json")) else {
        return Vec::new();
    };
    let Ok(v) = serde_json::from_str::<Value>(&text) else {
        return Vec::new();
    };
    v["rows"]
        .as_array()
        .map(|rows| {
            rows.iter()
                .map(|r| Accuracy {
                    classifier: r["eval"]["classifier_accuracy"].as_f64(),
                    knn: r["eval"]["knn_accuracy"].as_f64(),
                    linear_probe: r["eval"]["linear_probe_accuracy"].as_f64(),
                })
                .collect()
        })
        .unwrap_or_default()
}

/// `trainer bench-infer`: measures the models of `args` (the `--run` folder's, then each
/// `--checkpoint`) at `cfg.data.image_size` on `cfg.device`, writes the report into `cfg.out`
/// (when set, else into the `--run` folder, if any) and returns it.
pub fn bench_infer(cfg: &Config, args: &BenchInferArgs) -> Result<CompressionReport> {
    let device = crate::device::open_device(&cfg.device)?;
    let image_size = cfg.data.image_size;
    let mut models: Vec<(String, PathBuf, Accuracy)> = Vec::new();
    if let Some(dir) = &args.run {
        let accuracies = run_accuracies(dir);
        for (i, (label, path)) in run_checkpoints(dir).into_iter().enumerate() {
            if path.is_file() {
                let acc = accuracies.get(i).copied().unwrap_or_default();
                models.push((label.to_string(), path, acc));
            }
        }
        if models.is_empty() {
            return Err(Error::Config(format!(
                "--run {}: no teacher/, student_distilled/ or student_simclr/ best.safetensors there",
                dir.display()
            )));
        }
    }
    if !args.checkpoint.is_empty() {
        let split = crate::run::load_data(cfg)?;
        let evaluator = Evaluator::new(&split, &cfg.eval, image_size, cfg.seed, &device)?;
        let classes = split.train.num_classes();
        for path in &args.checkpoint {
            // The architecture (and that the file is a model at all), named as export names it.
            let ckpt = Checkpoint::load(path, &Device::Cpu)?;
            let arch = checkpoint_spec(&ckpt, path, args.arch.as_deref())?.arch;
            let classifier =
                test_accuracy(&evaluator, path, Some(&arch), classes, image_size, &device)?;
            let acc = Accuracy {
                classifier,
                ..Accuracy::default()
            };
            models.push((path.display().to_string(), path.clone(), acc));
        }
    }
    if models.is_empty() {
        return Err(Error::Config(
            "bench-infer: nothing to measure; pass --run DIR or --checkpoint FILE".into(),
        ));
    }
    let opts = InferenceOptions {
        samples_batch1: args.samples.max(1),
        samples_batch: (args.samples / 6).max(3),
        ..InferenceOptions::default()
    };
    let mut figures = Vec::with_capacity(models.len());
    for (label, path, acc) in &models {
        figures.push(measure_checkpoint(
            label,
            path,
            args.arch.as_deref(),
            *acc,
            image_size,
            &device,
            &opts,
        )?);
    }
    let report = compression_report(&figures);
    let dir = match (cfg.out.as_os_str().is_empty(), &args.run) {
        (false, _) => Some(&cfg.out),
        (true, run) => run.as_ref(),
    };
    if let Some(dir) = dir {
        std::fs::create_dir_all(dir).map_err(|e| Error::Io(dir.clone(), e))?;
        write_compression_report(dir, &report)?;
    }
    Ok(report)
}

/// The compression report of a `trainer run` whose models were just evaluated: measures each
/// `(label, checkpoint, accuracy)` of `models` (the teacher first) at `image_size`, writes
/// `compression.md` and `compression.json` into `dir`, and returns the report (its Markdown goes
/// into `summary.md`). Fewer timed passes than `trainer bench-infer` (50 at batch 1, 8 at batch
/// 64, each figure cut at 5 s), to keep the run short.
pub fn for_run(
    dir: &Path,
    models: &[(String, PathBuf, Accuracy)],
    image_size: usize,
    device: &Device,
) -> Result<CompressionReport> {
    let opts = InferenceOptions {
        samples_batch1: 50,
        samples_batch: 8,
        max_seconds: 5.0,
        ..InferenceOptions::default()
    };
    let mut figures = Vec::with_capacity(models.len());
    for (label, path, acc) in models {
        figures.push(measure_checkpoint(
            label, path, None, *acc, image_size, device, &opts,
        )?);
    }
    let report = compression_report(&figures);
    write_compression_report(dir, &report)?;
    Ok(report)
}

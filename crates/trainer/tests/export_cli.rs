//! `trainer export` and `trainer bench-infer` through the real binary: a round trip of a seeded
//! checkpoint through the ONNX file and tract, the errors that name the bad input, and the
//! compression report.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use anyhow::{ensure, Context, Result};
use candle_core::{DType, Device, Tensor};
use trainer::checkpoint::{meta, Checkpoint};
use trainer::compression::{compression_report, Accuracy, ModelFigures};
use trainer::infer::InferenceTiming;

const BIN: &str = env!("CARGO_BIN_EXE_trainer");

fn trainer(args: &[&str]) -> Result<Output> {
    Ok(Command::new(BIN)
        .args(args)
        .env_remove("RUST_BACKTRACE")
        .env("RAYON_NUM_THREADS", "1")
        .output()?)
}

/// `args` fails cleanly, its `error:` line holding every `want`.
fn fails(args: &[&str], want: &[&str]) -> Result<String> {
    let out = trainer(args)?;
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    ensure!(!out.status.success(), "{args:?} should fail; stderr: {err}");
    ensure!(!err.contains("panicked"), "{args:?} panicked: {err}");
    ensure!(err.contains("error:"), "{args:?}: no `error:` in {err}");
    for w in want {
        ensure!(err.contains(w), "{args:?}: `{w}` missing from {err}");
    }
    Ok(err)
}

fn succeeds(args: &[&str]) -> Result<String> {
    let out = trainer(args)?;
    ensure!(
        out.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A seeded `arch` checkpoint with a projection head, as the trainer writes one (`arch` metadata
/// unless `with_arch` is false).
fn checkpoint(dir: &Path, name: &str, arch: &str, with_arch: bool) -> Result<PathBuf> {
    let varmap = candle_nn::VarMap::new();
    let vb = models::init::seeded_var_builder(&varmap, 3, DType::F32, &Device::Cpu);
    let cfg = models::ResNetConfig::by_name(arch, 10)?;
    let net = models::ResNet::new(&cfg, vb.clone())?;
    let head = models::ProjectionHeadConfig {
        input_dim: net.feature_dim(),
        hidden_dim: 32,
        output_dim: 16,
        num_layers: 2,
        batch_norm: true,
    };
    models::ProjectionHead::new(&head, vb.pp("projector"))?;
    // Running statistics away from (0, 1), so that folding them matters.
    for (k, v) in varmap
        .data()
        .lock()
        .map_err(|_| anyhow::anyhow!("lock"))?
        .iter()
    {
        if k.ends_with("running_var") || k.ends_with("running_mean") {
            let shift = if k.ends_with("running_var") {
                0.5
            } else {
                -0.5
            };
            let n = v.elem_count();
            let values: Vec<f32> = (0..n).map(|i| (i as f32 * 0.618).fract() + shift).collect();
            v.set(&Tensor::from_vec(values, n, &Device::Cpu)?)?;
        }
    }
    let mut metadata = BTreeMap::new();
    if with_arch {
        metadata.insert(meta::ARCH.to_string(), arch.to_string());
    }
    let path = dir.join(name);
    let tensors = trainer::checkpoint::varmap_tensors(&varmap, 7);
    trainer::checkpoint::save(&path, &tensors, &metadata)?;
    Ok(path)
}

fn images() -> Result<Tensor> {
    let pixels: Vec<u8> = (0..2 * 3 * 32 * 32).map(|i| (i * 37 % 251) as u8).collect();
    Ok(Tensor::from_vec(pixels, (2, 3, 32, 32), &Device::Cpu)?)
}

#[test]
fn export_round_trip_through_tract() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let ck = checkpoint(dir.path(), "r8.safetensors", "resnet8", true)?;
    let onnx = dir.path().join("r8.onnx");
    let out = succeeds(&[
        "export",
        "--checkpoint",
        ck.to_str().context("path")?,
        "--onnx",
        onnx.to_str().context("path")?,
        "--input",
        "uint8",
        "--output",
        "logits,features,projection",
    ])?;
    let report: serde_json::Value = serde_json::from_str(&out)?;
    assert_eq!(report["arch"], "resnet8");
    assert_eq!(report["verified_rel_err"].as_array().map(Vec::len), Some(3));

    // The file, run by tract on uint8 images, against our forward pass on the same images.
    let bytes = std::fs::read(&onnx)?;
    let model = deploy::OnnxModel::from_bytes(&bytes, "r8.onnx")?;
    assert_eq!(model.output_names(), ["logits", "features", "projection"]);
    let u8s = images()?;
    let outs = model.run(&u8s)?;
    let ck = Checkpoint::load(&ck, &Device::Cpu)?;
    let spec = deploy::ModelSpec::from_tensors("resnet8", &ck.tensors)?;
    let (net, head) = spec.build(&ck.tensors, &Device::Cpu)?;
    let pipeline = augment::presets::eval(32)?;
    let raw: Vec<u8> = u8s.flatten_all()?.to_vec1()?;
    let xs = pipeline.apply_batch(&raw, (32, 32), &[0, 1], 0, 0, 0)?;
    let f = net.forward_features(&xs, false)?;
    let z = candle_core::ModuleT::forward_t(&head.context("head")?, &f.pooled, false)?;
    for (got, want) in outs.iter().zip([&f.logits, &f.pooled, &z]) {
        let e = trainer::export::rel_err(got, want)?;
        ensure!(e <= 1e-4, "tract vs ours: {e:e}");
    }
    Ok(())
}

#[test]
fn export_errors_name_the_input() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let d = dir.path();
    let ck = checkpoint(d, "r8.safetensors", "resnet8", true)?;
    let ck = ck.to_str().context("path")?;
    let no_arch = checkpoint(d, "noarch.safetensors", "resnet8", false)?;
    let no_arch = no_arch.to_str().context("path")?;
    let out = d.join("o.onnx");
    let out = out.to_str().context("path")?;

    // Not a checkpoint at all, and a safetensors file that is not a model.
    let text = d.join("notes.safetensors");
    std::fs::write(&text, "hello")?;
    let text = text.to_str().context("path")?;
    fails(
        &["export", "--checkpoint", text, "--onnx", out],
        &[text, "safetensors"],
    )?;
    let other = d.join("other.safetensors");
    let t = Tensor::zeros((2, 2), DType::F32, &Device::Cpu)?;
    trainer::checkpoint::save(&other, &[("foo".into(), t)], &BTreeMap::new())?;
    let other = other.to_str().context("path")?;
    fails(
        &[
            "export",
            "--checkpoint",
            other,
            "--onnx",
            out,
            "--arch",
            "resnet8",
        ],
        &[other, "conv1.weight"],
    )?;
    // An unknown architecture, a missing one, and the wrong one.
    fails(
        &[
            "export",
            "--checkpoint",
            ck,
            "--onnx",
            out,
            "--arch",
            "resnet9",
        ],
        &[ck, "resnet9"],
    )?;
    fails(
        &["export", "--checkpoint", no_arch, "--onnx", out],
        &[no_arch, "--arch"],
    )?;
    fails(
        &[
            "export",
            "--checkpoint",
            ck,
            "--onnx",
            out,
            "--arch",
            "resnet20",
        ],
        &[ck, "layer1.1.conv1.weight"],
    )?;
    // An output path that cannot be written.
    let missing = d.join("no/such/dir/o.onnx");
    let missing = missing.to_str().context("path")?;
    fails(
        &["export", "--checkpoint", ck, "--onnx", missing],
        &[missing, "does not exist"],
    )?;
    let dir_path = d.to_str().context("path")?;
    fails(
        &["export", "--checkpoint", ck, "--onnx", dir_path],
        &[dir_path, "folder"],
    )?;
    // Bad option values.
    fails(
        &[
            "export",
            "--checkpoint",
            ck,
            "--onnx",
            out,
            "--input",
            "rgb",
        ],
        &["rgb"],
    )?;
    ensure!(!Path::new(out).exists(), "nothing may be written on error");
    Ok(())
}

#[test]
fn bench_infer_reports_two_models() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let teacher = checkpoint(dir.path(), "t.safetensors", "resnet20", true)?;
    let student = checkpoint(dir.path(), "s.safetensors", "resnet8", true)?;
    let out = dir.path().join("report");
    let json = succeeds(&[
        "bench-infer",
        "--checkpoint",
        teacher.to_str().context("path")?,
        "--checkpoint",
        student.to_str().context("path")?,
        "--samples",
        "3",
        "--threads",
        "1",
        "--data",
        "sample",
        "--out",
        out.to_str().context("path")?,
        "--json",
    ])?;
    let v: serde_json::Value = serde_json::from_str(&json)?;
    let rows = v["models"].as_array().context("models")?;
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[1]["figures"]["arch"], "resnet8");
    let varmap = candle_nn::VarMap::new();
    let vb = models::init::seeded_var_builder(&varmap, 0, DType::F32, &Device::Cpu);
    let resnet20 = models::ResNet::new(&models::ResNetConfig::by_name("resnet20", 10)?, vb)?;
    assert_eq!(rows[0]["figures"]["parameters"], resnet20.num_parameters());
    assert!(rows[1]["figures"]["accuracy"]["classifier"]
        .as_f64()
        .is_some());
    assert!(rows[1]["figures"]["timing"]["ms_per_image"].as_f64() > Some(0.0));
    assert!(out.join("compression.md").is_file() && out.join("compression.json").is_file());
    fails(&["bench-infer"], &["--run"])?;
    // A file that is not a checkpoint, one that does not say its architecture, a run folder
    // without models.
    let d = dir.path();
    let text = d.join("notes.safetensors");
    std::fs::write(&text, "hello")?;
    let text = text.to_str().context("path")?;
    fails(
        &["bench-infer", "--checkpoint", text, "--samples", "3"],
        &[text, "safetensors"],
    )?;
    let no_arch = checkpoint(d, "noarch.safetensors", "resnet8", false)?;
    let no_arch = no_arch.to_str().context("path")?;
    fails(
        &["bench-infer", "--checkpoint", no_arch, "--samples", "3"],
        &[no_arch, "--arch"],
    )?;
    let empty = d.to_str().context("path")?;
    fails(
        &["bench-infer", "--run", empty, "--samples", "3"],
        &[empty, "best.safetensors"],
    )?;
    Ok(())
}

fn figures(label: &str, parameters: usize, ms: f64, ips: f64) -> ModelFigures {
    ModelFigures {
        label: label.into(),
        checkpoint: PathBuf::from(format!("{label}.safetensors")),
        arch: "resnet8".into(),
        image_size: 32,
        parameters,
        checkpoint_bytes: 2_000_000,
        onnx_bytes: 1_000_000,
        accuracy: Accuracy {
            classifier: Some(0.5),
            knn: None,
            linear_probe: Some(0.25),
        },
        timing: InferenceTiming {
            ms_per_image: ms,
            images_per_second: ips,
            batch: 64,
            samples_batch1: 10,
            samples_batch: 3,
        },
    }
}

#[test]
fn compression_ratios_are_against_the_first_model() {
    let r = compression_report(&[
        figures("teacher", 400, 2.0, 100.0),
        figures("student", 100, 0.5, 300.0),
    ]);
    let student = r
        .markdown
        .lines()
        .find(|l| l.starts_with("| student"))
        .unwrap();
    // 4× fewer parameters, 4× lower latency, 3× the throughput; 1.00 MB ONNX, 2.00 MB file.
    for want in [
        "| 4.0× |",
        "| 4.00× |",
        "| 3.00× |",
        "| 1.00 | 2.00 |",
        "50.00%",
        "| – |",
    ] {
        assert!(student.contains(want), "{want} missing from {student}");
    }
    assert_eq!(r.json["models"][1]["compression"], 4.0);
}

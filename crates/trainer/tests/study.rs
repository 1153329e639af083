//! The study driver (`cargo xtask study`) end to end on a tiny CIFAR-10 tarball pair cut from the
//! bundled sample: every figure written, the teacher's and the students' data sizes, the report
//! rebuilt from its JSON, bad configurations refused.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use anyhow::Result;
use serde_json::Value;
use trainer::data::bundled_sample_dir;

/// A study small enough for seconds: a resnet8 "teacher" on 6 images per class, students on the
/// first 4 of those, one α besides 0 and 1.
const TINY: &str = r#"
seeds = [0]
alphas = [0.5]
teacher_train_per_class = 6

[trainer]
seed = 0

[trainer.data]
train_per_class = 4
test_per_class = 3

[trainer.teacher]
arch = "resnet8"

[trainer.teacher.optim]
epochs = 1
batch_size = 16

[trainer.student]
arch = "resnet8"

[trainer.student.optim]
epochs = 2
batch_size = 16

[trainer.eval]
knn_k = 5
linear_epochs = 2
every = 1
"#;

fn study(dir: &Path, config: &str, extra: &[&str]) -> Result<Output> {
    let cfg = dir.join("study.toml");
    std::fs::write(&cfg, config)?;
    let out = Command::new(env!("CARGO_BIN_EXE_study"))
        .arg("--config")
        .arg(&cfg)
        .arg("--data-dir")
        .arg(dir.join("data"))
        .arg("--runs")
        .arg(dir.join("runs"))
        .arg("--results")
        .arg(dir.join("results"))
        .args(extra)
        .env("RAYON_NUM_THREADS", "2")
        .output()?;
    Ok(out)
}

fn tarballs(dir: &Path) -> Result<()> {
    let data = dir.join("data");
    std::fs::create_dir_all(&data)?;
    let root = bundled_sample_dir();
    common::tar_gz(&data.join("train.tar.gz"), "train", &root)?;
    common::tar_gz(&data.join("test.tar.gz"), "test", &root)?;
    Ok(())
}

#[test]
fn tiny_study_writes_every_figure() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let dir = dir.path();
    tarballs(dir)?;
    let out = study(dir, TINY, &[])?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");

    let results = dir.join("results");
    for f in [
        "cifar10_cpu_study.md",
        "cifar10_cpu_study.json",
        "cifar10_cpu_study_accuracy.svg",
        "cifar10_cpu_study_curves.svg",
    ] {
        assert!(results.join(f).is_file(), "{f} missing");
    }
    let j: Value = serde_json::from_str(&std::fs::read_to_string(
        results.join("cifar10_cpu_study.json"),
    )?)?;
    // The teacher trains on 6 images per class, the students (and the kNN banks) on the first 4.
    assert_eq!(j["teacher_train_images"], 60);
    assert_eq!(j["train_images"], 40);
    assert_eq!(j["test_images"], 30);
    assert_eq!(j["teacher"]["arch"], "resnet8");
    let teacher_acc = j["teacher"]["eval"]["classifier_accuracy"]
        .as_f64()
        .expect("teacher accuracy");
    assert!((0.0..=1.0).contains(&teacher_acc));

    let students = j["students"].as_array().expect("students");
    let keys: Vec<&str> = students
        .iter()
        .map(|s| s["key"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(keys, ["supervised", "alpha_0", "alpha_1", "alpha_0.5"]);
    for s in students {
        let key = s["key"].as_str().unwrap_or_default();
        let eval = &s["eval"];
        let knn = eval["knn_accuracy"].as_f64().expect("kNN accuracy");
        assert!((0.0..=1.0).contains(&knn), "{key}: {knn}");
        assert!(eval["linear_probe_accuracy"].is_f64(), "{key}");
        // Only the SimCLR-only student has no trained classifier head.
        assert_eq!(
            eval["classifier_accuracy"].is_f64(),
            key != "alpha_0",
            "{key}"
        );
        let epochs = s["epochs"].as_array().expect("epochs");
        assert_eq!(epochs.len(), 2, "{key}");
        // The last epoch's curve point is the table's figure.
        assert_eq!(epochs[1]["knn_accuracy"], eval["knn_accuracy"], "{key}");
        // Every epoch evaluates (`every = 1`) and logs the loss parts its method has.
        assert!(epochs[0]["knn_accuracy"].is_f64(), "{key}");
        let has = |k: &str| epochs.iter().all(|e| e[k].is_f64());
        match key {
            "supervised" => assert!(has("cross_entropy") && !has("contrastive")),
            "alpha_0" => assert!(has("contrastive") && !has("distillation")),
            _ => assert!(has("contrastive") && has("distillation"), "{key}"),
        }
    }
    let aggregates = j["aggregates"].as_array().expect("aggregates");
    assert_eq!(aggregates.len(), 4);

    // The report names the sizes and holds one table row per model.
    let md = std::fs::read_to_string(results.join("cifar10_cpu_study.md"))?;
    assert!(md.contains("| teacher: resnet8 supervised |"), "{md}");
    assert_eq!(md.matches("| student resnet8: ").count(), 4, "{md}");

    // `--report-only` rebuilds the same report from the JSON alone.
    std::fs::remove_file(results.join("cifar10_cpu_study.md"))?;
    let out = study(dir, TINY, &["--report-only"])?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        std::fs::read_to_string(results.join("cifar10_cpu_study.md"))?,
        md
    );
    Ok(())
}

#[test]
fn bad_study_configurations_are_refused() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let dir = dir.path();
    tarballs(dir)?;
    // The transfer set must be a part of the teacher's training set.
    let smaller = TINY.replace("teacher_train_per_class = 6", "teacher_train_per_class = 2");
    let out = study(dir, &smaller, &[])?;
    assert!(!out.status.success());
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(e.contains("teacher_train_per_class (2)"), "{e}");

    let unknown = TINY.replace("seeds = [0]", "seeds = [0]\nsedes = [1]");
    let out = study(dir, &unknown, &[])?;
    assert!(!out.status.success());
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(e.contains("sedes"), "{e}");

    let out = study(dir, TINY, &["--methods", "alpha_0,alpha_7"])?;
    assert!(!out.status.success());
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(e.contains("no student \"alpha_7\""), "{e}");

    let out = study(dir, TINY, &["--seeds", ""])?;
    assert!(!out.status.success());

    let empty = dir.join("empty");
    std::fs::create_dir_all(&empty)?;
    let missing = study(&empty, TINY, &[])?;
    assert!(!missing.status.success());
    let e = String::from_utf8_lossy(&missing.stderr);
    assert!(e.contains("train.tar.gz"), "{e}");
    Ok(())
}

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
keep = "last"
knn_k = 5
linear_epochs = 2
every = 1
"#;

/// The study binary on `dir/study.toml`, `dir/data`, `dir/runs` and `dir/results`.
fn study_command(dir: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_study"));
    cmd.arg("--config")
        .arg(dir.join("study.toml"))
        .arg("--data-dir")
        .arg(dir.join("data"))
        .arg("--runs")
        .arg(dir.join("runs"))
        .arg("--results")
        .arg(dir.join("results"))
        .env("RAYON_NUM_THREADS", "2");
    cmd
}

fn study(dir: &Path, config: &str, extra: &[&str]) -> Result<Output> {
    std::fs::write(dir.join("study.toml"), config)?;
    Ok(study_command(dir).args(extra).output()?)
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
        // The last epoch's curve point is the table's figure (`keep = "last"`).
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

    // A study student is exactly a `trainer distill --teacher-targets fixed` run: its resolved
    // configuration (the study's `config.toml` in its folder) given to `trainer distill` trains the
    // same student, with the same figures.
    let student = std::fs::read_dir(dir.join("runs"))?
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("student_alpha_0.5_seed0_"))
        })
        .expect("the α = 0.5 student's folder");
    let config = std::fs::read_to_string(student.join("config.toml"))?;
    assert!(config.contains("teacher_targets = \"fixed\""), "{config}");
    let out = dir.join("distill");
    let distill = Command::new(env!("CARGO_BIN_EXE_trainer"))
        .args(["distill", "--quiet", "--threads", "2", "--config"])
        .arg(student.join("config.toml"))
        .arg("--out")
        .arg(&out)
        .output()?;
    assert!(
        distill.status.success(),
        "{}",
        String::from_utf8_lossy(&distill.stderr)
    );
    let summary: Value = serde_json::from_str(&std::fs::read_to_string(out.join("summary.json"))?)?;
    let study_student = students
        .iter()
        .find(|s| s["key"] == "alpha_0.5")
        .expect("the α = 0.5 student");
    assert_eq!(summary["rows"][0]["eval"], study_student["eval"]);
    assert_eq!(
        common::metrics_without_timing(&out.join("metrics.jsonl")),
        common::metrics_without_timing(&student.join("metrics.jsonl"))
    );

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

    // `teacher_checkpoint`: a study that distils from a trained teacher instead of training one.
    // Given this study's teacher, it trains none, finds the architecture in the file, and (same
    // weights, same transfer and test images) gets the same teacher figures and KD-only student.
    let teacher = std::fs::read_dir(dir.join("runs"))?
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("teacher_"))
        })
        .expect("the teacher's folder")
        .join("best.safetensors");
    let from_checkpoint = TINY
        .replace(
            "teacher_train_per_class = 6",
            &format!("teacher_checkpoint = {:?}", teacher.display().to_string()),
        )
        .replace(
            "arch = \"resnet8\"\n\n[trainer.teacher.optim]",
            "arch = \"resnet20\"\n\n[trainer.teacher.optim]",
        );
    let out = study(dir, &from_checkpoint, &["--methods", "alpha_1"])?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let k: Value = serde_json::from_str(&std::fs::read_to_string(
        results.join("cifar10_cpu_study.json"),
    )?)?;
    assert_eq!(k["teacher"]["arch"], "resnet8");
    assert_eq!(k["teacher"]["eval"], j["teacher"]["eval"]);
    let kd = |v: &Value| {
        v["students"]
            .as_array()
            .and_then(|s| s.iter().find(|s| s["key"] == "alpha_1").cloned())
            .expect("the KD-only student")
    };
    assert_eq!(kd(&k)["eval"], kd(&j)["eval"]);
    let teachers = std::fs::read_dir(dir.join("runs"))?
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("teacher_"))
        .count();
    assert_eq!(
        teachers, 2,
        "one trained teacher and one checkpoint's folder"
    );
    let md = std::fs::read_to_string(results.join("cifar10_cpu_study.md"))?;
    assert!(md.contains("from the checkpoint"), "{md}");
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
    // A trained teacher and the images to train one contradict each other.
    let both = TINY.replace(
        "teacher_train_per_class = 6",
        "teacher_train_per_class = 6\nteacher_checkpoint = \"bundled\"",
    );
    let out = study(dir, &both, &[])?;
    assert!(!out.status.success());
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(e.contains("keep one of the two"), "{e}");

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

/// The figures of a results JSON: the teacher's and every student's evaluation, by key and seed.
fn figures(results: &Path) -> Result<Vec<(String, Value)>> {
    let j: Value = serde_json::from_str(&std::fs::read_to_string(
        results.join("cifar10_cpu_study.json"),
    )?)?;
    let mut out = vec![("teacher".to_string(), j["teacher"]["eval"].clone())];
    for s in j["students"].as_array().expect("students") {
        out.push((format!("{}/{}", s["key"], s["seed"]), s["eval"].clone()));
    }
    Ok(out)
}

/// When each student folder's `last.safetensors` was last written.
fn checkpoint_times(runs: &Path) -> Vec<(std::path::PathBuf, std::time::SystemTime)> {
    let Ok(entries) = std::fs::read_dir(runs) else {
        return vec![];
    };
    entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("student_"))
        })
        .filter_map(|p| {
            let t = std::fs::metadata(p.join("last.safetensors"))
                .and_then(|m| m.modified())
                .ok()?;
            Some((p, t))
        })
        .collect()
}

/// A study killed (SIGKILL) in the middle of its students, again and again, and started again
/// each time ends with the figures of an uninterrupted study; finished students are not retrained.
#[test]
fn a_killed_study_resumes_and_ends_as_an_uninterrupted_one() -> Result<()> {
    use std::time::{Duration, Instant};
    let root = tempfile::tempdir()?;
    // Batches of 4 and a checkpoint after every step: kills land inside students.
    let config = TINY
        .replace(
            "[trainer]\nseed = 0",
            "[trainer]\nseed = 0\ncheckpoint_every = 1",
        )
        .replace(
            "[trainer.student.optim]\nepochs = 2\nbatch_size = 16",
            "[trainer.student.optim]\nepochs = 2\nbatch_size = 4",
        );
    assert!(config.contains("checkpoint_every = 1") && config.contains("batch_size = 4"));
    let reference = root.path().join("reference");
    tarballs(&reference)?;
    let out = study(&reference, &config, &[])?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let dir = root.path().join("killed");
    tarballs(&dir)?;
    std::fs::write(dir.join("study.toml"), &config)?;
    let spawn = || -> Result<std::process::Child> {
        Ok(study_command(&dir)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()?)
    };
    let runs = dir.join("runs");
    // Each life is killed as soon as it has written a checkpoint of a student that has no result
    // yet: in the middle of that student, after some progress; each student twice at most.
    let mut kills = 0;
    let mut killed_in: Vec<std::path::PathBuf> = Vec::new();
    let mut done = false;
    for life in 0..40 {
        let before = checkpoint_times(&runs);
        let mut child = spawn()?;
        let start = Instant::now();
        let finished = loop {
            if let Some(status) = child.try_wait()? {
                let mut err = String::new();
                if let Some(mut e) = child.stderr.take() {
                    std::io::Read::read_to_string(&mut e, &mut err)?;
                }
                assert!(status.success(), "life {life}: {err}");
                break true;
            }
            let progressed = checkpoint_times(&runs).into_iter().find(|(p, t)| {
                !p.join("result.json").exists()
                    && !before.contains(&(p.clone(), *t))
                    && killed_in.iter().filter(|k| *k == p).count() < 2
            });
            assert!(
                start.elapsed() < Duration::from_secs(300),
                "life {life} hangs"
            );
            if let Some((p, _)) = progressed {
                child.kill()?;
                child.wait()?;
                kills += 1;
                killed_in.push(p);
                break false;
            }
            std::thread::sleep(Duration::from_millis(2));
        };
        if finished {
            done = true;
            break;
        }
    }
    assert!(done, "the study did not end after {kills} kills");
    assert!(kills >= 3, "only {kills} kills landed inside a student");
    assert_eq!(
        figures(&dir.join("results"))?,
        figures(&reference.join("results"))?
    );
    // A finished study started again retrains nothing.
    let again = study(&dir, &config, &[])?;
    let text = String::from_utf8_lossy(&again.stdout);
    assert!(
        again.status.success(),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    assert!(
        text.contains("teacher: reusing") && !text.contains("epochs ..."),
        "{text}"
    );
    assert_eq!(text.matches("reusing").count(), 1 + 4, "{text}");
    Ok(())
}

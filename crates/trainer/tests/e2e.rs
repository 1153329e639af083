//! End to end on the bundled sample: teacher, distillation, evaluation, resume, configuration.

mod common;

use std::sync::atomic::AtomicBool;

use trainer::config::TeacherMethod;
use trainer::{Config, Error};

type Result<T> = anyhow::Result<T>;

#[test]
fn run_trains_teacher_and_students_and_writes_the_run_folder() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let cfg = common::tiny(dir.path());
    let summary = trainer::run::run_all(&cfg, false, &AtomicBool::new(false))?;
    assert_eq!(summary.rows.len(), 3);
    for r in &summary.rows {
        assert!(
            r.eval.knn_accuracy > 0.0 && r.eval.knn_accuracy <= 1.0,
            "{r:?}"
        );
        assert!(r.eval.linear_probe_accuracy.is_some());
    }
    assert!(
        summary.rows[0].eval.classifier_accuracy.is_some(),
        "the teacher's classifier is trained"
    );
    assert!(
        summary.rows[2].eval.classifier_accuracy.is_none(),
        "α = 0 leaves the student's fc untrained"
    );
    for f in [
        "config.toml",
        "summary.md",
        "summary.json",
        "curves.svg",
        "teacher/last.safetensors",
        "teacher/best.safetensors",
        "teacher/metrics.jsonl",
        "student_distilled/best.safetensors",
        "student_simclr/metrics.jsonl",
        "compression.md",
        "compression.json",
    ] {
        assert!(dir.path().join(f).is_file(), "{f} missing");
    }
    let svg = std::fs::read_to_string(dir.path().join("curves.svg"))?;
    assert!(
        svg.contains("<svg") && svg.contains("polyline"),
        "curves are drawn"
    );
    let md = std::fs::read_to_string(dir.path().join("summary.md"))?;
    assert!(md.contains("| teacher (supervised) | resnet8 |"), "{md}");
    // The compression report, in summary.md too: the three models, the teacher the reference.
    assert!(md.contains("## Compression"), "{md}");
    let compression: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(
        dir.path().join("compression.json"),
    )?)?;
    let models = compression["models"].as_array().expect("models");
    assert_eq!(models.len(), 3);
    assert_eq!(models[0]["compression"], 1.0);
    for (m, r) in models.iter().zip(&summary.rows) {
        assert_eq!(m["figures"]["label"], r.model.as_str());
        assert_eq!(m["figures"]["parameters"], r.parameters);
        assert_eq!(
            m["figures"]["accuracy"]["knn"].as_f64(),
            Some(r.eval.knn_accuracy)
        );
    }
    // The resolved configuration round-trips.
    let back = Config::from_toml_file(&dir.path().join("config.toml"))?;
    assert_eq!(back, cfg);
    // Epoch records carry every loss part and the metric.
    let m = common::metrics_without_timing(&dir.path().join("student_distilled/metrics.jsonl"));
    let epoch = m
        .iter()
        .find(|r| r["kind"] == "epoch")
        .expect("an epoch line");
    for k in ["total", "contrastive", "distillation", "lr", "knn_accuracy"] {
        assert!(epoch[k].is_number(), "{k} in {epoch}");
    }
    // A checkpoint is a torchvision-format state dict with num_batches_tracked.
    let ck = trainer::checkpoint::Checkpoint::load(
        &dir.path().join("teacher/best.safetensors"),
        &candle_core::Device::Cpu,
    )?;
    for k in [
        "conv1.weight",
        "bn1.running_var",
        "bn1.num_batches_tracked",
        "layer1.0.conv1.weight",
        "fc.bias",
    ] {
        assert!(ck.tensors.contains_key(k), "{k}");
    }
    assert_eq!(ck.metadata.get("arch").map(String::as_str), Some("resnet8"));
    Ok(())
}

#[test]
fn teacher_distill_eval_commands_chain() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let no = AtomicBool::new(false);
    let mut cfg = common::tiny(&dir.path().join("teacher"));
    cfg.teacher.method = TeacherMethod::Simclr;
    let t = trainer::run::run_teacher(&cfg, false, &no)?;
    assert!(
        t.rows[0].eval.classifier_accuracy.is_some(),
        "a SimCLR teacher gets a linear-probe classifier"
    );
    let teacher_ckpt = dir.path().join("teacher/best.safetensors");

    let mut cfg = common::tiny(&dir.path().join("student"));
    cfg.student.teacher = Some(teacher_ckpt.clone());
    cfg.student.alpha = 1.0;
    let s = trainer::run::run_distill(&cfg, false, &no)?;
    assert!(s.rows[0].eval.classifier_accuracy.is_some());

    let report = trainer::run::run_eval(
        &cfg,
        &dir.path().join("student/best.safetensors"),
        None,
        false,
    )?;
    assert_eq!(report.test_images, 40);
    assert!(report.linear_probe_accuracy.is_none());
    assert_eq!(
        report.knn_accuracy, s.rows[0].eval.knn_accuracy,
        "eval of the saved checkpoint = end-of-run eval"
    );

    // A teacher checkpoint of another architecture is refused with the tensor's name.
    let mut bad = common::tiny(&dir.path().join("bad"));
    bad.student.teacher = Some(teacher_ckpt);
    bad.student.teacher_arch = Some("resnet20".into());
    let e = trainer::run::run_distill(&bad, false, &no)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("teacher/best.safetensors") && e.contains("layer1.1.") && e.contains("resnet20"),
        "{e}"
    );
    Ok(())
}

#[test]
fn interrupted_then_resumed_equals_uninterrupted() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let whole = common::tiny(&dir.path().join("whole"));
    trainer::run::run_teacher(&whole, false, &AtomicBool::new(false))?;

    let parts = common::tiny(&dir.path().join("parts"));
    // The flag is set before the start: the run stops after its first step, with a mid-epoch checkpoint.
    let e = trainer::run::run_teacher(&parts, false, &AtomicBool::new(true)).unwrap_err();
    assert!(matches!(e, Error::Interrupted { epoch: 0, .. }), "{e}");
    trainer::run::run_teacher(&parts, true, &AtomicBool::new(false))?;

    let a = common::metrics_without_timing(&dir.path().join("whole/metrics.jsonl"));
    let b = common::metrics_without_timing(&dir.path().join("parts/metrics.jsonl"));
    assert!(!a.is_empty());
    assert_eq!(
        a, b,
        "a resumed run ends with the metrics of an uninterrupted one"
    );
    assert_eq!(
        common::tensor_bytes(&dir.path().join("whole/best.safetensors"))?,
        common::tensor_bytes(&dir.path().join("parts/best.safetensors"))?,
        "the resumed run's best weights equal the uninterrupted run's"
    );

    // Resuming a finished phase trains nothing and still reports the phase's training time.
    let seconds = |run: &str| -> Result<f64> {
        let path = dir.path().join(run).join("summary.json");
        let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&path)?)?;
        v["rows"][0]["train_seconds"]
            .as_f64()
            .ok_or_else(|| anyhow::anyhow!("{}: no rows[0].train_seconds", path.display()))
    };
    let trained = seconds("whole")?;
    trainer::run::run_teacher(&whole, true, &AtomicBool::new(false))?;
    let reported = seconds("whole")?;
    assert!(
        reported > 0.5 * trained && reported <= trained,
        "a finished phase resumed reports {reported} s of training, {trained} s were spent"
    );
    Ok(())
}

#[test]
fn config_toml_round_trip_and_errors() -> Result<()> {
    let mut cfg = Config::default();
    cfg.student.alpha = 0.25;
    cfg.teacher.optim.step_milestones = vec![3, 6];
    cfg.student.teacher = Some("t.safetensors".into());
    let text = cfg.to_toml()?;
    assert_eq!(Config::from_toml_str(&text)?, cfg);
    let partial = Config::from_toml_str("seed = 7\n[student]\nalpha = 0.1\n")?;
    assert_eq!(
        (
            partial.seed,
            partial.student.alpha,
            partial.student.arch.as_str()
        ),
        (7, 0.1, "resnet8")
    );
    let e = Config::from_toml_str("[student]\nalfa = 0.1\n")
        .unwrap_err()
        .to_string();
    assert!(e.contains("alfa"), "unknown key named: {e}");
    let e = Config::from_toml_str("seed = \"seven\"\n")
        .unwrap_err()
        .to_string();
    assert!(e.contains("seed") && e.contains("invalid type"), "{e}");
    let bad = Config::from_toml_str("[student]\nalpha = 2.0\n")?;
    let e = bad.validate().unwrap_err().to_string();
    assert!(e.contains("alpha") && e.contains('2'), "{e}");
    Ok(())
}

#[test]
fn bad_values_are_named() -> Result<()> {
    let check = |f: &dyn Fn(&mut Config), want: &[&str]| {
        let mut cfg = Config::default();
        f(&mut cfg);
        let e = cfg.validate().unwrap_err().to_string();
        for w in want {
            assert!(e.contains(w), "`{e}` should contain `{w}`");
        }
    };
    check(&|c| c.student.optim.epochs = 0, &["--epochs", "0"]);
    check(&|c| c.teacher.optim.batch_size = 0, &["--batch-size", "0"]);
    check(&|c| c.student.optim.lr = -0.1, &["--lr", "-0.1"]);
    check(&|c| c.student.optim.lr = f64::NAN, &["--lr", "NaN"]);
    check(&|c| c.student.alpha = -0.5, &["alpha", "-0.5"]);
    check(
        &|c| c.student.arch = "resnet9000".into(),
        &["resnet9000", "resnet18"],
    );
    check(&|c| c.device = "tpu".into(), &["tpu"]);
    check(&|c| c.data.source = "imagenet:/x".into(), &["imagenet:/x"]);
    Ok(())
}

#[test]
fn batch_larger_than_dataset_and_nonfinite_loss_fail_clearly() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let no = AtomicBool::new(false);
    let mut cfg = common::tiny(dir.path());
    cfg.teacher.optim.batch_size = 1000;
    let e = trainer::run::run_teacher(&cfg, false, &no)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("batch size 1000") && e.contains("80 images"),
        "{e}"
    );

    let mut cfg = common::tiny(&dir.path().join("nan"));
    cfg.teacher.optim.lr = 1e30;
    let e = trainer::run::run_teacher(&cfg, false, &no).unwrap_err();
    match &e {
        Error::NonFinite { step, part, .. } => assert!(*step >= 1 && !part.is_empty(), "{e}"),
        other => panic!("expected a non-finite loss error, got {other}"),
    }
    assert!(e.to_string().contains("at step"), "{e}");
    Ok(())
}

#[test]
fn gradient_norm_is_logged_and_clipping_bounds_the_update() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let no = AtomicBool::new(false);
    let train = |name: &str, clip: f64| -> Result<(Vec<serde_json::Value>, candle_core::Tensor)> {
        let mut cfg = common::tiny(&dir.path().join(name));
        cfg.teacher.optim.epochs = 1;
        cfg.teacher.optim.momentum = 0.0;
        cfg.teacher.optim.weight_decay = 0.0;
        cfg.teacher.optim.grad_clip = clip;
        trainer::run::run_teacher(&cfg, false, &no)?;
        let ck = trainer::checkpoint::Checkpoint::load(
            &dir.path().join(name).join("last.safetensors"),
            &candle_core::Device::Cpu,
        )?;
        let m = common::metrics_without_timing(&dir.path().join(name).join("metrics.jsonl"));
        Ok((m, ck.tensors["conv1.weight"].clone()))
    };
    let (free, w_free) = train("free", 0.0)?;
    let (clipped, w_clipped) = train("clipped", 1e-3)?;
    let norms: Vec<f64> = free
        .iter()
        .filter(|r| r["kind"] == "step")
        .filter_map(|r| r["grad_norm"].as_f64())
        .collect();
    assert!(
        !norms.is_empty() && norms.iter().all(|n| n.is_finite() && *n > 1e-3),
        "{norms:?}"
    );
    // Same init: with momentum and decay off, a clipped step moves every weight by at most lr · clip.
    let init = {
        let varmap = candle_nn::VarMap::new();
        let vb = models::init::seeded_var_builder(
            &varmap,
            0,
            candle_core::DType::F32,
            &candle_core::Device::Cpu,
        );
        let cfg = models::ResNetConfig::resnet8(10).with_stem(models::Stem::Cifar);
        models::ResNet::new(&cfg, vb)?;
        let data = varmap.data().lock().unwrap();
        data["conv1.weight"].as_tensor().clone()
    };
    let moved = |w: &candle_core::Tensor| -> Result<f64> {
        Ok((w - &init)?.sqr()?.sum_all()?.sqrt()?.to_scalar::<f32>()? as f64)
    };
    let steps = clipped
        .iter()
        .filter(|r| r["kind"] == "step")
        .count()
        .max(1) as f64;
    let (d_free, d_clip) = (moved(&w_free)?, moved(&w_clipped)?);
    assert!(
        d_clip <= 0.05 * 1e-3 * 5.0 * 1.0001 + 1e-7,
        "clipped run moved conv1 by {d_clip} over ~{steps} logged steps"
    );
    assert!(
        d_free > 10.0 * d_clip,
        "unclipped {d_free} vs clipped {d_clip}"
    );
    Ok(())
}

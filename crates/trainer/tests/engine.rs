//! The training engine with every objective: each trains a few steps through `Engine::fit`, logs
//! its loss parts, changes the weights and evaluates its metric; fixed and online teacher targets
//! both distil.

mod common;

use std::sync::atomic::AtomicBool;

use anyhow::Result;
use candle_core::Tensor;
use trainer::config::{StudentObjective, TeacherMethod, TeacherTargets};
use trainer::engine::Ctx;
use trainer::objective::Teacher;
use trainer::{phases, run, Config};

/// The `metrics.jsonl` epoch records of a phase folder.
fn epochs(dir: &std::path::Path) -> Vec<serde_json::Value> {
    common::metrics_without_timing(&dir.join("metrics.jsonl"))
        .into_iter()
        .filter(|r| r["kind"] == "epoch")
        .collect()
}

/// The first convolution of `dir/best.safetensors` differs from the initial network's.
fn weights_moved(cfg: &Config, dir: &std::path::Path, student: bool) -> Result<bool> {
    let (arch, seed) = if student {
        (&cfg.student.arch, cfg.seed + 1)
    } else {
        (&cfg.teacher.arch, cfg.seed)
    };
    let init = trainer::net::Net::new(arch, 10, 32, None, seed, &candle_core::Device::Cpu)?;
    let ck = trainer::checkpoint::Checkpoint::load(
        &dir.join("best.safetensors"),
        &candle_core::Device::Cpu,
    )?;
    let w0 = init.varmap.data().lock().unwrap()["conv1.weight"]
        .as_tensor()
        .clone();
    let w1 = &ck.tensors["conv1.weight"];
    let diff = (w1 - &w0)?.abs()?.sum_all()?.to_scalar::<f32>()?;
    Ok(diff > 0.0)
}

fn check_phase(
    cfg: &Config,
    dir: &std::path::Path,
    parts: &[&str],
    metric: &str,
    student: bool,
) -> Result<()> {
    let e = epochs(dir);
    assert_eq!(e.len(), cfg.student.optim.epochs, "{}", dir.display());
    for r in &e {
        for p in parts {
            let v = r[*p].as_f64().unwrap_or(f64::NAN);
            assert!(v.is_finite(), "{}: {p} = {v} in {r}", dir.display());
        }
        assert!(r[metric].is_f64(), "{}: no {metric} in {r}", dir.display());
    }
    assert!(
        weights_moved(cfg, dir, student)?,
        "{}: the weights did not move",
        dir.display()
    );
    Ok(())
}

#[test]
fn every_objective_trains_through_the_engine() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let mut cfg = common::tiny(dir.path());
    cfg.eval.every = 1;
    let split = run::load_data(&cfg)?;
    let no = AtomicBool::new(false);
    let ctx = Ctx::new(&cfg, &split, &no)?;

    // Teachers: supervised (with label smoothing) and SimCLR.
    let mut sup = cfg.clone();
    sup.teacher.label_smoothing = 0.1;
    let t_dir = dir.path().join("teacher_supervised");
    let teacher = phases::train_teacher(&ctx.with_config(&sup), &t_dir, false)?;
    check_phase(&cfg, &t_dir, &["cross_entropy"], "test_accuracy", false)?;
    let mut simclr = cfg.clone();
    simclr.teacher.method = TeacherMethod::Simclr;
    let s_dir = dir.path().join("teacher_simclr");
    phases::train_teacher(&ctx.with_config(&simclr), &s_dir, false)?;
    check_phase(
        &cfg,
        &s_dir,
        &["total", "contrastive"],
        "knn_accuracy",
        false,
    )?;

    // Students: the supervised baseline, SimCLR, KD and SimCLR + KD, online and fixed targets.
    let (teacher_net, _) =
        trainer::net::Net::from_checkpoint(&teacher.best, None, 10, 32, &candle_core::Device::Cpu)?;
    /// Name, objective, α, teacher targets, the loss parts logged, the epoch metric.
    type Case<'a> = (
        &'a str,
        StudentObjective,
        f64,
        TeacherTargets,
        &'a [&'a str],
        &'a str,
    );
    let cases: [Case; 6] = [
        (
            "supervised",
            StudentObjective::Supervised,
            0.0,
            TeacherTargets::Online,
            &["cross_entropy"],
            "knn_accuracy",
        ),
        (
            "simclr",
            StudentObjective::SimclrKd,
            0.0,
            TeacherTargets::Online,
            &["total", "contrastive"],
            "knn_accuracy",
        ),
        (
            "kd_online",
            StudentObjective::SimclrKd,
            1.0,
            TeacherTargets::Online,
            &["total", "contrastive", "distillation"],
            "knn_accuracy",
        ),
        (
            "kd_fixed",
            StudentObjective::SimclrKd,
            1.0,
            TeacherTargets::Fixed,
            &["total", "contrastive", "distillation"],
            "knn_accuracy",
        ),
        (
            "both_online",
            StudentObjective::SimclrKd,
            0.5,
            TeacherTargets::Online,
            &["total", "contrastive", "distillation"],
            "knn_accuracy",
        ),
        (
            "both_fixed",
            StudentObjective::SimclrKd,
            0.5,
            TeacherTargets::Fixed,
            &["total", "contrastive", "distillation"],
            "knn_accuracy",
        ),
    ];
    let mut distillation = Vec::new();
    for (name, objective, alpha, targets, parts, metric) in cases {
        let mut c = cfg.clone();
        c.student.objective = objective;
        c.student.alpha = alpha;
        c.student.teacher_targets = targets;
        let sctx = ctx.with_config(&c);
        let t = (alpha > 0.0)
            .then(|| phases::teacher_targets(&sctx, &teacher_net))
            .transpose()?;
        if let Some(Teacher::Fixed(logits)) = &t {
            assert_eq!(logits.dims(), [split.train.len(), 10]);
        }
        let d = dir.path().join(name);
        phases::train_student(&sctx, &d, false, t)?;
        check_phase(&cfg, &d, parts, metric, true)?;
        if alpha > 0.0 {
            distillation.push((name, epochs(&d)[0]["distillation"].as_f64().unwrap_or(0.0)));
        }
    }
    // Fixed targets are the teacher's logits on the clean image, online ones on the views: the same
    // student sees other targets, so its distillation loss differs.
    assert_ne!(distillation[0].1, distillation[1].1, "{distillation:?}");
    assert_ne!(distillation[2].1, distillation[3].1, "{distillation:?}");
    Ok(())
}

#[test]
fn fixed_targets_are_the_teachers_logits_on_the_clean_images() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let mut cfg = common::tiny(dir.path());
    cfg.student.teacher_targets = TeacherTargets::Fixed;
    let split = run::load_data(&cfg)?;
    let no = AtomicBool::new(false);
    let ctx = Ctx::new(&cfg, &split, &no)?;
    let teacher = trainer::net::Net::new("resnet8", 10, 32, None, 3, &ctx.device)?;
    let Teacher::Fixed(logits) = phases::teacher_targets(&ctx, &teacher)? else {
        panic!("fixed targets expected");
    };
    // Image 5, un-augmented, through the teacher in eval mode.
    let p = augment::presets::eval(32)?;
    let x = p.apply_batch(&split.train.images, (32, 32), &[5], 0, 0, 0)?;
    let want = teacher.backbone().forward_features(&x, false)?.logits;
    let got = logits.narrow(0, 5, 1)?;
    // Equal up to the summation order of another batch composition.
    let diff = (want - got)?.abs()?.max_all()?.to_scalar::<f32>()?;
    assert!(diff < 1e-5, "{diff}");
    let _: &Tensor = &logits;
    Ok(())
}

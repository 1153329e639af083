//! The teacher and student phases: each builds its network and
//! [`Objective`](crate::objective::Objective) from the configuration and trains it through the
//! [`Engine`].
//!
//! Seeds: the teacher is initialised from `seed`, the student from `seed + 1`; the teacher's batch
//! order and augmentations are salted with `0x7EAC`, the student's with `0x57D`, so students of the
//! same seed (whatever their objective) see the same initialisation, batches and views.

use std::path::Path;

use crate::checkpoint::{self, meta, Checkpoint};
use crate::config::{TeacherMethod, TeacherTargets};
use crate::engine::state::save_net;
use crate::engine::{Ctx, Engine, Phase, PhaseOutcome};
use crate::net::Net;
use crate::objective::{self, Teacher};
use crate::{Error, Result};

/// Seed salt of the teacher phase.
const TEACHER_SALT: u64 = 0x7EAC;
/// Seed salt of the student phase.
const STUDENT_SALT: u64 = 0x57D;

/// Fits `fc` as a linear probe on the frozen backbone (for SimCLR-trained networks) and writes it.
fn fit_classifier(ctx: &Ctx, net: &Net) -> Result<f64> {
    let ev = ctx.evaluator()?;
    let probe = ev.linear_probe(&ev.features(net, true)?)?;
    let data = net.varmap.data().lock().unwrap_or_else(|e| e.into_inner());
    for (name, t) in [("fc.weight", &probe.weight), ("fc.bias", &probe.bias)] {
        if let Some(var) = data.get(name) {
            var.set(&t.to_device(var.device())?)?;
        }
    }
    Ok(probe.accuracy)
}

/// Imports the torchvision-format checkpoint `from` as the teacher into `dir/best.safetensors`.
fn import_teacher(ctx: &Ctx, dir: &Path, from: &Path) -> Result<PhaseOutcome> {
    let cfg = ctx.cfg;
    let classes = ctx.split.train.num_classes();
    // The architecture the file records, else `teacher.arch` (a file written by other tools).
    let ckpt = Checkpoint::load(from, &ctx.device)?;
    let arch = (!ckpt.metadata.contains_key(meta::ARCH)).then_some(cfg.teacher.arch.as_str());
    let (net, _) = Net::from_loaded(ckpt, from, arch, classes, cfg.data.image_size, &ctx.device)?;
    if net.num_classes != classes {
        return Err(Error::Checkpoint(format!(
            "{}: the teacher has {} classes, the data {classes}{}",
            from.display(),
            net.num_classes,
            if from == Path::new(crate::checkpoint::BUNDLED) {
                " (the bundled teacher is a CIFAR-10 model: pass --train-teacher, or a teacher of your own)"
            } else {
                ""
            }
        )));
    }
    let best = dir.join("best.safetensors");
    save_net(
        &best,
        &net,
        vec![],
        0,
        &[(meta::EPOCH, "0".into())],
        cfg,
        "teacher",
    )?;
    ctx.say(&format!(
        "teacher: imported {} ({}) into {}",
        from.display(),
        net.arch,
        best.display()
    ));
    Ok(PhaseOutcome {
        dir: dir.to_path_buf(),
        best,
        history: vec![],
        seconds: 0.0,
        images_per_second: 0.0,
    })
}

/// Trains (or imports) the teacher into `dir`; returns the phase outcome (its `best` is the
/// teacher to use).
pub fn train_teacher(ctx: &Ctx, dir: &Path, resume: bool) -> Result<PhaseOutcome> {
    let cfg = ctx.cfg;
    let t = &cfg.teacher;
    std::fs::create_dir_all(dir).map_err(|e| Error::Io(dir.to_path_buf(), e))?;
    if let Some(from) = &t.from {
        return import_teacher(ctx, dir, from);
    }
    let objective = objective::teacher_objective(cfg)?;
    let projection = objective
        .needs_projection()
        .then_some(&cfg.student.projection);
    let net = Net::new(
        &t.arch,
        ctx.split.train.num_classes(),
        cfg.data.image_size,
        projection,
        cfg.seed,
        &ctx.device,
    )?;
    let phase = Phase {
        name: "teacher",
        salt: TEACHER_SALT,
        optim: &t.optim,
        dir,
        resume,
    };
    let outcome = Engine::new(ctx).fit(&net, &*objective, phase)?;
    if t.method == TeacherMethod::Simclr {
        // The classifier of a SimCLR teacher is a linear probe on its best backbone.
        let ckpt = Checkpoint::load(&outcome.best, &ctx.device)?;
        checkpoint::load_into_varmap(&net.varmap, &ckpt, "", &outcome.best, &net.arch)?;
        let acc = fit_classifier(ctx, &net)?;
        ctx.say(&format!(
            "teacher: linear probe on the SimCLR backbone: {:.2}% test accuracy",
            100.0 * acc
        ));
        let md: Vec<(&str, String)> = ckpt
            .metadata
            .iter()
            .filter(|(k, _)| k.as_str() != meta::CONFIG)
            .map(|(k, v)| (k.as_str(), v.clone()))
            .collect();
        let steps = ckpt.meta(meta::STEP).unwrap_or(0);
        save_net(&outcome.best, &net, vec![], steps, &md, cfg, "teacher")?;
    }
    Ok(outcome)
}

/// Loads the student's teacher network (None when the objective needs none).
pub fn load_teacher(ctx: &Ctx) -> Result<Option<Net>> {
    let s = &ctx.cfg.student;
    let classes = ctx.split.train.num_classes();
    let needs = s.objective == crate::config::StudentObjective::SimclrKd && s.alpha > 0.0;
    let Some(path) = &s.teacher else {
        if needs {
            return Err(Error::Config(format!(
                "distill: --alpha {} needs a teacher: pass --teacher FILE.safetensors or --teacher bundled (or --alpha 0 for plain SimCLR)",
                s.alpha
            )));
        }
        return Ok(None);
    };
    if !needs {
        return Ok(None);
    }
    let (net, _) = Net::from_checkpoint(
        path,
        s.teacher_arch.as_deref(),
        classes,
        ctx.cfg.data.image_size,
        &ctx.device,
    )?;
    if net.num_classes != classes {
        return Err(Error::Checkpoint(format!(
            "{}: the teacher has {} classes, the data {classes}",
            path.display(),
            net.num_classes
        )));
    }
    Ok(Some(net))
}

/// The teacher of a student as `student.teacher_targets` asks: the frozen network run on the
/// student's views (online; a detached copy, which takes the folded conv + batch-norm evaluation
/// path and builds no autograd graph), or its logits on the un-augmented training images computed
/// once by the evaluator (fixed).
pub fn teacher_targets(ctx: &Ctx, teacher: &Net) -> Result<Teacher> {
    Ok(match ctx.cfg.student.teacher_targets {
        TeacherTargets::Online => Teacher::Online(teacher.backbone().detached()?),
        TeacherTargets::Fixed => {
            let f = ctx.evaluator()?.features(teacher, true)?;
            let tr = f.train.ok_or_else(|| {
                Error::Config("fixed teacher targets need the training features".into())
            })?;
            let n = ctx.split.train.len();
            Teacher::Fixed(candle_core::Tensor::from_vec(
                tr.logits,
                (n, tr.classes),
                &ctx.device,
            )?)
        }
    })
}

/// Trains a student into `dir` on `student.objective`, distilling from `teacher` where the
/// objective uses one (see [`load_teacher`] and [`teacher_targets`]).
pub fn train_student(
    ctx: &Ctx,
    dir: &Path,
    resume: bool,
    teacher: Option<Teacher>,
) -> Result<(PhaseOutcome, Net)> {
    let cfg = ctx.cfg;
    let s = &cfg.student;
    let objective = objective::student_objective(cfg, teacher)?;
    let student = Net::new(
        &s.arch,
        ctx.split.train.num_classes(),
        cfg.data.image_size,
        Some(&s.projection),
        cfg.seed.wrapping_add(1),
        &ctx.device,
    )?;
    let phase = Phase {
        name: "student",
        salt: STUDENT_SALT,
        optim: &s.optim,
        dir,
        resume,
    };
    let outcome = Engine::new(ctx).fit(&student, &*objective, phase)?;
    Ok((outcome, student))
}

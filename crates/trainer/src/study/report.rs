//! The study's report: `cifar10_cpu_study.md` (table, paired gains, findings), the JSON of every
//! figure, and two plots, all written from a [`StudyResults`].

use std::path::Path;

use plotters::prelude::*;
use serde_json::Value;

use super::{mean_std, Method, StudentResult, StudyResults};
use crate::eval::EvalReport;
use crate::{Error, Result};

/// Writes the JSON, the Markdown report and the plots of `r` into `results`.
pub fn write(results: &Path, r: &StudyResults) -> Result<()> {
    let cfg = &r.config.trainer;
    let methods = r.methods();
    let t = &r.teacher.eval;
    let mut table = String::from(
        "| method | classifier acc | kNN acc (k = 200, T = 0.1) | linear-probe acc | train time / seed | seeds |\n\
         | --- | ---: | ---: | ---: | ---: | ---: |\n",
    );
    table.push_str(&format!(
        "| teacher: {} supervised | {} | {} | {} | {:.0} s | 1 |\n",
        cfg.teacher.arch,
        fmt_pm(&t.classifier_accuracy.into_iter().collect::<Vec<_>>()),
        fmt_pm(&[t.knn_accuracy]),
        fmt_pm(&t.linear_probe_accuracy.into_iter().collect::<Vec<_>>()),
        r.teacher.train_seconds
    ));
    let mut bars = vec![(
        format!("teacher {}", cfg.teacher.arch),
        [
            vec![t.knn_accuracy],
            t.linear_probe_accuracy.into_iter().collect(),
            t.classifier_accuracy.into_iter().collect(),
        ],
    )];
    for a in &r.aggregates {
        let Some(m) = methods.iter().copied().find(|m| m.key() == a.key) else {
            continue;
        };
        table.push_str(&format!(
            "| student {}: {} | {} | {} | {} | {:.0} s | {} |\n",
            cfg.student.arch,
            m.label(),
            fmt_pm(&a.classifier_accuracy.values),
            fmt_pm(&a.knn_accuracy.values),
            fmt_pm(&a.linear_probe_accuracy.values),
            a.train_seconds.mean,
            a.knn_accuracy.values.len()
        ));
        let short = match m {
            Method::Supervised => "supervised".to_string(),
            Method::Distill(0.0) => "SimCLR".to_string(),
            Method::Distill(1.0) => "KD".to_string(),
            Method::Distill(a) => format!("SimCLR+KD {a}"),
        };
        bars.push((
            short,
            [
                a.knn_accuracy.values.clone(),
                a.linear_probe_accuracy.values.clone(),
                a.classifier_accuracy.values.clone(),
            ],
        ));
    }
    plot_bars(&results.join("cifar10_cpu_study_accuracy.svg"), &bars)?;
    let mut curves: Vec<(String, Vec<Value>)> = vec![];
    if !r.teacher.epochs.is_empty() {
        curves.push(("teacher".into(), r.teacher.epochs.clone()));
    }
    if let Some(&first_seed) = r.config.seeds.first() {
        for s in r.students.iter().filter(|s| s.seed == first_seed) {
            curves.push((s.key.clone(), s.epochs.clone()));
        }
    }
    crate::report::plot_curves(&results.join("cifar10_cpu_study_curves.svg"), &curves)?;
    let json = serde_json::to_string_pretty(r).map_err(|e| Error::Config(e.to_string()))?;
    crate::checkpoint::write_atomic(&results.join("cifar10_cpu_study.json"), json.as_bytes())?;
    let md = format!(
        "{}\n{table}\n{}\n{}\n{}",
        head(r, methods.len()),
        gains(r, &methods),
        findings(t, r),
        TAIL.replace("{TEACHER_BULLET}", teacher_bullet(r))
    );
    crate::checkpoint::write_atomic(&results.join("cifar10_cpu_study.md"), md.as_bytes())?;
    Ok(())
}

/// Paired by seed: each student's kNN accuracy against the SimCLR-only student's of the same seed
/// (same initialisation, batches and views), mean ± standard deviation over the seeds.
fn gains(r: &StudyResults, methods: &[Method]) -> String {
    let t = &r.teacher.eval;
    let base: Vec<(u64, f64)> = r
        .students_of(Method::Distill(0.0))
        .iter()
        .map(|s| (s.seed, s.eval.knn_accuracy))
        .collect();
    if base.is_empty() {
        return String::new();
    }
    let diffs = |m: Method| -> Vec<f64> {
        r.students_of(m)
            .iter()
            .filter_map(|s| {
                base.iter()
                    .find(|(seed, _)| *seed == s.seed)
                    .map(|(_, b)| s.eval.knn_accuracy - b)
            })
            .collect()
    };
    let mut out = String::from(
        "kNN accuracy minus the SimCLR-only student's of the same seed, in points (mean ± std over seeds):",
    );
    for &m in methods {
        let d = diffs(m);
        if matches!(m, Method::Distill(a) if a == 0.0) || d.is_empty() {
            continue;
        }
        let (mean, std) = mean_std(&d);
        let name = match m {
            Method::Supervised => "supervised".to_string(),
            Method::Distill(a) => format!("α = {a}"),
        };
        if d.len() > 1 {
            out.push_str(&format!(
                " {name}: {:+.2} ± {:.2};",
                100.0 * mean,
                100.0 * std
            ));
        } else {
            out.push_str(&format!(" {name}: {:+.2};", 100.0 * mean));
        }
    }
    let (b, _) = mean_std(&base.iter().map(|x| x.1).collect::<Vec<_>>());
    out.push_str(&format!(" teacher: {:+.2}.", 100.0 * (t.knn_accuracy - b)));
    let n = t.test_images.max(1) as f64;
    out.push_str(&format!(
        " One accuracy near {:.0}% on {} test images has a binomial standard error of {:.2} points.\n",
        100.0 * b,
        t.test_images,
        100.0 * (b * (1.0 - b) / n).sqrt()
    ));
    out
}

fn fmt_pm(xs: &[f64]) -> String {
    if xs.is_empty() {
        return "–".into();
    }
    let (m, s) = mean_std(xs);
    if xs.len() > 1 {
        format!("{:.2} ± {:.2}%", 100.0 * m, 100.0 * s)
    } else {
        format!("{:.2}%", 100.0 * m)
    }
}

/// Bar chart: kNN, linear-probe and classifier accuracy per method (means; error bars = std).
fn plot_bars(path: &Path, rows: &[(String, [Vec<f64>; 3])]) -> Result<()> {
    let draw = || -> std::result::Result<(), Box<dyn std::error::Error>> {
        let root = SVGBackend::new(path, (1000, 460)).into_drawing_area();
        root.fill(&WHITE)?;
        let n = rows.len();
        let mut chart = ChartBuilder::on(&root)
            .caption("CIFAR-10 test accuracy per method (%)", ("sans-serif", 20))
            .margin(15)
            .x_label_area_size(60)
            .y_label_area_size(50)
            .build_cartesian_2d(0.0..n as f64, 0.0..100.0)?;
        let labels: Vec<String> = rows.iter().map(|r| r.0.clone()).collect();
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(n * 2 + 1)
            .x_label_formatter(&|x: &f64| {
                let i = x.floor() as usize;
                if (x - i as f64 - 0.5).abs() < 1e-6 && i < labels.len() {
                    labels[i].clone()
                } else {
                    String::new()
                }
            })
            .y_desc("accuracy (%)")
            .draw()?;
        let names = ["kNN (k = 200)", "linear probe", "classifier head"];
        let colors = [BLUE, GREEN, RED];
        for (m, (name, color)) in names.iter().zip(colors).enumerate() {
            let mut rects = Vec::new();
            let mut bars = Vec::new();
            for (i, (_, vals)) in rows.iter().enumerate() {
                if vals[m].is_empty() {
                    continue;
                }
                let (mean, std) = mean_std(&vals[m]);
                let x0 = i as f64 + 0.1 + 0.27 * m as f64;
                rects.push(Rectangle::new(
                    [(x0, 0.0), (x0 + 0.25, 100.0 * mean)],
                    color.filled(),
                ));
                if std > 0.0 {
                    let xc = x0 + 0.125;
                    bars.push(PathElement::new(
                        vec![(xc, 100.0 * (mean - std)), (xc, 100.0 * (mean + std))],
                        BLACK.stroke_width(2),
                    ));
                }
            }
            chart
                .draw_series(rects)?
                .label(*name)
                .legend(move |(x, y)| {
                    Rectangle::new([(x, y - 5), (x + 12, y + 5)], color.filled())
                });
            chart.draw_series(bars)?;
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()?;
        root.present()?;
        Ok(())
    };
    draw().map_err(|e| crate::report::plot_error(path, e))
}

/// Sentences computed from the figures: is the teacher better than the supervised student, how close
/// the KD-only student comes to the teacher.
fn findings(t: &EvalReport, r: &StudyResults) -> String {
    let pick = |m: Method| r.students_of(m);
    let mean_of = |rs: Vec<&StudentResult>, f: &dyn Fn(&StudentResult) -> Option<f64>| {
        let v: Vec<f64> = rs.into_iter().filter_map(f).collect();
        (!v.is_empty()).then(|| mean_std(&v).0)
    };
    let mut out = String::new();
    let t_cls = t.classifier_accuracy.unwrap_or(f64::NAN);
    if let Some(sup) = mean_of(pick(Method::Supervised), &|r| r.eval.classifier_accuracy) {
        out.push_str(&format!(
            "Teacher against the supervised student (classifier accuracy): {:.2}% vs {:.2}%: the teacher is {}.",
            100.0 * t_cls,
            100.0 * sup,
            if t_cls > sup { "better" } else { "**worse**" }
        ));
    }
    if let Some(kd) = mean_of(pick(Method::Distill(1.0)), &|r| r.eval.classifier_accuracy) {
        out.push_str(&format!(
            " The KD-only student reaches {:.2}% classifier accuracy, {:.0}% of the teacher's.",
            100.0 * kd,
            100.0 * kd / t_cls
        ));
    }
    let mut out = out.trim_start().to_string();
    out.push('\n');
    out
}

/// The report's opening: what was trained on what, the seeds, the wall time.
fn head(r: &StudyResults, ways: usize) -> String {
    let cfg = &r.config.trainer;
    let teacher = match &r.config.teacher_checkpoint {
        Some(named) => format!(
            "Teacher {} from the checkpoint `{}`, trained apart from the study ({} epochs recorded \
             beside it, {:.0} s of training), not trained here.",
            cfg.teacher.arch,
            named.display(),
            r.teacher.epochs.len(),
            r.teacher.train_seconds
        ),
        None => format!(
            "Teacher {} (CIFAR stem), supervised, {} epoch(s) on {} training images (the first of \
             each class).",
            cfg.teacher.arch, cfg.teacher.optim.epochs, r.teacher_train_images
        ),
    };
    let transfer = if cfg.data.train_per_class > 0 {
        format!(
            "the first {} training images per class ({} images)",
            cfg.data.train_per_class, r.train_images
        )
    } else {
        format!("all {} training images", r.train_images)
    };
    let test = if cfg.data.test_per_class > 0 {
        format!(
            "the first {} test images of each class",
            cfg.data.test_per_class
        )
    } else {
        format!("all {} test images", r.test_images)
    };
    format!(
        "# CIFAR-10 distillation study on a 2-core CPU\n\n{teacher} Student {}, {} epochs on the \
         transfer set, {transfer}, trained {ways} ways with the same epochs, views, initialisation \
         and batch order per seed. Every model is evaluated on {test}; the kNN bank and the linear \
         probe's training set are the transfer set, for the teacher too. Seeds: {:?} ({} of {} runs \
         done). Wall time: {:.1} min. Teacher accuracy on the transfer set: {:.2}%.\n",
        cfg.student.arch,
        cfg.student.optim.epochs,
        r.config.seeds,
        r.students.len(),
        r.config.seeds.len() * ways,
        r.wall_seconds / 60.0,
        100.0 * r.teacher.train_accuracy
    )
}

/// The report's bullet on where the teacher comes from.
fn teacher_bullet(r: &StudyResults) -> &'static str {
    if r.config.teacher_checkpoint.is_some() {
        "- **The teacher is trained once, apart from the study** (`cargo xtask teacher`, the recipe in
  `configs/cifar10_teacher.toml`), on all 50,000 training images; the students distil on the transfer
  set above (RepDistiller's setting when it is all 50,000: teacher and students on the same images).
"
    } else {
        "- **The teacher knows more than the student because it has seen more labelled images**, not because it
  trained longer: a ResNet-18 learns far more per image than a resnet8 but costs ~25× more per view
  trained on a CPU (about 22 against 540 views/s on the 2-core machine), so an hour cannot train it past its student on the same few thousand images. The students
  then distil on a transfer set that is a part of the teacher's training data (the usual setting of
  compressing a model trained on a large labelled set; RepDistiller instead trains both on the same
  50,000 images for 240 epochs).
"
    }
}

/// The report's closing section: how the study is run (no figures: those are above and in the JSON).
const TAIL: &str = r#"## How the study is run

- **Losses.** Supervised: cross-entropy on both SimCLR views. The others:
  `(1 − α)·NT-Xent(T = 0.5) + α·KD(T = 4)·T²` (`losses::SimClrDistillation`, checked against PyTorch):
  α = 0 is SimCLR alone, α = 1 is KD alone. Student: backbone, 10-class head, and a projection MLP for
  the NT-Xent term; SGD with momentum 0.9, weight decay 5e-4 (not on batch-norm parameters or
  biases), warm-up then cosine (the trainer's optimizer and schedule).
{TEACHER_BULLET}- **Teacher targets are computed once, on the un-augmented image.** `trainer distill` runs the teacher
  on both views at every step, which on a CPU costs more than the student's own step (a ResNet-18
  forward runs at ~90 images/s on the 2-core machine). The study distils from the teacher's logits
  on the clean image instead (Beyer et al. 2022 call this a "fixed teacher"; consistent, per-view targets are better), the same loss otherwise.
- **Evaluation.** Classifier: the trained head (not for SimCLR only). kNN: weighted, k = 200, T = 0.1,
  on the backbone's pooled features. Linear probe: a linear classifier trained on frozen features.

**Beside the published numbers.** lightly's SimCLR ResNet-18 reaches 84.7% kNN accuracy on CIFAR-10
after 200 epochs of all 50,000 images at batch 512 on a GPU; RepDistiller's KD adds 0.8–1.6 points on
CIFAR-100 after 240 epochs, with teachers at 72–79% that beat their students by 3–8 points. The
students here are resnet8s (78 k parameters, ~1/140 of ResNet-18) that see tens of thousands of
images for a few epochs, so their absolute accuracies say what a CPU-hour budget buys, nothing about
the method's ceiling; what the study can show is the ordering of the methods.
`configs/cifar10_gpu_reproduce.toml` (all 50,000 images,
ResNet-18 teacher on RepDistiller's 240-epoch schedule, resnet8x4 students for 240 epochs at batch 512,
three seeds) and `configs/cifar10_simclr_resnet18_gpu.toml` (SimCLR ResNet-18, 200 epochs, batch 512,
for the 84.7% reference) are the configurations for that scale.

**Student budget.** `results/student_budget/` (`configs/cifar10_cpu_student_budget.toml`, reusing the
study's teacher) trains the SimCLR-only, KD-only and α = 0.9 students of seed 0 for 18 epochs instead of 6:
whether the gap to SimCLR and the distance to the teacher are set by the students' short training.

Files: `cifar10_cpu_study.json` (every figure, every epoch record, the configuration),
`cifar10_cpu_study_accuracy.svg` (accuracy per method), `cifar10_cpu_study_curves.svg` (loss and test
accuracy per epoch). Run folders: `target/study/` (not committed). Reproduce: `cargo xtask study`
(`--quick` for a two-minute end-to-end check; `--seeds 3,4 --results DIR` reuses the trained teacher,
then `--report-only --merge DIR/cifar10_cpu_study.json` adds those seeds to an existing report; a study
stopped at any moment continues where it stopped when started again).
"#;

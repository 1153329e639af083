//! Run reports: `summary.md`, `summary.json` and training curves drawn as SVG.

use std::path::Path;

use plotters::prelude::*;
use serde::Serialize;
use serde_json::Value;

use crate::eval::EvalReport;
use crate::{Error, Result};

/// One row of the summary table.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    /// What was trained (`teacher`, `student (SimCLR + KD, α = 0.5)`, …).
    pub model: String,
    /// Architecture.
    pub arch: String,
    /// Trainable parameters.
    pub parameters: usize,
    /// The evaluation.
    pub eval: EvalReport,
    /// Training wall time, seconds.
    pub train_seconds: f64,
    /// Training throughput, images per second.
    pub images_per_second: f64,
}

/// A fraction as a percentage with two decimals, `–` when absent.
pub fn pct(v: Option<f64>) -> String {
    v.map_or("–".into(), |v| format!("{:.2}%", 100.0 * v))
}

/// The summary table as Markdown; `knn_k` is the neighbours of the kNN column.
pub fn markdown_table(rows: &[Row], knn_k: usize) -> String {
    let mut s = format!(
        "| model | arch | params | classifier acc | kNN acc (k={knn_k}) | linear probe acc | train time | images/s |\n\
         | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |\n",
    );
    for r in rows {
        // A model imported rather than trained in this run has no training figures.
        let (secs, ips) = if r.images_per_second > 0.0 {
            (
                format!("{:.0} s", r.train_seconds),
                format!("{:.0}", r.images_per_second),
            )
        } else {
            ("–".into(), "–".into())
        };
        s.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {secs} | {ips} |\n",
            r.model,
            r.arch,
            r.parameters,
            pct(r.eval.classifier_accuracy),
            pct(Some(r.eval.knn_accuracy)),
            pct(r.eval.linear_probe_accuracy),
        ));
    }
    s
}

/// Draws, per run, the epoch losses (left) and the evaluation metric (right) into one SVG.
///
/// `runs`: (label, epoch records of `metrics.jsonl`).
pub fn plot_curves(path: &Path, runs: &[(String, Vec<Value>)]) -> Result<()> {
    let draw = || -> std::result::Result<(), Box<dyn std::error::Error>> {
        let root = SVGBackend::new(path, (1100, 420)).into_drawing_area();
        root.fill(&WHITE)?;
        let (left, right) = root.split_horizontally(550);
        let series = |key: &str| -> Vec<(String, Vec<(f64, f64)>)> {
            runs.iter()
                .map(|(label, recs)| {
                    let pts = recs
                        .iter()
                        .filter_map(|r| Some(((r["epoch"].as_f64()? + 1.0), r[key].as_f64()?)))
                        .collect();
                    (label.clone(), pts)
                })
                .filter(|(_, p): &(String, Vec<(f64, f64)>)| !p.is_empty())
                .collect()
        };
        let losses: Vec<(String, Vec<(f64, f64)>)> =
            ["cross_entropy", "total", "contrastive", "distillation"]
                .iter()
                .flat_map(|k| {
                    series(k)
                        .into_iter()
                        .map(move |(l, p)| (format!("{l}: {k}"), p))
                })
                .collect();
        let metrics: Vec<(String, Vec<(f64, f64)>)> = ["test_accuracy", "knn_accuracy"]
            .iter()
            .flat_map(|k| {
                series(k).into_iter().map(move |(l, p)| {
                    (
                        format!("{l}: {k}"),
                        p.into_iter().map(|(x, y)| (x, 100.0 * y)).collect(),
                    )
                })
            })
            .collect();
        for (area, title, data, ylabel, legend) in [
            (
                &left,
                "loss per epoch",
                &losses,
                "loss",
                SeriesLabelPosition::UpperRight,
            ),
            (
                &right,
                "test accuracy per epoch (%)",
                &metrics,
                "%",
                SeriesLabelPosition::LowerRight,
            ),
        ] {
            let xmax = data
                .iter()
                .flat_map(|(_, p)| p.iter().map(|q| q.0))
                .fold(1.0f64, f64::max);
            let ymax = data
                .iter()
                .flat_map(|(_, p)| p.iter().map(|q| q.1))
                .fold(0.0f64, f64::max)
                * 1.1
                + 1e-6;
            let mut chart = ChartBuilder::on(area)
                .caption(title, ("sans-serif", 18))
                .margin(12)
                .x_label_area_size(30)
                .y_label_area_size(45)
                .build_cartesian_2d(1.0..xmax.max(2.0), 0.0..ymax)?;
            chart
                .configure_mesh()
                .x_desc("epoch")
                .y_desc(ylabel)
                .draw()?;
            for (i, (label, pts)) in data.iter().enumerate() {
                let color = Palette99::pick(i).to_rgba();
                chart
                    .draw_series(LineSeries::new(pts.iter().copied(), color.stroke_width(2)))?
                    .label(label.clone())
                    .legend(move |(x, y)| {
                        PathElement::new(vec![(x, y), (x + 16, y)], color.stroke_width(2))
                    });
            }
            chart
                .configure_series_labels()
                .position(legend)
                .background_style(WHITE.mix(0.8))
                .border_style(BLACK)
                .draw()?;
        }
        root.present()?;
        Ok(())
    };
    draw().map_err(|e| plot_error(path, e))
}

/// A drawing error of the plot `path`, as an error naming the file.
pub fn plot_error(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::Io(path.to_path_buf(), std::io::Error::other(e.to_string()))
}

//! What a phase shows while it trains: a progress bar per epoch, or nothing with `--quiet`.

use indicatif::{ProgressBar, ProgressStyle};

/// A per-epoch progress bar (hidden when quiet).
pub struct Progress {
    bar: ProgressBar,
}

impl Progress {
    /// The bar of epoch `epoch` (0-based) of `epochs`, with `steps` steps, `done` of them already.
    pub fn epoch(
        quiet: bool,
        phase: &str,
        epoch: usize,
        epochs: usize,
        steps: usize,
        done: usize,
    ) -> Self {
        if quiet {
            return Self {
                bar: ProgressBar::hidden(),
            };
        }
        let bar = ProgressBar::new(steps as u64);
        bar.set_style(
            ProgressStyle::with_template("{prefix} [{bar:25}] {pos}/{len} {msg} ETA {eta}")
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
        );
        bar.set_prefix(format!("{phase} {}/{epochs}", epoch + 1));
        bar.set_position(done as u64);
        Self { bar }
    }

    /// One step done: throughput, loss parts and learning rate.
    pub fn step(&self, images_per_s: f64, values: &[(&'static str, f64)], lr: f64) {
        let parts: Vec<String> = values.iter().map(|(n, v)| format!("{n} {v:.4}")).collect();
        self.bar.set_message(format!(
            "{images_per_s:.0} img/s {} lr {lr:.4}",
            parts.join(" ")
        ));
        self.bar.inc(1);
    }

    /// The epoch ended normally.
    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }

    /// The epoch was interrupted.
    pub fn abandon(&self) {
        self.bar.abandon();
    }
}

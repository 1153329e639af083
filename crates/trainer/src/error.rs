//! [`Error`]: everything that can stop a run, each naming what is wrong.

use std::path::PathBuf;

/// An error of the trainer library.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A bad option value or configuration file.
    #[error("{0}")]
    Config(String),
    /// Reading the data failed.
    #[error(transparent)]
    Data(#[from] crate::data::DataError),
    /// A file could not be read or written.
    #[error("{}: {}", .0.display(), .1)]
    Io(PathBuf, std::io::Error),
    /// A checkpoint is missing, malformed or does not fit the architecture.
    #[error("{0}")]
    Checkpoint(String),
    /// A loss, the gradient norm or the weights became NaN or infinite.
    #[error(
        "{phase}: the {part} is {value} at step {step} (epoch {epoch}); stopped. \
         The last good checkpoint is kept; try a lower --lr or --grad-clip"
    )]
    NonFinite {
        /// `teacher` or `student`.
        phase: String,
        /// Global step.
        step: usize,
        /// Epoch of the step.
        epoch: usize,
        /// What: a loss part (`` `total` loss ``, `` `contrastive` loss ``, `` `distillation` loss ``,
        /// `` `cross_entropy` loss ``), `gradient norm`, or `weights after the update (…)`.
        part: String,
        /// Its value.
        value: f64,
    },
    /// The run was interrupted (Ctrl-C) after writing a checkpoint.
    #[error(
        "interrupted: stopped after writing the checkpoint {} (epoch {epoch}); continue with --resume",
        path.display()
    )]
    Interrupted {
        /// The last epoch written.
        epoch: usize,
        /// The checkpoint.
        path: PathBuf,
    },
    /// A tensor operation failed.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

/// The trainer library's result.
pub type Result<T, E = Error> = std::result::Result<T, E>;

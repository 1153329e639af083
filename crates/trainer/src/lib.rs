//! The `trainer` library: data readers, the training loops, evaluation and reports behind the
//! `trainer` binary.
//!
//! The binary is a thin command line over [`run`]: `trainer run` (teacher, distilled student,
//! SimCLR-only baseline, evaluation, summary), `trainer teacher`, `trainer distill`, `trainer eval`.
//! The [`data`] readers are usable on their own.

pub mod checkpoint;
pub mod config;
pub mod data;
pub mod device;
pub mod error;
pub mod eval;
pub mod metrics;
pub mod net;
pub mod optim;
pub mod report;
pub mod run;
pub mod schedule;
pub mod train;

pub use config::Config;
pub use error::{Error, Result};

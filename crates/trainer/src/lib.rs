//! The `trainer` library: data readers, the training loops, evaluation and reports behind the
//! `trainer` binary.
//!
//! All training goes through one loop, the [`engine`]; what a phase minimises is an
//! [`objective::Objective`]; every figure comes from the [`eval::Evaluator`].
//!
//! The binary is a thin command line over [`run`]: `trainer run` (teacher, distilled student,
//! SimCLR-only baseline, evaluation, summary), `trainer teacher`, `trainer distill`, `trainer eval`.
//! The [`data`] readers are usable on their own.

pub mod checkpoint;
pub mod cli;
pub mod compression;
pub mod config;
pub mod data;
pub mod device;
pub mod device_check;
pub mod dist;
pub mod engine;
pub mod error;
pub mod eval;
pub mod export;
pub mod infer;
pub mod metrics;
pub mod net;
pub mod objective;
pub mod optim;
pub mod phases;
pub mod report;
pub mod run;
pub mod schedule;
pub mod study;

pub use config::Config;
pub use error::{Error, Result};

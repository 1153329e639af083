//! Contrastive and distillation losses on Candle, checked against PyTorch.
//!
//! - Contrastive: [`nt_xent`] (SimCLR), [`nt_xent_multi`] (V ≥ 2 views), [`supcon`]
//!   (supervised contrastive), [`nt_xent_blocked`] (same values and gradients as [`nt_xent`]
//!   without holding the 2N × 2N similarity matrix).
//! - Distillation: [`kd_loss`] (Hinton), [`seed_loss`] with [`EmbeddingQueue`] (SEED),
//!   [`crd_loss`] (CRD), [`rkd_distance`], [`rkd_angle`] (RKD), [`pkt_loss`] (PKT),
//!   [`sp_loss`] (similarity-preserving), [`FitNetHint`] (FitNets), [`at_loss`] (attention
//!   transfer).
//! - Combined: [`SimClrDistillation`] gives `(1 − α) · NT-Xent + α · KD` and its parts.
//! - Sharded (data-parallel training): [`nt_xent_shard`], [`supcon_shard`]: one process's
//!   anchors against the batch gathered from every process; the mean over the processes is the
//!   loss of the whole batch, in value and gradient.
//!
//! Every function takes f32 or f64 tensors on any device and returns a scalar in that dtype;
//! bad input is an `Err` naming the function and the shapes, never a panic.

mod common;
mod crd;
mod feature_maps;
mod kd;
mod nt_xent;
mod nt_xent_blocked;
mod nt_xent_fused;
mod queue;
mod relational;
mod seed;
mod sharded;
mod simclr_distillation;
mod supcon;

pub use crd::crd_loss;
pub use feature_maps::{at_loss, FitNetHint};
pub use kd::kd_loss;
pub use nt_xent::{nt_xent, nt_xent_multi};
pub use nt_xent_blocked::nt_xent_blocked;
pub use queue::EmbeddingQueue;
pub use relational::{pkt_loss, rkd_angle, rkd_distance, sp_loss};
pub use seed::seed_loss;
pub use sharded::{nt_xent_shard, supcon_shard};
pub use simclr_distillation::{DistillationLoss, SimClrDistillation, SimClrDistillationConfig};
pub use supcon::supcon;

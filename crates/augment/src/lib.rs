//! SimCLR image augmentations with torchvision's semantics: reproducible, parallel, fast.
//!
//! Three layers, sharing one set of kernels:
//! - [`functional`]: one operation with given parameters on a candle tensor, equal to
//!   `torchvision.transforms.v2.functional` on float images (checked against fixtures).
//! - Random transforms ([`RandomResizedCrop`], [`RandomCrop`], [`ColorJitter`], …) implementing
//!   [`Transform`]: each draws its parameters from a caller-seeded [`AugRng`] as a list of
//!   [`Op`]s.
//! - The batch pipeline: [`Pipeline`] (built by [`presets`]), [`MultiView`] and [`Prefetcher`]
//!   read raw `u8` CHW images and write normalised `f32` batches, in parallel; view `v` of image
//!   `i` depends only on `(seed, epoch, i, v)` ([`view_rng`]).
//!
//! ```
//! use augment::{presets, MultiView};
//! let views = MultiView::repeat(presets::simclr_cifar(32)?, 2)?;
//! let images = vec![0u8; 10 * 3 * 32 * 32]; // 10 CIFAR images, CHW each
//! let batch = views.apply_batch(&images, (32, 32), &[4, 2, 9], 0, 0)?; // seed 0, epoch 0
//! assert_eq!(batch.len(), 2); // two views, each (3, 3, 32, 32), normalised f32
//! assert_eq!(batch[0].dims(), &[3, 3, 32, 32]);
//! # Ok::<(), candle_core::Error>(())
//! ```

mod blur;
mod color;
pub mod functional;
mod geometric;
mod kernels;
mod multiview;
mod op;
mod pipeline;
mod prefetch;
pub mod presets;
mod transform;

pub use blur::GaussianBlur;
pub use color::{ColorJitter, RandomGrayscale, RandomSolarize};
pub use geometric::{RandomCrop, RandomHorizontalFlip, RandomResizedCrop, Resize};
pub use multiview::MultiView;
pub use op::{apply_plan, Op};
pub use pipeline::Pipeline;
pub use prefetch::Prefetcher;
pub use transform::{view_rng, AugRng, Compose, RandomApply, Transform};

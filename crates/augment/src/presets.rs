//! Ready-made pipelines: SimCLR for CIFAR and ImageNet, supervised training, and evaluation.

use candle_core::{bail, Result};

use crate::blur::GaussianBlur;
use crate::color::{ColorJitter, RandomGrayscale};
use crate::geometric::{RandomCrop, RandomHorizontalFlip, RandomResizedCrop, Resize};
use crate::pipeline::Pipeline;
use crate::transform::{Compose, RandomApply};

/// CIFAR-10 per-channel mean (solo-learn and lightly's values).
pub const CIFAR_MEAN: [f32; 3] = [0.4914, 0.4822, 0.4465];
/// CIFAR-10 per-channel standard deviation (solo-learn and lightly's values).
pub const CIFAR_STD: [f32; 3] = [0.2470, 0.2435, 0.2616];
/// ImageNet per-channel mean (torchvision's).
pub const IMAGENET_MEAN: [f32; 3] = [0.485, 0.456, 0.406];
/// ImageNet per-channel standard deviation (torchvision's).
pub const IMAGENET_STD: [f32; 3] = [0.229, 0.224, 0.225];

fn simclr_common(size: usize) -> Result<Compose> {
    if size == 0 {
        bail!("simclr preset: size {size} must be > 0")
    }
    Ok(Compose::new()
        .then(RandomResizedCrop::new((size, size))?.with_scale(0.08, 1.0)?)
        .then(RandomHorizontalFlip::new(0.5)?)
        .then(RandomApply::new(
            ColorJitter::new(0.4, 0.4, 0.4, 0.1)?,
            0.8,
        )?)
        .then(RandomGrayscale::new(0.2)?))
}

/// SimCLR's augmentation for CIFAR (Chen et al. 2020, appendix B.9): random resized crop
/// (scale 0.08–1, ratio 3/4–4/3, antialiased bilinear), horizontal flip p 0.5, colour jitter
/// 0.4/0.4/0.4/0.1 with p 0.8, grayscale p 0.2, no blur; normalised with [`CIFAR_MEAN`] and
/// [`CIFAR_STD`] (change with [`Pipeline::with_normalize`]).
///
/// ```
/// let p = augment::presets::simclr_cifar(32)?;
/// assert_eq!(p.size(), 32);
/// # Ok::<(), candle_core::Error>(())
/// ```
pub fn simclr_cifar(size: usize) -> Result<Pipeline> {
    Pipeline::new(simclr_common(size)?, size)?.with_normalize(CIFAR_MEAN, CIFAR_STD)
}

/// The blur kernel SimCLR uses: 10% of the side, made odd (23 for 224), at least 3.
pub fn blur_kernel_size(size: usize) -> usize {
    let k = (size / 10).max(3);
    if k % 2 == 0 {
        k + 1
    } else {
        k
    }
}

/// SimCLR's augmentation for ImageNet: [`simclr_cifar`]'s, plus a Gaussian blur with p 0.5
/// (kernel [`blur_kernel_size`], sigma in [0.1, 2]); normalised with [`IMAGENET_MEAN`] and
/// [`IMAGENET_STD`]. The blur needs images larger than half its kernel.
pub fn simclr_imagenet(size: usize) -> Result<Pipeline> {
    let t = simclr_common(size)?.then(RandomApply::new(
        GaussianBlur::new(blur_kernel_size(size), 0.1, 2.0)?,
        0.5,
    )?);
    Pipeline::new(t, size)?.with_normalize(IMAGENET_MEAN, IMAGENET_STD)
}

/// Supervised training of a classifier (the trainer's supervised teacher): random resized crop
/// (scale 0.6–1, ratio 3/4–4/3) and horizontal flip p 0.5, normalised with [`CIFAR_MEAN`] and
/// [`CIFAR_STD`].
pub fn supervised(size: usize) -> Result<Pipeline> {
    let t = Compose::new()
        .then(RandomResizedCrop::new((size, size))?.with_scale(0.6, 1.0)?)
        .then(RandomHorizontalFlip::new(0.5)?);
    Pipeline::new(t, size)?.with_normalize(CIFAR_MEAN, CIFAR_STD)
}

/// The standard supervised CIFAR augmentation (He et al. 2016, section 4.2; the crop-and-flip
/// of the fast CIFAR training recipes): a `size` × `size` crop at a uniformly random position of
/// the image zero-padded by `padding` on every side ([`RandomCrop`]), then a horizontal flip
/// with p 0.5; normalised with [`CIFAR_MEAN`] and [`CIFAR_STD`]. torchvision:
/// `Compose([RandomCrop(size, padding), RandomHorizontalFlip(), ToDtype(float32, scale=True),
/// Normalize(CIFAR_MEAN, CIFAR_STD)])`. `padding` must be smaller than `size`; the images at
/// least `size − 2·padding` on each side.
///
/// ```
/// let p = augment::presets::crop_flip(32, 4)?; // CIFAR: 32 x 32 crops of the 40 x 40 padded image
/// let batch = p.apply_batch(&vec![0u8; 2 * 3 * 32 * 32], (32, 32), &[1, 0], 0, 0, 0)?;
/// assert_eq!(batch.dims(), &[2, 3, 32, 32]);
/// # Ok::<(), candle_core::Error>(())
/// ```
pub fn crop_flip(size: usize, padding: usize) -> Result<Pipeline> {
    let t = Compose::new()
        .then(RandomCrop::new((size, size))?.with_padding(padding)?)
        .then(RandomHorizontalFlip::new(0.5)?);
    Pipeline::new(t, size)?.with_normalize(CIFAR_MEAN, CIFAR_STD)
}

/// Evaluation: the whole image resized to `size` × `size` (antialiased bilinear; nothing when
/// it already has that size), normalised with [`CIFAR_MEAN`] and [`CIFAR_STD`]; no randomness.
pub fn eval(size: usize) -> Result<Pipeline> {
    Pipeline::new(Compose::new().then(Resize::new((size, size))?), size)?
        .with_normalize(CIFAR_MEAN, CIFAR_STD)
}

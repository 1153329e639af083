//! The functional API: one augmentation with given parameters on a tensor, as
//! `torchvision.transforms.v2.functional` on float images.
//!
//! Every function takes an image `(3, H, W)` or a batch `(N, 3, H, W)` of a float dtype with
//! values in [0, 1] (on any device: values are copied to the CPU, computed, and copied back) and
//! returns the same rank, dtype and device. Every image of a batch gets the same parameters.
//! Bad input (rank, channels, dtype, parameters) is an `Err` naming the value, never a panic.
//! The expected values in the tests come from torchvision 0.29 (`tests/fixtures/gen_functional.py`).

use candle_core::{bail, Result, Tensor};

use crate::kernels;
use crate::op::{Images, Op};

/// Mirrors the image left–right (`F.horizontal_flip`).
///
/// # Shapes
/// - `img`: `(3, H, W)` or `(N, 3, H, W)`; returns the same shape.
///
/// ```
/// use candle_core::{Device, Tensor};
/// let img = Tensor::arange(0f32, 12., &Device::Cpu)?.reshape((3, 1, 4))?;
/// let flipped = augment::functional::hflip(&img)?;
/// assert_eq!(flipped.get(0)?.to_vec2::<f32>()?, [[3., 2., 1., 0.]]);
/// # Ok::<(), candle_core::Error>(())
/// ```
pub fn hflip(img: &Tensor) -> Result<Tensor> {
    Op::HFlip.apply(img)
}

/// Crops the `height` × `width` window whose top-left corner is (`top`, `left`), padding with
/// zeros where it leaves the image (`F.crop`): `out[c, y, x] = img[c, top + y, left + x]` where
/// that pixel exists, else 0.
///
/// `top` and `left` may be negative, and the window may reach past the right and bottom edges
/// (a crop of an image zero-padded by `p` on every side is the crop at `(top − p, left − p)`).
/// The window must overlap the image by at least one pixel; otherwise it is an `Err` (there
/// torchvision returns all zeros, or a wrongly sized image for a window above or left of it).
///
/// # Shapes
/// - `img`: `(3, H, W)` or `(N, 3, H, W)`; returns `(3, height, width)` or `(N, 3, height, width)`.
///
/// ```
/// use candle_core::{Device, Tensor};
/// let img = Tensor::arange(1f32, 13., &Device::Cpu)?.reshape((3, 2, 2))?;
/// let crop = augment::functional::crop(&img, -1, 1, 2, 2)?; // one row above, one column right
/// assert_eq!(crop.get(0)?.to_vec2::<f32>()?, [[0., 0.], [2., 0.]]);
/// # Ok::<(), candle_core::Error>(())
/// ```
pub fn crop(img: &Tensor, top: isize, left: isize, height: usize, width: usize) -> Result<Tensor> {
    Op::Crop {
        top,
        left,
        size: (height, width),
    }
    .apply(img)
}

/// Crops the window (`top`, `left`, `height`, `width`) and resizes it to `size` = (h, w) by
/// bilinear interpolation with `align_corners=False` and **no antialiasing**: the sampling of
/// `F.resized_crop(img, top, left, height, width, size, antialias=False)`.
///
/// Output pixel `d` reads source position `s = max((d + 0.5) · in/out − 0.5, 0)` and blends its
/// two neighbours. **torchvision's default is `antialias=True`**: see [`resized_crop_antialias`].
/// The window must lie inside the image (torchvision would pad with zeros; here it is an `Err`).
///
/// # Shapes
/// - `img`: `(3, H, W)` or `(N, 3, H, W)`; returns `(3, size.0, size.1)` or `(N, 3, size.0, size.1)`.
///
/// ```
/// use candle_core::{Device, Tensor};
/// let img = Tensor::rand(0f32, 1f32, (3, 32, 32), &Device::Cpu)?;
/// let crop = augment::functional::resized_crop(&img, 4, 2, 20, 24, (32, 32))?;
/// assert_eq!(crop.dims(), &[3, 32, 32]);
/// # Ok::<(), candle_core::Error>(())
/// ```
pub fn resized_crop(
    img: &Tensor,
    top: usize,
    left: usize,
    height: usize,
    width: usize,
    size: (usize, usize),
) -> Result<Tensor> {
    Op::ResizedCrop {
        top,
        left,
        height,
        width,
        size,
        antialias: false,
    }
    .apply(img)
}

/// [`resized_crop`] with antialiasing: `F.resized_crop(…, antialias=True)`, torchvision's default.
///
/// When downscaling by a factor `s = in/out > 1` the triangle filter is widened to `s` source
/// pixels on each side, so every source pixel contributes (PyTorch's `_upsample_bilinear2d_aa`).
/// When upscaling it equals plain bilinear.
///
/// # Shapes
/// - `img`: `(3, H, W)` or `(N, 3, H, W)`; returns `(3, size.0, size.1)` or `(N, 3, size.0, size.1)`.
pub fn resized_crop_antialias(
    img: &Tensor,
    top: usize,
    left: usize,
    height: usize,
    width: usize,
    size: (usize, usize),
) -> Result<Tensor> {
    Op::ResizedCrop {
        top,
        left,
        height,
        width,
        size,
        antialias: true,
    }
    .apply(img)
}

/// Brightness: `clamp(x · factor, 0, 1)` (`F.adjust_brightness`); `factor >= 0`.
///
/// # Shapes
/// - `img`: `(3, H, W)` or `(N, 3, H, W)`; returns the same shape.
pub fn adjust_brightness(img: &Tensor, factor: f32) -> Result<Tensor> {
    Op::Brightness(factor).apply(img)
}

/// Contrast: `clamp(factor · x + (1 − factor) · m, 0, 1)` where `m` is the mean of the image's
/// luma (`0.2989 r + 0.587 g + 0.114 b`), one mean per image (`F.adjust_contrast`); `factor >= 0`.
///
/// # Shapes
/// - `img`: `(3, H, W)` or `(N, 3, H, W)`; returns the same shape.
pub fn adjust_contrast(img: &Tensor, factor: f32) -> Result<Tensor> {
    Op::Contrast(factor).apply(img)
}

/// Saturation: `clamp(factor · x + (1 − factor) · luma(x), 0, 1)` per pixel
/// (`F.adjust_saturation`); `factor >= 0`, 0 gives grey, 1 the input.
///
/// # Shapes
/// - `img`: `(3, H, W)` or `(N, 3, H, W)`; returns the same shape.
pub fn adjust_saturation(img: &Tensor, factor: f32) -> Result<Tensor> {
    Op::Saturation(factor).apply(img)
}

/// Hue: converts to HSV, adds `factor` (in turns, `[-0.5, 0.5]`) to the hue modulo 1, converts
/// back (`F.adjust_hue`, same HSV formulas).
///
/// # Shapes
/// - `img`: `(3, H, W)` or `(N, 3, H, W)`; returns the same shape.
pub fn adjust_hue(img: &Tensor, factor: f32) -> Result<Tensor> {
    Op::Hue(factor).apply(img)
}

/// Luma `0.2989 r + 0.587 g + 0.114 b` (ITU-R 601-2), on 1 or 3 output channels
/// (`F.rgb_to_grayscale`).
///
/// # Shapes
/// - `img`: `(3, H, W)` or `(N, 3, H, W)`; returns `(C, H, W)` or `(N, C, H, W)`,
///   `C = num_output_channels`.
///
/// ```
/// use candle_core::{Device, Tensor};
/// let img = Tensor::rand(0f32, 1f32, (2, 3, 4, 4), &Device::Cpu)?;
/// let gray = augment::functional::rgb_to_grayscale(&img, 1)?;
/// assert_eq!(gray.dims(), &[2, 1, 4, 4]);
/// # Ok::<(), candle_core::Error>(())
/// ```
pub fn rgb_to_grayscale(img: &Tensor, num_output_channels: usize) -> Result<Tensor> {
    match num_output_channels {
        3 => Op::Grayscale.apply(img),
        1 => {
            let images = Images::read("rgb_to_grayscale", img)?;
            let n = images.dims.0 * images.dims.1;
            let mut out = vec![0.0; images.n * n];
            for (src, dst) in images.data.chunks_exact(3 * n).zip(out.chunks_exact_mut(n)) {
                kernels::luma_plane(src, n, dst);
            }
            images.write(out, 1, images.dims)
        }
        c => bail!("rgb_to_grayscale: num_output_channels {c} must be 1 or 3"),
    }
}

/// Gaussian blur with a square `kernel_size` × `kernel_size` kernel of standard deviation `sigma`
/// and reflect padding (`F.gaussian_blur(img, [k, k], [sigma, sigma])`).
///
/// The kernel is `g(i) ∝ exp(−(i − k/2)² / (2 sigma²))`, normalised to sum 1; it is applied
/// separably. `kernel_size` must be odd and `kernel_size / 2 < min(H, W)`; `sigma > 0`.
///
/// # Shapes
/// - `img`: `(3, H, W)` or `(N, 3, H, W)`; returns the same shape.
pub fn gaussian_blur(img: &Tensor, kernel_size: usize, sigma: f32) -> Result<Tensor> {
    Op::GaussianBlur { kernel_size, sigma }.apply(img)
}

/// Solarize: `x >= threshold ? 1 − x : x` (`F.solarize`); `threshold <= 1`.
///
/// # Shapes
/// - `img`: `(3, H, W)` or `(N, 3, H, W)`; returns the same shape.
pub fn solarize(img: &Tensor, threshold: f32) -> Result<Tensor> {
    Op::Solarize(threshold).apply(img)
}

/// Per-channel normalisation `(x − mean[c]) / std[c]` (`F.normalize`); every `std` non-zero.
///
/// # Shapes
/// - `img`: `(3, H, W)` or `(N, 3, H, W)`; returns the same shape.
pub fn normalize(img: &Tensor, mean: [f32; 3], std: [f32; 3]) -> Result<Tensor> {
    Op::Normalize { mean, std }.apply(img)
}

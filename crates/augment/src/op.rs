//! [`Op`]: one augmentation with its parameters fixed, the unit that random transforms sample.

use candle_core::{bail, DType, Device, Result, Tensor};

use crate::kernels::{self, Window};

/// One augmentation with all its parameters drawn: what a random transform samples for one image.
///
/// A list of `Op`s (a *plan*) applied in order to one image gives one augmented view. The batch
/// pipeline applies plans to raw pixels; [`Op::apply`] applies one to a tensor through the same
/// kernels as [`crate::functional`], so the two agree.
#[derive(Debug, Clone, PartialEq)]
pub enum Op {
    /// Crops the window of `size` = (h, w) whose top-left corner is (`top`, `left`); the window
    /// may reach past any edge of the image (negative `top`/`left` included), and its pixels
    /// outside the image are 0 ([`crate::functional::crop`]). It must overlap the image.
    Crop {
        /// First row of the window (negative: above the image).
        top: isize,
        /// First column of the window (negative: left of the image).
        left: isize,
        /// Window (height, width), the output size.
        size: (usize, usize),
    },
    /// Crops the window (`top`, `left`, `height`, `width`) and resizes it to `size` = (h, w) by
    /// bilinear interpolation, antialiased or not ([`crate::functional::resized_crop`]).
    ResizedCrop {
        /// First row of the window.
        top: usize,
        /// First column of the window.
        left: usize,
        /// Rows in the window.
        height: usize,
        /// Columns in the window.
        width: usize,
        /// Output (height, width).
        size: (usize, usize),
        /// Antialiased (torchvision's default `antialias=True`) or plain bilinear.
        antialias: bool,
    },
    /// Mirrors left–right ([`crate::functional::hflip`]).
    HFlip,
    /// Multiplies by the factor ([`crate::functional::adjust_brightness`]).
    Brightness(f32),
    /// Blends with the mean grey level ([`crate::functional::adjust_contrast`]).
    Contrast(f32),
    /// Blends with the grey image ([`crate::functional::adjust_saturation`]).
    Saturation(f32),
    /// Rotates the hue by the factor, in turns ([`crate::functional::adjust_hue`]).
    Hue(f32),
    /// Replaces the image by its luma on all three channels
    /// ([`crate::functional::rgb_to_grayscale`] with 3 output channels).
    Grayscale,
    /// Gaussian blur with reflect padding ([`crate::functional::gaussian_blur`]).
    GaussianBlur {
        /// Odd side of the square kernel.
        kernel_size: usize,
        /// Standard deviation, in pixels.
        sigma: f32,
    },
    /// Inverts values at or above the threshold ([`crate::functional::solarize`]).
    Solarize(f32),
    /// `(x - mean) / std` per channel ([`crate::functional::normalize`]).
    Normalize {
        /// Per-channel mean.
        mean: [f32; 3],
        /// Per-channel standard deviation.
        std: [f32; 3],
    },
}

/// Reusable buffers for applying plans to one image after another.
#[derive(Debug, Default)]
pub(crate) struct Scratch {
    pub(crate) buf: Vec<f32>,
    pub(crate) other: Vec<f32>,
    pub(crate) tmp: Vec<f32>,
}

fn check_factor(name: &str, what: &str, f: f32) -> Result<()> {
    if !(f >= 0.0 && f.is_finite()) {
        bail!("{name}: {what} {f} must be a finite number >= 0")
    }
    Ok(())
}

/// Checks an [`Op::Crop`] window against an image of size `(h, w)`: a non-empty window that
/// overlaps the image by at least one pixel, with its far edges representable as `isize`
/// (a larger window is reported as not overlapping).
///
/// torchvision's `F.crop` returns a wrongly sized image for a window entirely above or left of
/// the image (its slice reads a negative end as counted from the far edge), and an all-zero one
/// for a window entirely below or right of it: neither is a crop of the image, so both are errors.
fn check_crop(
    (h, w): (usize, usize),
    (top, left): (isize, isize),
    size: (usize, usize),
) -> Result<()> {
    let (height, width) = size;
    if height == 0 || width == 0 {
        bail!("crop: window size {size:?} must be > 0")
    }
    let overlaps = match (
        top.checked_add_unsigned(height),
        left.checked_add_unsigned(width),
    ) {
        (Some(bottom), Some(right)) => {
            bottom > 0 && right > 0 && top < h as isize && left < w as isize
        }
        _ => false,
    };
    if !overlaps {
        bail!(
            "crop: window (top {top}, left {left}, height {height}, width {width}) does not \
             overlap the {h}x{w} image"
        )
    }
    Ok(())
}

impl Op {
    /// Checks the parameters against an input of size `(h, w)`; returns the output size.
    pub fn check(&self, (h, w): (usize, usize)) -> Result<(usize, usize)> {
        match *self {
            Op::Crop { top, left, size } => {
                check_crop((h, w), (top, left), size)?;
                Ok(size)
            }
            Op::ResizedCrop {
                top,
                left,
                height,
                width,
                size,
                ..
            } => {
                if height == 0 || width == 0 {
                    bail!("resized_crop: crop window height {height} and width {width} must be > 0")
                }
                if top + height > h || left + width > w {
                    bail!(
                        "resized_crop: crop window (top {top}, left {left}, height {height}, width {width}) \
                         lies outside the {h}x{w} image"
                    )
                }
                if size.0 == 0 || size.1 == 0 {
                    bail!("resized_crop: output size {size:?} must be > 0")
                }
                Ok(size)
            }
            Op::HFlip | Op::Grayscale => Ok((h, w)),
            Op::Brightness(f) => {
                check_factor("adjust_brightness", "brightness_factor", f).map(|_| (h, w))
            }
            Op::Contrast(f) => {
                check_factor("adjust_contrast", "contrast_factor", f).map(|_| (h, w))
            }
            Op::Saturation(f) => {
                check_factor("adjust_saturation", "saturation_factor", f).map(|_| (h, w))
            }
            Op::Hue(f) => {
                if !(-0.5..=0.5).contains(&f) {
                    bail!("adjust_hue: hue_factor {f} is not in [-0.5, 0.5]")
                }
                Ok((h, w))
            }
            Op::GaussianBlur { kernel_size, sigma } => {
                if kernel_size == 0 || kernel_size % 2 == 0 {
                    bail!("gaussian_blur: kernel_size {kernel_size} must be odd and positive")
                }
                if !(sigma > 0.0 && sigma.is_finite()) {
                    bail!("gaussian_blur: sigma {sigma} must be a finite number > 0")
                }
                if kernel_size / 2 >= h.min(w) {
                    bail!(
                        "gaussian_blur: kernel_size {kernel_size} needs reflect padding {} smaller than \
                         the {h}x{w} image",
                        kernel_size / 2
                    )
                }
                Ok((h, w))
            }
            Op::Solarize(t) => {
                if t.is_nan() || t > 1.0 {
                    bail!("solarize: threshold {t} must be <= 1 (the largest float pixel value)")
                }
                Ok((h, w))
            }
            Op::Normalize { mean, std } => {
                if std.iter().any(|&s| s == 0.0 || !s.is_finite())
                    || mean.iter().any(|m| !m.is_finite())
                {
                    bail!(
                        "normalize: std {std:?} must be finite and non-zero, mean {mean:?} finite"
                    )
                }
                Ok((h, w))
            }
        }
    }

    /// Applies the op to one planar image in `s.buf` of size `dims`, updating both.
    /// The caller has run [`Op::check`].
    pub(crate) fn run(&self, s: &mut Scratch, dims: &mut (usize, usize)) {
        let (h, w) = *dims;
        let n = h * w;
        match *self {
            Op::Crop { top, left, size } => {
                kernels::crop(&s.buf, (h, w), (top, left), size, false, &mut s.other);
                std::mem::swap(&mut s.buf, &mut s.other);
                *dims = size;
            }
            Op::ResizedCrop {
                top,
                left,
                height,
                width,
                size,
                antialias,
            } => {
                let win = Window {
                    top,
                    left,
                    height,
                    width,
                    out: size,
                    antialias,
                    flip: false,
                };
                kernels::resized_crop(&s.buf, (h, w), &win, &mut s.other, &mut s.tmp);
                std::mem::swap(&mut s.buf, &mut s.other);
                *dims = size;
            }
            Op::HFlip => kernels::hflip(&mut s.buf, w),
            Op::Brightness(f) => kernels::brightness(&mut s.buf, f),
            Op::Contrast(f) => kernels::contrast(&mut s.buf, n, f),
            Op::Saturation(f) => kernels::saturation(&mut s.buf, n, f),
            Op::Hue(f) => kernels::hue(&mut s.buf, n, f),
            Op::Grayscale => kernels::grayscale(&mut s.buf, n),
            Op::GaussianBlur { kernel_size, sigma } => {
                kernels::gaussian_blur(&mut s.buf, (h, w), kernel_size, sigma, &mut s.tmp)
            }
            Op::Solarize(t) => kernels::solarize(&mut s.buf, t),
            Op::Normalize { mean, std } => {
                s.other.clear();
                s.other.resize(s.buf.len(), 0.0);
                kernels::normalize_into(&s.buf, n, &mean, &std, &mut s.other);
                std::mem::swap(&mut s.buf, &mut s.other);
            }
        }
    }

    /// Applies the op to a tensor image or batch, as the matching [`crate::functional`] function.
    ///
    /// # Shapes
    /// - `img`: `(3, H, W)` or `(N, 3, H, W)`, a float dtype, values in [0, 1].
    /// - returns the same rank, `(…, 3, H', W')` where `(H', W')` is [`Op::check`]'s output size.
    pub fn apply(&self, img: &Tensor) -> Result<Tensor> {
        apply_plan(img, std::slice::from_ref(self))
    }
}

/// A batch of planar float images read out of a tensor.
pub(crate) struct Images {
    pub(crate) data: Vec<f32>,
    pub(crate) n: usize,
    pub(crate) dims: (usize, usize),
    batched: bool,
    dtype: DType,
    device: Device,
}

impl Images {
    /// Checks rank, channel count and dtype, and copies the values out as `f32`.
    pub(crate) fn read(name: &str, img: &Tensor) -> Result<Self> {
        let dtype = img.dtype();
        if !dtype.is_float() {
            bail!("{name}: image dtype {dtype:?} is not a float dtype (convert u8 images with x / 255)")
        }
        let (n, c, h, w, batched) = match *img.dims() {
            [c, h, w] => (1, c, h, w, false),
            [n, c, h, w] => (n, c, h, w, true),
            ref d => bail!("{name}: image shape {d:?} must be (3, H, W) or (N, 3, H, W)"),
        };
        if c != 3 {
            bail!(
                "{name}: image shape {:?} has {c} channels, expected 3",
                img.dims()
            )
        }
        if h == 0 || w == 0 {
            bail!("{name}: image shape {:?} is empty", img.dims())
        }
        let data = img.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
        Ok(Self {
            data,
            n,
            dims: (h, w),
            batched,
            dtype,
            device: img.device().clone(),
        })
    }

    /// Builds a tensor of `c` channels and size `dims` from `data`, with the input's rank,
    /// dtype and device.
    pub(crate) fn write(&self, data: Vec<f32>, c: usize, (h, w): (usize, usize)) -> Result<Tensor> {
        let t = if self.batched {
            Tensor::from_vec(data, (self.n, c, h, w), &self.device)?
        } else {
            Tensor::from_vec(data, (c, h, w), &self.device)?
        };
        t.to_dtype(self.dtype)
    }
}

/// Applies a plan (ops in order) to a tensor image or batch; every image of a batch gets the
/// same parameters, as torchvision does.
///
/// # Shapes
/// - `img`: `(3, H, W)` or `(N, 3, H, W)`, a float dtype; returns the same rank.
///
/// ```
/// use augment::{apply_plan, Op};
/// use candle_core::{Device, Tensor};
/// let img = Tensor::rand(0f32, 1f32, (3, 8, 8), &Device::Cpu)?;
/// let plan = [Op::HFlip, Op::Brightness(1.2), Op::Grayscale];
/// assert_eq!(apply_plan(&img, &plan)?.dims(), &[3, 8, 8]);
/// # Ok::<(), candle_core::Error>(())
/// ```
pub fn apply_plan(img: &Tensor, plan: &[Op]) -> Result<Tensor> {
    let images = Images::read("apply_plan", img)?;
    let mut dims = images.dims;
    for op in plan {
        dims = op.check(dims)?;
    }
    let (h, w) = images.dims;
    let mut out = Vec::with_capacity(images.n * 3 * dims.0 * dims.1);
    let mut s = Scratch::default();
    for chunk in images.data.chunks_exact(3 * h * w) {
        s.buf.clear();
        s.buf.extend_from_slice(chunk);
        let mut d = images.dims;
        for op in plan {
            op.run(&mut s, &mut d);
        }
        out.extend_from_slice(&s.buf);
    }
    images.write(out, 3, dims)
}

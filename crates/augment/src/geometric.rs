//! Geometric transforms: [`RandomResizedCrop`], [`RandomCrop`], [`RandomHorizontalFlip`] and the
//! deterministic [`Resize`].

use candle_core::{bail, Result};
use rand::Rng;

use crate::op::Op;
use crate::transform::{check_p, coin, uniform, AugRng, Transform};

fn check_size(name: &str, size: (usize, usize)) -> Result<()> {
    if size.0 == 0 || size.1 == 0 {
        bail!("{name}: output size {size:?} must be > 0")
    }
    Ok(())
}

fn check_range(name: &str, what: &str, (lo, hi): (f64, f64)) -> Result<()> {
    if !(lo > 0.0 && lo <= hi && hi.is_finite()) {
        bail!("{name}: {what} ({lo}, {hi}) must satisfy 0 < lo <= hi < inf")
    }
    Ok(())
}

/// Checks `op` against an image of size `dims`, appends it to `plan` and returns its output size.
fn push_checked(plan: &mut Vec<Op>, op: Op, dims: (usize, usize)) -> Result<(usize, usize)> {
    let out = op.check(dims)?;
    plan.push(op);
    Ok(out)
}

/// A random crop of random area and aspect ratio, resized to `size`
/// (`transforms.v2.RandomResizedCrop`, Szegedy et al. 2015, the main SimCLR augmentation).
///
/// Up to ten tries draw an area fraction `u ~ U(scale)` and a log aspect ratio
/// `log r ~ U(log ratio)`; `w = round(sqrt(u·H·W·r))`, `h = round(sqrt(u·H·W/r))` (round half to
/// even, as Python); the first that fits is placed uniformly. Otherwise the fallback is
/// torchvision's: a central crop of the whole image clamped to the ratio range.
/// Defaults: `scale = (0.08, 1)`, `ratio = (3/4, 4/3)`, antialiased bilinear.
#[derive(Debug, Clone)]
pub struct RandomResizedCrop {
    size: (usize, usize),
    scale: (f64, f64),
    ratio: (f64, f64),
    antialias: bool,
}

impl RandomResizedCrop {
    /// A crop resized to `size` = (h, w), with torchvision's defaults.
    pub fn new(size: (usize, usize)) -> Result<Self> {
        check_size("RandomResizedCrop", size)?;
        Ok(Self {
            size,
            scale: (0.08, 1.0),
            ratio: (3.0 / 4.0, 4.0 / 3.0),
            antialias: true,
        })
    }

    /// Sets the range of the crop's area as a fraction of the image's.
    pub fn with_scale(mut self, lo: f64, hi: f64) -> Result<Self> {
        check_range("RandomResizedCrop", "scale", (lo, hi))?;
        self.scale = (lo, hi);
        Ok(self)
    }

    /// Sets the range of the crop's aspect ratio (width / height).
    pub fn with_ratio(mut self, lo: f64, hi: f64) -> Result<Self> {
        check_range("RandomResizedCrop", "ratio", (lo, hi))?;
        self.ratio = (lo, hi);
        Ok(self)
    }

    /// Antialiased (torchvision's default) or plain bilinear resizing.
    pub fn with_antialias(mut self, antialias: bool) -> Self {
        self.antialias = antialias;
        self
    }

    /// Draws a window `(top, left, height, width)` for an image of size `(h, w)` (the whole,
    /// empty, image when `h` or `w` is 0).
    pub fn window(
        &self,
        rng: &mut AugRng,
        (height, width): (usize, usize),
    ) -> (usize, usize, usize, usize) {
        if height == 0 || width == 0 {
            return (0, 0, height, width);
        }
        let area = (height * width) as f64;
        let (log_lo, log_hi) = (self.ratio.0.ln(), self.ratio.1.ln());
        for _ in 0..10 {
            let target_area = area * uniform(rng, self.scale.0, self.scale.1);
            let aspect = uniform(rng, log_lo, log_hi).exp();
            let w = (target_area * aspect).sqrt().round_ties_even();
            let h = (target_area / aspect).sqrt().round_ties_even();
            if w > 0.0 && w <= width as f64 && h > 0.0 && h <= height as f64 {
                let (h, w) = (h as usize, w as usize);
                let top = rng.random_range(0..=height - h);
                let left = rng.random_range(0..=width - w);
                return (top, left, h, w);
            }
        }
        let in_ratio = width as f64 / height as f64;
        let (h, w) = if in_ratio < self.ratio.0 {
            let h = (width as f64 / self.ratio.0).round_ties_even() as usize;
            (h.clamp(1, height), width)
        } else if in_ratio > self.ratio.1 {
            let w = (height as f64 * self.ratio.1).round_ties_even() as usize;
            (height, w.clamp(1, width))
        } else {
            (height, width)
        };
        ((height - h) / 2, (width - w) / 2, h, w)
    }
}

impl Transform for RandomResizedCrop {
    fn sample(
        &self,
        rng: &mut AugRng,
        dims: (usize, usize),
        plan: &mut Vec<Op>,
    ) -> Result<(usize, usize)> {
        if dims.0 == 0 || dims.1 == 0 {
            bail!("RandomResizedCrop: image size {dims:?} is empty")
        }
        let (top, left, height, width) = self.window(rng, dims);
        let op = Op::ResizedCrop {
            top,
            left,
            height,
            width,
            size: self.size,
            antialias: self.antialias,
        };
        push_checked(plan, op, dims)
    }
}

/// A crop of fixed `size` at a uniformly random position, after zero padding of `padding`
/// pixels on every side (`transforms.v2.RandomCrop(size, padding=padding)` with its default
/// `fill=0`, `padding_mode="constant"`; with padding 4 and size 32 the standard CIFAR
/// augmentation of He et al. 2016).
///
/// For an `H` × `W` image and a crop of `th` × `tw`, torchvision pads to `(H + 2p) × (W + 2p)`
/// and draws `top ~ U{0, …, H + 2p − th}`, `left ~ U{0, …, W + 2p − tw}` (integers, each
/// equally likely: `torch.randint(0, H + 2p − th + 1)`). The padded image is never built: the
/// sampled op is [`Op::Crop`] at `(top − p, left − p)` on the image itself, whose pixels outside
/// the image are 0, the same values. The crop size must not exceed the padded image.
#[derive(Debug, Clone)]
pub struct RandomCrop {
    size: (usize, usize),
    padding: usize,
}

impl RandomCrop {
    /// A crop of `size` = (h, w), without padding.
    pub fn new(size: (usize, usize)) -> Result<Self> {
        check_size("RandomCrop", size)?;
        Ok(Self { size, padding: 0 })
    }

    /// Pads the image with `padding` zero pixels on every side before cropping.
    ///
    /// `padding` must be smaller than both sides of the crop, so that every crop holds at least
    /// one pixel of the image (torchvision also allows larger paddings, whose crops can be all
    /// zeros).
    pub fn with_padding(mut self, padding: usize) -> Result<Self> {
        if padding >= self.size.0.min(self.size.1) {
            bail!(
                "RandomCrop: padding {padding} must be smaller than the crop size {:?}",
                self.size
            )
        }
        self.padding = padding;
        Ok(self)
    }

    /// Draws the window's top-left corner `(top, left)` in the coordinates of an image of size
    /// `(h, w)`: `top` is uniform in `[−p, h + p − th]`, `left` in `[−p, w + p − tw]`.
    ///
    /// An `Err` names the sizes when the crop is larger than the padded image.
    pub fn window(&self, rng: &mut AugRng, (h, w): (usize, usize)) -> Result<(isize, isize)> {
        let (th, tw) = self.size;
        let p = self.padding;
        // The largest top / left in the padded image; None when the crop does not fit.
        let free =
            |side: usize, crop: usize| p.checked_mul(2)?.checked_add(side)?.checked_sub(crop);
        let (Some(free_h), Some(free_w)) = (free(h, th), free(w, tw)) else {
            bail!(
                "RandomCrop: crop size {:?} is larger than the {h}x{w} image padded by {p}",
                self.size
            )
        };
        let top = rng.random_range(0..=free_h);
        let left = rng.random_range(0..=free_w);
        let unpad = |v: usize| isize::try_from(v as i128 - p as i128).ok();
        match (unpad(top), unpad(left)) {
            (Some(top), Some(left)) => Ok((top, left)),
            _ => bail!("RandomCrop: crop offset ({top}, {left}) minus padding {p} overflows isize"),
        }
    }
}

impl Transform for RandomCrop {
    fn sample(
        &self,
        rng: &mut AugRng,
        dims: (usize, usize),
        plan: &mut Vec<Op>,
    ) -> Result<(usize, usize)> {
        let (top, left) = self.window(rng, dims)?;
        let op = Op::Crop {
            top,
            left,
            size: self.size,
        };
        push_checked(plan, op, dims)
    }
}

/// Resizes the whole image to `size` (bilinear, antialiased by default; no randomness).
#[derive(Debug, Clone)]
pub struct Resize {
    size: (usize, usize),
    antialias: bool,
}

impl Resize {
    /// Resizes to `size` = (h, w), antialiased.
    pub fn new(size: (usize, usize)) -> Result<Self> {
        check_size("Resize", size)?;
        Ok(Self {
            size,
            antialias: true,
        })
    }

    /// Antialiased (default) or plain bilinear.
    pub fn with_antialias(mut self, antialias: bool) -> Self {
        self.antialias = antialias;
        self
    }
}

impl Transform for Resize {
    fn sample(
        &self,
        _rng: &mut AugRng,
        dims: (usize, usize),
        plan: &mut Vec<Op>,
    ) -> Result<(usize, usize)> {
        if dims == self.size {
            return Ok(dims);
        }
        let op = Op::ResizedCrop {
            top: 0,
            left: 0,
            height: dims.0,
            width: dims.1,
            size: self.size,
            antialias: self.antialias,
        };
        push_checked(plan, op, dims)
    }
}

/// Mirrors left–right with probability `p` (`transforms.v2.RandomHorizontalFlip`).
#[derive(Debug, Clone)]
pub struct RandomHorizontalFlip {
    p: f64,
}

impl RandomHorizontalFlip {
    /// Flips with probability `p` in [0, 1] (torchvision's default is 0.5).
    pub fn new(p: f64) -> Result<Self> {
        check_p("RandomHorizontalFlip", p)?;
        Ok(Self { p })
    }
}

impl Transform for RandomHorizontalFlip {
    fn sample(
        &self,
        rng: &mut AugRng,
        dims: (usize, usize),
        plan: &mut Vec<Op>,
    ) -> Result<(usize, usize)> {
        if coin(rng, self.p) {
            plan.push(Op::HFlip);
        }
        Ok(dims)
    }
}

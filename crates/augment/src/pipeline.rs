//! [`Pipeline`]: a transform plus normalisation, applied to batches of raw `u8` images in
//! parallel and reproducibly.

use candle_core::{bail, Device, Result, Tensor};
use rayon::prelude::*;

use crate::kernels::{self, Pixel, Window};
use crate::op::{Op, Scratch};
use crate::transform::{view_rng, AugRng, Compose, Transform};

/// A full augmentation: a [`Compose`] of transforms producing `size` × `size` images, then an
/// optional per-channel normalisation. Built by [`crate::presets`] or [`Pipeline::new`].
///
/// The batch methods read a dataset stored as contiguous `u8` pixels, `N` images each in CHW
/// order `(3, H, W)` (CIFAR's native layout), and write normalised `f32` `(B, 3, size, size)`.
/// Image `i` of view `v` draws its parameters from [`view_rng`]`(seed, epoch, i, v)` alone, so a
/// batch is bit-identical whatever the thread count and whatever batch the image is in.
///
/// Per image the work stays in a small scratch buffer: the `u8` → float conversion, the crop
/// (zero-padded or resized) and the flip are one pass; each colour op one pass over data in L1 cache; the
/// normalisation is fused with the write-out. Images are spread over rayon's current thread pool.
#[derive(Debug, Clone)]
pub struct Pipeline {
    transforms: Compose,
    size: usize,
    normalize: Option<([f32; 3], [f32; 3])>,
}

impl Pipeline {
    /// `transforms` must output `size` × `size` images; no normalisation.
    pub fn new(transforms: Compose, size: usize) -> Result<Self> {
        if size == 0 {
            bail!("Pipeline: output size {size} must be > 0")
        }
        Ok(Self {
            transforms,
            size,
            normalize: None,
        })
    }

    /// Normalises the output by `(x − mean[c]) / std[c]`; every `std` finite and non-zero.
    pub fn with_normalize(mut self, mean: [f32; 3], std: [f32; 3]) -> Result<Self> {
        Op::Normalize { mean, std }.check((1, 1))?;
        self.normalize = Some((mean, std));
        Ok(self)
    }

    /// Outputs values in [0, 1], without normalisation (e.g. to look at the views).
    pub fn without_normalize(mut self) -> Self {
        self.normalize = None;
        self
    }

    /// The side of the output images.
    pub fn size(&self) -> usize {
        self.size
    }

    /// The normalisation `(mean, std)`, if any.
    pub fn normalization(&self) -> Option<([f32; 3], [f32; 3])> {
        self.normalize
    }

    /// Draws the plan (the ops, normalisation last) for one image of size `dims`.
    pub fn sample_plan(&self, rng: &mut AugRng, dims: (usize, usize)) -> Result<Vec<Op>> {
        let mut plan = Vec::with_capacity(8);
        let out = self.transforms.sample(rng, dims, &mut plan)?;
        if out != (self.size, self.size) {
            bail!(
                "Pipeline: the transforms give {out:?} images from {dims:?}, expected size {}",
                self.size
            )
        }
        if let Some((mean, std)) = self.normalize {
            plan.push(Op::Normalize { mean, std });
        }
        Ok(plan)
    }

    /// The plan of image `index`, view `view` of a batch call with `seed` and `epoch`: what
    /// [`Pipeline::apply_batch`] applies to that image.
    pub fn plan_for(
        &self,
        dims: (usize, usize),
        seed: u64,
        epoch: u64,
        index: usize,
        view: u64,
    ) -> Result<Vec<Op>> {
        self.sample_plan(&mut view_rng(seed, epoch, index as u64, view), dims)
    }

    /// Augments the images `indices` of `images` into `out`, `(B, 3, size, size)` row-major.
    ///
    /// # Shapes
    /// - `images`: `N · 3 · H · W` bytes, `dims` = (H, W); `indices`: `B` values `< N`.
    /// - `out`: `B · 3 · size · size` floats.
    #[allow(clippy::too_many_arguments)]
    pub fn apply_batch_into(
        &self,
        images: &[u8],
        dims: (usize, usize),
        indices: &[usize],
        seed: u64,
        epoch: u64,
        view: u64,
        out: &mut [f32],
    ) -> Result<()> {
        let (h, w) = dims;
        let per_in = 3 * h * w;
        if per_in == 0 {
            bail!("apply_batch: image size {dims:?} is empty")
        }
        if images.len() % per_in != 0 {
            bail!(
                "apply_batch: {} bytes is not a whole number of 3x{h}x{w} images",
                images.len()
            )
        }
        let count = images.len() / per_in;
        if let Some(&bad) = indices.iter().find(|&&i| i >= count) {
            bail!("apply_batch: index {bad} out of range for {count} images")
        }
        let per_out = 3 * self.size * self.size;
        if out.len() != indices.len() * per_out {
            bail!(
                "apply_batch: output holds {} floats, {} images of 3x{s}x{s} need {}",
                out.len(),
                indices.len(),
                indices.len() * per_out,
                s = self.size
            )
        }
        out.par_chunks_mut(per_out)
            .zip(indices.par_iter())
            .try_for_each_init(Scratch::default, |scratch, (dst, &i)| {
                let plan = self.plan_for(dims, seed, epoch, i, view)?;
                run_plan(
                    &images[i * per_in..(i + 1) * per_in],
                    dims,
                    &plan,
                    dst,
                    scratch,
                )
            })
    }

    /// Augments the images `indices` of `images`: [`Pipeline::apply_batch_into`] into a new
    /// vector.
    #[allow(clippy::too_many_arguments)]
    pub fn apply_batch_vec(
        &self,
        images: &[u8],
        dims: (usize, usize),
        indices: &[usize],
        seed: u64,
        epoch: u64,
        view: u64,
    ) -> Result<Vec<f32>> {
        let mut out = vec![0.0; indices.len() * 3 * self.size * self.size];
        self.apply_batch_into(images, dims, indices, seed, epoch, view, &mut out)?;
        Ok(out)
    }

    /// Augments the images `indices` of `images` into a CPU tensor.
    ///
    /// # Shapes
    /// - `images`: `N · 3 · H · W` bytes (CHW per image), `dims` = (H, W); `indices`: `B` values `< N`.
    /// - returns `(B, 3, size, size)`, `f32`.
    ///
    /// ```
    /// let pipeline = augment::presets::simclr_cifar(32)?;
    /// let images = vec![128u8; 4 * 3 * 32 * 32];
    /// let batch = pipeline.apply_batch(&images, (32, 32), &[3, 0, 1], 42, 0, 0)?;
    /// assert_eq!(batch.dims(), &[3, 3, 32, 32]);
    /// # Ok::<(), candle_core::Error>(())
    /// ```
    pub fn apply_batch(
        &self,
        images: &[u8],
        dims: (usize, usize),
        indices: &[usize],
        seed: u64,
        epoch: u64,
        view: u64,
    ) -> Result<Tensor> {
        let out = self.apply_batch_vec(images, dims, indices, seed, epoch, view)?;
        Tensor::from_vec(out, (indices.len(), 3, self.size, self.size), &Device::Cpu)
    }
}

impl Transform for Pipeline {
    fn sample(
        &self,
        rng: &mut AugRng,
        dims: (usize, usize),
        plan: &mut Vec<Op>,
    ) -> Result<(usize, usize)> {
        plan.extend(self.sample_plan(rng, dims)?);
        Ok((self.size, self.size))
    }
}

/// Applies `plan` to one planar image `src` of size `dims`, writing the result into `dst`.
///
/// A leading crop or resized crop (and a flip right after it) is fused with the conversion to
/// float, reading the window straight from `src`; a trailing normalisation is fused with the write into `dst`.
pub(crate) fn run_plan<P: Pixel>(
    src: &[P],
    dims: (usize, usize),
    plan: &[Op],
    dst: &mut [f32],
    s: &mut Scratch,
) -> Result<()> {
    let mut out_dims = dims;
    for op in plan {
        out_dims = op.check(out_dims)?;
    }
    if dst.len() != 3 * out_dims.0 * out_dims.1 {
        bail!(
            "run_plan: output holds {} floats, the plan gives 3x{}x{}",
            dst.len(),
            out_dims.0,
            out_dims.1
        )
    }
    let mut rest = plan;
    let mut d = dims;
    let flip = matches!(rest.get(1), Some(Op::HFlip));
    let cropped = match rest.first() {
        Some(&Op::ResizedCrop {
            top,
            left,
            height,
            width,
            size,
            antialias,
        }) => {
            let win = Window {
                top,
                left,
                height,
                width,
                out: size,
                antialias,
                flip,
            };
            kernels::resized_crop(src, dims, &win, &mut s.buf, &mut s.tmp);
            Some(size)
        }
        Some(&Op::Crop { top, left, size }) => {
            kernels::crop(src, dims, (top, left), size, flip, &mut s.buf);
            Some(size)
        }
        _ => {
            s.buf.clear();
            s.buf.extend(src.iter().map(|p| p.to_f32()));
            None
        }
    };
    if let Some(size) = cropped {
        d = size;
        rest = &rest[if flip { 2 } else { 1 }..];
    }
    let last = match rest.split_last() {
        Some((&Op::Normalize { mean, std }, init)) => {
            rest = init;
            Some((mean, std))
        }
        _ => None,
    };
    for op in rest {
        op.run(s, &mut d);
    }
    match last {
        Some((mean, std)) => kernels::normalize_into(&s.buf, d.0 * d.1, &mean, &std, dst),
        None => dst.copy_from_slice(&s.buf),
    }
    Ok(())
}

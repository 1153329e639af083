//! The [`Transform`] trait, the seeded RNG every random transform draws from, [`Compose`] and
//! [`RandomApply`].

use std::sync::Arc;

use candle_core::{bail, Result, Tensor};
use rand::{Rng, SeedableRng};

use crate::op::{apply_plan, Images, Op};

/// The random number generator every transform draws from: ChaCha8, seeded by the caller.
///
/// Candle's own CPU RNG cannot be seeded, so nothing here uses it.
pub type AugRng = rand_chacha::ChaCha8Rng;

/// The RNG of one augmented view: seeded from `(seed, epoch, index, view)` alone, so a view does
/// not depend on the batch it is in, its position there or the number of threads.
///
/// The four numbers are the 32 bytes of the ChaCha key (little endian), so distinct tuples give
/// independent streams.
///
/// ```
/// use rand::Rng;
/// let a: u64 = augment::view_rng(7, 0, 42, 1).random();
/// let b: u64 = augment::view_rng(7, 0, 42, 1).random();
/// assert_eq!(a, b);
/// ```
pub fn view_rng(seed: u64, epoch: u64, index: u64, view: u64) -> AugRng {
    let mut key = [0u8; 32];
    for (i, v) in [seed, epoch, index, view].into_iter().enumerate() {
        key[8 * i..8 * (i + 1)].copy_from_slice(&v.to_le_bytes());
    }
    AugRng::from_seed(key)
}

/// A uniform draw in `[lo, hi)` (or `lo` when the interval is empty); never panics.
pub(crate) fn uniform(rng: &mut AugRng, lo: f64, hi: f64) -> f64 {
    lo + (hi - lo) * rng.random::<f64>()
}

/// True with probability `p`.
pub(crate) fn coin(rng: &mut AugRng, p: f64) -> bool {
    rng.random::<f64>() < p
}

/// Checks that a probability lies in [0, 1].
pub(crate) fn check_p(name: &str, p: f64) -> Result<()> {
    if !(0.0..=1.0).contains(&p) {
        bail!("{name}: probability p {p} must be in [0, 1]")
    }
    Ok(())
}

/// A (possibly random) augmentation: draws its parameters as a list of [`Op`]s.
///
/// Implementors only write [`Transform::sample`]; [`Transform::apply`] then works on tensors
/// and the batch pipeline on raw pixels, both from the same sampled ops.
pub trait Transform: Send + Sync + std::fmt::Debug {
    /// Draws the parameters for an image of size `dims` = (h, w), appends the resulting ops to
    /// `plan` and returns the image size after them.
    fn sample(
        &self,
        rng: &mut AugRng,
        dims: (usize, usize),
        plan: &mut Vec<Op>,
    ) -> Result<(usize, usize)>;

    /// Samples once and applies the ops to a tensor image or batch (every image of a batch gets
    /// the same parameters, as torchvision).
    ///
    /// # Shapes
    /// - `img`: `(3, H, W)` or `(N, 3, H, W)`, float, values in [0, 1]; returns the same rank.
    fn apply(&self, img: &Tensor, rng: &mut AugRng) -> Result<Tensor> {
        let dims = Images::read("Transform::apply", img)?.dims;
        let mut plan = Vec::new();
        self.sample(rng, dims, &mut plan)?;
        apply_plan(img, &plan)
    }
}

/// Transforms applied one after the other (`transforms.v2.Compose`).
///
/// ```
/// use augment::{Compose, RandomHorizontalFlip, RandomGrayscale, Transform};
/// use candle_core::{Device, Tensor};
/// use rand::SeedableRng;
/// let t = Compose::new().then(RandomHorizontalFlip::new(0.5)?).then(RandomGrayscale::new(0.2)?);
/// let img = Tensor::rand(0f32, 1f32, (3, 8, 8), &Device::Cpu)?;
/// let mut rng = augment::AugRng::seed_from_u64(0);
/// assert_eq!(t.apply(&img, &mut rng)?.dims(), &[3, 8, 8]);
/// # Ok::<(), candle_core::Error>(())
/// ```
#[derive(Debug, Clone, Default)]
pub struct Compose {
    steps: Vec<Arc<dyn Transform>>,
}

impl Compose {
    /// An empty composition (the identity).
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends a transform.
    pub fn then<T: Transform + 'static>(mut self, t: T) -> Self {
        self.steps.push(Arc::new(t));
        self
    }

    /// Appends a shared transform.
    pub fn then_shared(mut self, t: Arc<dyn Transform>) -> Self {
        self.steps.push(t);
        self
    }

    /// The transforms, in order.
    pub fn steps(&self) -> &[Arc<dyn Transform>] {
        &self.steps
    }
}

impl Transform for Compose {
    fn sample(
        &self,
        rng: &mut AugRng,
        mut dims: (usize, usize),
        plan: &mut Vec<Op>,
    ) -> Result<(usize, usize)> {
        for t in &self.steps {
            dims = t.sample(rng, dims, plan)?;
        }
        Ok(dims)
    }
}

/// Applies a transform with probability `p`, else nothing (`transforms.v2.RandomApply`; to apply
/// several together, wrap them in a [`Compose`]).
#[derive(Debug, Clone)]
pub struct RandomApply {
    inner: Arc<dyn Transform>,
    p: f64,
}

impl RandomApply {
    /// `inner` with probability `p` in [0, 1].
    pub fn new<T: Transform + 'static>(inner: T, p: f64) -> Result<Self> {
        check_p("RandomApply", p)?;
        Ok(Self {
            inner: Arc::new(inner),
            p,
        })
    }
}

impl Transform for RandomApply {
    fn sample(
        &self,
        rng: &mut AugRng,
        dims: (usize, usize),
        plan: &mut Vec<Op>,
    ) -> Result<(usize, usize)> {
        if coin(rng, self.p) {
            self.inner.sample(rng, dims, plan)
        } else {
            Ok(dims)
        }
    }
}

//! [`MultiView`]: several augmented views of each image (2 for SimCLR, more for multi-crop).

use std::sync::Arc;

use candle_core::{bail, Result, Tensor};

use crate::pipeline::Pipeline;
use crate::prefetch::Prefetcher;

/// `V` pipelines, one per view: view `v` of a batch is `views[v]` applied with view index `v`,
/// so two views of the same image differ even when their pipelines are equal.
///
/// ```
/// use augment::{presets, MultiView};
/// let views = MultiView::repeat(presets::simclr_cifar(32)?, 2)?;
/// let images = vec![7u8; 8 * 3 * 32 * 32];
/// let batch = views.apply_batch(&images, (32, 32), &[0, 5, 2], 1, 0)?;
/// assert_eq!(batch.len(), 2);
/// assert_eq!(batch[1].dims(), &[3, 3, 32, 32]);
/// # Ok::<(), candle_core::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct MultiView {
    views: Vec<Pipeline>,
}

impl MultiView {
    /// One pipeline per view (at least one; sizes may differ, as in multi-crop).
    pub fn new(views: Vec<Pipeline>) -> Result<Self> {
        if views.is_empty() {
            bail!("MultiView: needs at least one view, got 0")
        }
        Ok(Self { views })
    }

    /// `n` views from the same pipeline.
    pub fn repeat(pipeline: Pipeline, n: usize) -> Result<Self> {
        Self::new(vec![pipeline; n])
    }

    /// The pipelines, one per view.
    pub fn views(&self) -> &[Pipeline] {
        &self.views
    }

    /// The number of views.
    pub fn len(&self) -> usize {
        self.views.len()
    }

    /// Always false: a `MultiView` has at least one view.
    pub fn is_empty(&self) -> bool {
        self.views.is_empty()
    }

    /// Every view of the images `indices`: see [`Pipeline::apply_batch`].
    ///
    /// # Shapes
    /// - `images`: `N · 3 · H · W` bytes, `dims` = (H, W); `indices`: `B` values `< N`.
    /// - returns `V` tensors, view `v` of shape `(B, 3, S_v, S_v)`.
    pub fn apply_batch(
        &self,
        images: &[u8],
        dims: (usize, usize),
        indices: &[usize],
        seed: u64,
        epoch: u64,
    ) -> Result<Vec<Tensor>> {
        self.views
            .iter()
            .enumerate()
            .map(|(v, p)| p.apply_batch(images, dims, indices, seed, epoch, v as u64))
            .collect()
    }

    /// Computes the views of `batches` one after the other on a background thread, up to
    /// `depth` batches ahead of the consumer: iterate the result while the model trains.
    ///
    /// `images` is shared with the thread; `S` is e.g. `Vec<u8>` or `[u8]`.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use augment::{presets, MultiView};
    /// let views = MultiView::repeat(presets::simclr_cifar(32)?, 2)?;
    /// let images: Arc<Vec<u8>> = Arc::new(vec![7u8; 8 * 3 * 32 * 32]);
    /// let batches = vec![vec![0, 1, 2, 3], vec![4, 5, 6, 7]];
    /// for views in views.prefetch(images, (32, 32), batches, 1, 0, 2)? {
    ///     let views = views?; // train on views[0], views[1]
    ///     assert_eq!(views[0].dims(), &[4, 3, 32, 32]);
    /// }
    /// # Ok::<(), candle_core::Error>(())
    /// ```
    pub fn prefetch<S>(
        &self,
        images: Arc<S>,
        dims: (usize, usize),
        batches: Vec<Vec<usize>>,
        seed: u64,
        epoch: u64,
        depth: usize,
    ) -> Result<Prefetcher<Result<Vec<Tensor>>>>
    where
        S: AsRef<[u8]> + Send + Sync + ?Sized + 'static,
    {
        let views = self.clone();
        Prefetcher::new(batches, depth, move |indices: Vec<usize>| {
            views.apply_batch((*images).as_ref(), dims, &indices, seed, epoch)
        })
    }
}

//! A first-in first-out queue of detached embeddings (teacher or negative bank), as in MoCo and SEED.

use candle_core::{bail, DType, Device, Result, Tensor};

/// A FIFO queue holding the most recent `capacity` embeddings of dimension `dim`.
///
/// Pushed rows are detached (a queue never carries gradient), appended at the end, and the
/// oldest rows are dropped once more than `capacity` are held. Used as the reference set of
/// [`seed_loss`](crate::seed_loss) (Fang et al., "SEED: Self-supervised Distillation for Visual
/// Representation", ICLR 2021) and as the negatives of [`crd_loss`](crate::crd_loss); the
/// mechanism is MoCo's (He et al., CVPR 2020).
///
/// # Shapes
/// - `push(embeddings)`: `(B, dim)`.
/// - `embeddings()`: `(len, dim)`, oldest first, `len ≤ capacity`.
///
/// # Example
/// ```
/// # fn main() -> candle_core::Result<()> {
/// use candle_core::{DType, Device, Tensor};
/// let mut queue = losses::EmbeddingQueue::new(3, 2, DType::F32, &Device::Cpu)?;
/// queue.push(&Tensor::new(&[[1f32, 0.], [2., 0.]], &Device::Cpu)?)?;
/// queue.push(&Tensor::new(&[[3f32, 0.], [4., 0.]], &Device::Cpu)?)?;
/// assert_eq!(queue.len(), 3);
/// let first = queue.embeddings()?.get(0)?.get(0)?.to_scalar::<f32>()?;
/// assert_eq!(first, 2.0); // the oldest row (1, 0) was dropped
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct EmbeddingQueue {
    capacity: usize,
    dim: usize,
    dtype: DType,
    device: Device,
    rows: Option<Tensor>,
}

impl EmbeddingQueue {
    /// An empty queue for at most `capacity` rows of `dim` values.
    ///
    /// # Errors
    /// If `capacity` or `dim` is 0, or `dtype` is not a float type.
    pub fn new(capacity: usize, dim: usize, dtype: DType, device: &Device) -> Result<Self> {
        if capacity == 0 || dim == 0 {
            bail!("EmbeddingQueue::new: capacity ({capacity}) and dim ({dim}) must be > 0")
        }
        if !dtype.is_float() {
            bail!("EmbeddingQueue::new: dtype must be a float type, got {dtype:?}")
        }
        Ok(Self {
            capacity,
            dim,
            dtype,
            device: device.clone(),
            rows: None,
        })
    }

    /// Appends `embeddings` (detached, converted to the queue's dtype and device), dropping
    /// the oldest rows beyond `capacity`.
    ///
    /// # Errors
    /// If `embeddings` is not `(B, dim)`.
    pub fn push(&mut self, embeddings: &Tensor) -> Result<()> {
        match embeddings.dims() {
            &[_, d] if d == self.dim => {}
            dims => bail!(
                "EmbeddingQueue::push: embeddings {dims:?} must be (B, {})",
                self.dim
            ),
        }
        let new = embeddings
            .detach()
            .to_dtype(self.dtype)?
            .to_device(&self.device)?;
        let all = match &self.rows {
            Some(old) => Tensor::cat(&[old, &new], 0)?,
            None => new,
        };
        let len = all.dim(0)?;
        let kept = if len > self.capacity {
            all.narrow(0, len - self.capacity, self.capacity)?
                .contiguous()?
        } else {
            all
        };
        self.rows = Some(kept);
        Ok(())
    }

    /// The held rows, `(len, dim)`, oldest first.
    ///
    /// # Errors
    /// If the queue is empty.
    pub fn embeddings(&self) -> Result<Tensor> {
        match &self.rows {
            Some(rows) => Ok(rows.clone()),
            None => bail!("EmbeddingQueue::embeddings: the queue is empty"),
        }
    }

    /// Number of rows held.
    pub fn len(&self) -> usize {
        self.rows.as_ref().map_or(0, |r| r.dims()[0])
    }

    /// Whether no row is held yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The most rows the queue holds.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// The embedding dimension.
    pub fn dim(&self) -> usize {
        self.dim
    }
}

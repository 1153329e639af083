//! The combined objective: (1 − α) · NT-Xent + α · Hinton KD, with each part kept for logging.

use candle_core::{bail, Result, Tensor};

use crate::common::positive;
use crate::{kd_loss, nt_xent};

/// Hyper-parameters of [`SimClrDistillation`].
///
/// # Example
/// ```
/// let cfg = losses::SimClrDistillationConfig::default();
/// assert_eq!((cfg.temperature, cfg.kd_temperature, cfg.alpha), (0.5, 4.0, 0.5));
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SimClrDistillationConfig {
    /// τ of NT-Xent, finite and > 0 (default 0.5).
    pub temperature: f64,
    /// T of the distillation softmax, finite and > 0 (default 4.0).
    pub kd_temperature: f64,
    /// Weight α ∈ [0, 1] of the distillation part (default 0.5).
    pub alpha: f64,
}

impl Default for SimClrDistillationConfig {
    fn default() -> Self {
        Self {
            temperature: 0.5,
            kd_temperature: 4.0,
            alpha: 0.5,
        }
    }
}

/// The parts of the combined loss, each a scalar tensor in the inputs' dtype.
///
/// `total` carries the gradient of both parts; `contrastive` and `distillation` are the same
/// tensors that went into it, for logging.
#[derive(Debug, Clone)]
pub struct DistillationLoss {
    /// `(1 − α) · contrastive + α · distillation`, shape `()`.
    pub total: Tensor,
    /// [`nt_xent`](crate::nt_xent) of the two views, shape `()`.
    pub contrastive: Tensor,
    /// [`kd_loss`](crate::kd_loss) of the student against the teacher, shape `()`.
    pub distillation: Tensor,
}

/// SimCLR contrastive learning combined with Hinton distillation from a teacher:
///
/// ```text
/// total = (1 − α) · NT-Xent(z_a, z_b; τ) + α · T² · KL(softmax(t/T) ‖ softmax(s/T))
/// ```
///
/// The contrastive part is [`nt_xent`](crate::nt_xent) (Chen et al., SimCLR, ICML 2020), the
/// distillation part [`kd_loss`](crate::kd_loss) (Hinton et al. 2015). The teacher logits get
/// no gradient.
///
/// # Shapes
/// - `student_logits`, `teacher_logits`: `(B, C)`, **logits, not probabilities**.
/// - `z_a`, `z_b`: `(N, D)` projections of two views, N ≥ 2.
/// - returns a [`DistillationLoss`] of three `()` tensors.
///
/// # Example
/// ```
/// # fn main() -> candle_core::Result<()> {
/// use candle_core::{Device, Tensor};
/// let dev = Device::Cpu;
/// let loss_fn = losses::SimClrDistillation::new(losses::SimClrDistillationConfig::default())?;
/// let student = Tensor::new(&[[1f32, 0., -1.], [0., 2., 0.]], &dev)?;
/// let teacher = Tensor::new(&[[2f32, 0., -2.], [0., 3., 1.]], &dev)?;
/// let z_a = Tensor::new(&[[1f32, 0.], [0., 1.]], &dev)?;
/// let z_b = Tensor::new(&[[0.9f32, 0.1], [0.2, 0.8]], &dev)?;
/// let parts = loss_fn.forward(&student, &teacher, &z_a, &z_b)?;
/// let (t, c, d) = (
///     parts.total.to_scalar::<f32>()?,
///     parts.contrastive.to_scalar::<f32>()?,
///     parts.distillation.to_scalar::<f32>()?,
/// );
/// assert!((t - (0.5 * c + 0.5 * d)).abs() < 1e-6);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Copy)]
pub struct SimClrDistillation {
    config: SimClrDistillationConfig,
}

impl SimClrDistillation {
    /// Checks the configuration: both temperatures finite and > 0, α ∈ [0, 1].
    ///
    /// # Errors
    /// Names the offending field and its value.
    ///
    /// # Example
    /// ```
    /// use losses::{SimClrDistillation, SimClrDistillationConfig};
    /// let bad = SimClrDistillationConfig { alpha: 1.5, ..Default::default() };
    /// assert!(SimClrDistillation::new(bad).is_err());
    /// ```
    pub fn new(config: SimClrDistillationConfig) -> Result<Self> {
        const F: &str = "SimClrDistillation::new";
        positive(F, "temperature", config.temperature)?;
        positive(F, "kd_temperature", config.kd_temperature)?;
        if !(0.0..=1.0).contains(&config.alpha) {
            bail!("{F}: alpha must lie in [0, 1], got {}", config.alpha)
        }
        Ok(Self { config })
    }

    /// The configuration this loss was built with.
    ///
    /// # Example
    /// ```
    /// # fn main() -> candle_core::Result<()> {
    /// let l = losses::SimClrDistillation::new(Default::default())?;
    /// assert_eq!(l.config().alpha, 0.5);
    /// # Ok(()) }
    /// ```
    pub fn config(&self) -> &SimClrDistillationConfig {
        &self.config
    }

    /// Computes the three parts; see [`SimClrDistillation`] for formula, shapes and an example.
    ///
    /// # Errors
    /// Whatever [`nt_xent`](crate::nt_xent) or [`kd_loss`](crate::kd_loss) reject, and inputs
    /// of different dtypes.
    pub fn forward(
        &self,
        student_logits: &Tensor,
        teacher_logits: &Tensor,
        z_a: &Tensor,
        z_b: &Tensor,
    ) -> Result<DistillationLoss> {
        if student_logits.dtype() != z_a.dtype() {
            bail!(
                "SimClrDistillation::forward: student_logits ({:?}) and z_a ({:?}) must have the same dtype",
                student_logits.dtype(),
                z_a.dtype()
            )
        }
        let contrastive = nt_xent(z_a, z_b, self.config.temperature)?;
        self.combine(contrastive, student_logits, teacher_logits)
    }

    /// The total and its parts from a contrastive term computed elsewhere (e.g.
    /// [`nt_xent_shard`](crate::nt_xent_shard) in data-parallel training):
    /// `(1 − α)·contrastive + α·KD(teacher ‖ student; T)`.
    ///
    /// # Errors
    /// Whatever [`kd_loss`](crate::kd_loss) rejects.
    pub fn combine(
        &self,
        contrastive: Tensor,
        student_logits: &Tensor,
        teacher_logits: &Tensor,
    ) -> Result<DistillationLoss> {
        let distillation = kd_loss(student_logits, teacher_logits, self.config.kd_temperature)?;
        let alpha = self.config.alpha;
        let total = (contrastive.affine(1.0 - alpha, 0.0)? + distillation.affine(alpha, 0.0)?)?;
        Ok(DistillationLoss {
            total,
            contrastive,
            distillation,
        })
    }
}

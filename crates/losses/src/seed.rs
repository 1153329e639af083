//! SEED: distillation of the teacher's similarity distribution over a batch or a queue.

use candle_core::{bail, Result, Tensor};

use crate::common::{
    dims2, float_dtype, l2_normalize, log_softmax, positive, same_kind, same_shape, softmax,
};

/// Self-supervised distillation (SEED) of Fang et al., "SEED: Self-supervised Distillation
/// for Visual Representation" (ICLR 2021).
///
/// Student and teacher embeddings are L2-normalised and scored against a reference set `R` of
/// normalised teacher embeddings; the loss is the cross-entropy between the teacher's and the
/// student's softmaxed scores, each with its own temperature:
///
/// ```text
/// p^T_ij = softmax_j(t_i · r_j / τ_T),  p^S_ij = softmax_j(s_i · r_j / τ_S)
/// loss   = −1/N Σ_i Σ_j p^T_ij log p^S_ij
/// ```
///
/// With `queue = None` the reference set is the teacher batch itself, `r_j = t_j`
/// (N scores per row). With `Some(queue)` it is `[t_i; queue]`: the sample's own teacher
/// embedding followed by the K queued ones (1 + K scores per row), as in SEED's code.
/// The teacher side (embeddings and queue) is detached.
///
/// # Shapes
/// - `student`, `teacher`: `(N, D)`.
/// - `queue`: `(K, D)`, e.g. [`EmbeddingQueue::embeddings`](crate::EmbeddingQueue::embeddings).
/// - returns `()`.
///
/// # Errors
/// Mismatched shapes, rank ≠ 2, a temperature not finite and > 0.
///
/// # Example
/// ```
/// # fn main() -> candle_core::Result<()> {
/// use candle_core::{Device, Tensor};
/// let dev = Device::Cpu;
/// let t = Tensor::new(&[[1f32, 0.], [0., 1.], [0.7, 0.7]], &dev)?;
/// let s = Tensor::new(&[[0.9f32, 0.1], [0.1, 0.9], [0.6, 0.8]], &dev)?;
/// let from_batch = losses::seed_loss(&s, &t, None, 0.2, 0.07)?;
/// let queue = Tensor::new(&[[-1f32, 0.], [0., -1.]], &dev)?;
/// let from_queue = losses::seed_loss(&s, &t, Some(&queue), 0.2, 0.07)?;
/// assert!(from_batch.to_scalar::<f32>()? > 0.0 && from_queue.to_scalar::<f32>()? > 0.0);
/// # Ok(()) }
/// ```
pub fn seed_loss(
    student: &Tensor,
    teacher: &Tensor,
    queue: Option<&Tensor>,
    student_temperature: f64,
    teacher_temperature: f64,
) -> Result<Tensor> {
    const F: &str = "seed_loss";
    dims2(F, "student", student)?;
    dims2(F, "teacher", teacher)?;
    same_shape(F, "student", student, "teacher", teacher)?;
    float_dtype(F, "student", student)?;
    same_kind(F, "student", student, "teacher", teacher)?;
    positive(F, "student_temperature", student_temperature)?;
    positive(F, "teacher_temperature", teacher_temperature)?;
    let s = l2_normalize(student)?;
    let t = l2_normalize(&teacher.detach())?;
    let (score_s, score_t) = match queue {
        None => (s.matmul(&t.t()?)?, t.matmul(&t.t()?)?),
        Some(q) => {
            let (_, d) = dims2(F, "queue", q)?;
            if d != student.dim(1)? {
                bail!(
                    "seed_loss: queue {:?} and student {:?} differ in D",
                    q.dims(),
                    student.dims()
                )
            }
            same_kind(F, "student", student, "queue", q)?;
            let q = l2_normalize(&q.detach())?;
            let own_s = (&s * &t)?.sum_keepdim(1)?;
            let own_t = t.sqr()?.sum_keepdim(1)?;
            (
                Tensor::cat(&[own_s, s.matmul(&q.t()?)?], 1)?,
                Tensor::cat(&[own_t, t.matmul(&q.t()?)?], 1)?,
            )
        }
    };
    let p_t = softmax(&score_t.affine(1.0 / teacher_temperature, 0.0)?)?;
    let log_p_s = log_softmax(&score_s.affine(1.0 / student_temperature, 0.0)?)?;
    (p_t * log_p_s)?.sum(1)?.mean_all()?.neg()
}

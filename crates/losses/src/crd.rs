//! CRD: contrastive representation distillation with in-batch or queued negatives.

use candle_core::{bail, Result, Tensor};

use crate::common::{dims2, float_dtype, l2_normalize, logsumexp, positive, same_kind, same_shape};

/// Contrastive representation distillation (CRD) of Tian, Krishnan and Isola, "Contrastive
/// Representation Distillation" (ICLR 2020), in its InfoNCE (softmax) form.
///
/// Student and teacher embeddings (already projected to a common D by the user's heads) are
/// L2-normalised; each student embedding must pick its own teacher embedding among negatives:
///
/// ```text
/// in-batch:  loss = 1/N Σ_i −log [ exp(s_i·t_i/τ) / Σ_j exp(s_i·t_j/τ) ]
/// queue:     loss = 1/N Σ_i −log [ exp(s_i·t_i/τ) / (exp(s_i·t_i/τ) + Σ_k exp(s_i·q_k/τ)) ]
/// ```
///
/// Gradient flows into both `student` and `teacher` (CRD trains the teacher's embedding
/// head; detach `teacher` yourself to freeze it); the queue is detached. This is the
/// softmax variant of CRD (the paper's NCE with a momentum memory bank is replaced by a queue
/// of teacher embeddings such as [`EmbeddingQueue`](crate::EmbeddingQueue)).
///
/// # Shapes
/// - `student`, `teacher`: `(N, D)`; `negatives`: `(K, D)`.
/// - returns `()`.
///
/// # Errors
/// Mismatched shapes, rank ≠ 2, `temperature` not finite and > 0.
///
/// # Example
/// ```
/// # fn main() -> candle_core::Result<()> {
/// use candle_core::{Device, Tensor};
/// let dev = Device::Cpu;
/// let t = Tensor::new(&[[1f32, 0.], [0., 1.]], &dev)?;
/// let loss = losses::crd_loss(&t, &t, None, 0.07)?;
/// assert!(loss.to_scalar::<f32>()? < 1e-3);
/// # Ok(()) }
/// ```
pub fn crd_loss(
    student: &Tensor,
    teacher: &Tensor,
    negatives: Option<&Tensor>,
    temperature: f64,
) -> Result<Tensor> {
    const F: &str = "crd_loss";
    dims2(F, "student", student)?;
    dims2(F, "teacher", teacher)?;
    same_shape(F, "student", student, "teacher", teacher)?;
    float_dtype(F, "student", student)?;
    same_kind(F, "student", student, "teacher", teacher)?;
    positive(F, "temperature", temperature)?;
    let s = l2_normalize(student)?.affine(1.0 / temperature, 0.0)?;
    let t = l2_normalize(teacher)?;
    let pos = (&s * &t)?.sum_keepdim(1)?;
    let logits = match negatives {
        None => s.matmul(&t.t()?)?,
        Some(q) => {
            let (_, d) = dims2(F, "negatives", q)?;
            if d != student.dim(1)? {
                bail!(
                    "crd_loss: negatives {:?} and student {:?} differ in D",
                    q.dims(),
                    student.dims()
                )
            }
            same_kind(F, "student", student, "negatives", q)?;
            let q = l2_normalize(&q.detach())?;
            Tensor::cat(&[&pos, &s.matmul(&q.t()?)?], 1)?
        }
    };
    (logsumexp(&logits)? - pos)?.mean_all()
}

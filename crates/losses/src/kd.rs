//! Hinton knowledge distillation: KL divergence between temperature-softened class distributions.

use candle_core::{bail, Result, Tensor};

use crate::common::{dims2, float_dtype, log_softmax, positive, same_kind, softmax};

/// Knowledge-distillation loss of Hinton, Vinyals and Dean, "Distilling the Knowledge in a
/// Neural Network" (2015):
///
/// ```text
/// loss = T² · 1/N Σ_i Σ_c q_ic (log q_ic − log p_ic),
///   q = softmax(teacher_logits / T),  p = softmax(student_logits / T)
/// ```
///
/// exactly `F.kl_div(F.log_softmax(s / T, 1), F.softmax(t / T, 1), reduction='batchmean') * T * T`
/// in PyTorch. The teacher side is detached: no gradient flows into `teacher_logits`. Classes
/// where the teacher's probability underflows to 0 contribute 0, as in PyTorch.
///
/// **Both inputs are logits, not probabilities.**
///
/// # Shapes
/// - `student_logits`: `(N, C)`.
/// - `teacher_logits`: `(N, C)`, the same number of classes.
/// - returns `()`.
///
/// # Errors
/// If the inputs are not rank 2, differ in shape, dtype or device, or `temperature` is not
/// finite and > 0.
///
/// # Example
/// ```
/// # fn main() -> candle_core::Result<()> {
/// use candle_core::{Device, Tensor};
/// let s = Tensor::new(&[[1f32, 2., 3.]], &Device::Cpu)?;
/// let loss = losses::kd_loss(&s, &s, 4.0)?;
/// assert!(loss.to_scalar::<f32>()?.abs() < 1e-6);
/// # Ok(()) }
/// ```
pub fn kd_loss(
    student_logits: &Tensor,
    teacher_logits: &Tensor,
    temperature: f64,
) -> Result<Tensor> {
    const F: &str = "kd_loss";
    let (n, c_s) = dims2(F, "student_logits", student_logits)?;
    let (n_t, c_t) = dims2(F, "teacher_logits", teacher_logits)?;
    if c_s != c_t {
        bail!(
            "kd_loss: student_logits {:?} and teacher_logits {:?} have different class counts ({c_s} vs {c_t})",
            student_logits.dims(),
            teacher_logits.dims()
        )
    }
    if n != n_t {
        bail!(
            "kd_loss: student_logits {:?} and teacher_logits {:?} have different batch sizes",
            student_logits.dims(),
            teacher_logits.dims()
        )
    }
    float_dtype(F, "student_logits", student_logits)?;
    same_kind(
        F,
        "student_logits",
        student_logits,
        "teacher_logits",
        teacher_logits,
    )?;
    positive(F, "temperature", temperature)?;
    let inv_t = 1.0 / temperature;
    let teacher = teacher_logits.detach().affine(inv_t, 0.0)?;
    let q = softmax(&teacher)?;
    let log_q = log_softmax(&teacher)?;
    let log_p = log_softmax(&student_logits.affine(inv_t, 0.0)?)?;
    let kl = (q * (log_q - log_p)?)?.sum_all()?;
    kl.affine(temperature * temperature / n as f64, 0.0)
}

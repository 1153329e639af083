//! Feature-map distillation: FitNet hints through a learnable 1×1 regressor, and attention transfer (AT).

use candle_core::{bail, Result, Tensor};
use candle_nn::{Conv2d, Conv2dConfig, Module, VarBuilder};

use crate::common::{float_dtype, l2_normalize, same_kind};

fn dims4(func: &str, arg: &str, xs: &Tensor) -> Result<(usize, usize, usize, usize)> {
    match xs.dims() {
        &[n, c, h, w] => Ok((n, c, h, w)),
        dims => bail!("{func}: {arg} must have rank 4 (N, C, H, W), got shape {dims:?}"),
    }
}

/// FitNet hint loss of Romero et al., "FitNets: Hints for Thin Deep Nets" (ICLR 2015): a
/// learnable 1×1 convolution `r` maps the student's feature map to the teacher's width, and
///
/// ```text
/// loss = 1/(N·Ct·H·W) ‖r(F^s) − F^t‖²
/// ```
///
/// (mean squared error, `F.mse_loss(conv1x1(f_s), f_t)`). The teacher is detached; the
/// regressor's `weight` `(Ct, Cs, 1, 1)` and `bias` `(Ct,)` live under the given `vb` and train
/// with the student.
///
/// # Shapes
/// - student features: `(N, Cs, H, W)`, teacher features: `(N, Ct, H, W)`.
/// - returns `()`.
///
/// # Example
/// ```
/// # fn main() -> candle_core::Result<()> {
/// use candle_core::{DType, Device, Tensor};
/// use candle_nn::{VarBuilder, VarMap};
/// let varmap = VarMap::new();
/// let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
/// let hint = losses::FitNetHint::new(8, 16, vb.pp("hint"))?;
/// let f_s = Tensor::ones((2, 8, 4, 4), DType::F32, &Device::Cpu)?;
/// let f_t = Tensor::zeros((2, 16, 4, 4), DType::F32, &Device::Cpu)?;
/// let loss = hint.forward(&f_s, &f_t)?;
/// assert_eq!(loss.dims(), &[] as &[usize]);
/// assert_eq!(varmap.all_vars().len(), 2); // weight and bias
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct FitNetHint {
    regressor: Conv2d,
    c_student: usize,
    c_teacher: usize,
}

impl FitNetHint {
    /// A hint loss whose regressor maps `c_student` to `c_teacher` channels; parameters
    /// `weight` and `bias` under `vb` (PyTorch's `nn.Conv2d(c_student, c_teacher, 1)` keys).
    ///
    /// # Errors
    /// A zero channel count, or what `vb` reports (missing or misshapen tensors).
    pub fn new(c_student: usize, c_teacher: usize, vb: VarBuilder) -> Result<Self> {
        if c_student == 0 || c_teacher == 0 {
            bail!("FitNetHint::new: channel counts must be > 0, got {c_student} -> {c_teacher}")
        }
        let regressor = candle_nn::conv2d(c_student, c_teacher, 1, Conv2dConfig::default(), vb)?;
        Ok(Self {
            regressor,
            c_student,
            c_teacher,
        })
    }

    /// The 1×1 regressor.
    pub fn regressor(&self) -> &Conv2d {
        &self.regressor
    }

    /// The hint loss of `student_features` against `teacher_features`.
    ///
    /// # Errors
    /// Rank ≠ 4, channel counts other than the regressor's, different N, H or W.
    pub fn forward(&self, student_features: &Tensor, teacher_features: &Tensor) -> Result<Tensor> {
        const F: &str = "FitNetHint::forward";
        let (n, c_s, h, w) = dims4(F, "student_features", student_features)?;
        let (n_t, c_t, h_t, w_t) = dims4(F, "teacher_features", teacher_features)?;
        if c_s != self.c_student || c_t != self.c_teacher || (n, h, w) != (n_t, h_t, w_t) {
            bail!(
                "{F}: student_features {:?} and teacher_features {:?} do not fit a {} -> {} regressor with equal N, H, W",
                student_features.dims(),
                teacher_features.dims(),
                self.c_student,
                self.c_teacher
            )
        }
        float_dtype(F, "student_features", student_features)?;
        same_kind(
            F,
            "student_features",
            student_features,
            "teacher_features",
            teacher_features,
        )?;
        let mapped = self.regressor.forward(student_features)?;
        (mapped - teacher_features.detach())?.sqr()?.mean_all()
    }
}

/// Attention transfer (AT) of Zagoruyko and Komodakis, "Paying More Attention to Attention"
/// (ICLR 2017), activation-based with p = 2:
///
/// ```text
/// A(F) = normalize(mean_c F_c²)  flattened to (N, H·W),  loss = 1/(N·H·W) ‖A(F^s) − A(F^t)‖²
/// ```
///
/// as in the reference code `(at(f_s) - at(f_t)).pow(2).mean()`; the paper's β (e.g. 1000) is
/// left to the caller. The teacher is detached. Channel counts may differ.
///
/// # Shapes
/// - `student`: `(N, Cs, H, W)`, `teacher`: `(N, Ct, H, W)`.
/// - returns `()`.
///
/// # Errors
/// Rank ≠ 4, different N, H or W.
///
/// # Example
/// ```
/// # fn main() -> candle_core::Result<()> {
/// use candle_core::{Device, Tensor};
/// let f = Tensor::arange(0f32, 32., &Device::Cpu)?.reshape((2, 4, 2, 2))?;
/// let t = Tensor::cat(&[&f, &f], 1)?; // 8 channels, the same attention map
/// assert!(losses::at_loss(&f, &t)?.to_scalar::<f32>()? < 1e-12);
/// # Ok(()) }
/// ```
pub fn at_loss(student: &Tensor, teacher: &Tensor) -> Result<Tensor> {
    const F: &str = "at_loss";
    let (n, _, h, w) = dims4(F, "student", student)?;
    let (n_t, _, h_t, w_t) = dims4(F, "teacher", teacher)?;
    if (n, h, w) != (n_t, h_t, w_t) {
        bail!(
            "{F}: student {:?} and teacher {:?} must have the same N, H and W",
            student.dims(),
            teacher.dims()
        )
    }
    float_dtype(F, "student", student)?;
    same_kind(F, "student", student, "teacher", teacher)?;
    let attention =
        |f: &Tensor| -> Result<Tensor> { l2_normalize(&f.sqr()?.mean(1)?.flatten_from(1)?) };
    (attention(student)? - attention(&teacher.detach())?)?
        .sqr()?
        .mean_all()
}

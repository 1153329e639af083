//! Objectives: what a training phase minimises. The [`crate::engine::Engine`] owns the loop; an
//! [`Objective`] says which views of each image it needs, computes the loss parts of one batch,
//! and names the figure evaluated at epoch ends.
//!
//! | objective | loss | views | metric |
//! | --- | --- | --- | --- |
//! | [`Supervised`] | cross-entropy on the labels (label smoothing ε) | 1 (teacher) or 2 SimCLR views (baseline student) | test accuracy (teacher), kNN accuracy (student) |
//! | [`SimClrKd`] | `(1 − α)·NT-Xent(z_a, z_b; τ) + α·KD(t ‖ s; T)·T²` | 2 SimCLR views | kNN accuracy |
//!
//! `SimClrKd` with α = 0 is SimCLR (a SimCLR teacher, the SimCLR-only student); with α = 1 Hinton
//! KD; the teacher's logits come from a [`Teacher`]: run on the same views (online) or looked up
//! from logits computed once on the un-augmented images (fixed).
//!
//! **Adding an objective** (SEED, CRD, RKD from the `losses` crate): a struct implementing
//! [`Objective`] here, a variant of [`crate::config::StudentObjective`], and its arm in
//! [`student_objective`]. Nothing else changes: the engine, checkpoints, resume, metrics and the
//! study take it as it is.

use candle_core::{ModuleT, Tensor};
use models::ResNet;

use crate::config::{Config, StudentObjective, TeacherAugment, TeacherMethod};
use crate::net::Net;
use crate::{Error, Result};

/// One batch as an objective sees it: in data-parallel training, this process's shard of the
/// global batch.
#[derive(Clone)]
pub struct Batch {
    /// The augmented views of the images, each `(B, 3, H, W)` on the training device.
    pub views: Vec<Tensor>,
    /// Dataset indices of the images, in batch order.
    pub indices: Vec<usize>,
    /// Labels `(B,)` (`u32`) on the training device.
    pub labels: Tensor,
    /// The processes training together ([`crate::dist::Single`] in one process). An objective
    /// whose loss couples the images of a batch (NT-Xent's negatives) gathers what it needs from
    /// every rank, so that the mean of the ranks' losses is the loss of the global batch.
    pub world: crate::dist::World,
}

/// Loss parts of one step, each a scalar tensor; the first is the total that is minimised.
pub type LossParts = Vec<(&'static str, Tensor)>;

/// The figure the engine evaluates at epoch ends (higher is better; `best.safetensors` keeps the
/// network where it peaked).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Metric {
    /// Accuracy of the network's own classifier on the test set (`test_accuracy`).
    ClassifierAccuracy,
    /// Weighted kNN accuracy of the backbone features (`knn_accuracy`).
    Knn,
}

impl Metric {
    /// Its key in `metrics.jsonl`.
    pub fn key(self) -> &'static str {
        match self {
            Metric::ClassifierAccuracy => "test_accuracy",
            Metric::Knn => "knn_accuracy",
        }
    }
}

/// What a training phase minimises (see the module docs).
pub trait Objective {
    /// The augmentation of each image: one pipeline per view.
    fn views(&self) -> &augment::MultiView;

    /// Whether the network needs a projection head.
    fn needs_projection(&self) -> bool;

    /// The loss parts of `batch` for `net` in training mode (the first is the total).
    fn loss(&self, net: &Net, batch: &Batch) -> Result<LossParts>;

    /// The figure evaluated at epoch ends.
    fn metric(&self) -> Metric;

    /// Whether the network's classifier `fc` is trained (its test accuracy is then logged at
    /// epoch ends too).
    fn trains_classifier(&self) -> bool;
}

/// The view of a supervised teacher: random resized crop (scale 0.6–1) or random crop with
/// `padding` pixels of zero padding, then horizontal flip.
pub fn supervised_views(
    size: usize,
    augmentation: TeacherAugment,
    padding: usize,
) -> Result<augment::MultiView> {
    let p = match augmentation {
        TeacherAugment::ResizedCrop => augment::presets::supervised(size)?,
        TeacherAugment::CropFlip => augment::presets::crop_flip(size, padding)?,
    };
    Ok(augment::MultiView::repeat(p, 1)?)
}

/// Two SimCLR views: the CIFAR preset at 64 pixels and below, the ImageNet one (with blur) above.
pub fn simclr_views(size: usize) -> Result<augment::MultiView> {
    let p = if size > 64 {
        augment::presets::simclr_imagenet(size)?
    } else {
        augment::presets::simclr_cifar(size)?
    };
    Ok(augment::MultiView::repeat(
        p.with_normalize(augment::presets::CIFAR_MEAN, augment::presets::CIFAR_STD)?,
        2,
    )?)
}

/// Cross-entropy with label smoothing ε, as `torch.nn.functional.cross_entropy(label_smoothing=ε)`:
/// `(1 − ε)·NLL + ε·mean_c(−log p_c)`, averaged over the batch.
///
/// # Shapes
/// - `logits`: `(N, C)`, `labels`: `(N,)` `u32`
pub fn cross_entropy_smoothed(logits: &Tensor, labels: &Tensor, eps: f64) -> Result<Tensor> {
    let log_p = candle_nn::ops::log_softmax(logits, candle_core::D::Minus1)?;
    let nll = candle_nn::loss::nll(&log_p, labels)?;
    if eps == 0.0 {
        return Ok(nll);
    }
    let uniform = log_p.mean(candle_core::D::Minus1)?.mean_all()?.neg()?;
    Ok(((nll * (1.0 - eps))? + (uniform * eps)?)?)
}

/// The views of a batch side by side, `(V·B, 3, H, W)`, and the labels repeated per view.
fn stacked(batch: &Batch) -> Result<(Tensor, Tensor)> {
    if batch.views.len() == 1 {
        return Ok((batch.views[0].clone(), batch.labels.clone()));
    }
    let labels = vec![&batch.labels; batch.views.len()];
    Ok((Tensor::cat(&batch.views, 0)?, Tensor::cat(&labels, 0)?))
}

/// Cross-entropy on the labels of every view (see the module docs).
pub struct Supervised {
    views: augment::MultiView,
    label_smoothing: f64,
    metric: Metric,
}

impl Supervised {
    /// Cross-entropy with label smoothing `label_smoothing` over `views`, evaluated by `metric`
    /// (a teacher by its test accuracy; the students of a study all by kNN accuracy).
    pub fn new(views: augment::MultiView, label_smoothing: f64, metric: Metric) -> Self {
        Self {
            views,
            label_smoothing,
            metric,
        }
    }
}

impl Objective for Supervised {
    fn views(&self) -> &augment::MultiView {
        &self.views
    }

    fn needs_projection(&self) -> bool {
        false
    }

    fn loss(&self, net: &Net, batch: &Batch) -> Result<LossParts> {
        let (xs, labels) = stacked(batch)?;
        let (f, _) = net.forward(&xs, true)?;
        Ok(vec![(
            "cross_entropy",
            cross_entropy_smoothed(&f.logits, &labels, self.label_smoothing)?,
        )])
    }

    fn metric(&self) -> Metric {
        self.metric
    }

    fn trains_classifier(&self) -> bool {
        true
    }
}

/// Where a distilling student's teacher logits come from.
pub enum Teacher {
    /// The frozen teacher (a [`ResNet::detached`] copy), run in eval mode on the student's views.
    Online(ResNet),
    /// Logits `(N_train, C)` on the un-augmented training images, looked up by image index.
    Fixed(Tensor),
}

impl Teacher {
    /// The teacher's logits for the views `xs` (`(V·B, 3, H, W)`, the views of `indices` side by
    /// side): `(V·B, C)`, detached.
    fn logits(&self, xs: &Tensor, indices: &[usize], views: usize) -> Result<Tensor> {
        Ok(match self {
            Teacher::Online(t) => t.forward_t(xs, false)?.detach(),
            Teacher::Fixed(all) => {
                let idx: Vec<u32> = (0..views)
                    .flat_map(|_| indices.iter().map(|&i| i as u32))
                    .collect();
                let idx = Tensor::from_vec(idx, views * indices.len(), all.device())?;
                all.index_select(&idx, 0)?.to_device(xs.device())?
            }
        })
    }
}

/// SimCLR's NT-Xent on the student's projections of two views plus Hinton KD against a teacher:
/// `(1 − α)·NT-Xent + α·KD·T²` (`losses::SimClrDistillation`); without a teacher (or at α = 0)
/// NT-Xent alone.
pub struct SimClrKd {
    views: augment::MultiView,
    temperature: f64,
    loss: losses::SimClrDistillation,
    teacher: Option<Teacher>,
}

impl SimClrKd {
    /// The combined loss with NT-Xent temperature `temperature`, KD temperature `kd_temperature`
    /// and weight `alpha` on `views` (two views); `teacher` is needed when `alpha > 0`.
    pub fn new(
        views: augment::MultiView,
        temperature: f64,
        kd_temperature: f64,
        alpha: f64,
        teacher: Option<Teacher>,
    ) -> Result<Self> {
        if views.len() != 2 {
            return Err(Error::Config(format!(
                "SimCLR needs two views per image, got {}",
                views.len()
            )));
        }
        let loss = losses::SimClrDistillation::new(losses::SimClrDistillationConfig {
            temperature,
            kd_temperature,
            alpha,
        })?;
        let teacher = if alpha > 0.0 { teacher } else { None };
        if alpha > 0.0 && teacher.is_none() {
            return Err(Error::Config(format!(
                "α = {alpha} needs a teacher (α = 0 is SimCLR alone)"
            )));
        }
        Ok(Self {
            views,
            temperature,
            loss,
            teacher,
        })
    }
}

impl Objective for SimClrKd {
    fn views(&self) -> &augment::MultiView {
        &self.views
    }

    fn needs_projection(&self) -> bool {
        true
    }

    fn loss(&self, net: &Net, batch: &Batch) -> Result<LossParts> {
        let n = batch.views[0].dim(0)?;
        let (xs, _) = stacked(batch)?;
        let (f, z) = net.forward(&xs, true)?;
        let z = z.ok_or_else(|| Error::Config("SimCLR needs a projection head".into()))?;
        let ranks = batch.world.world_size();
        // NT-Xent over the global batch: every rank's `[z_a; z_b]` gathered, this rank's anchors
        // against all of them (the mean over the ranks is NT-Xent of the global batch).
        let contrastive = if ranks > 1 {
            let all = crate::dist::all_gather(&batch.world, &z)?;
            losses::nt_xent_shard(&all, ranks, batch.world.rank(), self.temperature)?
        } else {
            losses::nt_xent(&z.narrow(0, 0, n)?, &z.narrow(0, n, n)?, self.temperature)?
        };
        match &self.teacher {
            Some(t) => {
                let t_logits = t.logits(&xs, &batch.indices, 2)?;
                let l = self.loss.combine(contrastive, &f.logits, &t_logits)?;
                Ok(vec![
                    ("total", l.total),
                    ("contrastive", l.contrastive),
                    ("distillation", l.distillation),
                ])
            }
            None => Ok(vec![
                ("total", contrastive.clone()),
                ("contrastive", contrastive),
            ]),
        }
    }

    fn metric(&self) -> Metric {
        Metric::Knn
    }

    fn trains_classifier(&self) -> bool {
        self.teacher.is_some()
    }
}

/// The teacher phase's objective: supervised cross-entropy or SimCLR (`teacher.method`).
pub fn teacher_objective(cfg: &Config) -> Result<Box<dyn Objective>> {
    let size = cfg.data.image_size;
    Ok(match cfg.teacher.method {
        TeacherMethod::Supervised => Box::new(Supervised::new(
            supervised_views(size, cfg.teacher.augmentation, cfg.teacher.crop_padding)?,
            cfg.teacher.label_smoothing,
            Metric::ClassifierAccuracy,
        )),
        TeacherMethod::Simclr => Box::new(SimClrKd::new(
            simclr_views(size)?,
            cfg.student.temperature,
            cfg.student.kd_temperature,
            0.0,
            None,
        )?),
    })
}

/// The student phase's objective (`student.objective`), distilling from `teacher` where it uses
/// one.
pub fn student_objective(cfg: &Config, teacher: Option<Teacher>) -> Result<Box<dyn Objective>> {
    let s = &cfg.student;
    let views = simclr_views(cfg.data.image_size)?;
    Ok(match s.objective {
        StudentObjective::SimclrKd => Box::new(SimClrKd::new(
            views,
            s.temperature,
            s.kd_temperature,
            s.alpha,
            teacher,
        )?),
        StudentObjective::Supervised => Box::new(Supervised::new(views, 0.0, Metric::Knn)),
    })
}

//! Evaluation: classifier accuracy, weighted kNN on backbone features, and a linear probe.
//!
//! The [`Evaluator`] is the one way the trainer evaluates a network: it extracts the features and
//! logits of a model once ([`Evaluator::features`]), then computes every figure from them.
//! Features are the backbone's pooled features in eval mode on un-augmented (normalised) images.
//! kNN follows lightly and solo-learn: cosine similarity to every training feature, the `k` nearest
//! vote with weight `exp(sim / T)`, the class with the largest total wins (k = 200, T = 0.1 by default).
//! The linear probe trains `fc` on the frozen, standardised training features (SGD, momentum 0.9,
//! cosine schedule, batch 256) and reports test accuracy.

use candle_core::{DType, Device, Tensor, Var, D};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use serde::{Deserialize, Serialize};

use crate::config::{EvalConfig, OptimConfig, OptimizerKind, ScheduleKind};
use crate::data::{Dataset, Split};
use crate::engine::step::{descend, StepAt};
use crate::net::Net;
use crate::objective::Metric;
use crate::optim::{Optimizer, Param};
use crate::schedule::learning_rate;
use crate::Result;

/// Pooled features and logits of every image of a set.
#[derive(Debug, Clone)]
pub struct Extracted {
    /// `(N, feature_dim)` row-major.
    pub features: Vec<f32>,
    /// Feature width.
    pub dim: usize,
    /// `(N, num_classes)` row-major.
    pub logits: Vec<f32>,
    /// Number of classes.
    pub classes: usize,
}

/// Runs `net` in eval mode over `ds` (normalised with `pipeline`, no augmentation); with
/// `tta_flip`, each image's features and logits are the mean of its own and of its horizontal
/// mirror's, `(f(x) + f(flip(x))) / 2`.
pub fn extract(
    net: &Net,
    ds: &Dataset,
    pipeline: &augment::Pipeline,
    device: &Device,
    batch: usize,
    tta_flip: bool,
) -> Result<Extracted> {
    let mut features = Vec::new();
    let mut logits = Vec::new();
    let (mut dim, mut classes) = (net.backbone().feature_dim(), net.num_classes);
    // A frozen copy: no autograd graph, and on CPU each batch norm applied in its convolution's
    // epilogue (the same values as the training network's eval mode).
    let backbone = net.backbone().detached()?;
    let indices: Vec<usize> = (0..ds.len()).collect();
    for chunk in indices.chunks(batch.max(1)) {
        let xs = pipeline
            .apply_batch(&ds.images, (ds.height, ds.width), chunk, 0, 0, 0)?
            .to_device(device)?;
        let f = backbone.forward_features(&xs, false)?;
        let (mut pooled, mut out) = (f.pooled, f.logits);
        if tta_flip {
            let g = backbone.forward_features(&xs.flip(&[3])?, false)?;
            pooled = ((pooled + g.pooled)? * 0.5)?;
            out = ((out + g.logits)? * 0.5)?;
        }
        dim = pooled.dim(1)?;
        classes = out.dim(1)?;
        features.extend(
            pooled
                .to_dtype(DType::F32)?
                .flatten_all()?
                .to_vec1::<f32>()?,
        );
        logits.extend(out.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?);
    }
    Ok(Extracted {
        features,
        dim,
        logits,
        classes,
    })
}

/// Share of rows whose arg-max equals the label.
pub fn accuracy(logits: &[f32], classes: usize, labels: &[u32]) -> f64 {
    if labels.is_empty() || classes == 0 {
        return 0.0;
    }
    let correct = logits
        .chunks(classes)
        .zip(labels)
        .filter(|(row, &l)| argmax(row) == l as usize)
        .count();
    correct as f64 / labels.len() as f64
}

fn argmax(row: &[f32]) -> usize {
    let mut best = 0;
    for (i, &v) in row.iter().enumerate() {
        if v > row[best] {
            best = i;
        }
    }
    best
}

fn l2_normalise(xs: &[f32], dim: usize) -> Vec<f32> {
    let mut out = xs.to_vec();
    for row in out.chunks_mut(dim) {
        let n = row.iter().map(|v| v * v).sum::<f32>().sqrt().max(1e-12);
        row.iter_mut().for_each(|v| *v /= n);
    }
    out
}

/// Weighted kNN accuracy (see the module docs).
#[allow(clippy::too_many_arguments)]
pub fn knn_accuracy(
    train: &[f32],
    train_labels: &[u32],
    test: &[f32],
    test_labels: &[u32],
    dim: usize,
    num_classes: usize,
    k: usize,
    temperature: f64,
) -> Result<f64> {
    let n_train = train_labels.len();
    if n_train == 0 || test_labels.is_empty() {
        return Ok(0.0);
    }
    let k = k.min(n_train);
    let train_t = Tensor::from_vec(l2_normalise(train, dim), (n_train, dim), &Device::Cpu)?;
    let test_n = l2_normalise(test, dim);
    let mut correct = 0usize;
    let chunk = 256;
    for (c, rows) in test_n.chunks(chunk * dim).enumerate() {
        let m = rows.len() / dim;
        let q = Tensor::from_slice(rows, (m, dim), &Device::Cpu)?;
        let sims = q.matmul(&train_t.t()?)?.to_vec2::<f32>()?;
        for (r, sim) in sims.iter().enumerate() {
            let mut idx: Vec<usize> = (0..n_train).collect();
            if k < n_train {
                idx.select_nth_unstable_by(k - 1, |&a, &b| sim[b].total_cmp(&sim[a]));
            }
            let mut votes = vec![0f64; num_classes];
            for &j in &idx[..k] {
                votes[train_labels[j] as usize] += (sim[j] as f64 / temperature).exp();
            }
            let pred = votes
                .iter()
                .enumerate()
                .fold(0, |best, (i, &v)| if v > votes[best] { i } else { best });
            if pred == test_labels[c * chunk + r] as usize {
                correct += 1;
            }
        }
    }
    Ok(correct as f64 / test_labels.len() as f64)
}

/// The weights of a linear classifier fitted on features.
#[derive(Debug, Clone)]
pub struct LinearProbe {
    /// Test accuracy.
    pub accuracy: f64,
    /// `(classes, dim)`, for raw (un-standardised) features.
    pub weight: Tensor,
    /// `(classes,)`.
    pub bias: Tensor,
}

/// Fits a linear classifier on `train` features and measures it on `test` (see the module docs).
#[allow(clippy::too_many_arguments)]
pub fn linear_probe(
    train: &[f32],
    train_labels: &[u32],
    test: &[f32],
    test_labels: &[u32],
    dim: usize,
    num_classes: usize,
    epochs: usize,
    lr: f64,
    seed: u64,
) -> Result<LinearProbe> {
    let dev = Device::Cpu;
    let n = train_labels.len();
    // Standardise with the training statistics.
    let x = Tensor::from_slice(train, (n, dim), &dev)?;
    let mean = x.mean(0)?;
    let std = (x.broadcast_sub(&mean)?.sqr()?.mean(0)? + 1e-6)?.sqrt()?;
    let xs = x.broadcast_sub(&mean)?.broadcast_div(&std)?;
    let ys = Tensor::from_slice(train_labels, n, &dev)?;
    let w = Var::zeros((num_classes, dim), DType::F32, &dev)?;
    let b = Var::zeros(num_classes, DType::F32, &dev)?;
    let batch = 256.min(n.max(1));
    let steps_per_epoch = n.div_ceil(batch);
    // SGD with momentum 0.9, no weight decay, cosine from `lr` to 0 over every step.
    let cfg = OptimConfig {
        epochs,
        batch_size: batch,
        lr,
        optimizer: OptimizerKind::Sgd,
        momentum: 0.9,
        nesterov: false,
        weight_decay: 0.0,
        schedule: ScheduleKind::Cosine,
        warmup_epochs: 0.0,
        ..OptimConfig::default()
    };
    let params = [("fc.weight", &w), ("fc.bias", &b)]
        .into_iter()
        .map(|(name, var)| Param {
            name: name.into(),
            var: var.clone(),
            decay: false,
        })
        .collect();
    let mut optim = Optimizer::new(params, &cfg);
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut order: Vec<u32> = (0..n as u32).collect();
    for epoch in 0..epochs {
        order.shuffle(&mut rng);
        for chunk in order.chunks(batch) {
            let idx = Tensor::from_slice(chunk, chunk.len(), &dev)?;
            let xb = xs.index_select(&idx, 0)?;
            let yb = ys.index_select(&idx, 0)?;
            let logits = xb.matmul(&w.t()?)?.broadcast_add(&b)?;
            let loss = candle_nn::loss::cross_entropy(&logits, &yb)?;
            let lr_t = learning_rate(&cfg, optim.steps(), steps_per_epoch);
            let at = StepAt {
                phase: "linear probe",
                epoch,
            };
            descend(&loss, &mut optim, lr_t, 0.0, at)?;
        }
    }
    // Fold the standardisation into the weights: W' = W / std, b' = b - W' · mean.
    let weight = w.as_tensor().broadcast_div(&std.unsqueeze(0)?)?;
    let bias = (b.as_tensor() - weight.matmul(&mean.unsqueeze(1)?)?.squeeze(1)?)?;
    let m = test_labels.len();
    let xt = Tensor::from_slice(test, (m, dim), &dev)?;
    let logits = xt.matmul(&weight.t()?)?.broadcast_add(&bias)?;
    let preds = logits.argmax(D::Minus1)?.to_vec1::<u32>()?;
    let correct = preds
        .iter()
        .zip(test_labels)
        .filter(|(p, l)| p == l)
        .count();
    Ok(LinearProbe {
        accuracy: correct as f64 / m.max(1) as f64,
        weight,
        bias,
    })
}

/// Every figure of an evaluation.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct EvalReport {
    /// Accuracy of the network's own `fc` (None when it was not trained).
    pub classifier_accuracy: Option<f64>,
    /// Weighted kNN accuracy on backbone features.
    pub knn_accuracy: f64,
    /// Linear-probe accuracy on the frozen backbone (None when skipped).
    pub linear_probe_accuracy: Option<f64>,
    /// Test images.
    pub test_images: usize,
}

/// Images per forward pass of an evaluation.
const EVAL_BATCH: usize = 256;

/// A model's features and logits on the test set and, when asked for, the training set: extracted
/// once, every figure computed from them.
#[derive(Debug, Clone)]
pub struct ModelFeatures {
    /// On the training images (the kNN bank and the linear probe's training set).
    pub train: Option<Extracted>,
    /// On the test images.
    pub test: Extracted,
}

/// Evaluates networks on a [`Split`] with the settings of an [`EvalConfig`].
pub struct Evaluator<'a> {
    split: &'a Split,
    cfg: &'a EvalConfig,
    seed: u64,
    device: Device,
    pipeline: augment::Pipeline,
}

impl<'a> Evaluator<'a> {
    /// An evaluator at image size `image_size` (images resized and normalised, no augmentation);
    /// `seed` draws the linear probe's batch order.
    pub fn new(
        split: &'a Split,
        cfg: &'a EvalConfig,
        image_size: usize,
        seed: u64,
        device: &Device,
    ) -> Result<Self> {
        Ok(Self {
            split,
            cfg,
            seed,
            device: device.clone(),
            pipeline: augment::presets::eval(image_size)?,
        })
    }

    /// The features and logits of `net` on the test set and, with `train`, the training set.
    pub fn features(&self, net: &Net, train: bool) -> Result<ModelFeatures> {
        let run = |ds: &Dataset| {
            extract(
                net,
                ds,
                &self.pipeline,
                &self.device,
                EVAL_BATCH,
                self.cfg.tta_flip,
            )
        };
        let train = if train {
            Some(run(&self.split.train)?)
        } else {
            None
        };
        Ok(ModelFeatures {
            train,
            test: run(&self.split.test)?,
        })
    }

    fn train_features<'f>(&self, f: &'f ModelFeatures) -> Result<&'f Extracted> {
        f.train.as_ref().ok_or_else(|| {
            crate::Error::Config(
                "evaluation: this figure needs the training set's features (extract them with train = true)"
                    .into(),
            )
        })
    }

    /// Test accuracy of the network's own classifier.
    pub fn classifier_accuracy(&self, f: &ModelFeatures) -> f64 {
        accuracy(&f.test.logits, f.test.classes, &self.split.test.labels)
    }

    /// Accuracy of the classifier on the training images.
    pub fn train_accuracy(&self, f: &ModelFeatures) -> Result<f64> {
        let tr = self.train_features(f)?;
        Ok(accuracy(&tr.logits, tr.classes, &self.split.train.labels))
    }

    /// Weighted kNN accuracy (k and T from the configuration), the training set as memory bank.
    pub fn knn_accuracy(&self, f: &ModelFeatures) -> Result<f64> {
        let tr = self.train_features(f)?;
        knn_accuracy(
            &tr.features,
            &self.split.train.labels,
            &f.test.features,
            &self.split.test.labels,
            tr.dim,
            self.split.train.num_classes(),
            self.cfg.knn_k,
            self.cfg.knn_temperature,
        )
    }

    /// A linear classifier fitted on the frozen training features, measured on the test set.
    pub fn linear_probe(&self, f: &ModelFeatures) -> Result<LinearProbe> {
        let tr = self.train_features(f)?;
        linear_probe(
            &tr.features,
            &self.split.train.labels,
            &f.test.features,
            &self.split.test.labels,
            tr.dim,
            self.split.train.num_classes(),
            self.cfg.linear_epochs,
            self.cfg.linear_lr,
            self.seed,
        )
    }

    /// The engine's epoch figures of `net` from one extraction (only the test set's for the
    /// classifier accuracy): `metric` first, then the classifier's test accuracy when `classifier`
    /// (and it is not the metric already).
    pub fn epoch_figures(
        &self,
        net: &Net,
        metric: Metric,
        classifier: bool,
    ) -> Result<Vec<(&'static str, f64)>> {
        let f = self.features(net, metric == Metric::Knn)?;
        let mut out = vec![(
            metric.key(),
            match metric {
                Metric::ClassifierAccuracy => self.classifier_accuracy(&f),
                Metric::Knn => self.knn_accuracy(&f)?,
            },
        )];
        if classifier && metric != Metric::ClassifierAccuracy {
            out.push((
                Metric::ClassifierAccuracy.key(),
                self.classifier_accuracy(&f),
            ));
        }
        Ok(out)
    }

    /// Every figure from features already extracted: the classifier's accuracy when it was trained
    /// (and has the data's classes), kNN, and the linear probe when `linear`.
    pub fn report_from(
        &self,
        f: &ModelFeatures,
        classifier_trained: bool,
        linear: bool,
    ) -> Result<EvalReport> {
        let classes = self.split.train.num_classes();
        let classifier_accuracy =
            (classifier_trained && f.test.classes == classes).then(|| self.classifier_accuracy(f));
        let linear_probe_accuracy = if linear {
            Some(self.linear_probe(f)?.accuracy)
        } else {
            None
        };
        Ok(EvalReport {
            classifier_accuracy,
            knn_accuracy: self.knn_accuracy(f)?,
            linear_probe_accuracy,
            test_images: self.split.test.len(),
        })
    }

    /// Every figure of `net` from one feature extraction (see [`Evaluator::report_from`]).
    pub fn report(&self, net: &Net, classifier_trained: bool, linear: bool) -> Result<EvalReport> {
        self.report_from(&self.features(net, true)?, classifier_trained, linear)
    }
}

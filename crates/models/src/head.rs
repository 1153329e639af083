//! Heads on top of a backbone's pooled features: SimCLR's projection MLP and a linear
//! classifier.

use candle_core::{ModuleT, Result, Tensor};
use candle_nn::{Linear, VarBuilder};

use crate::layers::{linear, linear_forward, BatchNorm2d};

/// The shape of a [`ProjectionHead`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ProjectionHeadConfig {
    /// Width of the input features (the backbone's `feature_dim`).
    pub input_dim: usize,
    /// Width of every hidden layer.
    pub hidden_dim: usize,
    /// Width of the projection `z`.
    pub output_dim: usize,
    /// Number of linear layers (≥ 1); SimCLR v1 uses 2, SimCLR v2 3.
    pub num_layers: usize,
    /// Batch norm after every hidden linear layer (SimCLR v2, solo-learn); none after the last.
    pub batch_norm: bool,
}

impl Default for ProjectionHeadConfig {
    /// SimCLR v1 on a ResNet-50: 2048 → 2048 → ReLU → 128, no batch norm.
    fn default() -> Self {
        Self {
            input_dim: 2048,
            hidden_dim: 2048,
            output_dim: 128,
            num_layers: 2,
            batch_norm: false,
        }
    }
}

/// SimCLR's projection head g(·) (Chen et al. 2020, "A Simple Framework for Contrastive
/// Learning of Visual Representations"): an MLP
/// `Linear → [BatchNorm] → ReLU → … → Linear`, with `num_layers` linear layers.
///
/// Parameter paths are those of the equivalent PyTorch `nn.Sequential`
/// (`0.weight`, `0.bias`, `1.weight`, `1.running_mean`, … with the ReLU taking an index), so
/// a solo-learn `projector` state dict loads under its prefix.
///
/// # Shapes
/// - `xs`: `(N, input_dim)`
/// - returns `(N, output_dim)`
///
/// ```
/// use candle_core::{DType, Device, ModuleT, Tensor};
/// let cfg = models::ProjectionHeadConfig { input_dim: 64, hidden_dim: 32, output_dim: 16, num_layers: 2, batch_norm: true };
/// let varmap = candle_nn::VarMap::new();
/// let vb = models::init::seeded_var_builder(&varmap, 0, DType::F32, &Device::Cpu);
/// let head = models::ProjectionHead::new(&cfg, vb.pp("projector"))?;
/// let zs = head.forward_t(&Tensor::ones((4, 64), DType::F32, &Device::Cpu)?, true)?;
/// assert_eq!(zs.dims(), [4, 16]);
/// # Ok::<(), candle_core::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct ProjectionHead {
    hidden: Vec<(Linear, Option<BatchNorm2d>)>,
    last: Linear,
    input_dim: usize,
}

impl ProjectionHead {
    /// Builds the head, taking (or creating) its variables from `vb`.
    pub fn new(cfg: &ProjectionHeadConfig, vb: VarBuilder) -> Result<Self> {
        if cfg.num_layers == 0 || cfg.input_dim == 0 || cfg.output_dim == 0 {
            candle_core::bail!(
                "ProjectionHead: num_layers, input_dim and output_dim must be >= 1, got {cfg:?}"
            )
        }
        if cfg.num_layers > 1 && cfg.hidden_dim == 0 {
            candle_core::bail!("ProjectionHead: hidden_dim must be >= 1, got {cfg:?}")
        }
        let mut idx = 0;
        let mut dim = cfg.input_dim;
        let mut hidden = Vec::with_capacity(cfg.num_layers - 1);
        for _ in 1..cfg.num_layers {
            let lin = linear(dim, cfg.hidden_dim, vb.pp(idx))?;
            idx += 1;
            let bn = if cfg.batch_norm {
                let bn = BatchNorm2d::new(cfg.hidden_dim, 1e-5, 0.1, false, false, vb.pp(idx))?;
                idx += 1;
                Some(bn)
            } else {
                None
            };
            idx += 1; // the ReLU
            hidden.push((lin, bn));
            dim = cfg.hidden_dim;
        }
        let last = linear(dim, cfg.output_dim, vb.pp(idx))?;
        Ok(Self {
            hidden,
            last,
            input_dim: cfg.input_dim,
        })
    }
}

impl ModuleT for ProjectionHead {
    fn forward_t(&self, xs: &Tensor, train: bool) -> Result<Tensor> {
        if xs.rank() != 2 || xs.dim(1)? != self.input_dim {
            candle_core::bail!(
                "ProjectionHead: input must be (N, {}), got {:?}",
                self.input_dim,
                xs.dims()
            )
        }
        let mut ys = xs.clone();
        for (lin, bn) in &self.hidden {
            ys = linear_forward(lin, &ys)?;
            if let Some(bn) = bn {
                ys = bn.forward_t(&ys, train)?;
            }
            ys = ys.relu()?;
        }
        linear_forward(&self.last, &ys)
    }
}

/// A linear classifier `Linear(input_dim, num_classes)` with PyTorch's default
/// initialisation, e.g. for the linear evaluation of a self-supervised backbone.
///
/// Parameters `weight` `(num_classes, input_dim)` and `bias` `(num_classes)` under `vb`.
///
/// # Shapes
/// - input `(N, input_dim)`, output `(N, num_classes)` (**logits**)
pub fn linear_classifier(input_dim: usize, num_classes: usize, vb: VarBuilder) -> Result<Linear> {
    if input_dim == 0 || num_classes == 0 {
        candle_core::bail!(
            "linear_classifier: input_dim {input_dim} and num_classes {num_classes} must be >= 1"
        )
    }
    linear(input_dim, num_classes, vb)
}

//! `ResNet` (He et al. 2016) with basic and bottleneck blocks, ImageNet and CIFAR stems,
//! torchvision parameter paths, and every stage's features from one forward pass.

use candle_core::{ModuleT, Result, Tensor};
use candle_nn::{Linear, VarBuilder};

use crate::config::{BlockSpec, ConvBnSpec, ResNetConfig, Stem};
use crate::layers::{linear, linear_detach, linear_forward, BatchNorm2d, Conv2d};
use crate::maxpool::MaxPool2d;

/// Everything one forward pass of a [`ResNet`] computes, for the distillation losses
/// (FitNet and AT use `feature_maps`, CRD and RKD `pooled`, KD `logits`).
#[derive(Debug, Clone)]
pub struct Features {
    /// Output of the stem (after ReLU and, for the ImageNet stem, the max-pool):
    /// `(N, stem_width, H', W')`.
    pub stem: Tensor,
    /// Output of every stage `layer1`, `layer2`, … (after its last ReLU):
    /// `(N, widths[i] * expansion, H_i, W_i)`.
    pub feature_maps: Vec<Tensor>,
    /// Global average of the last feature map: `(N, feature_dim)`.
    pub pooled: Tensor,
    /// `fc(pooled)`: `(N, num_classes)`; equal to `pooled` when `num_classes == 0`.
    pub logits: Tensor,
}

/// A residual block; `downsample` (1×1 strided conv + BN) when the shape changes.
#[derive(Debug, Clone)]
struct Block {
    convs: Vec<Conv2d>,
    bns: Vec<BatchNorm2d>,
    downsample: Option<(Conv2d, BatchNorm2d)>,
}

impl Block {
    fn new(cfg: &ResNetConfig, spec: &BlockSpec, vb: &VarBuilder) -> Result<Self> {
        let last = spec.convs.len() - 1;
        let mut convs = Vec::with_capacity(spec.convs.len());
        let mut bns = Vec::with_capacity(spec.convs.len());
        for (i, c) in spec.convs.iter().enumerate() {
            convs.push(Conv2d::from_spec(c, vb)?);
            bns.push(batch_norm(cfg, c, i == last && cfg.zero_init_residual, vb)?);
        }
        let downsample = match &spec.downsample {
            Some(d) => Some((Conv2d::from_spec(d, vb)?, batch_norm(cfg, d, false, vb)?)),
            None => None,
        };
        Ok(Self {
            convs,
            bns,
            downsample,
        })
    }

    fn num_parameters(&self) -> usize {
        let ds = self
            .downsample
            .as_ref()
            .map_or(0, |(c, b)| c.num_parameters() + b.num_parameters());
        self.convs.iter().map(Conv2d::num_parameters).sum::<usize>()
            + self
                .bns
                .iter()
                .map(BatchNorm2d::num_parameters)
                .sum::<usize>()
            + ds
    }

    fn detach(&self) -> Result<Self> {
        Ok(Self {
            convs: self.convs.iter().map(Conv2d::detach).collect(),
            bns: self
                .bns
                .iter()
                .map(BatchNorm2d::detach)
                .collect::<Result<_>>()?,
            downsample: match &self.downsample {
                Some((c, b)) => Some((c.detach(), b.detach()?)),
                None => None,
            },
        })
    }

    fn forward_t(&self, xs: &Tensor, train: bool) -> Result<Tensor> {
        // Each conv + bn (+ residual, + ReLU) is one op.
        let identity = match &self.downsample {
            Some((conv, bn)) => conv.forward_bn(xs, bn, None, train)?,
            None => xs.clone(),
        };
        let last = self.convs.len() - 1;
        let mut ys = xs.clone();
        for (i, (conv, bn)) in self.convs.iter().zip(&self.bns).enumerate() {
            ys = conv.forward_bn(&ys, bn, (i == last).then_some(&identity), train)?;
        }
        Ok(ys)
    }
}

/// The batch norm of `spec` (`zero_weight`: `zero_init_residual`'s zero scale).
fn batch_norm(
    cfg: &ResNetConfig,
    spec: &ConvBnSpec,
    zero_weight: bool,
    vb: &VarBuilder,
) -> Result<BatchNorm2d> {
    BatchNorm2d::new(
        spec.c_out,
        cfg.bn_eps,
        cfg.bn_momentum,
        spec.relu,
        zero_weight,
        vb.pp(&spec.bn),
    )
}

/// A ResNet (He et al. 2016, "Deep Residual Learning for Image Recognition") as torchvision
/// and RepDistiller build it.
///
/// Parameter paths are torchvision's `state_dict` keys (`conv1.weight`, `bn1.running_mean`,
/// `layer1.0.conv1.weight`, `layer2.0.downsample.0.weight`, `fc.weight`, …), which are also
/// RepDistiller's, so a checkpoint saved with
/// `safetensors.torch.save_file(model.state_dict(), path)` loads through
/// [`VarBuilder::from_mmaped_safetensors`] with no renaming; `num_batches_tracked` is
/// ignored. A checkpoint of another architecture fails to load with an error naming the
/// first missing or mis-shaped tensor.
///
/// In training mode batch norms use the batch statistics and update their running ones;
/// with a [`candle_nn::VarMap`]-backed `VarBuilder` those live in the `VarMap` and are
/// saved with the weights. Build with [`crate::init::seeded_var_builder`] for a seeded,
/// bit-reproducible torchvision initialisation.
///
/// # Shapes
/// - `xs`: `(N, 3, H, W)`, e.g. `(N, 3, 224, 224)` for the ImageNet stem, `(N, 3, 32, 32)`
///   for the CIFAR stem (any size works: the pooling is global)
/// - [`ModuleT::forward_t`] returns the logits `(N, num_classes)`
///
/// ```
/// use candle_core::{DType, Device, ModuleT, Tensor};
/// let cfg = models::ResNetConfig::resnet8(10);
/// let varmap = candle_nn::VarMap::new();
/// let vb = models::init::seeded_var_builder(&varmap, 0, DType::F32, &Device::Cpu);
/// let net = models::ResNet::new(&cfg, vb)?;
/// let xs = Tensor::zeros((2, 3, 32, 32), DType::F32, &Device::Cpu)?;
/// assert_eq!(net.forward_t(&xs, false)?.dims(), [2, 10]);
/// let f = net.forward_features(&xs, false)?;
/// assert_eq!(f.feature_maps.len(), 3);
/// assert_eq!(f.pooled.dims(), [2, net.feature_dim()]);
/// # Ok::<(), candle_core::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct ResNet {
    conv1: Conv2d,
    bn1: BatchNorm2d,
    maxpool: Option<MaxPool2d>,
    layers: Vec<Vec<Block>>,
    fc: Option<Linear>,
    feature_dim: usize,
    num_classes: usize,
    num_parameters: usize,
}

impl ResNet {
    /// Builds the network of `cfg`, taking (or creating) its variables from `vb`.
    pub fn new(cfg: &ResNetConfig, vb: VarBuilder) -> Result<Self> {
        cfg.validate()?;
        let stem = cfg.stem_conv();
        let conv1 = Conv2d::from_spec(&stem, &vb)?;
        let bn1 = batch_norm(cfg, &stem, false, &vb)?;
        let maxpool = match cfg.stem {
            Stem::ImageNet => Some(MaxPool2d::new(3, 2, 1)?),
            Stem::Cifar => None,
        };
        let layers = cfg
            .blocks()
            .iter()
            .map(|stage| stage.iter().map(|b| Block::new(cfg, b, &vb)).collect())
            .collect::<Result<Vec<Vec<Block>>>>()?;
        let c_in = cfg.feature_dim();
        let fc = if cfg.num_classes > 0 {
            Some(linear(c_in, cfg.num_classes, vb.pp("fc"))?)
        } else {
            None
        };
        let num_parameters = conv1.num_parameters()
            + bn1.num_parameters()
            + layers
                .iter()
                .flatten()
                .map(Block::num_parameters)
                .sum::<usize>()
            + fc.as_ref().map_or(0, |fc| {
                fc.weight().elem_count() + fc.bias().map_or(0, Tensor::elem_count)
            });
        Ok(Self {
            conv1,
            bn1,
            maxpool,
            layers,
            fc,
            feature_dim: c_in,
            num_classes: cfg.num_classes,
            num_parameters,
        })
    }

    /// A frozen copy of the network for inference, as `model.eval()` under `torch.no_grad()`:
    /// its forward pass records no graph and, in evaluation mode on CPU, applies every batch
    /// norm in its convolution's epilogue ([`crate::ops::conv2d_bn_eval`]), e.g. for a
    /// distillation teacher.
    ///
    /// The copy shares the storage of every weight and running statistic with the original, so
    /// it sees later updates of the original's variables (the weights as detached tensors, the
    /// batch-norm statistics as the same variables).
    ///
    /// ```
    /// use candle_core::{DType, Device, ModuleT, Tensor};
    /// let varmap = candle_nn::VarMap::new();
    /// let vb = models::init::seeded_var_builder(&varmap, 0, DType::F32, &Device::Cpu);
    /// let net = models::ResNet::new(&models::ResNetConfig::resnet8(10), vb)?;
    /// let frozen = net.detached()?;
    /// let xs = Tensor::ones((2, 3, 32, 32), DType::F32, &Device::Cpu)?;
    /// let diff = (frozen.forward_t(&xs, false)? - net.forward_t(&xs, false)?)?
    ///     .abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()?;
    /// assert!(diff < 1e-4);
    /// # Ok::<(), candle_core::Error>(())
    /// ```
    pub fn detached(&self) -> Result<Self> {
        Ok(Self {
            conv1: self.conv1.detach(),
            bn1: self.bn1.detach()?,
            maxpool: self.maxpool,
            layers: self
                .layers
                .iter()
                .map(|l| l.iter().map(Block::detach).collect::<Result<_>>())
                .collect::<Result<_>>()?,
            fc: self.fc.as_ref().map(linear_detach),
            ..*self
        })
    }

    /// Channels of the pooled features (512 for resnet18, 2048 for resnet50).
    pub fn feature_dim(&self) -> usize {
        self.feature_dim
    }

    /// Number of classes of `fc` (`0`: no classifier).
    pub fn num_classes(&self) -> usize {
        self.num_classes
    }

    /// Number of trainable parameters (convolution and linear weights and biases, batch-norm
    /// weights and biases; not the running statistics), as torchvision's
    /// `sum(p.numel() for p in model.parameters())`.
    pub fn num_parameters(&self) -> usize {
        self.num_parameters
    }

    /// Stem, every stage, pooled features and logits, from one forward pass.
    ///
    /// # Shapes
    /// - `xs`: `(N, 3, H, W)`
    /// - returns [`Features`]
    pub fn forward_features(&self, xs: &Tensor, train: bool) -> Result<Features> {
        let dims = xs.dims();
        if dims.len() != 4 || dims[1] != 3 {
            candle_core::bail!("ResNet: input must be (N, 3, H, W), got {dims:?}")
        }
        let mut ys = self.conv1.forward_bn(xs, &self.bn1, None, train)?;
        if let Some(pool) = &self.maxpool {
            ys = pool.forward(&ys)?;
        }
        let stem = ys.clone();
        let mut feature_maps = Vec::with_capacity(self.layers.len());
        for layer in &self.layers {
            for block in layer {
                ys = block.forward_t(&ys, train)?;
            }
            feature_maps.push(ys.clone());
        }
        let pooled = ys.mean((2, 3))?;
        let logits = match &self.fc {
            Some(fc) => linear_forward(fc, &pooled)?,
            None => pooled.clone(),
        };
        Ok(Features {
            stem,
            feature_maps,
            pooled,
            logits,
        })
    }
}

impl ModuleT for ResNet {
    fn forward_t(&self, xs: &Tensor, train: bool) -> Result<Tensor> {
        Ok(self.forward_features(xs, train)?.logits)
    }
}

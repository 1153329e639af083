//! `ResNetConfig`: the architecture of a ResNet (block, depth, widths, stem, classes).

use candle_core::Result;

/// The first layers of a ResNet, before `layer1`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stem {
    /// torchvision's ImageNet stem: `conv1` 7×7 stride 2 padding 3, `bn1`, ReLU, then a
    /// 3×3 stride-2 padding-1 max-pool. A 224×224 image reaches `layer1` at 56×56.
    ImageNet,
    /// The CIFAR stem of lightly, solo-learn and RepDistiller: `conv1` 3×3 stride 1
    /// padding 1, `bn1`, ReLU, no max-pool. A 32×32 image reaches `layer1` at 32×32.
    Cifar,
}

/// The residual block of He et al. 2016 ("Deep Residual Learning for Image Recognition").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockKind {
    /// Two 3×3 convolutions (`conv1`, `conv2`); expansion 1.
    Basic,
    /// 1×1, 3×3 (strided, torchvision's "ResNet v1.5"), 1×1 convolutions
    /// (`conv1`, `conv2`, `conv3`); expansion 4.
    Bottleneck,
}

impl BlockKind {
    /// Output channels of a block divided by its `planes`: 1 for [`BlockKind::Basic`], 4 for
    /// [`BlockKind::Bottleneck`].
    pub fn expansion(self) -> usize {
        match self {
            BlockKind::Basic => 1,
            BlockKind::Bottleneck => 4,
        }
    }
}

/// A bias-free convolution and the batch norm after it, as a ResNet names and shapes them
/// (one entry of [`ResNetConfig::stem_conv`] or [`ResNetConfig::blocks`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConvBnSpec {
    /// Parameter path of the convolution (`conv1`, `layer2.0.conv1`, `layer2.0.downsample.0`);
    /// its weight is `{conv}.weight`, `(c_out, c_in, kernel, kernel)`.
    pub conv: String,
    /// Parameter path of the batch norm (`bn1`, `layer2.0.bn1`, `layer2.0.downsample.1`).
    pub bn: String,
    /// Input channels.
    pub c_in: usize,
    /// Output channels.
    pub c_out: usize,
    /// Square kernel side.
    pub kernel: usize,
    /// Stride (both axes).
    pub stride: usize,
    /// Zero padding (all four sides): `kernel / 2`.
    pub padding: usize,
    /// A ReLU follows the batch norm. `false` for a block's last convolution (its ReLU comes
    /// after the residual add) and for the downsample.
    pub relu: bool,
}

/// One residual block: `relu(bn_last(conv_last(…relu(bn1(conv1(x)))…)) + identity)`, where
/// `identity` is `x`, or `downsample(x)` when there is one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockSpec {
    /// Parameter path of the block (`layer2.0`).
    pub path: String,
    /// Its convolutions in order (two for a basic block, three for a bottleneck).
    pub convs: Vec<ConvBnSpec>,
    /// The 1×1 strided projection of the identity, when the stride or width changes.
    pub downsample: Option<ConvBnSpec>,
}

/// The architecture of a [`crate::ResNet`].
///
/// Build one with a named constructor (`resnet18` … `resnet152` for torchvision's ImageNet
/// ResNets, `resnet8` … `resnet110`, `resnet8x4`, `resnet32x4` for RepDistiller's CIFAR
/// ResNets) or [`ResNetConfig::by_name`], then adjust it with the `with_*` methods.
///
/// ```
/// use models::{ResNetConfig, Stem};
/// let cfg = ResNetConfig::resnet18(100).with_stem(Stem::Cifar);
/// assert_eq!(cfg.feature_dim(), 512);
/// let cfg = ResNetConfig::by_name("resnet8x4", 100)?;
/// assert_eq!(cfg.feature_dim(), 256);
/// # Ok::<(), candle_core::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct ResNetConfig {
    /// The residual block.
    pub block: BlockKind,
    /// Number of blocks in each stage (`layer1`, `layer2`, …); torchvision has 4 stages,
    /// RepDistiller's CIFAR ResNets 3.
    pub layers: Vec<usize>,
    /// `planes` of each stage (output channels are `planes * expansion`). The first stage has
    /// stride 1, every later stage stride 2.
    pub widths: Vec<usize>,
    /// Output channels of the stem convolution `conv1`.
    pub stem_width: usize,
    /// The stem.
    pub stem: Stem,
    /// Number of classes of the linear classifier `fc`; `0` means no classifier: the logits
    /// are then the pooled features (like timm's `num_classes=0`).
    pub num_classes: usize,
    /// Initialise the last batch norm of every block with weight 0 (torchvision's
    /// `zero_init_residual`; Goyal et al. 2017), so each block starts as the identity.
    pub zero_init_residual: bool,
    /// Batch-norm epsilon (PyTorch: `1e-5`).
    pub bn_eps: f64,
    /// Batch-norm momentum of the running statistics (PyTorch: `0.1`):
    /// `running = (1 - momentum) * running + momentum * batch_stat`.
    pub bn_momentum: f64,
}

/// Every name [`ResNetConfig::by_name`] accepts.
pub const RESNET_NAMES: [&str; 14] = [
    "resnet18",
    "resnet34",
    "resnet50",
    "resnet101",
    "resnet152",
    "resnet8",
    "resnet14",
    "resnet20",
    "resnet32",
    "resnet44",
    "resnet56",
    "resnet110",
    "resnet8x4",
    "resnet32x4",
];

impl ResNetConfig {
    fn torchvision(block: BlockKind, layers: [usize; 4], num_classes: usize) -> Self {
        Self {
            block,
            layers: layers.to_vec(),
            widths: vec![64, 128, 256, 512],
            stem_width: 64,
            stem: Stem::ImageNet,
            num_classes,
            zero_init_residual: false,
            bn_eps: 1e-5,
            bn_momentum: 0.1,
        }
    }

    /// RepDistiller's `ResNet(depth, num_filters, 'basicblock')`: `(depth - 2) / 6` basic
    /// blocks per stage, 3 stages, CIFAR stem.
    fn rep_distiller(depth: usize, filters: [usize; 4], num_classes: usize) -> Self {
        let n = (depth - 2) / 6;
        Self {
            block: BlockKind::Basic,
            layers: vec![n; 3],
            widths: filters[1..].to_vec(),
            stem_width: filters[0],
            stem: Stem::Cifar,
            num_classes,
            zero_init_residual: false,
            bn_eps: 1e-5,
            bn_momentum: 0.1,
        }
    }

    /// torchvision's ResNet-18: basic blocks `[2, 2, 2, 2]`, ImageNet stem.
    pub fn resnet18(num_classes: usize) -> Self {
        Self::torchvision(BlockKind::Basic, [2, 2, 2, 2], num_classes)
    }
    /// torchvision's ResNet-34: basic blocks `[3, 4, 6, 3]`, ImageNet stem.
    pub fn resnet34(num_classes: usize) -> Self {
        Self::torchvision(BlockKind::Basic, [3, 4, 6, 3], num_classes)
    }
    /// torchvision's ResNet-50: bottlenecks `[3, 4, 6, 3]`, ImageNet stem.
    pub fn resnet50(num_classes: usize) -> Self {
        Self::torchvision(BlockKind::Bottleneck, [3, 4, 6, 3], num_classes)
    }
    /// torchvision's ResNet-101: bottlenecks `[3, 4, 23, 3]`, ImageNet stem.
    pub fn resnet101(num_classes: usize) -> Self {
        Self::torchvision(BlockKind::Bottleneck, [3, 4, 23, 3], num_classes)
    }
    /// torchvision's ResNet-152: bottlenecks `[3, 8, 36, 3]`, ImageNet stem.
    pub fn resnet152(num_classes: usize) -> Self {
        Self::torchvision(BlockKind::Bottleneck, [3, 8, 36, 3], num_classes)
    }
    /// RepDistiller's `resnet8`: filters `[16, 16, 32, 64]`, 1 block per stage, CIFAR stem.
    pub fn resnet8(num_classes: usize) -> Self {
        Self::rep_distiller(8, [16, 16, 32, 64], num_classes)
    }
    /// RepDistiller's `resnet14`: filters `[16, 16, 32, 64]`, 2 blocks per stage.
    pub fn resnet14(num_classes: usize) -> Self {
        Self::rep_distiller(14, [16, 16, 32, 64], num_classes)
    }
    /// RepDistiller's `resnet20`: filters `[16, 16, 32, 64]`, 3 blocks per stage.
    pub fn resnet20(num_classes: usize) -> Self {
        Self::rep_distiller(20, [16, 16, 32, 64], num_classes)
    }
    /// RepDistiller's `resnet32`: filters `[16, 16, 32, 64]`, 5 blocks per stage.
    pub fn resnet32(num_classes: usize) -> Self {
        Self::rep_distiller(32, [16, 16, 32, 64], num_classes)
    }
    /// RepDistiller's `resnet44`: filters `[16, 16, 32, 64]`, 7 blocks per stage.
    pub fn resnet44(num_classes: usize) -> Self {
        Self::rep_distiller(44, [16, 16, 32, 64], num_classes)
    }
    /// RepDistiller's `resnet56`: filters `[16, 16, 32, 64]`, 9 blocks per stage.
    pub fn resnet56(num_classes: usize) -> Self {
        Self::rep_distiller(56, [16, 16, 32, 64], num_classes)
    }
    /// RepDistiller's `resnet110`: filters `[16, 16, 32, 64]`, 18 blocks per stage.
    pub fn resnet110(num_classes: usize) -> Self {
        Self::rep_distiller(110, [16, 16, 32, 64], num_classes)
    }
    /// RepDistiller's `resnet8x4` (the usual CIFAR-100 KD student): filters
    /// `[32, 64, 128, 256]`, 1 block per stage.
    pub fn resnet8x4(num_classes: usize) -> Self {
        Self::rep_distiller(8, [32, 64, 128, 256], num_classes)
    }
    /// RepDistiller's `resnet32x4` (the usual CIFAR-100 KD teacher): filters
    /// `[32, 64, 128, 256]`, 5 blocks per stage.
    pub fn resnet32x4(num_classes: usize) -> Self {
        Self::rep_distiller(32, [32, 64, 128, 256], num_classes)
    }

    /// The configuration named `name` (one of [`RESNET_NAMES`], e.g. `"resnet18"`,
    /// `"resnet8x4"`), with its default stem.
    ///
    /// Fails, listing the valid names, on any other name.
    pub fn by_name(name: &str, num_classes: usize) -> Result<Self> {
        Ok(match name {
            "resnet18" => Self::resnet18(num_classes),
            "resnet34" => Self::resnet34(num_classes),
            "resnet50" => Self::resnet50(num_classes),
            "resnet101" => Self::resnet101(num_classes),
            "resnet152" => Self::resnet152(num_classes),
            "resnet8" => Self::resnet8(num_classes),
            "resnet14" => Self::resnet14(num_classes),
            "resnet20" => Self::resnet20(num_classes),
            "resnet32" => Self::resnet32(num_classes),
            "resnet44" => Self::resnet44(num_classes),
            "resnet56" => Self::resnet56(num_classes),
            "resnet110" => Self::resnet110(num_classes),
            "resnet8x4" => Self::resnet8x4(num_classes),
            "resnet32x4" => Self::resnet32x4(num_classes),
            _ => candle_core::bail!(
                "unknown ResNet {name:?}; valid names: {}",
                RESNET_NAMES.join(", ")
            ),
        })
    }

    /// The same architecture with another stem.
    pub fn with_stem(mut self, stem: Stem) -> Self {
        self.stem = stem;
        self
    }

    /// The same architecture with another number of classes (`0`: no classifier).
    pub fn with_num_classes(mut self, num_classes: usize) -> Self {
        self.num_classes = num_classes;
        self
    }

    /// The same architecture with torchvision's `zero_init_residual` on or off.
    pub fn with_zero_init_residual(mut self, zero_init_residual: bool) -> Self {
        self.zero_init_residual = zero_init_residual;
        self
    }

    /// Channels of the pooled features: `widths.last() * expansion` (512 for resnet18, 2048
    /// for resnet50, 64 for resnet8, 256 for resnet8x4).
    pub fn feature_dim(&self) -> usize {
        self.widths.last().copied().unwrap_or(self.stem_width) * self.block.expansion()
    }

    /// The stem convolution `conv1` and its batch norm `bn1` (followed by a ReLU and, for the
    /// ImageNet stem, the 3×3 stride-2 padding-1 max-pool).
    pub fn stem_conv(&self) -> ConvBnSpec {
        let (kernel, stride, padding) = match self.stem {
            Stem::ImageNet => (7, 2, 3),
            Stem::Cifar => (3, 1, 1),
        };
        ConvBnSpec {
            conv: "conv1".into(),
            bn: "bn1".into(),
            c_in: 3,
            c_out: self.stem_width,
            kernel,
            stride,
            padding,
            relu: true,
        }
    }

    /// Every residual block, stage by stage (`layer1`, `layer2`, …), with its convolutions: the
    /// one description of the network's layout that [`crate::ResNet::new`] builds from and that
    /// an exporter can walk.
    ///
    /// The first stage has stride 1, every later stage stride 2 in its first block (on the 3×3
    /// convolution: `conv1` of a basic block, `conv2` of a bottleneck, torchvision's "v1.5"); a
    /// block whose stride or width changes has a `downsample` (1×1 strided conv + batch norm).
    ///
    /// ```
    /// let cfg = models::ResNetConfig::resnet8(10);
    /// let stages = cfg.blocks();
    /// assert_eq!(stages.len(), 3);
    /// let b = &stages[1][0];
    /// assert_eq!(b.path, "layer2.0");
    /// assert_eq!((b.convs[0].conv.as_str(), b.convs[0].stride), ("layer2.0.conv1", 2));
    /// assert_eq!(b.downsample.as_ref().map(|d| d.bn.as_str()), Some("layer2.0.downsample.1"));
    /// ```
    pub fn blocks(&self) -> Vec<Vec<BlockSpec>> {
        let expansion = self.block.expansion();
        let mut c_in = self.stem_width;
        let mut stages = Vec::with_capacity(self.layers.len());
        for (i, (&n_blocks, &planes)) in self.layers.iter().zip(&self.widths).enumerate() {
            let mut blocks = Vec::with_capacity(n_blocks);
            for b in 0..n_blocks {
                let stride = if i > 0 && b == 0 { 2 } else { 1 };
                let path = format!("layer{}.{b}", i + 1);
                let c_out = planes * expansion;
                let conv = |j: usize, c_in: usize, c_out: usize, kernel: usize, stride: usize| {
                    ConvBnSpec {
                        conv: format!("{path}.conv{j}"),
                        bn: format!("{path}.bn{j}"),
                        c_in,
                        c_out,
                        kernel,
                        stride,
                        padding: kernel / 2,
                        relu: true,
                    }
                };
                let mut convs = match self.block {
                    BlockKind::Basic => vec![
                        conv(1, c_in, planes, 3, stride),
                        conv(2, planes, planes, 3, 1),
                    ],
                    BlockKind::Bottleneck => vec![
                        conv(1, c_in, planes, 1, 1),
                        conv(2, planes, planes, 3, stride),
                        conv(3, planes, c_out, 1, 1),
                    ],
                };
                if let Some(last) = convs.last_mut() {
                    last.relu = false;
                }
                let downsample = (stride != 1 || c_in != c_out).then(|| ConvBnSpec {
                    conv: format!("{path}.downsample.0"),
                    bn: format!("{path}.downsample.1"),
                    c_in,
                    c_out,
                    kernel: 1,
                    stride,
                    padding: 0,
                    relu: false,
                });
                blocks.push(BlockSpec {
                    path,
                    convs,
                    downsample,
                });
                c_in = c_out;
            }
            stages.push(blocks);
        }
        stages
    }

    /// Checks that the configuration describes a buildable network.
    pub fn validate(&self) -> Result<()> {
        if self.layers.is_empty() || self.layers.len() != self.widths.len() {
            candle_core::bail!(
                "ResNetConfig: layers {:?} and widths {:?} must be non-empty and of equal length",
                self.layers,
                self.widths
            )
        }
        if self.layers.contains(&0) || self.widths.contains(&0) || self.stem_width == 0 {
            candle_core::bail!(
                "ResNetConfig: zero in layers {:?}, widths {:?} or stem_width {}",
                self.layers,
                self.widths,
                self.stem_width
            )
        }
        if self.bn_eps.is_nan() || self.bn_eps < 0.0 || !(0.0..=1.0).contains(&self.bn_momentum) {
            candle_core::bail!(
                "ResNetConfig: bn_eps {} must be >= 0 and bn_momentum {} in [0, 1]",
                self.bn_eps,
                self.bn_momentum
            )
        }
        Ok(())
    }
}

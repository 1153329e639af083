//! [`Network`]: a ResNet backbone (with its classifier) and an optional SimCLR projection head,
//! the pair every SimCLR or distillation model is made of.

use candle_core::{ModuleT, Result, Tensor};
use candle_nn::VarBuilder;

use crate::head::{ProjectionHead, ProjectionHeadConfig};
use crate::resnet::{Features, ResNet};
use crate::ResNetConfig;

/// The shape of a [`Network`]'s projection head, with its input width left to the backbone.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ProjectionSpec {
    /// Width of every hidden layer (`0`: the backbone's feature width, as SimCLR does).
    pub hidden_dim: usize,
    /// Width of the projection `z`.
    pub output_dim: usize,
    /// Number of linear layers (≥ 1).
    pub num_layers: usize,
    /// Batch norm after every hidden linear layer.
    pub batch_norm: bool,
}

impl ProjectionSpec {
    /// The head's full configuration on a backbone whose pooled features are `feature_dim` wide.
    pub fn head_config(&self, feature_dim: usize) -> ProjectionHeadConfig {
        ProjectionHeadConfig {
            input_dim: feature_dim,
            hidden_dim: if self.hidden_dim == 0 {
                feature_dim
            } else {
                self.hidden_dim
            },
            output_dim: self.output_dim,
            num_layers: self.num_layers,
            batch_norm: self.batch_norm,
        }
    }
}

/// A ResNet backbone with its `fc` classifier and, for SimCLR, a projection head under
/// `projector.` (the variable paths of a solo-learn or lightly model with a torchvision backbone).
///
/// ```
/// use candle_core::{DType, Device, Tensor};
/// let varmap = candle_nn::VarMap::new();
/// let vb = models::init::seeded_var_builder(&varmap, 0, DType::F32, &Device::Cpu);
/// let head = models::ProjectionSpec { hidden_dim: 0, output_dim: 128, num_layers: 2, batch_norm: true };
/// let net = models::Network::new(&models::ResNetConfig::resnet8(10), Some(&head), vb)?;
/// let (features, z) = net.forward(&Tensor::ones((4, 3, 32, 32), DType::F32, &Device::Cpu)?, true)?;
/// assert_eq!(features.logits.dims(), [4, 10]);
/// assert_eq!(z.map(|z| z.dims().to_vec()), Some(vec![4, 128]));
/// # Ok::<(), candle_core::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct Network {
    /// The backbone with its classifier.
    pub backbone: ResNet,
    /// SimCLR's projection head g(·), when the model has one.
    pub projector: Option<ProjectionHead>,
}

impl Network {
    /// Builds the backbone of `cfg` under `vb` and, when `projection` is given, the head under
    /// `vb.pp("projector")`.
    pub fn new(
        cfg: &ResNetConfig,
        projection: Option<&ProjectionSpec>,
        vb: VarBuilder,
    ) -> Result<Self> {
        let backbone = ResNet::new(cfg, vb.clone())?;
        let projector = match projection {
            Some(p) => Some(ProjectionHead::new(
                &p.head_config(backbone.feature_dim()),
                vb.pp("projector"),
            )?),
            None => None,
        };
        Ok(Self {
            backbone,
            projector,
        })
    }

    /// The backbone's features (and logits) and, when there is a head, the projections `z` of the
    /// pooled features.
    ///
    /// # Shapes
    /// - `xs`: `(N, 3, H, W)`
    /// - returns [`Features`] and `z`: `(N, output_dim)`
    pub fn forward(&self, xs: &Tensor, train: bool) -> Result<(Features, Option<Tensor>)> {
        let f = self.backbone.forward_features(xs, train)?;
        let z = match &self.projector {
            Some(p) => Some(p.forward_t(&f.pooled, train)?),
            None => None,
        };
        Ok((f, z))
    }
}

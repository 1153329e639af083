//! [`ModelSpec`]: which network a state dict (torchvision keys) describes.

use std::collections::HashMap;

use candle_core::{DType, Device, Result, Tensor};
use candle_nn::VarBuilder;
use models::{ProjectionHead, ProjectionHeadConfig, ResNet, ResNetConfig, Stem};

/// Prefix of the SimCLR projection head's tensors in a checkpoint.
pub const PROJECTOR: &str = "projector.";

/// The architecture of a state dict: the ResNet (named architecture, stem and class count read
/// from the tensors) and, when the state dict has one, its SimCLR projection head.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelSpec {
    /// Architecture name (one of [`models::RESNET_NAMES`]).
    pub arch: String,
    /// The backbone and classifier.
    pub resnet: ResNetConfig,
    /// The projection head under [`PROJECTOR`], if any.
    pub projection: Option<ProjectionHeadConfig>,
}

impl ModelSpec {
    /// Reads the stem from `conv1.weight` (7×7: ImageNet, 3×3: CIFAR), the class count from
    /// `fc.weight` (`(classes, features)`; none: `0`, the logits are the pooled features) and the
    /// projection head from the `projector.{i}.weight` / `projector.{i}.running_mean` layout of
    /// [`models::ProjectionHead`].
    ///
    /// Fails, naming the tensor, on an unknown architecture, a missing or mis-shaped `conv1`, a
    /// classifier of the wrong width, or a projection head whose layers do not chain.
    pub fn from_tensors(arch: &str, tensors: &HashMap<String, Tensor>) -> Result<Self> {
        let base = ResNetConfig::by_name(arch, 0)?;
        let stem = match tensors.get("conv1.weight").map(Tensor::dims) {
            Some([_, 3, 7, 7]) => Stem::ImageNet,
            Some([_, 3, 3, 3]) => Stem::Cifar,
            Some(d) => candle_core::bail!(
                "tensor `conv1.weight` has shape {d:?}; a ResNet stem is (C, 3, 7, 7) or (C, 3, 3, 3)"
            ),
            None => candle_core::bail!(
                "no tensor `conv1.weight`: not a ResNet state dict (torchvision keys)"
            ),
        };
        let feature_dim = base.feature_dim();
        let num_classes = match tensors.get("fc.weight").map(Tensor::dims) {
            Some(&[c, f]) if f == feature_dim && c > 0 => c,
            Some(d) => candle_core::bail!(
                "tensor `fc.weight` has shape {d:?}; {arch} expects (classes, {feature_dim})"
            ),
            None => 0,
        };
        let projection = projection_spec(tensors, feature_dim)?;
        Ok(Self {
            arch: arch.to_string(),
            resnet: base.with_stem(stem).with_num_classes(num_classes),
            projection,
        })
    }
}

impl ModelSpec {
    /// The Candle networks of this spec on `tensors` (shared, not copied), for inference: the
    /// backbone as [`ResNet::detached`] (every batch norm in its convolution's epilogue on the
    /// CPU) and the projection head, if any.
    pub fn build(
        &self,
        tensors: &HashMap<String, Tensor>,
        device: &Device,
    ) -> Result<(ResNet, Option<ProjectionHead>)> {
        let vb = VarBuilder::from_tensors(tensors.clone(), DType::F32, device);
        let backbone = ResNet::new(&self.resnet, vb.clone())?.detached()?;
        let head = match &self.projection {
            Some(p) => Some(ProjectionHead::new(p, vb.pp("projector"))?),
            None => None,
        };
        Ok((backbone, head))
    }
}

/// The projection head's configuration from its tensors, `None` when there are none.
fn projection_spec(
    tensors: &HashMap<String, Tensor>,
    input_dim: usize,
) -> Result<Option<ProjectionHeadConfig>> {
    let index = |name: &str| -> Option<usize> {
        let rest = name.strip_prefix(PROJECTOR)?;
        rest.strip_suffix(".weight")?.parse().ok()
    };
    let mut linears: Vec<(usize, usize, usize)> = Vec::new(); // (index, out, in)
    for (name, t) in tensors {
        if let (Some(i), [o, n]) = (index(name), t.dims()) {
            linears.push((i, *o, *n));
        }
    }
    if linears.is_empty() {
        return Ok(None);
    }
    linears.sort_unstable();
    let batch_norm = tensors.contains_key(&format!("{PROJECTOR}1.running_mean"));
    // ProjectionHead's indices: Linear, [BatchNorm], ReLU, Linear, …
    let step = if batch_norm { 3 } else { 2 };
    let mut dim = input_dim;
    for (k, &(i, o, n)) in linears.iter().enumerate() {
        if i != k * step || n != dim {
            candle_core::bail!(
                "tensor `{PROJECTOR}{i}.weight` ({o}, {n}) does not continue a projection head \
                 (expected `{PROJECTOR}{}.weight` with {dim} inputs)",
                k * step
            )
        }
        dim = o;
    }
    let hidden_dim = if linears.len() > 1 { linears[0].1 } else { 0 };
    Ok(Some(ProjectionHeadConfig {
        input_dim,
        hidden_dim,
        output_dim: dim,
        num_layers: linears.len(),
        batch_norm,
    }))
}

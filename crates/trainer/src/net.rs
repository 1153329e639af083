//! [`Net`]: a ResNet backbone with its classifier, an optional SimCLR projection head, and the
//! `VarMap` that owns their variables.

use std::path::Path;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarMap;
use models::{Features, Network, ResNet, ResNetConfig, Stem};

use crate::checkpoint::{load_into_varmap, meta, Checkpoint};
use crate::config::ProjectionConfig;
use crate::{Error, Result};

/// Prefix of the projection head's variables.
pub const PROJECTOR: &str = "projector.";

/// A network under training or evaluation: a [`models::Network`] (backbone, classifier, optional
/// projection head) with the `VarMap` that owns its variables.
pub struct Net {
    /// Every variable (backbone under torchvision keys, head under `projector.`).
    pub varmap: VarMap,
    /// The backbone with its `fc` classifier, and the projection head when the method uses one.
    pub network: Network,
    /// Architecture name.
    pub arch: String,
    /// Classes of `fc`.
    pub num_classes: usize,
    /// The backbone's configuration (with its stem).
    config: ResNetConfig,
    /// The projection head's shape, when there is one.
    projection: Option<models::ProjectionSpec>,
}

/// The stem for an architecture at an image size: torchvision's ImageNet stem above 64 pixels, the
/// CIFAR stem (3×3 stride-1 conv, no max-pool) at 64 and below.
pub fn stem_for(image_size: usize) -> Stem {
    if image_size > 64 {
        Stem::ImageNet
    } else {
        Stem::Cifar
    }
}

impl std::fmt::Debug for Net {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Net")
            .field("arch", &self.arch)
            .field("num_classes", &self.num_classes)
            .finish_non_exhaustive()
    }
}

impl Net {
    /// A freshly initialised network (seeded: the same seed gives the same weights).
    pub fn new(
        arch: &str,
        num_classes: usize,
        image_size: usize,
        projection: Option<&ProjectionConfig>,
        seed: u64,
        device: &Device,
    ) -> Result<Self> {
        let cfg = ResNetConfig::by_name(arch, num_classes)
            .map_err(|_| {
                Error::Config(format!(
                    "unknown architecture {arch:?} (known: {})",
                    models::RESNET_NAMES.join(", ")
                ))
            })?
            .with_stem(stem_for(image_size));
        Self::build(arch, cfg, projection.map(|p| p.spec()), seed, device)
    }

    fn build(
        arch: &str,
        config: ResNetConfig,
        projection: Option<models::ProjectionSpec>,
        seed: u64,
        device: &Device,
    ) -> Result<Self> {
        let varmap = VarMap::new();
        let vb = models::init::seeded_var_builder(&varmap, seed, DType::F32, device);
        let network = Network::new(&config, projection.as_ref(), vb)?;
        Ok(Self {
            varmap,
            network,
            arch: arch.to_string(),
            num_classes: config.num_classes,
            config,
            projection,
        })
    }

    /// A network of the same shape whose variables are copies of this one's (e.g. the weight
    /// average of a training run).
    pub fn duplicate(&self) -> Result<Self> {
        let copy = Self::build(
            &self.arch,
            self.config.clone(),
            self.projection,
            0,
            self.varmap
                .all_vars()
                .first()
                .map_or(&Device::Cpu, |v| v.device()),
        )?;
        let src = self.varmap.data().lock().unwrap_or_else(|e| e.into_inner());
        let dst = copy.varmap.data().lock().unwrap_or_else(|e| e.into_inner());
        for (name, var) in dst.iter() {
            if let Some(s) = src.get(name) {
                var.set(s.as_tensor())?;
            }
        }
        drop(dst);
        Ok(copy)
    }

    /// Builds the network a checkpoint describes and loads its backbone weights: `arch` when
    /// given (it wins over the metadata, so a mismatch is an error naming the tensor), else the
    /// architecture the metadata records; `num_classes` from the metadata, else from `fc.weight`,
    /// else `classes_fallback` (files written by other tools).
    pub fn from_checkpoint(
        path: &Path,
        arch: Option<&str>,
        classes_fallback: usize,
        image_size: usize,
        device: &Device,
    ) -> Result<(Self, Checkpoint)> {
        let ckpt = Checkpoint::load(path, device)?;
        Self::from_loaded(ckpt, path, arch, classes_fallback, image_size, device)
    }

    /// [`Net::from_checkpoint`] for a checkpoint already read from `path`.
    pub fn from_loaded(
        ckpt: Checkpoint,
        path: &Path,
        arch: Option<&str>,
        classes_fallback: usize,
        image_size: usize,
        device: &Device,
    ) -> Result<(Self, Checkpoint)> {
        let arch = match (ckpt.metadata.get(meta::ARCH), arch) {
            (_, Some(a)) => a.to_string(),
            (Some(a), None) => a.clone(),
            (None, None) => {
                return Err(Error::Checkpoint(format!(
                    "{}: the file does not say its architecture; pass it (e.g. --teacher-arch resnet18)",
                    path.display()
                )))
            }
        };
        let num_classes = match ckpt.meta::<usize>(meta::NUM_CLASSES) {
            Some(n) => n,
            None => ckpt
                .tensors
                .get("fc.weight")
                .map(|t| t.dims()[0])
                .unwrap_or(classes_fallback),
        };
        let net = Net::new(&arch, num_classes, image_size, None, 0, device)?;
        load_into_varmap(&net.varmap, &ckpt, "", path, &arch)?;
        Ok((net, ckpt))
    }

    /// Backbone features (and logits) and, when there is a head, the projections `z`
    /// (see [`models::Network::forward`]).
    pub fn forward(&self, xs: &Tensor, train: bool) -> Result<(Features, Option<Tensor>)> {
        Ok(self.network.forward(xs, train)?)
    }

    /// The backbone with its classifier.
    pub fn backbone(&self) -> &ResNet {
        &self.network.backbone
    }
}

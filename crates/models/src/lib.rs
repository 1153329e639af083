//! ResNet teachers and students for SimCLR pre-training and knowledge distillation, on
//! Candle: torchvision's ResNet-18/34/50/101/152 (ImageNet or CIFAR stem), RepDistiller's
//! CIFAR ResNets (resnet8 … resnet110, resnet8x4, resnet32x4), SimCLR's projection head and a
//! linear classifier.
//!
//! ```
//! use candle_core::{DType, Device, ModuleT, Tensor};
//! let cfg = models::ResNetConfig::resnet18(10).with_stem(models::Stem::Cifar);
//! let varmap = candle_nn::VarMap::new();
//! // A seeded, torchvision-style initialisation: the same seed gives the same model.
//! let vb = models::init::seeded_var_builder(&varmap, 42, DType::F32, &Device::Cpu);
//! let net = models::ResNet::new(&cfg, vb)?;
//! let xs = Tensor::zeros((1, 3, 32, 32), DType::F32, &Device::Cpu)?;
//! let logits = net.forward_t(&xs, false)?;
//! assert_eq!(logits.dims(), [1, 10]);
//! # Ok::<(), candle_core::Error>(())
//! ```
//!
//! # Weights
//! Parameter paths are torchvision's `state_dict` keys, so a torchvision checkpoint saved
//! with `safetensors.torch.save_file(model.state_dict(), "r18.safetensors")` loads with
//! `VarBuilder::from_mmaped_safetensors(&["r18.safetensors"], DType::F32, &device)` and no
//! renaming (a CIFAR-stem model is torchvision's with `conv1` replaced by a 3×3 stride-1
//! conv and `maxpool` removed). RepDistiller's CIFAR ResNets use the same keys.
//!
//! # Seeded initialisation and training
//! [`init::seeded_var_builder`]`(&varmap, seed, dtype, device)` is a `VarBuilder` over a
//! `candle_nn::VarMap` that draws every new variable from a ChaCha8 RNG seeded by `seed` and
//! the variable's path, with torchvision's initialisation (Kaiming normal `fan_out` convs,
//! batch norm 1/0, optional `zero_init_residual`, PyTorch's default for linear layers). The
//! same seed gives a bit-identical model. Train with the `VarMap`'s variables; the batch-norm
//! running statistics are in the `VarMap` too (they update in training mode and are saved
//! with it) but never get a gradient: [`is_batch_norm_buffer`] tells them apart.
//!
//! # Max-pooling
//! The ImageNet stem uses [`MaxPool2d`] (3×3, stride 2, padding 1), a custom op with a
//! correct backward, since Candle's `max_pool2d` has no padding and no backward when
//! kernel ≠ stride.

pub mod config;
pub mod head;
pub mod init;
mod layers;
pub mod maxpool;
pub mod network;
pub mod ops;
pub mod resnet;

pub use config::{BlockKind, BlockSpec, ConvBnSpec, ResNetConfig, Stem, RESNET_NAMES};
pub use head::{linear_classifier, ProjectionHead, ProjectionHeadConfig};
pub use init::{is_batch_norm_buffer, seeded_var_builder};
pub use maxpool::{max_pool2d_with_tensor_ops, MaxPool2d};
pub use network::{Network, ProjectionSpec};
pub use resnet::{Features, ResNet};

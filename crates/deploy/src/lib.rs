//! Deploying a trained ResNet outside the trainer: the network as a standard ONNX graph, and a
//! pure-Rust ONNX runtime to check and run the file.
//!
//! - [`ModelSpec::from_tensors`]: which network a state dict (torchvision keys, the SimCLR
//!   projection head under `projector.`) describes: architecture, stem, classes, head.
//! - [`onnx::export`]: the ONNX model (opset [`onnx::OPSET`], free batch dimension, batch norms
//!   folded into the convolutions by [`fold`], optional normalisation node so that the graph
//!   takes `uint8` or `[0, 1]` images), [`onnx::to_bytes`] its file.
//! - [`OnnxModel`]: an `.onnx` file run by tract.
//!
//! ```
//! use std::collections::HashMap;
//! use candle_core::{DType, Device, Tensor};
//! let varmap = candle_nn::VarMap::new();
//! let vb = models::init::seeded_var_builder(&varmap, 0, DType::F32, &Device::Cpu);
//! let net = models::ResNet::new(&models::ResNetConfig::resnet8(10), vb)?;
//! let tensors: HashMap<String, Tensor> = varmap
//!     .data().lock().unwrap().iter().map(|(k, v)| (k.clone(), v.as_tensor().clone())).collect();
//!
//! let spec = deploy::ModelSpec::from_tensors("resnet8", &tensors)?;
//! let model = deploy::onnx::export(&spec, &tensors, &deploy::onnx::ExportOptions::default())?;
//! let bytes = deploy::onnx::to_bytes(&model);
//!
//! let onnx = deploy::OnnxModel::from_bytes(&bytes, "resnet8.onnx")?;
//! let xs = Tensor::randn(0f32, 1., (2, 3, 32, 32), &Device::Cpu)?;
//! let logits = &onnx.run(&xs)?[0];
//! let ours = candle_core::ModuleT::forward_t(&net, &xs, false)?;
//! let diff = (logits - ours)?.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()?;
//! assert!(diff < 1e-4);
//! # Ok::<(), candle_core::Error>(())
//! ```

pub mod fold;
pub mod onnx;
pub mod runtime;
pub mod spec;

pub use runtime::OnnxModel;
pub use spec::ModelSpec;

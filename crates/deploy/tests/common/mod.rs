//! The export cases shared by the ONNX tests and `examples/onnx_fixture_models.rs` (which writes
//! their files for `fixtures/gen_onnx.py`): every architecture with both stems and a few input and
//! output variants, on the formula weights of the `models` fixtures (`gen_models.py`), which
//! PyTorch reproduces bit for bit.
#![allow(dead_code)]

use std::collections::HashMap;

use anyhow::Result;
use candle_core::{DType, Device, Tensor};
use deploy::onnx::{ExportOptions, InputKind, OutputKind};
use deploy::ModelSpec;
use models::{ProjectionHeadConfig, ResNetConfig, Stem, RESNET_NAMES};

#[path = "../../../models/tests/common/mod.rs"]
pub mod formula;

/// Classes of every case's classifier.
pub const CLASSES: usize = 10;

/// One exported network.
#[derive(Debug, Clone)]
pub struct Case {
    /// `{arch}_{stem}[_{variant}]`, the fixture's key prefix.
    pub name: String,
    /// Architecture name.
    pub arch: &'static str,
    /// Stem.
    pub stem: Stem,
    /// Projection head, for the variants that export one.
    pub head: Option<ProjectionHeadConfig>,
    /// Export options (input kind and outputs).
    pub opts: ExportOptions,
}

/// Every architecture with both stems (`uint8` input, logits), and two variants of resnet8 with a
/// projection head: `[0, 1]` input with features, logits and projection (batch-norm head), and
/// normalised input with the projection of a three-layer head without batch norm.
pub fn cases() -> Vec<Case> {
    let mut cases = Vec::new();
    for arch in RESNET_NAMES {
        for (stem, tag) in [(Stem::Cifar, "cifar"), (Stem::ImageNet, "imagenet")] {
            cases.push(Case {
                name: format!("{arch}_{tag}"),
                arch,
                stem,
                head: None,
                opts: ExportOptions {
                    input: InputKind::Uint8,
                    outputs: vec![OutputKind::Logits],
                    ..ExportOptions::default()
                },
            });
        }
    }
    let head = |num_layers, batch_norm| ProjectionHeadConfig {
        input_dim: 64,
        hidden_dim: 32,
        output_dim: 16,
        num_layers,
        batch_norm,
    };
    cases.push(Case {
        name: "resnet8_cifar_unit_head".into(),
        arch: "resnet8",
        stem: Stem::Cifar,
        head: Some(head(2, true)),
        opts: ExportOptions {
            input: InputKind::Unit,
            outputs: vec![
                OutputKind::Features,
                OutputKind::Logits,
                OutputKind::Projection,
            ],
            image_size: Some((32, 32)),
            ..ExportOptions::default()
        },
    });
    cases.push(Case {
        name: "resnet8_cifar_normalized_head3".into(),
        arch: "resnet8",
        stem: Stem::Cifar,
        head: Some(head(3, false)),
        opts: ExportOptions {
            input: InputKind::Normalized,
            outputs: vec![OutputKind::Projection],
            ..ExportOptions::default()
        },
    });
    cases
}

/// The case's state dict: the network (and head) with every tensor set by the formula.
pub fn tensors(case: &Case) -> Result<HashMap<String, Tensor>> {
    let varmap = candle_nn::VarMap::new();
    let vb = models::init::seeded_var_builder(&varmap, 0, DType::F32, &Device::Cpu);
    let cfg = ResNetConfig::by_name(case.arch, CLASSES)?.with_stem(case.stem);
    models::ResNet::new(&cfg, vb.clone())?;
    if let Some(h) = &case.head {
        models::ProjectionHead::new(h, vb.pp("projector"))?;
    }
    formula::fill(&varmap)?;
    let data = varmap
        .data()
        .lock()
        .map_err(|_| anyhow::anyhow!("poisoned"))?;
    Ok(data
        .iter()
        .map(|(k, v)| (k.clone(), v.as_tensor().clone()))
        .collect())
}

/// The case's spec, state dict and `.onnx` bytes.
pub fn export(case: &Case) -> Result<(ModelSpec, HashMap<String, Tensor>, Vec<u8>)> {
    let tensors = tensors(case)?;
    let spec = ModelSpec::from_tensors(case.arch, &tensors)?;
    let model = deploy::onnx::export(&spec, &tensors, &case.opts)?;
    Ok((spec, tensors, deploy::onnx::to_bytes(&model)))
}

/// The input kind's name as the fixture script reads it.
pub fn input_name(kind: InputKind) -> &'static str {
    match kind {
        InputKind::Normalized => "normalized",
        InputKind::Unit => "unit",
        InputKind::Uint8 => "uint8",
    }
}

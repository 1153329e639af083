//! The ONNX export against onnxruntime and tract, over every architecture with both stems.
//!
//! `fixtures/onnx_ort.safetensors` (written by `fixtures/gen_onnx.py`) holds four real CIFAR-10
//! test images, onnxruntime's outputs on each case's exported file, and that file's SHA-256. Each
//! case is exported again here; its bytes must be the ones onnxruntime ran, and three forward
//! passes must give onnxruntime's outputs to 1e-4 (relative to the largest output): ours (the
//! path `trainer eval` takes), tract's on the exported bytes, and onnxruntime's stored ones.

use std::collections::HashMap;

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, ModuleT, Tensor};
use deploy::onnx::{InputKind, OutputKind};
use deploy::OnnxModel;
use sha2::{Digest, Sha256};

mod common;
use common::formula::assert_close;
use common::Case;

const TOL: f64 = 1e-4;
const FIXTURE: &str = "onnx_ort.safetensors";

struct Fixture {
    tensors: HashMap<String, Tensor>,
    metadata: HashMap<String, String>,
}

fn fixture() -> Result<Fixture> {
    Ok(Fixture {
        tensors: common::formula::load(FIXTURE)?,
        metadata: common::formula::metadata(FIXTURE)?,
    })
}

/// The graph input of `kind` for `u8` images, and the normalised images our network takes.
fn inputs(u8s: &Tensor, kind: InputKind) -> Result<(Tensor, Tensor)> {
    let unit = (u8s.to_dtype(DType::F32)? / 255.0)?;
    let mean = Tensor::new(&augment::presets::CIFAR_MEAN, &Device::Cpu)?.reshape((1, 3, 1, 1))?;
    let std = Tensor::new(&augment::presets::CIFAR_STD, &Device::Cpu)?.reshape((1, 3, 1, 1))?;
    let normalized = unit.broadcast_sub(&mean)?.broadcast_div(&std)?;
    let input = match kind {
        InputKind::Uint8 => u8s.clone(),
        InputKind::Unit => unit,
        InputKind::Normalized => normalized.clone(),
    };
    Ok((input, normalized))
}

fn check_case(fx: &Fixture, case: &Case) -> Result<()> {
    let name = &case.name;
    let (spec, tensors, bytes) = common::export(case)?;
    assert_eq!(spec.resnet.stem, case.stem, "{name}: stem read from conv1");

    let sha = format!("{:x}", Sha256::digest(&bytes));
    let want = fx
        .metadata
        .get(&format!("{name}.sha256"))
        .with_context(|| format!("{FIXTURE} has no case {name}"))?;
    if &sha != want {
        bail!(
            "{name}: the export's bytes changed (sha256 {sha}, onnxruntime ran {want}); \
             regenerate the fixture: python crates/deploy/tests/fixtures/gen_onnx.py"
        )
    }

    let images = fx.tensors.get("images").context("fixture images")?;
    let (input, normalized) = inputs(images, case.opts.input)?;
    let (backbone, head) = spec.build(&tensors, &Device::Cpu)?;
    let f = backbone.forward_features(&normalized, false)?;
    let tract = OnnxModel::from_bytes(&bytes, name)?.run(&input)?;
    for (i, kind) in case.opts.outputs.iter().enumerate() {
        let ort = common::formula::get(&fx.tensors, &format!("{name}.{}", kind.name()))?;
        let ours = match kind {
            OutputKind::Logits => f.logits.clone(),
            OutputKind::Features => f.pooled.clone(),
            OutputKind::Projection => head
                .as_ref()
                .context("case without a head")?
                .forward_t(&f.pooled, false)?,
        };
        assert_close(
            &format!("{name}.{}: ours vs onnxruntime", kind.name()),
            &ours,
            &ort,
            TOL,
        )?;
        assert_close(
            &format!("{name}.{}: tract vs onnxruntime", kind.name()),
            &tract[i],
            &ort,
            TOL,
        )?;
    }
    Ok(())
}

fn check_all(filter: impl Fn(&Case) -> bool) -> Result<()> {
    let fx = fixture()?;
    let mut n = 0;
    for case in common::cases().iter().filter(|c| filter(c)) {
        check_case(&fx, case)?;
        n += 1;
    }
    assert!(n > 0);
    Ok(())
}

fn torchvision(c: &Case) -> bool {
    ["resnet18", "resnet34", "resnet50", "resnet101", "resnet152"].contains(&c.arch)
}

/// RepDistiller's CIFAR ResNets (both stems) and the head variants.
#[test]
fn export_matches_onnxruntime_cifar_resnets() -> Result<()> {
    check_all(|c| !torchvision(c))
}

/// torchvision's ResNet-18 … 152, both stems.
#[test]
fn export_matches_onnxruntime_torchvision_resnets() -> Result<()> {
    check_all(torchvision)
}

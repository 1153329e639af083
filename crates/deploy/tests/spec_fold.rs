//! `ModelSpec` read from state dicts, batch-norm folding against the unfused layers, and the
//! errors that name the bad input.

use std::collections::HashMap;

use anyhow::Result;
use candle_core::{Device, ModuleT, Tensor};
use deploy::onnx::{ExportOptions, OutputKind};
use deploy::ModelSpec;
use models::Stem;

mod common;
use common::formula::assert_close;
use common::Case;

fn resnet8_case() -> Case {
    common::cases()
        .into_iter()
        .find(|c| c.name == "resnet8_cifar_unit_head")
        .expect("case")
}

#[test]
fn spec_reads_stem_classes_and_head() -> Result<()> {
    for case in common::cases() {
        let spec = ModelSpec::from_tensors(case.arch, &common::tensors(&case)?)?;
        assert_eq!(spec.resnet.stem, case.stem, "{}", case.name);
        assert_eq!(spec.resnet.num_classes, common::CLASSES, "{}", case.name);
        assert_eq!(spec.projection, case.head, "{}", case.name);
    }
    Ok(())
}

/// The folded convolution equals convolution then batch norm (candle's stock ops, eval mode).
#[test]
fn folded_conv_equals_conv_then_batch_norm() -> Result<()> {
    let case = resnet8_case();
    let tensors = common::tensors(&case)?;
    let spec = ModelSpec::from_tensors(case.arch, &tensors)?;
    let dev = Device::Cpu;
    let xs = common::formula::formula("x", &[2, 16, 8, 8], -2.0, 2.0)?;
    for conv in spec
        .resnet
        .blocks()
        .iter()
        .flatten()
        .flat_map(|b| b.convs.iter())
    {
        if conv.c_in != 16 || conv.stride != 1 {
            continue;
        }
        let w = &tensors[&format!("{}.weight", conv.conv)];
        let get = |p: &str| tensors[&format!("{}.{p}", conv.bn)].clone();
        let bn = candle_nn::BatchNorm::new(
            conv.c_out,
            get("running_mean"),
            get("running_var"),
            get("weight"),
            get("bias"),
            1e-5,
        )?;
        let want = bn.forward_t(&xs.conv2d(w, conv.padding, 1, 1, 1)?, false)?;
        let folded = deploy::fold::fold_batch_norm(
            &w.flatten_all()?.to_vec1::<f32>()?,
            None,
            &tensors,
            &conv.bn,
            1e-5,
        )?;
        let fw = Tensor::from_vec(folded.weight, w.dims(), &dev)?;
        let fb = Tensor::from_vec(folded.bias, (1, conv.c_out, 1, 1), &dev)?;
        let got = xs.conv2d(&fw, conv.padding, 1, 1, 1)?.broadcast_add(&fb)?;
        assert_close(&conv.conv, &got, &want, 1e-5)?;
    }
    Ok(())
}

fn err_of<T: std::fmt::Debug>(r: candle_core::Result<T>) -> String {
    format!("{}", r.expect_err("expected an error"))
}

#[test]
fn bad_state_dicts_are_named() -> Result<()> {
    let case = resnet8_case();
    let tensors = common::tensors(&case)?;

    let e = err_of(ModelSpec::from_tensors("resnet9", &tensors));
    assert!(e.contains("resnet9") && e.contains("resnet18"), "{e}");

    let e = err_of(ModelSpec::from_tensors("resnet8", &HashMap::new()));
    assert!(e.contains("conv1.weight"), "{e}");

    // A resnet8 state dict read as resnet20: the first block resnet8 lacks is named.
    let spec = ModelSpec::from_tensors("resnet20", &tensors)?;
    let e = err_of(deploy::onnx::export(
        &spec,
        &tensors,
        &ExportOptions::default(),
    ));
    assert!(e.contains("layer1.1.conv1.weight"), "{e}");

    // A resnet8 state dict read as resnet8x4: the first mis-shaped tensor is named.
    let e = err_of(ModelSpec::from_tensors("resnet8x4", &tensors));
    assert!(e.contains("fc.weight"), "{e}");

    // The projection of a network without a head.
    let mut no_head = tensors.clone();
    no_head.retain(|k, _| !k.starts_with("projector."));
    let spec = ModelSpec::from_tensors("resnet8", &no_head)?;
    let opts = ExportOptions {
        outputs: vec![OutputKind::Projection],
        ..ExportOptions::default()
    };
    let e = err_of(deploy::onnx::export(&spec, &no_head, &opts));
    assert!(e.contains("projection head"), "{e}");

    // Garbage is not an ONNX model.
    let e = err_of(deploy::OnnxModel::from_bytes(b"not onnx", "x.onnx"));
    assert!(e.contains("x.onnx"), "{e}");
    Ok(())
}

/// The graph's batch dimension is free: one export runs at batch 1 and 3.
#[test]
fn batch_dimension_is_dynamic() -> Result<()> {
    let case = Case {
        name: "resnet8_imagenet_dyn".into(),
        arch: "resnet8",
        stem: Stem::ImageNet,
        head: None,
        opts: ExportOptions::default(),
    };
    let (spec, tensors, bytes) = common::export(&case)?;
    let (net, _) = spec.build(&tensors, &Device::Cpu)?;
    let model = deploy::OnnxModel::from_bytes(&bytes, "dyn")?;
    for n in [1, 3] {
        let xs = common::formula::formula("x", &[n, 3, 40, 40], -2.0, 2.0)?;
        let got = &model.run(&xs)?[0];
        assert_close("dynamic batch", got, &net.forward_t(&xs, false)?, 1e-4)?;
        assert_eq!(got.dims(), [n, common::CLASSES]);
    }
    Ok(())
}

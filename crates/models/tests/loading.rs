//! Checkpoints: a saved model loads back through `from_mmaped_safetensors` and gives the
//! same logits; a checkpoint of another architecture is an error naming the tensor.

use anyhow::{ensure, Result};
use candle_core::{DType, Device, ModuleT, Tensor};
use candle_nn::{VarBuilder, VarMap};
use models::{init::seeded_var_builder, ResNet, ResNetConfig, Stem};

fn save(cfg: &ResNetConfig, dir: &std::path::Path) -> Result<(std::path::PathBuf, ResNet)> {
    let varmap = VarMap::new();
    let net = ResNet::new(
        cfg,
        seeded_var_builder(&varmap, 1, DType::F32, &Device::Cpu),
    )?;
    let path = dir.join("model.safetensors");
    varmap.save(&path)?;
    Ok((path, net))
}

fn load(cfg: &ResNetConfig, path: &std::path::Path) -> candle_core::Result<ResNet> {
    // SAFETY: the file is a fresh temporary written by this test and not modified while mapped.
    let vb = unsafe { VarBuilder::from_mmaped_safetensors(&[path], DType::F32, &Device::Cpu)? };
    ResNet::new(cfg, vb)
}

#[test]
fn saved_model_loads_back_with_running_statistics() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let cfg = ResNetConfig::resnet8(10);
    let (path, net) = save(&cfg, dir.path())?;
    let xs = Tensor::rand(-1f32, 1., (2, 3, 32, 32), &Device::Cpu)?;
    // One training step's forward moves the running statistics; save after it.
    let varmap = VarMap::new();
    let trained = ResNet::new(
        &cfg,
        seeded_var_builder(&varmap, 1, DType::F32, &Device::Cpu),
    )?;
    trained.forward_t(&xs, true)?;
    varmap.save(&path)?;
    let loaded = load(&cfg, &path)?;
    // A model loaded from a file holds plain tensors, so its evaluation folds the batch norms
    // into the convolutions; compare it with the trained model's detached copy, which does too
    // (the variables' unfused path rounds differently).
    let a = trained.detached()?.forward_t(&xs, false)?;
    let b = loaded.forward_t(&xs, false)?;
    ensure!(
        (a - &b)?.abs()?.max_all()?.to_scalar::<f32>()? == 0.0,
        "loaded model differs"
    );
    // ... and differ from the untouched model, whose running statistics are 0 / 1.
    let c = net.forward_t(&xs, false)?;
    ensure!(
        (c - &b)?.abs()?.max_all()?.to_scalar::<f32>()? > 0.0,
        "running statistics were not saved"
    );
    Ok(())
}

fn load_error(from: &ResNetConfig, into: &ResNetConfig) -> Result<String> {
    let dir = tempfile::tempdir()?;
    let (path, _) = save(from, dir.path())?;
    match load(into, &path) {
        Ok(_) => anyhow::bail!("loading {from:?} into {into:?} succeeded"),
        Err(e) => Ok(e.to_string()),
    }
}

#[test]
fn other_architecture_is_an_error_naming_the_tensor() -> Result<()> {
    // resnet34 has a third block in layer1: missing tensor.
    let e = load_error(&ResNetConfig::resnet18(10), &ResNetConfig::resnet34(10))?;
    ensure!(e.contains("layer1.2.conv1.weight"), "{e}");
    // resnet50's first block has a 1x1 conv1: mis-shaped tensor.
    let e = load_error(&ResNetConfig::resnet18(10), &ResNetConfig::resnet50(10))?;
    ensure!(
        e.contains("layer1.0.conv1.weight") && e.contains("shape"),
        "{e}"
    );
    // The other stem: conv1 is 3x3, not 7x7.
    let e = load_error(
        &ResNetConfig::resnet8(10),
        &ResNetConfig::resnet8(10).with_stem(Stem::ImageNet),
    )?;
    ensure!(e.contains("conv1.weight"), "{e}");
    // Another number of classes.
    let e = load_error(&ResNetConfig::resnet8(10), &ResNetConfig::resnet8(100))?;
    ensure!(e.contains("fc.weight"), "{e}");
    Ok(())
}

#[test]
fn by_name_lists_the_valid_names() -> Result<()> {
    for name in models::RESNET_NAMES {
        ensure!(ResNetConfig::by_name(name, 10).is_ok(), "{name}");
    }
    let e = ResNetConfig::by_name("resnet19", 10)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    ensure!(
        e.contains("resnet19") && e.contains("resnet8x4") && e.contains("resnet152"),
        "{e}"
    );
    let mut bad = ResNetConfig::resnet8(10);
    bad.widths.pop();
    ensure!(
        ResNet::new(&bad, VarBuilder::zeros(DType::F32, &Device::Cpu)).is_err(),
        "bad config accepted"
    );
    let xs = Tensor::zeros((2, 1, 32, 32), DType::F32, &Device::Cpu)?;
    let net = ResNet::new(
        &ResNetConfig::resnet8(10),
        VarBuilder::zeros(DType::F32, &Device::Cpu),
    )?;
    ensure!(
        net.forward_t(&xs, false).is_err(),
        "1-channel input accepted"
    );
    Ok(())
}

#[test]
fn no_classifier_returns_pooled_features() -> Result<()> {
    let varmap = VarMap::new();
    let net = ResNet::new(
        &ResNetConfig::resnet8(0),
        seeded_var_builder(&varmap, 0, DType::F32, &Device::Cpu),
    )?;
    let xs = Tensor::rand(-1f32, 1., (2, 3, 16, 16), &Device::Cpu)?;
    let f = net.forward_features(&xs, false)?;
    ensure!(
        f.logits.dims() == [2, 64] && f.pooled.dims() == [2, 64],
        "{:?}",
        f.logits.dims()
    );
    ensure!(
        !varmap
            .data()
            .lock()
            .map_err(|_| anyhow::anyhow!("poisoned"))?
            .contains_key("fc.weight"),
        "fc built"
    );
    Ok(())
}

//! Seeded initialisation: bit-identical per seed, torchvision's distributions.

use anyhow::{ensure, Result};
use candle_core::{DType, Device, Tensor};
use candle_nn::VarMap;
use models::{init::seeded_var_builder, ResNet, ResNetConfig};

fn snapshot(varmap: &VarMap) -> Result<Vec<(String, Vec<f32>)>> {
    let data = varmap
        .data()
        .lock()
        .map_err(|_| anyhow::anyhow!("poisoned"))?;
    let mut out = data
        .iter()
        .map(|(k, v)| Ok((k.clone(), v.as_tensor().flatten_all()?.to_vec1::<f32>()?)))
        .collect::<Result<Vec<_>>>()?;
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

fn build(cfg: &ResNetConfig, seed: u64) -> Result<VarMap> {
    let varmap = VarMap::new();
    ResNet::new(
        cfg,
        seeded_var_builder(&varmap, seed, DType::F32, &Device::Cpu),
    )?;
    Ok(varmap)
}

#[test]
fn same_seed_same_model_other_seed_other_model() -> Result<()> {
    let cfg = ResNetConfig::resnet8(10);
    let a = snapshot(&build(&cfg, 3)?)?;
    let b = snapshot(&build(&cfg, 3)?)?;
    let c = snapshot(&build(&cfg, 4)?)?;
    ensure!(a == b, "seed 3 gave two different models");
    let conv = |s: &[(String, Vec<f32>)]| {
        s.iter()
            .find(|(k, _)| k == "conv1.weight")
            .map(|(_, v)| v.clone())
    };
    ensure!(
        conv(&a) != conv(&c),
        "seeds 3 and 4 gave the same conv1.weight"
    );
    Ok(())
}

fn stats(t: &Tensor) -> Result<(f64, f64)> {
    let v = t.flatten_all()?.to_dtype(DType::F64)?.to_vec1::<f64>()?;
    let n = v.len() as f64;
    let mean = v.iter().sum::<f64>() / n;
    let var = v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n;
    Ok((mean, var.sqrt()))
}

#[test]
fn distributions_follow_torchvision() -> Result<()> {
    let cfg = ResNetConfig::resnet18(100).with_zero_init_residual(true);
    let varmap = build(&cfg, 0)?;
    let data = varmap
        .data()
        .lock()
        .map_err(|_| anyhow::anyhow!("poisoned"))?;
    let get = |k: &str| {
        data.get(k)
            .map(|v| v.as_tensor().clone())
            .ok_or_else(|| anyhow::anyhow!("no {k}"))
    };
    // Kaiming normal, fan_out: std = sqrt(2 / (c_out * k * k)).
    for (k, fan_out) in [
        ("layer3.0.conv2.weight", 256 * 9),
        ("layer2.0.downsample.0.weight", 128),
    ] {
        let (mean, std) = stats(&get(k)?)?;
        let want = (2.0 / fan_out as f64).sqrt();
        ensure!(
            mean.abs() < 0.05 * want && (std / want - 1.0).abs() < 0.02,
            "{k}: mean {mean}, std {std}, want std {want}"
        );
    }
    // nn.Linear default: U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
    let bound = 1.0 / 512f64.sqrt();
    let fc = get("fc.weight")?.flatten_all()?.to_vec1::<f32>()?;
    let max = fc.iter().fold(0f32, |m, x| m.max(x.abs())) as f64;
    ensure!(
        max <= bound && max > 0.95 * bound,
        "fc.weight max {max}, bound {bound}"
    );
    // Batch norm 1 / 0, zero-init of each block's last batch norm, running stats 0 / 1.
    for (k, want) in [
        ("bn1.weight", 1.0),
        ("bn1.bias", 0.0),
        ("layer1.0.bn1.weight", 1.0),
        ("layer1.0.bn2.weight", 0.0),
        ("layer2.0.downsample.1.weight", 1.0),
        ("layer4.1.bn2.running_mean", 0.0),
        ("layer4.1.bn2.running_var", 1.0),
    ] {
        let v = get(k)?.flatten_all()?.to_vec1::<f32>()?;
        ensure!(
            v.iter().all(|&x| f64::from(x) == want),
            "{k} is not all {want}"
        );
    }
    Ok(())
}

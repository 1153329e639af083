//! Eval-mode ResNets against torchvision / RepDistiller (fixtures/gen_models.py):
//! logits, pooled features and every stage, on formula weights; key names, shapes and
//! parameter counts of every architecture.

mod common;

use std::collections::BTreeMap;

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, ModuleT};
use candle_nn::{VarBuilder, VarMap};
use common::{assert_close, fill, formula, get, load, metadata};
use models::{ResNet, ResNetConfig, Stem};

const FIXTURE: &str = "resnet_eval.safetensors";

fn build(cfg: &ResNetConfig) -> Result<(VarMap, ResNet)> {
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
    let net = ResNet::new(cfg, vb)?;
    Ok((varmap, net))
}

/// Builds `cfg`, fills it with the formula and checks every output against `name.*`, on the
/// variables (unfused conv and batch norm) and on [`ResNet::detached`] (batch norm folded into
/// the convolutions).
fn check_forward(name: &str, cfg: &ResNetConfig, xs_shape: &[usize]) -> Result<()> {
    let (varmap, net) = build(cfg)?;
    fill(&varmap)?;
    check_net(name, cfg, xs_shape, &net)?;
    check_net(
        &format!("{name} (detached)"),
        cfg,
        xs_shape,
        &net.detached()?,
    )
}

fn check_net(name: &str, cfg: &ResNetConfig, xs_shape: &[usize], net: &ResNet) -> Result<()> {
    let fx = load(FIXTURE)?;
    let key_name = name.split(' ').next().unwrap_or(name);
    let xs = formula("input", xs_shape, -2.0, 2.0)?;
    let f = net.forward_features(&xs, false)?;
    assert_close(
        &format!("{name} logits"),
        &f.logits,
        &get(&fx, &format!("{key_name}.logits"))?,
        1e-4,
    )?;
    assert_close(
        &format!("{name} pooled"),
        &f.pooled,
        &get(&fx, &format!("{key_name}.pooled"))?,
        1e-4,
    )?;
    assert_close(
        &format!("{name} stem"),
        &f.stem.mean((2, 3))?,
        &get(&fx, &format!("{key_name}.stem"))?,
        1e-4,
    )?;
    for (i, fm) in f.feature_maps.iter().enumerate() {
        let key = format!("{key_name}.stage{}", i + 1);
        assert_close(
            &format!("{name} stage{}", i + 1),
            &fm.mean((2, 3))?,
            &get(&fx, &key)?,
            1e-4,
        )?;
    }
    if f.feature_maps.len() != cfg.layers.len() {
        bail!(
            "{name}: {} feature maps for {} stages",
            f.feature_maps.len(),
            cfg.layers.len()
        );
    }
    // forward_t is the logits of forward_features.
    assert_close(
        &format!("{name} forward_t"),
        &net.forward_t(&xs, false)?,
        &f.logits,
        0.0,
    )?;
    Ok(())
}

#[test]
fn resnet18_imagenet_stem_matches_torchvision() -> Result<()> {
    check_forward(
        "resnet18_imagenet",
        &ResNetConfig::resnet18(1000),
        &[2, 3, 64, 64],
    )
}

#[test]
fn resnet18_cifar_stem_matches_torchvision() -> Result<()> {
    let cfg = ResNetConfig::resnet18(100).with_stem(Stem::Cifar);
    check_forward("resnet18_cifar", &cfg, &[2, 3, 32, 32])
}

#[test]
fn resnet50_cifar_stem_matches_torchvision() -> Result<()> {
    let cfg = ResNetConfig::resnet50(100).with_stem(Stem::Cifar);
    check_forward("resnet50_cifar", &cfg, &[2, 3, 32, 32])
}

#[test]
fn resnet8x4_matches_repdistiller() -> Result<()> {
    check_forward("resnet8x4", &ResNetConfig::resnet8x4(100), &[2, 3, 32, 32])
}

#[test]
fn resnet32x4_matches_repdistiller() -> Result<()> {
    check_forward(
        "resnet32x4",
        &ResNetConfig::resnet32x4(100),
        &[2, 3, 32, 32],
    )
}

/// Parses `name:d0,d1;name2:...` into a sorted map.
fn parse_keys(s: &str) -> Result<BTreeMap<String, Vec<usize>>> {
    s.split(';')
        .map(|entry| {
            let (k, dims) = entry.split_once(':').context("bad key entry")?;
            let dims = dims
                .split(',')
                .filter(|d| !d.is_empty())
                .map(str::parse::<usize>)
                .collect::<std::result::Result<Vec<_>, _>>()?;
            Ok((k.to_string(), dims))
        })
        .collect()
}

#[test]
fn keys_shapes_and_parameter_counts_match_pytorch() -> Result<()> {
    let meta = metadata(FIXTURE)?;
    let mut cases: Vec<(String, ResNetConfig)> = vec![
        ("resnet18_imagenet".into(), ResNetConfig::resnet18(1000)),
        (
            "resnet18_cifar".into(),
            ResNetConfig::resnet18(100).with_stem(Stem::Cifar),
        ),
        (
            "resnet50_cifar".into(),
            ResNetConfig::resnet50(100).with_stem(Stem::Cifar),
        ),
    ];
    for name in ["resnet18", "resnet34", "resnet50", "resnet101", "resnet152"] {
        cases.push((name.into(), ResNetConfig::by_name(name, 1000)?));
    }
    for name in models::RESNET_NAMES.iter().skip(5) {
        cases.push((name.to_string(), ResNetConfig::by_name(name, 100)?));
    }
    for (name, cfg) in cases {
        let expected = parse_keys(meta.get(&format!("{name}.keys")).context("no keys")?)?;
        let (varmap, net) = build(&cfg)?;
        let ours: BTreeMap<String, Vec<usize>> = varmap
            .data()
            .lock()
            .map_err(|_| anyhow::anyhow!("poisoned"))?
            .iter()
            .map(|(k, v)| (k.clone(), v.dims().to_vec()))
            .collect();
        if ours != expected {
            let missing: Vec<_> = expected
                .iter()
                .filter(|(k, v)| ours.get(*k) != Some(v))
                .collect();
            let extra: Vec<_> = ours
                .iter()
                .filter(|(k, v)| expected.get(*k) != Some(v))
                .collect();
            bail!("{name}: keys differ; PyTorch only: {missing:?}; ours only: {extra:?}");
        }
        let count: usize = meta
            .get(&format!("{name}.num_parameters"))
            .context("no count")?
            .parse()?;
        if net.num_parameters() != count {
            bail!(
                "{name}: {} parameters, PyTorch {count}",
                net.num_parameters()
            );
        }
        if net.feature_dim() != cfg.feature_dim() || net.num_classes() != cfg.num_classes {
            bail!("{name}: feature_dim / num_classes disagree with the config");
        }
    }
    Ok(())
}

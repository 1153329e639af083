//! Training-mode forward and backward against PyTorch (fixtures/gen_models.py): the
//! cross-entropy loss, parameter gradients and updated batch-norm running statistics,
//! for RepDistiller's resnet8 (CIFAR stem) and torchvision's resnet18 (ImageNet stem,
//! through the padded max-pool).

mod common;

use anyhow::{Context, Result};
use candle_core::{DType, Device, ModuleT, Tensor};
use candle_nn::{VarBuilder, VarMap};
use common::{assert_close, fill, formula, get, load};
use models::{ResNet, ResNetConfig};

fn check_train(
    prefix: &str,
    cfg: &ResNetConfig,
    xs_shape: &[usize],
    labels: &[u32],
    grads: &[&str],
    stats: &[&str],
) -> Result<()> {
    let fx = load("resnet_train.safetensors")?;
    let varmap = VarMap::new();
    let net = ResNet::new(
        cfg,
        VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu),
    )?;
    fill(&varmap)?;
    let xs = formula("input", xs_shape, -2.0, 2.0)?;
    let labels = Tensor::new(labels, &Device::Cpu)?;
    let logits = net.forward_t(&xs, true)?;
    let loss = candle_nn::loss::cross_entropy(&logits, &labels)?;
    assert_close(
        &format!("{prefix} logits"),
        &logits,
        &get(&fx, &format!("{prefix}.logits"))?,
        1e-4,
    )?;
    assert_close(
        &format!("{prefix} loss"),
        &loss.reshape(1)?,
        &get(&fx, &format!("{prefix}.loss"))?,
        1e-5,
    )?;
    let g = loss.backward()?;
    let vars = varmap
        .data()
        .lock()
        .map_err(|_| anyhow::anyhow!("poisoned"))?;
    for name in grads {
        let var = vars
            .get(*name)
            .with_context(|| format!("no variable {name}"))?;
        let grad = g
            .get(var.as_tensor())
            .with_context(|| format!("no gradient for {name}"))?;
        assert_close(
            &format!("{prefix} grad {name}"),
            grad,
            &get(&fx, &format!("{prefix}.grad.{name}"))?,
            1e-4,
        )?;
    }
    for name in stats {
        let var = vars
            .get(*name)
            .with_context(|| format!("no variable {name}"))?;
        assert_close(
            &format!("{prefix} {name}"),
            var.as_tensor(),
            &get(&fx, &format!("{prefix}.stat.{name}"))?,
            1e-5,
        )?;
        // Running statistics never receive a gradient.
        anyhow::ensure!(g.get(var.as_tensor()).is_none(), "{name} has a gradient");
    }
    Ok(())
}

#[test]
fn resnet8_train_step_matches_pytorch() -> Result<()> {
    check_train(
        "resnet8",
        &ResNetConfig::resnet8(10),
        &[4, 3, 32, 32],
        &[3, 0, 7, 9],
        &[
            "conv1.weight",
            "fc.weight",
            "fc.bias",
            "layer3.0.conv1.weight",
            "layer2.0.bn1.weight",
        ],
        &[
            "bn1.running_mean",
            "bn1.running_var",
            "layer2.0.downsample.1.running_mean",
            "layer3.0.bn2.running_var",
        ],
    )
}

#[test]
fn resnet18_imagenet_stem_train_step_matches_pytorch() -> Result<()> {
    check_train(
        "resnet18_imagenet",
        &ResNetConfig::resnet18(10),
        &[2, 3, 64, 64],
        &[1, 8],
        &[
            "conv1.weight",
            "fc.weight",
            "layer4.1.bn2.weight",
            "bn1.bias",
        ],
        &[
            "bn1.running_mean",
            "bn1.running_var",
            "layer4.1.bn2.running_var",
        ],
    )
}

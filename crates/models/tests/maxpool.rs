//! `MaxPool2d` (padded, with backward) against `F.max_pool2d` (fixtures/gen_models.py):
//! values and gradients, tied maxima included, for the custom op and the tensor-op path.

mod common;

use anyhow::Result;
use candle_core::{Device, Tensor, Var};
use common::{assert_close, get, load};
use models::{max_pool2d_with_tensor_ops, MaxPool2d};

const CASES: [(usize, usize, usize, &str); 5] = [
    (3, 2, 1, "k3s2p1"),
    (3, 2, 1, "k3s2p1_ties"),
    (3, 1, 1, "k3s1p1_ties"),
    (2, 2, 0, "k2s2p0"),
    (5, 3, 2, "k5s3p2"),
];

#[test]
fn custom_op_matches_torch_values_and_gradients() -> Result<()> {
    let fx = load("maxpool.safetensors")?;
    for (k, s, p, name) in CASES {
        let x = Var::from_tensor(&get(&fx, &format!("{name}.x"))?)?;
        let y = MaxPool2d::new(k, s, p)?.forward(x.as_tensor())?;
        assert_close(
            &format!("{name} y"),
            &y,
            &get(&fx, &format!("{name}.y"))?,
            0.0,
        )?;
        let upstream = get(&fx, &format!("{name}.g"))?;
        let grads = (y * upstream)?.sum_all()?.backward()?;
        let grad = grads
            .get(x.as_tensor())
            .ok_or_else(|| anyhow::anyhow!("no grad"))?;
        assert_close(
            &format!("{name} grad"),
            grad,
            &get(&fx, &format!("{name}.grad"))?,
            1e-6,
        )?;
    }
    Ok(())
}

#[test]
fn custom_op_handles_strided_inputs() -> Result<()> {
    let fx = load("maxpool.safetensors")?;
    let x = get(&fx, "k3s2p1.x")?;
    // The same values behind a transposed (non-contiguous) layout.
    let xt = Var::from_tensor(&x.transpose(2, 3)?.contiguous()?)?;
    let y = MaxPool2d::new(3, 2, 1)?.forward(&xt.as_tensor().transpose(2, 3)?)?;
    assert_close("strided y", &y, &get(&fx, "k3s2p1.y")?, 0.0)?;
    let grads = (y * get(&fx, "k3s2p1.g")?)?.sum_all()?.backward()?;
    let grad = grads
        .get(xt.as_tensor())
        .ok_or_else(|| anyhow::anyhow!("no grad"))?;
    assert_close(
        "strided grad",
        &grad.transpose(2, 3)?,
        &get(&fx, "k3s2p1.grad")?,
        1e-6,
    )?;
    Ok(())
}

#[test]
fn tensor_op_path_matches_torch() -> Result<()> {
    let fx = load("maxpool.safetensors")?;
    for (k, s, p, name) in CASES {
        let x = Var::from_tensor(&get(&fx, &format!("{name}.x"))?)?;
        let y = max_pool2d_with_tensor_ops(x.as_tensor(), k, s, p)?;
        assert_close(
            &format!("{name} y (tensor ops)"),
            &y,
            &get(&fx, &format!("{name}.y"))?,
            0.0,
        )?;
        if name.ends_with("ties") {
            continue; // ties share the gradient on this path (documented)
        }
        let grads = (y * get(&fx, &format!("{name}.g"))?)?
            .sum_all()?
            .backward()?;
        let grad = grads
            .get(x.as_tensor())
            .ok_or_else(|| anyhow::anyhow!("no grad"))?;
        assert_close(
            &format!("{name} grad (tensor ops)"),
            grad,
            &get(&fx, &format!("{name}.grad"))?,
            1e-6,
        )?;
    }
    Ok(())
}

#[test]
fn bad_arguments_are_errors() -> Result<()> {
    let e = MaxPool2d::new(3, 2, 2)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    anyhow::ensure!(
        e.contains("padding 2"),
        "padding > kernel / 2 accepted: {e:?}"
    );
    anyhow::ensure!(MaxPool2d::new(0, 1, 0).is_err(), "kernel 0 accepted");
    let x = Tensor::zeros((2, 3, 4), candle_core::DType::F32, &Device::Cpu)?;
    let e = MaxPool2d::new(3, 2, 1)?
        .forward(&x)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    anyhow::ensure!(e.contains("(N, C, H, W)"), "rank-3 input accepted: {e:?}");
    let x = Tensor::zeros((1, 1, 1, 1), candle_core::DType::F32, &Device::Cpu)?;
    anyhow::ensure!(
        MaxPool2d::new(5, 1, 1)?.forward(&x).is_err(),
        "input smaller than kernel accepted"
    );
    Ok(())
}

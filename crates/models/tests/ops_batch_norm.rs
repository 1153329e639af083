//! `models::ops::{batch_norm, batch_norm_relu, batch_norm_add_relu}` against candle's stock
//! `BatchNorm::forward_t` (+ add, + relu): values, gradients and running statistics, in
//! training and evaluation, f32 and f64.

mod common;

use anyhow::Result;
use candle_core::{DType, Device, Tensor, Var};
use candle_nn::{BatchNorm, ModuleT};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

#[derive(Clone, Copy, Debug)]
enum Kind {
    Plain,
    Relu,
    AddRelu,
}

/// The fast op's batch norm, the stock one, and their shared (weight, bias) if affine.
type Twins = (BatchNorm, BatchNorm, Option<(Var, Var)>);

/// Two batch norms with the same affine parameters (shared variables) and equal but separate
/// running statistics.
fn twin_bns(rng: &mut ChaCha8Rng, c: usize, dtype: DType, affine: bool) -> Result<Twins> {
    let rm = common::randn(rng, &[c], dtype, 0.0, 0.5)?;
    let rv = common::randn(rng, &[c], dtype, 0.0, 0.3)?
        .abs()?
        .affine(1.0, 0.5)?;
    let eps = 1e-5;
    if affine {
        let w = Var::from_tensor(&common::randn(rng, &[c], dtype, 1.0, 0.5)?)?;
        let b = Var::from_tensor(&common::randn(rng, &[c], dtype, 0.0, 0.5)?)?;
        let mk = || {
            BatchNorm::new(
                c,
                rm.copy()?,
                rv.copy()?,
                w.as_tensor().clone(),
                b.as_tensor().clone(),
                eps,
            )
        };
        Ok((mk()?, mk()?, Some((w, b))))
    } else {
        let mk = || BatchNorm::new_no_bias(c, rm.copy()?, rv.copy()?, eps);
        Ok((mk()?, mk()?, None))
    }
}

fn check(
    rng: &mut ChaCha8Rng,
    dims: &[usize],
    kind: Kind,
    train: bool,
    affine: bool,
    dtype: DType,
    tol: f64,
) -> Result<()> {
    let what = format!("{dims:?} {kind:?} train={train} affine={affine} {dtype:?}");
    let c = dims[1];
    let (bn_fast, bn_stock, wb) = twin_bns(rng, c, dtype, affine)?;
    // Activations with a non-zero mean, as after a convolution.
    let x = Var::from_tensor(&common::randn(rng, dims, dtype, 0.7, 1.3)?)?;
    let r = Var::from_tensor(&common::randn(rng, dims, dtype, 0.0, 1.0)?)?;
    let fast = match kind {
        Kind::Plain => models::ops::batch_norm(&x, &bn_fast, train)?,
        Kind::Relu => models::ops::batch_norm_relu(&x, &bn_fast, train)?,
        Kind::AddRelu => models::ops::batch_norm_add_relu(&x, &bn_fast, &r, train)?,
    };
    let stock = bn_stock.forward_t(&x, train)?;
    let stock = match kind {
        Kind::Plain => stock,
        Kind::Relu => stock.relu()?,
        Kind::AddRelu => (stock + r.as_tensor())?.relu()?,
    };
    let e = common::rel_err_floor1(&fast, &stock)?;
    assert!(e < tol, "forward {what}: rel err {e}");
    common::assert_running_stats_close(&bn_fast, &bn_stock, tol, &what)?;

    let up = common::randn(rng, dims, dtype, 0.0, 1.0)?;
    let g_fast = (fast * &up)?.sum_all()?.backward()?;
    let g_stock = (stock * &up)?.sum_all()?.backward()?;
    let mut wrt = vec![("x", x.as_tensor().clone())];
    if let Some((w, b)) = &wb {
        wrt.push(("weight", w.as_tensor().clone()));
        wrt.push(("bias", b.as_tensor().clone()));
    }
    if matches!(kind, Kind::AddRelu) {
        wrt.push(("residual", r.as_tensor().clone()));
    }
    for (name, t) in wrt {
        let (Some(gf), Some(gs)) = (g_fast.get(&t), g_stock.get(&t)) else {
            panic!("{what}: missing gradient for {name}")
        };
        let e = common::rel_err_floor1(gf, gs)?;
        assert!(e < tol, "grad {name} {what}: rel err {e}");
    }
    Ok(())
}

fn random_dims(rng: &mut ChaCha8Rng) -> Vec<usize> {
    let b = rng.random_range(2..=6);
    let c = rng.random_range(1..=9);
    match rng.random_range(0..4) {
        0 => vec![b, c],
        1 => vec![b, c, rng.random_range(1..=7)],
        _ => vec![b, c, rng.random_range(1..=9), rng.random_range(1..=9)],
    }
}

fn run_random(seed: u64, dtype: DType, tol: f64) -> Result<()> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    for i in 0..40 {
        let dims = random_dims(&mut rng);
        let kind = [Kind::Plain, Kind::Relu, Kind::AddRelu][i % 3];
        let train = i % 4 != 3;
        let affine = i % 5 != 4;
        check(&mut rng, &dims, kind, train, affine, dtype, tol)?;
    }
    Ok(())
}

#[test]
fn batch_norm_ops_match_stock_on_random_shapes_f32() -> Result<()> {
    run_random(11, DType::F32, 1e-4)
}

#[test]
fn batch_norm_ops_match_stock_on_random_shapes_f64() -> Result<()> {
    run_random(12, DType::F64, 1e-10)
}

#[test]
fn batch_norm_ops_match_stock_on_resnet_shapes() -> Result<()> {
    let mut rng = ChaCha8Rng::seed_from_u64(13);
    for dims in [
        [8, 16, 32, 32],
        [8, 32, 16, 16],
        [16, 64, 8, 8],
        [16, 128, 4, 4],
    ] {
        for kind in [Kind::Plain, Kind::Relu, Kind::AddRelu] {
            for train in [true, false] {
                check(&mut rng, &dims, kind, train, true, DType::F32, 1e-4)?;
            }
        }
        check(&mut rng, &dims, Kind::Relu, true, true, DType::F64, 1e-10)?;
    }
    Ok(())
}

#[test]
fn batch_norm_ops_reject_bad_inputs() -> Result<()> {
    let mut rng = ChaCha8Rng::seed_from_u64(14);
    let (bn, _, _) = twin_bns(&mut rng, 4, DType::F32, true)?;
    let x = Tensor::zeros((2, 3, 4, 4), DType::F32, &Device::Cpu)?;
    let err = models::ops::batch_norm_relu(&x, &bn, true)
        .err()
        .map(|e| e.to_string());
    assert!(
        err.as_deref().is_some_and(|e| e.contains("channels")),
        "{err:?}"
    );
    let x = Tensor::zeros((1, 4, 1, 1), DType::F32, &Device::Cpu)?;
    let err = models::ops::batch_norm(&x, &bn, true)
        .err()
        .map(|e| e.to_string());
    assert!(
        err.as_deref()
            .is_some_and(|e| e.contains("more than one value")),
        "{err:?}"
    );
    let x = Tensor::zeros((2, 4, 3, 3), DType::F32, &Device::Cpu)?;
    let r = Tensor::zeros((2, 4, 3, 2), DType::F32, &Device::Cpu)?;
    let err = models::ops::batch_norm_add_relu(&x, &bn, &r, true)
        .err()
        .map(|e| e.to_string());
    assert!(
        err.as_deref().is_some_and(|e| e.contains("residual")),
        "{err:?}"
    );
    let x = Tensor::zeros(4, DType::F32, &Device::Cpu)?;
    let err = models::ops::batch_norm(&x, &bn, false)
        .err()
        .map(|e| e.to_string());
    assert!(
        err.as_deref().is_some_and(|e| e.contains("(B, C, ...)")),
        "{err:?}"
    );
    Ok(())
}

//! `nt_xent` against PyTorch (lightly's NTXentLoss written out in `fixtures/gen_fixtures.py`).

mod common;

use anyhow::Result;
use candle_core::{Device, Tensor, Var};
use common::{assert_close, Fixture, DTYPES};

#[test]
fn nt_xent_matches_pytorch() -> Result<()> {
    let fx = Fixture::load("nt_xent")?;
    for case in fx.cases() {
        for (dtype, tol) in DTYPES {
            let what = format!("nt_xent {case} {dtype:?}");
            let z_a = Var::from_tensor(&fx.get(&case, "z_a", dtype)?)?;
            let z_b = Var::from_tensor(&fx.get(&case, "z_b", dtype)?)?;
            let loss = losses::nt_xent(&z_a, &z_b, fx.scalar(&case, "temperature")?)?;
            assert_eq!(loss.dtype(), dtype);
            assert_close(
                &format!("{what} loss"),
                &loss,
                &fx.get(&case, "loss", dtype)?,
                tol,
            )?;
            let grads = loss.backward()?;
            let g_a = grads
                .get(&z_a)
                .ok_or_else(|| anyhow::anyhow!("no grad for z_a"))?;
            let g_b = grads
                .get(&z_b)
                .ok_or_else(|| anyhow::anyhow!("no grad for z_b"))?;
            assert_close(
                &format!("{what} grad z_a"),
                g_a,
                &fx.get(&case, "grad_z_a", dtype)?,
                tol,
            )?;
            assert_close(
                &format!("{what} grad z_b"),
                g_b,
                &fx.get(&case, "grad_z_b", dtype)?,
                tol,
            )?;
        }
    }
    Ok(())
}

#[test]
fn nt_xent_rejects_bad_input() -> Result<()> {
    let dev = Device::Cpu;
    let a = Tensor::zeros((4, 3), candle_core::DType::F32, &dev)?;
    let cases: Vec<(Tensor, Tensor, f64, &str)> = vec![
        (
            a.clone(),
            Tensor::zeros((4, 2), candle_core::DType::F32, &dev)?,
            0.5,
            "same shape",
        ),
        (a.flatten_all()?, a.flatten_all()?, 0.5, "rank 2"),
        (a.clone(), a.clone(), 0.0, "temperature"),
        (a.clone(), a.clone(), -1.0, "temperature"),
        (a.clone(), a.clone(), f64::NAN, "temperature"),
        (a.clone(), a.clone(), f64::INFINITY, "temperature"),
        (a.narrow(0, 0, 1)?, a.narrow(0, 0, 1)?, 0.5, "N >= 2"),
        (
            a.clone(),
            a.to_dtype(candle_core::DType::F64)?,
            0.5,
            "dtype",
        ),
        (
            a.to_dtype(candle_core::DType::U32)?,
            a.to_dtype(candle_core::DType::U32)?,
            0.5,
            "float",
        ),
    ];
    for (x, y, t, needle) in cases {
        let err = match losses::nt_xent(&x, &y, t) {
            Ok(_) => anyhow::bail!("nt_xent accepted {:?} {:?} t={t}", x.dims(), y.dims()),
            Err(e) => e.to_string(),
        };
        assert!(
            err.contains("nt_xent") && err.contains(needle),
            "message {err:?} lacks {needle:?}"
        );
    }
    Ok(())
}

#[test]
fn nt_xent_blocked_matches_pytorch() -> Result<()> {
    let fx = Fixture::load("nt_xent")?;
    for case in fx.cases() {
        for (dtype, tol) in DTYPES {
            for block in [1, 3, 1024] {
                let what = format!("nt_xent_blocked {case} {dtype:?} block {block}");
                let z_a = Var::from_tensor(&fx.get(&case, "z_a", dtype)?)?;
                let z_b = Var::from_tensor(&fx.get(&case, "z_b", dtype)?)?;
                let loss =
                    losses::nt_xent_blocked(&z_a, &z_b, fx.scalar(&case, "temperature")?, block)?;
                assert_eq!(loss.dtype(), dtype);
                assert_close(
                    &format!("{what} loss"),
                    &loss,
                    &fx.get(&case, "loss", dtype)?,
                    tol,
                )?;
                let grads = loss.backward()?;
                let g_a = grads
                    .get(&z_a)
                    .ok_or_else(|| anyhow::anyhow!("no grad for z_a"))?;
                let g_b = grads
                    .get(&z_b)
                    .ok_or_else(|| anyhow::anyhow!("no grad for z_b"))?;
                assert_close(
                    &format!("{what} grad z_a"),
                    g_a,
                    &fx.get(&case, "grad_z_a", dtype)?,
                    tol,
                )?;
                assert_close(
                    &format!("{what} grad z_b"),
                    g_b,
                    &fx.get(&case, "grad_z_b", dtype)?,
                    tol,
                )?;
            }
        }
    }
    Ok(())
}

#[test]
fn nt_xent_blocked_agrees_with_plain_on_a_larger_batch() -> Result<()> {
    // Several full blocks and a ragged last one; the plain version is checked against PyTorch above.
    let dev = Device::Cpu;
    let pattern = |phase: f64| -> candle_core::Result<Tensor> {
        Tensor::arange(0f64, 300.0 * 16.0, &dev)?
            .reshape((300, 16))?
            .affine(0.731, phase)?
            .sin()
    };
    let z_a = Var::from_tensor(&pattern(0.0)?)?;
    let z_b = Var::from_tensor(&pattern(0.4)?)?;
    let plain = losses::nt_xent(&z_a, &z_b, 0.1)?;
    let blocked = losses::nt_xent_blocked(&z_a, &z_b, 0.1, 64)?;
    assert_close("value", &blocked, &plain, 1e-12)?;
    let (gp, gb) = (plain.backward()?, blocked.backward()?);
    for v in [&z_a, &z_b] {
        let want = gp.get(v).ok_or_else(|| anyhow::anyhow!("no plain grad"))?;
        let got = gb
            .get(v)
            .ok_or_else(|| anyhow::anyhow!("no blocked grad"))?;
        assert_close("grad", got, want, 1e-10)?;
    }
    let zeros = Tensor::zeros((4, 3), candle_core::DType::F32, &dev)?;
    let err = losses::nt_xent_blocked(&zeros, &zeros, 0.5, 0)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(
        err.contains("nt_xent_blocked") && err.contains("block_size"),
        "{err:?}"
    );
    let err = losses::nt_xent_blocked(&zeros, &zeros.narrow(1, 0, 2)?, 0.5, 8)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(
        err.contains("nt_xent_blocked") && err.contains("same shape"),
        "{err:?}"
    );
    Ok(())
}

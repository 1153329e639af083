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

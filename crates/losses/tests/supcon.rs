//! `nt_xent_multi` and `supcon` against a one-anchor-at-a-time PyTorch reference.

mod common;

use anyhow::Result;
use candle_core::{DType, Device, Tensor, Var};
use common::{assert_close, Fixture, DTYPES};

#[test]
fn nt_xent_multi_matches_pytorch() -> Result<()> {
    let fx = Fixture::load("nt_xent_multi")?;
    for case in fx.cases() {
        for (dtype, tol) in DTYPES {
            let what = format!("nt_xent_multi {case} {dtype:?}");
            let stacked = fx.get(&case, "views", dtype)?;
            let vars = (0..stacked.dim(0)?)
                .map(|v| Var::from_tensor(&stacked.get(v)?))
                .collect::<candle_core::Result<Vec<_>>>()?;
            let views: Vec<Tensor> = vars.iter().map(|v| v.as_tensor().clone()).collect();
            let loss = losses::nt_xent_multi(&views, fx.scalar(&case, "temperature")?)?;
            assert_close(
                &format!("{what} loss"),
                &loss,
                &fx.get(&case, "loss", dtype)?,
                tol,
            )?;
            let grads = loss.backward()?;
            let got = vars
                .iter()
                .map(|v| {
                    grads
                        .get(v)
                        .cloned()
                        .ok_or_else(|| anyhow::anyhow!("no grad"))
                })
                .collect::<Result<Vec<_>>>()?;
            assert_close(
                &format!("{what} grad"),
                &Tensor::stack(&got, 0)?,
                &fx.get(&case, "grad_views", dtype)?,
                tol,
            )?;
        }
    }
    Ok(())
}

#[test]
fn nt_xent_multi_with_two_views_is_nt_xent() -> Result<()> {
    let fx = Fixture::load("nt_xent")?;
    for case in fx.cases() {
        let z_a = fx.get(&case, "z_a", DType::F64)?;
        let z_b = fx.get(&case, "z_b", DType::F64)?;
        let t = fx.scalar(&case, "temperature")?;
        let multi = losses::nt_xent_multi(&[z_a, z_b], t)?;
        assert_close(&case, &multi, &fx.get(&case, "loss", DType::F64)?, 1e-8)?;
    }
    Ok(())
}

#[test]
fn supcon_matches_pytorch() -> Result<()> {
    let fx = Fixture::load("supcon")?;
    for case in fx.cases() {
        for (dtype, tol) in DTYPES {
            let what = format!("supcon {case} {dtype:?}");
            let f = Var::from_tensor(&fx.get(&case, "features", dtype)?)?;
            let labels = fx.get(&case, "labels", dtype)?;
            let loss = losses::supcon(&f, &labels, fx.scalar(&case, "temperature")?)?;
            assert_eq!(loss.dtype(), dtype);
            assert_close(
                &format!("{what} loss"),
                &loss,
                &fx.get(&case, "loss", dtype)?,
                tol,
            )?;
            let grads = loss.backward()?;
            let g = grads.get(&f).ok_or_else(|| anyhow::anyhow!("no grad"))?;
            assert_close(
                &format!("{what} grad"),
                g,
                &fx.get(&case, "grad_features", dtype)?,
                tol,
            )?;
        }
    }
    Ok(())
}

#[test]
fn contrastive_reject_bad_input() -> Result<()> {
    let dev = Device::Cpu;
    let f = Tensor::zeros((4, 3), DType::F32, &dev)?;
    let check = |r: candle_core::Result<Tensor>, name: &str, needle: &str| -> Result<()> {
        let err = match r {
            Ok(_) => anyhow::bail!("{name} accepted bad input ({needle})"),
            Err(e) => e.to_string(),
        };
        assert!(
            err.contains(name) && err.contains(needle),
            "{err:?} lacks {needle:?}"
        );
        Ok(())
    };
    let labels = Tensor::new(&[0u32, 1, 0, 1], &dev)?;
    check(
        losses::supcon(&f, &Tensor::new(&[0u32, 1, 0], &dev)?, 0.1),
        "supcon",
        "labels",
    )?;
    check(
        losses::supcon(&f, &Tensor::new(&[0u32, 1, 2, 3], &dev)?, 0.1),
        "supcon",
        "positive",
    )?;
    check(
        losses::supcon(&f.flatten_all()?, &labels, 0.1),
        "supcon",
        "rank 2",
    )?;
    check(losses::supcon(&f, &labels, 0.0), "supcon", "temperature")?;
    check(
        losses::supcon(&f, &labels.to_dtype(DType::F32)?, 0.1),
        "supcon",
        "integer",
    )?;
    check(
        losses::nt_xent_multi(std::slice::from_ref(&f), 0.1),
        "nt_xent_multi",
        "2 views",
    )?;
    check(
        losses::nt_xent_multi(&[f.clone(), f.narrow(0, 0, 3)?], 0.1),
        "nt_xent_multi",
        "same shape",
    )?;
    check(
        losses::nt_xent_multi(&[f.clone(), f.clone()], f64::NAN),
        "nt_xent_multi",
        "temperature",
    )?;
    Ok(())
}

//! `SimClrDistillation` against the PyTorch design: (1 − α)·NT-Xent + α·KD.

mod common;

use anyhow::Result;
use candle_core::{DType, Device, Tensor, Var};
use common::{assert_close, Fixture, DTYPES};
use losses::{SimClrDistillation, SimClrDistillationConfig};

#[test]
fn simclr_distillation_matches_pytorch() -> Result<()> {
    let fx = Fixture::load("simclr_distillation")?;
    for case in fx.cases() {
        let cfg = SimClrDistillationConfig {
            temperature: fx.scalar(&case, "temperature")?,
            kd_temperature: fx.scalar(&case, "kd_temperature")?,
            alpha: fx.scalar(&case, "alpha")?,
        };
        let loss_fn = SimClrDistillation::new(cfg)?;
        for (dtype, tol) in DTYPES {
            let what = format!("SimClrDistillation {case} {dtype:?}");
            let s = Var::from_tensor(&fx.get(&case, "student", dtype)?)?;
            let t = fx.get(&case, "teacher", dtype)?;
            let z_a = Var::from_tensor(&fx.get(&case, "z_a", dtype)?)?;
            let z_b = Var::from_tensor(&fx.get(&case, "z_b", dtype)?)?;
            let out = loss_fn.forward(&s, &t, &z_a, &z_b)?;
            for (name, got) in [
                ("total", &out.total),
                ("contrastive", &out.contrastive),
                ("distillation", &out.distillation),
            ] {
                assert_eq!(got.dims(), &[] as &[usize]);
                assert_close(
                    &format!("{what} {name}"),
                    got,
                    &fx.get(&case, name, dtype)?,
                    tol,
                )?;
            }
            let grads = out.total.backward()?;
            for (name, var) in [("student", &s), ("z_a", &z_a), ("z_b", &z_b)] {
                // With α = 0 (or 1) candle prunes the zero-weighted branch: no entry means 0.
                let g = match grads.get(var) {
                    Some(g) => g.clone(),
                    None => var.zeros_like()?,
                };
                assert_close(
                    &format!("{what} grad {name}"),
                    &g,
                    &fx.get(&case, &format!("grad_{name}"), dtype)?,
                    tol,
                )?;
            }
        }
    }
    Ok(())
}

#[test]
fn simclr_distillation_default_and_bad_config() -> Result<()> {
    let d = SimClrDistillationConfig::default();
    assert_eq!((d.temperature, d.kd_temperature, d.alpha), (0.5, 4.0, 0.5));
    for (cfg, needle) in [
        (SimClrDistillationConfig { alpha: -0.1, ..d }, "alpha"),
        (SimClrDistillationConfig { alpha: 1.01, ..d }, "alpha"),
        (
            SimClrDistillationConfig {
                alpha: f64::NAN,
                ..d
            },
            "alpha",
        ),
        (
            SimClrDistillationConfig {
                temperature: 0.0,
                ..d
            },
            "temperature",
        ),
        (
            SimClrDistillationConfig {
                kd_temperature: f64::INFINITY,
                ..d
            },
            "kd_temperature",
        ),
    ] {
        let err = match SimClrDistillation::new(cfg) {
            Ok(_) => anyhow::bail!("accepted {cfg:?}"),
            Err(e) => e.to_string(),
        };
        assert!(
            err.contains("SimClrDistillation") && err.contains(needle),
            "{err:?} lacks {needle:?}"
        );
    }
    // Shape errors surface from forward with the inner function's name.
    let loss_fn = SimClrDistillation::new(d)?;
    let dev = Device::Cpu;
    let logits = Tensor::zeros((2, 3), DType::F32, &dev)?;
    let z = Tensor::zeros((2, 4), DType::F32, &dev)?;
    let err = loss_fn
        .forward(&logits, &Tensor::zeros((2, 4), DType::F32, &dev)?, &z, &z)
        .map(|_| ())
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(
        err.contains("kd_loss") && err.contains("class counts"),
        "{err:?}"
    );
    let err = loss_fn
        .forward(&logits, &logits, &z, &z.narrow(1, 0, 3)?)
        .map(|_| ())
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(
        err.contains("nt_xent") && err.contains("same shape"),
        "{err:?}"
    );
    Ok(())
}

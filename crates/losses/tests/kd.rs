//! `kd_loss` against `F.kl_div(F.log_softmax(s/T), F.softmax(t/T), 'batchmean') * T²`.

mod common;

use anyhow::Result;
use candle_core::{DType, Device, Tensor, Var};
use common::{assert_close, Fixture, DTYPES};

#[test]
fn kd_loss_matches_pytorch() -> Result<()> {
    let fx = Fixture::load("kd")?;
    for case in fx.cases() {
        for (dtype, tol) in DTYPES {
            let what = format!("kd_loss {case} {dtype:?}");
            let s = Var::from_tensor(&fx.get(&case, "student", dtype)?)?;
            let t = Var::from_tensor(&fx.get(&case, "teacher", dtype)?)?;
            let loss = losses::kd_loss(&s, &t, fx.scalar(&case, "temperature")?)?;
            assert_eq!(loss.dtype(), dtype);
            assert_close(
                &format!("{what} loss"),
                &loss,
                &fx.get(&case, "loss", dtype)?,
                tol,
            )?;
            let grads = loss.backward()?;
            let g = grads
                .get(&s)
                .ok_or_else(|| anyhow::anyhow!("no grad for student"))?;
            assert_close(
                &format!("{what} grad"),
                g,
                &fx.get(&case, "grad_student", dtype)?,
                tol,
            )?;
            assert!(
                grads.get(&t).is_none(),
                "{what}: gradient flowed into the teacher"
            );
        }
    }
    Ok(())
}

#[test]
fn kd_loss_rejects_bad_input() -> Result<()> {
    let dev = Device::Cpu;
    let s = Tensor::zeros((4, 10), DType::F32, &dev)?;
    let cases: Vec<(Tensor, Tensor, f64, &str)> = vec![
        (
            s.clone(),
            Tensor::zeros((4, 9), DType::F32, &dev)?,
            4.0,
            "class counts",
        ),
        (
            s.clone(),
            Tensor::zeros((3, 10), DType::F32, &dev)?,
            4.0,
            "batch sizes",
        ),
        (
            s.reshape((4, 10, 1))?,
            s.reshape((4, 10, 1))?,
            4.0,
            "rank 2",
        ),
        (s.clone(), s.clone(), 0.0, "temperature"),
        (s.clone(), s.clone(), f64::NEG_INFINITY, "temperature"),
    ];
    for (x, y, t, needle) in cases {
        let err = match losses::kd_loss(&x, &y, t) {
            Ok(_) => anyhow::bail!("kd_loss accepted {:?} {:?} t={t}", x.dims(), y.dims()),
            Err(e) => e.to_string(),
        };
        assert!(
            err.contains("kd_loss") && err.contains(needle),
            "message {err:?} lacks {needle:?}"
        );
    }
    Ok(())
}

//! SEED, CRD, RKD, PKT, SP, AT and FitNet against their PyTorch references
//! (`fixtures/gen_fixtures.py`), and their input checks.

mod common;

use std::collections::HashMap;

use anyhow::Result;
use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use common::{assert_err, check_fixture};

fn queue(fx: &common::Fixture, case: &str, like: &Tensor) -> Result<Option<Tensor>> {
    Ok(if fx.has(case, "queue") {
        Some(fx.get(case, "queue", like.dtype())?)
    } else {
        None
    })
}

#[test]
fn seed_matches_pytorch() -> Result<()> {
    check_fixture(
        "seed",
        &["student", "teacher"],
        &["student"],
        &["teacher"],
        |fx, c, x| {
            let q = queue(fx, c, &x[0]).map_err(candle_core::Error::wrap)?;
            let ts = fx
                .scalar(c, "student_temperature")
                .map_err(candle_core::Error::wrap)?;
            let tt = fx
                .scalar(c, "teacher_temperature")
                .map_err(candle_core::Error::wrap)?;
            losses::seed_loss(&x[0], &x[1], q.as_ref(), ts, tt)
        },
    )
}

#[test]
fn crd_matches_pytorch() -> Result<()> {
    check_fixture(
        "crd",
        &["student", "teacher"],
        &["student", "teacher"],
        &[],
        |fx, c, x| {
            let q = queue(fx, c, &x[0]).map_err(candle_core::Error::wrap)?;
            let t = fx
                .scalar(c, "temperature")
                .map_err(candle_core::Error::wrap)?;
            losses::crd_loss(&x[0], &x[1], q.as_ref(), t)
        },
    )
}

#[test]
fn rkd_pkt_sp_at_match_pytorch() -> Result<()> {
    let io = (
        &["student", "teacher"][..],
        &["student"][..],
        &["teacher"][..],
    );
    check_fixture("rkd_distance", io.0, io.1, io.2, |_, _, x| {
        losses::rkd_distance(&x[0], &x[1])
    })?;
    check_fixture("rkd_angle", io.0, io.1, io.2, |_, _, x| {
        losses::rkd_angle(&x[0], &x[1])
    })?;
    check_fixture("pkt", io.0, io.1, io.2, |_, _, x| {
        losses::pkt_loss(&x[0], &x[1])
    })?;
    check_fixture("sp", io.0, io.1, io.2, |_, _, x| {
        losses::sp_loss(&x[0], &x[1])
    })?;
    check_fixture("at", io.0, io.1, io.2, |_, _, x| {
        losses::at_loss(&x[0], &x[1])
    })
}

#[test]
fn fitnet_matches_pytorch() -> Result<()> {
    check_fixture(
        "fitnet",
        &["student", "teacher", "weight", "bias"],
        &["student", "weight", "bias"],
        &["teacher"],
        |_, _, x| {
            let (c_t, c_s) = (x[2].dim(0)?, x[2].dim(1)?);
            let params = HashMap::from([
                ("weight".to_string(), x[2].clone()),
                ("bias".to_string(), x[3].clone()),
            ]);
            let vb = VarBuilder::from_tensors(params, x[0].dtype(), x[0].device());
            losses::FitNetHint::new(c_s, c_t, vb)?.forward(&x[0], &x[1])
        },
    )
}

#[test]
fn embedding_queue_is_fifo() -> Result<()> {
    let dev = Device::Cpu;
    let mut q = losses::EmbeddingQueue::new(4, 2, DType::F64, &dev)?;
    assert!(q.is_empty());
    assert_err(q.embeddings(), &["empty"])?;
    let rows = |a: f64, n: usize| {
        Tensor::arange(a, a + n as f64, &dev)?
            .unsqueeze(1)?
            .repeat((1, 2))
    };
    q.push(&rows(0.0, 3)?)?;
    q.push(&rows(3.0, 3)?.to_dtype(DType::F32)?)?;
    assert_eq!((q.len(), q.capacity(), q.dim()), (4, 4, 2));
    let first_col: Vec<f64> = q.embeddings()?.narrow(1, 0, 1)?.flatten_all()?.to_vec1()?;
    assert_eq!(first_col, vec![2.0, 3.0, 4.0, 5.0]);
    q.push(&rows(10.0, 9)?)?;
    let first_col: Vec<f64> = q.embeddings()?.narrow(1, 0, 1)?.flatten_all()?.to_vec1()?;
    assert_eq!(first_col, vec![15.0, 16.0, 17.0, 18.0]);
    assert_err(
        q.push(&Tensor::zeros((2, 3), DType::F64, &dev)?),
        &["EmbeddingQueue::push", "[2, 3]"],
    )?;
    assert_err(
        losses::EmbeddingQueue::new(0, 2, DType::F32, &dev),
        &["capacity"],
    )?;
    assert_err(
        losses::EmbeddingQueue::new(4, 2, DType::U32, &dev),
        &["float"],
    )?;
    Ok(())
}

#[test]
fn distillation_losses_reject_bad_input() -> Result<()> {
    let dev = Device::Cpu;
    let z = |n: usize, d: usize| Tensor::ones((n, d), DType::F32, &dev);
    let maps = |n: usize, c: usize, h: usize| Tensor::ones((n, c, h, h), DType::F32, &dev);
    assert_err(
        losses::seed_loss(&z(4, 3)?, &z(4, 2)?, None, 0.2, 0.1),
        &["seed_loss", "same shape"],
    )?;
    assert_err(
        losses::seed_loss(&z(4, 3)?, &z(4, 3)?, Some(&z(5, 2)?), 0.2, 0.1),
        &["seed_loss", "queue"],
    )?;
    assert_err(
        losses::seed_loss(&z(4, 3)?, &z(4, 3)?, None, 0.2, 0.0),
        &["seed_loss", "teacher_temperature"],
    )?;
    assert_err(
        losses::crd_loss(&z(4, 3)?, &z(3, 3)?, None, 0.1),
        &["crd_loss", "same shape"],
    )?;
    assert_err(
        losses::crd_loss(&z(4, 3)?, &z(4, 3)?, None, f64::NAN),
        &["crd_loss", "temperature"],
    )?;
    assert_err(
        losses::crd_loss(&z(4, 3)?.flatten_all()?, &z(4, 3)?, None, 0.1),
        &["crd_loss", "rank 2"],
    )?;
    assert_err(
        losses::rkd_distance(&z(4, 3)?, &z(5, 3)?),
        &["rkd_distance", "batch size"],
    )?;
    assert_err(
        losses::rkd_distance(&z(1, 3)?, &z(1, 3)?),
        &["rkd_distance", "N >= 2"],
    )?;
    assert_err(
        losses::rkd_angle(&maps(2, 2, 2)?, &z(2, 3)?),
        &["rkd_angle", "rank 2"],
    )?;
    assert_err(
        losses::pkt_loss(&z(4, 3)?, &z(2, 3)?),
        &["pkt_loss", "batch size"],
    )?;
    assert_err(
        losses::sp_loss(&maps(4, 2, 2)?, &maps(3, 2, 2)?),
        &["sp_loss", "same N"],
    )?;
    assert_err(
        losses::at_loss(&maps(2, 2, 4)?, &maps(2, 2, 2)?),
        &["at_loss", "H and W"],
    )?;
    assert_err(
        losses::at_loss(&z(2, 2)?, &z(2, 2)?),
        &["at_loss", "rank 4"],
    )?;
    let vb = VarBuilder::zeros(DType::F32, &dev);
    let hint = losses::FitNetHint::new(2, 3, vb.clone())?;
    assert_err(
        hint.forward(&maps(2, 3, 2)?, &maps(2, 3, 2)?),
        &["FitNetHint::forward", "[2, 3, 2, 2]"],
    )?;
    assert_err(
        hint.forward(&maps(2, 2, 2)?, &maps(2, 3, 3)?),
        &["FitNetHint::forward"],
    )?;
    assert_err(losses::FitNetHint::new(0, 3, vb), &["FitNetHint::new"])?;
    Ok(())
}

//! The teacher recipe's pieces against PyTorch (fixtures from `fixtures/gen_recipe.py`): label
//! smoothing as `F.cross_entropy(label_smoothing=ε)`, the weight average as
//! `AveragedModel(get_ema_multi_avg_fn(decay), use_buffers=True)`; and the test-time flip, the
//! linear schedule.

mod common;

use std::collections::HashMap;
use std::sync::atomic::AtomicBool;

use anyhow::Result;
use candle_core::{Device, Tensor, Var};
use candle_nn::VarMap;
use trainer::config::{OptimConfig, ScheduleKind};
use trainer::engine::ema::update_average;
use trainer::engine::Ctx;
use trainer::objective::cross_entropy_smoothed;

fn fixture() -> Result<HashMap<String, Tensor>> {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/recipe.safetensors");
    Ok(candle_core::safetensors::load(path, &Device::Cpu)?)
}

fn max_rel(a: &Tensor, b: &Tensor) -> Result<f32> {
    let diff = (a - b)?.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()?;
    let scale = b
        .abs()?
        .flatten_all()?
        .max(0)?
        .to_scalar::<f32>()?
        .max(1e-6);
    Ok(diff / scale)
}

#[test]
fn label_smoothing_matches_torch_cross_entropy() -> Result<()> {
    let fx = fixture()?;
    let labels = fx["ls.labels"].to_dtype(candle_core::DType::U32)?;
    let mut cases = 0;
    while let Some(eps) = fx.get(&format!("ls.{cases}.eps")) {
        let eps = eps.to_vec1::<f32>()?[0] as f64;
        let logits = Var::from_tensor(&fx["ls.logits"])?;
        let loss = cross_entropy_smoothed(logits.as_tensor(), &labels, eps)?;
        let want = &fx[&format!("ls.{cases}.loss")];
        let rel = max_rel(&loss.reshape(1)?, want)?;
        assert!(rel < 1e-6, "ε = {eps}: loss {loss} vs {want} ({rel})");
        let grads = loss.backward()?;
        let g = grads.get(logits.as_tensor()).expect("a gradient");
        let rel = max_rel(g, &fx[&format!("ls.{cases}.grad")])?;
        assert!(rel < 1e-6, "ε = {eps}: gradient off by {rel}");
        cases += 1;
    }
    assert_eq!(cases, 3);
    Ok(())
}

#[test]
fn weight_average_matches_torch_averaged_model() -> Result<()> {
    let fx = fixture()?;
    let decay = fx["ema.decay"].to_vec1::<f32>()?[0] as f64;
    let names = [
        "0.weight",
        "0.bias",
        "1.weight",
        "1.bias",
        "1.running_mean",
        "1.running_var",
    ];
    let (model, avg) = (VarMap::new(), VarMap::new());
    for n in names {
        let shape = fx[&format!("ema.0.model.{n}")].shape().clone();
        for vm in [&model, &avg] {
            vm.data().lock().unwrap().insert(
                n.to_string(),
                Var::zeros(shape.clone(), candle_core::DType::F32, &Device::Cpu)?,
            );
        }
    }
    let mut step = 0;
    while fx.contains_key(&format!("ema.{step}.model.0.weight")) {
        for n in names {
            model.data().lock().unwrap()[n].set(&fx[&format!("ema.{step}.model.{n}")])?;
        }
        update_average(&avg, &model, decay, step == 0)?;
        for n in names {
            let got = avg.data().lock().unwrap()[n].as_tensor().clone();
            let rel = max_rel(&got, &fx[&format!("ema.{step}.avg.{n}")])?;
            assert!(rel < 1e-6, "update {step}, {n}: off by {rel}");
        }
        step += 1;
    }
    assert_eq!(step, 6);
    Ok(())
}

#[test]
fn test_time_flip_averages_an_image_and_its_mirror() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let mut cfg = common::tiny(dir.path());
    cfg.eval.tta_flip = true;
    let split = trainer::run::load_data(&cfg)?;
    let no = AtomicBool::new(false);
    let ctx = Ctx::new(&cfg, &split, &no)?;
    let net = trainer::net::Net::new("resnet8", 10, 32, None, 5, &Device::Cpu)?;
    let f = ctx.evaluator()?.features(&net, false)?;
    let p = augment::presets::eval(32)?;
    let x = p.apply_batch(&split.test.images, (32, 32), &[3], 0, 0, 0)?;
    let b = net.backbone();
    let plain = b.forward_features(&x, false)?.logits;
    let mirrored = b
        .forward_features(&augment::functional::hflip(&x)?, false)?
        .logits;
    let want = ((plain.clone() + mirrored)? * 0.5)?;
    let classes = f.test.classes;
    let got = Tensor::from_slice(
        &f.test.logits[3 * classes..4 * classes],
        (1, classes),
        &Device::Cpu,
    )?;
    assert!(max_rel(&got, &want)? < 1e-5);
    // Without the flip, the image alone.
    let mut off = cfg.clone();
    off.eval.tta_flip = false;
    let f = ctx.with_config(&off).evaluator()?.features(&net, false)?;
    let got = Tensor::from_slice(
        &f.test.logits[3 * classes..4 * classes],
        (1, classes),
        &Device::Cpu,
    )?;
    assert!(max_rel(&got, &plain)? < 1e-5);
    assert!(max_rel(&plain, &want)? > 1e-4, "the mirror changed nothing");
    Ok(())
}

#[test]
fn linear_schedule_decays_linearly_to_zero_after_the_warm_up() {
    let cfg = OptimConfig {
        epochs: 4,
        lr: 0.4,
        warmup_epochs: 1.0,
        schedule: ScheduleKind::Linear,
        ..OptimConfig::default()
    };
    let spe = 10;
    let lr = |s| trainer::schedule::learning_rate(&cfg, s, spe);
    // Warm-up up to the peak, then a straight line that would reach 0 at the end of the run.
    assert!(lr(0) < lr(5) && lr(5) < lr(9));
    assert_eq!(lr(10), cfg.lr);
    let slope = lr(11) - lr(10);
    assert!(slope < 0.0);
    for s in 11..40 {
        assert!((lr(s + 1) - lr(s) - slope).abs() < 1e-12, "step {s}");
    }
    assert!((lr(10) + slope * 30.0).abs() < 1e-12);
}

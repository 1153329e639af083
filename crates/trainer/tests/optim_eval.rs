//! The optimizers and the kNN classifier against PyTorch / solo-learn references
//! (fixtures/gen_optim_eval.py writes the fixture).

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor, Var};
use trainer::config::{OptimConfig, OptimizerKind};
use trainer::optim::{Optimizer, Param};

type Result<T> = anyhow::Result<T>;

fn fixture() -> Result<HashMap<String, Tensor>> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/optim_eval.safetensors");
    Ok(candle_core::safetensors::load(path, &Device::Cpu)?)
}

fn max_rel(a: &Tensor, b: &Tensor) -> Result<f64> {
    let diff = (a - b)?.abs()?.max_all()?.to_scalar::<f64>()?;
    let scale = b.abs()?.max_all()?.to_scalar::<f64>()?.max(1e-12);
    Ok(diff / scale)
}

fn trajectory(kind: OptimizerKind, nesterov: bool, name: &str) -> Result<()> {
    let f = fixture()?;
    let w = Var::from_tensor(&f["w0"])?;
    let b = Var::from_tensor(&f["b0"])?;
    let params = vec![
        Param {
            name: "w".into(),
            var: w.clone(),
            decay: true,
        },
        Param {
            name: "b".into(),
            var: b.clone(),
            decay: false,
        },
    ];
    let cfg = OptimConfig {
        optimizer: kind,
        momentum: 0.9,
        nesterov,
        weight_decay: 0.05,
        lars_eta: 0.02,
        ..OptimConfig::default()
    };
    let mut opt = Optimizer::new(params, &cfg);
    let lrs = f["lrs"].to_vec1::<f64>()?;
    for (t, &lr) in lrs.iter().enumerate() {
        // A loss whose gradients are exactly the fixture's: Σ w ⊙ g_w + Σ b ⊙ g_b.
        let loss = ((w.as_tensor() * f["gw"].get(t)?)?.sum_all()?
            + (b.as_tensor() * f["gb"].get(t)?)?.sum_all()?)?;
        opt.step(&loss.backward()?, lr, 1.0)?;
        let (ew, eb) = (
            f[&format!("{name}.w")].get(t)?,
            f[&format!("{name}.b")].get(t)?,
        );
        let (rw, rb) = (max_rel(w.as_tensor(), &ew)?, max_rel(b.as_tensor(), &eb)?);
        assert!(
            rw < 1e-10 && rb < 1e-10,
            "{name} step {t}: relative error w {rw:e}, b {rb:e}"
        );
    }
    assert_eq!(w.dtype(), DType::F64);
    Ok(())
}

#[test]
fn sgd_momentum_weight_decay_groups_match_torch() -> Result<()> {
    trajectory(OptimizerKind::Sgd, false, "sgd")
}

#[test]
fn sgd_nesterov_matches_torch() -> Result<()> {
    trajectory(OptimizerKind::Sgd, true, "nesterov")
}

#[test]
fn adamw_matches_torch() -> Result<()> {
    trajectory(OptimizerKind::Adamw, false, "adamw")
}

#[test]
fn lars_matches_solo_learn() -> Result<()> {
    trajectory(OptimizerKind::Lars, false, "lars")
}

#[test]
fn optimizer_state_round_trips() -> Result<()> {
    let f = fixture()?;
    let make = || -> Result<(Var, Optimizer)> {
        let w = Var::from_tensor(&f["w0"])?;
        let cfg = OptimConfig {
            optimizer: OptimizerKind::Adamw,
            ..OptimConfig::default()
        };
        Ok((
            w.clone(),
            Optimizer::new(
                vec![Param {
                    name: "w".into(),
                    var: w,
                    decay: true,
                }],
                &cfg,
            ),
        ))
    };
    let step = |w: &Var, opt: &mut Optimizer, t: usize| -> Result<()> {
        let loss = (w.as_tensor() * f["gw"].get(t)?)?.sum_all()?;
        Ok(opt.step(&loss.backward()?, 0.1, 1.0)?)
    };
    let (w1, mut o1) = make()?;
    for t in 0..4 {
        step(&w1, &mut o1, t)?;
    }
    let (w2, mut o2) = make()?;
    for t in 0..2 {
        step(&w2, &mut o2, t)?;
    }
    // Restore the state of a 2-step optimizer into a fresh one, then take the last two steps.
    let state: HashMap<String, Tensor> = o2.state_tensors().into_iter().collect();
    assert!(state.contains_key("optimizer.first.w") && state.contains_key("optimizer.second.w"));
    let (_, mut o3) = make()?;
    let w3 = o3.params()[0].var.clone();
    w3.set(w2.as_tensor())?;
    o3.load_state(&state, o2.steps())?;
    for t in 2..4 {
        step(&w3, &mut o3, t)?;
    }
    assert_eq!(
        w3.as_tensor().to_vec2::<f64>()?,
        w1.as_tensor().to_vec2::<f64>()?
    );
    Ok(())
}

#[test]
fn weighted_knn_matches_solo_learn() -> Result<()> {
    let f = fixture()?;
    let train = f["knn.train"].flatten_all()?.to_vec1::<f32>()?;
    let test = f["knn.test"].flatten_all()?.to_vec1::<f32>()?;
    let train_labels: Vec<u32> = f["knn.train_labels"]
        .to_vec1::<i64>()?
        .iter()
        .map(|&l| l as u32)
        .collect();
    let pred: Vec<u32> = f["knn.pred"]
        .to_vec1::<i64>()?
        .iter()
        .map(|&l| l as u32)
        .collect();
    let acc = trainer::eval::knn_accuracy(&train, &train_labels, &test, &pred, 8, 4, 7, 0.1)?;
    assert_eq!(acc, 1.0, "every prediction equals solo-learn's");
    let wrong: Vec<u32> = pred.iter().map(|p| (p + 1) % 4).collect();
    assert_eq!(
        trainer::eval::knn_accuracy(&train, &train_labels, &test, &wrong, 8, 4, 7, 0.1)?,
        0.0
    );
    Ok(())
}

#[test]
fn warmup_cosine_and_step_schedules() -> Result<()> {
    use trainer::config::ScheduleKind;
    use trainer::schedule::learning_rate;
    let cfg = OptimConfig {
        epochs: 10,
        lr: 1.0,
        warmup_epochs: 2.0,
        ..OptimConfig::default()
    };
    // 10 steps per epoch: warm-up over 20 steps, then cosine over 80.
    assert!((learning_rate(&cfg, 0, 10) - 1.0 / 20.0).abs() < 1e-12);
    assert!((learning_rate(&cfg, 19, 10) - 1.0).abs() < 1e-12);
    assert!((learning_rate(&cfg, 20, 10) - 1.0).abs() < 1e-12);
    assert!(
        (learning_rate(&cfg, 60, 10) - 0.5).abs() < 1e-12,
        "half-way through the cosine"
    );
    assert!(learning_rate(&cfg, 99, 10) < 1e-3);
    let step = OptimConfig {
        schedule: ScheduleKind::Step,
        step_milestones: vec![3, 6],
        step_gamma: 0.1,
        ..cfg
    };
    assert!((learning_rate(&step, 25, 10) - 1.0).abs() < 1e-12);
    assert!((learning_rate(&step, 30, 10) - 0.1).abs() < 1e-12);
    assert!((learning_rate(&step, 65, 10) - 0.01).abs() < 1e-12);
    Ok(())
}

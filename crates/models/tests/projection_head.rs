//! `ProjectionHead` against the equivalent PyTorch `nn.Sequential`
//! (fixtures/gen_models.py): training-mode output and gradient, then eval-mode output with
//! the updated running statistics.

mod common;

use anyhow::{Context, Result};
use candle_core::{DType, Device, ModuleT};
use candle_nn::{VarBuilder, VarMap};
use common::{assert_close, fill, formula, get, load};
use models::{ProjectionHead, ProjectionHeadConfig};

#[test]
fn projection_heads_match_pytorch() -> Result<()> {
    let fx = load("projection_head.safetensors")?;
    for (name, num_layers, batch_norm) in
        [("bn3", 3, true), ("plain2", 2, false), ("one", 1, false)]
    {
        let cfg = ProjectionHeadConfig {
            input_dim: 32,
            hidden_dim: 16,
            output_dim: 8,
            num_layers,
            batch_norm,
        };
        let varmap = VarMap::new();
        let head = ProjectionHead::new(
            &cfg,
            VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu),
        )?;
        fill(&varmap)?;
        let xs = formula("head_input", &[6, 32], -1.0, 1.0)?;
        let zs = head.forward_t(&xs, true)?;
        assert_close(
            &format!("{name} train"),
            &zs,
            &get(&fx, &format!("{name}.train"))?,
            1e-5,
        )?;
        let grads = zs.sqr()?.sum_all()?.backward()?;
        let w0 = varmap
            .data()
            .lock()
            .map_err(|_| anyhow::anyhow!("poisoned"))?["0.weight"]
            .clone();
        let g0 = grads
            .get(w0.as_tensor())
            .context("no gradient for 0.weight")?;
        assert_close(
            &format!("{name} grad"),
            g0,
            &get(&fx, &format!("{name}.grad.0.weight"))?,
            1e-5,
        )?;
        let zs = head.forward_t(&xs, false)?;
        assert_close(
            &format!("{name} eval"),
            &zs,
            &get(&fx, &format!("{name}.eval"))?,
            1e-5,
        )?;
    }
    Ok(())
}

#[test]
fn projection_head_rejects_bad_shapes() -> Result<()> {
    let cfg = ProjectionHeadConfig {
        input_dim: 32,
        hidden_dim: 16,
        output_dim: 8,
        num_layers: 0,
        batch_norm: false,
    };
    let vb = VarBuilder::zeros(DType::F32, &Device::Cpu);
    anyhow::ensure!(
        ProjectionHead::new(&cfg, vb.clone()).is_err(),
        "num_layers 0 accepted"
    );
    let head = ProjectionHead::new(
        &ProjectionHeadConfig {
            num_layers: 2,
            ..cfg
        },
        vb,
    )?;
    let xs = candle_core::Tensor::zeros((4, 31), DType::F32, &Device::Cpu)?;
    let e = head
        .forward_t(&xs, false)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    anyhow::ensure!(e.contains("(N, 32)"), "wrong input width accepted: {e:?}");
    Ok(())
}

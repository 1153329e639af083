//! The fast CPU kernels give bit-identical values and gradients on 1, 2 and 3 threads: work is
//! split by shape only and every sum has a fixed order (the trainer's determinism rests on it).

use anyhow::Result;
use candle_core::{DType, Device, Tensor, Var};
use candle_nn::{BatchNorm, BatchNormConfig, VarBuilder, VarMap};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::StandardNormal;

fn randn(rng: &mut ChaCha8Rng, dims: &[usize]) -> Result<Tensor> {
    let n: usize = dims.iter().product();
    let v: Vec<f32> = (0..n).map(|_| rng.sample(StandardNormal)).collect();
    Ok(Tensor::from_vec(v, dims, &Device::Cpu)?)
}

/// Every output of one conv → batch norm + ReLU → conv → batch norm + residual + ReLU chain,
/// and the gradients of a weighted sum of it, flattened to `f32` vectors; `fused`: each conv +
/// batch norm as one op (`conv2d_bn_train`), plus an evaluation-mode `conv2d_bn_eval`.
fn chain(
    fused: bool,
    seed: u64,
    dims: (usize, usize, usize, usize),
    c_out: usize,
    stride: usize,
) -> Result<Vec<Vec<f32>>> {
    let (b, c_in, h, w) = dims;
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let xs = Var::from_tensor(&randn(&mut rng, &[b, c_in, h, w])?)?;
    let w1 = Var::from_tensor(&(randn(&mut rng, &[c_out, c_in, 3, 3])? * 0.2)?)?;
    let w2 = Var::from_tensor(&(randn(&mut rng, &[c_out, c_out, 3, 3])? * 0.2)?)?;
    let wd = Var::from_tensor(&(randn(&mut rng, &[c_out, c_in, 1, 1])? * 0.2)?)?;
    let vm = VarMap::new();
    let vb = VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu);
    let bn = |name: &str| -> Result<BatchNorm> {
        Ok(candle_nn::batch_norm(
            c_out,
            BatchNormConfig::default(),
            vb.pp(name),
        )?)
    };
    let (bn1, bn2, bn3) = (bn("bn1")?, bn("bn2")?, bn("bn3")?);
    let ys = if fused {
        use models::ops::conv2d_bn_train;
        let a1 = conv2d_bn_train(&xs, &w1, 1, stride, &bn1, None, true)?;
        let id = conv2d_bn_train(&xs, &wd, 0, stride, &bn3, None, false)?;
        conv2d_bn_train(&a1, &w2, 1, 1, &bn2, Some(&id), true)?
    } else {
        let h1 = models::ops::conv2d(&xs, &w1, 1, stride)?;
        let a1 = models::ops::batch_norm_relu(&h1, &bn1, true)?;
        let h2 = models::ops::conv2d(&a1, &w2, 1, 1)?;
        let id = models::ops::batch_norm(&models::ops::conv2d(&xs, &wd, 0, stride)?, &bn3, true)?;
        models::ops::batch_norm_add_relu(&h2, &bn2, &id, true)?
    };
    let up = randn(&mut rng, ys.dims())?;
    let grads = (&ys * &up)?.sum_all()?.backward()?;
    let mut out = vec![ys.flatten_all()?.to_vec1::<f32>()?];
    if fused {
        let (xs, w1) = (xs.as_tensor().detach(), w1.as_tensor().detach());
        let ev = models::ops::conv2d_bn_eval(&xs, &w1, 1, stride, &bn1, None, true)?;
        out.push(ev.flatten_all()?.to_vec1::<f32>()?);
    }
    for t in [&xs, &w1, &w2, &wd] {
        match grads.get(t.as_tensor()) {
            Some(g) => out.push(g.flatten_all()?.to_vec1::<f32>()?),
            None => anyhow::bail!("missing gradient"),
        }
    }
    for bn in [&bn1, &bn2, &bn3] {
        out.push(bn.running_mean().to_vec1::<f32>()?);
        out.push(bn.running_var().to_vec1::<f32>()?);
    }
    Ok(out)
}

#[test]
fn fast_ops_are_bit_identical_on_1_2_and_3_threads() -> Result<()> {
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    // ResNet-like shapes (many small images, a few large ones) and random ones.
    let mut cases = vec![
        ((16, 8, 8, 8), 16, 1),
        ((40, 4, 4, 4), 8, 2),
        ((3, 5, 17, 11), 6, 2),
    ];
    for _ in 0..3 {
        cases.push((
            (
                rng.random_range(2..=24),
                rng.random_range(1..=6),
                rng.random_range(3..=12),
                rng.random_range(3..=12),
            ),
            rng.random_range(1..=10),
            rng.random_range(1..=2),
        ));
    }
    for (i, &(dims, c_out, stride)) in cases.iter().enumerate() {
        for fused in [false, true] {
            let run = |threads: usize| -> Result<Vec<Vec<f32>>> {
                let pool = rayon::ThreadPoolBuilder::new()
                    .num_threads(threads)
                    .build()?;
                pool.install(|| chain(fused, i as u64, dims, c_out, stride))
            };
            let one = run(1)?;
            for threads in [2, 3] {
                let many = run(threads)?;
                assert_eq!(one.len(), many.len());
                for (k, (a, b)) in one.iter().zip(&many).enumerate() {
                    let same = a.len() == b.len()
                        && a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits());
                    assert!(
                    same,
                    "case {dims:?} c_out {c_out} stride {stride} fused {fused}: output {k} differs between 1 and {threads} threads"
                );
                }
            }
        }
    }
    Ok(())
}

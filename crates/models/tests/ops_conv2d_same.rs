//! `models::ops::conv2d` against candle's stock `conv2d` on every small "same" convolution
//! (stride 1, padding (k - 1) / 2: the im2col path that copies whole shifted planes), values and
//! gradients, including images smaller than the kernel.

mod common;

use anyhow::Result;
use candle_core::{DType, Tensor, Var};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

fn max_abs_diff(a: &Tensor, b: &Tensor) -> Result<f64> {
    assert_eq!(a.dims(), b.dims());
    Ok((a - b)?.abs()?.flatten_all()?.max(0)?.to_scalar::<f64>()?)
}

#[test]
fn conv2d_same_padding_matches_stock_on_small_images() -> Result<()> {
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    for (k, pad) in [(1, 0), (3, 1), (5, 2)] {
        for h in 1..=6 {
            for w in 1..=6 {
                let xs = Var::from_tensor(&common::randn(
                    &mut rng,
                    &[2, 3, h, w],
                    DType::F64,
                    0.0,
                    1.0,
                )?)?;
                let wt = Var::from_tensor(&common::randn(
                    &mut rng,
                    &[4, 3, k, k],
                    DType::F64,
                    0.0,
                    1.0,
                )?)?;
                let fast = models::ops::conv2d(&xs, &wt, pad, 1)?;
                let stock = xs.conv2d(&wt, pad, 1, 1, 1)?;
                let what = format!("k {k} pad {pad} image {h}x{w}");
                let e = max_abs_diff(&fast, &stock)?;
                assert!(e < 1e-10, "forward {what}: max diff {e}");
                let up = common::randn(&mut rng, fast.dims(), DType::F64, 0.0, 1.0)?;
                let gf = (&fast * &up)?.sum_all()?.backward()?;
                let gs = (&stock * &up)?.sum_all()?.backward()?;
                for (name, t) in [("x", xs.as_tensor()), ("w", wt.as_tensor())] {
                    let (Some(a), Some(b)) = (gf.get(t), gs.get(t)) else {
                        anyhow::bail!("{what}: missing gradient of {name}")
                    };
                    let e = max_abs_diff(a, b)?;
                    assert!(e < 1e-10, "grad {name} {what}: max diff {e}");
                }
            }
        }
    }
    Ok(())
}

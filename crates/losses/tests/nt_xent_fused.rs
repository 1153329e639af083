//! The fused CPU kernel of `nt_xent` (f32/f64 on the CPU) against the same loss built from
//! candle's ops, on shapes around the kernel's tile and lane sizes; thread-count independence.
//! (`tests/nt_xent.rs` checks the fused path against the PyTorch fixtures.)

mod common;

use anyhow::{anyhow, Result};
use candle_core::{DType, Device, Tensor, Var};
use common::assert_close;

/// Uniform numbers in `[-scale, scale)` from a fixed-seed xorshift (CPU RNG cannot be seeded).
fn uniform(shape: (usize, usize), seed: u64, scale: f64) -> Result<Tensor> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let values: Vec<f64> = (0..shape.0 * shape.1)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            ((state >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0) * scale
        })
        .collect();
    Ok(Tensor::from_vec(values, shape, &Device::Cpu)?)
}

/// NT-Xent from candle's differentiable ops (the formula of `nt_xent`'s docs), in the dtype
/// of the inputs: the "stock-op" path the fused kernel replaces on the CPU.
fn stock(z_a: &Tensor, z_b: &Tensor, t: f64) -> candle_core::Result<Tensor> {
    let n = z_a.dim(0)?;
    let z = Tensor::cat(&[z_a, z_b], 0)?;
    let norm = z.sqr()?.sum_keepdim(1)?.maximum(1e-24)?.sqrt()?;
    let z = z.broadcast_div(&norm)?;
    let swapped = Tensor::cat(&[z.narrow(0, n, n)?, z.narrow(0, 0, n)?], 0)?;
    let positives = (&z * &swapped)?.sum(1)?.affine(1.0 / t, 0.0)?;
    let mask = Tensor::eye(2 * n, z.dtype(), z.device())?.affine(-(2.0 / t + 1e4), 0.0)?;
    let sims = (z.matmul(&z.t()?)?.affine(1.0 / t, 0.0)? + mask)?;
    let max = sims.max_keepdim(1)?.detach();
    let lse = sims
        .broadcast_sub(&max)?
        .exp()?
        .sum_keepdim(1)?
        .log()?
        .broadcast_add(&max)?
        .squeeze(1)?;
    (lse - positives)?.mean_all()
}

/// The loss and the gradients of both inputs.
fn value_and_grads(
    f: impl Fn(&Tensor, &Tensor) -> candle_core::Result<Tensor>,
    z_a: &Tensor,
    z_b: &Tensor,
) -> Result<(Tensor, Tensor, Tensor)> {
    let (a, b) = (Var::from_tensor(z_a)?, Var::from_tensor(z_b)?);
    let loss = f(a.as_tensor(), b.as_tensor())?;
    let grads = loss.backward()?;
    let g_a = grads
        .get(&a)
        .ok_or_else(|| anyhow!("no grad for z_a"))?
        .clone();
    let g_b = grads
        .get(&b)
        .ok_or_else(|| anyhow!("no grad for z_b"))?
        .clone();
    Ok((loss, g_a, g_b))
}

#[test]
fn fused_matches_stock_ops_on_varied_shapes() -> Result<()> {
    // N crosses the 64-row tiles and the 16-wide lanes; D = 1 leaves no direction to move.
    let shapes = [
        (2, 1, 0.5, 1.0),
        (3, 5, 0.1, 1.0),
        (17, 16, 0.07, 3.0),
        (32, 7, 0.5, 1.0),
        (33, 64, 1.0, 1.0),
        (70, 128, 0.2, 1.0),
        (97, 3, 0.01, 50.0),
        (130, 33, 0.5, 0.01),
    ];
    for (k, &(n, d, t, scale)) in shapes.iter().enumerate() {
        let a64 = uniform((n, d), 2 * k as u64 + 1, scale)?;
        let b64 = uniform((n, d), 2 * k as u64 + 2, scale)?;
        let (want, want_a, want_b) = value_and_grads(|a, b| stock(a, b, t), &a64, &b64)?;
        for (dtype, tol) in [(DType::F64, 1e-10), (DType::F32, 1e-4)] {
            let what = format!("N={n} D={d} t={t} {dtype:?}");
            let (a, b) = (a64.to_dtype(dtype)?, b64.to_dtype(dtype)?);
            let (loss, g_a, g_b) = value_and_grads(|a, b| losses::nt_xent(a, b, t), &a, &b)?;
            assert_eq!(loss.dtype(), dtype, "{what}");
            assert_close(&format!("{what} loss"), &loss, &want, tol)?;
            assert_close(&format!("{what} grad z_a"), &g_a, &want_a, tol)?;
            assert_close(&format!("{what} grad z_b"), &g_b, &want_b, tol)?;
        }
    }
    Ok(())
}

#[test]
fn fused_agrees_with_the_multi_view_path() -> Result<()> {
    // `nt_xent_multi` with two views runs through candle's ops (supcon's formulation).
    let a = uniform((150, 20), 7, 1.0)?;
    let b = uniform((150, 20), 8, 1.0)?;
    let (want, want_a, want_b) = value_and_grads(
        |a, b| losses::nt_xent_multi(&[a.clone(), b.clone()], 0.3),
        &a,
        &b,
    )?;
    let (got, g_a, g_b) = value_and_grads(|a, b| losses::nt_xent(a, b, 0.3), &a, &b)?;
    assert_close("loss", &got, &want, 1e-10)?;
    assert_close("grad z_a", &g_a, &want_a, 1e-10)?;
    assert_close("grad z_b", &g_b, &want_b, 1e-10)?;
    Ok(())
}

#[test]
fn fused_results_do_not_depend_on_the_thread_count() -> Result<()> {
    let a = uniform((300, 128), 11, 1.0)?.to_dtype(DType::F32)?;
    let b = uniform((300, 128), 12, 1.0)?.to_dtype(DType::F32)?;
    let mut runs = Vec::new();
    for threads in [1, 2, 3] {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()?;
        let (loss, g_a, g_b) =
            pool.install(|| value_and_grads(|a, b| losses::nt_xent(a, b, 0.5), &a, &b))?;
        runs.push((
            threads,
            loss.to_scalar::<f32>()?.to_bits(),
            g_a.flatten_all()?.to_vec1::<f32>()?,
            g_b.flatten_all()?.to_vec1::<f32>()?,
        ));
    }
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    let (_, loss1, ga1, gb1) = &runs[0];
    for (threads, loss, g_a, g_b) in &runs[1..] {
        assert_eq!(
            loss, loss1,
            "loss with {threads} threads differs from 1 thread"
        );
        assert!(
            bits(g_a) == bits(ga1),
            "grad z_a with {threads} threads differs"
        );
        assert!(
            bits(g_b) == bits(gb1),
            "grad z_b with {threads} threads differs"
        );
    }
    Ok(())
}

#[test]
fn fused_second_backward_and_scaled_upstream_gradient() -> Result<()> {
    // The op hands its kept buffer to the first backward pass; a second one recomputes it.
    // A loss scaled by 3 scales the gradient by 3 (the upstream gradient is used).
    let a = Var::from_tensor(&uniform((40, 9), 21, 1.0)?)?;
    let b = Var::from_tensor(&uniform((40, 9), 22, 1.0)?)?;
    let loss = losses::nt_xent(a.as_tensor(), b.as_tensor(), 0.2)?;
    let first = loss.backward()?;
    let second = loss.backward()?;
    let scaled = loss.affine(3.0, 0.0)?.backward()?;
    let get = |g: &candle_core::backprop::GradStore| -> Result<Tensor> {
        Ok(g.get(&a).ok_or_else(|| anyhow!("no grad for z_a"))?.clone())
    };
    assert_close("second backward", &get(&second)?, &get(&first)?, 1e-15)?;
    assert_close(
        "3 × loss",
        &get(&scaled)?,
        &get(&first)?.affine(3.0, 0.0)?,
        1e-14,
    )?;
    Ok(())
}

#[test]
fn other_dtypes_keep_the_candle_op_path() -> Result<()> {
    // f16 is not the fused kernel's; it still computes the same loss (to f16 precision).
    let a = uniform((12, 6), 31, 1.0)?;
    let b = uniform((12, 6), 32, 1.0)?;
    let want = losses::nt_xent(&a, &b, 0.5)?;
    let got = losses::nt_xent(&a.to_dtype(DType::F16)?, &b.to_dtype(DType::F16)?, 0.5)?;
    assert_eq!(got.dtype(), DType::F16);
    assert_close("f16 loss", &got.to_dtype(DType::F64)?, &want, 1e-2)?;
    Ok(())
}

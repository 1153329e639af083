//! `models::ops::conv2d_bn_eval` (batch norm, residual and ReLU in the convolution's epilogue)
//! against the unfused stock candle ops and, bit for bit, our unfused ops, on random shapes,
//! strides and paddings; its fallback (with gradients) when an argument tracks a gradient;
//! `conv2d_bn_train` (values, running statistics, gradients) against the same stock ops in
//! training mode; the errors.

mod common;

use anyhow::Result;
use candle_core::{DType, Tensor, Var};
use candle_nn::{BatchNorm, ModuleT};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// A batch norm over `c` channels with random running statistics (and affine parameters).
fn random_bn(rng: &mut ChaCha8Rng, c: usize, dtype: DType, affine: bool) -> Result<BatchNorm> {
    let rm = common::randn(rng, &[c], dtype, 0.0, 0.5)?;
    let rv = common::randn(rng, &[c], dtype, 0.0, 0.3)?
        .abs()?
        .affine(1.0, 0.2)?;
    Ok(if affine {
        let w = common::randn(rng, &[c], dtype, 1.0, 0.5)?;
        let b = common::randn(rng, &[c], dtype, 0.0, 0.5)?;
        BatchNorm::new(c, rm, rv, w, b, 1e-5)?
    } else {
        BatchNorm::new_no_bias(c, rm, rv, 1e-5)?
    })
}

#[derive(Debug, Clone, Copy)]
struct Case {
    b: usize,
    c_in: usize,
    h: usize,
    w: usize,
    c_out: usize,
    k: usize,
    stride: usize,
    padding: usize,
}

impl Case {
    fn out_dims(&self) -> [usize; 4] {
        let o = |n: usize| (n + 2 * self.padding - self.k) / self.stride + 1;
        [self.b, self.c_out, o(self.h), o(self.w)]
    }
}

/// `bn(conv(x))` (+ r, relu) with candle's stock conv2d and BatchNorm.
fn stock(
    x: &Tensor,
    w: &Tensor,
    c: &Case,
    bn: &BatchNorm,
    r: Option<&Tensor>,
    relu: bool,
) -> Result<Tensor> {
    let ys = bn.forward_t(&x.conv2d(w, c.padding, c.stride, 1, 1)?, false)?;
    let ys = match r {
        Some(r) => (ys + r)?,
        None => ys,
    };
    Ok(if relu { ys.relu()? } else { ys })
}

/// The fused op on plain tensors (fast path) against the stock ops (within `tol`) and against
/// our unfused ops (bit for bit: the epilogue computes `conv·s + t` exactly as the batch norm
/// op does).
fn check(rng: &mut ChaCha8Rng, c: &Case, dtype: DType, tol: f64) -> Result<()> {
    for (residual, relu, affine) in [
        (false, false, true),
        (false, true, true),
        (true, true, true),
        (true, false, false),
    ] {
        let what = format!("{c:?} residual={residual} relu={relu} affine={affine} {dtype:?}");
        let x = common::randn(rng, &[c.b, c.c_in, c.h, c.w], dtype, 0.0, 1.0)?;
        let w = common::randn(rng, &[c.c_out, c.c_in, c.k, c.k], dtype, 0.0, 0.5)?;
        let bn = random_bn(rng, c.c_out, dtype, affine)?;
        let r = if residual {
            Some(common::randn(rng, &c.out_dims(), dtype, 0.0, 1.0)?)
        } else {
            None
        };
        let fused =
            models::ops::conv2d_bn_eval(&x, &w, c.padding, c.stride, &bn, r.as_ref(), relu)?;
        assert!(!fused.track_op(), "{what}: the fast path records no graph");
        let want = stock(&x, &w, c, &bn, r.as_ref(), relu)?;
        let e = common::rel_err_floor1(&fused, &want)?;
        assert!(e < tol, "{what}: rel err {e}");
        let unfused = models::ops::batch_norm(
            &models::ops::conv2d(&x, &w, c.padding, c.stride)?,
            &bn,
            false,
        )?;
        let unfused = match &r {
            Some(r) => (unfused + r)?,
            None => unfused,
        };
        let unfused = if relu { unfused.relu()? } else { unfused };
        let bits = |t: &Tensor| -> Result<Vec<f64>> {
            Ok(t.to_dtype(DType::F64)?.flatten_all()?.to_vec1()?)
        };
        assert!(
            bits(&fused)? == bits(&unfused)?,
            "{what}: differs from the unfused ops"
        );
    }
    Ok(())
}

fn random_case(rng: &mut ChaCha8Rng) -> Case {
    loop {
        let c = Case {
            b: rng.random_range(1..=9),
            c_in: rng.random_range(1..=6),
            h: rng.random_range(1..=11),
            w: rng.random_range(1..=11),
            c_out: rng.random_range(1..=7),
            k: [1, 1, 3, 3, 5][rng.random_range(0..5)],
            stride: rng.random_range(1..=3),
            padding: rng.random_range(0..=2),
        };
        if c.h + 2 * c.padding >= c.k && c.w + 2 * c.padding >= c.k {
            return c;
        }
    }
}

#[test]
fn conv2d_bn_eval_matches_stock_on_random_shapes() -> Result<()> {
    let mut rng = ChaCha8Rng::seed_from_u64(21);
    for _ in 0..40 {
        let c = random_case(&mut rng);
        check(&mut rng, &c, DType::F32, 1e-5)?;
        check(&mut rng, &c, DType::F64, 1e-12)?;
    }
    Ok(())
}

/// The CIFAR ResNets' layer kinds (3x3 stem, 3x3 stride 1 and 2, 1x1 stride 2 and 1) at a batch
/// large enough to group small maps into one GEMM, and a 32-channel 31x31 map whose patch matrix
/// is cut into tiles of output rows (k·p > 256 Ki).
fn resnet_cases() -> Vec<Case> {
    [
        (4, 3, 32, 16, 3, 1, 1),
        (2, 32, 31, 8, 3, 1, 1),
        (6, 16, 16, 32, 3, 2, 1),
        (6, 16, 16, 32, 1, 2, 0),
        (12, 32, 4, 64, 3, 1, 1),
        (12, 32, 8, 64, 1, 1, 0),
    ]
    .into_iter()
    .map(|(b, c_in, hw, c_out, k, stride, padding)| Case {
        b,
        c_in,
        h: hw,
        w: hw,
        c_out,
        k,
        stride,
        padding,
    })
    .collect()
}

#[test]
fn conv2d_bn_eval_matches_stock_on_resnet_shapes() -> Result<()> {
    let mut rng = ChaCha8Rng::seed_from_u64(22);
    for c in resnet_cases() {
        check(&mut rng, &c, DType::F32, 1e-5)?;
    }
    Ok(())
}

#[test]
fn conv2d_bn_eval_keeps_gradients_when_asked() -> Result<()> {
    // A variable among the arguments: the unfused ops run and the gradients flow.
    let mut rng = ChaCha8Rng::seed_from_u64(23);
    let c = Case {
        b: 3,
        c_in: 4,
        h: 7,
        w: 7,
        c_out: 5,
        k: 3,
        stride: 2,
        padding: 1,
    };
    let x = common::randn(&mut rng, &[c.b, c.c_in, c.h, c.w], DType::F64, 0.0, 1.0)?;
    let w = Var::from_tensor(&common::randn(
        &mut rng,
        &[c.c_out, c.c_in, c.k, c.k],
        DType::F64,
        0.0,
        0.5,
    )?)?;
    let r = Var::from_tensor(&common::randn(
        &mut rng,
        &c.out_dims(),
        DType::F64,
        0.0,
        1.0,
    )?)?;
    let bn = random_bn(&mut rng, c.c_out, DType::F64, true)?;
    let ys = models::ops::conv2d_bn_eval(&x, &w, c.padding, c.stride, &bn, Some(&r), true)?;
    let want = stock(&x, &w, &c, &bn, Some(&r), true)?;
    assert!(common::rel_err_floor1(&ys, &want)? < 1e-12);
    let up = common::randn(&mut rng, &c.out_dims(), DType::F64, 0.0, 1.0)?;
    let g = (ys * &up)?.sum_all()?.backward()?;
    let g_want = (want * &up)?.sum_all()?.backward()?;
    for (name, t) in [("w", w.as_tensor()), ("residual", r.as_tensor())] {
        let (Some(a), Some(b)) = (g.get(t), g_want.get(t)) else {
            panic!("missing gradient for {name}")
        };
        let e = common::rel_err_floor1(a, b)?;
        assert!(e < 1e-12, "grad {name}: rel err {e}");
    }
    Ok(())
}

#[test]
fn conv2d_bn_eval_rejects_bad_shapes() -> Result<()> {
    let mut rng = ChaCha8Rng::seed_from_u64(24);
    let x = common::randn(&mut rng, &[2, 3, 8, 8], DType::F32, 0.0, 1.0)?;
    let w = common::randn(&mut rng, &[4, 3, 3, 3], DType::F32, 0.0, 1.0)?;
    let bn5 = random_bn(&mut rng, 5, DType::F32, true)?;
    let err = models::ops::conv2d_bn_eval(&x, &w, 1, 1, &bn5, None, true)
        .expect_err("5 statistics for 4 channels")
        .to_string();
    assert!(err.contains("running statistics"), "{err}");
    let bn4 = random_bn(&mut rng, 4, DType::F32, true)?;
    let r = common::randn(&mut rng, &[2, 4, 4, 4], DType::F32, 0.0, 1.0)?;
    let err = models::ops::conv2d_bn_eval(&x, &w, 1, 1, &bn4, Some(&r), true)
        .expect_err("residual of the wrong shape")
        .to_string();
    assert!(err.contains("residual"), "{err}");
    let err = models::ops::conv2d_bn_eval(&x, &w, 1, 0, &bn4, None, true)
        .expect_err("stride 0")
        .to_string();
    assert!(err.contains("stride"), "{err}");
    Ok(())
}

/// `conv2d_bn_train` against the stock ops in training mode: values, running statistics and
/// the gradients of x, w, γ, β and the residual.
fn check_train(rng: &mut ChaCha8Rng, c: &Case, dtype: DType, tol: f64) -> Result<()> {
    for (residual, relu) in [(false, false), (false, true), (true, true)] {
        let what = format!("{c:?} residual={residual} relu={relu} {dtype:?}");
        let x = Var::from_tensor(&common::randn(
            rng,
            &[c.b, c.c_in, c.h, c.w],
            dtype,
            0.0,
            1.0,
        )?)?;
        let w = Var::from_tensor(&common::randn(
            rng,
            &[c.c_out, c.c_in, c.k, c.k],
            dtype,
            0.0,
            0.5,
        )?)?;
        let gamma = Var::from_tensor(&common::randn(rng, &[c.c_out], dtype, 1.0, 0.5)?)?;
        let beta = Var::from_tensor(&common::randn(rng, &[c.c_out], dtype, 0.0, 0.5)?)?;
        let rm = common::randn(rng, &[c.c_out], dtype, 0.0, 0.5)?;
        let rv = common::randn(rng, &[c.c_out], dtype, 0.0, 0.3)?
            .abs()?
            .affine(1.0, 0.2)?;
        let mk = || {
            BatchNorm::new(
                c.c_out,
                rm.copy()?,
                rv.copy()?,
                gamma.as_tensor().clone(),
                beta.as_tensor().clone(),
                1e-5,
            )
        };
        let (bn_fast, bn_stock) = (mk()?, mk()?);
        let r = if residual {
            Some(Var::from_tensor(&common::randn(
                rng,
                &c.out_dims(),
                dtype,
                0.0,
                1.0,
            )?)?)
        } else {
            None
        };
        let r_t = r.as_ref().map(|r| r.as_tensor());
        let fast = models::ops::conv2d_bn_train(&x, &w, c.padding, c.stride, &bn_fast, r_t, relu)?;
        // Candle 0.11.1's stock conv2d backward gets the input gradient's width wrong when the
        // height and width residues mod the stride differ: zero rows and columns at the bottom
        // and right that make no extra output keep it valid (as in tests/ops_conv2d.rs).
        let e_h = c.stride - 1 - (c.h + 2 * c.padding - c.k) % c.stride;
        let e_w = c.stride - 1 - (c.w + 2 * c.padding - c.k) % c.stride;
        let x_pad = x.pad_with_zeros(2, 0, e_h)?.pad_with_zeros(3, 0, e_w)?;
        let h = x_pad.conv2d(&w, c.padding, c.stride, 1, 1)?;
        let stock = bn_stock.forward_t(&h, true)?;
        let stock = match r_t {
            Some(r) => (stock + r)?,
            None => stock,
        };
        let stock = if relu { stock.relu()? } else { stock };
        let e = common::rel_err_floor1(&fast, &stock)?;
        assert!(e < tol, "forward {what}: rel err {e}");
        common::assert_running_stats_close(&bn_fast, &bn_stock, tol, &what)?;
        let up = common::randn(rng, &c.out_dims(), dtype, 0.0, 1.0)?;
        let g_fast = (fast * &up)?.sum_all()?.backward()?;
        let g_stock = (stock * &up)?.sum_all()?.backward()?;
        let mut wrt = vec![
            ("x", x.as_tensor()),
            ("w", w.as_tensor()),
            ("gamma", gamma.as_tensor()),
            ("beta", beta.as_tensor()),
        ];
        wrt.extend(r_t.map(|r| ("residual", r)));
        for (name, t) in wrt {
            let (Some(gf), Some(gs)) = (g_fast.get(t), g_stock.get(t)) else {
                panic!("{what}: missing gradient for {name}")
            };
            let e = common::rel_err_floor1(gf, gs)?;
            assert!(e < tol, "grad {name} {what}: rel err {e}");
        }
    }
    Ok(())
}

#[test]
fn conv2d_bn_train_matches_stock_on_random_shapes() -> Result<()> {
    let mut rng = ChaCha8Rng::seed_from_u64(25);
    let mut done = 0;
    while done < 25 {
        let c = random_case(&mut rng);
        let o = c.out_dims();
        if o[0] * o[2] * o[3] < 2 {
            continue;
        }
        // f32: the batch-norm gradient cancels (Σ dy and Σ dy·x̂ are removed from dy), so the
        // two summation orders differ by more than the forward pass does; f64 is the tight check.
        check_train(&mut rng, &c, DType::F32, 5e-4)?;
        check_train(&mut rng, &c, DType::F64, 1e-9)?;
        done += 1;
    }
    Ok(())
}

#[test]
fn conv2d_bn_train_matches_stock_on_resnet_shapes() -> Result<()> {
    let mut rng = ChaCha8Rng::seed_from_u64(26);
    for c in resnet_cases() {
        check_train(&mut rng, &c, DType::F32, 1e-4)?;
    }
    Ok(())
}

#[test]
fn conv2d_bn_train_rejects_a_single_value_per_channel() -> Result<()> {
    let mut rng = ChaCha8Rng::seed_from_u64(27);
    let x = common::randn(&mut rng, &[1, 3, 3, 3], DType::F32, 0.0, 1.0)?;
    let w = common::randn(&mut rng, &[4, 3, 3, 3], DType::F32, 0.0, 1.0)?;
    let bn = random_bn(&mut rng, 4, DType::F32, true)?;
    let err = models::ops::conv2d_bn_train(&x, &w, 0, 1, &bn, None, true)
        .expect_err("one value per channel")
        .to_string();
    assert!(err.contains("more than one value per channel"), "{err}");
    Ok(())
}

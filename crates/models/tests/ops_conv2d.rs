//! `models::ops::conv2d` against candle's stock `Tensor::conv2d`: values and gradients on
//! random shapes, strides and paddings, in f32 and f64.

mod common;

use anyhow::Result;
use candle_core::{DType, Device, Tensor, Var};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

struct Case {
    b: usize,
    c_in: usize,
    h: usize,
    w: usize,
    c_out: usize,
    k_h: usize,
    k_w: usize,
    stride: usize,
    padding: usize,
}

/// Compares value, input gradient and kernel gradient with the stock op.
fn check(rng: &mut ChaCha8Rng, c: &Case, dtype: DType, tol: f64, x_is_var: bool) -> Result<()> {
    let x0 = common::randn(rng, &[c.b, c.c_in, c.h, c.w], dtype, 0.0, 1.0)?;
    let w = Var::from_tensor(&common::randn(
        rng,
        &[c.c_out, c.c_in, c.k_h, c.k_w],
        dtype,
        0.0,
        1.0,
    )?)?;
    let x = if x_is_var {
        Var::from_tensor(&x0)?.as_tensor().clone()
    } else {
        x0
    };
    let fast = models::ops::conv2d(&x, &w, c.padding, c.stride)?;
    // Candle 0.11.1's conv2d backward takes the transposed conv's output padding from the
    // height alone, so its input gradient has the wrong width when (H + 2p - K_h) mod s and
    // (W + 2p - K_w) mod s differ. Zero rows and columns at the bottom and right, short of an
    // extra output row or column, change no output; padding both residues to s - 1 keeps the
    // stock backward valid on every shape.
    let e_h = c.stride - 1 - (c.h + 2 * c.padding - c.k_h) % c.stride;
    let e_w = c.stride - 1 - (c.w + 2 * c.padding - c.k_w) % c.stride;
    let x_pad = x.pad_with_zeros(2, 0, e_h)?.pad_with_zeros(3, 0, e_w)?;
    let stock = x_pad.conv2d(&w, c.padding, c.stride, 1, 1)?;
    let what = format!(
        "b={} c_in={} {}x{} c_out={} k={}x{} stride={} padding={} {dtype:?}",
        c.b, c.c_in, c.h, c.w, c.c_out, c.k_h, c.k_w, c.stride, c.padding
    );
    assert_eq!(fast.dims(), stock.dims(), "{what}");
    let e = common::rel_err_floor1(&fast, &stock)?;
    assert!(e < tol, "forward {what}: rel err {e}");

    let r = common::randn(rng, stock.dims(), dtype, 0.0, 1.0)?;
    let g_fast = (fast * &r)?.sum_all()?.backward()?;
    let g_stock = (stock * &r)?.sum_all()?.backward()?;
    let (dw_f, dw_s) = (g_fast.get(&w), g_stock.get(&w));
    let (Some(dw_f), Some(dw_s)) = (dw_f, dw_s) else {
        panic!("{what}: missing kernel gradient")
    };
    let e = common::rel_err_floor1(dw_f, dw_s)?;
    assert!(e < tol, "kernel grad {what}: rel err {e}");
    if x_is_var {
        let (Some(dx_f), Some(dx_s)) = (g_fast.get(&x), g_stock.get(&x)) else {
            panic!("{what}: missing input gradient")
        };
        let e = common::rel_err_floor1(dx_f, dx_s)?;
        assert!(e < tol, "input grad {what}: rel err {e}");
    } else {
        assert!(
            g_fast.get(&x).is_none(),
            "{what}: input gradient computed for a constant"
        );
    }
    Ok(())
}

fn random_case(rng: &mut ChaCha8Rng) -> Case {
    loop {
        let k_h = [1, 2, 3, 3, 5][rng.random_range(0..5)];
        let k_w = if rng.random_bool(0.8) {
            k_h
        } else {
            rng.random_range(1..=4)
        };
        let c = Case {
            b: rng.random_range(1..=9),
            c_in: rng.random_range(1..=6),
            h: rng.random_range(1..=11),
            w: rng.random_range(1..=11),
            c_out: rng.random_range(1..=7),
            k_h,
            k_w,
            stride: rng.random_range(1..=3),
            padding: rng.random_range(0..=2),
        };
        if c.h + 2 * c.padding >= c.k_h && c.w + 2 * c.padding >= c.k_w {
            return c;
        }
    }
}

#[test]
fn conv2d_matches_stock_on_random_shapes_f32() -> Result<()> {
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    for _ in 0..60 {
        let c = random_case(&mut rng);
        check(&mut rng, &c, DType::F32, 1e-4, true)?;
    }
    Ok(())
}

#[test]
fn conv2d_matches_stock_on_random_shapes_f64() -> Result<()> {
    let mut rng = ChaCha8Rng::seed_from_u64(2);
    for _ in 0..60 {
        let c = random_case(&mut rng);
        check(&mut rng, &c, DType::F64, 1e-10, true)?;
    }
    Ok(())
}

#[test]
fn conv2d_matches_stock_on_resnet_shapes() -> Result<()> {
    // The layer kinds of the CIFAR ResNets at a small batch: 3x3 stem, 3x3 stride 1 and 2,
    // 1x1 stride-2 downsample, on 32/16/8/4 maps; batches large enough to group images.
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let cases = [
        (4, 3, 32, 16, 3, 1, 1),
        (4, 16, 16, 16, 3, 1, 1),
        (6, 16, 16, 32, 3, 2, 1),
        (6, 16, 16, 32, 1, 2, 0),
        (8, 32, 8, 32, 3, 1, 1),
        (12, 32, 4, 64, 3, 1, 1),
        (12, 32, 8, 64, 1, 1, 0),
    ];
    for (b, c_in, hw, c_out, k, stride, padding) in cases {
        let c = Case {
            b,
            c_in,
            h: hw,
            w: hw,
            c_out,
            k_h: k,
            k_w: k,
            stride,
            padding,
        };
        check(&mut rng, &c, DType::F32, 1e-4, true)?;
        check(&mut rng, &c, DType::F64, 1e-10, true)?;
    }
    Ok(())
}

#[test]
fn conv2d_matches_stock_on_strided_convs_through_phase_planes() -> Result<()> {
    // A convolution with stride s > 1, at least s² kernel taps and ⌈W / s⌉ ≤ out_w builds and
    // scatters its patch matrix through the s² phase planes of each image: odd and uneven
    // sizes, planes narrower than the output (zero columns), non-square and even kernels,
    // stride 3, padding beyond the kernel's reach, and a batch that groups images per GEMM.
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let cases = [
        (3, 5, 9, 7, 4, 3, 3, 2, 1),
        (2, 3, 10, 11, 5, 3, 2, 2, 1),
        (2, 4, 12, 12, 3, 5, 5, 3, 2),
        (2, 4, 13, 8, 3, 3, 3, 3, 2),
        (5, 6, 8, 8, 6, 4, 4, 2, 1),
        (1, 2, 6, 6, 2, 3, 3, 2, 2),
        (24, 8, 8, 8, 8, 3, 3, 2, 1),
    ];
    for (b, c_in, h, w, c_out, k_h, k_w, stride, padding) in cases {
        let out_w = (w + 2 * padding - k_w) / stride + 1;
        assert!(k_h * k_w >= stride * stride && usize::div_ceil(w, stride) <= out_w);
        let c = Case {
            b,
            c_in,
            h,
            w,
            c_out,
            k_h,
            k_w,
            stride,
            padding,
        };
        check(&mut rng, &c, DType::F32, 1e-4, true)?;
        check(&mut rng, &c, DType::F64, 1e-10, true)?;
    }
    Ok(())
}

#[test]
fn conv2d_matches_stock_on_images_cut_into_row_tiles() -> Result<()> {
    // One image's patch matrix above 256 Ki elements (k·p > 262,144 with p ≥ 256 output pixels)
    // is built and multiplied in tiles of whole output rows (256 pixels each, the last one
    // shorter): 31 rows of 31 (tiles of 8), stride 2 (tiles of 10), a 5x5 kernel.
    let mut rng = ChaCha8Rng::seed_from_u64(6);
    let cases = [
        (2, 32, 31, 31, 5, 3, 1, 1),
        (2, 64, 47, 47, 3, 3, 2, 1),
        (1, 12, 30, 30, 4, 5, 1, 2),
        (2, 64, 33, 40, 3, 3, 1, 1),
    ];
    for (b, c_in, h, w, c_out, k, stride, padding) in cases {
        let c = Case {
            b,
            c_in,
            h,
            w,
            c_out,
            k_h: k,
            k_w: k,
            stride,
            padding,
        };
        let (oh, ow) = (
            (h + 2 * padding - k) / stride + 1,
            (w + 2 * padding - k) / stride + 1,
        );
        assert!(c_in * k * k * oh * ow > 262_144 && oh * ow >= 256);
        check(&mut rng, &c, DType::F32, 1e-4, true)?;
        check(&mut rng, &c, DType::F64, 1e-10, true)?;
    }
    Ok(())
}

#[test]
fn conv2d_skips_the_gradient_of_a_constant_input() -> Result<()> {
    let mut rng = ChaCha8Rng::seed_from_u64(4);
    let c = Case {
        b: 3,
        c_in: 3,
        h: 8,
        w: 8,
        c_out: 5,
        k_h: 3,
        k_w: 3,
        stride: 1,
        padding: 1,
    };
    check(&mut rng, &c, DType::F32, 1e-4, false)?;
    check(&mut rng, &c, DType::F64, 1e-10, false)?;
    Ok(())
}

#[test]
fn conv2d_takes_strided_inputs() -> Result<()> {
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    // (B, H, C, W) transposed to (B, C, H, W): not contiguous.
    let x = common::randn(&mut rng, &[2, 7, 3, 6], DType::F64, 0.0, 1.0)?.transpose(1, 2)?;
    let w = common::randn(&mut rng, &[4, 3, 3, 3], DType::F64, 0.0, 1.0)?;
    let fast = models::ops::conv2d(&x, &w, 1, 2)?;
    let stock = x.conv2d(&w, 1, 2, 1, 1)?;
    let e = common::rel_err_floor1(&fast, &stock)?;
    assert!(e < 1e-10, "rel err {e}");
    Ok(())
}

#[test]
fn conv2d_rejects_bad_shapes() -> Result<()> {
    let x = Tensor::zeros((2, 3, 8, 8), DType::F32, &Device::Cpu)?;
    let w = Tensor::zeros((4, 5, 3, 3), DType::F32, &Device::Cpu)?;
    let err = models::ops::conv2d(&x, &w, 1, 1)
        .err()
        .map(|e| e.to_string());
    assert!(
        err.as_deref().is_some_and(|e| e.contains("channels")),
        "{err:?}"
    );
    let w = Tensor::zeros((4, 3, 3, 3), DType::F32, &Device::Cpu)?;
    let err = models::ops::conv2d(&x, &w, 1, 0)
        .err()
        .map(|e| e.to_string());
    assert!(
        err.as_deref().is_some_and(|e| e.contains("stride")),
        "{err:?}"
    );
    let err = models::ops::conv2d(&x.flatten_from(2)?, &w, 1, 1)
        .err()
        .map(|e| e.to_string());
    assert!(
        err.as_deref()
            .is_some_and(|e| e.contains("(B, C_in, H, W)")),
        "{err:?}"
    );
    let big = Tensor::zeros((4, 3, 11, 11), DType::F32, &Device::Cpu)?;
    let err = models::ops::conv2d(&x, &big, 1, 1)
        .err()
        .map(|e| e.to_string());
    assert!(
        err.as_deref().is_some_and(|e| e.contains("does not fit")),
        "{err:?}"
    );
    Ok(())
}

#[test]
fn conv2d_falls_back_to_stock_for_f16() -> Result<()> {
    let mut rng = ChaCha8Rng::seed_from_u64(6);
    let x = common::randn(&mut rng, &[2, 3, 6, 6], DType::F32, 0.0, 1.0)?;
    let w = common::randn(&mut rng, &[4, 3, 3, 3], DType::F32, 0.0, 1.0)?;
    let fast = models::ops::conv2d(&x.to_dtype(DType::F16)?, &w.to_dtype(DType::F16)?, 1, 1)?;
    assert_eq!(fast.dtype(), DType::F16);
    let stock = x
        .to_dtype(DType::F16)?
        .conv2d(&w.to_dtype(DType::F16)?, 1, 1, 1, 1)?;
    assert!(common::rel_err_floor1(&fast, &stock)? < 1e-6);
    Ok(())
}

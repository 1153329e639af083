//! The functional API against torchvision v2 (fixtures from `fixtures/gen_functional.py`).

use std::collections::HashMap;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use augment::functional as F;
use candle_core::{DType, Device, Tensor};

fn fixtures() -> Result<HashMap<String, Tensor>> {
    let path =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/functional.safetensors");
    Ok(candle_core::safetensors::load(&path, &Device::Cpu)?)
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> Result<f32> {
    if a.dims() != b.dims() {
        bail!("shape {:?} != expected {:?}", a.dims(), b.dims())
    }
    Ok((a - b)?.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()?)
}

/// Runs every case of `op` in the fixtures through `f(input, params)`; returns the case count.
fn check(
    op: &str,
    tol: f32,
    f: impl Fn(&Tensor, &[f32]) -> candle_core::Result<Tensor>,
) -> Result<usize> {
    let fx = fixtures()?;
    let mut i = 0;
    while let Some(expected) = fx.get(&format!("{op}.{i}.out")) {
        let params = fx[&format!("{op}.{i}.params")].to_vec1::<f32>()?;
        let which = fx[&format!("{op}.{i}.input")].to_vec1::<f32>()?[0];
        let input = &fx[if which == 0.0 {
            "input_chw"
        } else {
            "input_nchw"
        }];
        let got = f(input, &params).with_context(|| format!("{op}.{i} params {params:?}"))?;
        let diff = max_abs_diff(&got, expected).with_context(|| format!("{op}.{i}"))?;
        assert!(
            diff <= tol,
            "{op}.{i} params {params:?}: max |diff| {diff} > {tol}"
        );
        i += 1;
    }
    assert!(i > 0, "no fixtures for {op}");
    Ok(i)
}

#[test]
fn hflip_matches_torchvision() -> Result<()> {
    check("hflip", 0.0, |x, _| F::hflip(x))?;
    Ok(())
}

#[test]
fn crop_matches_torchvision_exactly() -> Result<()> {
    let n = check("crop", 0.0, |x, p| {
        let [top, left] = [p[0], p[1]].map(|v| v as isize);
        F::crop(x, top, left, p[2] as usize, p[3] as usize)
    })?;
    assert_eq!(n, 18);
    Ok(())
}

#[test]
fn crop_at_minus_padding_is_torchvisions_random_crop() -> Result<()> {
    // torchvision's RandomCrop pads by p, then crops at (top, left) of the padded image.
    let n = check("random_crop", 0.0, |x, p| {
        let [h, w, pad, top, left] = [p[0], p[1], p[2], p[3], p[4]].map(|v| v as usize);
        let (top, left) = (top as isize - pad as isize, left as isize - pad as isize);
        augment::Op::Crop {
            top,
            left,
            size: (h, w),
        }
        .apply(x)
    })?;
    assert_eq!(n, 8);
    Ok(())
}

#[test]
fn resized_crop_matches_torchvision() -> Result<()> {
    let n = check("resized_crop", 1e-5, |x, p| {
        let [top, left, h, w, oh, ow] = [p[0], p[1], p[2], p[3], p[4], p[5]].map(|v| v as usize);
        if p[6] == 1.0 {
            F::resized_crop_antialias(x, top, left, h, w, (oh, ow))
        } else {
            F::resized_crop(x, top, left, h, w, (oh, ow))
        }
    })?;
    assert_eq!(n, 20);
    Ok(())
}

#[test]
fn color_adjustments_match_torchvision() -> Result<()> {
    check("adjust_brightness", 1e-5, |x, p| {
        F::adjust_brightness(x, p[0])
    })?;
    check("adjust_contrast", 1e-5, |x, p| F::adjust_contrast(x, p[0]))?;
    check("adjust_saturation", 1e-5, |x, p| {
        F::adjust_saturation(x, p[0])
    })?;
    check("adjust_hue", 1e-4, |x, p| F::adjust_hue(x, p[0]))?;
    check("rgb_to_grayscale", 1e-5, |x, p| {
        F::rgb_to_grayscale(x, p[0] as usize)
    })?;
    check("solarize", 1e-5, |x, p| F::solarize(x, p[0]))?;
    Ok(())
}

#[test]
fn gaussian_blur_matches_torchvision() -> Result<()> {
    check("gaussian_blur", 1e-5, |x, p| {
        F::gaussian_blur(x, p[0] as usize, p[1])
    })?;
    Ok(())
}

#[test]
fn normalize_matches_torchvision() -> Result<()> {
    check("normalize", 1e-5, |x, p| {
        F::normalize(x, [p[0], p[1], p[2]], [p[3], p[4], p[5]])
    })?;
    Ok(())
}

#[test]
fn other_float_dtypes_round_trip() -> Result<()> {
    let fx = fixtures()?;
    let x = &fx["input_chw"];
    let y64 = F::adjust_saturation(&x.to_dtype(DType::F64)?, 0.5)?;
    assert_eq!(y64.dtype(), DType::F64);
    let y32 = F::adjust_saturation(x, 0.5)?;
    assert!(max_abs_diff(&y64.to_dtype(DType::F32)?, &y32)? <= 1e-6);
    Ok(())
}

fn err_msg(r: candle_core::Result<Tensor>) -> String {
    match r {
        Ok(t) => format!("unexpected Ok with shape {:?}", t.dims()),
        Err(e) => e.to_string(),
    }
}

#[test]
fn bad_input_is_an_error_naming_the_value() -> Result<()> {
    let dev = Device::Cpu;
    let img = Tensor::rand(0f32, 1f32, (3, 8, 8), &dev)?;
    let cases: Vec<(candle_core::Result<Tensor>, &str)> = vec![
        (
            F::hflip(&Tensor::zeros((8, 8), DType::F32, &dev)?),
            "[8, 8]",
        ),
        (
            F::hflip(&Tensor::zeros((1, 1, 3, 8, 8), DType::F32, &dev)?),
            "[1, 1, 3, 8, 8]",
        ),
        (
            F::adjust_brightness(&Tensor::zeros((4, 8, 8), DType::F32, &dev)?, 1.0),
            "4 channels",
        ),
        (
            F::adjust_hue(&Tensor::zeros((3, 8, 8), DType::U8, &dev)?, 0.1),
            "U8",
        ),
        (F::resized_crop(&img, 2, 0, 7, 8, (4, 4)), "top 2"),
        (F::resized_crop(&img, 0, 5, 8, 4, (4, 4)), "left 5"),
        (F::resized_crop(&img, 0, 0, 0, 4, (4, 4)), "height 0"),
        (F::resized_crop(&img, 0, 0, 4, 4, (0, 4)), "(0, 4)"),
        (F::crop(&img, 0, 0, 0, 4), "(0, 4)"),
        (F::crop(&img, 1, 2, 3, 0), "(3, 0)"),
        (
            F::crop(&img, 8, 0, 2, 2),
            "top 8, left 0, height 2, width 2",
        ),
        (F::crop(&img, 0, 8, 2, 2), "left 8"),
        (F::crop(&img, -2, 0, 2, 2), "top -2"),
        (F::crop(&img, 3, -5, 2, 5), "left -5"),
        (F::crop(&img, -9, -9, 4, 4), "8x8 image"),
        (F::gaussian_blur(&img, 4, 1.0), "kernel_size 4"),
        (F::gaussian_blur(&img, 0, 1.0), "kernel_size 0"),
        (F::gaussian_blur(&img, 17, 1.0), "kernel_size 17"),
        (F::gaussian_blur(&img, 3, 0.0), "sigma 0"),
        (F::gaussian_blur(&img, 3, -1.5), "sigma -1.5"),
        (F::adjust_brightness(&img, -0.5), "-0.5"),
        (F::adjust_contrast(&img, f32::NAN), "NaN"),
        (F::adjust_saturation(&img, -2.0), "-2"),
        (F::adjust_hue(&img, 0.7), "0.7"),
        (F::solarize(&img, 1.5), "1.5"),
        (F::rgb_to_grayscale(&img, 2), "num_output_channels 2"),
        (
            F::normalize(&img, [0.5; 3], [0.2, 0.0, 0.2]),
            "[0.2, 0.0, 0.2]",
        ),
    ];
    for (i, (r, needle)) in cases.into_iter().enumerate() {
        let msg = err_msg(r);
        assert!(
            msg.contains(needle),
            "case {i}: message {msg:?} does not name {needle:?}"
        );
    }
    // Windows whose far edge does not fit in isize are refused, not wrapped around.
    for (r, needle) in [
        (
            F::crop(&img, 0, 0, usize::MAX, 2),
            format!("height {}", usize::MAX),
        ),
        (
            F::crop(&img, 2, isize::MAX, 2, 2),
            format!("left {}", isize::MAX),
        ),
        (
            F::crop(&img, -1, 0, 3, usize::MAX),
            format!("width {}", usize::MAX),
        ),
    ] {
        let msg = err_msg(r);
        assert!(
            msg.contains(&needle),
            "message {msg:?} does not name {needle:?}"
        );
    }
    Ok(())
}

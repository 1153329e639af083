//! Helpers shared by the `models` tests: the weight formula of
//! `fixtures/gen_models.py`, fixture loading and comparisons.
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor};
use candle_nn::VarMap;
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use rand_distr::StandardNormal;

/// The fixture directory next to this file.
pub fn fixture_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("fixtures")
        .join(name)
}

/// All tensors of a fixture file.
pub fn load(name: &str) -> Result<HashMap<String, Tensor>> {
    let path = fixture_path(name);
    candle_core::safetensors::load(&path, &Device::Cpu)
        .with_context(|| format!("reading fixture {}", path.display()))
}

/// The string metadata of a fixture file.
pub fn metadata(name: &str) -> Result<HashMap<String, String>> {
    let bytes = std::fs::read(fixture_path(name))?;
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes)?;
    Ok(meta.metadata().clone().unwrap_or_default())
}

/// One named tensor of a fixture map.
pub fn get(map: &HashMap<String, Tensor>, key: &str) -> Result<Tensor> {
    map.get(key)
        .cloned()
        .with_context(|| format!("fixture has no tensor {key}"))
}

fn fnv1a32(name: &str) -> u32 {
    let mut h: u32 = 0x811C_9DC5;
    for &b in name.as_bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h
}

/// `formula(name, shape, lo, hi)` of gen_models.py, bit for bit.
pub fn formula(name: &str, shape: &[usize], lo: f64, hi: f64) -> Result<Tensor> {
    let n: usize = shape.iter().product();
    let s = fnv1a32(name);
    let values: Vec<f32> = (0..n)
        .map(|i| {
            let mut h = s ^ (i as u32).wrapping_mul(0x9E37_79B1);
            h = h.wrapping_mul(0x85EB_CA6B);
            h ^= h >> 13;
            h = h.wrapping_mul(0xC2B2_AE35);
            h ^= h >> 16;
            let u = f64::from(h) / 4_294_967_296.0;
            (lo + (hi - lo) * u) as f32
        })
        .collect();
    Ok(Tensor::from_vec(values, shape, &Device::Cpu)?)
}

/// `range_for` of gen_models.py.
fn range_for(name: &str, shape: &[usize]) -> (f64, f64) {
    match shape.len() {
        4 => {
            let b = (6.0 / (shape[1] * shape[2] * shape[3]) as f64).sqrt();
            (-b, b)
        }
        2 => {
            let b = 1.0 / (shape[1] as f64).sqrt();
            (-b, b)
        }
        _ if name.ends_with("running_mean") => (-0.1, 0.1),
        _ if name.ends_with("running_var") => (0.5, 1.5),
        _ if name.ends_with("weight") => (0.3, 0.7),
        _ => (-0.1, 0.1),
    }
}

/// Overwrites every variable of `varmap` with the formula of its name.
pub fn fill(varmap: &VarMap) -> Result<()> {
    let data = varmap
        .data()
        .lock()
        .map_err(|_| anyhow::anyhow!("poisoned"))?;
    for (name, var) in data.iter() {
        let shape = var.dims().to_vec();
        let (lo, hi) = range_for(name, &shape);
        var.set(&formula(name, &shape, lo, hi)?)?;
    }
    Ok(())
}

/// `max |a - b| / max |b|`, after checking the shapes agree.
pub fn rel_err(a: &Tensor, b: &Tensor) -> Result<f64> {
    if a.dims() != b.dims() {
        bail!("shape {:?} vs expected {:?}", a.dims(), b.dims());
    }
    let a = a.to_dtype(DType::F64)?.flatten_all()?;
    let b = b.to_dtype(DType::F64)?.flatten_all()?;
    let diff = (a - &b)?.abs()?.max(0)?.to_scalar::<f64>()?;
    let scale = b.abs()?.max(0)?.to_scalar::<f64>()?;
    Ok(diff / scale.max(1e-12))
}

/// Fails with `what` and the error when `rel_err(a, b) > tol`.
pub fn assert_close(what: &str, a: &Tensor, b: &Tensor, tol: f64) -> Result<()> {
    let e = rel_err(a, b).with_context(|| what.to_string())?;
    if e > tol {
        bail!("{what}: relative error {e:e} > {tol:e}");
    }
    Ok(())
}

/// `mean + std·N(0, 1)` samples of shape `dims`, drawn as `f64` from `rng`, then cast to `dtype`:
/// the random inputs of the op-against-stock tests.
pub fn randn(
    rng: &mut ChaCha8Rng,
    dims: &[usize],
    dtype: DType,
    mean: f64,
    std: f64,
) -> Result<Tensor> {
    let n: usize = dims.iter().product();
    let v: Vec<f64> = (0..n)
        .map(|_| mean + std * rng.sample::<f64, _>(StandardNormal))
        .collect();
    Ok(Tensor::from_vec(v, dims, &Device::Cpu)?.to_dtype(dtype)?)
}

/// Largest |a - b| relative to max(1, max |b|) (0 for empty tensors), after checking the shapes
/// agree: for an op against the stock one, where outputs and gradients may be near zero.
pub fn rel_err_floor1(a: &Tensor, b: &Tensor) -> Result<f64> {
    assert_eq!(a.dims(), b.dims());
    let a = a.to_dtype(DType::F64)?.flatten_all()?;
    let b = b.to_dtype(DType::F64)?.flatten_all()?;
    if b.elem_count() == 0 {
        return Ok(0.0);
    }
    let diff = (&a - &b)?.abs()?.max(0)?.to_scalar::<f64>()?;
    let scale = b.abs()?.max(0)?.to_scalar::<f64>()?.max(1.0);
    Ok(diff / scale)
}

/// Asserts that the running statistics of a fast-op batch norm and of the stock one agree within
/// `tol` ([`rel_err_floor1`]); `what` names the case in the failure message.
pub fn assert_running_stats_close(
    fast: &candle_nn::BatchNorm,
    stock: &candle_nn::BatchNorm,
    tol: f64,
    what: &str,
) -> Result<()> {
    for (name, a, b) in [
        ("running_mean", fast.running_mean(), stock.running_mean()),
        ("running_var", fast.running_var(), stock.running_var()),
    ] {
        let e = rel_err_floor1(a, b)?;
        assert!(e < tol, "{name} {what}: rel err {e}");
    }
    Ok(())
}

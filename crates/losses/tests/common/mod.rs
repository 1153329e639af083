//! Shared test helpers: fixture loading (files written by `fixtures/gen_fixtures.py`) and
//! relative-error comparison.
#![allow(dead_code)]

use std::collections::{BTreeSet, HashMap};

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor};

/// Each fixture case is checked in f64 against 1e-8 and in f32 against 1e-4 relative error.
pub const DTYPES: [(DType, f64); 2] = [(DType::F64, 1e-8), (DType::F32, 1e-4)];

/// The tensors of one `<name>.safetensors` fixture file, keyed `"<case>.<field>"`.
pub struct Fixture {
    name: String,
    map: HashMap<String, Tensor>,
}

impl Fixture {
    pub fn load(name: &str) -> Result<Self> {
        let path = format!(
            "{}/tests/fixtures/{name}.safetensors",
            env!("CARGO_MANIFEST_DIR")
        );
        let map = candle_core::safetensors::load(&path, &Device::Cpu)
            .with_context(|| format!("reading {path}: run tests/fixtures/gen_fixtures.py"))?;
        Ok(Self {
            name: name.to_string(),
            map,
        })
    }

    /// The case prefixes, sorted.
    pub fn cases(&self) -> Vec<String> {
        let set: BTreeSet<String> = self
            .map
            .keys()
            .filter_map(|k| k.split_once('.').map(|(c, _)| c.to_string()))
            .collect();
        set.into_iter().collect()
    }

    pub fn has(&self, case: &str, field: &str) -> bool {
        self.map.contains_key(&format!("{case}.{field}"))
    }

    /// A tensor converted to `dtype` (float fields only; integer fields keep their dtype).
    pub fn get(&self, case: &str, field: &str, dtype: DType) -> Result<Tensor> {
        let key = format!("{case}.{field}");
        let t = self
            .map
            .get(&key)
            .with_context(|| format!("{}: no {key}", self.name))?;
        Ok(if t.dtype().is_float() {
            t.to_dtype(dtype)?
        } else {
            t.clone()
        })
    }

    pub fn scalar(&self, case: &str, field: &str) -> Result<f64> {
        Ok(self.get(case, field, DType::F64)?.to_scalar::<f64>()?)
    }
}

/// `max |got − want| / max(max |want|, 1e-3)`: relative to the largest expected entry; the
/// floor keeps gradients that are mathematically zero (PyTorch gives ±1e-16) comparable.
pub fn rel_err(got: &Tensor, want: &Tensor) -> Result<f64> {
    if got.dims() != want.dims() {
        bail!("shape {:?} vs expected {:?}", got.dims(), want.dims())
    }
    let got = got.to_dtype(DType::F64)?.flatten_all()?;
    let want = want.to_dtype(DType::F64)?.flatten_all()?;
    let diff = (&got - &want)?.abs()?.max(0)?.to_scalar::<f64>()?;
    let scale = want.abs()?.max(0)?.to_scalar::<f64>()?;
    if diff.is_nan() {
        bail!("NaN in result")
    }
    Ok(if diff == 0.0 {
        0.0
    } else {
        diff / scale.max(1e-3)
    })
}

/// Fails with a message naming the quantity, the case and the dtype unless within `tol`.
pub fn assert_close(what: &str, got: &Tensor, want: &Tensor, tol: f64) -> Result<()> {
    let err = rel_err(got, want).with_context(|| what.to_string())?;
    if err > tol {
        bail!("{what}: relative error {err:e} > {tol:e}\n got {got}\nwant {want}")
    }
    Ok(())
}

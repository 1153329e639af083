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

/// `max |got − want| / max(max |want|, floor)`: relative to the largest expected entry. The
/// floor (1e-3 for f64, 1e-2 for f32, so absolute errors of 1e-11 and 1e-6) only matters for
/// gradients that are mathematically zero (D = 1: the normalisation leaves no direction to
/// move), where the reference holds rounding noise of about ±1e-16 and f32 of about ±1e-7.
pub fn rel_err(got: &Tensor, want: &Tensor) -> Result<f64> {
    if got.dims() != want.dims() {
        bail!("shape {:?} vs expected {:?}", got.dims(), want.dims())
    }
    let got_dtype = got.dtype();
    let got = got.to_dtype(DType::F64)?.flatten_all()?;
    let want = want.to_dtype(DType::F64)?.flatten_all()?;
    let diff = (&got - &want)?.abs()?.max(0)?.to_scalar::<f64>()?;
    let scale = want.abs()?.max(0)?.to_scalar::<f64>()?;
    if diff.is_nan() {
        bail!("NaN in result")
    }
    let floor = if got_dtype == DType::F32 { 1e-2 } else { 1e-3 };
    Ok(if diff == 0.0 {
        0.0
    } else {
        diff / scale.max(floor)
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

/// Runs `loss_fn` on every case of fixture `name`, in f64 and f32, with each field of
/// `inputs` turned into a `Var`; compares the loss with `loss`, the gradient of every field in
/// `with_grad` with `grad_<field>`, and checks that no gradient reaches the fields in `detached`.
pub fn check_fixture(
    name: &str,
    inputs: &[&str],
    with_grad: &[&str],
    detached: &[&str],
    loss_fn: impl Fn(&Fixture, &str, &[Tensor]) -> candle_core::Result<Tensor>,
) -> Result<()> {
    let fx = Fixture::load(name)?;
    let cases = fx.cases();
    if cases.is_empty() {
        bail!("{name}: no cases")
    }
    for case in cases {
        for (dtype, tol) in DTYPES {
            if dtype == DType::F32 && fx.has(&case, "f64_only") {
                // The script says why this case is ill-conditioned in f32.
                continue;
            }
            let what = format!("{name} {case} {dtype:?}");
            let vars = inputs
                .iter()
                .map(|f| Ok(candle_core::Var::from_tensor(&fx.get(&case, f, dtype)?)?))
                .collect::<Result<Vec<_>>>()?;
            let tensors: Vec<Tensor> = vars.iter().map(|v| v.as_tensor().clone()).collect();
            let loss = loss_fn(&fx, &case, &tensors).with_context(|| what.clone())?;
            if loss.dtype() != dtype || !loss.dims().is_empty() {
                bail!("{what}: loss is {:?} {:?}", loss.dtype(), loss.dims())
            }
            assert_close(
                &format!("{what} loss"),
                &loss,
                &fx.get(&case, "loss", dtype)?,
                tol,
            )?;
            let grads = loss.backward()?;
            for (field, var) in inputs.iter().zip(&vars) {
                if with_grad.contains(field) {
                    let want = fx.get(&case, &format!("grad_{field}"), dtype)?;
                    let got = match grads.get(var) {
                        Some(g) => g.clone(),
                        None => var.zeros_like()?,
                    };
                    assert_close(&format!("{what} grad {field}"), &got, &want, tol)?;
                }
                if detached.contains(field) && grads.get(var).is_some() {
                    bail!("{what}: a gradient reached {field}, which must be detached")
                }
            }
        }
    }
    Ok(())
}

/// Asserts that `result` is an error whose message contains every string of `needles`.
pub fn assert_err<T>(result: candle_core::Result<T>, needles: &[&str]) -> Result<()> {
    let msg = match result {
        Ok(_) => bail!("accepted bad input; expected an error mentioning {needles:?}"),
        Err(e) => e.to_string(),
    };
    for needle in needles {
        if !msg.contains(needle) {
            bail!("error {msg:?} does not mention {needle:?}")
        }
    }
    Ok(())
}

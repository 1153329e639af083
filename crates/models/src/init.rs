//! Seeded initialisation: a `VarBuilder` over a `VarMap` that draws new variables from a
//! seeded RNG, so that a seed gives a bit-identical model.

use candle_core::{DType, Device, Result, Shape, Tensor, Var};
use candle_nn::init::{FanInOut, NormalOrUniform};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::{Init, VarBuilder, VarMap};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal, Uniform};

/// A [`VarBuilder`] that creates its variables in `varmap`, each drawn from a ChaCha8 RNG
/// seeded with `seed` and the variable's full path, following the `Init` hint of the layer
/// that asks for it.
///
/// The value of a variable depends only on `(seed, path, shape, hint)`, never on the order
/// in which variables are created, so the same seed gives a bit-identical model, and adding
/// a head does not change the backbone. Paths already in `varmap` (e.g. after
/// [`VarMap::load`]) are returned as they are, as with [`VarBuilder::from_varmap`].
///
/// Every layer of this crate asks for torchvision's initialisation: Kaiming normal with
/// `mode="fan_out"` for convolutions (`std = sqrt(2 / (c_out * k * k))`), weight 1 and bias 0
/// for batch norms (weight 0 for the last batch norm of each block under
/// `zero_init_residual`), running mean 0 and variance 1, and PyTorch's `nn.Linear` default
/// `U(-1/sqrt(fan_in), 1/sqrt(fan_in))` for linear weights and biases.
///
/// ```
/// use candle_core::{DType, Device};
/// use candle_nn::VarMap;
/// let cfg = models::ResNetConfig::resnet8(10);
/// let (a, b) = (VarMap::new(), VarMap::new());
/// let net_a = models::ResNet::new(&cfg, models::init::seeded_var_builder(&a, 7, DType::F32, &Device::Cpu))?;
/// let _net_b = models::ResNet::new(&cfg, models::init::seeded_var_builder(&b, 7, DType::F32, &Device::Cpu))?;
/// let w = |m: &VarMap| m.data().lock().unwrap()["conv1.weight"].as_tensor().flatten_all()?.to_vec1::<f32>();
/// assert_eq!(w(&a)?, w(&b)?);
/// assert_eq!(net_a.num_classes(), 10);
/// # Ok::<(), candle_core::Error>(())
/// ```
pub fn seeded_var_builder(
    varmap: &VarMap,
    seed: u64,
    dtype: DType,
    device: &Device,
) -> VarBuilder<'static> {
    VarBuilder::from_backend(
        Box::new(SeededVarMap {
            varmap: varmap.clone(),
            seed,
        }),
        dtype,
        device.clone(),
    )
}

/// Draws a tensor of `shape` for `init`, from an RNG seeded by `seed` and `path`.
///
/// This is what [`seeded_var_builder`] does for each new variable.
pub fn seeded_tensor(
    init: Init,
    shape: &Shape,
    seed: u64,
    path: &str,
    dtype: DType,
    device: &Device,
) -> Result<Tensor> {
    let n = shape.elem_count();
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ fnv1a64(path.as_bytes()));
    let values: Vec<f64> = match init {
        Init::Const(v) => vec![v; n],
        Init::Randn { mean, stdev } => normal(&mut rng, mean, stdev, n)?,
        Init::Uniform { lo, up } => uniform(&mut rng, lo, up, n)?,
        Init::Kaiming {
            dist,
            fan,
            non_linearity,
        } => {
            let fan = match fan {
                FanInOut::FanIn => FanInOut::FanIn.for_shape(shape),
                FanInOut::FanOut => FanInOut::FanOut.for_shape(shape),
            };
            let std = non_linearity.gain() / (fan.max(1) as f64).sqrt();
            match dist {
                NormalOrUniform::Normal => normal(&mut rng, 0.0, std, n)?,
                NormalOrUniform::Uniform => {
                    let bound = 3f64.sqrt() * std;
                    uniform(&mut rng, -bound, bound, n)?
                }
            }
        }
    };
    Tensor::from_vec(values, shape, &Device::Cpu)?
        .to_dtype(dtype)?
        .to_device(device)
}

fn normal(rng: &mut ChaCha8Rng, mean: f64, std: f64, n: usize) -> Result<Vec<f64>> {
    let d = Normal::new(mean, std)
        .map_err(|e| candle_core::Error::Msg(format!("normal({mean}, {std}): {e}")))?;
    Ok((0..n).map(|_| d.sample(rng)).collect())
}

fn uniform(rng: &mut ChaCha8Rng, lo: f64, up: f64, n: usize) -> Result<Vec<f64>> {
    if lo == up {
        return Ok(vec![lo; n]);
    }
    let d = Uniform::new(lo, up)
        .map_err(|e| candle_core::Error::Msg(format!("uniform({lo}, {up}): {e}")))?;
    Ok((0..n).map(|_| d.sample(rng)).collect())
}

/// FNV-1a, 64 bits: a stable hash of a variable's path (std's hasher is not stable).
fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

struct SeededVarMap {
    varmap: VarMap,
    seed: u64,
}

impl SimpleBackend for SeededVarMap {
    fn get(&self, s: Shape, name: &str, h: Init, dtype: DType, dev: &Device) -> Result<Tensor> {
        let mut data = self
            .varmap
            .data()
            .lock()
            .map_err(|_| candle_core::Error::Msg("VarMap lock poisoned".into()))?;
        if let Some(var) = data.get(name) {
            if var.shape() != &s {
                candle_core::bail!("shape mismatch on {name}: {s:?} <> {:?}", var.shape())
            }
            return Ok(var.as_tensor().clone());
        }
        let var = Var::from_tensor(&seeded_tensor(h, &s, self.seed, name, dtype, dev)?)?;
        let tensor = var.as_tensor().clone();
        data.insert(name.to_string(), var);
        Ok(tensor)
    }

    fn get_unchecked(&self, name: &str, _dtype: DType, _dev: &Device) -> Result<Tensor> {
        candle_core::bail!("seeded VarMap: {name} needs a shape, use `get`")
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.varmap
            .data()
            .lock()
            .map(|d| d.contains_key(name))
            .unwrap_or(false)
    }
}

/// Whether a variable path names a batch-norm running statistic (`…running_mean`,
/// `…running_var`) rather than a trainable parameter.
///
/// Models built on a `VarMap` keep their running statistics in it (so they are saved with
/// the weights and update in place in training mode), but they never receive a gradient:
/// filter them out of the variables given to an optimiser that applies weight decay or
/// counts parameters.
///
/// ```
/// assert!(models::is_batch_norm_buffer("layer1.0.bn1.running_var"));
/// assert!(!models::is_batch_norm_buffer("layer1.0.bn1.weight"));
/// ```
pub fn is_batch_norm_buffer(path: &str) -> bool {
    path.ends_with("running_mean") || path.ends_with("running_var")
}

//! [`GaussianBlur`]: a Gaussian blur of random width.

use candle_core::{bail, Result};

use crate::op::Op;
use crate::transform::{uniform, AugRng, Transform};

/// Gaussian blur with a fixed square kernel and `sigma ~ U(sigma_min, sigma_max)`
/// (`transforms.v2.GaussianBlur`; SimCLR on ImageNet: kernel 10% of the image side, sigma in
/// [0.1, 2], applied with probability 0.5 through [`crate::RandomApply`]).
#[derive(Debug, Clone)]
pub struct GaussianBlur {
    kernel_size: usize,
    sigma: (f64, f64),
}

impl GaussianBlur {
    /// An odd `kernel_size` and `0 < sigma_min <= sigma_max`.
    pub fn new(kernel_size: usize, sigma_min: f64, sigma_max: f64) -> Result<Self> {
        if kernel_size == 0 || kernel_size % 2 == 0 {
            bail!("GaussianBlur: kernel_size {kernel_size} must be odd and positive")
        }
        if !(sigma_min > 0.0 && sigma_min <= sigma_max && sigma_max.is_finite()) {
            bail!(
                "GaussianBlur: sigma ({sigma_min}, {sigma_max}) must satisfy 0 < min <= max < inf"
            )
        }
        Ok(Self {
            kernel_size,
            sigma: (sigma_min, sigma_max),
        })
    }
}

impl Transform for GaussianBlur {
    fn sample(
        &self,
        rng: &mut AugRng,
        dims: (usize, usize),
        plan: &mut Vec<Op>,
    ) -> Result<(usize, usize)> {
        let sigma = uniform(rng, self.sigma.0, self.sigma.1) as f32;
        let op = Op::GaussianBlur {
            kernel_size: self.kernel_size,
            sigma: sigma.max(f32::MIN_POSITIVE),
        };
        let out = op.check(dims)?;
        plan.push(op);
        Ok(out)
    }
}

//! The two wrappers every convolution and every batch norm (+ ReLU) of the ResNets goes
//! through, and the torch-initialised linear layer.
//!
//! They call the fast kernels of [`crate::ops`] (im2col/GEMM convolution, batch norm fused
//! with the ReLU and with the residual add), which fall back to the stock Candle ops on
//! other devices and dtypes.

use candle_core::{Module, Result, Tensor};
use candle_nn::init::{FanInOut, NonLinearity, NormalOrUniform};
use candle_nn::{Init, Linear, VarBuilder};

/// A 2-D convolution without bias, as ResNets use (`nn.Conv2d(..., bias=False)`).
///
/// Parameter: `weight` `(c_out, c_in, k, k)`, initialised Kaiming normal `fan_out` (torchvision).
#[derive(Debug, Clone)]
pub(crate) struct Conv2d {
    weight: Tensor,
    stride: usize,
    padding: usize,
}

impl Conv2d {
    pub(crate) fn new(
        c_in: usize,
        c_out: usize,
        kernel: usize,
        stride: usize,
        padding: usize,
        vb: VarBuilder,
    ) -> Result<Self> {
        let init = Init::Kaiming {
            dist: NormalOrUniform::Normal,
            fan: FanInOut::FanOut,
            non_linearity: NonLinearity::ReLU,
        };
        let weight = vb.get_with_hints((c_out, c_in, kernel, kernel), "weight", init)?;
        Ok(Self {
            weight,
            stride,
            padding,
        })
    }

    pub(crate) fn num_parameters(&self) -> usize {
        self.weight.elem_count()
    }

    /// `xs: (N, c_in, H, W)` → `(N, c_out, H', W')`.
    pub(crate) fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        crate::ops::conv2d(xs, &self.weight, self.padding, self.stride)
    }
}

/// Batch norm over channels (`nn.BatchNorm2d`, also fine for `(N, C)` as `nn.BatchNorm1d`),
/// optionally followed by a ReLU.
///
/// Parameters `weight`, `bias`; buffers `running_mean`, `running_var` (updated in training
/// mode with PyTorch's momentum and unbiased variance).
#[derive(Debug, Clone)]
pub(crate) struct BatchNorm2d {
    bn: candle_nn::BatchNorm,
    num_features: usize,
    relu: bool,
}

impl BatchNorm2d {
    /// `zero_weight`: initialise the weight to 0 instead of 1 (`zero_init_residual`).
    pub(crate) fn new(
        num_features: usize,
        eps: f64,
        momentum: f64,
        relu: bool,
        zero_weight: bool,
        vb: VarBuilder,
    ) -> Result<Self> {
        let running_mean = vb.get_with_hints(num_features, "running_mean", Init::Const(0.))?;
        let running_var = vb.get_with_hints(num_features, "running_var", Init::Const(1.))?;
        let weight_init = Init::Const(if zero_weight { 0. } else { 1. });
        let weight = vb.get_with_hints(num_features, "weight", weight_init)?;
        let bias = vb.get_with_hints(num_features, "bias", Init::Const(0.))?;
        let bn = candle_nn::BatchNorm::new_with_momentum(
            num_features,
            running_mean,
            running_var,
            weight,
            bias,
            eps,
            momentum,
        )?;
        Ok(Self {
            bn,
            num_features,
            relu,
        })
    }

    pub(crate) fn num_parameters(&self) -> usize {
        2 * self.num_features
    }

    /// `xs: (N, C, H, W)` or `(N, C)`; `train` normalises with the batch statistics and
    /// updates the running ones.
    pub(crate) fn forward_t(&self, xs: &Tensor, train: bool) -> Result<Tensor> {
        if self.relu {
            crate::ops::batch_norm_relu(xs, &self.bn, train)
        } else {
            crate::ops::batch_norm(xs, &self.bn, train)
        }
    }

    /// `relu(bn(xs) + residual)`, the end of a residual block, in one fused op.
    pub(crate) fn forward_add_relu(
        &self,
        xs: &Tensor,
        residual: &Tensor,
        train: bool,
    ) -> Result<Tensor> {
        crate::ops::batch_norm_add_relu(xs, &self.bn, residual, train)
    }
}

/// PyTorch's `nn.Linear(in_dim, out_dim)` with its default initialisation:
/// weight and bias `U(-1/sqrt(in_dim), 1/sqrt(in_dim))`.
///
/// Parameters `weight` `(out_dim, in_dim)`, `bias` `(out_dim)`.
pub(crate) fn linear(in_dim: usize, out_dim: usize, vb: VarBuilder) -> Result<Linear> {
    let bound = 1. / (in_dim.max(1) as f64).sqrt();
    let init = Init::Uniform {
        lo: -bound,
        up: bound,
    };
    let weight = vb.get_with_hints((out_dim, in_dim), "weight", init)?;
    let bias = vb.get_with_hints(out_dim, "bias", init)?;
    Ok(Linear::new(weight, Some(bias)))
}

/// `xs.apply(linear)`, here so that every linear layer goes through one place.
pub(crate) fn linear_forward(linear: &Linear, xs: &Tensor) -> Result<Tensor> {
    linear.forward(xs)
}

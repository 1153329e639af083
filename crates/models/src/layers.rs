//! The two wrappers every convolution and every batch norm (+ ReLU) of the ResNets goes
//! through, and the torch-initialised linear layer.
//!
//! They call the fast kernels of [`crate::ops`] (each convolution and its batch norm, ReLU and
//! residual add as one op; batch norm fused with the ReLU), which fall back to the stock Candle
//! ops on other devices and dtypes.

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

    /// The convolution of `spec`, its weight under `vb.pp(spec.conv)`.
    pub(crate) fn from_spec(spec: &crate::config::ConvBnSpec, vb: &VarBuilder) -> Result<Self> {
        Self::new(
            spec.c_in,
            spec.c_out,
            spec.kernel,
            spec.stride,
            spec.padding,
            vb.pp(&spec.conv),
        )
    }

    pub(crate) fn num_parameters(&self) -> usize {
        self.weight.elem_count()
    }

    /// `bn(conv(xs))`, then `+ residual` and the ReLU (when `bn` has one or a residual is
    /// given, as `relu(bn(h) + residual)` ends a residual block) as one op:
    /// [`crate::ops::conv2d_bn_train`] in training, [`crate::ops::conv2d_bn_eval`] (the batch
    /// norm in the convolution's epilogue where nothing needs a gradient) in evaluation.
    pub(crate) fn forward_bn(
        &self,
        xs: &Tensor,
        bn: &BatchNorm2d,
        residual: Option<&Tensor>,
        train: bool,
    ) -> Result<Tensor> {
        let relu = bn.relu || residual.is_some();
        let (p, s) = (self.padding, self.stride);
        if train {
            crate::ops::conv2d_bn_train(xs, &self.weight, p, s, &bn.bn, residual, relu)
        } else {
            crate::ops::conv2d_bn_eval(xs, &self.weight, p, s, &bn.bn, residual, relu)
        }
    }

    /// The same layer on a detached copy of its weight (shares the storage).
    pub(crate) fn detach(&self) -> Self {
        Self {
            weight: self.weight.detach(),
            ..*self
        }
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

    /// The same layer on detached copies of its weight and bias and the original running
    /// statistics (all sharing their storage with the original).
    pub(crate) fn detach(&self) -> Result<Self> {
        let (w, b) = match self.bn.weight_and_bias() {
            Some((w, b)) => (w.detach(), b.detach()),
            None => candle_core::bail!("BatchNorm2d: a batch norm without affine parameters"),
        };
        let bn = candle_nn::BatchNorm::new_with_momentum(
            self.num_features,
            // The running statistics stay the original variables (shared, never differentiated).
            self.bn.running_mean().clone(),
            self.bn.running_var().clone(),
            w,
            b,
            self.bn.eps(),
            self.bn.momentum(),
        )?;
        Ok(Self { bn, ..*self })
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

/// A linear layer on detached copies of its weight and bias (they share the storage).
pub(crate) fn linear_detach(linear: &Linear) -> Linear {
    Linear::new(linear.weight().detach(), linear.bias().map(Tensor::detach))
}

/// `xs.apply(linear)`, here so that every linear layer goes through one place.
pub(crate) fn linear_forward(linear: &Linear, xs: &Tensor) -> Result<Tensor> {
    linear.forward(xs)
}

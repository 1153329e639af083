//! 2-D max-pooling with padding and a correct backward for any kernel and stride
//! (Candle's `max_pool2d` has neither padding nor a backward when kernel ≠ stride).

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp1, CustomOp2, Layout, Result, Shape, Tensor, WithDType};

/// Max-pooling over `(N, C, H, W)` with a square `kernel`, `stride` and implicit `-∞`
/// `padding`, as PyTorch's `F.max_pool2d(xs, kernel, stride, padding)` (floor mode, no
/// dilation).
///
/// `out[n, c, i, j] = max over (di, dj) < kernel of xs[n, c, i*stride + di - padding, j*stride + dj - padding]`,
/// out-of-range positions excluded. The gradient goes to the first maximum of each
/// window in row-major order (NaN counts as a maximum), as in PyTorch's CPU kernel.
///
/// On the CPU this is a Candle custom op with its own backward; on other devices it falls
/// back to [`max_pool2d_with_tensor_ops`].
///
/// # Shapes
/// - `xs`: `(N, C, H, W)`
/// - returns `(N, C, H_out, W_out)` with `H_out = (H + 2 padding - kernel) / stride + 1`
///
/// ```
/// use candle_core::{Device, Tensor};
/// let xs = Tensor::arange(0f32, 16., &Device::Cpu)?.reshape((1, 1, 4, 4))?;
/// let ys = models::MaxPool2d::new(3, 2, 1)?.forward(&xs)?;
/// assert_eq!(ys.flatten_all()?.to_vec1::<f32>()?, [5., 7., 13., 15.]);
/// # Ok::<(), candle_core::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MaxPool2d {
    kernel: usize,
    stride: usize,
    padding: usize,
}

impl MaxPool2d {
    /// Checks `kernel ≥ 1`, `stride ≥ 1` and `padding ≤ kernel / 2` (PyTorch's rule).
    pub fn new(kernel: usize, stride: usize, padding: usize) -> Result<Self> {
        if kernel == 0 || stride == 0 || padding > kernel / 2 {
            candle_core::bail!(
                "max_pool2d: kernel {kernel} and stride {stride} must be >= 1, padding {padding} <= kernel / 2"
            )
        }
        Ok(Self {
            kernel,
            stride,
            padding,
        })
    }

    /// The output size along one spatial dimension of size `len`.
    fn out_len(&self, len: usize) -> Result<usize> {
        let padded = len + 2 * self.padding;
        if padded < self.kernel {
            candle_core::bail!(
                "max_pool2d: input size {len} with padding {} is smaller than kernel {}",
                self.padding,
                self.kernel
            )
        }
        Ok((padded - self.kernel) / self.stride + 1)
    }

    fn check(&self, dims: &[usize]) -> Result<(usize, usize, usize, usize, usize, usize)> {
        let &[n, c, h, w] = dims else {
            candle_core::bail!("max_pool2d: input must be (N, C, H, W), got {dims:?}")
        };
        Ok((n, c, h, w, self.out_len(h)?, self.out_len(w)?))
    }

    /// Applies the pooling; see [`MaxPool2d`].
    pub fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        self.check(xs.dims())?;
        if xs.device().is_cpu() {
            xs.apply_op1(*self)
        } else {
            max_pool2d_with_tensor_ops(xs, self.kernel, self.stride, self.padding)
        }
    }

    /// Calls `f(out_pos, in_index, in_pos)` for the chosen maximum of every output position
    /// of a strided input `xs`: `in_index` indexes `xs`, `out_pos` and `in_pos` are
    /// row-major positions in the contiguous output and input.
    fn for_each_argmax<T: WithDType>(
        &self,
        xs: &[T],
        layout: &Layout,
        mut f: impl FnMut(usize, usize, usize),
    ) -> Result<()> {
        let (n, c, h, w, h_out, w_out) = self.check(layout.dims())?;
        let st = layout.stride();
        let off = layout.start_offset();
        let mut o = 0;
        for bn in 0..n {
            for bc in 0..c {
                let base = off + bn * st[0] + bc * st[1];
                for i in 0..h_out {
                    let h0 = (i * self.stride) as isize - self.padding as isize;
                    let hs = h0.max(0) as usize;
                    let he = ((h0 + self.kernel as isize) as usize).min(h);
                    for j in 0..w_out {
                        let w0 = (j * self.stride) as isize - self.padding as isize;
                        let ws = w0.max(0) as usize;
                        let we = ((w0 + self.kernel as isize) as usize).min(w);
                        let mut best = base + hs * st[2] + ws * st[3];
                        let mut best_pos = hs * w + ws;
                        let mut best_val = f64::NEG_INFINITY;
                        for y in hs..he {
                            for x in ws..we {
                                let idx = base + y * st[2] + x * st[3];
                                let v = xs[idx].to_f64();
                                if v > best_val || v.is_nan() {
                                    best_val = v;
                                    best = idx;
                                    best_pos = y * w + x;
                                    if v.is_nan() {
                                        break;
                                    }
                                }
                            }
                            if best_val.is_nan() {
                                break;
                            }
                        }
                        f(o, best, (bn * c + bc) * h * w + best_pos);
                        o += 1;
                    }
                }
            }
        }
        Ok(())
    }

    fn fwd<T: WithDType>(&self, xs: &[T], layout: &Layout) -> Result<(Vec<T>, Shape)> {
        let (n, c, _, _, h_out, w_out) = self.check(layout.dims())?;
        let mut out = vec![T::zero(); n * c * h_out * w_out];
        self.for_each_argmax(xs, layout, |o, i, _| out[o] = xs[i])?;
        Ok((out, Shape::from((n, c, h_out, w_out))))
    }
}

impl CustomOp1 for MaxPool2d {
    fn name(&self) -> &'static str {
        "max_pool2d_padded"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        Ok(match storage {
            CpuStorage::F32(v) => {
                let (o, s) = self.fwd(v, layout)?;
                (CpuStorage::F32(o), s)
            }
            CpuStorage::F64(v) => {
                let (o, s) = self.fwd(v, layout)?;
                (CpuStorage::F64(o), s)
            }
            CpuStorage::F16(v) => {
                let (o, s) = self.fwd(v, layout)?;
                (CpuStorage::F16(o), s)
            }
            CpuStorage::BF16(v) => {
                let (o, s) = self.fwd(v, layout)?;
                (CpuStorage::BF16(o), s)
            }
            other => candle_core::bail!("max_pool2d: unsupported dtype {:?}", other.dtype()),
        })
    }

    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad_res: &Tensor) -> Result<Option<Tensor>> {
        let grad = arg.apply_op2_no_bwd(grad_res, &MaxPool2dBackward(*self))?;
        Ok(Some(grad))
    }
}

/// The backward of [`MaxPool2d`]: `(xs, grad_out)` → `grad_xs`, routing each output
/// gradient to the first maximum of its window (recomputed from `xs`).
struct MaxPool2dBackward(MaxPool2d);

impl MaxPool2dBackward {
    fn bwd<T: WithDType>(
        &self,
        xs: &[T],
        xs_l: &Layout,
        grad: &[T],
        grad_l: &Layout,
    ) -> Result<(Vec<T>, Shape)> {
        let (n, c, h, w, h_out, w_out) = self.0.check(xs_l.dims())?;
        if grad_l.dims() != [n, c, h_out, w_out] {
            candle_core::bail!(
                "max_pool2d backward: gradient {:?} does not match output {:?}",
                grad_l.dims(),
                [n, c, h_out, w_out]
            )
        }
        // The gradient in contiguous row-major order, whatever its strides.
        let gs = grad_l.stride();
        let goff = grad_l.start_offset();
        let mut grad_c = Vec::with_capacity(n * c * h_out * w_out);
        for a in 0..n {
            for b in 0..c {
                for i in 0..h_out {
                    for j in 0..w_out {
                        grad_c.push(grad[goff + a * gs[0] + b * gs[1] + i * gs[2] + j * gs[3]]);
                    }
                }
            }
        }
        let mut out = vec![T::zero(); n * c * h * w];
        self.0
            .for_each_argmax(xs, xs_l, |o, _, pos| out[pos] += grad_c[o])?;
        Ok((out, Shape::from((n, c, h, w))))
    }
}

impl CustomOp2 for MaxPool2dBackward {
    fn name(&self) -> &'static str {
        "max_pool2d_padded_backward"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        Ok(match (s1, s2) {
            (CpuStorage::F32(x), CpuStorage::F32(g)) => {
                let (o, s) = self.bwd(x, l1, g, l2)?;
                (CpuStorage::F32(o), s)
            }
            (CpuStorage::F64(x), CpuStorage::F64(g)) => {
                let (o, s) = self.bwd(x, l1, g, l2)?;
                (CpuStorage::F64(o), s)
            }
            (CpuStorage::F16(x), CpuStorage::F16(g)) => {
                let (o, s) = self.bwd(x, l1, g, l2)?;
                (CpuStorage::F16(o), s)
            }
            (CpuStorage::BF16(x), CpuStorage::BF16(g)) => {
                let (o, s) = self.bwd(x, l1, g, l2)?;
                (CpuStorage::BF16(o), s)
            }
            (a, b) => candle_core::bail!(
                "max_pool2d backward: unsupported dtypes {:?}, {:?}",
                a.dtype(),
                b.dtype()
            ),
        })
    }
}

/// [`MaxPool2d`] built from differentiable tensor ops (pad with `-∞`, take the `kernel²`
/// strided windows, reduce with `max`), so it runs and trains on every device.
///
/// Slower than the CPU custom op, and where a window holds several equal maxima the
/// gradient goes to each of them (PyTorch picks the first); values are identical.
///
/// # Shapes
/// - `xs`: `(N, C, H, W)`
/// - returns `(N, C, H_out, W_out)` as [`MaxPool2d`]
pub fn max_pool2d_with_tensor_ops(
    xs: &Tensor,
    kernel: usize,
    stride: usize,
    padding: usize,
) -> Result<Tensor> {
    let pool = MaxPool2d::new(kernel, stride, padding)?;
    let (n, c, h, w, h_out, w_out) = pool.check(xs.dims())?;
    // Pad with -inf: `padding` before, and enough after that every window of every
    // offset can be cut as `stride * out_len` elements.
    let pad_h_after = (stride * h_out + kernel - 1).saturating_sub(h + padding);
    let pad_w_after = (stride * w_out + kernel - 1).saturating_sub(w + padding);
    let neg = |shape: (usize, usize, usize, usize)| -> Result<Tensor> {
        Tensor::full(f32::NEG_INFINITY, shape, xs.device())?.to_dtype(xs.dtype())
    };
    let mut parts = vec![];
    if padding > 0 {
        parts.push(neg((n, c, padding, w))?);
    }
    parts.push(xs.clone());
    if pad_h_after > 0 {
        parts.push(neg((n, c, pad_h_after, w))?);
    }
    let xs_p = Tensor::cat(&parts, 2)?;
    let hp = padding + h + pad_h_after;
    let mut parts = vec![];
    if padding > 0 {
        parts.push(neg((n, c, hp, padding))?);
    }
    parts.push(xs_p);
    if pad_w_after > 0 {
        parts.push(neg((n, c, hp, pad_w_after))?);
    }
    let xs_p = Tensor::cat(&parts, 3)?;
    let wp = padding + w + pad_w_after;
    let mut windows = Vec::with_capacity(kernel * kernel);
    for di in 0..kernel {
        let rows = xs_p
            .narrow(2, di, stride * h_out)?
            .reshape((n, c, h_out, stride, wp))?
            .narrow(3, 0, 1)?
            .squeeze(3)?;
        for dj in 0..kernel {
            let win = rows
                .narrow(3, dj, stride * w_out)?
                .reshape((n, c, h_out, w_out, stride))?
                .narrow(4, 0, 1)?;
            windows.push(win);
        }
    }
    Tensor::cat(&windows, 4)?.max(4)
}

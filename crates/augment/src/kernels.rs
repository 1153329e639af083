//! Scalar kernels on planar (3, H, W) `f32` buffers: the single implementation of every operation.
//!
//! Both front ends call these: [`crate::functional`] (candle tensors) and the batch pipeline
//! ([`crate::Pipeline::apply_batch`], raw `u8` pixels). Each kernel follows the arithmetic of
//! `torchvision.transforms.v2.functional` on float tensors, operation by operation, so the
//! results agree to float rounding.

/// Luma weights of `rgb_to_grayscale` (ITU-R 601-2, as torchvision).
const LUMA: [f32; 3] = [0.2989, 0.587, 0.114];

/// The scale torchvision's `to_dtype(float32, scale=True)` applies to `u8` values.
pub(crate) const U8_SCALE: f32 = 1.0 / 255.0;

/// Per-output-pixel resampling weights along one axis: `taps` (index, weight) pairs per output.
#[derive(Debug, Clone, Default)]
pub(crate) struct AxisWeights {
    pub(crate) taps: usize,
    pub(crate) index: Vec<usize>,
    pub(crate) weight: Vec<f32>,
}

impl AxisWeights {
    /// Bilinear weights with `align_corners=False` and no antialiasing (PyTorch's
    /// `upsample_bilinear2d`): two taps, the source index clamped at the borders.
    pub(crate) fn bilinear(in_len: usize, out_len: usize) -> Self {
        let scale = in_len as f32 / out_len as f32;
        let mut index = Vec::with_capacity(2 * out_len);
        let mut weight = Vec::with_capacity(2 * out_len);
        for d in 0..out_len {
            let src = (scale * (d as f32 + 0.5) - 0.5).max(0.0);
            let i0 = src as usize;
            let i1 = if i0 + 1 < in_len { i0 + 1 } else { i0 };
            let l1 = (src - i0 as f32).clamp(0.0, 1.0);
            index.extend_from_slice(&[i0.min(in_len - 1), i1.min(in_len - 1)]);
            weight.extend_from_slice(&[1.0 - l1, l1]);
        }
        Self {
            taps: 2,
            index,
            weight,
        }
    }

    /// Antialiased bilinear (triangle filter widened by the downscaling factor), as PyTorch's
    /// `_upsample_bilinear2d_aa`: weights normalised to sum to one over in-range taps.
    pub(crate) fn bilinear_antialias(in_len: usize, out_len: usize) -> Self {
        let scale = in_len as f32 / out_len as f32;
        let support = if scale >= 1.0 { scale } else { 1.0 };
        let invscale = if scale >= 1.0 { 1.0 / scale } else { 1.0 };
        let taps = (support.ceil() as usize) * 2 + 1;
        let mut index = Vec::with_capacity(taps * out_len);
        let mut weight = Vec::with_capacity(taps * out_len);
        for d in 0..out_len {
            let center = scale * (d as f32 + 0.5);
            // `static_cast<int64_t>` truncates toward zero.
            let xmin = ((center - support + 0.5).trunc() as i64).max(0) as usize;
            let xmax = ((center + support + 0.5).trunc() as i64).clamp(0, in_len as i64) as usize;
            let xsize = xmax.saturating_sub(xmin).min(taps);
            let start = weight.len();
            let mut total = 0.0f32;
            for j in 0..xsize {
                let x = ((j + xmin) as f32 - center + 0.5) * invscale;
                let w = (1.0 - x.abs()).max(0.0);
                weight.push(w);
                index.push(j + xmin);
                total += w;
            }
            if total != 0.0 {
                for w in &mut weight[start..] {
                    *w /= total;
                }
            }
            let pad_index = xmin.min(in_len - 1);
            for _ in xsize..taps {
                weight.push(0.0);
                index.push(pad_index);
            }
        }
        Self {
            taps,
            index,
            weight,
        }
    }

    /// The weights for `out_len` outputs from `in_len` inputs.
    pub(crate) fn new(in_len: usize, out_len: usize, antialias: bool) -> Self {
        if antialias {
            Self::bilinear_antialias(in_len, out_len)
        } else {
            Self::bilinear(in_len, out_len)
        }
    }
}

/// A source pixel type the resampler reads: `u8` (scaled by 1/255 first) or `f32`.
pub(crate) trait Pixel: Copy + Send + Sync {
    /// The value in [0, 1] that torchvision's `to_dtype(float32, scale=True)` gives.
    fn to_f32(self) -> f32;
}

impl Pixel for u8 {
    #[inline(always)]
    fn to_f32(self) -> f32 {
        self as f32 * U8_SCALE
    }
}

impl Pixel for f32 {
    #[inline(always)]
    fn to_f32(self) -> f32 {
        self
    }
}

/// A crop window and the output size of a resampling.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Window {
    pub(crate) top: usize,
    pub(crate) left: usize,
    pub(crate) height: usize,
    pub(crate) width: usize,
    pub(crate) out: (usize, usize),
    pub(crate) antialias: bool,
    pub(crate) flip: bool,
}

/// Crops `win` out of the planar image `src` of size `(h, w)`, resamples it to `win.out`
/// (width first, then height, as PyTorch does) and optionally mirrors it; writes into `dst`.
/// `tmp` is scratch space. The caller has checked that the window lies inside the image.
pub(crate) fn resized_crop<P: Pixel>(
    src: &[P],
    (h, w): (usize, usize),
    win: &Window,
    dst: &mut Vec<f32>,
    tmp: &mut Vec<f32>,
) {
    let (oh, ow) = win.out;
    let wx = AxisWeights::new(win.width, ow, win.antialias);
    let wy = AxisWeights::new(win.height, oh, win.antialias);
    tmp.clear();
    tmp.resize(3 * win.height * ow, 0.0);
    dst.clear();
    dst.resize(3 * oh * ow, 0.0);
    for c in 0..3 {
        let plane = &src[c * h * w..(c + 1) * h * w];
        for y in 0..win.height {
            let row =
                &plane[(win.top + y) * w + win.left..(win.top + y) * w + win.left + win.width];
            let out_row = &mut tmp[(c * win.height + y) * ow..(c * win.height + y + 1) * ow];
            for (x, o) in out_row.iter_mut().enumerate() {
                let xs = if win.flip { ow - 1 - x } else { x };
                let idx = &wx.index[xs * wx.taps..(xs + 1) * wx.taps];
                let wts = &wx.weight[xs * wx.taps..(xs + 1) * wx.taps];
                let mut acc = 0.0f32;
                for (&i, &wt) in idx.iter().zip(wts) {
                    acc += wt * row[i].to_f32();
                }
                *o = acc;
            }
        }
        for y in 0..oh {
            let idx = &wy.index[y * wy.taps..(y + 1) * wy.taps];
            let wts = &wy.weight[y * wy.taps..(y + 1) * wy.taps];
            let out_row = &mut dst[(c * oh + y) * ow..(c * oh + y + 1) * ow];
            out_row.fill(0.0);
            for (&i, &wt) in idx.iter().zip(wts) {
                let in_row = &tmp[(c * win.height + i) * ow..(c * win.height + i + 1) * ow];
                for (o, &v) in out_row.iter_mut().zip(in_row) {
                    *o += wt * v;
                }
            }
        }
    }
}

/// Copies the window of `size` = (height, width) at (`top`, `left`) out of the planar image
/// `src` of size `(h, w)` into `dst`, as `F.crop`: pixels of the window outside the image are 0,
/// so `top` and `left` may be negative and the window may reach past the right and bottom edges.
/// With `flip` the window is also mirrored left–right (output column `x` reads window column
/// `width − 1 − x`). The caller has checked that the window overlaps the image.
pub(crate) fn crop<P: Pixel>(
    src: &[P],
    (h, w): (usize, usize),
    (top, left): (isize, isize),
    (height, width): (usize, usize),
    flip: bool,
    dst: &mut Vec<f32>,
) {
    // The source columns [c0, c1) the window covers, and where they land in an output row.
    let c0 = left.max(0) as usize;
    let c1 = (left + width as isize).min(w as isize) as usize;
    let (x0, x1) = if flip {
        (
            (left + width as isize - c1 as isize) as usize,
            (left + width as isize - c0 as isize) as usize,
        )
    } else {
        ((c0 as isize - left) as usize, (c1 as isize - left) as usize)
    };
    dst.clear();
    dst.resize(3 * height * width, 0.0);
    for (c, out) in dst.chunks_exact_mut(height * width).enumerate() {
        let plane = &src[c * h * w..(c + 1) * h * w];
        for (y, out_row) in out.chunks_exact_mut(width).enumerate() {
            let sy = top + y as isize;
            if sy < 0 || sy >= h as isize {
                continue;
            }
            let row = &plane[sy as usize * w + c0..sy as usize * w + c1];
            let seg = &mut out_row[x0..x1];
            if flip {
                for (o, p) in seg.iter_mut().rev().zip(row) {
                    *o = p.to_f32();
                }
            } else {
                for (o, p) in seg.iter_mut().zip(row) {
                    *o = p.to_f32();
                }
            }
        }
    }
}

/// Mirrors every row of a planar image of width `w` in place.
pub(crate) fn hflip(buf: &mut [f32], w: usize) {
    for row in buf.chunks_exact_mut(w) {
        row.reverse();
    }
}

/// `clamp(x * factor, 0, 1)`.
pub(crate) fn brightness(buf: &mut [f32], factor: f32) {
    for v in buf.iter_mut() {
        *v = (*v * factor).clamp(0.0, 1.0);
    }
}

/// The luma of one pixel, in torchvision's order of operations.
#[inline(always)]
fn luma(r: f32, g: f32, b: f32) -> f32 {
    r * LUMA[0] + g * LUMA[1] + b * LUMA[2]
}

/// Splits a planar RGB image of `n` pixels into its three planes.
#[inline(always)]
fn planes(buf: &mut [f32], n: usize) -> (&mut [f32], &mut [f32], &mut [f32]) {
    let (r, gb) = buf.split_at_mut(n);
    let (g, b) = gb.split_at_mut(n);
    (r, g, b)
}

/// `clamp(x * factor + (1 - factor) * mean(gray(x)), 0, 1)`.
pub(crate) fn contrast(buf: &mut [f32], n: usize, factor: f32) {
    let (r, g, b) = planes(buf, n);
    let mut sum = 0.0f64;
    for i in 0..n {
        sum += luma(r[i], g[i], b[i]) as f64;
    }
    let mean = (sum / n.max(1) as f64) as f32;
    let other = (1.0 - factor) * mean;
    for v in buf.iter_mut() {
        *v = (*v * factor + other).clamp(0.0, 1.0);
    }
}

/// `clamp(x * factor + (1 - factor) * gray(x), 0, 1)`.
pub(crate) fn saturation(buf: &mut [f32], n: usize, factor: f32) {
    let alpha = 1.0 - factor;
    let (r, g, b) = planes(buf, n);
    for i in 0..n {
        let l = luma(r[i], g[i], b[i]) * alpha;
        r[i] = (r[i] * factor + l).clamp(0.0, 1.0);
        g[i] = (g[i] * factor + l).clamp(0.0, 1.0);
        b[i] = (b[i] * factor + l).clamp(0.0, 1.0);
    }
}

/// Replaces the three planes by the luma (all three channels equal).
pub(crate) fn grayscale(buf: &mut [f32], n: usize) {
    let (r, g, b) = planes(buf, n);
    for i in 0..n {
        let l = luma(r[i], g[i], b[i]);
        r[i] = l;
        g[i] = l;
        b[i] = l;
    }
}

/// Writes the luma of a planar RGB image into `dst` (one plane).
pub(crate) fn luma_plane(src: &[f32], n: usize, dst: &mut [f32]) {
    for (i, d) in dst.iter_mut().enumerate().take(n) {
        *d = luma(src[i], src[n + i], src[2 * n + i]);
    }
}

/// One pixel through torchvision's `_rgb_to_hsv`, a hue shift and `_hsv_to_rgb`.
#[inline(always)]
fn hue_pixel(r: f32, g: f32, b: f32, factor: f32) -> (f32, f32, f32) {
    let maxc = r.max(g).max(b);
    let minc = r.min(g).min(b);
    let eqc = maxc == minc;
    let range = maxc - minc;
    let s = range / if eqc { 1.0 } else { maxc };
    let div = if eqc { 1.0 } else { range };
    let rc = (maxc - r) / div;
    let gc = (maxc - g) / div;
    let bc = (maxc - b) / div;
    let neq_r = maxc != r;
    let eq_g = maxc == g;
    let hg = if eq_g && neq_r { rc + 2.0 - bc } else { 0.0 };
    let hr = if !neq_r { bc - gc } else { 0.0 };
    let hb = if neq_r && !eq_g { gc + 4.0 - rc } else { 0.0 };
    let h = hr + hg + hb;
    let h = (h * (1.0 / 6.0) + 1.0) % 1.0;
    // torch.remainder: the result takes the sign of the divisor.
    let h = h + factor;
    let h = h - h.floor();
    let v = maxc;
    let h6 = h * 6.0;
    let i = h6.floor();
    let f = h6 - i;
    let i = (i as i32).rem_euclid(6);
    let sxf = s * f;
    let one_minus_s = 1.0 - s;
    let q = ((1.0 - sxf) * v).clamp(0.0, 1.0);
    let t = ((sxf + one_minus_s) * v).clamp(0.0, 1.0);
    let p = (one_minus_s * v).clamp(0.0, 1.0);
    match i {
        0 => (v, t, p),
        1 => (q, v, p),
        2 => (p, v, t),
        3 => (p, q, v),
        4 => (t, p, v),
        _ => (v, p, q),
    }
}

/// Shifts the hue by `factor` (a fraction of a turn) through HSV, as torchvision.
pub(crate) fn hue(buf: &mut [f32], n: usize, factor: f32) {
    if factor == 0.0 {
        return;
    }
    let (r, g, b) = planes(buf, n);
    for i in 0..n {
        let (nr, ng, nb) = hue_pixel(r[i], g[i], b[i], factor);
        r[i] = nr;
        g[i] = ng;
        b[i] = nb;
    }
}

/// `x >= threshold ? 1 - x : x`.
pub(crate) fn solarize(buf: &mut [f32], threshold: f32) {
    for v in buf.iter_mut() {
        if *v >= threshold {
            *v = 1.0 - *v;
        }
    }
}

/// The normalised 1-D Gaussian kernel of torchvision (`softmax(-(x / sigma)^2)` on
/// `x = linspace(-lim, lim, k)`, `lim = (k - 1) / (2 sqrt 2)`).
pub(crate) fn gaussian_kernel(kernel_size: usize, sigma: f32) -> Vec<f32> {
    let lim = (kernel_size as f64 - 1.0) / (2.0 * std::f64::consts::SQRT_2);
    let k = kernel_size.max(1);
    let step = if k > 1 {
        2.0 * lim / (k as f64 - 1.0)
    } else {
        0.0
    };
    let logits: Vec<f32> = (0..k)
        .map(|i| {
            let x = (-lim + step * i as f64) as f32;
            let z = x / sigma;
            -(z * z)
        })
        .collect();
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let exps: Vec<f32> = logits.iter().map(|&l| (l - max).exp()).collect();
    let sum: f32 = exps.iter().sum();
    exps.iter().map(|&e| e / sum).collect()
}

/// Reflect-padded index (`torch.nn.functional.pad(mode="reflect")`); needs `pad < len`.
#[inline(always)]
fn reflect(i: isize, len: usize) -> usize {
    let n = len as isize;
    let i = if i < 0 { -i } else { i };
    let i = if i >= n { 2 * (n - 1) - i } else { i };
    i as usize
}

/// Gaussian blur with reflect padding, separably (rows then columns) on each plane of size
/// `(h, w)`. The caller has checked `kernel_size / 2 < min(h, w)`.
pub(crate) fn gaussian_blur(
    buf: &mut [f32],
    (h, w): (usize, usize),
    kernel_size: usize,
    sigma: f32,
    tmp: &mut Vec<f32>,
) {
    let kernel = gaussian_kernel(kernel_size, sigma);
    let half = (kernel_size / 2) as isize;
    tmp.clear();
    tmp.resize(h * w, 0.0);
    for plane in buf.chunks_exact_mut(h * w) {
        for y in 0..h {
            let row = &plane[y * w..(y + 1) * w];
            for x in 0..w {
                let mut acc = 0.0f32;
                for (k, &kv) in kernel.iter().enumerate() {
                    acc += kv * row[reflect(x as isize + k as isize - half, w)];
                }
                tmp[y * w + x] = acc;
            }
        }
        for y in 0..h {
            let out = &mut plane[y * w..(y + 1) * w];
            out.fill(0.0);
            for (k, &kv) in kernel.iter().enumerate() {
                let sy = reflect(y as isize + k as isize - half, h);
                for (o, &v) in out.iter_mut().zip(&tmp[sy * w..(sy + 1) * w]) {
                    *o += kv * v;
                }
            }
        }
    }
}

/// `(x - mean[c]) / std[c]`, written from the planar image `src` into `dst`.
pub(crate) fn normalize_into(
    src: &[f32],
    n: usize,
    mean: &[f32; 3],
    std: &[f32; 3],
    dst: &mut [f32],
) {
    for c in 0..3 {
        let (m, s) = (mean[c], std[c]);
        for (d, &v) in dst[c * n..(c + 1) * n]
            .iter_mut()
            .zip(&src[c * n..(c + 1) * n])
        {
            *d = (v - m) / s;
        }
    }
}

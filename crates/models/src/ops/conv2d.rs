//! 2-D convolution through im2col and GEMM, forward and both gradients, as a candle custom op.

use std::sync::Arc;

use candle_core::backend::BackendStorage;
use candle_core::{bail, CpuStorage, CustomOp2, DType, Layout, Result, Shape, Tensor, WithDType};
use rayon::prelude::*;

use super::cpu::{fast_path, gemm, slice, uninit_vec, with_data, with_scratch};
use super::im2col::{col2im_rows, im2col, im2col_rows, ConvGeom, Phases};

/// Aim for at least this many GEMM columns (output pixels) per call, batching small images.
const TARGET_COLS: usize = 256;
/// Cap on the elements of one im2col buffer (16 MiB of `f32`).
const MAX_COL_ELEMS: usize = 4 << 20;
/// Above this many elements (1 MiB of `f32`) one image's patch matrix is built and multiplied in
/// tiles of output rows, each small enough to stay in the core's cache.
const MAX_TILE_ELEMS: usize = 256 << 10;
/// Output pixels per tile (whole output rows, at least one).
const TILE_COLS: usize = 256;

/// 2-D convolution (groups 1, dilation 1, no bias): a drop-in for
/// `xs.conv2d(w, padding, stride, 1, 1)` with a fast CPU path.
///
/// `out[b, o, y, x] = Σ_{c, i, j} w[o, c, i, j] · xs[b, c, y·stride + i - padding, x·stride + j - padding]`
/// (zero outside the image), as `torch.nn.functional.conv2d`.
///
/// On CPU with `f32`/`f64` the forward pass is im2col + GEMM (the `gemm` crate candle uses),
/// small images batched so that each GEMM has at least a few hundred columns and large ones cut
/// into tiles of output rows whose patch matrix stays in cache. The backward pass computes the
/// input gradient of a stride-1 convolution with a square kernel as the convolution of the
/// output gradient with the transposed, flipped kernel, and otherwise as GEMM + col2im; the
/// kernel gradient as one GEMM per chunk of images (or tile) on the recomputed im2col buffer.
/// It skips either gradient when its tensor does not track one (e.g. the first layer's input).
/// Other devices and dtypes call the stock candle op.
///
/// **The argument order is candle's: `padding` before `stride`.**
///
/// # Shapes
/// - `xs`: `(B, C_in, H, W)`
/// - `w`: `(C_out, C_in, K_h, K_w)`
/// - returns `(B, C_out, (H + 2·padding - K_h) / stride + 1, (W + 2·padding - K_w) / stride + 1)`
///
/// # Example
/// ```
/// use candle_core::{Device, Tensor};
/// let xs = Tensor::ones((2, 3, 8, 8), candle_core::DType::F32, &Device::Cpu)?;
/// let w = Tensor::ones((4, 3, 3, 3), candle_core::DType::F32, &Device::Cpu)?;
/// let ys = models::ops::conv2d(&xs, &w, 1, 2)?;
/// assert_eq!(ys.dims(), &[2, 4, 4, 4]);
/// let stock = xs.conv2d(&w, 1, 2, 1, 1)?;
/// let diff = (ys - stock)?.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()?;
/// assert!(diff < 1e-5);
/// # Ok::<(), candle_core::Error>(())
/// ```
pub fn conv2d(xs: &Tensor, w: &Tensor, padding: usize, stride: usize) -> Result<Tensor> {
    let geom = geometry(xs, w, padding, stride)?;
    if !fast_path(xs) || xs.dtype() != w.dtype() || xs.device().location() != w.device().location()
    {
        return xs.conv2d(w, padding, stride, 1, 1);
    }
    let xs = xs.contiguous()?;
    let w = w.contiguous()?;
    xs.apply_op2_arc(&w, Arc::new(Box::new(Conv2dOp { geom })))
}

/// Checks the shapes and returns the geometry of the convolution.
pub(crate) fn geometry(xs: &Tensor, w: &Tensor, padding: usize, stride: usize) -> Result<ConvGeom> {
    let (b, c_in, h, wd) = match xs.dims() {
        &[b, c, h, w] => (b, c, h, w),
        d => bail!("conv2d: xs must be (B, C_in, H, W), got {d:?}"),
    };
    let (c_out, c_in_w, k_h, k_w) = match w.dims() {
        &[o, c, kh, kw] => (o, c, kh, kw),
        d => bail!("conv2d: w must be (C_out, C_in, K_h, K_w), got {d:?}"),
    };
    if c_in != c_in_w {
        bail!(
            "conv2d: xs {:?} has {c_in} channels but w {:?} expects {c_in_w}",
            xs.dims(),
            w.dims()
        );
    }
    if stride == 0 {
        bail!("conv2d: stride must be at least 1");
    }
    if k_h == 0 || k_w == 0 || h + 2 * padding < k_h || wd + 2 * padding < k_w {
        bail!(
            "conv2d: kernel {:?} does not fit the padded input {:?} (padding {padding})",
            w.dims(),
            xs.dims()
        );
    }
    Ok(ConvGeom {
        b,
        c_in,
        h,
        w: wd,
        c_out,
        k_h,
        k_w,
        stride,
        padding,
        out_h: (h + 2 * padding - k_h) / stride + 1,
        out_w: (wd + 2 * padding - k_w) / stride + 1,
    })
}

struct Conv2dOp {
    geom: ConvGeom,
}

/// How the batch is cut: `nb` images per GEMM, and the threads each GEMM gets.
///
/// The cut depends on the shapes alone, never on the thread count, and the kernel gradient is
/// summed over at most [`GROUPS`] partial sums in a fixed order: the same inputs give
/// bit-identical results on 1 or 16 threads (the trainer's determinism rests on it).
struct Plan {
    nb: usize,
    gemm_threads: usize,
    groups: usize,
    /// Output rows per patch-matrix tile when `nb` is 1.
    tile_rows: usize,
}

/// Partial kernel gradients per backward pass (fixed, so that results do not depend on threads).
const GROUPS: usize = 8;

fn plan(g: &ConvGeom) -> Plan {
    let threads = rayon::current_num_threads().max(1);
    let p = g.p().max(1);
    let by_cols = TARGET_COLS.div_ceil(p);
    let by_mem = (MAX_COL_ELEMS / (g.k() * p).max(1)).max(1);
    let by_groups = g.b.div_ceil(GROUPS).max(1);
    let nb = by_cols.min(by_mem).min(by_groups).max(1);
    let chunks = g.b.div_ceil(nb);
    let gemm_threads = if chunks >= threads { 1 } else { threads };
    let tile_rows = if nb == 1 && g.k() * g.p() > MAX_TILE_ELEMS {
        (TILE_COLS / g.out_w.max(1)).clamp(1, g.out_h.max(1))
    } else {
        g.out_h.max(1)
    };
    Plan {
        nb,
        gemm_threads,
        groups: GROUPS.min(chunks).max(1),
        tile_rows,
    }
}

/// What the forward pass does to each output value after the GEMM, while it is still in cache:
/// `y = max(0, y·scale[c] + bias[c] + residual)` (each part optional). The batch norm of
/// [`super::conv2d_bn_eval`] uses it.
pub(crate) struct Epilogue<'a, T> {
    /// Per output channel, multiplies every pixel.
    pub scale: Option<&'a [T]>,
    /// Per output channel, added to every pixel.
    pub bias: Option<&'a [T]>,
    /// The shape of the output, added element-wise.
    pub residual: Option<&'a [T]>,
    pub relu: bool,
}

impl<T: WithDType> Epilogue<'_, T> {
    /// Applies the epilogue to the `p` pixels `ys` of output channel `c` whose residual starts
    /// at `r0`.
    #[inline]
    fn apply(&self, ys: &mut [T], c: usize, r0: usize) {
        self.map(ys, None, c, r0);
    }

    /// [`Self::apply`] to the pixels `src`, written to `ys` (a copy and the epilogue in one
    /// pass).
    #[inline]
    fn apply_from(&self, ys: &mut [T], src: &[T], c: usize, r0: usize) {
        self.map(ys, Some(src), c, r0);
    }

    /// `ys = epilogue(src or ys)`.
    #[inline]
    fn map(&self, ys: &mut [T], src: Option<&[T]>, c: usize, r0: usize) {
        let zero = T::from_f64(0.0);
        let a = self.scale.map_or(T::from_f64(1.0), |s| s[c]);
        let b = self.bias.map_or(zero, |b| b[c]);
        let relu = |v: T| if self.relu && v < zero { zero } else { v };
        let n = ys.len();
        match (self.residual, src) {
            (Some(r), None) => {
                for (y, &rv) in ys.iter_mut().zip(&r[r0..r0 + n]) {
                    *y = relu(*y * a + b + rv);
                }
            }
            (None, None) => {
                for y in ys.iter_mut() {
                    *y = relu(*y * a + b);
                }
            }
            (Some(r), Some(s)) => {
                for ((y, &rv), &sv) in ys.iter_mut().zip(&r[r0..r0 + n]).zip(s) {
                    *y = relu(sv * a + b + rv);
                }
            }
            (None, Some(s)) => {
                for (y, &sv) in ys.iter_mut().zip(s) {
                    *y = relu(sv * a + b);
                }
            }
        }
    }
}

pub(crate) fn conv_fwd<T: WithDType>(
    g: &ConvGeom,
    x: &[T],
    w: &[T],
    epi: Option<&Epilogue<'_, T>>,
) -> Vec<T> {
    let pl = plan(g);
    let (k, p, c_out) = (g.k(), g.p(), g.c_out);
    let (in_len, out_len) = (g.in_len(), g.out_len());
    // Every element is written below (by the GEMM or the copy out of `tmp`).
    let mut out = uninit_vec::<T>(g.b * out_len);
    if out.is_empty() {
        return out;
    }
    // A strided convolution builds its patch matrix from the phase planes of the image.
    let phases = Phases::of(g);
    out.par_chunks_mut(pl.nb * out_len)
        .enumerate()
        .for_each(|(ci, o)| {
            let i0 = ci * pl.nb;
            let nbi = o.len() / out_len;
            let n = nbi * p;
            let direct = nbi == 1 && g.is_pointwise();
            let lens = [
                if direct {
                    0
                } else if nbi == 1 {
                    k * pl.tile_rows.min(g.out_h) * g.out_w
                } else {
                    k * n
                },
                if nbi == 1 { 0 } else { c_out * n },
                phases.map_or(0, |ph| ph.len(g)),
            ];
            with_scratch(|sc| {
                let [col, tmp, planes] = sc.get::<T, 3>(lens);
                let xs = &x[i0 * in_len..(i0 + nbi) * in_len];
                if nbi == 1 {
                    if let Some(ph) = &phases {
                        ph.split(g, xs, planes);
                    }
                    // One image, its output rows in tiles of `pl.tile_rows` (the whole image
                    // unless its patch matrix would not stay in cache).
                    let mut oy0 = 0;
                    while oy0 < g.out_h {
                        let oy1 = (oy0 + pl.tile_rows).min(g.out_h);
                        let (c0, cols) = (oy0 * g.out_w, (oy1 - oy0) * g.out_w);
                        let (rhs, rs): (&[T], usize) = if g.is_pointwise() {
                            (&xs[c0..], p)
                        } else {
                            match &phases {
                                Some(ph) => ph.im2col_rows(g, planes, col, cols, 0, (oy0, oy1)),
                                None => im2col_rows(g, xs, col, cols, 0, (oy0, oy1)),
                            }
                            (&col[..k * cols], cols)
                        };
                        gemm(
                            c_out,
                            cols,
                            k,
                            &mut o[c0..],
                            (p, 1),
                            false,
                            w,
                            (k, 1),
                            rhs,
                            (rs, 1),
                            pl.gemm_threads,
                        );
                        if let Some(epi) = epi {
                            for c in 0..c_out {
                                let at = c * p + c0;
                                epi.apply(&mut o[at..at + cols], c, i0 * out_len + at);
                            }
                        }
                        oy0 = oy1;
                    }
                } else {
                    for j in 0..nbi {
                        let xj = &xs[j * in_len..(j + 1) * in_len];
                        match &phases {
                            Some(ph) => {
                                ph.split(g, xj, planes);
                                ph.im2col_rows(g, planes, col, n, j * p, (0, g.out_h));
                            }
                            None => im2col(g, xj, col, n, j * p),
                        }
                    }
                    gemm(
                        c_out,
                        n,
                        k,
                        tmp,
                        (n, 1),
                        false,
                        w,
                        (k, 1),
                        col,
                        (n, 1),
                        pl.gemm_threads,
                    );
                    for j in 0..nbi {
                        for c in 0..c_out {
                            let dst = &mut o[j * out_len + c * p..j * out_len + (c + 1) * p];
                            let src = &tmp[c * n + j * p..c * n + (j + 1) * p];
                            match epi {
                                Some(epi) => {
                                    epi.apply_from(dst, src, c, (i0 + j) * out_len + c * p)
                                }
                                None => dst.copy_from_slice(src),
                            }
                        }
                    }
                }
            })
        });
    out
}

/// The input gradient of a stride-1 convolution with a square kernel (`padding ≤ K - 1`), as a
/// convolution of the output gradient, or `None` for other convolutions.
///
/// `dx[c, y, x] = Σ_{o, i, j} w[o, c, i, j] · dy[o, y + pad - i, x + pad - j]` is the convolution of
/// `dy` (`c_out` channels) with padding `K - 1 - pad` and the kernel `w'[c, o, i, j] =
/// w[o, c, K-1-i, K-1-j]` (transposed and flipped): one GEMM whose reduction runs over
/// `c_out·K·K` and whose result is `dx` itself, where the transposed GEMM of [`conv_bwd`] writes
/// a `K·K` times larger patch-matrix gradient for col2im to scatter back.
fn dx_as_conv<T: WithDType>(g: &ConvGeom, w: &[T], dy: &[T]) -> Option<Vec<T>> {
    if g.stride != 1 || g.k_h != g.k_w || g.padding >= g.k_h || g.is_pointwise() {
        return None;
    }
    let kk = g.k_h * g.k_w;
    let mut wt = uninit_vec::<T>(w.len());
    for o in 0..g.c_out {
        for c in 0..g.c_in {
            let src = &w[(o * g.c_in + c) * kk..(o * g.c_in + c + 1) * kk];
            let dst = &mut wt[(c * g.c_out + o) * kk..(c * g.c_out + o + 1) * kk];
            for (d, &v) in dst.iter_mut().zip(src.iter().rev()) {
                *d = v;
            }
        }
    }
    let gt = ConvGeom {
        b: g.b,
        c_in: g.c_out,
        h: g.out_h,
        w: g.out_w,
        c_out: g.c_in,
        k_h: g.k_h,
        k_w: g.k_w,
        stride: 1,
        padding: g.k_h - 1 - g.padding,
        out_h: g.h,
        out_w: g.w,
    };
    Some(conv_fwd(&gt, dy, &wt, None))
}

/// Input and kernel gradients, each only if asked for: the input gradient of a stride-1
/// convolution as a convolution ([`dx_as_conv`]), otherwise both in one sweep over the batch.
pub(crate) fn conv_bwd<T: WithDType>(
    g: &ConvGeom,
    x: &[T],
    w: &[T],
    dy: &[T],
    need_dx: bool,
    need_dw: bool,
) -> (Option<Vec<T>>, Option<Vec<T>>) {
    if need_dx {
        if let Some(dx) = dx_as_conv(g, w, dy) {
            let (_, dw) = conv_bwd_sweep(g, x, w, dy, false, need_dw);
            return (Some(dx), dw);
        }
    }
    conv_bwd_sweep(g, x, w, dy, need_dx, need_dw)
}

/// Input and kernel gradients in one sweep over the batch (input gradient by GEMM + col2im).
fn conv_bwd_sweep<T: WithDType>(
    g: &ConvGeom,
    x: &[T],
    w: &[T],
    dy: &[T],
    need_dx: bool,
    need_dw: bool,
) -> (Option<Vec<T>>, Option<Vec<T>>) {
    let zero = T::from_f64(0.0);
    let pl = plan(g);
    let (k, p, c_out) = (g.k(), g.p(), g.c_out);
    let (in_len, out_len) = (g.in_len(), g.out_len());
    let chunks = g.b.div_ceil(pl.nb);
    let groups = pl.groups;
    let per_group = chunks.div_ceil(groups) * pl.nb;
    // A strided convolution builds and scatters its patch matrix through phase planes.
    let phases = Phases::of(g);
    let plane_len = |need: bool| phases.filter(|_| need).map_or(0, |ph| ph.len(g));

    // One group of consecutive images: writes its slice of dx, returns its part of dw.
    let work = |gi: usize, mut dxp: Option<&mut [T]>| -> Vec<T> {
        let img0 = gi * per_group;
        let img1 = (img0 + per_group).min(g.b);
        // The group's first GEMM overwrites all of it (a group has at least one image).
        let mut dw = if need_dw {
            uninit_vec::<T>(c_out * k)
        } else {
            Vec::new()
        };
        let nmax = pl.nb * p;
        // Columns of the patch-matrix buffers: one tile of rows, or `nb` whole images.
        let (cmax, dyc_len) = if pl.nb == 1 {
            (pl.tile_rows * g.out_w, 0)
        } else {
            (nmax, c_out * nmax)
        };
        with_scratch(|sc| {
            // Phase planes of the image (for the kernel gradient's patch matrix) and of its
            // gradient (collected over the tiles of the image, then written to dx).
            let [col, dcol, dyc, x_planes, dx_planes] = sc.get::<T, 5>([
                k * cmax,
                k * cmax,
                dyc_len,
                plane_len(need_dw),
                plane_len(dxp.is_some()),
            ]);
            let mut first = true;
            let mut i0 = img0;
            while i0 < img1 {
                let nbi = pl.nb.min(img1 - i0);
                let xs = &x[i0 * in_len..(i0 + nbi) * in_len];
                let mut dxc = dxp
                    .as_deref_mut()
                    .map(|d| &mut d[(i0 - img0) * in_len..(i0 - img0 + nbi) * in_len]);
                // A 1x1 stride-1 convolution of one image needs no patch matrix: its input and
                // input gradient are the GEMM operand and result themselves.
                let direct = nbi == 1 && g.is_pointwise();
                if let Some(d) = dxc.as_deref_mut().filter(|_| !direct && phases.is_none()) {
                    // col2im adds into dx: zero this chunk first (dx is not zero-filled).
                    d.fill(zero);
                }
                // Segments of output rows: one image in tiles (see `conv_fwd`), or `nbi` whole
                // images at once.
                let rows = if nbi == 1 && !direct {
                    pl.tile_rows
                } else {
                    g.out_h
                };
                let mut oy0 = 0;
                while oy0 < g.out_h {
                    let oy1 = (oy0 + rows).min(g.out_h);
                    // Output pixels of the segment per image, their offset, all of them.
                    let (c0, cols) = (oy0 * g.out_w, (oy1 - oy0) * g.out_w);
                    let n = nbi * cols;
                    // dy of the segment as a (c_out, n) matrix with row stride `dy_rs`.
                    let (dys, dy_rs): (&[T], usize) = if nbi == 1 {
                        (&dy[i0 * out_len + c0..(i0 + 1) * out_len], p)
                    } else {
                        let dyc = &mut dyc[..c_out * n];
                        for j in 0..nbi {
                            for c in 0..c_out {
                                let src = (i0 + j) * out_len + c * p;
                                dyc[c * n + j * p..c * n + (j + 1) * p]
                                    .copy_from_slice(&dy[src..src + p]);
                            }
                        }
                        (dyc, n)
                    };
                    if let Some(d) = dxc.as_deref_mut() {
                        if direct {
                            // dx = wᵀ · dy, straight into the image.
                            gemm(
                                k,
                                cols,
                                c_out,
                                &mut d[c0..],
                                (p, 1),
                                false,
                                w,
                                (1, k),
                                dys,
                                (dy_rs, 1),
                                pl.gemm_threads,
                            );
                        } else {
                            // dcol = wᵀ (k, c_out) · dy (c_out, n), scattered back by col2im.
                            let dcol = &mut dcol[..k * n];
                            gemm(
                                k,
                                n,
                                c_out,
                                dcol,
                                (n, 1),
                                false,
                                w,
                                (1, k),
                                dys,
                                (dy_rs, 1),
                                pl.gemm_threads,
                            );
                            for (j, dj) in d.chunks_exact_mut(in_len).enumerate() {
                                let Some(ph) = &phases else {
                                    col2im_rows(g, dcol, n, j * cols, (oy0, oy1), dj);
                                    continue;
                                };
                                // One image's planes gather all its tiles (a chunk of several
                                // images is one segment, oy0 = 0 to out_h), then overwrite its dx.
                                if oy0 == 0 {
                                    dx_planes.fill(zero);
                                }
                                ph.col2im_rows(g, dcol, n, j * cols, (oy0, oy1), dx_planes);
                                if oy1 == g.out_h {
                                    ph.merge(g, dx_planes, dj);
                                }
                            }
                        }
                    }
                    if need_dw {
                        let (cs, cs_rs): (&[T], usize) = if direct {
                            (&xs[c0..], p)
                        } else {
                            let col = &mut col[..k * n];
                            for (j, xj) in xs.chunks_exact(in_len).enumerate() {
                                match &phases {
                                    Some(ph) => {
                                        // Split once per image (its first tile).
                                        if oy0 == 0 {
                                            ph.split(g, xj, x_planes);
                                        }
                                        ph.im2col_rows(g, x_planes, col, n, j * cols, (oy0, oy1));
                                    }
                                    None => im2col_rows(g, xj, col, n, j * cols, (oy0, oy1)),
                                }
                            }
                            (col, n)
                        };
                        // dw += dy (c_out, n) · colᵀ (n, k)
                        gemm(
                            c_out,
                            k,
                            n,
                            &mut dw,
                            (1, c_out),
                            !first,
                            dys,
                            (dy_rs, 1),
                            cs,
                            (1, cs_rs),
                            pl.gemm_threads,
                        );
                        first = false;
                    }
                    oy0 = oy1;
                }
                i0 += nbi;
            }
            dw
        })
    };

    let (dx, partials) = if need_dx {
        // Every chunk writes all of its slice (GEMM output, or zeroed before col2im).
        let mut dx = uninit_vec::<T>(g.b * in_len);
        let partials: Vec<Vec<T>> = if dx.is_empty() {
            Vec::new()
        } else {
            dx.par_chunks_mut(per_group * in_len)
                .enumerate()
                .map(|(gi, dxp)| work(gi, Some(dxp)))
                .collect()
        };
        (Some(dx), partials)
    } else if need_dw {
        let n_groups = g.b.div_ceil(per_group);
        let partials: Vec<Vec<T>> = (0..n_groups)
            .into_par_iter()
            .map(|gi| work(gi, None))
            .collect();
        (None, partials)
    } else {
        (None, Vec::new())
    };
    let dw = need_dw.then(|| sum_transposed(&partials, c_out, k));
    (dx, dw)
}

/// Output channels per task of [`sum_transposed`].
const SUM_BLOCK: usize = 16;

/// `dw (c_out, k)` from the column-major `(k, c_out)` partial kernel gradients (the layout the
/// GEMM runs fastest with: about 35% faster on the 64 -> 64 3x3 layer), summed in their order
/// and transposed in one pass, in parallel over blocks of output channels: each block reads 16
/// contiguous values per row of every partial and writes 16 rows.
fn sum_transposed<T: WithDType>(partials: &[Vec<T>], c_out: usize, k: usize) -> Vec<T> {
    let zero = T::from_f64(0.0);
    let mut dw = uninit_vec::<T>(c_out * k);
    if dw.is_empty() {
        return dw;
    }
    dw.par_chunks_mut(SUM_BLOCK * k)
        .enumerate()
        .for_each(|(bi, rows)| {
            let o0 = bi * SUM_BLOCK;
            let nb = rows.len() / k;
            let mut acc = [zero; SUM_BLOCK];
            for j in 0..k {
                let acc = &mut acc[..nb];
                match partials.split_first() {
                    Some((first, rest)) => {
                        acc.copy_from_slice(&first[j * c_out + o0..][..nb]);
                        for part in rest {
                            for (a, &v) in acc.iter_mut().zip(&part[j * c_out + o0..][..nb]) {
                                *a += v;
                            }
                        }
                    }
                    None => acc.fill(zero),
                }
                for (r, &v) in acc.iter().enumerate() {
                    rows[r * k + j] = v;
                }
            }
        });
    dw
}

impl Conv2dOp {
    fn out_shape(&self) -> Shape {
        let g = &self.geom;
        Shape::from((g.b, g.c_out, g.out_h, g.out_w))
    }

    fn bwd_typed<T: WithDType>(
        &self,
        x: &Tensor,
        w: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let (need_dx, need_dw) = (x.track_op(), w.track_op());
        if !need_dx && !need_dw {
            return Ok((None, None));
        }
        let (dx, dw) = with_data::<T, _>(x, |xd| {
            with_data::<T, _>(w, |wd| {
                with_data::<T, _>(grad, |gd| {
                    Ok(conv_bwd(&self.geom, xd, wd, gd, need_dx, need_dw))
                })
            })
        })?;
        let dx = dx
            .map(|v| Tensor::from_vec(v, x.shape(), x.device()))
            .transpose()?;
        let dw = dw
            .map(|v| Tensor::from_vec(v, w.shape(), w.device()))
            .transpose()?;
        Ok((dx, dw))
    }
}

impl CustomOp2 for Conv2dOp {
    fn name(&self) -> &'static str {
        "models-conv2d"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let out = match s1.dtype() {
            DType::F32 => f32::to_cpu_storage_owned(conv_fwd(
                &self.geom,
                slice::<f32>(s1, l1)?,
                slice::<f32>(s2, l2)?,
                None,
            )),
            DType::F64 => f64::to_cpu_storage_owned(conv_fwd(
                &self.geom,
                slice::<f64>(s1, l1)?,
                slice::<f64>(s2, l2)?,
                None,
            )),
            d => bail!("models-conv2d: unsupported dtype {d:?}"),
        };
        Ok((out, self.out_shape()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        match x.dtype() {
            DType::F32 => self.bwd_typed::<f32>(x, w, grad),
            DType::F64 => self.bwd_typed::<f64>(x, w, grad),
            d => bail!("models-conv2d: unsupported dtype {d:?}"),
        }
    }
}

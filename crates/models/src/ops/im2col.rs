//! im2col and col2im for one image: the patch matrix of a 2-D convolution and its adjoint.

use candle_core::WithDType;

/// The geometry of a convolution with groups = 1 and dilation = 1.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ConvGeom {
    pub b: usize,
    pub c_in: usize,
    pub h: usize,
    pub w: usize,
    pub c_out: usize,
    pub k_h: usize,
    pub k_w: usize,
    pub stride: usize,
    pub padding: usize,
    pub out_h: usize,
    pub out_w: usize,
}

impl ConvGeom {
    /// Rows of the patch matrix: `c_in · k_h · k_w`.
    pub fn k(&self) -> usize {
        self.c_in * self.k_h * self.k_w
    }
    /// Output pixels of one image: `out_h · out_w`.
    pub fn p(&self) -> usize {
        self.out_h * self.out_w
    }
    /// Input elements of one image.
    pub fn in_len(&self) -> usize {
        self.c_in * self.h * self.w
    }
    /// Output elements of one image.
    pub fn out_len(&self) -> usize {
        self.c_out * self.p()
    }
    /// A 1×1, stride-1, unpadded convolution: the patch matrix is the image itself.
    pub fn is_pointwise(&self) -> bool {
        self.k_h == 1 && self.k_w == 1 && self.stride == 1 && self.padding == 0
    }
    /// The range of output positions `o` whose input index `o·stride + k - padding` lies in
    /// `0..len`.
    fn valid(&self, k: usize, len: usize, out: usize) -> (usize, usize) {
        let s = self.stride;
        // o·s + k ≥ padding
        let lo = if self.padding > k {
            (self.padding - k).div_ceil(s)
        } else {
            0
        };
        // o·s + k - padding ≤ len - 1
        let hi = if len + self.padding > k {
            (len + self.padding - k - 1) / s + 1
        } else {
            0
        };
        (lo.min(out), hi.min(out).max(lo.min(out)))
    }
}

/// Writes the patch matrix of one image `x` (`c_in, h, w`) into columns `col0..col0 + p` of
/// `col` (`k` rows of length `ld`): `col[(c, ki, kj), col0 + oy·out_w + ox] =
/// x[c, oy·s + ki - pad, ox·s + kj - pad]`, zero outside the image.
pub(crate) fn im2col<T: WithDType>(g: &ConvGeom, x: &[T], col: &mut [T], ld: usize, col0: usize) {
    im2col_rows(g, x, col, ld, col0, (0, g.out_h));
}

/// [`im2col`] for the output rows `oy0..oy1` only: their `(oy1 - oy0)·out_w` columns go to
/// `col0..` of `col` (a tile of the patch matrix small enough to stay in cache).
pub(crate) fn im2col_rows<T: WithDType>(
    g: &ConvGeom,
    x: &[T],
    col: &mut [T],
    ld: usize,
    col0: usize,
    (oy0, oy1): (usize, usize),
) {
    let zero = T::from_f64(0.0);
    let cols = (oy1 - oy0) * g.out_w;
    // The valid output ranges depend on the kernel offset only: computed once, not per channel.
    let vy: Vec<(usize, usize)> = (0..g.k_h)
        .map(|ki| clip(g.valid(ki, g.h, g.out_h), (oy0, oy1)))
        .collect();
    let vx: Vec<(usize, usize)> = (0..g.k_w).map(|kj| g.valid(kj, g.w, g.out_w)).collect();
    for c in 0..g.c_in {
        let xc = &x[c * g.h * g.w..(c + 1) * g.h * g.w];
        for (ki, &(oy_lo, oy_hi)) in vy.iter().enumerate() {
            for (kj, &(ox_lo, ox_hi)) in vx.iter().enumerate() {
                let row = (c * g.k_h + ki) * g.k_w + kj;
                let dst = &mut col[row * ld + col0..row * ld + col0 + cols];
                zero_run(&mut dst[..(oy_lo - oy0) * g.out_w]);
                zero_run(&mut dst[(oy_hi - oy0) * g.out_w..]);
                if oy_hi <= oy_lo {
                    continue;
                }
                if g.stride == 1 && g.out_w == g.w {
                    let block = &mut dst[(oy_lo - oy0) * g.w..(oy_hi - oy0) * g.w];
                    shifted_rows(g, xc, block, oy_lo, (ox_lo, ox_hi), ki, kj);
                    continue;
                }
                for oy in oy_lo..oy_hi {
                    let iy = oy * g.stride + ki - g.padding;
                    let d = &mut dst[(oy - oy0) * g.out_w..(oy - oy0 + 1) * g.out_w];
                    d[..ox_lo].fill(zero);
                    d[ox_hi..].fill(zero);
                    if ox_hi > ox_lo {
                        let ix0 = ox_lo * g.stride + kj - g.padding;
                        let src = &xc[iy * g.w..(iy + 1) * g.w];
                        strided_copy(&mut d[ox_lo..ox_hi], &src[ix0..], g.stride);
                    }
                }
            }
        }
    }
}

/// `dst[o] = src[o · stride]` for every `o` (`src` holds at least `(len - 1)·stride + 1`
/// values): a plain copy for stride 1, and for stride 2 pairs taken whole, which the compiler
/// turns into vector shuffles instead of one bounds-checked load per value.
#[inline]
fn strided_copy<T: WithDType>(dst: &mut [T], src: &[T], stride: usize) {
    let n = dst.len();
    if n == 0 {
        return;
    }
    match stride {
        1 => dst.copy_from_slice(&src[..n]),
        2 => {
            // The last value is taken alone: its pair may reach past the end of `src`.
            let (body, last) = dst.split_at_mut(n - 1);
            for (d, pair) in body.iter_mut().zip(src[..2 * (n - 1)].chunks_exact(2)) {
                *d = pair[0];
            }
            last[0] = src[2 * (n - 1)];
        }
        s => {
            for (d, v) in dst.iter_mut().zip(src.iter().step_by(s)) {
                *d = *v;
            }
        }
    }
}

/// `dst[o · stride] += src[o]` for every `o`: the adjoint of [`strided_copy`], stride 2 by
/// whole pairs as there.
#[inline]
fn strided_add<T: WithDType>(dst: &mut [T], src: &[T], stride: usize) {
    let n = src.len();
    if n == 0 {
        return;
    }
    match stride {
        1 => {
            for (d, v) in dst[..n].iter_mut().zip(src) {
                *d += *v;
            }
        }
        2 => {
            let (body, last) = src.split_at(n - 1);
            for (pair, v) in dst[..2 * (n - 1)].chunks_exact_mut(2).zip(body) {
                pair[0] += *v;
            }
            dst[2 * (n - 1)] += last[0];
        }
        s => {
            for (d, v) in dst.iter_mut().step_by(s).zip(src) {
                *d += *v;
            }
        }
    }
}

/// Zeroes `run`: usually empty or one pixel, so a store or nothing rather than a `memset` call.
#[inline]
fn zero_run<T: WithDType>(run: &mut [T]) {
    let zero = T::from_f64(0.0);
    match run.len() {
        0 => {}
        1 => run[0] = zero,
        _ => run.fill(zero),
    }
}

/// The valid range `(lo, hi)` cut to the rows `oy0..oy1` (empty ranges as `(x, x)` inside them).
fn clip((lo, hi): (usize, usize), (oy0, oy1): (usize, usize)) -> (usize, usize) {
    let lo = lo.clamp(oy0, oy1);
    (lo, hi.clamp(lo, oy1))
}

/// The rows `oy_lo..` of one patch-matrix row (`block`, whole output rows) when the stride is 1
/// and the output is as wide as the input: they are one contiguous run of the channel `xc`,
/// shifted by `(ki - padding)·w + kj - padding`, so they are copied in one block and the columns
/// outside `ox_lo..ox_hi` (which the block fills with neighbouring pixels) are zeroed afterwards.
fn shifted_rows<T: WithDType>(
    g: &ConvGeom,
    xc: &[T],
    block: &mut [T],
    oy_lo: usize,
    (ox_lo, ox_hi): (usize, usize),
    ki: usize,
    kj: usize,
) {
    let w = g.w;
    // block[j] = xc[start + j], start = (oy_lo + ki - padding)·w + kj - padding (may be < 0).
    let start = ((oy_lo + ki - g.padding) * w + kj) as isize - g.padding as isize;
    let len = block.len() as isize;
    let j0 = (-start).clamp(0, len) as usize;
    let j1 = (xc.len() as isize - start).clamp(j0 as isize, len) as usize;
    zero_run(&mut block[..j0]);
    if j1 > j0 {
        // start + j0 ≥ 0 here: j0 < len means j0 = max(0, -start).
        let s0 = (start + j0 as isize) as usize;
        block[j0..j1].copy_from_slice(&xc[s0..s0 + (j1 - j0)]);
    }
    zero_run(&mut block[j1..]);
    if ox_lo > 0 || ox_hi < w {
        for r in block.chunks_exact_mut(w) {
            let (head, rest) = r.split_at_mut(ox_lo);
            zero_run(head);
            zero_run(&mut rest[ox_hi.max(ox_lo) - ox_lo..]);
        }
    }
}

/// The adjoint of [`im2col_rows`]: adds the columns of the output rows `oy0..oy1`, found at
/// `col0..` of `col`, into the image `dx` (`c_in, h, w`).
pub(crate) fn col2im_rows<T: WithDType>(
    g: &ConvGeom,
    col: &[T],
    ld: usize,
    col0: usize,
    (oy0, oy1): (usize, usize),
    dx: &mut [T],
) {
    let cols = (oy1 - oy0) * g.out_w;
    for c in 0..g.c_in {
        let dxc = &mut dx[c * g.h * g.w..(c + 1) * g.h * g.w];
        for ki in 0..g.k_h {
            let (oy_lo, oy_hi) = clip(g.valid(ki, g.h, g.out_h), (oy0, oy1));
            for kj in 0..g.k_w {
                let (ox_lo, ox_hi) = g.valid(kj, g.w, g.out_w);
                if ox_hi <= ox_lo {
                    continue;
                }
                let row = (c * g.k_h + ki) * g.k_w + kj;
                let src = &col[row * ld + col0..row * ld + col0 + cols];
                for oy in oy_lo..oy_hi {
                    let iy = oy * g.stride + ki - g.padding;
                    let r = (oy - oy0) * g.out_w;
                    let s = &src[r + ox_lo..r + ox_hi];
                    let ix0 = ox_lo * g.stride + kj - g.padding;
                    let d = &mut dxc[iy * g.w..(iy + 1) * g.w];
                    strided_add(&mut d[ix0..], s, g.stride);
                }
            }
        }
    }
}

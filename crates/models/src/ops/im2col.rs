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
    // block[j] = xc[start + j], start = (oy_lo + ki - padding)·w + kj - padding (may be < 0).
    let start = ((oy_lo + ki - g.padding) * g.w + kj) as isize - g.padding as isize;
    shifted_block(xc, block, start, g.w, (ox_lo, ox_hi));
}

/// `block[j] = src[start + j]` (zero where that index is outside `src`), then zero the columns
/// outside `ox_lo..ox_hi` of each row of `w` values of `block`: the rows of one patch-matrix row
/// that are one contiguous run of `src`, shifted by `start`.
fn shifted_block<T: WithDType>(
    src: &[T],
    block: &mut [T],
    start: isize,
    w: usize,
    ox: (usize, usize),
) {
    let (j0, j1) = inside(start, block.len(), src.len());
    zero_run(&mut block[..j0]);
    if j1 > j0 {
        // start + j0 ≥ 0 here: j0 < len means j0 = max(0, -start).
        let s0 = (start + j0 as isize) as usize;
        block[j0..j1].copy_from_slice(&src[s0..s0 + (j1 - j0)]);
    }
    zero_run(&mut block[j1..]);
    zero_edges(block, w, ox);
}

/// The indices `j0..j1` of a block of `len` values placed at `start` of a buffer of `buf_len`
/// values that land inside the buffer (`0 ≤ start + j < buf_len`).
fn inside(start: isize, len: usize, buf_len: usize) -> (usize, usize) {
    let len = len as isize;
    let j0 = (-start).clamp(0, len);
    let j1 = (buf_len as isize - start).clamp(j0, len);
    (j0 as usize, j1 as usize)
}

/// Zeroes the columns outside `ox_lo..ox_hi` of each row of `w` values of `block`.
fn zero_edges<T: WithDType>(block: &mut [T], w: usize, (ox_lo, ox_hi): (usize, usize)) {
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

/// The input of a strided convolution split into phase planes, so that its patch matrix is
/// built, and scattered back, by the whole-block copies of the stride-1 case.
///
/// With stride `s`, the input pixel of output `(oy, ox)` and kernel tap `(ki, kj)` is
/// `(oy·s + ki - pad, ox·s + kj - pad)`. Writing `ki - pad = qy·s + ry` (`0 ≤ ry < s`) and
/// likewise `kj - pad = qx·s + rx`, it is pixel `(oy + qy, ox + qx)` of the plane `(ry, rx)`,
/// which holds the input pixels `(t·s + ry, u·s + rx)`: within one plane the tap is a plain
/// shift, and a patch-matrix row is one contiguous run of the plane when the plane is `out_w`
/// wide. Each channel has `s²` planes of `hp = ⌈h / s⌉` rows and `wp = out_w` columns, zero
/// where they reach past the image.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Phases {
    s: usize,
    hp: usize,
    wp: usize,
}

impl Phases {
    /// The planes of `g`, when they pay: a stride above 1, at least `stride²` kernel taps (so
    /// that every plane is read; a 1×1 strided convolution gathers a quarter of the input
    /// directly), and planes no wider than the output (`⌈w / s⌉ ≤ out_w`).
    pub(crate) fn of(g: &ConvGeom) -> Option<Phases> {
        let s = g.stride;
        (s > 1 && g.k_h * g.k_w >= s * s && g.w.div_ceil(s) <= g.out_w).then(|| Phases {
            s,
            hp: g.h.div_ceil(s),
            wp: g.out_w,
        })
    }

    /// Elements of the planes of one image: `c_in · s² · hp · wp`.
    pub(crate) fn len(&self, g: &ConvGeom) -> usize {
        g.c_in * self.s * self.s * self.hp * self.wp
    }

    /// The plane `(ry, rx)` of channel `c` within `planes`.
    fn plane(&self, c: usize, ry: usize, rx: usize) -> std::ops::Range<usize> {
        let n = self.hp * self.wp;
        let i = (c * self.s + ry) * self.s + rx;
        i * n..(i + 1) * n
    }

    /// Per kernel offset `k` along an axis of `n_in` plane pixels and `out` output pixels: its
    /// phase `r`, its shift `q` within the plane, and the outputs `o` with `0 ≤ o + q < n_in`.
    fn taps(&self, kernel: usize, padding: usize, n_in: usize, out: usize) -> Vec<Tap> {
        (0..kernel)
            .map(|k| {
                let d = k as isize - padding as isize;
                let (r, q) = (d.rem_euclid(self.s as isize), d.div_euclid(self.s as isize));
                let lo = (-q).clamp(0, out as isize);
                let hi = (n_in as isize - q).clamp(lo, out as isize);
                Tap {
                    r: r as usize,
                    q,
                    valid: (lo as usize, hi as usize),
                }
            })
            .collect()
    }

    /// Writes the planes of one image `x` (`c_in, h, w`) to `planes` ([`Self::len`] elements):
    /// `planes[c, ry, rx, t, u] = x[c, t·s + ry, u·s + rx]`, zero outside the image.
    ///
    /// Each input row is read once, into the row `t` of its `s` planes (for stride 2 by whole
    /// pairs, which the compiler turns into vector shuffles).
    pub(crate) fn split<T: WithDType>(&self, g: &ConvGeom, x: &[T], planes: &mut [T]) {
        let zero = T::from_f64(0.0);
        let (s, wp) = (self.s, self.wp);
        let n_plane = self.hp * wp;
        for c in 0..g.c_in {
            let xc = &x[c * g.h * g.w..(c + 1) * g.h * g.w];
            for ry in 0..s {
                // The s planes (ry, 0..s) of the channel, side by side.
                let first = self.plane(c, ry, 0).start;
                let group = &mut planes[first..first + s * n_plane];
                for t in 0..self.hp {
                    let iy = t * s + ry;
                    if iy >= g.h {
                        for rx in 0..s {
                            group[rx * n_plane + t * wp..][..wp].fill(zero);
                        }
                        continue;
                    }
                    let row = &xc[iy * g.w..(iy + 1) * g.w];
                    if s == 2 {
                        let (p0, p1) = group.split_at_mut(n_plane);
                        let (d0, d1) = (&mut p0[t * wp..][..wp], &mut p1[t * wp..][..wp]);
                        let pairs = row.chunks_exact(2);
                        let tail = pairs.remainder();
                        let n = g.w / 2;
                        for ((a, b), pair) in d0.iter_mut().zip(d1.iter_mut()).zip(pairs) {
                            *a = pair[0];
                            *b = pair[1];
                        }
                        // An odd width leaves one pixel for the even plane.
                        match tail {
                            [v] => {
                                d0[n] = *v;
                                d0[n + 1..].fill(zero);
                            }
                            _ => d0[n..].fill(zero),
                        }
                        d1[n..].fill(zero);
                        continue;
                    }
                    for rx in 0..s {
                        let dst = &mut group[rx * n_plane + t * wp..][..wp];
                        // Columns u with u·s + rx < w.
                        let n = g.w.saturating_sub(rx).div_ceil(s);
                        if n > 0 {
                            strided_copy(&mut dst[..n], &row[rx..], s);
                        }
                        dst[n..].fill(zero);
                    }
                }
            }
        }
    }

    /// Writes every pixel of the image `dx` (`c_in, h, w`) from its place in `planes`: the
    /// inverse of [`Self::split`] on the image (what lies past the image is dropped).
    pub(crate) fn merge<T: WithDType>(&self, g: &ConvGeom, planes: &[T], dx: &mut [T]) {
        let s = self.s;
        let n_plane = self.hp * self.wp;
        for c in 0..g.c_in {
            let dxc = &mut dx[c * g.h * g.w..(c + 1) * g.h * g.w];
            for (iy, row) in dxc.chunks_exact_mut(g.w).enumerate() {
                let (t, ry) = (iy / s, iy % s);
                let first = self.plane(c, ry, 0).start + t * self.wp;
                if s == 2 {
                    let (r0, r1) = (&planes[first..], &planes[first + n_plane..]);
                    let mut pairs = row.chunks_exact_mut(2);
                    for ((pair, &a), &b) in (&mut pairs).zip(r0).zip(r1) {
                        pair[0] = a;
                        pair[1] = b;
                    }
                    if let [v] = pairs.into_remainder() {
                        *v = r0[g.w / 2];
                    }
                    continue;
                }
                for rx in 0..s.min(g.w) {
                    let src = &planes[first + rx * n_plane..][..self.wp];
                    for (d, &v) in row[rx..].iter_mut().step_by(s).zip(src) {
                        *d = v;
                    }
                }
            }
        }
    }

    /// Calls `f` with every patch-matrix row of the tile of output rows `oy0..oy1`, as the
    /// planes see it.
    fn for_each_row(&self, g: &ConvGeom, (oy0, oy1): (usize, usize), mut f: impl FnMut(PlaneRow)) {
        let ty = self.taps(g.k_h, g.padding, self.hp, g.out_h);
        let tx = self.taps(g.k_w, g.padding, self.wp, g.out_w);
        for c in 0..g.c_in {
            for (ki, y) in ty.iter().enumerate() {
                let oy = clip(y.valid, (oy0, oy1));
                for (kj, x) in tx.iter().enumerate() {
                    f(PlaneRow {
                        row: (c * g.k_h + ki) * g.k_w + kj,
                        plane: self.plane(c, y.r, x.r),
                        oy,
                        ox: x.valid,
                        start: (oy.0 as isize + y.q) * self.wp as isize + x.q,
                    });
                }
            }
        }
    }

    /// [`im2col_rows`] from the planes of the image ([`Self::split`]): every patch-matrix row
    /// of the tile is one shifted block of one plane.
    pub(crate) fn im2col_rows<T: WithDType>(
        &self,
        g: &ConvGeom,
        planes: &[T],
        col: &mut [T],
        ld: usize,
        col0: usize,
        (oy0, oy1): (usize, usize),
    ) {
        let cols = (oy1 - oy0) * g.out_w;
        self.for_each_row(g, (oy0, oy1), |r| {
            let (oy_lo, oy_hi) = r.oy;
            let dst = &mut col[r.row * ld + col0..r.row * ld + col0 + cols];
            zero_run(&mut dst[..(oy_lo - oy0) * g.out_w]);
            zero_run(&mut dst[(oy_hi - oy0) * g.out_w..]);
            if oy_hi > oy_lo {
                let block = &mut dst[(oy_lo - oy0) * g.out_w..(oy_hi - oy0) * g.out_w];
                shifted_block(&planes[r.plane], block, r.start, self.wp, r.ox);
            }
        });
    }

    /// The adjoint of [`Self::im2col_rows`]: adds the columns of the output rows `oy0..oy1`,
    /// found at `col0..` of `col`, into `planes`, each patch-matrix row as one block added at
    /// its shift. The block's columns outside the plane are zeroed in `col` first (so that they
    /// add nothing to the neighbouring pixels the block covers); `col` is scratch.
    pub(crate) fn col2im_rows<T: WithDType>(
        &self,
        g: &ConvGeom,
        col: &mut [T],
        ld: usize,
        col0: usize,
        (oy0, oy1): (usize, usize),
        planes: &mut [T],
    ) {
        let cols = (oy1 - oy0) * g.out_w;
        self.for_each_row(g, (oy0, oy1), |r| {
            let ((oy_lo, oy_hi), (ox_lo, ox_hi)) = (r.oy, r.ox);
            if oy_hi <= oy_lo || ox_hi <= ox_lo {
                return;
            }
            let src = &mut col[r.row * ld + col0..r.row * ld + col0 + cols];
            let block = &mut src[(oy_lo - oy0) * g.out_w..(oy_hi - oy0) * g.out_w];
            zero_edges(block, g.out_w, r.ox);
            let plane = &mut planes[r.plane];
            let (j0, j1) = inside(r.start, block.len(), plane.len());
            if j1 > j0 {
                let s0 = (r.start + j0 as isize) as usize;
                for (d, &v) in plane[s0..s0 + (j1 - j0)].iter_mut().zip(&block[j0..j1]) {
                    *d += v;
                }
            }
        });
    }
}

/// One patch-matrix row of a tile, as the phase planes see it ([`Phases::for_each_row`]).
struct PlaneRow {
    /// The row of the patch matrix: `(c·k_h + ki)·k_w + kj`.
    row: usize,
    /// Its plane within the planes of the image.
    plane: std::ops::Range<usize>,
    /// The tile's output rows whose input lies inside the plane.
    oy: (usize, usize),
    /// The output columns whose input lies inside the plane.
    ox: (usize, usize),
    /// Where the output `(oy.0, 0)` reads in the plane (negative before its start).
    start: isize,
}

/// One kernel offset along one axis, in the phase planes of [`Phases`].
struct Tap {
    /// The phase: `(k - padding) mod stride`.
    r: usize,
    /// The shift within the plane: `⌊(k - padding) / stride⌋`.
    q: isize,
    /// The outputs whose input lies inside the plane.
    valid: (usize, usize),
}

//! Helpers shared by the CPU kernels: dtype dispatch, storage access, raw GEMM calls.

use candle_core::{bail, CpuStorage, DType, Layout, Result, Storage, Tensor, WithDType};

/// Whether a tensor can take the fast CPU path (CPU device, `f32` or `f64`).
pub(crate) fn fast_path(xs: &Tensor) -> bool {
    xs.device().is_cpu() && matches!(xs.dtype(), DType::F32 | DType::F64)
}

/// The contiguous slice of a CPU storage described by `layout`.
pub(crate) fn slice<'a, T: WithDType>(s: &'a CpuStorage, layout: &Layout) -> Result<&'a [T]> {
    let data = s.as_slice::<T>()?;
    match layout.contiguous_offsets() {
        Some((start, end)) => Ok(&data[start..end]),
        None => bail!(
            "fast op: expected a contiguous input, got strides {:?}",
            layout.stride()
        ),
    }
}

/// Runs `f` on the contiguous CPU data of `xs` (made contiguous first if needed).
pub(crate) fn with_data<T: WithDType, R>(
    xs: &Tensor,
    f: impl FnOnce(&[T]) -> Result<R>,
) -> Result<R> {
    let xs = xs.contiguous()?;
    let (storage, layout) = xs.storage_and_layout();
    match &*storage {
        Storage::Cpu(s) => f(slice::<T>(s, layout)?),
        _ => bail!(
            "fast op: expected a CPU tensor, got {:?}",
            xs.device().location()
        ),
    }
}

/// `dst (m, n) = [dst +] lhs (m, k) · rhs (k, n)` with arbitrary element strides
/// (row stride `*_rs`, column stride `*_cs`), through the `gemm` crate that candle uses.
///
/// `accumulate` adds to the existing `dst` instead of overwriting it.
#[allow(clippy::too_many_arguments)]
pub(crate) fn gemm<T: WithDType>(
    m: usize,
    n: usize,
    k: usize,
    dst: &mut [T],
    (dst_rs, dst_cs): (usize, usize),
    accumulate: bool,
    lhs: &[T],
    (lhs_rs, lhs_cs): (usize, usize),
    rhs: &[T],
    (rhs_rs, rhs_cs): (usize, usize),
    threads: usize,
) {
    if m == 0 || n == 0 {
        return;
    }
    // Every index the kernel touches must lie inside the slices.
    let last = |rows: usize, cols: usize, rs: usize, cs: usize| (rows - 1) * rs + (cols - 1) * cs;
    assert!(
        last(m, n, dst_rs, dst_cs) < dst.len(),
        "gemm: dst too short"
    );
    if k > 0 {
        assert!(
            last(m, k, lhs_rs, lhs_cs) < lhs.len(),
            "gemm: lhs too short"
        );
        assert!(
            last(k, n, rhs_rs, rhs_cs) < rhs.len(),
            "gemm: rhs too short"
        );
    }
    let parallelism = if threads > 1 {
        gemm::Parallelism::Rayon(threads)
    } else {
        gemm::Parallelism::None
    };
    // SAFETY: the asserts above keep every access inside the three slices; `dst` is borrowed
    // mutably so it aliases neither input. T is f32 or f64 (callers check the dtype), which
    // `gemm` supports.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            dst_cs as isize,
            dst_rs as isize,
            accumulate,
            lhs.as_ptr(),
            lhs_cs as isize,
            lhs_rs as isize,
            rhs.as_ptr(),
            rhs_cs as isize,
            rhs_rs as isize,
            T::from_f64(1.0),
            T::from_f64(1.0),
            false,
            false,
            false,
            parallelism,
        )
    }
}

/// A vector of `len` elements that is not zero-filled: for outputs whose every element the
/// caller writes before anything reads it (a zero-filled `vec!` of a size the allocator serves
/// from reused memory costs a `memset` over the whole output).
///
/// Only for `f32`/`f64`, the dtypes of the fast path (checked: any other `T` gets zeros).
#[allow(clippy::uninit_vec)] // Deliberate: the point is to skip the zero-fill (see above).
pub(crate) fn uninit_vec<T: WithDType>(len: usize) -> Vec<T> {
    if !matches!(T::DTYPE, DType::F32 | DType::F64) {
        return vec![T::from_f64(0.0); len];
    }
    let mut v = Vec::with_capacity(len);
    // SAFETY: the capacity is `len`; every bit pattern is a valid f32/f64, and the callers
    // overwrite every element before reading it (candle's own `alloc_uninit` does the same).
    unsafe { v.set_len(len) };
    v
}

/// Scratch buffers of one thread (im2col and GEMM temporaries), kept between calls so that
/// each convolution does not allocate (and the kernel does not map and zero) fresh pages.
#[derive(Default)]
pub(crate) struct Scratch {
    bufs: [Vec<u64>; SCRATCH_BUFS],
}

/// Buffers per thread in [`Scratch`].
const SCRATCH_BUFS: usize = 5;

impl Scratch {
    /// The first `N` buffers (at most [`SCRATCH_BUFS`]), each grown to `lens[i]` elements of
    /// `T`, as typed slices.
    ///
    /// `T` must be `f32` or `f64` (8-byte storage, 4- or 8-byte elements); contents are
    /// whatever an earlier call left (callers overwrite what they read).
    pub(crate) fn get<T: WithDType, const N: usize>(&mut self, lens: [usize; N]) -> [&mut [T]; N] {
        assert!(
            matches!(T::DTYPE, DType::F32 | DType::F64),
            "scratch: f32/f64 only"
        );
        assert!(
            N <= SCRATCH_BUFS,
            "scratch: {N} buffers asked, {SCRATCH_BUFS} kept"
        );
        let mut bufs = self.bufs.iter_mut();
        std::array::from_fn(|i| match bufs.next() {
            Some(b) => typed(b, lens[i]),
            None => unreachable!("N ≤ SCRATCH_BUFS, asserted above"),
        })
    }
}

/// The first `len` elements of `T` of `buf`, grown if needed (`T` is `f32` or `f64`).
fn typed<T: WithDType>(buf: &mut Vec<u64>, len: usize) -> &mut [T] {
    let words = (len * std::mem::size_of::<T>()).div_ceil(8);
    if buf.len() < words {
        buf.resize(words, 0);
    }
    // SAFETY: `buf` holds at least `len · size_of::<T>()` initialised bytes, aligned to
    // 8 ≥ align_of::<T>() for f32/f64 (the only callers' types, asserted in `Scratch::get`),
    // every bit pattern of which is a valid f32/f64; the slice borrows `buf` mutably.
    unsafe { std::slice::from_raw_parts_mut(buf.as_mut_ptr().cast::<T>(), len) }
}

thread_local! {
    static SCRATCH: std::cell::RefCell<Scratch> = std::cell::RefCell::new(Scratch::default());
}

/// Runs `f` with this thread's scratch buffers (fresh ones if a caller up the stack of this
/// thread holds them, e.g. when rayon runs a second chunk inside a parallel GEMM's wait).
pub(crate) fn with_scratch<R>(f: impl FnOnce(&mut Scratch) -> R) -> R {
    SCRATCH.with(|cell| match cell.try_borrow_mut() {
        Ok(mut s) => f(&mut s),
        Err(_) => f(&mut Scratch::default()),
    })
}

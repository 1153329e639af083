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

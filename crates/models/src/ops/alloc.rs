//! Keeping freed tensor memory in the process: glibc `malloc` settings for tensor-sized blocks.

/// Makes the C allocator keep freed memory for reuse instead of handing every large block back
/// to the kernel; returns whether the setting took effect (`false` where it is not available).
///
/// A training step allocates and frees the same few dozen activation and gradient buffers of
/// several MiB each, every step. glibc's `malloc` serves blocks of 32 MiB and more (e.g. one
/// 64-channel 32×32 activation of a 128-image batch in `f32`) with a fresh `mmap`, which the
/// kernel zero-fills page by page on first touch and unmaps on `free`, and it trims freed
/// heap memory above 128 KiB back to the kernel: on a 2-core machine this page-fault and
/// zeroing work was a sixth of the ResNet training step. This function sets
/// `mallopt(M_MMAP_MAX, 0)` (serve every block from the heap) and
/// `mallopt(M_TRIM_THRESHOLD, 1 GiB)` (keep up to 1 GiB of freed memory), the settings
/// `GLIBC_TUNABLES=glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=1073741824` gives from
/// the environment, so that a step reuses the previous step's pages.
///
/// **It changes a process-wide setting**, so it is a separate call for the program to make
/// first thing (as `cargo xtask bench` does), never done behind the caller's back by the
/// other functions of this crate. The resident set then stays near its peak between steps
/// instead of shrinking; the peak itself moves little. Results do not change. On other
/// platforms (non-glibc C libraries, macOS, Windows) it does nothing and returns `false`.
///
/// ```
/// let applied = models::ops::retain_freed_memory();
/// assert_eq!(applied, cfg!(all(target_os = "linux", target_env = "gnu")));
/// ```
pub fn retain_freed_memory() -> bool {
    imp::retain()
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
mod imp {
    use std::ffi::c_int;

    // glibc's <malloc.h>.
    const M_TRIM_THRESHOLD: c_int = -1;
    const M_MMAP_MAX: c_int = -4;

    extern "C" {
        fn mallopt(param: c_int, value: c_int) -> c_int;
    }

    pub(super) fn retain() -> bool {
        // SAFETY: `mallopt` only sets allocator parameters (it takes the arena lock itself);
        // both parameters and values are valid for glibc, which returns 1 on success.
        unsafe { mallopt(M_MMAP_MAX, 0) == 1 && mallopt(M_TRIM_THRESHOLD, 1 << 30) == 1 }
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
mod imp {
    pub(super) fn retain() -> bool {
        false
    }
}

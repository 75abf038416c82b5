//! Software prefetch of the next document while the current one is scored.
//!
//! Candidates are scattered over a corpus far larger than the caches, so
//! every document starts with cache misses the hardware prefetcher only
//! catches up with after a few lines. Asking for the next candidate's
//! whole token block before scoring the current one hides that latency.

// This is the one module that needs `unsafe`: the prefetch intrinsic takes
// a raw pointer, and pulp does not wrap it.
#![allow(unsafe_code)]

/// Bytes per cache line on every CPU this runs on well.
pub(crate) const LINE_BYTES: usize = 64;

/// Hints the CPU to load `values` into the cache. A no-op where no
/// prefetch instruction is available.
#[inline]
pub fn prefetch<T>(values: &[T]) {
    #[cfg(target_arch = "x86_64")]
    {
        use core::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
        let per_line = (LINE_BYTES / size_of::<T>().max(1)).max(1);
        for line in values.chunks(per_line) {
            // SAFETY: `_mm_prefetch` is a hint that never faults and never
            // writes; the pointer comes from a live slice, and SSE (which
            // provides the instruction) is part of the x86-64 baseline.
            unsafe { _mm_prefetch::<_MM_HINT_T0>(line.as_ptr().cast::<i8>()) };
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = values;
}

//! Software prefetch of what is scored next while the current work runs.
//!
//! Candidates are scattered over a corpus far larger than the caches, so
//! every document starts with cache misses the hardware prefetcher only
//! catches up with after a few lines. Asking for the data a little ahead
//! of its use, a line at a time between the FMAs, hides that latency.

// This is the one module that needs `unsafe`: the prefetch intrinsic takes
// a raw pointer, and pulp does not wrap it.
#![allow(unsafe_code)]

/// Bytes per cache line on every CPU this runs on well.
pub(crate) const LINE_BYTES: usize = 64;

/// Hints the CPU to load `values` into the L1 cache. A no-op where no
/// prefetch instruction is available.
#[inline]
pub fn prefetch<T>(values: &[T]) {
    #[cfg(target_arch = "x86_64")]
    prefetch_lines::<{ core::arch::x86_64::_MM_HINT_T0 }, T>(values);
    #[cfg(not(target_arch = "x86_64"))]
    let _ = values;
}

/// Hints the CPU to load `values` into the L2 cache, not L1: for data
/// needed after the current work, which in L1 would only evict what that
/// work is using. A no-op where no prefetch instruction is available.
#[inline]
pub fn prefetch_to_l2<T>(values: &[T]) {
    #[cfg(target_arch = "x86_64")]
    prefetch_lines::<{ core::arch::x86_64::_MM_HINT_T1 }, T>(values);
    #[cfg(not(target_arch = "x86_64"))]
    let _ = values;
}

/// One prefetch instruction with hint `HINT` per cache line of `values`.
#[cfg(target_arch = "x86_64")]
#[inline]
fn prefetch_lines<const HINT: i32, T>(values: &[T]) {
    let per_line = (LINE_BYTES / size_of::<T>().max(1)).max(1);
    for line in values.chunks(per_line) {
        prefetch_line::<HINT, T>(&line[0]);
    }
}

/// One prefetch instruction with hint `HINT` for the line holding `value`.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn prefetch_line<const HINT: i32, T>(value: &T) {
    // SAFETY: `_mm_prefetch` is a hint that never faults and never
    // writes; the pointer comes from a live reference, and SSE (which
    // provides the instruction) is part of the x86-64 baseline.
    unsafe { core::arch::x86_64::_mm_prefetch::<HINT>(core::ptr::from_ref(value).cast::<i8>()) };
}

/// A cursor over data that is prefetched a few lines at a time while other
/// work runs: what the kernels stream in over a document's steps.
///
/// Per line it costs a compare, a prefetch and an add. A `Chunks` iterator
/// costs twice that (it also clamps the last chunk), and with two streams
/// per step of 24 FMAs that bookkeeping took front-end slots the FMAs
/// needed.
pub(crate) struct Stream<'a, T> {
    values: &'a [T],
    /// Index of the next value to prefetch.
    position: usize,
}

impl<'a, T> Stream<'a, T> {
    /// A stream over `values`, from the start.
    #[inline(always)]
    pub(crate) fn new(values: &'a [T]) -> Self {
        Stream {
            values,
            position: 0,
        }
    }

    /// Prefetches the next `lines` lines into L1 (those that exist); a
    /// constant `lines` unrolls.
    #[inline(always)]
    pub(crate) fn fetch_l1(&mut self, lines: usize) {
        #[cfg(target_arch = "x86_64")]
        self.lines::<{ core::arch::x86_64::_MM_HINT_T0 }>(lines);
        #[cfg(not(target_arch = "x86_64"))]
        let _ = (self.values, self.position, lines);
    }

    /// Prefetches the next `lines` lines into L2 (those that exist); a
    /// constant `lines` unrolls.
    #[inline(always)]
    pub(crate) fn fetch_l2(&mut self, lines: usize) {
        #[cfg(target_arch = "x86_64")]
        self.lines::<{ core::arch::x86_64::_MM_HINT_T1 }>(lines);
        #[cfg(not(target_arch = "x86_64"))]
        let _ = (self.values, self.position, lines);
    }

    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    fn lines<const HINT: i32>(&mut self, lines: usize) {
        let per_line = LINE_BYTES / size_of::<T>().max(1);
        for _ in 0..lines {
            if let Some(value) = self.values.get(self.position) {
                prefetch_line::<HINT, T>(value);
            }
            self.position += per_line;
        }
    }
}

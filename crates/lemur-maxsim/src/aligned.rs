//! A growable buffer of plain values that starts on a cache line.
//!
//! An AMX tile row is 64 bytes. When a row straddles two cache lines,
//! every `tileloadd` touches twice the lines, and the one-query bf16
//! product `f W^T` ran at 1.4x the time of the `vdpbf16ps` kernel over the
//! same `W` (a C probe of the same loop: 1.65 ms aligned, 2.21 ms with `W`
//! 16 bytes off). A `Vec<u32>` is only as aligned as the allocator makes
//! it (16 bytes for large blocks), so the bf16 storage the tile kernels
//! read lives here, in whole 64-byte lines. The rows of such storage stay
//! aligned when their length is a multiple of 64 bytes, which is exactly
//! when the AMX kernels take them.

use core::fmt;
use core::marker::PhantomData;
use core::ops::{Deref, DerefMut};

use bytemuck::{Pod, Zeroable};

use crate::prefetch::LINE_BYTES;

/// One cache line.
#[derive(Clone, Copy, Pod, Zeroable)]
#[repr(C, align(64))]
struct Line([u8; LINE_BYTES]);

/// `len` values of `T` (4 bytes or smaller) in 64-byte-aligned lines; the
/// end of the last line is unused.
#[derive(Clone)]
pub(crate) struct Aligned<T> {
    lines: Vec<Line>,
    len: usize,
    values: PhantomData<T>,
}

/// The bf16 pairs of the AMX kernels' operands.
pub(crate) type AlignedU32 = Aligned<u32>;

impl<T: Pod> Aligned<T> {
    /// `len` zeros.
    pub(crate) fn zeroed(len: usize) -> Self {
        let mut buffer = Aligned {
            lines: Vec::new(),
            len: 0,
            values: PhantomData,
        };
        buffer.reset_zeroed(len);
        buffer
    }

    /// Replaces the contents by `len` zeros, keeping the allocation.
    pub(crate) fn reset_zeroed(&mut self, len: usize) {
        self.lines.clear();
        self.lines
            .resize((len * size_of::<T>()).div_ceil(LINE_BYTES), Line::zeroed());
        self.len = len;
    }

    /// Appends `values` after the current contents.
    pub(crate) fn extend_from_slice(&mut self, values: &[T]) {
        let old = self.len;
        self.len += values.len();
        self.lines.resize(
            (self.len * size_of::<T>()).div_ceil(LINE_BYTES),
            Line::zeroed(),
        );
        self[old..].copy_from_slice(values);
    }
}

impl<T: Pod> Default for Aligned<T> {
    fn default() -> Self {
        Aligned::zeroed(0)
    }
}

impl<T: Pod> Deref for Aligned<T> {
    type Target = [T];

    fn deref(&self) -> &[T] {
        &bytemuck::cast_slice(&self.lines)[..self.len]
    }
}

impl<T: Pod> DerefMut for Aligned<T> {
    fn deref_mut(&mut self) -> &mut [T] {
        &mut bytemuck::cast_slice_mut(&mut self.lines)[..self.len]
    }
}

impl<T: Pod + PartialEq> PartialEq for Aligned<T> {
    fn eq(&self, other: &Self) -> bool {
        **self == **other
    }
}

impl<T: Pod + fmt::Debug> fmt::Debug for Aligned<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&**self, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starts_on_a_cache_line_and_keeps_its_values() {
        let mut buffer = AlignedU32::zeroed(5);
        buffer[4] = 7;
        buffer.extend_from_slice(&(0..40).collect::<Vec<u32>>());
        assert_eq!(buffer.as_ptr() as usize % 64, 0);
        assert_eq!(buffer.len(), 45);
        assert_eq!(&buffer[..6], &[0, 0, 0, 0, 7, 0]);
        assert_eq!(buffer[44], 39);
        let mut other = AlignedU32::zeroed(45);
        other.copy_from_slice(&buffer);
        assert_eq!(other, buffer);
        other[0] = 1;
        assert_ne!(other, buffer);
    }
}

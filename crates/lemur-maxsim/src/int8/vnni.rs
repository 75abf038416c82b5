//! The AVX512-VNNI kernel for integer dot products: `vpdpbusd` multiplies
//! the 64 unsigned bytes of a `W` vector by the 64 signed bytes of a query
//! vector and adds each group of four products into an `i32` lane. Tiles
//! of up to 4 query rows x 4 `W` rows (16 accumulator chains); the first
//! pass over a group of `W` rows prefetches the next group line by line.

// This module needs `unsafe`: pulp does not wrap the VNNI instructions, so
// the kernel is a `#[target_feature]` function called after run-time
// detection, and its loads use raw intrinsics.
#![allow(unsafe_code)]

use core::arch::x86_64::*;

use super::BLOCK_WORDS;
use super::integer::Operands;

/// Whether the CPU has AVX-512F and AVX512-VNNI (cached by std).
pub(super) fn available() -> bool {
    std::arch::is_x86_feature_detected!("avx512f")
        && std::arch::is_x86_feature_detected!("avx512vnni")
}

/// Writes every score of the block to `out` (`[a rows, b rows]`).
pub(super) fn dot_products(ops: Operands<'_>, out: &mut [f32]) {
    assert!(available());
    let per_row = ops.per_row;
    assert!(per_row > 0 && per_row.is_multiple_of(BLOCK_WORDS));
    assert!(ops.a.len().is_multiple_of(per_row) && ops.b.len().is_multiple_of(per_row));
    let (n_a, n_b) = (ops.a.len() / per_row, ops.b.len() / per_row);
    assert!(ops.a_sums.len() == n_a && ops.a_scales.len() == n_a && ops.b_scales.len() == n_b);
    assert_eq!(out.len(), n_a * n_b);
    // SAFETY: the CPU features the function enables were detected just
    // above, and the slice shapes it relies on were asserted.
    unsafe { dot_products_impl(ops, out) }
}

#[target_feature(enable = "avx512f,avx512vnni")]
fn dot_products_impl(ops: Operands<'_>, out: &mut [f32]) {
    let per_row = ops.per_row;
    let (n_a, n_b) = (ops.a.len() / per_row, ops.b.len() / per_row);
    let mut j = 0;
    while j < n_b {
        let group_b = if j + 4 <= n_b { 4 } else { 1 };
        let rows_b = &ops.b[j * per_row..(j + group_b) * per_row];
        let mut i = 0;
        while i < n_a {
            let group_a = if i + 4 <= n_a { 4 } else { 1 };
            let rows_a = &ops.a[i * per_row..(i + group_a) * per_row];
            let next = if i == 0 {
                let end = ops.b.len();
                &ops.b[((j + group_b) * per_row).min(end)..((j + 2 * group_b) * per_row).min(end)]
            } else {
                &[]
            };
            let mut sums = [0i32; 16];
            match (group_a, group_b) {
                (4, 4) => tile::<4, 4>(rows_a, rows_b, next, per_row, &mut sums),
                (4, _) => tile::<4, 1>(rows_a, rows_b, next, per_row, &mut sums),
                (_, 4) => tile::<1, 4>(rows_a, rows_b, next, per_row, &mut sums),
                _ => tile::<1, 1>(rows_a, rows_b, next, per_row, &mut sums),
            }
            for x in 0..group_a {
                for r in 0..group_b {
                    out[(i + x) * n_b + j + r] = ops.finish(i + x, j + r, sums[x * group_b + r]);
                }
            }
            i += group_a;
        }
        j += group_b;
    }
}

/// The `A x B` raw sums of `A` query rows and `B` rows of `W`, written to
/// `sums[x * B + r]`; `next` (possibly empty) is prefetched meanwhile.
#[inline]
#[target_feature(enable = "avx512f,avx512vnni")]
fn tile<const A: usize, const B: usize>(
    a: &[u32],
    b: &[u32],
    next: &[u32],
    per_row: usize,
    sums: &mut [i32; 16],
) {
    let mut acc = [[_mm512_setzero_si512(); B]; A];
    let rows_a: [&[u32]; A] = core::array::from_fn(|x| &a[x * per_row..(x + 1) * per_row]);
    let rows_b: [&[u32]; B] = core::array::from_fn(|r| &b[r * per_row..(r + 1) * per_row]);
    let n_next = next.len() / per_row;
    let mut p = 0;
    while p < per_row {
        for r in 0..n_next {
            crate::prefetch(&next[r * per_row + p..][..1]);
        }
        let va: [__m512i; A] = core::array::from_fn(|x| load(&rows_a[x][p..p + BLOCK_WORDS]));
        for r in 0..B {
            let vb = load(&rows_b[r][p..p + BLOCK_WORDS]);
            for x in 0..A {
                acc[x][r] = _mm512_dpbusd_epi32(acc[x][r], vb, va[x]);
            }
        }
        p += BLOCK_WORDS;
    }
    for (x, row) in acc.iter().enumerate() {
        for (r, &sum) in row.iter().enumerate() {
            sums[x * B + r] = _mm512_reduce_add_epi32(sum);
        }
    }
}

/// 16 words as a vector.
#[inline]
#[target_feature(enable = "avx512f")]
fn load(words: &[u32]) -> __m512i {
    assert_eq!(words.len(), BLOCK_WORDS);
    // SAFETY: `words` is 16 u32 = 64 readable bytes (unaligned load).
    unsafe { _mm512_loadu_si512(words.as_ptr().cast()) }
}

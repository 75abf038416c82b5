//! The AVX512-BF16 kernels. `vdpbf16ps` multiplies 16 bf16 pairs by 16
//! others and adds both products of each pair into one f32 lane.
//!
//! MaxSim: 16 query tokens times one broadcast document pair per step. Two
//! query blocks times four document tokens are eight independent
//! accumulator chains, enough to keep the unit busy rather than waiting on
//! latency.
//!
//! Dense dot products (`f W^T`): 32 values of a feature row times 32 of a
//! `W` row per step, in tiles of up to 4 x 4 rows (16 chains); each lane
//! holds a partial sum that is reduced once per row pair.

// This module needs `unsafe`: pulp does not wrap the BF16 instructions, so
// the kernel is a `#[target_feature]` function called after run-time
// detection, and its loads and vector casts use raw intrinsics.
#![allow(unsafe_code)]

use core::arch::x86_64::*;

use super::BLOCK;

/// Whether the CPU has AVX-512F and AVX512-BF16 (cached by std).
pub(super) fn available() -> bool {
    std::arch::is_x86_feature_detected!("avx512f")
        && std::arch::is_x86_feature_detected!("avx512bf16")
}

/// MaxSim of a packed query (`[blocks][pairs][16]` bf16 pairs) against a
/// document of `doc.len() / pairs` tokens. The caller checked
/// [`available`], that `doc` is whole non-empty tokens and that `packed`
/// holds every block of `n_tokens`.
pub(super) fn maxsim(packed: &[u32], n_tokens: usize, pairs: usize, doc: &[u32]) -> f32 {
    assert!(available());
    assert_eq!(packed.len(), n_tokens.div_ceil(BLOCK) * pairs * BLOCK);
    assert!(!doc.is_empty() && doc.len().is_multiple_of(pairs));
    // SAFETY: the CPU features the function enables were detected just
    // above, and the slice shapes it relies on were asserted.
    unsafe { maxsim_impl(packed, n_tokens, pairs, doc) }
}

#[target_feature(enable = "avx512f,avx512bf16")]
fn maxsim_impl(packed: &[u32], n_tokens: usize, pairs: usize, doc: &[u32]) -> f32 {
    let blocks = n_tokens.div_ceil(BLOCK);
    let block_len = pairs * BLOCK;
    let mut total = 0.0f32;
    let mut block = 0;
    while block < blocks {
        let two = block + 1 < blocks;
        let first = &packed[block * block_len..(block + 1) * block_len];
        let second = if two {
            &packed[(block + 1) * block_len..(block + 2) * block_len]
        } else {
            first
        };
        let (max_a, max_b) = block_maxima(first, second, pairs, doc);
        total += _mm512_mask_reduce_add_ps(lane_mask(n_tokens, block), max_a);
        if two {
            total += _mm512_mask_reduce_add_ps(lane_mask(n_tokens, block + 1), max_b);
        }
        block += 2;
    }
    total
}

/// The valid lanes of query block `block`.
#[target_feature(enable = "avx512f")]
fn lane_mask(n_tokens: usize, block: usize) -> __mmask16 {
    let valid = (n_tokens - block * BLOCK).min(BLOCK);
    ((1u32 << valid) - 1) as __mmask16
}

/// 16 bf16 pairs of one query block at pair `p`, as a BF16 vector.
#[target_feature(enable = "avx512f,avx512bf16")]
fn query_vector(block: &[u32], p: usize) -> __m512bh {
    let lanes = &block[p * BLOCK..(p + 1) * BLOCK];
    // SAFETY: `lanes` is exactly 16 u32 = 64 readable bytes (unaligned
    // load), and __m512i and __m512bh are both 512 plain bits.
    unsafe { std::mem::transmute::<__m512i, __m512bh>(_mm512_loadu_si512(lanes.as_ptr().cast())) }
}

/// One document pair broadcast to every lane.
#[target_feature(enable = "avx512f,avx512bf16")]
fn broadcast(pair: u32) -> __m512bh {
    // SAFETY: both types are 512 plain bits.
    unsafe { std::mem::transmute::<__m512i, __m512bh>(_mm512_set1_epi32(pair as i32)) }
}

/// Per-lane maxima over all document tokens of two query blocks' dot
/// products (`second` may repeat `first` when there is one block left; its
/// result is then ignored).
#[target_feature(enable = "avx512f,avx512bf16")]
fn block_maxima(first: &[u32], second: &[u32], pairs: usize, doc: &[u32]) -> (__m512, __m512) {
    let n_doc = doc.len() / pairs;
    let neg = _mm512_set1_ps(f32::NEG_INFINITY);
    let (mut best_a, mut best_b) = ([neg; 4], [neg; 4]);
    let mut t = 0;
    while t + 4 <= n_doc {
        let rows = &doc[t * pairs..(t + 4) * pairs];
        let mut acc_a = [_mm512_setzero_ps(); 4];
        let mut acc_b = [_mm512_setzero_ps(); 4];
        for p in 0..pairs {
            let qa = query_vector(first, p);
            let qb = query_vector(second, p);
            for j in 0..4 {
                let d = broadcast(rows[j * pairs + p]);
                acc_a[j] = _mm512_dpbf16_ps(acc_a[j], qa, d);
                acc_b[j] = _mm512_dpbf16_ps(acc_b[j], qb, d);
            }
        }
        for j in 0..4 {
            best_a[j] = _mm512_max_ps(best_a[j], acc_a[j]);
            best_b[j] = _mm512_max_ps(best_b[j], acc_b[j]);
        }
        t += 4;
    }
    while t < n_doc {
        let row = &doc[t * pairs..(t + 1) * pairs];
        let (mut acc_a, mut acc_b) = (_mm512_setzero_ps(), _mm512_setzero_ps());
        for (p, &pair) in row.iter().enumerate() {
            let d = broadcast(pair);
            acc_a = _mm512_dpbf16_ps(acc_a, query_vector(first, p), d);
            acc_b = _mm512_dpbf16_ps(acc_b, query_vector(second, p), d);
        }
        best_a[0] = _mm512_max_ps(best_a[0], acc_a);
        best_b[0] = _mm512_max_ps(best_b[0], acc_b);
        t += 1;
    }
    (max4(best_a), max4(best_b))
}

#[target_feature(enable = "avx512f")]
fn max4(v: [__m512; 4]) -> __m512 {
    _mm512_max_ps(_mm512_max_ps(v[0], v[1]), _mm512_max_ps(v[2], v[3]))
}

/// `out[i * n_b + j] = <a_i, b_j>` for the `n_a` rows of `a` and the `n_b`
/// rows of `b`, each `per_row` bf16 pairs. The caller checked
/// [`available`]; the shapes are asserted here.
pub(super) fn dot_products(a: &[u32], b: &[u32], per_row: usize, out: &mut [f32]) {
    assert!(available());
    assert!(per_row > 0 && a.len().is_multiple_of(per_row) && b.len().is_multiple_of(per_row));
    assert_eq!(out.len(), (a.len() / per_row) * (b.len() / per_row));
    // SAFETY: the CPU features the function enables were detected just
    // above, and the slice shapes it relies on were asserted.
    unsafe { dot_products_impl(a, b, per_row, out) }
}

#[target_feature(enable = "avx512f,avx512bf16")]
fn dot_products_impl(a: &[u32], b: &[u32], per_row: usize, out: &mut [f32]) {
    let (n_a, n_b) = (a.len() / per_row, b.len() / per_row);
    // Each group of `b` rows (a stretch of W) is read from memory once
    // while every `a` row (the queries, cache-resident) passes over it.
    let mut j = 0;
    while j < n_b {
        let group_b = if j + 4 <= n_b { 4 } else { 1 };
        let rows_b = &b[j * per_row..(j + group_b) * per_row];
        let mut i = 0;
        while i < n_a {
            let group_a = if i + 4 <= n_a { 4 } else { 1 };
            let rows_a = &a[i * per_row..(i + group_a) * per_row];
            let out = &mut out[i * n_b + j..];
            // The first pass over this group of `b` rows fetches the next
            // group line by line: a stream from L3 or memory is bound by
            // how many lines are in flight, not by the arithmetic.
            let next = if i == 0 {
                &b[((j + group_b) * per_row).min(b.len())
                    ..((j + 2 * group_b) * per_row).min(b.len())]
            } else {
                &[]
            };
            let tile = Tile {
                a: rows_a,
                b: rows_b,
                next,
                per_row,
            };
            match (group_a, group_b) {
                (4, 4) => dot_tile::<4, 4>(tile, out, n_b),
                (4, _) => dot_tile::<4, 1>(tile, out, n_b),
                (_, 4) => dot_tile::<1, 4>(tile, out, n_b),
                _ => dot_tile::<1, 1>(tile, out, n_b),
            }
            i += group_a;
        }
        j += group_b;
    }
}

/// One tile's rows: `A` rows of `a`, `B` rows of `b`, and the rows to
/// prefetch while they are scored (possibly none).
#[derive(Clone, Copy)]
struct Tile<'a> {
    a: &'a [u32],
    b: &'a [u32],
    next: &'a [u32],
    per_row: usize,
}

/// The `A x B` dot products of a tile, written to `out[x * stride + r]`.
#[inline]
#[target_feature(enable = "avx512f,avx512bf16")]
fn dot_tile<const A: usize, const B: usize>(tile: Tile<'_>, out: &mut [f32], stride: usize) {
    let per_row = tile.per_row;
    let mut acc = [[_mm512_setzero_ps(); B]; A];
    let rows_a: [&[u32]; A] = core::array::from_fn(|x| &tile.a[x * per_row..(x + 1) * per_row]);
    let rows_b: [&[u32]; B] = core::array::from_fn(|r| &tile.b[r * per_row..(r + 1) * per_row]);
    let n_next = tile.next.len() / per_row;
    let full = per_row / BLOCK * BLOCK;
    let mut p = 0;
    while p < full {
        for r in 0..n_next {
            crate::prefetch(&tile.next[r * per_row + p..][..1]);
        }
        let va: [__m512bh; A] = core::array::from_fn(|x| load_full(&rows_a[x][p..p + BLOCK]));
        for r in 0..B {
            let vb = load_full(&rows_b[r][p..p + BLOCK]);
            for x in 0..A {
                acc[x][r] = _mm512_dpbf16_ps(acc[x][r], va[x], vb);
            }
        }
        p += BLOCK;
    }
    if full < per_row {
        let va: [__m512bh; A] = core::array::from_fn(|x| load(&rows_a[x][full..]));
        for r in 0..B {
            let vb = load(&rows_b[r][full..]);
            for x in 0..A {
                acc[x][r] = _mm512_dpbf16_ps(acc[x][r], va[x], vb);
            }
        }
    }
    for (x, row) in acc.iter().enumerate() {
        for (r, &sum) in row.iter().enumerate() {
            out[x * stride + r] = _mm512_reduce_add_ps(sum);
        }
    }
}

/// Exactly 16 bf16 pairs as a BF16 vector.
#[inline]
#[target_feature(enable = "avx512f,avx512bf16")]
fn load_full(pairs: &[u32]) -> __m512bh {
    assert_eq!(pairs.len(), BLOCK);
    // SAFETY: `pairs` is 16 u32 = 64 readable bytes (unaligned load), and
    // __m512i and __m512bh are both 512 plain bits.
    unsafe { std::mem::transmute::<__m512i, __m512bh>(_mm512_loadu_si512(pairs.as_ptr().cast())) }
}

/// Up to 16 bf16 pairs as a BF16 vector, the missing lanes zero.
#[inline]
#[target_feature(enable = "avx512f,avx512bf16")]
fn load(pairs: &[u32]) -> __m512bh {
    debug_assert!(pairs.len() <= BLOCK);
    let mask = ((1u32 << pairs.len()) - 1) as __mmask16;
    // SAFETY: the mask enables exactly the `pairs.len()` lanes that lie in
    // the slice, and masked-off lanes are neither read nor faulted on;
    // __m512i and __m512bh are both 512 plain bits.
    unsafe {
        std::mem::transmute::<__m512i, __m512bh>(_mm512_maskz_loadu_epi32(
            mask,
            pairs.as_ptr().cast(),
        ))
    }
}

//! The AVX512-BF16 kernels. `vdpbf16ps` multiplies 16 bf16 pairs by 16
//! others and adds both products of each pair into one f32 lane.
//!
//! MaxSim: 16 query tokens (one block) times one broadcast document pair
//! per step. `vdpbf16ps` has a latency of about 6 cycles and, on CPUs
//! with two 512-bit units, two issues per cycle, so at least 12 chains
//! must be in flight: two query blocks times 12 document tokens (24
//! chains), or one block times 16. The structure follows the f32 kernel:
//! blocks of `R` tokens, then tail blocks of `T` (the last overlapping),
//! common widths as constants, and one line of the next block (into L1)
//! and of whatever is scored next (into L2) prefetched per step.
//!
//! Dense dot products (`f W^T`): 32 values of a feature row times 32 of a
//! `W` row per step, in tiles of up to 4 x 4 rows (16 chains); each lane
//! holds a partial sum that is reduced once per row pair.

// This module needs `unsafe`: pulp does not wrap the BF16 instructions, so
// the kernel is a `#[target_feature]` function called after run-time
// detection, and its loads and vector casts use raw intrinsics.
#![allow(unsafe_code)]

use core::arch::x86_64::*;
use core::slice::Chunks;

use crate::prefetch::LINE_BYTES;

use super::BLOCK;

/// Whether the CPU has AVX-512F and AVX512-BF16 (cached by std).
pub(super) fn available() -> bool {
    std::arch::is_x86_feature_detected!("avx512f")
        && std::arch::is_x86_feature_detected!("avx512bf16")
}

/// MaxSim of a packed query (`[blocks][pairs][16]` bf16 pairs) against a
/// document of `doc.len() / pairs` tokens, streaming `next` (what is scored
/// after it; may be empty) into L2 meanwhile. The caller checked
/// [`available`], that `doc` is whole non-empty tokens and that `packed`
/// holds every block of `n_tokens`.
pub(super) fn maxsim(
    packed: &[u32],
    n_tokens: usize,
    pairs: usize,
    doc: &[u32],
    next: &[u32],
) -> f32 {
    assert!(available());
    assert!(n_tokens > 0 && pairs > 0);
    assert_eq!(packed.len(), n_tokens.div_ceil(BLOCK) * pairs * BLOCK);
    assert!(!doc.is_empty() && doc.len().is_multiple_of(pairs));
    // SAFETY: the CPU features the function enables were detected just
    // above, and the slice shapes it relies on were asserted.
    unsafe { maxsim_impl(packed, n_tokens, pairs, doc, next) }
}

#[target_feature(enable = "avx512f,avx512bf16")]
fn maxsim_impl(packed: &[u32], n_tokens: usize, pairs: usize, doc: &[u32], next: &[u32]) -> f32 {
    let blocks = n_tokens.div_ceil(BLOCK);
    let block_len = pairs * BLOCK;
    // Only the first pass over the document reads it from memory, so only
    // that pass streams the next one in.
    let mut next_lines = next.chunks(LINE_PAIRS);
    let mut total = 0.0f32;
    let mut block = 0;
    while block < blocks {
        let group = if blocks - block >= 2 { 2 } else { 1 };
        let query = &packed[block * block_len..(block + group) * block_len];
        let best = if group == 2 {
            by_width::<2, 12, 6>(query, pairs, doc, &mut next_lines)
        } else {
            let [best] = by_width::<1, 16, 8>(query, pairs, doc, &mut next_lines);
            [best, best]
        };
        for (g, &lanes) in best.iter().take(group).enumerate() {
            total += _mm512_mask_reduce_add_ps(lane_mask(n_tokens, block + g), lanes);
        }
        next_lines = next[..0].chunks(LINE_PAIRS);
        block += group;
    }
    total
}

/// bf16 pairs per cache line.
const LINE_PAIRS: usize = LINE_BYTES / size_of::<u32>();

/// The valid lanes of query block `block`.
#[target_feature(enable = "avx512f")]
fn lane_mask(n_tokens: usize, block: usize) -> __mmask16 {
    let valid = (n_tokens - block * BLOCK).min(BLOCK);
    ((1u32 << valid) - 1) as __mmask16
}

/// Per-lane maxima of `G` query blocks over every document token, with the
/// common widths' pair counts as constants (row offsets become
/// immediates) and any other width at run time.
#[target_feature(enable = "avx512f,avx512bf16")]
fn by_width<const G: usize, const R: usize, const T: usize>(
    query: &[u32],
    pairs: usize,
    doc: &[u32],
    next: &mut Chunks<'_, u32>,
) -> [__m512; G] {
    match pairs {
        24 => by_length::<G, R, T, 24>(query, pairs, doc, next),
        32 => by_length::<G, R, T, 32>(query, pairs, doc, next),
        48 => by_length::<G, R, T, 48>(query, pairs, doc, next),
        64 => by_length::<G, R, T, 64>(query, pairs, doc, next),
        128 => by_length::<G, R, T, 128>(query, pairs, doc, next),
        _ => by_length::<G, R, T, 0>(query, pairs, doc, next),
    }
}

/// Per-lane maxima in blocks of `R` tokens when the document has that
/// many, else in the largest smaller blocks it fills.
#[inline]
#[target_feature(enable = "avx512f,avx512bf16")]
fn by_length<const G: usize, const R: usize, const T: usize, const P: usize>(
    query: &[u32],
    pairs: usize,
    doc: &[u32],
    next: &mut Chunks<'_, u32>,
) -> [__m512; G] {
    let pairs = if P == 0 { pairs } else { P };
    let scan = Scan { query, pairs, doc };
    let mut best = [_mm512_set1_ps(f32::NEG_INFINITY); G];
    let n_tokens = doc.len() / pairs;
    if n_tokens >= R {
        scan_tokens::<G, R, T, P>(scan, next, &mut best);
    } else if n_tokens >= T {
        scan_tokens::<G, T, T, P>(scan, next, &mut best);
    } else if n_tokens >= 2 {
        scan_tokens::<G, 2, 2, P>(scan, next, &mut best);
    } else {
        token_block::<G, 1, P>(scan, doc, &[], next, &mut best);
    }
    best
}

/// One query group (`G` blocks of `[pairs][16]`) against one document.
#[derive(Clone, Copy)]
struct Scan<'a> {
    query: &'a [u32],
    pairs: usize,
    doc: &'a [u32],
}

/// All of a document's tokens (at least `R`) in blocks of `R`, then the
/// rest in blocks of `T <= R`, the last one overlapping tokens already seen
/// (harmless: the maximum is idempotent). While a block is scored, the
/// block after it is prefetched into L1.
#[inline]
#[target_feature(enable = "avx512f,avx512bf16")]
fn scan_tokens<const G: usize, const R: usize, const T: usize, const P: usize>(
    scan: Scan<'_>,
    next: &mut Chunks<'_, u32>,
    best: &mut [__m512; G],
) {
    let pairs = if P == 0 { scan.pairs } else { P };
    let doc = scan.doc;
    let n_tokens = doc.len() / pairs;
    let block_len = R * pairs;
    let full_blocks = n_tokens / R;
    for b in 0..full_blocks {
        let after = ((b + 1) * block_len).min(doc.len());
        let ahead = &doc[after..doc.len().min(after + block_len)];
        token_block::<G, R, P>(scan, &doc[b * block_len..], ahead, next, best);
    }
    let tail_start = full_blocks * R;
    for t in 0..(n_tokens - tail_start).div_ceil(T) {
        let start = (tail_start + t * T).min(n_tokens - T);
        token_block::<G, T, P>(scan, &doc[start * pairs..], &[], next, best);
    }
}

/// `R` document tokens (the start of `tokens`) against `G` query blocks:
/// `G * R` independent accumulators, each pair of each token broadcast
/// once and fed to `G` dot products.
#[inline]
#[target_feature(enable = "avx512f,avx512bf16")]
fn token_block<const G: usize, const R: usize, const P: usize>(
    scan: Scan<'_>,
    tokens: &[u32],
    ahead: &[u32],
    next: &mut Chunks<'_, u32>,
    best: &mut [__m512; G],
) {
    let pairs = if P == 0 { scan.pairs } else { P };
    let tokens = &tokens[..R * pairs];
    let block_len = pairs * BLOCK;
    let blocks: [&[u32]; G] = core::array::from_fn(|g| &scan.query[g * block_len..][..block_len]);
    let mut ahead_lines = ahead.chunks(LINE_PAIRS);
    let mut acc = [[_mm512_setzero_ps(); G]; R];
    for p in 0..pairs {
        if let Some(line) = ahead_lines.next() {
            crate::prefetch(&line[..1]);
        }
        if let Some(line) = next.next() {
            crate::prefetch_to_l2(&line[..1]);
        }
        let x: [__m512bh; G] =
            core::array::from_fn(|g| load_full(&blocks[g][p * BLOCK..][..BLOCK]));
        for r in 0..R {
            let d = broadcast(tokens[r * pairs + p]);
            for g in 0..G {
                acc[r][g] = _mm512_dpbf16_ps(acc[r][g], x[g], d);
            }
        }
    }
    for row in &acc {
        for g in 0..G {
            best[g] = _mm512_max_ps(best[g], row[g]);
        }
    }
}

/// One document pair broadcast to every lane.
#[inline]
#[target_feature(enable = "avx512f,avx512bf16")]
fn broadcast(pair: u32) -> __m512bh {
    // SAFETY: both types are 512 plain bits.
    unsafe { std::mem::transmute::<__m512i, __m512bh>(_mm512_set1_epi32(pair as i32)) }
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

//! Short queries at full vector width.
//!
//! The main kernel puts one query token in each lane, so a query of 8
//! tokens fills half of AVX-512's 16 lanes and runs at half speed. For
//! queries of at most half a vector of tokens (and an even width), this
//! kernel gives each token two lanes instead, one for the even and one for
//! the odd values of `k`:
//!
//! ```text
//! paired row k: [x_0[2k], x_0[2k+1], x_1[2k], x_1[2k+1], ...]
//! document:     broadcast (c[2k], c[2k+1]) as one 64-bit value
//! acc += paired row k * broadcast       // d / 2 steps, every lane useful
//! dot_i = acc[2i] + acc[2i + 1]         // one swap and one add per token
//! ```
//!
//! The 64-bit broadcast is a single load, like the main kernel's 32-bit
//! one, so a step costs the same and does twice the useful work. Each lane
//! still sums its products in order of `k`; only the final even + odd
//! addition differs from the other levels' order.

use core::slice::Chunks;

use pulp::bytemuck::{cast, cast_slice};
use pulp::{Simd, c32};

use crate::aligned::Aligned;
use crate::kernel::{PAD_LANES, PackedQuery};
use crate::prefetch::{LINE_BYTES, prefetch, prefetch_to_l2};

/// Cache lines prefetched per step, of the next block and of what is
/// scored next. A step covers two values of each of `R` tokens, so a block
/// of `R` tokens spans `R / 8` lines per step: two for the usual 16.
const STEP_LINES: usize = 2;

/// The longest query the paired layout holds: two lanes per token in the
/// widest vector.
pub(crate) const PAIRED_TOKENS: usize = PAD_LANES / 2;

/// Writes the paired layout of `query` (`[n_tokens, dim]`, at most
/// [`PAIRED_TOKENS`] tokens, `dim` even) into `out`: `[dim / 2][PAD_LANES]`,
/// token `i`'s values `2k` and `2k + 1` in lanes `2i` and `2i + 1` of row
/// `k`, missing tokens zero.
pub(crate) fn pack(query: &[f32], dim: usize, out: &mut Aligned<f32>) {
    debug_assert!(dim.is_multiple_of(2) && query.len() <= PAIRED_TOKENS * dim);
    out.reset_zeroed(dim / 2 * PAD_LANES);
    for (i, token) in query.chunks_exact(dim).enumerate() {
        for (k, values) in token.chunks_exact(2).enumerate() {
            out[k * PAD_LANES + 2 * i..][..2].copy_from_slice(values);
        }
    }
}

/// Whether level `S` runs the paired kernel for `query`: it was packed
/// paired, its tokens fit half a vector, and a broadcast pair of f32 is
/// one vector of f32 lanes (not so for the scalar level).
#[inline(always)]
pub(crate) fn applies<S: Simd>(query: &PackedQuery) -> bool {
    !query.paired().is_empty()
        && 2 * query.n_tokens() <= S::F32_LANES
        && size_of::<S::c32s>() == size_of::<S::f32s>()
}

/// MaxSim of a paired query against `doc` (whole tokens of the query's
/// width), streaming `next` into L2 meanwhile; writes each query token's
/// maximum to `maxima` when given. The caller checked [`applies`].
#[inline(always)]
pub(crate) fn maxsim<S: Simd, N>(
    simd: S,
    query: &PackedQuery,
    doc: &[f32],
    next: &[N],
    maxima: Option<&mut [f32]>,
) -> f32 {
    let half = query.dim() / 2;
    let scan = Scan::<S> {
        rows: S::as_simd_f32s(query.paired()).0,
        stride: PAD_LANES / S::F32_LANES,
        half,
    };
    let doc: &[c32] = cast_slice(doc);
    let mut next = next.chunks(STEP_LINES * LINE_BYTES / size_of::<N>().max(1));
    let mut best = simd.splat_f32s(f32::NEG_INFINITY);
    // Blocks of 16 tokens where 32 registers hold their accumulators, of
    // 12 where there are 16; tails of 8, enough chains for two FMA ports.
    if S::REGISTER_COUNT >= 32 {
        by_width::<S, N, 16, 8>(simd, &scan, doc, &mut next, &mut best);
    } else {
        by_width::<S, N, 12, 8>(simd, &scan, doc, &mut next, &mut best);
    }

    // Lane 2i holds token i's maximum; add them in token order.
    let mut lanes = [0.0f32; PAD_LANES];
    S::as_mut_simd_f32s(&mut lanes[..S::F32_LANES]).0[0] = best;
    let n_tokens = query.n_tokens();
    if let Some(maxima) = maxima {
        for (i, out) in maxima.iter_mut().enumerate().take(n_tokens) {
            *out = lanes[2 * i];
        }
    }
    (0..n_tokens).map(|i| lanes[2 * i]).sum()
}

/// The paired query as vectors and its shape.
struct Scan<'a, S: Simd> {
    rows: &'a [S::f32s],
    /// Vectors per paired row (only the first is read).
    stride: usize,
    /// Pairs per token: `dim / 2`.
    half: usize,
}

/// Scans the document with the common half-widths as constants.
#[inline(always)]
fn by_width<S: Simd, N, const R: usize, const T: usize>(
    simd: S,
    scan: &Scan<'_, S>,
    doc: &[c32],
    next: &mut Chunks<'_, N>,
    best: &mut S::f32s,
) {
    match scan.half {
        24 => by_length::<S, N, R, T, 24>(simd, scan, doc, next, best),
        32 => by_length::<S, N, R, T, 32>(simd, scan, doc, next, best),
        48 => by_length::<S, N, R, T, 48>(simd, scan, doc, next, best),
        64 => by_length::<S, N, R, T, 64>(simd, scan, doc, next, best),
        128 => by_length::<S, N, R, T, 128>(simd, scan, doc, next, best),
        _ => by_length::<S, N, R, T, 0>(simd, scan, doc, next, best),
    }
}

/// Blocks of `R` tokens then tails of `T` (the last overlapping tokens
/// already seen, harmless for a maximum), or smaller blocks for short
/// documents.
#[inline(always)]
fn by_length<S: Simd, N, const R: usize, const T: usize, const H: usize>(
    simd: S,
    scan: &Scan<'_, S>,
    doc: &[c32],
    next: &mut Chunks<'_, N>,
    best: &mut S::f32s,
) {
    let half = if H == 0 { scan.half } else { H };
    let n_tokens = doc.len() / half;
    if n_tokens >= R {
        scan_tokens::<S, N, R, T, H>(simd, scan, doc, next, best);
    } else if n_tokens >= T {
        scan_tokens::<S, N, T, T, H>(simd, scan, doc, next, best);
    } else if n_tokens >= 2 {
        scan_tokens::<S, N, 2, 2, H>(simd, scan, doc, next, best);
    } else {
        token_block::<S, N, 1, H>(simd, scan, doc, &[], next, best);
    }
}

/// All tokens (at least `R`) in blocks of `R`, prefetching the block after
/// each into L1, then the rest in blocks of `T`.
#[inline(always)]
fn scan_tokens<S: Simd, N, const R: usize, const T: usize, const H: usize>(
    simd: S,
    scan: &Scan<'_, S>,
    doc: &[c32],
    next: &mut Chunks<'_, N>,
    best: &mut S::f32s,
) {
    let half = if H == 0 { scan.half } else { H };
    let n_tokens = doc.len() / half;
    let block_len = R * half;
    let full_blocks = n_tokens / R;
    for b in 0..full_blocks {
        let after = ((b + 1) * block_len).min(doc.len());
        let ahead = &doc[after..doc.len().min(after + block_len)];
        token_block::<S, N, R, H>(simd, scan, &doc[b * block_len..], ahead, next, best);
    }
    let tail_start = full_blocks * R;
    for t in 0..(n_tokens - tail_start).div_ceil(T) {
        let start = (tail_start + t * T).min(n_tokens - T);
        token_block::<S, N, T, H>(simd, scan, &doc[start * half..], &[], next, best);
    }
}

/// `R` document tokens against the paired query: `R` accumulator chains,
/// one query row load and `R` pair broadcasts per step.
#[inline(always)]
fn token_block<S: Simd, N, const R: usize, const H: usize>(
    simd: S,
    scan: &Scan<'_, S>,
    tokens: &[c32],
    ahead: &[c32],
    next: &mut Chunks<'_, N>,
    best: &mut S::f32s,
) {
    let half = if H == 0 { scan.half } else { H };
    let tokens = &tokens[..R * half];
    let mut query_rows = scan.rows.iter().step_by(scan.stride);
    let mut ahead_lines = ahead.chunks(STEP_LINES * LINE_BYTES / size_of::<c32>());
    let mut acc = [simd.splat_f32s(0.0); R];
    for k in 0..half {
        if let Some(lines) = ahead_lines.next() {
            prefetch(lines);
        }
        if let Some(lines) = next.next() {
            prefetch_to_l2(lines);
        }
        let x = *query_rows
            .next()
            .expect("the paired query has a row per pair of values");
        for (r, acc) in acc.iter_mut().enumerate() {
            let c: S::f32s = cast(simd.splat_c32s(tokens[r * half + k]));
            *acc = simd.mul_add_e_f32s(c, x, *acc);
        }
    }
    for acc in acc {
        // Even + odd partial sums: lanes 2i and 2i + 1 both get token i's
        // dot product.
        let swapped: S::f32s = cast(simd.swap_re_im_c32s(cast(acc)));
        *best = simd.max_f32s(*best, simd.add_f32s(acc, swapped));
    }
}

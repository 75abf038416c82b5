//! Short queries at full vector width, two FMAs per broadcast.
//!
//! The main kernel puts one query token in each lane and broadcasts one
//! document value per step. A query of at most 16 tokens fills at most one
//! AVX-512 vector, so every FMA needs a broadcast load of its own, and on
//! the Intel core measured that, not the FMA ports, appears to set the
//! pace: 16 tokens ran at 55-58% of the FMA peak from L2, 32 tokens (two
//! vectors sharing each broadcast) at 72-78%, and 33 tokens (three vectors
//! per broadcast) kept about 80% of its 48 lanes busy. This kernel spreads
//! each token of a short query over `L` lanes (2 or 4), lane `j` of token
//! `i` summing the products of the values `k` with `k mod L = j`, so the
//! query fills two vectors and each broadcast of `L` consecutive document
//! values (one 8- or 16-byte load) feeds two FMAs:
//!
//! ```text
//! spread row s: [x_0[Ls..Ls+L], x_1[Ls..Ls+L], ...]   zero-padded to 16 lanes * G
//! for each block of R document tokens:
//!     acc[r][g] += row s vector g * broadcast(c_r[Ls..Ls+L])   // d / L steps
//!     dot of token i = sum of its L lanes                       // L / 2 swaps and adds
//! ```
//!
//! Both layouts are packed, and each level takes the one that fills two of
//! its vectors ([`choose`]): four lanes per token for up to 8 tokens at
//! AVX-512, two at AVX2 (whose vectors are half as wide).
//!
//! Each lane still sums its products in order of `k`; only the final sum
//! over a token's `L` lanes differs from the other levels' order.

use pulp::bytemuck::cast;
use pulp::{Simd, c32, c64};

use crate::aligned::AlignedVec;
use crate::kernel::{PAD_LANES, PackedQuery};
use crate::prefetch::Stream;

/// Whether a query of `n_tokens` tokens of width `dim` has a spread layout
/// of `lanes` lanes per token: the width is a multiple of `lanes` and the
/// tokens fill at most two of the widest vectors (16 tokens at 2 lanes, 8
/// at 4).
fn has_layout(n_tokens: usize, dim: usize, lanes: usize) -> bool {
    dim.is_multiple_of(lanes) && n_tokens * lanes <= 2 * PAD_LANES
}

/// Writes the spread layout of `query` (`[n_tokens, dim]`) with `lanes`
/// lanes per token into `out`: `[dim / lanes][width]`, token `i`'s values
/// `lanes * s..lanes * (s + 1)` in lanes `lanes * i..` of row `s`, the rest
/// zero; `width` is [`width`]. `out` is left empty when the query has no
/// such layout.
pub(crate) fn pack(query: &[f32], dim: usize, lanes: usize, out: &mut AlignedVec<f32>) {
    let n_tokens = query.len() / dim;
    if !has_layout(n_tokens, dim, lanes) {
        out.reset_zeroed(0);
        return;
    }
    let width = width(n_tokens, lanes);
    out.reset_zeroed(dim / lanes * width);
    for (i, token) in query.chunks_exact(dim).enumerate() {
        for (s, values) in token.chunks_exact(lanes).enumerate() {
            out[s * width + lanes * i..][..lanes].copy_from_slice(values);
        }
    }
}

/// Lanes per spread row: `n_tokens * lanes` rounded up to whole 16-lane
/// vectors.
fn width(n_tokens: usize, lanes: usize) -> usize {
    (n_tokens * lanes).div_ceil(PAD_LANES) * PAD_LANES
}

/// The spread layout a level runs: lanes per token and vectors per row.
#[derive(Clone, Copy)]
pub(crate) struct Layout {
    lanes: usize,
    vectors: usize,
}

/// The spread layout level `S` runs `query` with, or `None` when the main
/// kernel serves it. A layout qualifies when a vector holds whole tokens, a
/// broadcast of its `L` values is one vector (not so for the scalar level)
/// and a row is at most two vectors. Four lanes come first: where they fit
/// two vectors (8 tokens at AVX-512, 4 at AVX2) each broadcast feeds two
/// FMAs, where two lanes would fill one vector. Where they do not (5 to 8
/// tokens at AVX2, whose 4-lane row is four vectors), two lanes fill two
/// vectors. On Zen 3, AVX2, that choice ran q = 8 at 44-80 GFLOP/s from
/// L1/L2 against 26-30 for the 4-lane rows with four vectors per step
/// (blocks of 2 tokens: too many loads and prefetch checks per FMA).
#[inline(always)]
pub(crate) fn choose<S: Simd>(query: &PackedQuery) -> Option<Layout> {
    [4, 2].into_iter().find_map(|lanes| {
        let broadcast_fits = match lanes {
            2 => size_of::<S::c32s>() == size_of::<S::f32s>(),
            _ => size_of::<S::c64s>() == size_of::<S::f32s>(),
        };
        let vectors = width(query.n_tokens(), lanes) / S::F32_LANES;
        (broadcast_fits
            && S::F32_LANES.is_multiple_of(lanes)
            && !query.spread(lanes).is_empty()
            && vectors <= 2)
            .then_some(Layout { lanes, vectors })
    })
}

/// MaxSim of a spread query against `doc` (whole tokens of the query's
/// width) in the layout [`choose`] picked, streaming `next` into L2
/// meanwhile; writes each query token's maximum to `maxima` when given.
#[inline(always)]
pub(crate) fn maxsim<S: Simd, N>(
    simd: S,
    query: &PackedQuery,
    layout: Layout,
    doc: &[f32],
    next: &[N],
    maxima: Option<&mut [f32]>,
) -> f32 {
    match (layout.lanes, layout.vectors) {
        (2, 1) => by_registers::<S, N, 2, 1>(simd, query, doc, next, maxima),
        (2, _) => by_registers::<S, N, 2, 2>(simd, query, doc, next, maxima),
        (_, 1) => by_registers::<S, N, 4, 1>(simd, query, doc, next, maxima),
        _ => by_registers::<S, N, 4, 2>(simd, query, doc, next, maxima),
    }
}

/// Picks blocks of `R` tokens and tails of `T` so the `G * R` accumulators,
/// `G` query vectors and a broadcast fit the register file, with
/// `G * T >= 8` chains for two FMA ports of latency 4.
#[inline(always)]
fn by_registers<S: Simd, N, const L: usize, const G: usize>(
    simd: S,
    query: &PackedQuery,
    doc: &[f32],
    next: &[N],
    maxima: Option<&mut [f32]>,
) -> f32 {
    let values = query.spread(L);
    let steps = query.dim() / L;
    let scan = Scan::<S> {
        rows: &S::as_simd_f32s(values).0[..steps * G],
        steps,
    };
    let (doc, _) = doc.as_chunks::<L>();
    let mut next = Stream::new(next);
    let mut best = [simd.splat_f32s(f32::NEG_INFINITY); G];
    let (next, best_mut) = (&mut next, &mut best);
    match (S::REGISTER_COUNT >= 32, G) {
        (true, 1) => by_width::<S, N, L, G, 16, 8>(simd, &scan, doc, next, best_mut),
        (true, _) => by_width::<S, N, L, G, 12, 4>(simd, &scan, doc, next, best_mut),
        (false, 1) => by_width::<S, N, L, G, 12, 8>(simd, &scan, doc, next, best_mut),
        (false, _) => by_width::<S, N, L, G, 6, 4>(simd, &scan, doc, next, best_mut),
    }

    // Lane `L * i` holds token i's maximum; add them in token order.
    let mut lanes = [0.0f32; 2 * PAD_LANES];
    S::as_mut_simd_f32s(&mut lanes[..G * S::F32_LANES])
        .0
        .copy_from_slice(&best);
    let n_tokens = query.n_tokens();
    if let Some(maxima) = maxima {
        for (i, out) in maxima.iter_mut().enumerate().take(n_tokens) {
            *out = lanes[L * i];
        }
    }
    (0..n_tokens).map(|i| lanes[L * i]).sum()
}

/// The spread query as vectors and its number of steps.
struct Scan<'a, S: Simd> {
    /// `[steps][G]` vectors.
    rows: &'a [S::f32s],
    /// Steps per token: `dim / L`.
    steps: usize,
}

/// Scans the document with the steps of the common widths (48, 64, 96,
/// 128 and 256) as constants, so token offsets become immediates.
#[inline(always)]
fn by_width<S: Simd, N, const L: usize, const G: usize, const R: usize, const T: usize>(
    simd: S,
    scan: &Scan<'_, S>,
    doc: &[[f32; L]],
    next: &mut Stream<'_, N>,
    best: &mut [S::f32s; G],
) {
    match scan.steps * L {
        48 => by_length::<S, N, L, G, R, T, 48>(simd, scan, doc, next, best),
        64 => by_length::<S, N, L, G, R, T, 64>(simd, scan, doc, next, best),
        96 => by_length::<S, N, L, G, R, T, 96>(simd, scan, doc, next, best),
        128 => by_length::<S, N, L, G, R, T, 128>(simd, scan, doc, next, best),
        256 => by_length::<S, N, L, G, R, T, 256>(simd, scan, doc, next, best),
        _ => by_length::<S, N, L, G, R, T, 0>(simd, scan, doc, next, best),
    }
}

/// Steps per token: `D / L` for a constant width `D`, else the query's.
#[inline(always)]
fn steps<const L: usize, const D: usize>(scan_steps: usize) -> usize {
    if D == 0 { scan_steps } else { D / L }
}

/// Blocks of `R` tokens then tails of `T` (the last overlapping tokens
/// already seen, harmless for a maximum), or smaller blocks for short
/// documents.
#[inline(always)]
fn by_length<
    S: Simd,
    N,
    const L: usize,
    const G: usize,
    const R: usize,
    const T: usize,
    const D: usize,
>(
    simd: S,
    scan: &Scan<'_, S>,
    doc: &[[f32; L]],
    next: &mut Stream<'_, N>,
    best: &mut [S::f32s; G],
) {
    let n_tokens = doc.len() / steps::<L, D>(scan.steps);
    if n_tokens >= R {
        scan_tokens::<S, N, L, G, R, T, D>(simd, scan, doc, next, best);
    } else if n_tokens >= T {
        scan_tokens::<S, N, L, G, T, T, D>(simd, scan, doc, next, best);
    } else if n_tokens >= 2 {
        scan_tokens::<S, N, L, G, 2, 2, D>(simd, scan, doc, next, best);
    } else {
        token_block::<S, N, L, G, 1, D>(simd, scan, doc, &[], next, best);
    }
}

/// All tokens (at least `R`) in blocks of `R`, then the rest in blocks of
/// `T`. While a block is scored, one line of the block after it is
/// prefetched into L1 per step: a third to a half of its lines. All of
/// them (two or three per step) cost the kernel 5% from L2 (d = 48, q = 8:
/// 58% of the FMA peak against 62%); none left streamed documents
/// 10-25% slower (d = 128, q = 8 and 16, in noisy probes).
#[inline(always)]
fn scan_tokens<
    S: Simd,
    N,
    const L: usize,
    const G: usize,
    const R: usize,
    const T: usize,
    const D: usize,
>(
    simd: S,
    scan: &Scan<'_, S>,
    doc: &[[f32; L]],
    next: &mut Stream<'_, N>,
    best: &mut [S::f32s; G],
) {
    let steps = steps::<L, D>(scan.steps);
    let n_tokens = doc.len() / steps;
    let full_blocks = n_tokens / R;
    for b in 0..full_blocks {
        let after = ((b + 1) * R * steps).min(doc.len());
        let ahead = &doc[after..doc.len().min(after + R * steps)];
        token_block::<S, N, L, G, R, D>(simd, scan, &doc[b * R * steps..], ahead, next, best);
    }
    let tail_start = full_blocks * R;
    for t in 0..(n_tokens - tail_start).div_ceil(T) {
        let start = (tail_start + t * T).min(n_tokens - T);
        token_block::<S, N, L, G, T, D>(simd, scan, &doc[start * steps..], &[], next, best);
    }
}

/// `L` consecutive document values broadcast to every group of `L` lanes:
/// one 8- or 16-byte load.
#[inline(always)]
fn splat<S: Simd, const L: usize>(simd: S, values: &[f32; L]) -> S::f32s {
    if L == 2 {
        let pair: [f32; 2] = *values.first_chunk().expect("two values");
        cast(simd.splat_c32s(cast::<[f32; 2], c32>(pair)))
    } else {
        let quad: [f32; 4] = *values.first_chunk().expect("four values");
        cast(simd.splat_c64s(cast::<[f32; 4], c64>(quad)))
    }
}

/// Every lane of a group of `L` gets the group's sum.
#[inline(always)]
fn fold<S: Simd, const L: usize>(simd: S, acc: S::f32s) -> S::f32s {
    let pairs = simd.add_f32s(acc, cast(simd.swap_re_im_c32s(cast(acc))));
    if L == 2 {
        pairs
    } else {
        simd.add_f32s(pairs, cast(simd.swap_re_im_c64s(cast(pairs))))
    }
}

/// `R` document tokens against the spread query: `G * R` accumulator
/// chains, `G` query vector loads and `R` broadcasts per step, a line of
/// `ahead` prefetched into L1 and `L` lines of what is scored next into
/// L2: over the document that covers a next one of up to `16 / R` times
/// its tokens, as in the main kernel (one line per step halved the
/// streamed speed).
#[inline(always)]
fn token_block<S: Simd, N, const L: usize, const G: usize, const R: usize, const D: usize>(
    simd: S,
    scan: &Scan<'_, S>,
    tokens: &[[f32; L]],
    ahead: &[[f32; L]],
    next: &mut Stream<'_, N>,
    best: &mut [S::f32s; G],
) {
    let steps = steps::<L, D>(scan.steps);
    let tokens = &tokens[..R * steps];
    let mut query_rows = scan.rows.chunks_exact(G).map(|row| {
        *row.first_chunk::<G>()
            .expect("every spread row holds G vectors")
    });
    let mut ahead = Stream::new(ahead);
    let mut acc = [[simd.splat_f32s(0.0); G]; R];
    for s in 0..steps {
        ahead.fetch_l1(1);
        next.fetch_l2(L);
        let x = query_rows
            .next()
            .expect("the spread query has a row per step");
        for (r, acc) in acc.iter_mut().enumerate() {
            let c = splat::<S, L>(simd, &tokens[r * steps + s]);
            for g in 0..G {
                acc[g] = simd.mul_add_e_f32s(c, x[g], acc[g]);
            }
        }
    }
    for acc in &acc {
        for g in 0..G {
            best[g] = simd.max_f32s(best[g], fold::<S, L>(simd, acc[g]));
        }
    }
}

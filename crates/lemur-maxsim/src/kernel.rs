//! The MaxSim kernel: one generic pulp body for every SIMD level.
//!
//! ```text
//! MaxSim(X, C) = sum_i max_j <x_i, c_j>
//!
//! pack X once per query: Xt[k][i] = x_i[k], i padded to a multiple of 16
//! for each block of G query-lane vectors (G * lanes query tokens):
//!     best[g] = -inf
//!     for each block of R document tokens c_0..c_R, then blocks of T < R
//!     for the rest (the last one overlapping, since max is idempotent):
//!         acc[r][g] = 0
//!         for k in 0..dim:                    // R * G independent FMA chains
//!             prefetch a line of the next block (into L1) and a line
//!             of whatever is scored next (into L2)
//!             acc[r][g] += broadcast(c_r[k]) * Xt[k][g]
//!         best[g] = max(best[g], acc[r][g])
//!     total += best[..] in query-token order
//! ```
//!
//! `(G, R, T)` is picked from the number of query vectors left and the size
//! of the register file, so the `G * R` accumulator chains hide the FMA
//! latency without spilling. Common widths (48, 64, 96, 128, 256) get the
//! body with `dim` as a constant, which turns the `R` row offsets into
//! immediates. Documents usually come from memory, not the cache, so the
//! kernel streams the next block in while it scores this one, and the
//! caller's next document (or next query) in over the whole document:
//! spread out a line per step, the misses overlap the FMAs instead of
//! queueing up in one burst.
//!
//! Each lane accumulates one dot product sequentially over `k`, so every
//! level sums in the same order; only fused (FMA) versus separate rounding
//! differs between the scalar level and the vector ones.

use pulp::{Simd, WithSimd};

use crate::aligned::AlignedVec;
use crate::prefetch::Stream;
use crate::spread;

/// Query tokens are padded to a multiple of this many lanes: the widest
/// vector (AVX-512, 16 f32), so one packing serves every level.
pub(crate) const PAD_LANES: usize = 16;

/// A query's tokens transposed to `[dim][padded]` and zero-padded, ready for
/// the kernel. Pack once per query, then score any number of documents.
#[derive(Debug, Clone, Default)]
pub struct PackedQuery {
    transposed: AlignedVec<f32>,
    /// Short queries also get the spread layouts (see `spread.rs`), with
    /// two lanes per token (at most 16 tokens, an even width) and with four
    /// (at most 8 tokens, a width that is a multiple of 4); empty where the
    /// query has none. Both are packed because the best one depends on the
    /// level that runs the query, not on the query alone.
    spread_two: AlignedVec<f32>,
    spread_four: AlignedVec<f32>,
    dim: usize,
    n_tokens: usize,
    padded: usize,
}

impl PackedQuery {
    /// Packs `query`, a row-major `[n_tokens, dim]` token matrix.
    ///
    /// # Panics
    ///
    /// If `dim == 0`, `query` is empty or not a multiple of `dim` long.
    #[track_caller]
    pub fn new(query: &[f32], dim: usize) -> Self {
        let mut packed = PackedQuery::default();
        packed.repack(query, dim);
        packed
    }

    /// Packs another query into the same buffer (no allocation once the
    /// buffer is large enough).
    ///
    /// # Panics
    ///
    /// As [`PackedQuery::new`].
    #[track_caller]
    pub fn repack(&mut self, query: &[f32], dim: usize) {
        assert!(dim >= 1, "dim must be at least 1");
        assert!(
            !query.is_empty() && query.len().is_multiple_of(dim),
            "query must be a non-empty [n_tokens, dim] matrix"
        );
        let n_tokens = query.len() / dim;
        let padded = n_tokens.div_ceil(PAD_LANES) * PAD_LANES;
        self.transposed.reset_zeroed(dim * padded);
        for (i, token) in query.chunks_exact(dim).enumerate() {
            for (k, &value) in token.iter().enumerate() {
                self.transposed[k * padded + i] = value;
            }
        }
        spread::pack(query, dim, 2, &mut self.spread_two);
        spread::pack(query, dim, 4, &mut self.spread_four);
        self.dim = dim;
        self.n_tokens = n_tokens;
        self.padded = padded;
    }

    /// Token width.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Number of query tokens.
    pub fn n_tokens(&self) -> usize {
        self.n_tokens
    }

    /// The packed values (`[dim][padded]`), e.g. to prefetch them. (A
    /// short query is read from its spread copy instead on vector
    /// levels.)
    pub fn values(&self) -> &[f32] {
        &self.transposed
    }

    /// The spread layout with `lanes` lanes per token (2 or 4), empty
    /// when the query has none.
    pub(crate) fn spread(&self, lanes: usize) -> &[f32] {
        if lanes == 4 {
            &self.spread_four
        } else {
            &self.spread_two
        }
    }
}

/// How a document's token values are stored: one f32 each, or two bf16 in
/// a `u32` (the first in the low half). The kernel broadcasts each value
/// as an f32 either way, so one body serves both storages.
pub(crate) trait DocValues: Copy + 'static {
    /// Token values per stored element.
    const VALUES: usize;
    /// The element's values, each broadcast to every lane (only the first
    /// `VALUES` are meaningful).
    fn splat<S: Simd>(self, simd: S) -> [S::f32s; 2];
    /// The elements as f32 values, when that is what they are.
    fn as_f32(elements: &[Self]) -> Option<&[f32]>;
}

impl DocValues for f32 {
    const VALUES: usize = 1;

    #[inline(always)]
    fn splat<S: Simd>(self, simd: S) -> [S::f32s; 2] {
        let value = simd.splat_f32s(self);
        [value, value]
    }

    fn as_f32(elements: &[Self]) -> Option<&[f32]> {
        Some(elements)
    }
}

impl DocValues for u32 {
    const VALUES: usize = 2;

    /// One broadcast of the pair, then a shift and a mask in vector
    /// registers: widening bf16 to f32 is exact (the bits move to the top
    /// half).
    #[inline(always)]
    fn splat<S: Simd>(self, simd: S) -> [S::f32s; 2] {
        let pair = simd.splat_u32s(self);
        [
            simd.transmute_f32s_u32s(simd.wrapping_dyn_shl_u32s(pair, simd.splat_u32s(16))),
            simd.transmute_f32s_u32s(simd.and_u32s(pair, simd.splat_u32s(0xFFFF_0000))),
        ]
    }

    fn as_f32(_: &[Self]) -> Option<&[f32]> {
        None
    }
}

/// One MaxSim evaluation as a pulp operation.
pub(crate) struct MaxSimOp<'a, E = f32, N = f32> {
    pub(crate) query: &'a PackedQuery,
    /// The document's `[n, dim.div_ceil(E::VALUES)]` stored elements.
    pub(crate) doc: &'a [E],
    /// When present, receives each query token's maximum (`[q]`).
    pub(crate) maxima: Option<&'a mut [f32]>,
    /// What is scored after this document (the next document or the next
    /// query's packed values; may be empty): prefetched into L2, a line per
    /// step, while this document is scored.
    pub(crate) next: &'a [N],
}

impl<E: DocValues, N> WithSimd for MaxSimOp<'_, E, N> {
    type Output = f32;

    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) -> f32 {
        let query = self.query;
        let mut maxima = self.maxima;
        if let Some(layout) = spread::choose::<S>(query)
            && let Some(doc) = E::as_f32(self.doc)
        {
            return spread::maxsim(simd, query, layout, doc, self.next, maxima);
        }
        let lanes = S::F32_LANES;
        // Vectors per transposed row, and the vectors that hold real tokens.
        let row_vectors = query.padded / lanes;
        let used_vectors = query.n_tokens.div_ceil(lanes);
        let (xt, _) = S::as_simd_f32s(&query.transposed);
        let scan = Scan {
            xt,
            row_vectors,
            query,
            doc: self.doc,
            next: self.next,
            per_token: query.dim.div_ceil(E::VALUES),
        };
        let mut total = 0.0f32;
        let mut g0 = 0;
        while g0 < used_vectors {
            // Register blocks: `G * R` accumulators plus `G` query vectors
            // and one broadcast must fit the register file (16 vector
            // registers for AVX2 and scalar, 32 for AVX-512). Tail blocks
            // of `T` tokens keep `G * T >= 8` chains, enough for two FMA
            // ports of latency 4. Four vectors take blocks of 5 tokens, not
            // 6: with 29 of 32 registers live, 6 ran 5-10% slower from L2
            // on the Intel AMX kind (d = 128, q = 64: 77% against 81% of
            // the FMA peak).
            let remaining = used_vectors - g0;
            let maxima = maxima.as_deref_mut();
            let step = if S::F32_LANES == 1 {
                // Scalar: one lane per "vector", so block many of them.
                query_block::<S, E, N, 4, 3, 2>(simd, &scan, g0, &mut total, maxima)
            } else if S::REGISTER_COUNT >= 32 {
                match remaining {
                    1 => query_block::<S, E, N, 1, 16, 8>(simd, &scan, g0, &mut total, maxima),
                    2 => query_block::<S, E, N, 2, 12, 4>(simd, &scan, g0, &mut total, maxima),
                    3 => query_block::<S, E, N, 3, 8, 3>(simd, &scan, g0, &mut total, maxima),
                    _ => query_block::<S, E, N, 4, 5, 2>(simd, &scan, g0, &mut total, maxima),
                }
            } else {
                match remaining {
                    1 => query_block::<S, E, N, 1, 12, 8>(simd, &scan, g0, &mut total, maxima),
                    _ => query_block::<S, E, N, 2, 6, 4>(simd, &scan, g0, &mut total, maxima),
                }
            };
            g0 += step;
        }
        total
    }
}

/// What one MaxSim evaluation scans: the packed query as vectors, and the
/// document.
struct Scan<'a, S: Simd, E, N> {
    xt: &'a [S::f32s],
    row_vectors: usize,
    query: &'a PackedQuery,
    doc: &'a [E],
    next: &'a [N],
    /// Stored elements per document token.
    per_token: usize,
}

impl<S: Simd, E: Copy, N> Clone for Scan<'_, S, E, N> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<S: Simd, E: Copy, N> Copy for Scan<'_, S, E, N> {}

/// Scores `G` query vectors against every document token (in blocks of `R`
/// tokens, then of `T` for the tail) and adds their maxima to `total` in
/// query-token order (and to `maxima`, when given). Returns `G`.
#[inline(always)]
fn query_block<S: Simd, E: DocValues, N, const G: usize, const R: usize, const T: usize>(
    simd: S,
    scan: &Scan<'_, S, E, N>,
    g0: usize,
    total: &mut f32,
    maxima: Option<&mut [f32]>,
) -> usize {
    let Scan {
        xt,
        row_vectors,
        query,
        doc,
        next,
        per_token,
    } = *scan;
    // Only the first pass over the document loads it from memory; later
    // query blocks find it in the cache.
    let mut next_lines = Stream::new(if g0 == 0 { next } else { &[] });
    let next = &mut next_lines;
    let dim = query.dim;
    let mut best = [simd.splat_f32s(f32::NEG_INFINITY); G];
    let n_tokens = doc.len() / per_token;
    let block = Tokens {
        xt,
        row_vectors,
        g0,
        dim,
    };
    let best_mut = &mut best;
    if n_tokens >= R {
        // Common widths get a kernel with the width as a constant: row
        // offsets become immediates, so the `R` rows need no registers of
        // their own, and the bounds checks fold away.
        match dim {
            48 => scan_tokens::<S, E, N, G, R, T, 48>(simd, &block, doc, next, best_mut),
            64 => scan_tokens::<S, E, N, G, R, T, 64>(simd, &block, doc, next, best_mut),
            96 => scan_tokens::<S, E, N, G, R, T, 96>(simd, &block, doc, next, best_mut),
            128 => scan_tokens::<S, E, N, G, R, T, 128>(simd, &block, doc, next, best_mut),
            256 => scan_tokens::<S, E, N, G, R, T, 256>(simd, &block, doc, next, best_mut),
            _ => scan_tokens::<S, E, N, G, R, T, 0>(simd, &block, doc, next, best_mut),
        }
    } else if n_tokens >= T {
        scan_tokens::<S, E, N, G, T, T, 0>(simd, &block, doc, next, best_mut);
    } else if n_tokens >= 2 {
        scan_tokens::<S, E, N, G, 2, 2, 0>(simd, &block, doc, next, best_mut);
    } else {
        token_block::<S, E, N, G, 1, 0>(simd, &block, doc, &[], next, best_mut);
    }

    // Spill the maxima and add the real tokens' ones in order, so the sum is
    // the same at every level (padding lanes hold 0 and are skipped anyway).
    let mut lanes_out = [0.0f32; 4 * PAD_LANES];
    let lanes = S::F32_LANES;
    {
        let (out, _) = S::as_mut_simd_f32s(&mut lanes_out[..G * lanes]);
        out.copy_from_slice(&best);
    }
    let first_token = g0 * lanes;
    let real = (query.n_tokens - first_token).min(G * lanes);
    for &value in &lanes_out[..real] {
        *total += value;
    }
    if let Some(maxima) = maxima {
        maxima[first_token..first_token + real].copy_from_slice(&lanes_out[..real]);
    }
    G
}

/// Where the query vectors of a block are and how the document is laid
/// out.
struct Tokens<'a, S: Simd> {
    xt: &'a [S::f32s],
    row_vectors: usize,
    g0: usize,
    dim: usize,
}

impl<S: Simd> Tokens<'_, S> {
    /// The token width: `D` when it is a compile-time specialisation (not
    /// 0), so row offsets become constants and bounds checks fold away.
    #[inline(always)]
    fn dim<const D: usize>(&self) -> usize {
        if D == 0 { self.dim } else { D }
    }
}

/// All of a document's tokens (at least `R`) in blocks of `R`, then the
/// rest in blocks of `T <= R`. A partial last tail block is replaced by the
/// last `T` tokens: they overlap tokens already seen, which is harmless
/// because the maximum is idempotent, and it keeps every block at full
/// width instead of a latency-bound remainder. Small tail blocks keep that
/// overlap, work counted nowhere, under `T` tokens.
#[inline(always)]
fn scan_tokens<
    S: Simd,
    E: DocValues,
    N,
    const G: usize,
    const R: usize,
    const T: usize,
    const D: usize,
>(
    simd: S,
    block: &Tokens<'_, S>,
    doc: &[E],
    next: &mut Stream<'_, N>,
    best: &mut [S::f32s; G],
) {
    let per_token = block.dim::<D>().div_ceil(E::VALUES);
    let n_tokens = doc.len() / per_token;
    let block_len = R * per_token;
    let full_blocks = n_tokens / R;
    // While a block is scored, the block after it is prefetched into L1.
    for b in 0..full_blocks {
        let after = ((b + 1) * block_len).min(doc.len());
        let ahead = &doc[after..doc.len().min(after + block_len)];
        token_block::<S, E, N, G, R, D>(simd, block, &doc[b * block_len..], ahead, next, best);
    }
    let tail_start = full_blocks * R;
    let tail_blocks = (n_tokens - tail_start).div_ceil(T);
    for t in 0..tail_blocks {
        let start = (tail_start + t * T).min(n_tokens - T);
        token_block::<S, E, N, G, T, D>(simd, block, &doc[start * per_token..], &[], next, best);
    }
}

/// `R` document tokens against `G` query vectors: `R * G` independent
/// accumulators so the FMA units, not their latency, set the pace. Each
/// stored element gives `E::VALUES` consecutive values of a token; an odd
/// width's last bf16 pair contributes only its low half.
///
/// The loop is written so the compiler can prove every index in bounds
/// (rows sliced to exactly the elements read, query rows zipped with the
/// element counter) and loads each step's `G` query vectors once: with a bounds
/// check per row and per vector, the step was more compares and loads
/// than FMAs, and ran at about two thirds of the FMA peak from L2.
#[inline(always)]
fn token_block<S: Simd, E: DocValues, N, const G: usize, const R: usize, const D: usize>(
    simd: S,
    block: &Tokens<'_, S>,
    tokens: &[E],
    ahead: &[E],
    next: &mut Stream<'_, N>,
    best: &mut [S::f32s; G],
) {
    let Tokens {
        xt,
        row_vectors,
        g0,
        ..
    } = *block;
    let dim = block.dim::<D>();
    let per_token = dim.div_ceil(E::VALUES);
    let full = dim / E::VALUES;
    let tokens = &tokens[..R * per_token];
    // The rows of the transposed query that each element multiplies
    // (`E::VALUES` of them), with this block's `G` vectors in every row
    // (checked once here). Zipped with the element index, one counter
    // drives the loop: taking rows from `chunks` cost a `min`, a length
    // check and a pointer update per step, a quarter of the AVX2 step's
    // instructions (Zen 3, q = 64).
    assert!(
        g0 + G <= row_vectors,
        "every transposed row holds the block's vectors"
    );
    let element_rows = xt.chunks_exact(row_vectors * E::VALUES);
    debug_assert!(element_rows.len() >= full, "a query row per value");
    let mut ahead = Stream::new(ahead);
    let mut acc = [[simd.splat_f32s(0.0); G]; R];
    for (e, rows) in (0..full).zip(element_rows) {
        ahead.fetch_l1(1);
        next.fetch_l2(1);
        // The element's query rows first, then each token's broadcast goes
        // straight into its FMAs: at widths that are not constants the
        // bounds checks keep the broadcasts in order, and broadcasting all
        // `R` first spilled accumulators on AVX2 (d = 100 ran at 40% of
        // the FMA peak beside 90% at d = 96 and 128, Zen 3).
        let x: [[S::f32s; G]; 2] = std::array::from_fn(|v| {
            if v < E::VALUES {
                *rows[v * row_vectors + g0..]
                    .first_chunk()
                    .expect("checked above")
            } else {
                [simd.splat_f32s(0.0); G]
            }
        });
        for r in 0..R {
            let values = tokens[r * per_token + e].splat(simd);
            for (value, x) in values.iter().zip(&x).take(E::VALUES) {
                for g in 0..G {
                    acc[r][g] = simd.mul_add_e_f32s(*value, x[g], acc[r][g]);
                }
            }
        }
    }
    if full * E::VALUES < dim {
        // An odd width's last bf16 pair: only its low half is a value.
        let x: [S::f32s; G] = *xt[full * E::VALUES * row_vectors + g0..]
            .first_chunk()
            .expect("the transposed query has a row per value");
        for r in 0..R {
            let c = tokens[r * per_token + full].splat(simd)[0];
            for g in 0..G {
                acc[r][g] = simd.mul_add_e_f32s(c, x[g], acc[r][g]);
            }
        }
    }
    for row in &acc {
        for g in 0..G {
            best[g] = simd.max_f32s(best[g], row[g]);
        }
    }
}

//! The MaxSim kernel: one generic pulp body for every SIMD level.
//!
//! ```text
//! MaxSim(X, C) = sum_i max_j <x_i, c_j>
//!
//! pack X once per query: Xt[k][i] = x_i[k], i padded to a multiple of 16
//! for each block of G query-lane vectors (G * lanes query tokens):
//!     best[g] = -inf
//!     for each block of R document tokens c_0..c_R (the last block
//!     overlapping the previous one, since max is idempotent):
//!         acc[r][g] = 0
//!         for k in 0..dim:                    // R * G independent FMA chains
//!             acc[r][g] += broadcast(c_r[k]) * Xt[k][g]
//!         best[g] = max(best[g], acc[r][g])
//!     total += best[..] in query-token order
//! ```
//!
//! `(G, R)` is picked from the number of query vectors left and the size of
//! the register file, so the `G * R` accumulator chains hide the FMA
//! latency without spilling.
//!
//! Each lane accumulates one dot product sequentially over `k`, so every
//! level sums in the same order; only fused (FMA) versus separate rounding
//! differs between the scalar level and the vector ones.

use pulp::{Simd, WithSimd};

/// Query tokens are padded to a multiple of this many lanes: the widest
/// vector (AVX-512, 16 f32), so one packing serves every level.
pub(crate) const PAD_LANES: usize = 16;

/// A query's tokens transposed to `[dim][padded]` and zero-padded, ready for
/// the kernel. Pack once per query, then score any number of documents.
#[derive(Debug, Clone, Default)]
pub struct PackedQuery {
    transposed: Vec<f32>,
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
        self.transposed.clear();
        self.transposed.resize(dim * padded, 0.0);
        for (i, token) in query.chunks_exact(dim).enumerate() {
            for (k, &value) in token.iter().enumerate() {
                self.transposed[k * padded + i] = value;
            }
        }
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
}

impl DocValues for f32 {
    const VALUES: usize = 1;

    #[inline(always)]
    fn splat<S: Simd>(self, simd: S) -> [S::f32s; 2] {
        let value = simd.splat_f32s(self);
        [value, value]
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
}

/// One MaxSim evaluation as a pulp operation.
pub(crate) struct MaxSimOp<'a, E = f32> {
    pub(crate) query: &'a PackedQuery,
    /// The document's `[n, dim.div_ceil(E::VALUES)]` stored elements.
    pub(crate) doc: &'a [E],
    /// When present, receives each query token's maximum (`[q]`).
    pub(crate) maxima: Option<&'a mut [f32]>,
}

impl<E: DocValues> WithSimd for MaxSimOp<'_, E> {
    type Output = f32;

    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) -> f32 {
        let query = self.query;
        let mut maxima = self.maxima;
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
            per_token: query.dim.div_ceil(E::VALUES),
        };
        let mut total = 0.0f32;
        let mut g0 = 0;
        while g0 < used_vectors {
            // Register blocks: `G * R` accumulators plus `G` query vectors
            // and one broadcast must fit the register file (16 vector
            // registers for AVX2 and scalar, 32 for AVX-512).
            let remaining = used_vectors - g0;
            let maxima = maxima.as_deref_mut();
            let step = if S::F32_LANES == 1 {
                // Scalar: one lane per "vector", so block many of them.
                query_block::<S, E, 4, 3>(simd, &scan, g0, &mut total, maxima)
            } else if S::REGISTER_COUNT >= 32 {
                match remaining {
                    1 => query_block::<S, E, 1, 16>(simd, &scan, g0, &mut total, maxima),
                    2 => query_block::<S, E, 2, 12>(simd, &scan, g0, &mut total, maxima),
                    3 => query_block::<S, E, 3, 8>(simd, &scan, g0, &mut total, maxima),
                    _ => query_block::<S, E, 4, 6>(simd, &scan, g0, &mut total, maxima),
                }
            } else {
                match remaining {
                    1 => query_block::<S, E, 1, 12>(simd, &scan, g0, &mut total, maxima),
                    _ => query_block::<S, E, 2, 6>(simd, &scan, g0, &mut total, maxima),
                }
            };
            g0 += step;
        }
        total
    }
}

/// What one MaxSim evaluation scans: the packed query as vectors, and the
/// document.
struct Scan<'a, S: Simd, E> {
    xt: &'a [S::f32s],
    row_vectors: usize,
    query: &'a PackedQuery,
    doc: &'a [E],
    /// Stored elements per document token.
    per_token: usize,
}

impl<S: Simd, E: Copy> Clone for Scan<'_, S, E> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<S: Simd, E: Copy> Copy for Scan<'_, S, E> {}

/// Scores `G` query vectors against every document token (in blocks of `R`
/// tokens, then one at a time for the tail) and adds their maxima to
/// `total` in query-token order (and to `maxima`, when given). Returns `G`.
#[inline(always)]
fn query_block<S: Simd, E: DocValues, const G: usize, const R: usize>(
    simd: S,
    scan: &Scan<'_, S, E>,
    g0: usize,
    total: &mut f32,
    maxima: Option<&mut [f32]>,
) -> usize {
    let Scan {
        xt,
        row_vectors,
        query,
        doc,
        per_token,
    } = *scan;
    let dim = query.dim;
    let mut best = [simd.splat_f32s(f32::NEG_INFINITY); G];
    let n_tokens = doc.len() / per_token;
    let block = Tokens {
        xt,
        row_vectors,
        g0,
        dim,
        per_token,
    };
    if n_tokens >= R {
        scan_tokens::<S, E, G, R>(simd, &block, doc, &mut best);
    } else if n_tokens >= 2 {
        scan_tokens::<S, E, G, 2>(simd, &block, doc, &mut best);
    } else {
        token_block::<S, E, G, 1>(simd, &block, doc, &mut best);
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
    per_token: usize,
}

/// All of a document's tokens (at least `R`) in blocks of `R`. A partial
/// last block is replaced by the last `R` tokens: they overlap tokens
/// already seen, which is harmless because the maximum is idempotent, and
/// it keeps every block at full width instead of a latency-bound tail.
#[inline(always)]
fn scan_tokens<S: Simd, E: DocValues, const G: usize, const R: usize>(
    simd: S,
    block: &Tokens<'_, S>,
    doc: &[E],
    best: &mut [S::f32s; G],
) {
    let per_token = block.per_token;
    let n_tokens = doc.len() / per_token;
    let mut blocks = doc.chunks_exact(R * per_token);
    for tokens in &mut blocks {
        token_block::<S, E, G, R>(simd, block, tokens, best);
    }
    if !blocks.remainder().is_empty() {
        let last = &doc[(n_tokens - R) * per_token..];
        token_block::<S, E, G, R>(simd, block, last, best);
    }
}

/// `R` document tokens against `G` query vectors: `R * G` independent
/// accumulators so the FMA units, not their latency, set the pace. Each
/// stored element gives `E::VALUES` consecutive values of a token; an odd
/// width's last bf16 pair contributes only its low half.
#[inline(always)]
fn token_block<S: Simd, E: DocValues, const G: usize, const R: usize>(
    simd: S,
    block: &Tokens<'_, S>,
    tokens: &[E],
    best: &mut [S::f32s; G],
) {
    let Tokens {
        xt,
        row_vectors,
        g0,
        dim,
        per_token,
    } = *block;
    let rows: [&[E]; R] = core::array::from_fn(|r| &tokens[r * per_token..(r + 1) * per_token]);
    let mut acc = [[simd.splat_f32s(0.0); G]; R];
    // Written without closures: for f32 this must compile to the same
    // broadcast-from-memory FMA loop as a plain slice.
    let full = dim / E::VALUES;
    for e in 0..full {
        for r in 0..R {
            let values = rows[r][e].splat(simd);
            for (v, &c) in values.iter().enumerate().take(E::VALUES) {
                let x = &xt[(e * E::VALUES + v) * row_vectors + g0..][..G];
                for g in 0..G {
                    acc[r][g] = simd.mul_add_e_f32s(c, x[g], acc[r][g]);
                }
            }
        }
    }
    if full * E::VALUES < dim {
        // An odd width's last bf16 pair: only its low half is a value.
        let x = &xt[(dim - 1) * row_vectors + g0..][..G];
        for r in 0..R {
            let c = rows[r][full].splat(simd)[0];
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

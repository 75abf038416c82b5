//! bfloat16 token storage and MaxSim on it: half the memory of f32 and,
//! on CPUs with AVX512-BF16, `vdpbf16ps` dot products (two multiply-adds
//! per lane per instruction, accumulated in f32), or on CPUs with AMX-BF16
//! tile products (`tdpbf16ps`, a 16 x 32 by 32 x 16 product per
//! instruction). [`Bf16Kernel`] names the kernels.
//!
//! Values are rounded to bf16 (8 significant bits) once, when stored; the
//! query is rounded the same way, and every product of two bf16 values is
//! exact in f32, so the only extra error against f32 MaxSim is that
//! rounding. Elsewhere the crate's generic MaxSim kernel runs on the bf16
//! storage directly (each value widened to f32 as it is broadcast, which
//! is exact), at any [`Isa`] level: the same products, summed in f32.

#[cfg(target_arch = "x86_64")]
mod amx;
#[cfg(target_arch = "x86_64")]
mod avx512;
mod matrix;

use lemur_topk::{Hit, TopK};

use crate::aligned::AlignedU32;
use crate::kernel::{MaxSimOp, PackedQuery};
use crate::{Isa, MultiVectors};

pub use matrix::{Bf16Matrix, dot_products_bf16};

/// Query tokens per kernel block: one 512-bit register of f32 lanes.
const BLOCK: usize = 16;

/// `x` rounded to the nearest bf16 (ties to even), as its bit pattern.
/// Finite inputs stay finite unless they exceed bf16's range (about
/// `3.4e38`, the same as f32's).
#[inline]
pub fn to_bf16(x: f32) -> u16 {
    let bits = x.to_bits();
    let rounding = 0x7fff + ((bits >> 16) & 1);
    (bits.wrapping_add(rounding) >> 16) as u16
}

/// The f32 value of a bf16 bit pattern (exact).
#[inline]
pub fn from_bf16(bits: u16) -> f32 {
    f32::from_bits(u32::from(bits) << 16)
}

/// Two consecutive values of a token as one `u32` of two bf16 (the first
/// in the low half): the operand layout of `vdpbf16ps`. An odd width's
/// last pair has a zero high half.
#[inline]
fn pair(values: &[f32], p: usize) -> u32 {
    let lo = u32::from(to_bf16(values[2 * p]));
    let hi = values.get(2 * p + 1).map_or(0, |&v| u32::from(to_bf16(v)));
    lo | (hi << 16)
}

/// Whether this CPU runs a bf16 instruction kernel (AVX512-BF16 or AMX;
/// otherwise the generic kernel computes the same scores).
pub fn bf16_accelerated() -> bool {
    Bf16Kernel::detect() != Bf16Kernel::Generic
}

/// The kernels that compute bf16 MaxSim. All multiply the same rounded
/// values exactly and sum in f32; only the order of the sums differs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Bf16Kernel {
    /// The crate's generic kernel at the query's [`Isa`] level, each bf16
    /// value widened to f32 as it is broadcast. Runs everywhere.
    Generic,
    /// AVX512-BF16 `vdpbf16ps` dot products.
    Avx512Bf16,
    /// AMX-BF16 tile products, for widths that are a multiple of 32 and
    /// documents of at least 16 tokens; other documents run
    /// [`Bf16Kernel::Avx512Bf16`] (which every AMX-BF16 CPU has).
    Amx,
}

impl Bf16Kernel {
    /// Every kernel, slowest first.
    pub const ALL: [Bf16Kernel; 3] = [Bf16Kernel::Generic, Bf16Kernel::Avx512Bf16, Bf16Kernel::Amx];

    /// The short name used in logs and benchmark rows: `bf16-generic`,
    /// `avx512bf16`, `amxbf16`.
    pub fn name(self) -> &'static str {
        match self {
            Bf16Kernel::Generic => "bf16-generic",
            Bf16Kernel::Avx512Bf16 => "avx512bf16",
            Bf16Kernel::Amx => "amxbf16",
        }
    }

    /// Whether this CPU (and, for AMX, the operating system) runs it.
    pub fn is_available(self) -> bool {
        match self {
            Bf16Kernel::Generic => true,
            #[cfg(target_arch = "x86_64")]
            Bf16Kernel::Avx512Bf16 => avx512::available(),
            #[cfg(target_arch = "x86_64")]
            Bf16Kernel::Amx => amx::available(),
            #[cfg(not(target_arch = "x86_64"))]
            _ => false,
        }
    }

    /// The kernels this machine runs, slowest first.
    pub fn available() -> Vec<Bf16Kernel> {
        Self::ALL.into_iter().filter(|k| k.is_available()).collect()
    }

    /// The fastest kernel this machine runs.
    pub fn detect() -> Bf16Kernel {
        Self::ALL
            .into_iter()
            .rev()
            .find(|k| k.is_available())
            .unwrap_or(Bf16Kernel::Generic)
    }
}

/// A ragged set of token vectors stored as bf16: a corpus at half the
/// memory of [`MultiVectors`]. Each token is `dim.div_ceil(2)` pairs; the
/// storage starts on a cache line, so the tokens of a width that is a
/// multiple of 32 are whole AMX tile rows.
#[derive(Debug, Clone, PartialEq)]
pub struct Bf16Vectors {
    pairs: AlignedU32,
    dim: usize,
    pairs_per_token: usize,
    /// Token offsets, as in [`MultiVectors::offsets`].
    offsets: Vec<usize>,
}

impl Bf16Vectors {
    /// Rounds every value of `set` to bf16.
    pub fn from_f32<T: AsRef<[f32]>>(set: &MultiVectors<T>) -> Self {
        let dim = set.dim();
        let pairs_per_token = dim.div_ceil(2);
        let mut pairs = AlignedU32::zeroed(set.n_tokens() * pairs_per_token);
        for (out, token) in pairs
            .chunks_exact_mut(pairs_per_token)
            .zip(set.tokens().chunks_exact(dim))
        {
            for (p, slot) in out.iter_mut().enumerate() {
                *slot = pair(token, p);
            }
        }
        Bf16Vectors {
            pairs,
            dim,
            pairs_per_token,
            offsets: set.offsets().to_vec(),
        }
    }

    /// Number of sets.
    pub fn len(&self) -> usize {
        self.offsets.len() - 1
    }

    /// Whether there are no sets.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Token width.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Tokens in all sets.
    pub fn n_tokens(&self) -> usize {
        self.offsets[self.len()]
    }

    /// Bytes of token storage (half of f32's for even widths).
    pub fn token_bytes(&self) -> usize {
        self.pairs.len() * size_of::<u32>()
    }

    /// Set `i` as pairs, `[tokens, dim.div_ceil(2)]`.
    ///
    /// # Panics
    ///
    /// If `i >= len()`.
    pub fn get(&self, i: usize) -> &[u32] {
        let ppt = self.pairs_per_token;
        &self.pairs[self.offsets[i] * ppt..self.offsets[i + 1] * ppt]
    }

    /// Appends the sets of `other` (same width).
    ///
    /// # Panics
    ///
    /// If the widths differ.
    #[track_caller]
    pub fn append(&mut self, other: &Bf16Vectors) {
        assert_eq!(self.dim, other.dim, "appending sets of another width");
        let base = self.n_tokens();
        self.pairs.extend_from_slice(&other.pairs);
        self.offsets
            .extend(other.offsets[1..].iter().map(|o| base + o));
    }

    /// Token `t` of set `i` back in f32 (the rounded values).
    pub fn token(&self, i: usize, t: usize) -> Vec<f32> {
        let row = &self.get(i)[t * self.pairs_per_token..(t + 1) * self.pairs_per_token];
        row.iter()
            .flat_map(|&p| [from_bf16(p as u16), from_bf16((p >> 16) as u16)])
            .take(self.dim)
            .collect()
    }
}

/// A query rounded to bf16 and laid out for the kernels: for the
/// AVX512-BF16 and AMX kernels, blocks of 16 query tokens, each as
/// `[pairs][16 lanes]` of bf16 pairs (padding lanes zero; 16 pairs of a
/// block are one AMX tile); for the generic kernel, the rounded values
/// packed as a [`PackedQuery`]. It also records which kernel runs and the
/// level the generic kernel runs at.
#[derive(Debug, Clone)]
pub struct PackedQueryBf16 {
    packed: AlignedU32,
    rounded: PackedQuery,
    dim: usize,
    n_tokens: usize,
    kernel: Bf16Kernel,
    isa: Isa,
}

impl PackedQueryBf16 {
    /// Packs `query` (`[q, dim]`).
    ///
    /// # Panics
    ///
    /// If `dim == 0`, the query is empty or not a whole number of tokens.
    #[track_caller]
    pub fn new(query: &[f32], dim: usize) -> Self {
        assert!(dim > 0, "dim must be at least 1");
        assert!(
            !query.is_empty() && query.len().is_multiple_of(dim),
            "query is not [q, dim]"
        );
        let n_tokens = query.len() / dim;
        let pairs = dim.div_ceil(2);
        let blocks = n_tokens.div_ceil(BLOCK);
        let mut packed = AlignedU32::zeroed(blocks * pairs * BLOCK);
        for (i, token) in query.chunks_exact(dim).enumerate() {
            let (block, lane) = (i / BLOCK, i % BLOCK);
            for p in 0..pairs {
                packed[(block * pairs + p) * BLOCK + lane] = pair(token, p);
            }
        }
        let rounded: Vec<f32> = query.iter().map(|&v| from_bf16(to_bf16(v))).collect();
        PackedQueryBf16 {
            packed,
            rounded: PackedQuery::new(&rounded, dim),
            dim,
            n_tokens,
            kernel: Bf16Kernel::detect(),
            isa: Isa::detect(),
        }
    }

    /// Runs `kernel` instead of the fastest one detected.
    ///
    /// # Panics
    ///
    /// If this machine does not run `kernel` ([`Bf16Kernel::is_available`]).
    #[track_caller]
    pub fn with_kernel(mut self, kernel: Bf16Kernel) -> Self {
        assert!(
            kernel.is_available(),
            "{} is not available here",
            kernel.name()
        );
        self.kernel = kernel;
        self
    }

    /// The kernel [`maxsim_bf16`] runs for this query.
    pub fn kernel(&self) -> Bf16Kernel {
        self.kernel
    }

    /// Runs the generic kernel at `isa` (instead of the best level
    /// detected) when it is the query's kernel.
    pub fn with_isa(mut self, isa: Isa) -> Self {
        self.isa = isa;
        self
    }

    /// Token width.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Query tokens.
    pub fn n_tokens(&self) -> usize {
        self.n_tokens
    }

    /// The query's bf16 pairs as the AVX512-BF16 kernel reads them
    /// (`[blocks][pairs][16]`), e.g. to prefetch them. (The generic
    /// kernel reads an f32 copy instead, so prefetching these helps only
    /// where [`bf16_accelerated`] holds.)
    pub fn values(&self) -> &[u32] {
        &self.packed
    }

    fn pairs(&self) -> usize {
        self.dim.div_ceil(2)
    }
}

/// MaxSim of a bf16 query against one bf16 document (`doc` from
/// [`Bf16Vectors::get`]), accumulated in f32, on the query's
/// [`Bf16Kernel`] (the fastest this CPU has unless chosen).
///
/// # Panics
///
/// If `doc` is empty or not whole tokens of the query's width.
#[track_caller]
pub fn maxsim_bf16(query: &PackedQueryBf16, doc: &[u32]) -> f32 {
    maxsim_bf16_before(query, doc, &[])
}

/// [`maxsim_bf16`], streaming `next` into the L2 cache meanwhile: what is
/// scored after this document (the next document's pairs, or the next
/// query's [`PackedQueryBf16::values`]; may be empty), a cache line per
/// kernel step, so its memory latency hides behind this document's work.
///
/// # Panics
///
/// As [`maxsim_bf16`].
#[track_caller]
pub fn maxsim_bf16_before(query: &PackedQueryBf16, doc: &[u32], next: &[u32]) -> f32 {
    let pairs = query.pairs();
    assert!(
        !doc.is_empty() && doc.len().is_multiple_of(pairs),
        "document is not [n, dim.div_ceil(2)] pairs"
    );
    #[cfg(target_arch = "x86_64")]
    match query.kernel {
        Bf16Kernel::Amx if amx::fits(pairs, doc.len() / pairs) => {
            return amx::maxsim(&query.packed, query.n_tokens, pairs, doc, next);
        }
        Bf16Kernel::Amx | Bf16Kernel::Avx512Bf16 => {
            return avx512::maxsim(&query.packed, query.n_tokens, pairs, doc, next);
        }
        Bf16Kernel::Generic => {}
    }
    query.isa.dispatch(MaxSimOp {
        query: &query.rounded,
        doc,
        maxima: None,
        next,
    })
}

/// The generic kernel's bf16 MaxSim at `isa` (what [`maxsim_bf16`] runs on
/// CPUs without AVX512-BF16).
///
/// # Panics
///
/// As [`maxsim_bf16`].
#[track_caller]
pub fn maxsim_bf16_generic(isa: Isa, query: &PackedQueryBf16, doc: &[u32]) -> f32 {
    assert!(
        !doc.is_empty() && doc.len().is_multiple_of(query.pairs()),
        "document is not [n, dim.div_ceil(2)] pairs"
    );
    isa.dispatch(MaxSimOp {
        query: &query.rounded,
        doc,
        maxima: None,
        next: &[] as &[f32],
    })
}

/// Each query token's best bf16 dot product over `doc`'s tokens (`out` is
/// `[query tokens]`), on the generic kernel at the query's level: LEMUR's
/// single-token targets from bf16 storage. Returns their sum, the MaxSim.
///
/// # Panics
///
/// If `doc` is empty or not whole tokens, or `out` has the wrong length.
#[track_caller]
pub fn token_maxima_bf16(query: &PackedQueryBf16, doc: &[u32], out: &mut [f32]) -> f32 {
    assert!(
        !doc.is_empty() && doc.len().is_multiple_of(query.pairs()),
        "document is not [n, dim.div_ceil(2)] pairs"
    );
    assert_eq!(out.len(), query.n_tokens, "out is not [query tokens]");
    query.isa.dispatch(MaxSimOp {
        query: &query.rounded,
        doc,
        maxima: Some(out),
        next: &[] as &[f32],
    })
}

/// Writes the bf16 MaxSim of `query` against each candidate into `scores`.
///
/// # Panics
///
/// If the widths or lengths differ or a candidate id is out of range.
#[track_caller]
pub fn score_candidates_bf16(
    query: &PackedQueryBf16,
    corpus: &Bf16Vectors,
    candidates: &[u32],
    scores: &mut [f32],
) {
    assert_eq!(candidates.len(), scores.len());
    assert_eq!(query.dim(), corpus.dim(), "query and corpus widths differ");
    for (&doc, score) in candidates.iter().zip(scores) {
        *score = maxsim_bf16(query, corpus.get(doc as usize));
    }
}

/// The `k` candidates with the highest bf16 MaxSim against `query`, best
/// first, ties to the lower id.
///
/// # Panics
///
/// If the widths differ or a candidate id is out of range.
#[track_caller]
pub fn rerank_bf16(
    query: &PackedQueryBf16,
    corpus: &Bf16Vectors,
    candidates: &[u32],
    k: usize,
) -> Vec<Hit> {
    assert_eq!(query.dim(), corpus.dim(), "query and corpus widths differ");
    let mut best = TopK::new(k.min(candidates.len()));
    for &doc in candidates {
        best.push(doc, maxsim_bf16(query, corpus.get(doc as usize)));
    }
    best.drain_sorted()
}

//! Corpus tokens stored as int8 (one scale per token) and MaxSim on them
//! with exact integer dot products: `vpdpbusd` (AVX512-VNNI) multiplies 64
//! byte pairs per instruction, twice the products of `vdpbf16ps`, so on
//! CPUs that have both the int8 MaxSim runs at about 1.8x the bf16 one.
//! It is not a ranking of its own: its rounding is about four times bf16's,
//! so its use is as a filter whose error bound says which candidates an
//! exact rerank must score again.
//!
//! A token `y` is stored as codes `c_k = round(y_k / s)` with `s = max |y|
//! / 127` (the rule of [`Int8Matrix`](super::Int8Matrix) rows), a query
//! token `x` the same way with its own scale `t`. The score of a pair is
//! `t s sum_k a_k c_k`: the sum is exact in `i32`, turned into f32 (exact
//! for widths up to 1040), times `s`, maximised over the document's
//! tokens, then times `t` and summed over the query's tokens in f32.
//!
//! `vpdpbusd` multiplies unsigned bytes by signed ones. The query holds
//! the unsigned side, `a_k + 128`, so the document's signed codes can be
//! broadcast straight from memory; `sum_k (a_k + 128) c_k` then exceeds
//! the wanted sum by `128 sum_k c_k`, which each document token stores
//! (negated) as the starting value of its accumulators.

use pulp::{Simd, WithSimd};

use crate::aligned::AlignedU32;
use crate::{Isa, Level, MultiVectors};

use super::integer::word_dot;
use super::{CODE_OFFSET, code_of, scale_of};

/// Query tokens per block: one 512-bit register of `i32` lanes.
pub(super) const BLOCK: usize = 16;
/// The widest token the integer sums cannot overflow: a running sum of
/// one token pair stays within `(255 + 128) * 127 * dim < 2^31`.
pub const MAX_INT8_DIM: usize = 32_768;

/// A ragged set of token vectors stored as int8 codes with one f32 scale
/// per token: a corpus at a quarter of the memory of [`MultiVectors`]
/// (plus 8 bytes per token). Each token is `dim.div_ceil(4)` words of four
/// signed codes, the first value in the low byte.
#[derive(Debug, Clone, PartialEq)]
pub struct Int8Vectors {
    words: AlignedU32,
    scales: Vec<f32>,
    /// Per token, `-128 * sum_k c_k`: where its integer sums start.
    starts: Vec<i32>,
    dim: usize,
    /// Token offsets, as in [`MultiVectors::offsets`].
    offsets: Vec<usize>,
}

/// One document of an [`Int8Vectors`]: what the int8 kernels read.
#[derive(Debug, Clone, Copy)]
pub struct Int8Doc<'a> {
    /// `[tokens, dim.div_ceil(4)]` words of four signed codes.
    pub words: &'a [u32],
    /// One scale per token.
    pub scales: &'a [f32],
    /// One accumulator start per token (`-128` times its codes' sum).
    pub starts: &'a [i32],
}

impl Int8Vectors {
    /// Quantises every token of `set` (finite: [`MultiVectors::new`]
    /// refuses anything else).
    ///
    /// # Panics
    ///
    /// If the width exceeds [`MAX_INT8_DIM`].
    #[track_caller]
    pub fn from_f32<T: AsRef<[f32]>>(set: &MultiVectors<T>) -> Self {
        let dim = set.dim();
        assert!(
            dim <= MAX_INT8_DIM,
            "int8 tokens are at most {MAX_INT8_DIM} wide"
        );
        let quads = dim.div_ceil(4);
        let mut words = AlignedU32::zeroed(set.n_tokens() * quads);
        let mut scales = Vec::with_capacity(set.n_tokens());
        let mut starts = Vec::with_capacity(set.n_tokens());
        for (out, token) in words
            .chunks_exact_mut(quads)
            .zip(set.tokens().chunks_exact(dim))
        {
            let scale = scale_of(token);
            let mut sum = 0i32;
            for (k, &value) in token.iter().enumerate() {
                let code = code_of(value, scale);
                sum += code;
                out[k / 4] |= u32::from(code as i8 as u8) << (8 * (k % 4));
            }
            scales.push(scale);
            starts.push(-CODE_OFFSET * sum);
        }
        Int8Vectors {
            words,
            scales,
            starts,
            dim,
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

    /// Bytes of storage, scales and starts included (about a quarter of
    /// f32's for widths of 32 and more).
    pub fn bytes(&self) -> usize {
        (self.words.len() + self.scales.len() + self.starts.len()) * 4
    }

    /// Set `i`.
    ///
    /// # Panics
    ///
    /// If `i >= len()`.
    #[track_caller]
    pub fn get(&self, i: usize) -> Int8Doc<'_> {
        let (first, end) = (self.offsets[i], self.offsets[i + 1]);
        let quads = self.dim.div_ceil(4);
        Int8Doc {
            words: &self.words[first * quads..end * quads],
            scales: &self.scales[first..end],
            starts: &self.starts[first..end],
        }
    }

    /// Token `t` of set `i` back in f32: each code times the token's scale
    /// (rounded to f32; [`quantise`](super::quantise) gives the codes).
    ///
    /// # Panics
    ///
    /// If `i >= len()` or `t` is past the set's tokens.
    #[track_caller]
    pub fn token(&self, i: usize, t: usize) -> Vec<f32> {
        let doc = self.get(i);
        let quads = self.dim.div_ceil(4);
        let scale = doc.scales[t];
        (0..self.dim)
            .map(|k| {
                let code = (doc.words[t * quads + k / 4] >> (8 * (k % 4))) as u8 as i8;
                f32::from(code) * scale
            })
            .collect()
    }

    /// Appends the sets of `other` (same width).
    ///
    /// # Panics
    ///
    /// If the widths differ.
    #[track_caller]
    pub fn append(&mut self, other: &Int8Vectors) {
        assert_eq!(self.dim, other.dim, "appending sets of another width");
        let base = self.offsets[self.len()];
        self.words.extend_from_slice(&other.words);
        self.scales.extend_from_slice(&other.scales);
        self.starts.extend_from_slice(&other.starts);
        self.offsets
            .extend(other.offsets[1..].iter().map(|o| base + o));
    }
}

/// A query quantised to int8 (one scale per token) and laid out for the
/// kernels: blocks of 16 query tokens, each `[dim.div_ceil(4)][16 lanes]`
/// words of four unsigned bytes `code + 128` (padding lanes and values are
/// code 0). It records the level the kernel runs at: the VNNI kernel at
/// the AVX-512 level where the CPU has AVX512-VNNI, an integer loop
/// elsewhere, both computing the same integers.
#[derive(Debug, Clone)]
pub struct PackedQueryInt8 {
    packed: AlignedU32,
    /// `[blocks * 16]`, zero in padding lanes.
    scales: Vec<f32>,
    dim: usize,
    n_tokens: usize,
    isa: Isa,
}

impl PackedQueryInt8 {
    /// Quantises and packs `query` (`[q, dim]`).
    ///
    /// # Panics
    ///
    /// If `dim` is 0 or above [`MAX_INT8_DIM`], the query is empty or not
    /// whole tokens, or a value is not finite.
    #[track_caller]
    pub fn new(query: &[f32], dim: usize) -> Self {
        assert!(
            dim > 0 && dim <= MAX_INT8_DIM,
            "dim must be in 1..={MAX_INT8_DIM}"
        );
        assert!(
            !query.is_empty() && query.len().is_multiple_of(dim),
            "query is not [q, dim]"
        );
        assert!(query.iter().all(|v| v.is_finite()), "values must be finite");
        let n_tokens = query.len() / dim;
        let quads = dim.div_ceil(4);
        let blocks = n_tokens.div_ceil(BLOCK);
        // Code 0 everywhere first: padding lanes and values add nothing.
        let zero = CODE_OFFSET as u8;
        let mut packed = AlignedU32::zeroed(blocks * quads * BLOCK);
        packed.fill(u32::from_le_bytes([zero; 4]));
        let mut scales = vec![0.0; blocks * BLOCK];
        for (i, token) in query.chunks_exact(dim).enumerate() {
            let (block, lane) = (i / BLOCK, i % BLOCK);
            let scale = scale_of(token);
            scales[i] = scale;
            for (q, values) in token.chunks(4).enumerate() {
                let mut bytes = [zero; 4];
                for (byte, &value) in bytes.iter_mut().zip(values) {
                    *byte = (code_of(value, scale) + CODE_OFFSET) as u8;
                }
                packed[(block * quads + q) * BLOCK + lane] = u32::from_le_bytes(bytes);
            }
        }
        PackedQueryInt8 {
            packed,
            scales,
            dim,
            n_tokens,
            isa: Isa::detect(),
        }
    }

    /// Runs at `isa` instead of the best level detected.
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

    /// The packed words (`[blocks][dim.div_ceil(4)][16]`), e.g. to
    /// prefetch them.
    pub fn values(&self) -> &[u32] {
        &self.packed
    }
}

/// Whether [`maxsim_int8`] runs the VNNI kernel at `isa`: the AVX-512
/// level on a CPU with AVX512-VNNI. Elsewhere the portable integer loop
/// computes the same integers about 12 times slower than the f32 MaxSim
/// kernel (measured at the AVX2 level of an AMD EPYC Zen 4), so callers
/// that only filter with it are better off without it there.
pub fn int8_accelerated(isa: Isa) -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        isa.level() == Level::Avx512 && super::maxsim_vnni::available()
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = isa;
        false
    }
}

/// MaxSim of an int8 query against one int8 document, streaming `next`
/// (what is scored after it: the next document's words or the next
/// query's [`PackedQueryInt8::values`]; may be empty) into the L2 cache
/// meanwhile.
///
/// # Panics
///
/// If the document is empty or its parts do not hold the same tokens of
/// the query's width.
#[track_caller]
pub fn maxsim_int8_before(query: &PackedQueryInt8, doc: Int8Doc<'_>, next: &[u32]) -> f32 {
    let quads = query.dim.div_ceil(4);
    let n_doc = doc.scales.len();
    assert!(
        n_doc > 0 && doc.words.len() == n_doc * quads && doc.starts.len() == n_doc,
        "document is not [n, dim.div_ceil(4)] words with n scales and starts"
    );
    #[cfg(target_arch = "x86_64")]
    if int8_accelerated(query.isa) {
        return super::maxsim_vnni::maxsim(
            &query.packed,
            &query.scales,
            query.n_tokens,
            quads,
            doc,
            next,
        );
    }
    query.isa.dispatch(IntegerMaxSimOp { query, doc })
}

/// [`maxsim_int8_before`] with nothing streamed in.
///
/// # Panics
///
/// As [`maxsim_int8_before`].
#[track_caller]
pub fn maxsim_int8(query: &PackedQueryInt8, doc: Int8Doc<'_>) -> f32 {
    maxsim_int8_before(query, doc, &[])
}

/// The portable int8 MaxSim: the VNNI kernel's integers and f32 steps,
/// one query token at a time.
struct IntegerMaxSimOp<'a> {
    query: &'a PackedQueryInt8,
    doc: Int8Doc<'a>,
}

impl WithSimd for IntegerMaxSimOp<'_> {
    type Output = f32;

    #[inline(always)]
    fn with_simd<S: Simd>(self, _simd: S) -> f32 {
        let query = self.query;
        let quads = query.dim.div_ceil(4);
        let mut total = 0.0f32;
        for i in 0..query.n_tokens {
            let (block, lane) = (i / BLOCK, i % BLOCK);
            let words = |q: usize| query.packed[(block * quads + q) * BLOCK + lane];
            let mut best = f32::NEG_INFINITY;
            for (t, token) in self.doc.words.chunks_exact(quads).enumerate() {
                let sum = token
                    .iter()
                    .enumerate()
                    .fold(self.doc.starts[t], |sum, (q, &codes)| {
                        sum + word_dot(codes, words(q))
                    });
                best = best.max(sum as f32 * self.doc.scales[t]);
            }
            total += best * query.scales[i];
        }
        total
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::naive;

    #[test]
    fn tokens_keep_their_rounded_values() {
        let dim = 7;
        let values: Vec<f32> = (0..3 * dim).map(|i| (i as f32 - 9.5) / 3.0).collect();
        let set = MultiVectors::new(values.clone(), dim, &[2, 1]).unwrap();
        let stored = Int8Vectors::from_f32(&set);
        assert_eq!(stored.len(), 2);
        let (scale, codes) = super::super::quantise(&values[2 * dim..]);
        let back: Vec<f32> = codes.iter().map(|&c| f32::from(c) * scale).collect();
        assert_eq!(stored.token(1, 0), back);
        for (t, token) in values.chunks_exact(dim).enumerate() {
            let (doc, within) = if t < 2 { (0, t) } else { (1, 0) };
            let back = stored.token(doc, within);
            let scale = scale_of(token);
            for (v, b) in token.iter().zip(back) {
                assert!((v - b).abs() <= 0.5001 * scale, "{v} vs {b}");
            }
        }
    }

    #[test]
    fn appended_sets_follow_the_first() {
        let first = MultiVectors::new(vec![1.0, -1.0, 0.5, 0.25], 2, &[2]).unwrap();
        let second = MultiVectors::new(vec![3.0, 0.0], 2, &[1]).unwrap();
        let mut stored = Int8Vectors::from_f32(&first);
        stored.append(&Int8Vectors::from_f32(&second));
        assert_eq!(stored.len(), 2);
        assert_eq!(stored.token(1, 0), vec![3.0, 0.0]);
        assert_eq!(stored.get(1).scales, &[3.0 / 127.0]);
        assert_eq!(stored.get(1).starts, &[-128 * 127]);
    }

    #[test]
    fn every_level_scores_the_rounded_values() {
        // Values that are small multiples of a power of two make every
        // step exact, so every level must give MaxSim of the stored values
        // (the first query token's scale 8 / 127 is not a power of two, but
        // the f64 oracle multiplies the same codes by the same scales).
        let dim = 9;
        let doc: Vec<f32> = (0..5 * dim)
            .map(|i| ((i * 7 % 23) as f32 - 11.0) * 0.5)
            .collect();
        let query: Vec<f32> = (0..19 * dim)
            .map(|i| ((i * 5 % 17) as f32 - 8.0) * 0.25)
            .collect();
        let set = MultiVectors::new(doc.clone(), dim, &[5]).unwrap();
        let stored = Int8Vectors::from_f32(&set);
        let rounded = |values: &[f32]| -> Vec<f32> {
            values
                .chunks_exact(dim)
                .flat_map(|token| {
                    let (scale, codes) = super::super::quantise(token);
                    codes.into_iter().map(move |c| f32::from(c) * scale)
                })
                .collect()
        };
        let expected = naive::maxsim(&rounded(&query), &rounded(&doc), dim);
        for isa in Isa::available() {
            let packed = PackedQueryInt8::new(&query, dim).with_isa(isa);
            let score = maxsim_int8(&packed, stored.get(0));
            assert!(
                (score - expected).abs() <= 1e-5 * expected.abs().max(1.0),
                "{}: {score} vs {expected}",
                isa.level()
            );
        }
    }
}

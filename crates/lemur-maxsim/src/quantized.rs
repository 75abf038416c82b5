//! Corpus tokens stored as 8- or 4-bit codes with one scale per token: the
//! resident form of a large corpus, a quarter or an eighth of f32's bytes.
//!
//! A token `y` is stored as codes `c_k = round(y_k / s)` with `s = max |y|
//! / L` (`L = 127` for 8 bits, `7` for 4), so `|y_k - c_k s| <= s / 2`. A
//! document is scored by decoding its codes to f32 (`c_k s`, exact in f32)
//! into a scratch buffer that stays in L1/L2 and running the f32 MaxSim
//! kernel on it: the same kernel at every SIMD level, no integer path to
//! verify separately, and on CPUs without VNNI faster than integer dot
//! products. The scores are MaxSim against the decoded tokens; a search
//! that wants the f32 order scores its few leaders again on the f32 tokens.
//!
//! 4-bit tokens keep value `k` of the first half of the width in the low
//! nibble of byte `k` and value `k + half` in its high nibble (`half =
//! dim.div_ceil(2)`), each as `code + 8` (`1..=15`), so decoding is two
//! straight loops over the bytes with no interleaving.

use pulp::{Simd, WithSimd};
use thiserror::Error;

use crate::{Isa, MultiVectors, PackedQuery, maxsim_packed_before};

/// How many bits a code has.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CodeBits {
    /// Codes `-127..=127`, one byte per value.
    Eight,
    /// Codes `-7..=7`, two values per byte.
    Four,
}

impl CodeBits {
    /// The largest code: a token's scale is `max |y|` over this.
    pub fn max_code(self) -> i32 {
        match self {
            CodeBits::Eight => 127,
            CodeBits::Four => 7,
        }
    }

    /// Bytes of codes per token of width `dim`.
    pub fn bytes_per_token(self, dim: usize) -> usize {
        match self {
            CodeBits::Eight => dim,
            CodeBits::Four => dim.div_ceil(2),
        }
    }
}

/// What is wrong with the parts of a [`QuantizedVectors`].
#[derive(Debug, Clone, PartialEq, Error)]
pub enum QuantizedError {
    /// The width is zero.
    #[error("token width must be at least 1")]
    ZeroDim,
    /// The offsets do not start at 0, decrease, leave a set empty, or do
    /// not end at the number of scales.
    #[error("offsets must start at 0, grow by at least 1 per set and end at {n_tokens}")]
    BadOffsets {
        /// Tokens there are scales for.
        n_tokens: usize,
    },
    /// The codes are not `bytes_per_token` bytes per token.
    #[error("{found} code bytes for {n_tokens} tokens of {per_token} bytes")]
    CodeLength {
        /// Bytes found.
        found: usize,
        /// Tokens.
        n_tokens: usize,
        /// Bytes per token.
        per_token: usize,
    },
    /// A scale is negative or not finite.
    #[error("token {token} has scale {scale}, not a finite value >= 0")]
    BadScale {
        /// The token.
        token: usize,
        /// Its scale.
        scale: f32,
    },
    /// An int8 code is -128, outside `-127..=127`.
    #[error("code {index} is -128, outside -127..=127")]
    CodeOutOfRange {
        /// Its position in the codes.
        index: usize,
    },
}

/// A ragged set of token vectors stored as codes with one f32 scale per
/// token (see the module documentation), in the layout of
/// [`MultiVectors`]: one flat array plus offsets.
#[derive(Debug, Clone, PartialEq)]
pub struct QuantizedVectors {
    bits: CodeBits,
    dim: usize,
    codes: Vec<u8>,
    scales: Vec<f32>,
    offsets: Vec<usize>,
}

impl QuantizedVectors {
    /// Quantises every token of `set` (finite: [`MultiVectors::new`]
    /// refuses anything else).
    pub fn from_f32<T: AsRef<[f32]>>(set: &MultiVectors<T>, bits: CodeBits) -> Self {
        let dim = set.dim();
        let per_token = bits.bytes_per_token(dim);
        let mut codes = vec![0u8; set.n_tokens() * per_token];
        let mut scales = Vec::with_capacity(set.n_tokens());
        for (token, out) in set
            .tokens()
            .chunks_exact(dim)
            .zip(codes.chunks_exact_mut(per_token))
        {
            scales.push(encode(bits, token, out));
        }
        QuantizedVectors {
            bits,
            dim,
            codes,
            scales,
            offsets: set.offsets().to_vec(),
        }
    }

    /// Assembles stored parts: `codes` as [`QuantizedVectors::codes`] gives
    /// them, one scale per token, and token offsets as in
    /// [`MultiVectors::offsets`]. Every byte is a valid code, so only the
    /// structure and the scales are checked.
    pub fn from_parts(
        bits: CodeBits,
        dim: usize,
        codes: Vec<u8>,
        scales: Vec<f32>,
        offsets: Vec<usize>,
    ) -> Result<Self, QuantizedError> {
        if dim == 0 {
            return Err(QuantizedError::ZeroDim);
        }
        let n_tokens = scales.len();
        let ordered = offsets.first() == Some(&0)
            && offsets.last() == Some(&n_tokens)
            && offsets.windows(2).all(|pair| pair[0] < pair[1]);
        if !ordered || offsets.len() < 2 {
            return Err(QuantizedError::BadOffsets { n_tokens });
        }
        let per_token = bits.bytes_per_token(dim);
        if n_tokens.checked_mul(per_token) != Some(codes.len()) {
            return Err(QuantizedError::CodeLength {
                found: codes.len(),
                n_tokens,
                per_token,
            });
        }
        if let Some(token) = scales.iter().position(|s| !(s.is_finite() && *s >= 0.0)) {
            return Err(QuantizedError::BadScale {
                token,
                scale: scales[token],
            });
        }
        Ok(QuantizedVectors {
            bits,
            dim,
            codes,
            scales,
            offsets,
        })
    }

    /// Bits per code.
    pub fn bits(&self) -> CodeBits {
        self.bits
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

    /// Tokens over all sets.
    pub fn n_tokens(&self) -> usize {
        self.scales.len()
    }

    /// Tokens of set `i`.
    ///
    /// # Panics
    ///
    /// If `i >= len()`.
    #[track_caller]
    pub fn token_count(&self, i: usize) -> usize {
        self.offsets[i + 1] - self.offsets[i]
    }

    /// All codes, `[n_tokens, bits.bytes_per_token(dim)]` bytes.
    pub fn codes(&self) -> &[u8] {
        &self.codes
    }

    /// One scale per token.
    pub fn scales(&self) -> &[f32] {
        &self.scales
    }

    /// Token offsets, `len() + 1` of them.
    pub fn offsets(&self) -> &[usize] {
        &self.offsets
    }

    /// Bytes of storage: codes, scales and offsets.
    pub fn bytes(&self) -> usize {
        self.codes.len() + 4 * self.scales.len() + 8 * self.offsets.len()
    }

    /// Set `i` decoded into `out` (resized to `[tokens, dim]`): each code
    /// times its token's scale.
    ///
    /// # Panics
    ///
    /// If `i >= len()`.
    #[track_caller]
    pub fn decode_into(&self, isa: Isa, i: usize, out: &mut Vec<f32>) {
        let (first, end) = (self.offsets[i], self.offsets[i + 1]);
        let per_token = self.bits.bytes_per_token(self.dim);
        out.resize((end - first) * self.dim, 0.0);
        isa.dispatch(DecodeOp {
            bits: self.bits,
            dim: self.dim,
            codes: &self.codes[first * per_token..end * per_token],
            scales: &self.scales[first..end],
            out,
        });
    }

    /// The code bytes of set `i` (for prefetching).
    ///
    /// # Panics
    ///
    /// If `i >= len()`.
    #[track_caller]
    pub fn set_codes(&self, i: usize) -> &[u8] {
        let per_token = self.bits.bytes_per_token(self.dim);
        &self.codes[self.offsets[i] * per_token..self.offsets[i + 1] * per_token]
    }

    /// Appends the sets of `other` (same width and bits).
    ///
    /// # Panics
    ///
    /// If the widths or the bits differ.
    #[track_caller]
    pub fn append(&mut self, other: &QuantizedVectors) {
        assert_eq!(self.dim, other.dim, "appending sets of another width");
        assert_eq!(self.bits, other.bits, "appending sets of other bits");
        let base = self.n_tokens();
        self.codes.extend_from_slice(&other.codes);
        self.scales.extend_from_slice(&other.scales);
        self.offsets
            .extend(other.offsets[1..].iter().map(|o| base + o));
    }
}

/// MaxSim of a packed query against set `doc` of `tokens`, decoded into
/// `scratch` first; `next` is streamed into the cache meanwhile (as in
/// [`maxsim_packed_before`]).
///
/// # Panics
///
/// If `doc` is out of range or the widths differ.
#[track_caller]
pub fn maxsim_quantized(
    isa: Isa,
    query: &PackedQuery,
    tokens: &QuantizedVectors,
    doc: usize,
    scratch: &mut Vec<f32>,
    next: &[f32],
) -> f32 {
    assert_eq!(query.dim(), tokens.dim(), "query and corpus widths differ");
    tokens.decode_into(isa, doc, scratch);
    maxsim_packed_before(isa, query, scratch, next)
}

/// Encodes one token into `out` and returns its scale.
fn encode(bits: CodeBits, token: &[f32], out: &mut [u8]) -> f32 {
    let max_code = bits.max_code();
    let scale = token.iter().fold(0.0f32, |m, v| m.max(v.abs())) / max_code as f32;
    let code = |v: f32| -> i32 {
        if scale > 0.0 {
            ((v / scale).round_ties_even() as i32).clamp(-max_code, max_code)
        } else {
            0
        }
    };
    match bits {
        CodeBits::Eight => {
            for (o, &v) in out.iter_mut().zip(token) {
                *o = code(v) as i8 as u8;
            }
        }
        CodeBits::Four => {
            let (low, high) = token.split_at(token.len().div_ceil(2));
            for (k, o) in out.iter_mut().enumerate() {
                let hi = high.get(k).map_or(0, |&v| code(v));
                *o = ((code(low[k]) + 8) as u8) | (((hi + 8) as u8) << 4);
            }
        }
    }
    scale
}

/// Decoding as a pulp operation: plain loops the compiler vectorises at
/// the level's width.
struct DecodeOp<'a> {
    bits: CodeBits,
    dim: usize,
    codes: &'a [u8],
    scales: &'a [f32],
    out: &'a mut [f32],
}

impl WithSimd for DecodeOp<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: Simd>(self, _simd: S) {
        let DecodeOp {
            bits,
            dim,
            codes,
            scales,
            out,
        } = self;
        let per_token = bits.bytes_per_token(dim);
        for ((token, codes), &scale) in out
            .chunks_exact_mut(dim)
            .zip(codes.chunks_exact(per_token))
            .zip(scales)
        {
            match bits {
                CodeBits::Eight => {
                    for (o, &c) in token.iter_mut().zip(codes) {
                        *o = f32::from(c as i8) * scale;
                    }
                }
                CodeBits::Four => {
                    let (low, high) = token.split_at_mut(per_token);
                    for (o, &c) in low.iter_mut().zip(codes) {
                        *o = ((c & 15) as i32 - 8) as f32 * scale;
                    }
                    for (o, &c) in high.iter_mut().zip(codes) {
                        *o = ((c >> 4) as i32 - 8) as f32 * scale;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::naive;

    fn sets() -> impl Strategy<Value = (usize, Vec<usize>, Vec<f32>)> {
        (1usize..40, prop::collection::vec(1usize..6, 1..5)).prop_flat_map(|(dim, counts)| {
            let n: usize = counts.iter().sum();
            (
                Just(dim),
                Just(counts),
                prop::collection::vec(-2.0f32..2.0, n * dim),
            )
        })
    }

    proptest! {
        /// Every decoded value is within half a step of the original, for
        /// both code widths, every level and odd widths too.
        #[test]
        fn decoding_is_within_half_a_step((dim, counts, values) in sets()) {
            let set = MultiVectors::new(values, dim, &counts).unwrap();
            for bits in [CodeBits::Eight, CodeBits::Four] {
                let coded = QuantizedVectors::from_f32(&set, bits);
                for isa in Isa::available() {
                    let mut out = Vec::new();
                    for i in 0..set.len() {
                        coded.decode_into(isa, i, &mut out);
                        let original = set.get(i);
                        prop_assert_eq!(out.len(), original.len());
                        let first = set.offsets()[i];
                        for (t, (a, b)) in out.chunks(dim).zip(original.chunks(dim)).enumerate() {
                            let scale = coded.scales()[first + t];
                            for (x, y) in a.iter().zip(b) {
                                prop_assert!((x - y).abs() <= scale * 0.5 * (1.0 + 1e-5));
                            }
                        }
                    }
                }
            }
        }

        /// The score is the naive MaxSim of the decoded tokens at every
        /// level.
        #[test]
        fn scores_are_maxsim_of_the_decoded_tokens(
            (dim, counts, values) in sets(),
            query in prop::collection::vec(-1.0f32..1.0, 1..80),
        ) {
            let q_tokens = (query.len() / dim).max(1);
            let mut query = query;
            query.resize(q_tokens * dim, 0.25);
            let set = MultiVectors::new(values, dim, &counts).unwrap();
            for bits in [CodeBits::Eight, CodeBits::Four] {
                let coded = QuantizedVectors::from_f32(&set, bits);
                for isa in Isa::available() {
                    let packed = PackedQuery::new(&query, dim);
                    let mut scratch = Vec::new();
                    let mut decoded = Vec::new();
                    for doc in 0..set.len() {
                        let score = maxsim_quantized(isa, &packed, &coded, doc, &mut scratch, &[]);
                        coded.decode_into(Isa::scalar(), doc, &mut decoded);
                        let expected = naive::maxsim(&query, &decoded, dim);
                        prop_assert!((score - expected).abs() <= 1e-4 * (1.0 + expected.abs()),
                            "{isa:?} {bits:?}: {score} vs {expected}");
                    }
                }
            }
        }
    }

    #[test]
    fn parts_round_trip_and_bad_parts_are_refused() {
        let set = MultiVectors::new(vec![0.5f32, -1.0, 0.25, 0.0, 0.0, 0.0], 3, &[1, 1]).unwrap();
        let coded = QuantizedVectors::from_f32(&set, CodeBits::Four);
        // An all-zero token has scale 0 and decodes to zeros.
        assert_eq!(coded.scales()[1], 0.0);
        let rebuilt = QuantizedVectors::from_parts(
            CodeBits::Four,
            3,
            coded.codes().to_vec(),
            coded.scales().to_vec(),
            coded.offsets().to_vec(),
        )
        .unwrap();
        assert_eq!(rebuilt, coded);
        let parts = |codes: Vec<u8>, scales: Vec<f32>, offsets: Vec<usize>| {
            QuantizedVectors::from_parts(CodeBits::Four, 3, codes, scales, offsets)
        };
        assert_eq!(
            parts(vec![0; 3], vec![1.0, 1.0], vec![0, 1, 2]),
            Err(QuantizedError::CodeLength {
                found: 3,
                n_tokens: 2,
                per_token: 2
            })
        );
        assert_eq!(
            parts(vec![0; 4], vec![1.0, f32::NAN], vec![0, 1, 2])
                .unwrap_err()
                .to_string(),
            "token 1 has scale NaN, not a finite value >= 0"
        );
        for offsets in [vec![0, 2, 2], vec![1, 2], vec![0, 1], vec![0]] {
            assert_eq!(
                parts(vec![0; 4], vec![1.0, 1.0], offsets),
                Err(QuantizedError::BadOffsets { n_tokens: 2 })
            );
        }
        assert_eq!(
            QuantizedVectors::from_parts(CodeBits::Eight, 0, vec![], vec![], vec![0]),
            Err(QuantizedError::ZeroDim)
        );
    }

    #[test]
    fn appended_sets_decode_as_before() {
        let a = MultiVectors::new(vec![0.1f32, 0.2, 0.3, 0.4], 2, &[2]).unwrap();
        let b = MultiVectors::new(vec![-0.5f32, 0.5], 2, &[1]).unwrap();
        let mut joined = QuantizedVectors::from_f32(&a, CodeBits::Eight);
        joined.append(&QuantizedVectors::from_f32(&b, CodeBits::Eight));
        let alone = QuantizedVectors::from_f32(&b, CodeBits::Eight);
        let (mut x, mut y) = (Vec::new(), Vec::new());
        joined.decode_into(Isa::scalar(), 1, &mut x);
        alone.decode_into(Isa::scalar(), 0, &mut y);
        assert_eq!(x, y);
        assert_eq!(joined.offsets(), &[0, 2, 3]);
    }
}

//! A row-major matrix stored as 8-bit integers with one scale per row, and
//! the block of dot products between f32 rows and it: LEMUR's approximate
//! scores `f W^T` at a quarter of the bytes of f32 `W`. With the query
//! rows quantised as well ([`Int8Matrix::quantise_queries`]), the dot
//! products are exact integer sums ([`dot_products_int8_exact`]). Corpus
//! tokens quantised the same way ([`Int8Vectors`]) get an integer MaxSim
//! ([`maxsim_int8`]), the reduced pass of an exact rerank's filter.
//!
//! The approximate scores only pick the `k'` candidates that the exact
//! MaxSim then reranks, so they tolerate quantisation noise; what they do
//! not tolerate is bandwidth: a single query streams all of `W`, 82 MB at
//! f32 on W10k. As int8 that is 20 MB, which also fits in a server CPU's
//! L3 cache.
//!
//! # Layout
//!
//! Each row is `q_k = round(w_k / scale)` with `scale = max_k |w_k| / 127`,
//! stored as the byte `q_k + 128`, in blocks of 64 values held by 16 `u32`
//! words: value `16 j + l` of a block is byte `j` of word `l`. Byte `j` of
//! a vector of words is then 16 consecutive values (or a run of them, for
//! vectors narrower than 16 lanes), so the kernel decodes with a shift, a
//! mask and an exact integer-to-float trick, and multiplies by plain f32
//! feature vectors. Rows are zero-padded to whole blocks.

use pulp::{Simd, WithSimd};

use crate::{Isa, QuantizedError};

mod integer;
#[cfg(target_arch = "x86_64")]
mod maxsim_vnni;
mod tokens;
#[cfg(target_arch = "x86_64")]
mod vnni;

pub use integer::{Int8Queries, dot_products_int8_exact};
pub use tokens::{
    Int8Doc, Int8Vectors, MAX_INT8_DIM, PackedQueryInt8, int8_accelerated, maxsim_int8,
    maxsim_int8_before,
};

/// Values per block: one byte of each of [`BLOCK_WORDS`] words.
const BLOCK_VALUES: usize = 64;
/// `u32` words per block: the widest vector (AVX-512, 16 lanes), so one
/// layout serves every level.
const BLOCK_WORDS: usize = 16;
/// The offset that makes a code a byte: `q + 128` is in `1..=255`.
const CODE_OFFSET: i32 = 128;
/// `2^23` as f32 bits: OR-ing a byte into the mantissa gives `2^23 + byte`
/// exactly, and subtracting [`DECODE_BIAS`] leaves the signed code.
const MAGIC: u32 = 0x4B00_0000;
/// `2^23 + 128`, exactly representable.
const DECODE_BIAS: f32 = 8_388_736.0;

/// A `[n_rows, dim]` matrix quantised to int8 with one f32 scale per row
/// (see the module documentation for the layout).
#[derive(Debug, Clone, PartialEq)]
pub struct Int8Matrix {
    words: Vec<u32>,
    scales: Vec<f32>,
    dim: usize,
}

impl Int8Matrix {
    /// Quantises a row-major `[values.len() / dim, dim]` matrix: each row
    /// to the nearest multiple of its own `max |w| / 127` (ties to even; an
    /// all-zero row gets scale 0).
    ///
    /// # Panics
    ///
    /// If `dim == 0`, `values` is not whole rows, or a value is not finite.
    #[track_caller]
    pub fn from_f32(values: &[f32], dim: usize) -> Self {
        assert!(dim > 0, "dim must be at least 1");
        assert!(
            values.len().is_multiple_of(dim),
            "values are not whole rows of width {dim}"
        );
        assert!(
            values.iter().all(|v| v.is_finite()),
            "values must be finite"
        );
        let per_row = words_per_row(dim);
        let n_rows = values.len() / dim;
        let mut words = vec![0u32; n_rows * per_row];
        let mut scales = Vec::with_capacity(n_rows);
        for (row, out) in values
            .chunks_exact(dim)
            .zip(words.chunks_exact_mut(per_row))
        {
            let scale = scale_of(row);
            scales.push(scale);
            for k in 0..per_row * 4 {
                let code = row.get(k).map_or(0, |&v| code_of(v, scale));
                let (word, byte) = position(k);
                out[word] |= ((code + CODE_OFFSET) as u32) << (8 * byte);
            }
        }
        Int8Matrix { words, scales, dim }
    }

    /// Assembles a matrix from row-major codes (`-127..=127`, as
    /// [`Int8Matrix::codes`] gives them row by row) and one scale per row
    /// (finite, `>= 0`): what a saved matrix is read back through.
    pub fn from_codes(codes: &[i8], scales: Vec<f32>, dim: usize) -> Result<Self, QuantizedError> {
        if dim == 0 {
            return Err(QuantizedError::ZeroDim);
        }
        let n_rows = scales.len();
        if n_rows.checked_mul(dim) != Some(codes.len()) {
            return Err(QuantizedError::CodeLength {
                found: codes.len(),
                n_tokens: n_rows,
                per_token: dim,
            });
        }
        if let Some(row) = scales.iter().position(|s| !(s.is_finite() && *s >= 0.0)) {
            return Err(QuantizedError::BadScale {
                token: row,
                scale: scales[row],
            });
        }
        if let Some(index) = codes.iter().position(|&c| c == i8::MIN) {
            return Err(QuantizedError::CodeOutOfRange { index });
        }
        let per_row = words_per_row(dim);
        let mut words = vec![0u32; n_rows * per_row];
        for (row, out) in codes.chunks_exact(dim).zip(words.chunks_exact_mut(per_row)) {
            for k in 0..per_row * 4 {
                let code = row.get(k).map_or(0, |&c| i32::from(c));
                let (word, byte) = position(k);
                out[word] |= ((code + CODE_OFFSET) as u32) << (8 * byte);
            }
        }
        Ok(Int8Matrix { words, scales, dim })
    }

    /// Rows.
    pub fn n_rows(&self) -> usize {
        self.scales.len()
    }

    /// Columns.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Columns after padding to whole 64-value blocks: the width
    /// [`dot_products_int8`] wants its f32 rows in ([`Int8Matrix::pad_rows`]).
    pub fn padded_dim(&self) -> usize {
        words_per_row(self.dim) * 4
    }

    /// Bytes of storage, scales included (about a quarter of f32's).
    pub fn bytes(&self) -> usize {
        (self.words.len() + self.scales.len()) * 4
    }

    /// Row `i`'s scale.
    ///
    /// # Panics
    ///
    /// If `i >= n_rows()`.
    #[track_caller]
    pub fn scale(&self, i: usize) -> f32 {
        self.scales[i]
    }

    /// Row `i`'s codes, `-127..=127`, in column order.
    ///
    /// # Panics
    ///
    /// If `i >= n_rows()`.
    #[track_caller]
    pub fn codes(&self, i: usize) -> Vec<i8> {
        row_bytes(&self.words, i, self.dim)
            .map(|byte| (byte as i32 - CODE_OFFSET) as i8)
            .collect()
    }

    /// Row `i` back in f32: each code times the row's scale.
    ///
    /// # Panics
    ///
    /// If `i >= n_rows()`.
    #[track_caller]
    pub fn row(&self, i: usize) -> Vec<f32> {
        let scale = self.scales[i];
        self.codes(i)
            .into_iter()
            .map(|code| f32::from(code) * scale)
            .collect()
    }

    /// Appends the rows of `other` (same width).
    ///
    /// # Panics
    ///
    /// If the widths differ.
    #[track_caller]
    pub fn append(&mut self, other: &Int8Matrix) {
        assert_eq!(self.dim, other.dim, "appending rows of another width");
        self.words.extend_from_slice(&other.words);
        self.scales.extend_from_slice(&other.scales);
    }

    /// Copies row-major `[n, dim]` f32 rows into `[n, padded_dim()]`, zeros
    /// in the padding, ready for [`dot_products_int8`].
    ///
    /// # Panics
    ///
    /// If `rows` is not whole rows of width `dim()`.
    #[track_caller]
    pub fn pad_rows(&self, rows: &[f32]) -> Vec<f32> {
        assert!(
            rows.len().is_multiple_of(self.dim),
            "rows are not whole rows of width {}",
            self.dim
        );
        let padded = self.padded_dim();
        let mut out = vec![0.0; rows.len() / self.dim * padded];
        for (row, out) in rows
            .chunks_exact(self.dim)
            .zip(out.chunks_exact_mut(padded))
        {
            out[..self.dim].copy_from_slice(row);
        }
        out
    }
}

/// The scale of a row's codes: `max |v| / 127` (0 for an all-zero row).
fn scale_of(row: &[f32]) -> f32 {
    row.iter().fold(0.0f32, |m, v| m.max(v.abs())) / 127.0
}

/// `value`'s code at `scale`: the nearest integer to `value / scale` (ties
/// to even), within `-127..=127`; 0 at scale 0.
fn code_of(value: f32, scale: f32) -> i32 {
    if scale > 0.0 {
        (round(value / scale) as i32).clamp(-127, 127)
    } else {
        0
    }
}

/// How int8 storage keeps `row` (as [`Int8Matrix`] rows and
/// [`Int8Vectors`] tokens are stored): its scale and its codes, the value
/// `k` standing for `codes[k] * scale`. What error bounds and tests on
/// int8 scores are computed from.
pub fn quantise(row: &[f32]) -> (f32, Vec<i8>) {
    let scale = scale_of(row);
    let codes = row.iter().map(|&v| code_of(v, scale) as i8).collect();
    (scale, codes)
}

/// `x` rounded to the nearest integer (ties to even) for `|x| < 2^22`:
/// adding and subtracting `1.5 * 2^23` drops the fraction in the FPU's
/// rounding mode, without the libm call `f32::round` is on baseline x86-64.
fn round(x: f32) -> f32 {
    const SHIFT: f32 = 12_582_912.0;
    (x + SHIFT) - SHIFT
}

/// Words per stored row: whole blocks.
fn words_per_row(dim: usize) -> usize {
    dim.div_ceil(BLOCK_VALUES) * BLOCK_WORDS
}

/// The stored bytes of row `i` of `words` (a matrix of width `dim`), in
/// column order.
fn row_bytes(words: &[u32], i: usize, dim: usize) -> impl Iterator<Item = u8> + '_ {
    let per_row = words_per_row(dim);
    let row = &words[i * per_row..(i + 1) * per_row];
    (0..dim).map(move |k| {
        let (word, byte) = position(k);
        (row[word] >> (8 * byte)) as u8
    })
}

/// Where column `k` lives: its word in the row and its byte in the word.
fn position(k: usize) -> (usize, usize) {
    let (block, within) = (k / BLOCK_VALUES, k % BLOCK_VALUES);
    (
        block * BLOCK_WORDS + within % BLOCK_WORDS,
        within / BLOCK_WORDS,
    )
}

/// `out[i, j] = scale_j * <a_i, q_j>` for every row `a_i` of `a` (f32,
/// `[n_a, b.padded_dim()]`, see [`Int8Matrix::pad_rows`]) and the `n` rows
/// `q_j` of `b` from `first` (`out` is `[n_a, n]`, row-major), at `isa`'s
/// width. Codes are decoded to f32 exactly; each dot product is summed in
/// the same order whatever the number of `a` rows, so a query's scores do
/// not depend on what it is batched with. Sequential: callers split the
/// work across threads.
///
/// # Panics
///
/// If `a` is not whole padded rows, the row range is outside `b` or `out`
/// has the wrong length.
#[track_caller]
pub fn dot_products_int8(
    isa: Isa,
    a: &[f32],
    b: &Int8Matrix,
    first: usize,
    n: usize,
    out: &mut [f32],
) {
    let padded = b.padded_dim();
    assert!(
        a.len().is_multiple_of(padded),
        "a is not rows of the padded width {padded}"
    );
    assert!(first + n <= b.n_rows(), "rows outside the matrix");
    assert_eq!(out.len(), a.len() / padded * n, "out is not [a rows, n]");
    let per_row = words_per_row(b.dim);
    isa.dispatch(Int8DotsOp {
        a,
        words: &b.words[first * per_row..(first + n) * per_row],
        scales: &b.scales[first..first + n],
        per_row,
        out,
    });
}

/// The block of dot products as a pulp operation.
struct Int8DotsOp<'a> {
    a: &'a [f32],
    words: &'a [u32],
    scales: &'a [f32],
    per_row: usize,
    out: &'a mut [f32],
}

impl WithSimd for Int8DotsOp<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) {
        let per_row = self.per_row;
        let padded = per_row * 4;
        let (n_a, n_b) = (self.a.len() / padded, self.scales.len());
        // Each decoded vector of `W` feeds `A` queries, so a wide tile
        // amortises the decoding; `A * B` accumulators, one word vector,
        // one decoded vector and three constants fit the register file.
        let wide_b = if n_a >= 4 {
            if S::REGISTER_COUNT >= 32 { 4 } else { 2 }
        } else {
            // One query: four rows of `W` in flight at once.
            4
        };
        let mut j = 0;
        while j < n_b {
            let group_b = if n_b - j >= wide_b { wide_b } else { 1 };
            let words = &self.words[j * per_row..(j + group_b) * per_row];
            let scales = &self.scales[j..j + group_b];
            let mut i = 0;
            while i < n_a {
                let group_a = if n_a - i >= 4 { 4 } else { 1 };
                let tile = Tile {
                    a: &self.a[i * padded..(i + group_a) * padded],
                    words,
                    per_row,
                };
                // The first pass over a group of `W` rows asks for the
                // group after next: one query's scores wait on reading `W`
                // (docs/PERFORMANCE.md has the with/without figures).
                if i == 0 {
                    let ahead = (j + group_b + 2 * wide_b).min(n_b);
                    let from = (j + group_b + wide_b).min(ahead);
                    crate::prefetch(&self.words[from * per_row..ahead * per_row]);
                }
                let out = &mut self.out[i * n_b + j..];
                match (group_a, group_b) {
                    (4, 4) => tile_block::<S, 4, 4>(simd, &tile, scales, out, n_b),
                    (4, 2) => tile_block::<S, 4, 2>(simd, &tile, scales, out, n_b),
                    (4, _) => tile_block::<S, 4, 1>(simd, &tile, scales, out, n_b),
                    (_, 4) => tile_block::<S, 1, 4>(simd, &tile, scales, out, n_b),
                    (_, 2) => tile_block::<S, 1, 2>(simd, &tile, scales, out, n_b),
                    _ => tile_block::<S, 1, 1>(simd, &tile, scales, out, n_b),
                }
                i += group_a;
            }
            j += group_b;
        }
    }
}

/// `A` padded f32 rows and `B` rows of codes.
struct Tile<'a> {
    a: &'a [f32],
    words: &'a [u32],
    per_row: usize,
}

/// Byte `j` of every word, as the signed codes in f32 (exact: the byte is
/// OR-ed into the mantissa of `2^23` and the bias subtracted). A function,
/// not a closure, so that `#[inline(always)]` puts it inside pulp's
/// `#[target_feature]` context.
#[inline(always)]
fn decode<S: Simd>(simd: S, words: S::u32s, j: usize) -> S::f32s {
    let byte = match j {
        0 => simd.and_u32s(words, simd.splat_u32s(0xFF)),
        3 => simd.wrapping_dyn_shr_u32s(words, simd.splat_u32s(24)),
        _ => simd.and_u32s(
            simd.wrapping_dyn_shr_u32s(words, simd.splat_u32s(8 * j as u32)),
            simd.splat_u32s(0xFF),
        ),
    };
    let biased = simd.transmute_f32s_u32s(simd.or_u32s(byte, simd.splat_u32s(MAGIC)));
    simd.sub_f32s(biased, simd.splat_f32s(DECODE_BIAS))
}

/// `A` rows of `a` against `B` rows of codes, written to
/// `out[x * stride + r]` times row `r`'s scale.
#[inline(always)]
fn tile_block<S: Simd, const A: usize, const B: usize>(
    simd: S,
    tile: &Tile<'_>,
    scales: &[f32],
    out: &mut [f32],
    stride: usize,
) {
    let lanes = S::F32_LANES;
    // Word vectors per block, and f32 vectors per byte position of a block.
    let per_block = BLOCK_WORDS / lanes;
    let padded = tile.per_row * 4;
    let a: [&[S::f32s]; A] =
        core::array::from_fn(|x| S::as_simd_f32s(&tile.a[x * padded..(x + 1) * padded]).0);
    let b: [&[S::u32s]; B] = core::array::from_fn(|r| {
        S::as_simd_u32s(&tile.words[r * tile.per_row..(r + 1) * tile.per_row]).0
    });
    let mut acc = [[simd.splat_f32s(0.0); B]; A];
    // Indexing by `c` because every one of the `B` rows is read at `c`.
    #[allow(clippy::needless_range_loop)]
    for c in 0..b[0].len() {
        // Word vector `c` is part `h` of block `c / per_block`; its byte
        // `j` holds the values at f32 vector `base + j * per_block`.
        let h = c % per_block;
        let base = (c - h) * 4 + h;
        for r in 0..B {
            let words = b[r][c];
            for j in 0..4 {
                let values = decode(simd, words, j);
                for x in 0..A {
                    acc[x][r] = simd.mul_add_e_f32s(a[x][base + j * per_block], values, acc[x][r]);
                }
            }
        }
    }
    for (x, row) in acc.iter().enumerate() {
        for (r, &sum) in row.iter().enumerate() {
            out[x * stride + r] = scales[r] * simd.reduce_sum_f32s(sum);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_codes_rebuild_the_matrix_and_bad_ones_are_refused() {
        let dim = 70;
        let values: Vec<f32> = (0..3 * dim)
            .map(|i| ((i * 13 % 97) as f32 - 40.0) / 3.0)
            .collect();
        let matrix = Int8Matrix::from_f32(&values, dim);
        let codes: Vec<i8> = (0..3).flat_map(|i| matrix.codes(i)).collect();
        let scales: Vec<f32> = (0..3).map(|i| matrix.scale(i)).collect();
        assert_eq!(
            Int8Matrix::from_codes(&codes, scales.clone(), dim),
            Ok(matrix)
        );
        assert!(matches!(
            Int8Matrix::from_codes(&codes[1..], scales.clone(), dim),
            Err(QuantizedError::CodeLength { .. })
        ));
        let mut bad = codes.clone();
        bad[5] = i8::MIN;
        assert_eq!(
            Int8Matrix::from_codes(&bad, scales.clone(), dim),
            Err(QuantizedError::CodeOutOfRange { index: 5 })
        );
        let mut bad_scales = scales;
        bad_scales[2] = f32::INFINITY;
        assert!(matches!(
            Int8Matrix::from_codes(&codes, bad_scales, dim),
            Err(QuantizedError::BadScale { token: 2, .. })
        ));
    }

    #[test]
    fn codes_round_trip_within_half_a_step() {
        let dim = 70;
        let values: Vec<f32> = (0..3 * dim)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) / 7.0)
            .collect();
        let matrix = Int8Matrix::from_f32(&values, dim);
        assert_eq!(matrix.n_rows(), 3);
        assert_eq!(matrix.padded_dim(), 128);
        for (i, row) in values.chunks_exact(dim).enumerate() {
            let scale = matrix.scale(i);
            let max = row.iter().fold(0.0f32, |m, v| m.max(v.abs()));
            assert_eq!(scale, max / 127.0);
            let codes = matrix.codes(i);
            assert!(codes.iter().any(|&c| c.unsigned_abs() == 127));
            for (&v, decoded) in row.iter().zip(matrix.row(i)) {
                assert!((v - decoded).abs() <= scale * 0.5001, "{v} vs {decoded}");
            }
        }
    }

    #[test]
    fn a_zero_row_has_zero_scale_and_codes() {
        let matrix = Int8Matrix::from_f32(&[0.0; 5], 5);
        assert_eq!(matrix.scale(0), 0.0);
        assert_eq!(matrix.codes(0), vec![0; 5]);
    }

    #[test]
    fn appending_keeps_rows_and_scales() {
        let mut matrix = Int8Matrix::from_f32(&[1.0, -2.0], 2);
        matrix.append(&Int8Matrix::from_f32(&[4.0, 0.5], 2));
        assert_eq!(matrix.n_rows(), 2);
        assert_eq!(matrix.codes(0), vec![64, -127]);
        assert_eq!(matrix.row(0)[1], -2.0);
        assert_eq!(matrix.codes(1), vec![127, 16]);
        assert_eq!(matrix.bytes(), 2 * (16 + 1) * 4);
    }

    #[test]
    #[should_panic(expected = "finite")]
    fn non_finite_values_are_refused() {
        Int8Matrix::from_f32(&[1.0, f32::NAN], 2);
    }
}

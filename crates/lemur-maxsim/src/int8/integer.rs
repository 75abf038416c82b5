//! Query rows quantised to int8 as well, and exact integer dot products
//! against an [`Int8Matrix`]: one `vpdpbusd` (AVX512-VNNI) multiplies and
//! adds 64 byte pairs, where decoding `W` to f32 costs four instructions
//! per 16 values. For one query, the scores are then bound by reading `W`
//! rather than by arithmetic.
//!
//! A query row is stored like a row of `W` (same blocks, same byte
//! positions) with its own scale, but as signed bytes. The sum over a
//! row pair, `sum_k a_k (q_k + 128)`, is exact in `i32` (at most
//! `2048 * 127 * 255` in magnitude per 2048 columns), and
//! `sum_k a_k q_k = that - 128 * sum_k a_k`. Every level computes the same
//! integers and turns them into f32 the same way, so the scores are bit
//! for bit the same on every CPU.

use pulp::{Simd, WithSimd};

use super::{
    BLOCK_WORDS, CODE_OFFSET, Int8Matrix, code_of, position, row_bytes, scale_of, words_per_row,
};
use crate::{Isa, Level};

/// Rows quantised to int8 with one scale each, laid out for integer dot
/// products against an [`Int8Matrix`] of the same width
/// ([`Int8Matrix::quantise_queries`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Int8Queries {
    words: Vec<u32>,
    scales: Vec<f32>,
    /// Each row's sum of codes, for the `+ 128` offset of `W`'s bytes.
    sums: Vec<i32>,
    dim: usize,
}

impl Int8Queries {
    /// Rows.
    pub fn n_rows(&self) -> usize {
        self.scales.len()
    }

    /// Row `i`'s scale (`max |a| / 127`; 0 for an all-zero row).
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
            .map(|byte| byte as i8)
            .collect()
    }
}

impl Int8Matrix {
    /// Quantises row-major f32 rows of this matrix's width for
    /// [`dot_products_int8_exact`]: each row to the nearest multiple of its
    /// own `max |a| / 127` (ties to even).
    ///
    /// # Panics
    ///
    /// If `rows` is not whole rows of width `dim()` or holds a value that
    /// is not finite.
    #[track_caller]
    pub fn quantise_queries(&self, rows: &[f32]) -> Int8Queries {
        let dim = self.dim;
        assert!(
            rows.len().is_multiple_of(dim),
            "rows are not whole rows of width {dim}"
        );
        assert!(rows.iter().all(|v| v.is_finite()), "values must be finite");
        let per_row = words_per_row(dim);
        let n_rows = rows.len() / dim;
        let mut words = vec![0u32; n_rows * per_row];
        let mut scales = Vec::with_capacity(n_rows);
        let mut sums = Vec::with_capacity(n_rows);
        for (row, out) in rows.chunks_exact(dim).zip(words.chunks_exact_mut(per_row)) {
            let scale = scale_of(row);
            let mut sum = 0i32;
            for (k, &value) in row.iter().enumerate() {
                let code = code_of(value, scale);
                sum += code;
                let (word, byte) = position(k);
                out[word] |= (code as i8 as u8 as u32) << (8 * byte);
            }
            scales.push(scale);
            sums.push(sum);
        }
        Int8Queries {
            words,
            scales,
            sums,
            dim,
        }
    }
}

/// `out[i, j] = scale_i * scale_j * <codes of a_i, codes of q_j>` for
/// every row of `a` and the `n` rows `q_j` of `b` from `first` (`out` is
/// `[a.n_rows(), n]`, row-major). The integer sums are exact and turned
/// into f32 as `(sum as f32) * scale_i * scale_j`, so every level gives
/// the same bits: `vpdpbusd` at the AVX-512 level on CPUs with
/// AVX512-VNNI, a plain integer loop elsewhere. Sequential: callers split
/// the work across threads.
///
/// # Panics
///
/// If the widths differ, the row range is outside `b` or `out` has the
/// wrong length.
#[track_caller]
pub fn dot_products_int8_exact(
    isa: Isa,
    a: &Int8Queries,
    b: &Int8Matrix,
    first: usize,
    n: usize,
    out: &mut [f32],
) {
    assert_eq!(a.dim, b.dim, "matrix widths differ");
    assert!(first + n <= b.n_rows(), "rows outside the matrix");
    assert_eq!(out.len(), a.n_rows() * n, "out is not [a rows, n]");
    let per_row = words_per_row(b.dim);
    let operands = Operands {
        a: &a.words,
        a_sums: &a.sums,
        a_scales: &a.scales,
        b: &b.words[first * per_row..(first + n) * per_row],
        b_scales: &b.scales[first..first + n],
        per_row,
    };
    #[cfg(target_arch = "x86_64")]
    if isa.level() == Level::Avx512 && super::vnni::available() {
        super::vnni::dot_products(operands, out);
        return;
    }
    isa.dispatch(IntegerDotsOp { operands, out });
}

/// Both sides of a block of integer dot products (rows of `per_row`
/// words, a multiple of [`BLOCK_WORDS`]).
#[derive(Clone, Copy)]
pub(super) struct Operands<'a> {
    pub(super) a: &'a [u32],
    pub(super) a_sums: &'a [i32],
    pub(super) a_scales: &'a [f32],
    pub(super) b: &'a [u32],
    pub(super) b_scales: &'a [f32],
    pub(super) per_row: usize,
}

impl Operands<'_> {
    /// The score of row `i` of `a` against row `j` of `b`, from the raw
    /// sum `sum_k a_k (q_k + 128)`.
    #[inline(always)]
    pub(super) fn finish(&self, i: usize, j: usize, raw: i32) -> f32 {
        let exact = raw - CODE_OFFSET * self.a_sums[i];
        exact as f32 * self.a_scales[i] * self.b_scales[j]
    }
}

/// The portable block of integer dot products as a pulp operation.
struct IntegerDotsOp<'a> {
    operands: Operands<'a>,
    out: &'a mut [f32],
}

impl WithSimd for IntegerDotsOp<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: Simd>(self, _simd: S) {
        let ops = self.operands;
        debug_assert!(ops.per_row.is_multiple_of(BLOCK_WORDS));
        let n_b = ops.b_scales.len();
        for (i, a_row) in ops.a.chunks_exact(ops.per_row).enumerate() {
            for (j, b_row) in ops.b.chunks_exact(ops.per_row).enumerate() {
                let raw: i32 = a_row.iter().zip(b_row).map(|(&a, &b)| word_dot(a, b)).sum();
                self.out[i * n_b + j] = ops.finish(i, j, raw);
            }
        }
    }
}

/// The four signed-by-unsigned byte products of two words, summed (what
/// `vpdpbusd` adds per lane).
#[inline(always)]
pub(super) fn word_dot(signed: u32, unsigned: u32) -> i32 {
    (0..4)
        .map(|j| (signed >> (8 * j)) as u8 as i8 as i32 * ((unsigned >> (8 * j)) as u8 as i32))
        .sum()
}

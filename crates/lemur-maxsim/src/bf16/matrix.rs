//! A dense row-major matrix stored as bf16, and the block of dot products
//! between two such matrices: LEMUR's approximate scores `f W^T` at half
//! the bytes of f32 `W`, which is what a single query's latency is bound by
//! (the scoring stage streams all of `W` once per query batch).

use pulp::{Simd, WithSimd};

use super::{from_bf16, pair};
use crate::Isa;
use crate::aligned::AlignedU32;

/// A `[n_rows, dim]` matrix rounded to bf16, each row `dim.div_ceil(2)`
/// bf16 pairs (the operand layout of `vdpbf16ps`; an odd width's last pair
/// has a zero high half), starting on a cache line so that rows whose
/// length is a multiple of 64 bytes are whole AMX tile rows.
#[derive(Debug, Clone, PartialEq)]
pub struct Bf16Matrix {
    pairs: AlignedU32,
    n_rows: usize,
    dim: usize,
    /// The same values as AMX right-hand tiles, `[blocks of 16 rows][pairs]
    /// [16 rows]` (padding rows zero), when [`Bf16Matrix::with_tile_layout`]
    /// built them; otherwise empty.
    tiles: AlignedU32,
}

impl Bf16Matrix {
    /// Rounds a row-major `[values.len() / dim, dim]` matrix to bf16.
    ///
    /// # Panics
    ///
    /// If `dim == 0` or `values` is not whole rows.
    #[track_caller]
    pub fn from_f32(values: &[f32], dim: usize) -> Self {
        assert!(dim > 0, "dim must be at least 1");
        assert!(
            values.len().is_multiple_of(dim),
            "values are not whole rows of width {dim}"
        );
        let per_row = dim.div_ceil(2);
        let mut pairs = AlignedU32::zeroed(values.len() / dim * per_row);
        for (out, row) in pairs
            .chunks_exact_mut(per_row)
            .zip(values.chunks_exact(dim))
        {
            for (p, slot) in out.iter_mut().enumerate() {
                *slot = pair(row, p);
            }
        }
        Bf16Matrix {
            pairs,
            n_rows: values.len() / dim,
            dim,
            tiles: AlignedU32::default(),
        }
    }

    /// Adds a second copy of the rows laid out as AMX tiles, so that
    /// [`dot_products_bf16`] with this matrix as `a` (the query features)
    /// runs on AMX where the CPU has it. Worth it for the query side of a
    /// product only: the copy is as large as the matrix.
    pub fn with_tile_layout(mut self) -> Self {
        let per_row = self.pairs_per_row();
        let blocks = self.n_rows.div_ceil(super::BLOCK);
        let mut tiles = AlignedU32::zeroed(blocks * per_row * super::BLOCK);
        for (i, row) in self.pairs.chunks_exact(per_row).enumerate() {
            let (block, lane) = (i / super::BLOCK, i % super::BLOCK);
            for (p, &pair) in row.iter().enumerate() {
                tiles[(block * per_row + p) * super::BLOCK + lane] = pair;
            }
        }
        self.tiles = tiles;
        self
    }

    /// Rows.
    pub fn n_rows(&self) -> usize {
        self.n_rows
    }

    /// Columns.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// bf16 pairs per row.
    pub fn pairs_per_row(&self) -> usize {
        self.dim.div_ceil(2)
    }

    /// Bytes of storage (half of f32's for even widths).
    pub fn bytes(&self) -> usize {
        self.pairs.len() * size_of::<u32>()
    }

    /// Rows `first..first + n` as pairs.
    ///
    /// # Panics
    ///
    /// If the range is outside the matrix.
    #[track_caller]
    pub fn rows(&self, first: usize, n: usize) -> &[u32] {
        let per_row = self.pairs_per_row();
        &self.pairs[first * per_row..(first + n) * per_row]
    }

    /// Row `i` back in f32 (the rounded values).
    ///
    /// # Panics
    ///
    /// If `i >= n_rows()`.
    #[track_caller]
    pub fn row(&self, i: usize) -> Vec<f32> {
        self.rows(i, 1)
            .iter()
            .flat_map(|&p| [from_bf16(p as u16), from_bf16((p >> 16) as u16)])
            .take(self.dim)
            .collect()
    }

    /// Appends the rows of `other` (same width). A tile layout is dropped
    /// (build it again with [`Bf16Matrix::with_tile_layout`]).
    ///
    /// # Panics
    ///
    /// If the widths differ.
    #[track_caller]
    pub fn append(&mut self, other: &Bf16Matrix) {
        assert_eq!(self.dim, other.dim, "appending rows of another width");
        self.pairs.extend_from_slice(&other.pairs);
        self.n_rows += other.n_rows;
        self.tiles = AlignedU32::default();
    }
}

/// `out[i, j] = <a_i, b_{first + j}>` for every row `i` of `a` and the `n`
/// rows of `b` from `first` (`out` is `[a.n_rows(), n]`, row-major). At
/// the AVX-512 level on a CPU with AMX-BF16, when `a` has its tile layout
/// ([`Bf16Matrix::with_tile_layout`]) and the width is a multiple of 32,
/// this is AMX tile products (for every `n`, so that a score does not
/// depend on how `b` is split into calls); else on a CPU with AVX512-BF16
/// `vdpbf16ps`, pairs of products added straight into f32 lanes; elsewhere bf16 values are
/// widened to f32 in registers (a shift or a mask each) and
/// multiplied-added in f32 at `isa`'s width. All three compute the same exact
/// products; only the summation order differs. Reading half the bytes of f32 is what makes this faster than
/// an f32 GEMM when the product is memory-bound (a few query rows against
/// a large `W`). Sequential: callers split the work across threads.
///
/// # Panics
///
/// If the widths differ, the row range is outside `b` or `out` has the
/// wrong length.
#[track_caller]
pub fn dot_products_bf16(
    isa: Isa,
    a: &Bf16Matrix,
    b: &Bf16Matrix,
    first: usize,
    n: usize,
    out: &mut [f32],
) {
    assert_eq!(a.dim, b.dim, "matrix widths differ");
    assert!(first + n <= b.n_rows, "rows outside the matrix");
    assert_eq!(out.len(), a.n_rows * n, "out is not [a rows, n]");
    #[cfg(target_arch = "x86_64")]
    if isa.level() == crate::Level::Avx512
        && !a.tiles.is_empty()
        && super::amx::fits_width(a.pairs_per_row())
        && super::amx::available()
    {
        super::amx::dot_products(&a.tiles, a.n_rows, b.rows(first, n), a.pairs_per_row(), out);
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if isa.level() == crate::Level::Avx512 && super::avx512::available() {
        super::avx512::dot_products(&a.pairs, b.rows(first, n), a.pairs_per_row(), out);
        return;
    }
    isa.dispatch(DotsOp {
        a: &a.pairs,
        b: b.rows(first, n),
        per_row: a.pairs_per_row(),
        out,
    });
}

/// The block of dot products as a pulp operation.
struct DotsOp<'a> {
    a: &'a [u32],
    b: &'a [u32],
    per_row: usize,
    out: &'a mut [f32],
}

impl WithSimd for DotsOp<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) {
        let per_row = self.per_row;
        let (n_a, n_b) = (self.a.len() / per_row, self.b.len() / per_row);
        // Each group of `b` rows (a stretch of W) is read from memory once
        // while every `a` row (the queries, small and cache-resident)
        // passes over it. 2 x 4 accumulators plus the widened operands fit
        // AVX2's 16 registers.
        let mut j = 0;
        while j < n_b {
            let group_b = if j + 4 <= n_b { 4 } else { 1 };
            let b = &self.b[j * per_row..(j + group_b) * per_row];
            let mut i = 0;
            while i < n_a {
                let group_a = if i + 2 <= n_a { 2 } else { 1 };
                let a = &self.a[i * per_row..(i + group_a) * per_row];
                let out = &mut self.out[i * n_b + j..];
                match (group_a, group_b) {
                    (2, 4) => dot_block::<S, 2, 4>(simd, a, b, per_row, out, n_b),
                    (2, _) => dot_block::<S, 2, 1>(simd, a, b, per_row, out, n_b),
                    (_, 4) => dot_block::<S, 1, 4>(simd, a, b, per_row, out, n_b),
                    _ => dot_block::<S, 1, 1>(simd, a, b, per_row, out, n_b),
                }
                i += group_a;
            }
            j += group_b;
        }
    }
}

/// A vector of bf16 pairs as two f32 vectors: the low halves shifted up,
/// the high halves masked (both exact). A function, not a closure, so that
/// `#[inline(always)]` puts it inside pulp's `#[target_feature]` context.
#[inline(always)]
fn widen<S: Simd>(simd: S, pairs: S::u32s) -> (S::f32s, S::f32s) {
    (
        simd.transmute_f32s_u32s(simd.wrapping_dyn_shl_u32s(pairs, simd.splat_u32s(16))),
        simd.transmute_f32s_u32s(simd.and_u32s(pairs, simd.splat_u32s(0xFFFF_0000))),
    )
}

/// One step of every dot product of the block.
#[inline(always)]
fn accumulate<S: Simd, const A: usize, const B: usize>(
    simd: S,
    acc: &mut [[S::f32s; B]; A],
    a_pairs: [S::u32s; A],
    b_pairs: [S::u32s; B],
) {
    let a_wide: [(S::f32s, S::f32s); A] = core::array::from_fn(|x| widen(simd, a_pairs[x]));
    for (r, &pairs) in b_pairs.iter().enumerate() {
        let (lo, hi) = widen(simd, pairs);
        for (x, &(a_lo, a_hi)) in a_wide.iter().enumerate() {
            acc[x][r] = simd.mul_add_e_f32s(a_lo, lo, acc[x][r]);
            acc[x][r] = simd.mul_add_e_f32s(a_hi, hi, acc[x][r]);
        }
    }
}

/// `A` rows of `a` against `B` rows of `b`, written to `out[x * stride + r]`.
#[inline(always)]
fn dot_block<S: Simd, const A: usize, const B: usize>(
    simd: S,
    a: &[u32],
    b: &[u32],
    per_row: usize,
    out: &mut [f32],
    stride: usize,
) {
    let a_rows: [&[u32]; A] = core::array::from_fn(|x| &a[x * per_row..(x + 1) * per_row]);
    let b_rows: [&[u32]; B] = core::array::from_fn(|r| &b[r * per_row..(r + 1) * per_row]);
    let mut acc = [[simd.splat_f32s(0.0); B]; A];
    let a_vecs: [(&[S::u32s], &[u32]); A] = core::array::from_fn(|x| S::as_simd_u32s(a_rows[x]));
    let b_vecs: [(&[S::u32s], &[u32]); B] = core::array::from_fn(|r| S::as_simd_u32s(b_rows[r]));
    for c in 0..a_vecs[0].0.len() {
        let a_pairs = core::array::from_fn(|x| a_vecs[x].0[c]);
        let b_pairs = core::array::from_fn(|r| b_vecs[r].0[c]);
        accumulate(simd, &mut acc, a_pairs, b_pairs);
    }
    if !a_vecs[0].1.is_empty() {
        // The partial loads fill the missing lanes with zeros.
        let a_pairs = core::array::from_fn(|x| simd.partial_load_u32s(a_vecs[x].1));
        let b_pairs = core::array::from_fn(|r| simd.partial_load_u32s(b_vecs[r].1));
        accumulate(simd, &mut acc, a_pairs, b_pairs);
    }
    for (x, row) in acc.iter().enumerate() {
        for (r, &sum) in row.iter().enumerate() {
            out[x * stride + r] = simd.reduce_sum_f32s(sum);
        }
    }
}

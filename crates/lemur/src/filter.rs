//! The f32 candidates at the bytes of bf16 or int8
//! ([`WeightPrecision::Bf16Filter`], [`WeightPrecision::Int8Filter`]): the
//! error bounds. `shortlist.rs` applies them.
//!
//! A reduced pass over `W` scores every document approximately and keeps a
//! shortlist; an error bound on those scores says which documents could
//! still be among the `k'` best by their f32 score, and only those rows of
//! the f32 `W` are read again. For one query that is the reduced `W` (a
//! half or a quarter of f32's bytes) plus a few hundred f32 rows, and the
//! candidates are the ones scoring all of `W` in f32 gives (up to f32
//! rounding, which separates two scores by far less than the bound).
//!
//! The bound. For query features `f`, their rounding `f~ = f - e` and a
//! row `w` of `W` with its rounding `w~ = w - d`:
//!
//! `f.w - f~.w~ = f.d + e.w~`, so `|f.w - f~.w~| <= |f| |d| + |e| |w~|`
//! (Cauchy-Schwarz). The f32 score is a sum of `h` products in some order
//! (faer, or the rescoring's dot product), within `gamma_h = h u / (1 - h u)`
//! of its exact value times the product of the norms; `u = 2^-23` covers
//! any rounding mode, not only round to nearest.
//!
//! - bf16 (AMX or `vdpbf16ps`): the reduced score is a sum of `h` products
//!   too, and the instructions read denormal inputs as zero and flush
//!   denormal products and sums ([`flushed`]). The row norms enter as
//!   their maxima over `W`, so one margin `b` per query bounds
//!   `|s32 - s16|` for every row.
//! - int8 (one scale per row and per query, exact integer sums): the
//!   integer sum is turned into f32 and multiplied by the two scales, three
//!   roundings within `gamma_3 |f~| |w~|`. Rows are quantised to their own
//!   largest value, so their residuals differ far more than bf16's: the
//!   norms are kept per row and each row gets its own margin `b_j`, linear
//!   in its three norms ([`Margins`]).
//!
//! The rule. Each row's f32 score lies in `[s - b_j, s + b_j]`. Let `t` be
//! the `k'`-th largest lower end: `k'` rows have f32 scores of at least
//! `t`, so every row of the true top `k'` (by f32 score) has an upper end
//! of at least `t`; the others cannot be among them. With one margin for
//! every row that is the rows within `2b` of the `k'`-th best score.
//!
//! [`WeightPrecision::Bf16Filter`]: crate::WeightPrecision::Bf16Filter
//! [`WeightPrecision::Int8Filter`]: crate::WeightPrecision::Int8Filter

use lemur_maxsim::bf16::{from_bf16, to_bf16};
use lemur_maxsim::int8::quantise;

/// f32's rounding unit, doubled so that directed rounding is covered too.
const UNIT: f64 = f32::EPSILON as f64;
/// The largest error one flushed denormal product or sum can add.
const FLUSHED: f64 = f32::MIN_POSITIVE as f64;
/// Slack for the f64 norms themselves (relative).
pub(crate) const NORM_SLACK: f64 = 1e-9;

/// `gamma_n = n u / (1 - n u)`: the relative error bound of a sum of `n`
/// products in f32, in any order and any rounding mode.
pub(crate) fn gamma(n: usize) -> f64 {
    let n = n as f64;
    n * UNIT / (1.0 - n * UNIT)
}

/// The row norms the margin needs, as maxima over `W`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct FilterBounds {
    /// `max |w|`, `max |w~|` and `max |w - w~|` over the rows.
    most: Norms,
    /// The row width `h`.
    width: usize,
}

impl FilterBounds {
    /// The maxima over the rows of a row-major `[n, width]` `weights`.
    pub(crate) fn new(weights: &[f32], width: usize) -> Self {
        let most = weights
            .chunks_exact(width)
            .map(Norms::of)
            .fold(Norms::ZERO, |most, row| most.max(&row));
        FilterBounds { most, width }
    }

    /// Widens the maxima to cover appended rows as well.
    pub(crate) fn append(&mut self, added: &FilterBounds) {
        self.most = self.most.max(&added.most);
    }

    /// `b`: a bound on `|s32 - s16|` for `features` against any row.
    pub(crate) fn margin(&self, features: &[f32]) -> f64 {
        let query = Norms::of(features);
        let most = &self.most;
        let rounding = query.exact * most.residual + query.residual * most.rounded;
        let summation =
            gamma(self.width) * (query.rounded * most.rounded + query.exact * most.exact);
        let flushed = flushed(self.width, query.rounded, most.rounded);
        (rounding + summation) * (1.0 + NORM_SLACK) + flushed
    }
}

/// How far each row's reduced score can lie from its f32 score, for one
/// query.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Margins<'a> {
    /// One margin for every row.
    Same(f64),
    /// Row `j`'s margin is `exact |w_j| + rounded |w~_j| + residual
    /// |w_j - w~_j|` (its norms from `rows`), times the norm slack, plus
    /// `FLUSHED` for the roundings of results near the smallest normal;
    /// `most` holds each norm's maximum over the rows.
    PerRow {
        exact: f64,
        rounded: f64,
        residual: f64,
        rows: &'a [Norms],
        most: Norms,
    },
}

impl Margins<'_> {
    /// Whether every margin is finite (features that overflow are not).
    pub(crate) fn is_finite(&self) -> bool {
        match *self {
            Margins::Same(margin) => margin.is_finite(),
            Margins::PerRow {
                exact,
                rounded,
                residual,
                ..
            } => exact.is_finite() && rounded.is_finite() && residual.is_finite(),
        }
    }

    /// Row `row`'s margin.
    pub(crate) fn of_row(&self, row: usize) -> f64 {
        match *self {
            Margins::Same(margin) => margin,
            Margins::PerRow { rows, .. } => self.for_norms(&rows[row]),
        }
    }

    /// The largest margin of any row.
    pub(crate) fn widest(&self) -> f64 {
        match *self {
            Margins::Same(margin) => margin,
            Margins::PerRow { most, .. } => self.for_norms(&most),
        }
    }

    /// The per-row margin of a row with these norms (the margin itself
    /// for one margin); all coefficients are non-negative, so the maxima
    /// give the widest.
    fn for_norms(&self, norms: &Norms) -> f64 {
        match *self {
            Margins::Same(margin) => margin,
            Margins::PerRow {
                exact,
                rounded,
                residual,
                ..
            } => {
                (exact * norms.exact + rounded * norms.rounded + residual * norms.residual)
                    * (1.0 + NORM_SLACK)
                    + FLUSHED
            }
        }
    }
}

/// The norms of every row of `W` and of its int8 rounding, for
/// [`WeightPrecision::Int8Filter`](crate::WeightPrecision::Int8Filter).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct RowBounds {
    rows: Vec<Norms>,
    /// Each norm's maximum over the rows.
    most: Norms,
    width: usize,
}

impl RowBounds {
    /// The norms of each row of a row-major `[n, width]` `weights`,
    /// quantised as [`Int8Matrix`](lemur_maxsim::int8::Int8Matrix) does.
    pub(crate) fn new(weights: &[f32], width: usize) -> Self {
        let rows: Vec<Norms> = weights.chunks_exact(width).map(Norms::of_int8).collect();
        let most = rows.iter().fold(Norms::ZERO, |most, row| most.max(row));
        RowBounds { rows, most, width }
    }

    /// Adds the rows of `added`.
    pub(crate) fn append(&mut self, added: &RowBounds) {
        self.rows.extend_from_slice(&added.rows);
        self.most = self.most.max(&added.most);
    }

    /// Each row's bound on `|s32 - s8|` for `features`: `|f| |d| + |e|
    /// |w~|` for the roundings, `gamma_h |f| |w|` for the f32 sum and
    /// `gamma_3 |f~| |w~|` for the int8 score's three roundings.
    pub(crate) fn margins(&self, features: &[f32]) -> Margins<'_> {
        let query = Norms::of_int8(features);
        Margins::PerRow {
            exact: gamma(self.width) * query.exact,
            rounded: query.residual + gamma(3) * query.rounded,
            residual: query.exact,
            rows: &self.rows,
            most: self.most,
        }
    }
}

/// The most that flushing can change a bf16 dot product of `n` products
/// of vectors with norms `x` and `y`. The bf16 instructions read denormal
/// inputs as zero (a product `x_i y_i` with `|x_i| < 2^-126` loses at most
/// `2^-126 |y_i|`, so the sum loses at most `2^-126 sqrt(n) (|x| + |y|)`)
/// and flush denormal products and partial sums (at most `2^-126` each).
pub(crate) fn flushed(n: usize, x: f64, y: f64) -> f64 {
    let n = n as f64;
    FLUSHED * (2.0 * n + n.sqrt() * (x + y))
}

/// A vector's f64 norms: exact, rounded to bf16, and of the residual.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Norms {
    pub(crate) exact: f64,
    pub(crate) rounded: f64,
    pub(crate) residual: f64,
}

impl Norms {
    /// All three norms zero: where maxima and sums start.
    pub(crate) const ZERO: Norms = Norms {
        exact: 0.0,
        rounded: 0.0,
        residual: 0.0,
    };

    /// Each norm the larger of the two.
    pub(crate) fn max(&self, other: &Norms) -> Norms {
        Norms {
            exact: self.exact.max(other.exact),
            rounded: self.rounded.max(other.rounded),
            residual: self.residual.max(other.residual),
        }
    }

    /// Each norm the sum of the two.
    pub(crate) fn add(&self, other: &Norms) -> Norms {
        Norms {
            exact: self.exact + other.exact,
            rounded: self.rounded + other.rounded,
            residual: self.residual + other.residual,
        }
    }

    /// The norms of `values` and of their bf16 rounding.
    pub(crate) fn of(values: &[f32]) -> Self {
        Norms::between(
            values,
            values.iter().map(|&v| f64::from(from_bf16(to_bf16(v)))),
        )
    }

    /// The norms of `values` and of their int8 rounding (one scale, as
    /// [`quantise`] rounds): codes times the scale are exact in f64.
    /// Values that are not finite give infinite or NaN norms.
    pub(crate) fn of_int8(values: &[f32]) -> Self {
        if !values.iter().all(|v| v.is_finite()) {
            return Norms {
                exact: f64::INFINITY,
                rounded: f64::INFINITY,
                residual: f64::INFINITY,
            };
        }
        let (scale, codes) = quantise(values);
        let scale = f64::from(scale);
        Norms::between(values, codes.iter().map(|&c| f64::from(c) * scale))
    }

    /// The norms of `values`, of `rounded` (the same number of values) and
    /// of their difference.
    pub(crate) fn between(values: &[f32], rounded: impl Iterator<Item = f64>) -> Self {
        let (mut exact, mut rounded_sum, mut residual) = (0.0f64, 0.0f64, 0.0f64);
        for (&v, r) in values.iter().zip(rounded) {
            let v = f64::from(v);
            exact += v * v;
            rounded_sum += r * r;
            residual += (v - r) * (v - r);
        }
        Norms {
            exact: exact.sqrt(),
            rounded: rounded_sum.sqrt(),
            residual: residual.sqrt(),
        }
    }
}

#[cfg(test)]
mod tests {
    use lemur_maxsim::Isa;
    use lemur_maxsim::bf16::{Bf16Matrix, dot_products_bf16};
    use lemur_maxsim::int8::{Int8Matrix, dot_products_int8_exact};
    use lemur_mlp::simd;

    use super::*;

    /// Uniform values in `[-1, 1)` from a fixed seed.
    fn values(seed: u64) -> impl FnMut() -> f32 {
        let mut state = seed;
        move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 40) as f32 / (1u64 << 23) as f32 - 1.0
        }
    }

    /// `|s32 - s8|` for every row of `rows` against `features` at every
    /// level this CPU has, each checked against its row's margin; returns
    /// the largest share of a margin used.
    fn check_int8_rows(rows: &[f32], features: &[f32], width: usize) -> f64 {
        let n_rows = rows.len() / width;
        let bounds = RowBounds::new(rows, width);
        let matrix = Int8Matrix::from_f32(rows, width);
        let queries = matrix.quantise_queries(features);
        let margins = bounds.margins(features);
        let mut most = 0.0f64;
        for isa in Isa::available() {
            let mut s8 = vec![0.0; n_rows];
            dot_products_int8_exact(isa, &queries, &matrix, 0, n_rows, &mut s8);
            for (j, row) in rows.chunks_exact(width).enumerate() {
                let error = (f64::from(simd::dot(features, row)) - f64::from(s8[j])).abs();
                let margin = margins.of_row(j);
                assert!(
                    error <= margin,
                    "{} row {j}: {error} > {margin}",
                    isa.level()
                );
                most = most.max(error / margin);
            }
        }
        most
    }

    /// Each row's int8 margin holds for the integer dot products at every
    /// level, for rows whose scales differ by orders of magnitude; a row
    /// with a small scale gets a small margin.
    #[test]
    fn the_row_margins_bound_the_integer_scores() {
        let (width, n_rows) = (203, 40);
        let mut value = values(0x2545_f491_4f6c_dd1d);
        let mut rows: Vec<f32> = Vec::with_capacity(n_rows * width);
        for j in 0..n_rows {
            let scale = 10f32.powi(j as i32 % 5 - 2);
            rows.extend((0..width).map(|_| value() * scale));
        }
        // One value far above the rest: a coarse scale for that row.
        rows[3 * width + 7] = 50.0;
        for _ in 0..6 {
            let features: Vec<f32> = (0..width).map(|_| value()).collect();
            check_int8_rows(&rows, &features, width);
            let bounds = RowBounds::new(&rows, width);
            let margins = bounds.margins(&features);
            assert!(margins.of_row(0) * 1000.0 < margins.of_row(4));
            assert!(margins.of_row(8) < margins.of_row(3));
        }
    }

    /// Features along a row's own residual reach the Cauchy-Schwarz term
    /// of its margin: the bound is tight, and still holds.
    #[test]
    fn the_row_margin_covers_a_residual_along_the_features() {
        let width = 256;
        let mut value = values(0x9e37_79b9_7f4a_7c15);
        // One large value makes the scale coarse, so the row's own
        // residual outweighs the features' rounding.
        let mut row: Vec<f32> = (0..width).map(|_| value()).collect();
        row[0] = 50.0;
        let (scale, codes) = quantise(&row);
        let residual: Vec<f32> = row
            .iter()
            .zip(&codes)
            .map(|(&w, &c)| (f64::from(w) - f64::from(c) * f64::from(scale)) as f32)
            .collect();
        let features: Vec<f32> = residual.iter().map(|&d| d * 1000.0).collect();
        let used = check_int8_rows(&row, &features, width);
        assert!(used > 0.5, "the margin is loose here: {used}");
    }

    /// The margin holds for the bf16 kernels at every level this CPU has.
    #[test]
    fn the_margin_bounds_the_kernels_scores() {
        let (width, n_rows) = (203, 40);
        let mut value = values(0x2545_f491_4f6c_dd1d);
        let rows: Vec<f32> = (0..n_rows * width).map(|_| value() * 0.1).collect();
        let bounds = FilterBounds::new(&rows, width);
        let rows16 = Bf16Matrix::from_f32(&rows, width);
        for _ in 0..6 {
            let features: Vec<f32> = (0..width).map(|_| value()).collect();
            let features16 = Bf16Matrix::from_f32(&features, width);
            let margin = bounds.margin(&features);
            for isa in Isa::available() {
                let mut s16 = vec![0.0; n_rows];
                dot_products_bf16(isa, &features16, &rows16, 0, n_rows, &mut s16);
                for (j, row) in rows.chunks_exact(width).enumerate() {
                    let s32 = f64::from(simd::dot(&features, row));
                    assert!(
                        (s32 - f64::from(s16[j])).abs() <= margin,
                        "{} row {j}",
                        isa.level()
                    );
                }
            }
        }
    }

    #[test]
    fn the_margin_covers_denormal_inputs_read_as_zero() {
        // A denormal feature (2^-127, exact in bf16) times a row value of
        // 2^100 is 2^-27 in f32; AVX512-BF16 and AMX read the feature as
        // zero. Rounding and summation terms are about 2^-49 here, so only
        // the inputs' flushing term covers the difference.
        let (row, feature) = (2f32.powi(100), 2f32.powi(-127));
        let bounds = FilterBounds::new(&[row], 1);
        let margin = bounds.margin(&[feature]);
        let s32 = f64::from(simd::dot(&[feature], &[row]));
        assert_eq!(s32, 2f64.powi(-27));
        let (features16, rows16) = (
            Bf16Matrix::from_f32(&[feature], 1),
            Bf16Matrix::from_f32(&[row], 1),
        );
        for isa in Isa::available() {
            let mut s16 = [f32::NAN];
            dot_products_bf16(isa, &features16, &rows16, 0, 1, &mut s16);
            assert!(
                (s32 - f64::from(s16[0])).abs() <= margin,
                "{}: {}",
                isa.level(),
                s16[0]
            );
        }
        assert!(margin < 2f64.powi(-24));
    }

    #[test]
    fn the_margin_covers_the_rounding_of_both_sides() {
        // One row [1 + 2^-8 - 2^-16] against features [1 + 2^-9]: both
        // round to 1.0 in bf16, so the bf16 score is 1.0 and the f32 one
        // 1.0059; the margin must be at least their difference.
        let row = [1.0 + 2f32.powi(-8) - 2f32.powi(-16)];
        let features = [1.0 + 2f32.powi(-9)];
        let bounds = FilterBounds::new(&row, 1);
        let exact = f64::from(row[0]) * f64::from(features[0]);
        assert!(bounds.margin(&features) >= exact - 1.0);
        assert!(bounds.margin(&features) < 2.0 * (exact - 1.0) + 1e-3);
    }
}

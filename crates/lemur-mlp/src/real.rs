//! The float types training runs in: f32 for real work, f64 so tests can
//! check gradients against finite differences.

use std::fmt::Debug;
use std::ops::{Add, AddAssign, Div, Mul, MulAssign, Neg, Sub, SubAssign};

use faer::linalg::matmul::matmul;
use faer::{Accum, MatMut, MatRef, Par};

/// Whether a row-major operand enters a product as is or transposed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// Use the matrix as stored.
    Plain,
    /// Use its transpose.
    Transposed,
}

/// A real float type with the operations training needs.
pub trait Real:
    Copy
    + Send
    + Sync
    + Debug
    + PartialOrd
    + Default
    + Add<Output = Self>
    + Sub<Output = Self>
    + Mul<Output = Self>
    + Div<Output = Self>
    + Neg<Output = Self>
    + AddAssign
    + SubAssign
    + MulAssign
    + 'static
{
    /// Converts from f64 (rounding for f32).
    fn from_f64(value: f64) -> Self;
    /// Converts to f64.
    fn to_f64(self) -> f64;
    /// Square root.
    fn sqrt(self) -> Self;
    /// `e^self`; f32 clamps `self` to `[-87, 88]` (never 0 or infinity,
    /// within 2 ulp inside).
    fn exp(self) -> Self;
    /// `ln(1 + self)`.
    fn ln_1p(self) -> Self;
    /// Hyperbolic tangent.
    fn tanh(self) -> Self;
    /// The error function.
    fn erf(self) -> Self;
    /// `out[m, n] = op(a) op(b)` for row-major operands, where `a` is stored
    /// `[a_rows, a_cols]` and `b` `[b_rows, b_cols]`; `par` is the number
    /// of threads faer may use inside this one product (1: sequential).
    #[allow(clippy::too_many_arguments)]
    fn gemm(
        out: &mut [Self],
        a: &[Self],
        a_shape: (usize, usize),
        a_op: Op,
        b: &[Self],
        b_shape: (usize, usize),
        b_op: Op,
        threads: usize,
    );
}

macro_rules! impl_real {
    ($t:ty, $erf:expr, $exp:expr) => {
        impl Real for $t {
            fn from_f64(value: f64) -> Self {
                value as $t
            }
            fn to_f64(self) -> f64 {
                self as f64
            }
            fn sqrt(self) -> Self {
                <$t>::sqrt(self)
            }
            fn exp(self) -> Self {
                $exp(self)
            }
            fn ln_1p(self) -> Self {
                <$t>::ln_1p(self)
            }
            fn tanh(self) -> Self {
                <$t>::tanh(self)
            }
            fn erf(self) -> Self {
                $erf(self)
            }
            fn gemm(
                out: &mut [Self],
                a: &[Self],
                a_shape: (usize, usize),
                a_op: Op,
                b: &[Self],
                b_shape: (usize, usize),
                b_op: Op,
                threads: usize,
            ) {
                assert_eq!(a.len(), a_shape.0 * a_shape.1, "a is not {a_shape:?}");
                assert_eq!(b.len(), b_shape.0 * b_shape.1, "b is not {b_shape:?}");
                let lhs = MatRef::from_row_major_slice(a, a_shape.0, a_shape.1);
                let lhs = if a_op == Op::Transposed {
                    lhs.transpose()
                } else {
                    lhs
                };
                let rhs = MatRef::from_row_major_slice(b, b_shape.0, b_shape.1);
                let rhs = if b_op == Op::Transposed {
                    rhs.transpose()
                } else {
                    rhs
                };
                assert_eq!(lhs.ncols(), rhs.nrows(), "inner dimensions differ");
                let (m, n) = (lhs.nrows(), rhs.ncols());
                assert_eq!(out.len(), m * n, "out is not [{m}, {n}]");
                if m == 0 || n == 0 {
                    return;
                }
                let par = if threads <= 1 {
                    Par::Seq
                } else {
                    Par::rayon(threads)
                };
                let dst = MatMut::from_row_major_slice_mut(out, m, n);
                matmul(dst, Accum::Replace, lhs, rhs, 1.0 as $t, par);
            }
        }
    };
}

// f32 takes the vectorising `exp` and `erf` (the activation's gradient
// runs on every hidden unit of every training row: a libm call there was a
// third of a training epoch); f64, for the gradient checks, takes libm's.
impl_real!(f32, crate::activation::erf, crate::simd::exp);
impl_real!(f64, libm::erf, f64::exp);

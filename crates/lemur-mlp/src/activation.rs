//! Element-wise activations and the row-wise LayerNorm.

/// The non-linearity applied after each block's LayerNorm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum Activation {
    /// Exact GELU, `0.5 x (1 + erf(x / sqrt 2))` (not the tanh form); the
    /// original's default.
    #[default]
    Gelu,
    /// `max(x, 0)`.
    Relu,
    /// `x * sigmoid(x)`.
    Silu,
    /// `x * tanh(softplus(x))`.
    Mish,
}

impl Activation {
    /// The name the original uses (`gelu`, `relu`, `silu`, `mish`).
    pub fn name(self) -> &'static str {
        match self {
            Activation::Gelu => "gelu",
            Activation::Relu => "relu",
            Activation::Silu => "silu",
            Activation::Mish => "mish",
        }
    }

    /// Parses a name produced by [`Activation::name`] (case-insensitive).
    pub fn from_name(name: &str) -> Option<Activation> {
        [
            Activation::Gelu,
            Activation::Relu,
            Activation::Silu,
            Activation::Mish,
        ]
        .into_iter()
        .find(|a| a.name().eq_ignore_ascii_case(name.trim()))
    }

    /// Applies the activation to every value in place.
    #[inline(always)]
    pub fn apply(self, values: &mut [f32]) {
        match self {
            Activation::Gelu => {
                for v in values.iter_mut() {
                    *v = gelu(*v);
                }
            }
            Activation::Relu => {
                for v in values.iter_mut() {
                    *v = v.max(0.0);
                }
            }
            Activation::Silu => {
                for v in values.iter_mut() {
                    *v /= 1.0 + crate::simd::exp(-*v);
                }
            }
            Activation::Mish => {
                for v in values.iter_mut() {
                    *v = mish(*v);
                }
            }
        }
    }
}

/// Exact-form GELU on f32.
#[inline(always)]
pub fn gelu(x: f32) -> f32 {
    0.5 * x * (1.0 + erf(x * std::f32::consts::FRAC_1_SQRT_2))
}

#[inline(always)]
fn mish(x: f32) -> f32 {
    // softplus(x) = ln(1 + e^x), which is x to f32 precision past 20.
    let softplus = if x > 20.0 { x } else { x.exp().ln_1p() };
    x * softplus.tanh()
}

/// The error function in f32, as a branch-free rational approximation that
/// the compiler vectorises (plain multiply-adds, not `mul_add`, which is a
/// library call without a compile-time FMA target) (libm's `erff` is a scalar call per element, and
/// GELU runs on every hidden unit of every token).
///
/// The coefficients are the classic minimax fit on `[-4, 4]` used by Eigen
/// and XLA; beyond that range `erf` is within 1.6e-8 of ±1, below f32's
/// resolution. Maximum absolute error against f64 `erf` is checked in the
/// tests.
#[inline(always)]
pub fn erf(x: f32) -> f32 {
    let x = x.clamp(-4.0, 4.0);
    let x2 = x * x;
    let mut p = -2.726_142_3e-10f32;
    p = p * x2 + 2.770_681_4e-8;
    p = p * x2 + -2.101_024e-6;
    p = p * x2 + -5.692_506_4e-5;
    p = p * x2 + -7.349_906_3e-4;
    p = p * x2 + -2.954_6e-3;
    p = p * x2 + -1.609_603_3e-2;
    let mut q = -1.456_607_2e-5f32;
    q = q * x2 + -2.133_740_6e-4;
    q = q * x2 + -1.682_827e-3;
    q = q * x2 + -7.373_329e-3;
    q = q * x2 + -1.426_474e-2;
    x * p / q
}

/// LayerNorm epsilon, the original's (PyTorch's default).
pub const LAYER_NORM_EPS: f32 = 1e-5;

/// Normalises one row in place to zero mean and unit (population) variance
/// with the original's epsilon ([`LAYER_NORM_EPS`]), then applies the
/// optional affine gain and bias.
#[inline(always)]
pub(crate) fn layer_norm(row: &mut [f32], affine: Option<(&[f32], &[f32])>) {
    crate::simd::layer_norm_with_eps(row, affine, LAYER_NORM_EPS);
}

//! Element-wise kernels (LayerNorm, softmax, `exp`) written as plain loops
//! over independent lanes, and [`dispatch`], which compiles such a loop
//! for the best SIMD level of the running CPU (pulp's runtime dispatch)
//! instead of the baseline x86-64 (SSE2) that the crate is built for.
//!
//! The loops keep `LANES` independent partial sums so the compiler can map
//! them onto vector registers without reassociating floating-point
//! additions on its own; results are deterministic for a given input
//! whatever the SIMD level.

/// Independent accumulators of a reduction: one AVX-512 register of f32.
const LANES: usize = 16;

/// Runs `f` compiled for the best instruction set this CPU has (AVX-512,
/// AVX2+FMA, ..., or scalar), so the element-wise loops inlined into it
/// are vectorised at that width. `f` must be small and `#[inline]`-able
/// for this to help; the result does not depend on the level chosen.
#[inline(always)]
pub fn dispatch<R>(f: impl FnOnce() -> R) -> R {
    // Callers pass `#[inline(always)] || ...`: a closure that is not
    // inlined into pulp's target-feature trampoline is compiled for the
    // baseline ISA and gains nothing.
    pulp::Arch::new().dispatch(f)
}

/// Sum of `values` with `LANES` partial sums (vectorisable, and the same
/// answer at every SIMD level).
#[inline(always)]
pub fn sum(values: &[f32]) -> f32 {
    let mut lanes = [0.0f32; LANES];
    let chunks = values.chunks_exact(LANES);
    let tail = chunks.remainder();
    for chunk in chunks {
        for (lane, v) in lanes.iter_mut().zip(chunk) {
            *lane += v;
        }
    }
    let mut total = 0.0f32;
    for v in lanes.iter().chain(tail) {
        total += v;
    }
    total
}

/// `<a, b>` over the shorter length, with `2 LANES` partial sums (two
/// vector registers of AVX-512, for two independent add chains); call it
/// inside [`dispatch`] to vectorise it.
#[inline(always)]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut lanes = [0.0f32; 2 * LANES];
    let (a_chunks, b_chunks) = (a.chunks_exact(2 * LANES), b.chunks_exact(2 * LANES));
    let tail = a_chunks.remainder().iter().zip(b_chunks.remainder());
    for (x, y) in a_chunks.zip(b_chunks) {
        for ((lane, x), y) in lanes.iter_mut().zip(x).zip(y) {
            *lane += x * y;
        }
    }
    let mut total = 0.0f32;
    for v in lanes {
        total += v;
    }
    for (x, y) in tail {
        total += x * y;
    }
    total
}

/// Largest value of a non-empty slice without NaN (vectorisable).
#[inline(always)]
fn max(values: &[f32]) -> f32 {
    let mut lanes = [f32::NEG_INFINITY; LANES];
    let chunks = values.chunks_exact(LANES);
    let tail = chunks.remainder();
    for chunk in chunks {
        for (lane, &v) in lanes.iter_mut().zip(chunk) {
            *lane = if v > *lane { v } else { *lane };
        }
    }
    let mut best = f32::NEG_INFINITY;
    for &v in lanes.iter().chain(tail) {
        if v > best {
            best = v;
        }
    }
    best
}

/// Normalises one row in place to zero mean and unit (population)
/// variance, `(x - mean) / sqrt(var + eps)`, then applies the optional
/// affine gain and bias. Call it inside [`dispatch`] to vectorise it.
#[inline(always)]
pub fn layer_norm_with_eps(row: &mut [f32], affine: Option<(&[f32], &[f32])>, eps: f32) {
    let n = row.len() as f32;
    let mean = sum(row) / n;
    let mut lanes = [0.0f32; LANES];
    let chunks = row.chunks_exact(LANES);
    let tail = chunks.remainder();
    for chunk in chunks {
        for (lane, v) in lanes.iter_mut().zip(chunk) {
            *lane += (v - mean) * (v - mean);
        }
    }
    let mut tail_sum = 0.0f32;
    for v in tail {
        tail_sum += (v - mean) * (v - mean);
    }
    let var = (lanes.iter().sum::<f32>() + tail_sum) / n;
    let inv_std = 1.0 / (var + eps).sqrt();
    match affine {
        Some((gain, bias)) => {
            for ((v, g), b) in row.iter_mut().zip(gain).zip(bias) {
                *v = (*v - mean) * inv_std * g + b;
            }
        }
        None => {
            for v in row.iter_mut() {
                *v = (*v - mean) * inv_std;
            }
        }
    }
}

/// `e^x` in f32 for `x` in `[-87, 88]` (clamped outside), within 2 ulp:
/// Cody-Waite reduction `x = n ln 2 + r`, a degree-6 polynomial for `e^r`
/// (Cephes' `expf` coefficients) and `2^n` built from its exponent bits.
/// Unlike `f32::exp`, a library call, it vectorises.
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    // 1.5 * 2^23: adding it rounds to the nearest integer (the sum has no
    // fraction bits left) without a `floor` call, and leaves that integer
    // in the low mantissa bits.
    const ROUND: f32 = 12_582_912.0;
    let x = x.clamp(-87.0, 88.0);
    let shifted = x * std::f32::consts::LOG2_E + ROUND;
    let n = shifted - ROUND;
    let r = x - n * 0.693_359_4 + n * 2.121_944_4e-4;
    let mut p = 1.987_569_1e-4f32;
    p = p * r + 1.398_2e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 0.166_666_65;
    p = p * r + 0.5;
    let e_r = p * r * r + r + 1.0;
    let n_bits = shifted.to_bits().wrapping_sub(ROUND.to_bits());
    let two_n = f32::from_bits(n_bits.wrapping_add(127) << 23);
    e_r * two_n
}

/// Softmax of a non-empty row in place: `e^(x - max) / sum`, with the
/// maximum subtracted so every exponent is at most zero. Call it inside
/// [`dispatch`] to vectorise it.
#[inline(always)]
pub fn softmax(row: &mut [f32]) {
    let max = max(row);
    for v in row.iter_mut() {
        *v = exp(*v - max);
    }
    let inv = 1.0 / sum(row);
    for v in row.iter_mut() {
        *v *= inv;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_is_within_two_ulp_of_f64() {
        let mut worst = 0.0f64;
        for i in 0..=200_000 {
            let x = -87.0 + 175.0 * i as f32 / 200_000.0;
            let want = (x as f64).exp();
            let got = exp(x) as f64;
            worst = worst.max(((got - want) / want).abs());
        }
        assert!(worst < 2.5e-7, "relative error {worst}");
        assert_eq!(exp(0.0), 1.0);
        assert!(exp(-1000.0) < 1e-37 && exp(-1000.0) >= 0.0);
    }

    #[test]
    fn dot_is_within_the_summation_bound_of_f64() {
        // Every length around the 32-value chunks, tails included.
        for len in 0..100 {
            let a: Vec<f32> = (0..len).map(|i| (i as f32 * 0.71).sin()).collect();
            let b: Vec<f32> = (0..len).map(|i| (i as f32 * 1.3).cos() * 3.0).collect();
            let want: f64 = a
                .iter()
                .zip(&b)
                .map(|(&x, &y)| f64::from(x) * f64::from(y))
                .sum();
            let magnitude: f64 = a
                .iter()
                .zip(&b)
                .map(|(&x, &y)| f64::from(x * y).abs())
                .sum();
            let got = dispatch(
                #[inline(always)]
                || dot(&a, &b),
            );
            let bound = len as f64 * f64::from(f32::EPSILON) * magnitude + 1e-30;
            assert!(
                (f64::from(got) - want).abs() <= bound,
                "len {len}: {got} vs {want}"
            );
            assert_eq!(got, dot(&a, &b), "the same sums at every level");
        }
    }

    #[test]
    fn softmax_and_layer_norm_match_their_definitions() {
        let mut row: Vec<f32> = (0..37).map(|i| (i as f32 * 0.37).sin() * 30.0).collect();
        let original = row.clone();
        dispatch(
            #[inline(always)]
            || softmax(&mut row),
        );
        let max = original.iter().copied().fold(f32::MIN, f32::max);
        let total: f64 = original.iter().map(|&v| ((v - max) as f64).exp()).sum();
        for (got, v) in row.iter().zip(&original) {
            let want = ((v - max) as f64).exp() / total;
            assert!((*got as f64 - want).abs() < 1e-6, "{got} vs {want}");
        }
        let mut row = original.clone();
        dispatch(
            #[inline(always)]
            || layer_norm_with_eps(&mut row, None, 1e-12),
        );
        let mean = row.iter().map(|&v| v as f64).sum::<f64>() / row.len() as f64;
        let var = row.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / row.len() as f64;
        assert!(mean.abs() < 1e-6 && (var - 1.0).abs() < 1e-5);
        assert_eq!(max_of(&[1.0, 5.0, -3.0]), 5.0);
    }

    fn max_of(values: &[f32]) -> f32 {
        max(values)
    }
}

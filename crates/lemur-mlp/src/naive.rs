//! The f64 reference forward pass the fast one is tested against.

use crate::{Activation, FeatureMap, QUERY_FEATURE_SCALE};

fn act(activation: Activation, x: f64) -> f64 {
    match activation {
        Activation::Gelu => 0.5 * x * (1.0 + libm::erf(x / std::f64::consts::SQRT_2)),
        Activation::Relu => x.max(0.0),
        Activation::Silu => x / (1.0 + (-x).exp()),
        Activation::Mish => x * (x.exp().ln_1p()).tanh(),
    }
}

fn layer_norm(row: &mut [f64], affine: Option<(&[f32], &[f32])>) {
    let n = row.len() as f64;
    let mean = row.iter().sum::<f64>() / n;
    let var = row.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n;
    let inv = 1.0 / (var + 1e-5).sqrt();
    for (i, v) in row.iter_mut().enumerate() {
        *v = (*v - mean) * inv;
        if let Some((gain, bias)) = affine {
            *v = *v * gain[i] as f64 + bias[i] as f64;
        }
    }
}

/// `psi(x)` of one token, in f64, by the definition.
pub fn psi(map: &FeatureMap, x: &[f32]) -> Vec<f64> {
    if let Some(projection) = map.projection() {
        let h = map.output_dim();
        let mut row: Vec<f64> = (0..h)
            .map(|j| {
                let z: f64 = x
                    .iter()
                    .enumerate()
                    .map(|(i, &xi)| xi as f64 * projection[i * h + j] as f64)
                    .sum();
                (2.0 / h as f64).sqrt() * act(Activation::Gelu, z)
            })
            .collect();
        layer_norm(&mut row, None);
        return row;
    }
    let mut current: Vec<f64> = x.iter().map(|&v| v as f64).collect();
    for block in map.blocks().expect("a learned map") {
        let mut next: Vec<f64> = (0..block.out_dim())
            .map(|o| {
                let w = &block.weight()[o * block.in_dim()..][..block.in_dim()];
                current
                    .iter()
                    .zip(w)
                    .map(|(&a, &b)| a * b as f64)
                    .sum::<f64>()
                    + block.bias()[o] as f64
            })
            .collect();
        layer_norm(&mut next, Some((block.ln_gain(), block.ln_bias())));
        next.iter_mut().for_each(|v| *v = act(map.activation(), *v));
        current = next;
    }
    current
}

/// Query features of one query (`[q, d]`): the scaled sum of `psi`.
pub fn query_feature(map: &FeatureMap, query: &[f32]) -> Vec<f64> {
    let mut sum = vec![0.0; map.output_dim()];
    for token in query.chunks_exact(map.input_dim()) {
        for (s, v) in sum.iter_mut().zip(psi(map, token)) {
            *s += v;
        }
    }
    sum.iter_mut()
        .for_each(|s| *s *= QUERY_FEATURE_SCALE as f64);
    sum
}

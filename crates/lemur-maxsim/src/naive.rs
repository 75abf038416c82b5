//! Naive reference implementations: the oracles every kernel is tested
//! against. Written for obviousness, accumulated in f64; never use them on a
//! hot path.

/// `sum over query tokens of max over document tokens of <x, c>`, in f64.
///
/// # Panics
///
/// If `dim == 0` or the document has no tokens.
#[track_caller]
pub fn maxsim(query: &[f32], doc: &[f32], dim: usize) -> f32 {
    assert!(dim >= 1 && !doc.is_empty());
    query
        .chunks_exact(dim)
        .map(|x| {
            doc.chunks_exact(dim)
                .map(|c| dot(x, c))
                .fold(f64::NEG_INFINITY, f64::max)
        })
        .sum::<f64>() as f32
}

/// The f64 dot product of two equal-length f32 slices.
pub fn dot(a: &[f32], b: &[f32]) -> f64 {
    a.iter().zip(b).map(|(&x, &y)| x as f64 * y as f64).sum()
}

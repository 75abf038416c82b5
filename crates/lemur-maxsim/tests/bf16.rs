//! bf16 storage and MaxSim against the f64 reference on the bf16-rounded
//! values, on every bf16 kernel this machine runs: AMX-BF16 (required when
//! /proc/cpuinfo advertises `amx_bf16` and `amx_tile`), AVX512-BF16
//! (required when it advertises `avx512_bf16`) and the generic kernel at
//! every SIMD level.

use lemur_maxsim::bf16::{
    Bf16Kernel, Bf16Matrix, Bf16Vectors, PackedQueryBf16, bf16_accelerated, dot_products_bf16,
    from_bf16, maxsim_bf16, maxsim_bf16_generic, rerank_bf16, to_bf16, token_maxima_bf16,
};
use lemur_maxsim::{Isa, MultiVectors};
use proptest::prelude::*;

fn rounded(values: &[f32]) -> Vec<f32> {
    values.iter().map(|&v| from_bf16(to_bf16(v))).collect()
}

/// f64 MaxSim of the rounded values, and the same sum over absolute
/// products (the scale of the rounding error).
fn reference(query: &[f32], doc: &[f32], dim: usize) -> (f64, f64) {
    let (query, doc) = (rounded(query), rounded(doc));
    let mut total = 0.0;
    let mut scale = 0.0;
    for q in query.chunks_exact(dim) {
        let mut best = f64::NEG_INFINITY;
        let mut best_abs = 0.0f64;
        for d in doc.chunks_exact(dim) {
            let dot: f64 = q.iter().zip(d).map(|(a, b)| *a as f64 * *b as f64).sum();
            let abs: f64 = q
                .iter()
                .zip(d)
                .map(|(a, b)| (*a as f64 * *b as f64).abs())
                .sum();
            best = best.max(dot);
            best_abs = best_abs.max(abs);
        }
        total += best;
        scale += best_abs;
    }
    (total, scale)
}

fn cpu_advertises(flags: &[&str]) -> bool {
    std::fs::read_to_string("/proc/cpuinfo").is_ok_and(|s| {
        s.lines()
            .find(|l| l.starts_with("flags"))
            .is_some_and(|l| flags.iter().all(|f| l.split_whitespace().any(|w| w == *f)))
    })
}

#[test]
fn the_accelerated_kernels_run_where_the_cpu_has_them() {
    let expected = [
        (Bf16Kernel::Avx512Bf16, &["avx512_bf16"][..]),
        (
            Bf16Kernel::Amx,
            &["amx_bf16", "amx_tile", "avx512_bf16"][..],
        ),
    ];
    for (kernel, flags) in expected {
        if cpu_advertises(flags) {
            assert!(
                kernel.is_available(),
                "/proc/cpuinfo has {flags:?} but the {} kernel is unavailable",
                kernel.name()
            );
        }
    }
    assert_eq!(
        bf16_accelerated(),
        Bf16Kernel::detect() != Bf16Kernel::Generic
    );
    for kernel in Bf16Kernel::available() {
        println!("lemur-isa-ran: {} (bf16)", kernel.name());
    }
}

#[test]
fn rounding_is_to_nearest_even() {
    assert_eq!(to_bf16(1.0), 0x3f80);
    // 1 + 2^-8 is halfway between two bf16 values: ties to even (down).
    assert_eq!(to_bf16(1.0 + 2f32.powi(-8)), 0x3f80);
    // 1 + 3 * 2^-8 is halfway too: ties to even (up).
    assert_eq!(to_bf16(1.0 + 3.0 * 2f32.powi(-8)), 0x3f82);
    assert_eq!(from_bf16(to_bf16(-2.5)), -2.5);
    for i in 0..10_000 {
        let x = (i as f32 * 0.731).sin() * 10f32.powi(i % 7 - 3);
        let back = from_bf16(to_bf16(x));
        assert!((back - x).abs() <= x.abs() * 2f32.powi(-8), "{x} -> {back}");
    }
}

/// `n` values in [-1, 1) from a xorshift stream: large inputs without
/// proptest generating (and shrinking) each value.
fn seeded_values(seed: u64, n: usize) -> Vec<f32> {
    let mut state = seed | 1;
    (0..n)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 40) as f32 / (1u64 << 23) as f32 - 1.0
        })
        .collect()
}

fn values(n: usize) -> impl Strategy<Value = Vec<f32>> {
    proptest::collection::vec(-1.0f32..1.0, n)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn maxsim_matches_the_reference_on_rounded_values(
        dim in prop::sample::select(vec![1usize, 2, 3, 7, 16, 31, 48, 64, 96, 100, 128, 129, 256]),
        q in 1usize..=70,
        n in 1usize..=70,
        seed in any::<u64>(),
    ) {
        let values = seeded_values(seed, (q + n) * dim);
        let (query, doc) = values.split_at(q * dim);
        let corpus = MultiVectors::new(doc.to_vec(), dim, &[n]).unwrap();
        let stored = Bf16Vectors::from_f32(&corpus);
        let packed = PackedQueryBf16::new(query, dim);
        let (want, scale) = reference(query, doc, dim);
        let tolerance = 1e-5 * scale + 1e-6;
        for kernel in Bf16Kernel::available() {
            let got = maxsim_bf16(&packed.clone().with_kernel(kernel), stored.get(0)) as f64;
            prop_assert!((got - want).abs() <= tolerance, "{} {} vs {}", kernel.name(), got, want);
        }
        for isa in Isa::available() {
            let generic = maxsim_bf16_generic(isa, &packed, stored.get(0)) as f64;
            prop_assert!((generic - want).abs() <= tolerance, "{} {} vs {}", isa.level(), generic, want);
            // Per token: each maximum against the reference of that token alone.
            let mut maxima = vec![f32::NAN; q];
            token_maxima_bf16(&packed.clone().with_isa(isa), stored.get(0), &mut maxima);
            for (i, token) in query.chunks_exact(dim).enumerate() {
                let (want, scale) = reference(token, doc, dim);
                let tolerance = 1e-5 * scale + 1e-6;
                prop_assert!((maxima[i] as f64 - want).abs() <= tolerance, "{} token {}", isa.level(), i);
            }
        }
    }

    #[test]
    fn dot_products_match_the_reference_on_rounded_values(
        dim in prop::sample::select(vec![1usize, 2, 3, 31, 32, 33, 64, 100, 128, 2048]),
        n_a in 1usize..=40,
        n_b in 1usize..=40,
        skip in 0usize..=3,
        tiled in any::<bool>(),
        seed in any::<u64>(),
    ) {
        let values = seeded_values(seed, (n_a + skip + n_b) * dim);
        let (a, b) = values.split_at(n_a * dim);
        // With the tile layout the AVX-512 level runs AMX where it can.
        let a = Bf16Matrix::from_f32(a, dim);
        let a = if tiled { a.with_tile_layout() } else { a };
        let b = Bf16Matrix::from_f32(b, dim);
        for isa in Isa::available() {
            let mut out = vec![f32::NAN; n_a * n_b];
            dot_products_bf16(isa, &a, &b, skip, n_b, &mut out);
            for i in 0..n_a {
                for j in 0..n_b {
                    let (x, y) = (a.row(i), b.row(skip + j));
                    let want: f64 = x.iter().zip(&y).map(|(p, q)| *p as f64 * *q as f64).sum();
                    let scale: f64 = x.iter().zip(&y).map(|(p, q)| (*p as f64 * *q as f64).abs()).sum();
                    let got = out[i * n_b + j] as f64;
                    prop_assert!((got - want).abs() <= 1e-5 * scale + 1e-6, "{} tiled {} [{},{}] {} vs {}", isa.level(), tiled, i, j, got, want);
                }
            }
        }
    }

    #[test]
    fn stored_values_are_the_rounded_ones(v in values(2 * 9)) {
        let set = MultiVectors::new(v.clone(), 9, &[2]).unwrap();
        let stored = Bf16Vectors::from_f32(&set);
        prop_assert_eq!(stored.token(0, 1), rounded(&v[9..]));
        prop_assert_eq!(stored.token_bytes(), 2 * 5 * 4);
        let matrix = Bf16Matrix::from_f32(&v, 9);
        prop_assert_eq!(matrix.row(1), rounded(&v[9..]));
        prop_assert_eq!(matrix.bytes(), 2 * 5 * 4);
    }
}

#[test]
fn rerank_orders_by_score_then_id() {
    let dim = 8;
    let docs: Vec<f32> = (0..6 * 3 * dim)
        .map(|i| ((i * 37 % 23) as f32 - 11.0) / 11.0)
        .collect();
    // Documents 4 and 5 repeat documents 0 and 1: equal scores, lower id first.
    let mut all = docs.clone();
    all.extend_from_slice(&docs[..2 * 3 * dim]);
    let corpus = MultiVectors::new(all, dim, &[3; 8]).unwrap();
    let stored = Bf16Vectors::from_f32(&corpus);
    let query: Vec<f32> = (0..4 * dim)
        .map(|i| ((i * 11 % 7) as f32 - 3.0) / 3.0)
        .collect();
    let packed = PackedQueryBf16::new(&query, dim);
    let candidates: Vec<u32> = (0..8).collect();
    let hits = rerank_bf16(&packed, &stored, &candidates, 8);
    assert_eq!(hits.len(), 8);
    for pair in hits.windows(2) {
        assert!(
            pair[0].score > pair[1].score
                || (pair[0].score == pair[1].score && pair[0].id < pair[1].id)
        );
    }
    for hit in &hits {
        assert_eq!(hit.score, maxsim_bf16(&packed, stored.get(hit.id as usize)));
    }
}

//! Every SIMD level against the naive f64 oracle.
//!
//! `cargo xtask test-isa` runs this file once per level with `LEMUR_ISA`
//! set to that level's name; without it every available level runs. Each
//! test prints `lemur-isa-ran: <level>` for the levels it exercised, and
//! fails if `LEMUR_REQUIRE_ISA` names a level this CPU or build lacks.

use lemur_maxsim::bf16::{
    Bf16Matrix, Bf16Vectors, PackedQueryBf16, dot_products_bf16, maxsim_bf16_generic,
    token_maxima_bf16,
};
use lemur_maxsim::int8::{
    Int8Matrix, Int8Vectors, PackedQueryInt8, dot_products_int8, dot_products_int8_exact,
    maxsim_int8, quantise,
};
use lemur_maxsim::{Isa, Level, MultiVectors, PackedQuery, Reranker, maxsim, maxsim_packed, naive};
use proptest::prelude::*;

/// The levels under test, with their labels.
fn levels() -> Vec<Isa> {
    let selected: Option<Vec<Level>> = std::env::var("LEMUR_ISA").ok().map(|names| {
        names
            .split(',')
            .filter(|n| !n.trim().is_empty())
            .map(|n| {
                Level::from_name(n).unwrap_or_else(|| panic!("unknown level {n:?} in LEMUR_ISA"))
            })
            .collect()
    });
    if let Ok(required) = std::env::var("LEMUR_REQUIRE_ISA") {
        for name in required.split(',').filter(|n| !n.trim().is_empty()) {
            let level = Level::from_name(name)
                .unwrap_or_else(|| panic!("unknown level {name:?} in LEMUR_REQUIRE_ISA"));
            assert!(
                Isa::new(level).is_some(),
                "LEMUR_REQUIRE_ISA requires {level}, which this CPU or build does not support"
            );
        }
    }
    let isas: Vec<Isa> = Isa::available()
        .into_iter()
        .filter(|isa| selected.as_ref().is_none_or(|s| s.contains(&isa.level())))
        .collect();
    if let Some(selected) = &selected {
        for level in selected {
            assert!(
                isas.iter().any(|isa| isa.level() == *level),
                "LEMUR_ISA selects {level}, which is not available here"
            );
        }
    }
    assert!(!isas.is_empty(), "no level selected");
    isas
}

fn report(test: &str, isas: &[Isa]) {
    for isa in isas {
        println!("lemur-isa-ran: {} ({test})", isa.level());
    }
}

/// The bits of `x` with the sign of zero dropped: a score of -0 is a score
/// of +0, and which of the two a sum or maximum of signed zeros gives
/// depends on the order of its operations.
fn bits(x: f32) -> u32 {
    (x + 0.0).to_bits()
}

/// A tiny deterministic generator so failures replay from the seed alone.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Small integers divided by 4: every product and sum is exact in f32.
    fn dyadic(&mut self) -> f32 {
        ((self.next() % 9) as i32 - 4) as f32 / 4.0
    }
    /// Approximately standard normal (Irwin-Hall with 12 uniforms).
    fn normal(&mut self) -> f32 {
        (0..12)
            .map(|_| (self.next() >> 40) as f32 / (1u64 << 24) as f32)
            .sum::<f32>()
            - 6.0
    }
}

const DIMS: [usize; 16] = [
    1, 7, 8, 15, 16, 17, 31, 32, 33, 48, 50, 64, 96, 128, 129, 256,
];

fn check_dyadic(
    isas: &[Isa],
    dim: usize,
    q: usize,
    n: usize,
    seed: u64,
) -> Result<(), TestCaseError> {
    let mut rng = Rng(seed);
    let query: Vec<f32> = (0..q * dim).map(|_| rng.dyadic()).collect();
    let doc: Vec<f32> = (0..n * dim).map(|_| rng.dyadic()).collect();
    let want = naive::maxsim(&query, &doc, dim);
    // Dyadic values are exact in bf16 too, so the bf16 storage path must
    // match bit for bit as well, in total and per query token.
    let stored = Bf16Vectors::from_f32(&MultiVectors::new(doc.clone(), dim, &[n]).unwrap());
    let want_maxima: Vec<f32> = query
        .chunks_exact(dim)
        .map(|x| naive::maxsim(x, &doc, dim))
        .collect();
    for &isa in isas {
        let got = maxsim(isa, &query, &doc, dim);
        prop_assert_eq!(
            bits(got),
            bits(want),
            "level={} dim={} q={} n={}: {} vs {}",
            isa.level(),
            dim,
            q,
            n,
            got,
            want
        );
        let packed = PackedQueryBf16::new(&query, dim).with_isa(isa);
        let got = maxsim_bf16_generic(isa, &packed, stored.get(0));
        prop_assert_eq!(
            bits(got),
            bits(want),
            "bf16 level={} dim={} q={} n={}",
            isa.level(),
            dim,
            q,
            n
        );
        let mut maxima = vec![f32::NAN; q];
        token_maxima_bf16(&packed, stored.get(0), &mut maxima);
        prop_assert_eq!(
            &maxima,
            &want_maxima,
            "bf16 maxima level={} dim={}",
            isa.level(),
            dim
        );
        let packed = PackedQuery::new(&query, dim);
        let total = lemur_maxsim::token_maxima(isa, &packed, &doc, &mut maxima);
        prop_assert_eq!(
            &maxima,
            &want_maxima,
            "maxima level={} dim={}",
            isa.level(),
            dim
        );
        prop_assert_eq!(bits(total), bits(want));
    }
    Ok(())
}

/// bf16 dot products of dyadic matrices (exact in bf16 and in every sum)
/// against the f64 oracle, bit for bit.
fn check_dots(
    isas: &[Isa],
    dim: usize,
    n_a: usize,
    n_b: usize,
    seed: u64,
) -> Result<(), TestCaseError> {
    let mut rng = Rng(seed);
    let a: Vec<f32> = (0..n_a * dim).map(|_| rng.dyadic()).collect();
    let b: Vec<f32> = (0..(n_b + 3) * dim).map(|_| rng.dyadic()).collect();
    let (a_bf16, b_bf16) = (Bf16Matrix::from_f32(&a, dim), Bf16Matrix::from_f32(&b, dim));
    for &isa in isas {
        let mut out = vec![f32::NAN; n_a * n_b];
        dot_products_bf16(isa, &a_bf16, &b_bf16, 3, n_b, &mut out);
        assert_block(isa, dim, n_b, &out, |i, j| {
            naive::dot(&a[i * dim..(i + 1) * dim], &b[(3 + j) * dim..(4 + j) * dim])
        })?;
    }
    Ok(())
}

/// Every entry `out[i * n_b + j]` of a block of dot products equals
/// `want(i, j)` exactly (compared as numbers: an exact zero may carry
/// either sign).
fn assert_block(
    isa: Isa,
    dim: usize,
    n_b: usize,
    out: &[f32],
    want: impl Fn(usize, usize) -> f64,
) -> Result<(), TestCaseError> {
    for (index, &got) in out.iter().enumerate() {
        let (i, j) = (index / n_b, index % n_b);
        let want = want(i, j);
        prop_assert!(
            got as f64 == want,
            "level={} dim={} [{},{}]: {} vs {}",
            isa.level(),
            dim,
            i,
            j,
            got,
            want
        );
    }
    Ok(())
}

/// int8 dot products of dyadic f32 rows against quantised rows: every
/// product `(k / 4) * code` and every partial sum is exact in f32, so each
/// level must give the oracle's `scale * exact sum` bit for bit. `n_a` up
/// to 9 mixes the four-query tiles with single-query ones.
fn check_int8_dots(
    isas: &[Isa],
    dim: usize,
    n_a: usize,
    n_b: usize,
    seed: u64,
) -> Result<(), TestCaseError> {
    let mut rng = Rng(seed);
    let a: Vec<f32> = (0..n_a * dim).map(|_| rng.dyadic()).collect();
    let b: Vec<f32> = (0..(n_b + 3) * dim).map(|_| rng.normal()).collect();
    let matrix = Int8Matrix::from_f32(&b, dim);
    let padded = matrix.pad_rows(&a);
    for &isa in isas {
        let mut out = vec![f32::NAN; n_a * n_b];
        dot_products_int8(isa, &padded, &matrix, 3, n_b, &mut out);
        assert_block(isa, dim, n_b, &out, |i, j| {
            let exact: f64 = a[i * dim..(i + 1) * dim]
                .iter()
                .zip(&matrix.codes(3 + j))
                .map(|(&x, &c)| x as f64 * c as f64)
                .sum();
            (exact as f32 * matrix.scale(3 + j)) as f64
        })?;
    }
    Ok(())
}

/// Integer dot products of quantised queries and quantised rows: the
/// integer sums are exact, so every level must give the oracle's
/// `(sum as f32) * scale_a * scale_b` bit for bit (VNNI at the AVX-512
/// level where the CPU has it). `n_a` up to 9 mixes four-query tiles with
/// single-query ones.
fn check_int8_exact(
    isas: &[Isa],
    dim: usize,
    n_a: usize,
    n_b: usize,
    seed: u64,
) -> Result<(), TestCaseError> {
    let mut rng = Rng(seed);
    let a: Vec<f32> = (0..n_a * dim).map(|_| rng.normal()).collect();
    let b: Vec<f32> = (0..(n_b + 3) * dim).map(|_| rng.normal()).collect();
    let matrix = Int8Matrix::from_f32(&b, dim);
    let queries = matrix.quantise_queries(&a);
    for &isa in isas {
        let mut out = vec![f32::NAN; n_a * n_b];
        dot_products_int8_exact(isa, &queries, &matrix, 3, n_b, &mut out);
        assert_block(isa, dim, n_b, &out, |i, j| {
            let sum: i64 = queries
                .codes(i)
                .iter()
                .zip(&matrix.codes(3 + j))
                .map(|(&x, &c)| x as i64 * c as i64)
                .sum();
            (sum as f32 * queries.scale(i) * matrix.scale(3 + j)) as f64
        })?;
    }
    Ok(())
}

/// int8 MaxSim against an oracle that takes the same steps per query
/// token (exact integer sums, each turned into f32 and scaled by its
/// document token's scale, the maximum scaled by the query token's): only
/// the order of the final sum over query tokens may differ, so every level
/// must be within that sum's rounding (VNNI at the AVX-512 level where the
/// CPU has it, the integer loop elsewhere).
fn check_int8_maxsim(
    isas: &[Isa],
    dim: usize,
    q: usize,
    n: usize,
    seed: u64,
) -> Result<(), TestCaseError> {
    let mut rng = Rng(seed);
    let query: Vec<f32> = (0..q * dim).map(|_| rng.normal()).collect();
    let doc: Vec<f32> = (0..n * dim).map(|_| rng.normal()).collect();
    let set = MultiVectors::new(doc.clone(), dim, &[n]).unwrap();
    let stored = Int8Vectors::from_f32(&set);
    let doc_tokens: Vec<(f32, Vec<i8>)> = doc.chunks_exact(dim).map(quantise).collect();
    let terms: Vec<f64> = query
        .chunks_exact(dim)
        .map(|token| {
            let (query_scale, query_codes) = quantise(token);
            let best = doc_tokens
                .iter()
                .map(|(scale, codes)| {
                    let sum: i32 = query_codes
                        .iter()
                        .zip(codes)
                        .map(|(&a, &c)| i32::from(a) * i32::from(c))
                        .sum();
                    sum as f32 * scale
                })
                .fold(f32::NEG_INFINITY, f32::max);
            f64::from(best * query_scale)
        })
        .collect();
    let expected: f64 = terms.iter().sum();
    let magnitude: f64 = terms.iter().map(|t| t.abs()).sum();
    let tolerance = q as f64 * f64::from(f32::EPSILON) * magnitude + 1e-30;
    for &isa in isas {
        let packed = PackedQueryInt8::new(&query, dim).with_isa(isa);
        let score = f64::from(maxsim_int8(&packed, stored.get(0)));
        prop_assert!(
            (score - expected).abs() <= tolerance,
            "{} d={dim} q={q} n={n}: {score} vs {expected}",
            isa.level()
        );
    }
    Ok(())
}

fn check_normal(
    isas: &[Isa],
    dim: usize,
    q: usize,
    n: usize,
    seed: u64,
) -> Result<(), TestCaseError> {
    let mut rng = Rng(seed);
    let query: Vec<f32> = (0..q * dim).map(|_| rng.normal()).collect();
    let doc: Vec<f32> = (0..n * dim).map(|_| rng.normal()).collect();
    let want = naive::maxsim(&query, &doc, dim);
    // Relative to the sum of magnitudes of the per-token maxima, so a total
    // that cancels to near zero does not demand impossible precision.
    let scale: f64 = query
        .chunks_exact(dim)
        .map(|x| {
            doc.chunks_exact(dim)
                .map(|c| naive::dot(x, c))
                .fold(f64::NEG_INFINITY, f64::max)
                .abs()
        })
        .sum::<f64>()
        .max(1e-30);
    for &isa in isas {
        let got = maxsim(isa, &query, &doc, dim);
        let err = (got as f64 - want as f64).abs() / scale;
        prop_assert!(
            err <= 1e-5,
            "level={} dim={} q={} n={}: {} vs {} (rel {})",
            isa.level(),
            dim,
            q,
            n,
            got,
            want,
            err
        );
    }
    Ok(())
}

#[test]
fn every_dim_small_shapes_exact() {
    let isas = levels();
    for dim in DIMS {
        for q in [1, 2, 3, 4, 7, 8, 9, 15, 16, 17, 32, 33, 48, 64, 65] {
            for n in [1, 2, 5, 6, 7, 13, 16, 17, 40] {
                check_dyadic(&isas, dim, q, n, (dim * 1000 + q * 10 + n) as u64).unwrap();
            }
        }
    }
    report("every_dim_small_shapes_exact", &isas);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn dyadic_inputs_are_bit_exact(dim_index in 0..DIMS.len(), q in 1usize..=300, n in 1usize..=300, seed in any::<u64>()) {
        check_dyadic(&levels(), DIMS[dim_index], q, n, seed)?;
    }

    /// Queries of up to 16 tokens take the spread kernel on vector levels
    /// (even widths; four lanes per token where that fills at most two of
    /// the level's vectors, else two): a range of their own so every layout
    /// and block size is hit.
    #[test]
    fn short_queries_are_bit_exact(dim_index in 0..DIMS.len(), q in 1usize..=17, n in 1usize..=80, seed in any::<u64>()) {
        check_dyadic(&levels(), DIMS[dim_index], q, n, seed)?;
        check_normal(&levels(), DIMS[dim_index], q, n, seed)?;
    }

    #[test]
    fn bf16_dot_products_are_exact_on_dyadic_inputs(dim_index in 0..DIMS.len(), n_a in 1usize..=7, n_b in 1usize..=13, seed in any::<u64>()) {
        check_dots(&levels(), DIMS[dim_index], n_a, n_b, seed)?;
    }

    #[test]
    fn int8_integer_dot_products_are_exact(dim_index in 0..DIMS.len(), n_a in 1usize..=9, n_b in 1usize..=13, seed in any::<u64>()) {
        check_int8_exact(&levels(), DIMS[dim_index], n_a, n_b, seed)?;
    }

    #[test]
    fn int8_dot_products_are_exact_on_dyadic_inputs(dim_index in 0..DIMS.len(), n_a in 1usize..=9, n_b in 1usize..=13, seed in any::<u64>()) {
        check_int8_dots(&levels(), DIMS[dim_index], n_a, n_b, seed)?;
    }

    #[test]
    fn int8_maxsim_takes_the_oracles_steps(dim_index in 0..DIMS.len(), q in 1usize..=40, n in 1usize..=60, seed in any::<u64>()) {
        check_int8_maxsim(&levels(), DIMS[dim_index], q, n, seed)?;
    }

    #[test]
    fn normal_inputs_within_1e5(dim_index in 0..DIMS.len(), q in 1usize..=300, n in 1usize..=300, seed in any::<u64>()) {
        check_normal(&levels(), DIMS[dim_index], q, n, seed)?;
    }
}

#[test]
fn proptests_covered_every_level() {
    // The proptest macros cannot print per level, so this test names the
    // levels the suite ran at (the same `levels()` the properties use).
    report("proptests", &levels());
}

#[test]
fn negative_scores_and_single_tokens() {
    let isas = levels();
    // All dot products negative: the max must not be clamped at 0 by padding.
    let query = [-1.0f32, -2.0, -3.0];
    let doc = [1.0f32, 1.0, 1.0, 2.0, 2.0, 2.0];
    for &isa in &isas {
        assert_eq!(maxsim(isa, &query, &doc, 3), -6.0, "level={}", isa.level());
    }
    report("negative_scores_and_single_tokens", &isas);
}

#[test]
fn packed_query_is_reusable_and_rerank_orders_by_score_then_id() {
    let isas = levels();
    let dim = 5;
    let mut rng = Rng(7);
    let counts = [3usize, 1, 4, 1, 5, 9, 2, 6];
    let tokens: Vec<f32> = (0..counts.iter().sum::<usize>() * dim)
        .map(|_| rng.dyadic())
        .collect();
    // Document 8 duplicates document 2 so their scores tie exactly.
    let mut tokens = tokens;
    let dup: Vec<f32> = tokens[8 * dim..12 * dim].to_vec();
    tokens.extend_from_slice(&dup);
    let counts: Vec<usize> = counts.iter().copied().chain([4]).collect();
    let corpus = MultiVectors::new(tokens, dim, &counts).unwrap();
    let query: Vec<f32> = (0..4 * dim).map(|_| rng.dyadic()).collect();
    let packed = PackedQuery::new(&query, dim);
    for &isa in &isas {
        let mut want: Vec<(u32, f32)> = (0..corpus.len())
            .map(|j| (j as u32, naive::maxsim(&query, corpus.get(j), dim)))
            .collect();
        for &(j, score) in &want {
            assert_eq!(maxsim_packed(isa, &packed, corpus.get(j as usize)), score);
        }
        want.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        let candidates: Vec<u32> = (0..corpus.len() as u32).rev().collect();
        let got = Reranker::new(isa).rerank(&query, &corpus, &candidates, 5);
        let got: Vec<(u32, f32)> = got.iter().map(|h| (h.id, h.score)).collect();
        assert_eq!(got, want[..5].to_vec(), "level={}", isa.level());
    }
    report(
        "packed_query_is_reusable_and_rerank_orders_by_score_then_id",
        &isas,
    );
}

#[test]
fn token_maxima_match_naive_per_token() {
    let isas = levels();
    let mut rng = Rng(11);
    for (dim, q, n) in [(1, 1, 1), (7, 70, 9), (128, 33, 100), (33, 300, 3)] {
        let query: Vec<f32> = (0..q * dim).map(|_| rng.dyadic()).collect();
        let doc: Vec<f32> = (0..n * dim).map(|_| rng.dyadic()).collect();
        let packed = PackedQuery::new(&query, dim);
        let want: Vec<f32> = query
            .chunks_exact(dim)
            .map(|x| naive::maxsim(x, &doc, dim))
            .collect();
        for &isa in &isas {
            let mut got = vec![f32::NAN; q];
            let total = lemur_maxsim::token_maxima(isa, &packed, &doc, &mut got);
            assert_eq!(got, want, "level={} dim={dim} q={q} n={n}", isa.level());
            assert_eq!(total, naive::maxsim(&query, &doc, dim));
        }
    }
    report("token_maxima_match_naive_per_token", &isas);
}

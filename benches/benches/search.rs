//! Criterion benchmarks for every stage of the query path on W10k.
//!
//! `cargo xtask bench` runs them and prints queries/s per stage and the
//! rerank's GFLOP/s per SIMD level; `cargo bench -p lemur-bench` works too.
//! Throughput is declared per benchmark: queries for the stages, FLOP
//! (2 q n d per candidate) for the rerank.

use std::time::Duration;

use criterion::measurement::WallTime;
use criterion::{
    BenchmarkGroup, BenchmarkId, Criterion, Throughput, criterion_group, criterion_main,
};
use lemur::maxsim::bf16::{
    Bf16Kernel, Bf16Matrix, Bf16Vectors, PackedQueryBf16, dot_products_bf16, rerank_bf16,
};
use lemur::topk::top_k_rows;
use lemur::{Index, Isa, MultiVectors, Precision, SearchParams, TokenPrecision, WeightPrecision};
use lemur_bench::{QUERY_TOKENS, fma_peak, fma_peak_flop, pool, workload};
use rayon::prelude::*;

const N_DOCS: usize = 10_000;
const BATCH: usize = 1000;
const RERANK_BATCH: usize = 200;
const PARAMS: SearchParams = SearchParams {
    k: 10,
    n_candidates: 200,
};
const THREADS: [usize; 2] = [1, 2];

/// The machine's FMA peak, per thread count, for reading the rerank's
/// GFLOP/s against.
fn peak(c: &mut Criterion) {
    const ITERATIONS: usize = 1 << 22;
    let lanes = fma_peak(1).1;
    let mut group = c.benchmark_group("peak");
    for threads in THREADS {
        let pool = pool(threads);
        group.throughput(Throughput::Elements(
            threads as u64 * fma_peak_flop(ITERATIONS, lanes),
        ));
        group.bench_function(BenchmarkId::new("fma", format!("{threads}t")), |b| {
            b.iter(|| pool.broadcast(|_| fma_peak(ITERATIONS).0))
        });
    }
    group.finish();
}

fn stages(c: &mut Criterion) {
    let w = workload(N_DOCS, BATCH);
    let (index, queries) = (&w.index, &w.queries);
    let features = index.query_features(queries);
    let candidates = index.candidates(&features, PARAMS.n_candidates);
    let dim = index.dim();
    // The rerank is timed on the first 200 queries: its GFLOP/s does not
    // depend on the batch size, and the scalar level is slow.
    let rerank_queries = lemur::MultiVectors::new(
        queries.tokens()[..RERANK_BATCH * QUERY_TOKENS * index.dim()].to_vec(),
        index.dim(),
        &[QUERY_TOKENS; RERANK_BATCH],
    )
    .expect("a prefix of valid queries");
    let rerank_candidates = &candidates[..RERANK_BATCH];
    let candidate_tokens: usize = rerank_candidates
        .iter()
        .flatten()
        .map(|&d| index.corpus().token_count(d as usize))
        .sum();
    let rerank_flop = 2 * QUERY_TOKENS * candidate_tokens * dim;
    // The same corpus stored as bf16, and how often each bf16 kernel's
    // rerank keeps the f32 rerank's top 10.
    let corpus_bf16 = Bf16Vectors::from_f32(index.corpus());
    let rerank_bf16_batch = |kernel: Bf16Kernel| -> Vec<Vec<u32>> {
        (0..RERANK_BATCH)
            .into_par_iter()
            .map(|i| {
                let packed = PackedQueryBf16::new(rerank_queries.get(i), dim).with_kernel(kernel);
                rerank_bf16(&packed, &corpus_bf16, &rerank_candidates[i], PARAMS.k)
                    .into_iter()
                    .map(|hit| hit.id)
                    .collect()
            })
            .collect()
    };
    // The generic kernel only where no bf16 instructions exist: it is slow.
    let bf16_kernels: Vec<Bf16Kernel> = match Bf16Kernel::available().as_slice() {
        [generic] => vec![*generic],
        [_, accelerated @ ..] => accelerated.to_vec(),
        [] => unreachable!("the generic kernel is always available"),
    };
    let exact = index.rerank(&rerank_queries, rerank_candidates, PARAMS.k);
    for &kernel in &bf16_kernels {
        let kept: usize = exact
            .iter()
            .zip(rerank_bf16_batch(kernel))
            .map(|(f32_hits, bf16_ids)| {
                f32_hits
                    .iter()
                    .filter(|h| bf16_ids.contains(&h.doc))
                    .count()
            })
            .sum();
        eprintln!(
            "bf16 rerank ({}): recall@10 against the f32 rerank {:.4}, corpus {} MB vs {} MB",
            kernel.name(),
            kept as f64 / (RERANK_BATCH * PARAMS.k) as f64,
            corpus_bf16.token_bytes() >> 20,
            (index.corpus().n_tokens() * dim * 4) >> 20,
        );
    }
    let w_bf16 = Bf16Matrix::from_f32(index.weights().values(), index.feature_dim());
    // The reduced-precision variants, each named by the suffix of its rows.
    let variants = [
        ("bf16", index.clone().with_bf16()),
        (
            "int8w",
            index.clone().with_precision(Precision::INT8_WEIGHTS),
        ),
        ("int8dot", index.clone().with_precision(Precision::INT8_DOT)),
        (
            "bf16filter",
            index.clone().with_precision(Precision::BF16_FILTER),
        ),
        (
            "bf16filterall",
            index.clone().with_precision(Precision::BF16_FILTER_ALL),
        ),
        (
            "bf16int8filter",
            index.clone().with_precision(Precision::BF16_INT8_FILTER),
        ),
        (
            "int8filters",
            index.clone().with_precision(Precision::INT8_FILTERS),
        ),
    ];
    // The f32 rerank through a bf16 or an int8 filter: timed against the
    // f32 FLOP.
    let filtered_reranks = [
        (TokenPrecision::Bf16Filter, "bf16filter"),
        (TokenPrecision::Int8Filter, "int8filter"),
    ]
    .map(|(tokens, name)| {
        let precision = Precision {
            weights: WeightPrecision::F32,
            tokens,
        };
        (name, index.clone().with_precision(precision))
    });
    let exact_top10 = index.search_batch(queries, PARAMS).expect("valid queries");
    let same_candidates = |variant: &lemur::Index| {
        let sorted = |mut ids: Vec<u32>| {
            ids.sort_unstable();
            ids
        };
        variant
            .candidates(&features, PARAMS.n_candidates)
            .into_iter()
            .zip(&candidates)
            .filter(|(reduced, exact)| sorted(reduced.clone()) == sorted(exact.to_vec()))
            .count()
    };
    for (name, variant) in &variants {
        let hits = variant
            .search_batch(queries, PARAMS)
            .expect("valid queries");
        let kept: usize = exact_top10
            .iter()
            .zip(&hits)
            .map(|(exact, reduced)| {
                exact
                    .iter()
                    .filter(|h| reduced.iter().any(|r| r.doc == h.doc))
                    .count()
            })
            .sum();
        println!(
            "search {name}: keeps {:.4} of the f32 pipeline's top 10; the f32 candidates for {} of {BATCH} queries",
            kept as f64 / (BATCH * PARAMS.k) as f64,
            same_candidates(variant),
        );
    }

    for threads in THREADS {
        let pool = pool(threads);
        let mut group = c.benchmark_group("features");
        group.throughput(Throughput::Elements(BATCH as u64));
        group.bench_function(BenchmarkId::new("batch1000", format!("{threads}t")), |b| {
            b.iter(|| pool.install(|| index.query_features(queries)))
        });
        group.finish();

        let mut group = c.benchmark_group("score_topk");
        group.throughput(Throughput::Elements(BATCH as u64));
        group.bench_function(BenchmarkId::new("fused_k200", format!("{threads}t")), |b| {
            b.iter(|| pool.install(|| index.candidates(&features, PARAMS.n_candidates)))
        });
        for (name, variant) in &variants {
            group.bench_function(
                BenchmarkId::new(format!("fused_k200_{name}"), format!("{threads}t")),
                |b| b.iter(|| pool.install(|| variant.candidates(&features, PARAMS.n_candidates))),
            );
        }
        group.finish();

        // The bf16 product `f W^T` alone, the batch (and one query)
        // against all of `W` in the search path's blocks of documents:
        // `vdpbf16ps` against AMX tiles (the features with their tile
        // layout), FLOP = 2 h per score.
        let mut group = c.benchmark_group("score_bf16");
        let h = index.feature_dim();
        for (label, n_queries, block) in [("batch1000", BATCH, 512), ("one_query", 1, 256)] {
            group.throughput(Throughput::Elements((2 * n_queries * N_DOCS * h) as u64));
            let features = Bf16Matrix::from_f32(&features[..n_queries * h], h);
            for &kernel in &bf16_kernels {
                let queries = if kernel == Bf16Kernel::Amx {
                    features.clone().with_tile_layout()
                } else {
                    features.clone()
                };
                let id =
                    BenchmarkId::new(format!("{}_{label}", kernel.name()), format!("{threads}t"));
                group.bench_function(id, |b| {
                    b.iter(|| {
                        pool.install(|| {
                            (0..N_DOCS.div_ceil(block))
                                .into_par_iter()
                                .map(|i| {
                                    let n = block.min(N_DOCS - i * block);
                                    let mut out = vec![0.0; n_queries * n];
                                    let first = i * block;
                                    dot_products_bf16(
                                        Isa::detect(),
                                        &queries,
                                        &w_bf16,
                                        first,
                                        n,
                                        &mut out,
                                    );
                                    out[0]
                                })
                                .sum::<f32>()
                        })
                    })
                });
            }
        }
        group.finish();

        let mut group = c.benchmark_group("rerank");
        group.throughput(Throughput::Elements(rerank_flop as u64));
        for isa in Isa::available() {
            let index = index.clone().with_isa(isa);
            group.bench_function(
                BenchmarkId::new(isa.level().name(), format!("{threads}t")),
                |b| {
                    b.iter(|| {
                        pool.install(|| index.rerank(&rerank_queries, rerank_candidates, PARAMS.k))
                    })
                },
            );
        }
        for &kernel in &bf16_kernels {
            let name = match kernel {
                Bf16Kernel::Generic => format!("bf16_{}", Isa::detect().level().name()),
                _ => kernel.name().to_owned(),
            };
            group.bench_function(BenchmarkId::new(name, format!("{threads}t")), |b| {
                b.iter(|| pool.install(|| rerank_bf16_batch(kernel)))
            });
        }
        for (name, filtered) in &filtered_reranks {
            group.bench_function(BenchmarkId::new(*name, format!("{threads}t")), |b| {
                b.iter(|| {
                    pool.install(|| filtered.rerank(&rerank_queries, rerank_candidates, PARAMS.k))
                })
            });
        }
        group.finish();

        let mut group = c.benchmark_group("search");
        search_rows(&mut group, &pool, threads, "", index, queries);
        for (name, variant) in &variants {
            search_rows(
                &mut group,
                &pool,
                threads,
                &format!("_{name}"),
                variant,
                queries,
            );
        }
        group.finish();
    }

    // Top-k alone, on a materialised [100, 10k] score matrix.
    let scores = index.approximate_scores(&features[..100 * index.feature_dim()]);
    let mut group = c.benchmark_group("topk");
    group.throughput(Throughput::Elements(100));
    group.bench_function(BenchmarkId::new("k200_of_10k", "1t"), |b| {
        b.iter(|| top_k_rows(&scores, N_DOCS, PARAMS.n_candidates))
    });
    group.finish();
}

/// Times `index` on the whole batch of `queries` (`batch1000{suffix}`)
/// and on one query at a time, taken in turn (`one_query{suffix}`).
fn search_rows(
    group: &mut BenchmarkGroup<'_, WallTime>,
    pool: &rayon::ThreadPool,
    threads: usize,
    suffix: &str,
    index: &Index,
    queries: &MultiVectors,
) {
    group.throughput(Throughput::Elements(queries.len() as u64));
    group.bench_function(
        BenchmarkId::new(format!("batch1000{suffix}"), format!("{threads}t")),
        |b| b.iter(|| pool.install(|| index.search_batch(queries, PARAMS).expect("valid queries"))),
    );
    group.throughput(Throughput::Elements(1));
    let mut next = 0;
    group.bench_function(
        BenchmarkId::new(format!("one_query{suffix}"), format!("{threads}t")),
        |b| {
            b.iter(|| {
                next = (next + 1) % queries.len();
                pool.install(|| {
                    index
                        .search_one(queries.get(next), PARAMS)
                        .expect("valid query")
                })
            })
        },
    );
}

/// The pipeline on W10k with a fitted `W` (`lemur_bench::fitted_workload`),
/// whose best documents stand out as a real index's do: what the filtered
/// precisions are for. One query at a time and batches of 1000, f32
/// against the presets that keep its hits (and plain bf16 for reference).
fn fitted(c: &mut Criterion) {
    let w = lemur_bench::fitted_workload(BATCH);
    let (index, queries) = (&w.index, &w.queries);
    let exact = index.search_batch(queries, PARAMS).expect("valid queries");
    let variants = [
        ("f32", Precision::F32),
        ("bf16", Precision::BF16),
        ("bf16filterall", Precision::BF16_FILTER_ALL),
        ("bf16int8filter", Precision::BF16_INT8_FILTER),
        ("int8filters", Precision::INT8_FILTERS),
    ]
    .map(|(name, precision)| (name, index.clone().with_precision(precision)));
    for (name, variant) in &variants {
        let hits = variant
            .search_batch(queries, PARAMS)
            .expect("valid queries");
        let same = hits.iter().zip(&exact).filter(|(a, b)| a == b).count();
        println!("fitted {name}: the f32 hits (ids and scores) for {same} of {BATCH} queries");
    }
    for threads in THREADS {
        let pool = pool(threads);
        let mut group = c.benchmark_group("fitted");
        for (name, variant) in &variants {
            search_rows(
                &mut group,
                &pool,
                threads,
                &format!("_{name}"),
                variant,
                queries,
            );
        }
        group.finish();
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4));
    targets = peak, stages, fitted
}
criterion_main!(benches);

//! Scaling from W10k through W30k to W100k: the per-query cost of scoring
//! (`f W^T` with fused top-k') should grow linearly with the number of
//! documents, and the rerank's should stay flat (k' candidates whatever the
//! corpus size). Three sizes, not two, because any two points lie on a
//! line: the middle one shows whether the growth is. 100 queries, two
//! threads; throughput is declared in queries.

use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use lemur::SearchParams;
use lemur_bench::{pool, workload};

const QUERIES: usize = 100;
const PARAMS: SearchParams = SearchParams {
    k: 10,
    n_candidates: 200,
};

fn scale(c: &mut Criterion) {
    let pool = pool(2);
    let mut group = c.benchmark_group("scale");
    group.throughput(Throughput::Elements(QUERIES as u64));
    for n_docs in [10_000, 30_000, 100_000] {
        let w = workload(n_docs, QUERIES);
        let features = pool.install(|| w.index.query_features(&w.queries));
        let candidates = pool.install(|| w.index.candidates(&features, PARAMS.n_candidates));
        let label = format!("{}k_docs", n_docs / 1000);
        group.bench_function(BenchmarkId::new("score_topk", &label), |b| {
            b.iter(|| pool.install(|| w.index.candidates(&features, PARAMS.n_candidates)))
        });
        group.bench_function(BenchmarkId::new("rerank", &label), |b| {
            b.iter(|| pool.install(|| w.index.rerank(&w.queries, &candidates, PARAMS.k)))
        });
        group.bench_function(BenchmarkId::new("search", &label), |b| {
            b.iter(|| {
                pool.install(|| {
                    w.index
                        .search_batch(&w.queries, PARAMS)
                        .expect("valid queries")
                })
            })
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4));
    targets = scale
}
criterion_main!(benches);

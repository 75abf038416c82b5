//! No cliffs: the exact MaxSim kernel's GFLOP/s over token widths d in
//! {48, 64, 96, 128, 256} and query lengths q in {8, 16, 32, 64}, plus the
//! odd shapes d = 100 and q = 33, one thread, the best SIMD level, 2,000
//! documents of 50..=150 tokens per measurement (read against the FMA
//! peak that `benches/search.rs` measures in the same run).

use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use lemur::maxsim::{Isa, PackedQuery, maxsim_packed_before};
use lemur::synthetic::Rng;

const N_DOCS: usize = 2000;

fn shape(c: &mut Criterion, dim: usize, q: usize) {
    let mut rng = Rng::new((dim * 1000 + q) as u64);
    let counts: Vec<usize> = (0..N_DOCS).map(|_| rng.range(50, 151)).collect();
    let n_tokens: usize = counts.iter().sum();
    let tokens: Vec<f32> = (0..n_tokens * dim).map(|_| rng.normal()).collect();
    let query: Vec<f32> = (0..q * dim).map(|_| rng.normal()).collect();
    let packed = PackedQuery::new(&query, dim);
    let mut docs: Vec<&[f32]> = Vec::with_capacity(N_DOCS);
    let mut start = 0;
    for &count in &counts {
        docs.push(&tokens[start * dim..(start + count) * dim]);
        start += count;
    }
    let isa = Isa::detect();
    let mut group = c.benchmark_group("cliff");
    group.throughput(Throughput::Elements((2 * q * n_tokens * dim) as u64));
    group.bench_function(
        BenchmarkId::new(isa.level().name(), format!("d{dim}_q{q}")),
        |b| {
            b.iter(|| {
                // Documents one after another, each scored while the next
                // one streams in, as `score_candidates` does.
                let mut total = 0.0f32;
                for (i, doc) in docs.iter().enumerate() {
                    let next = docs.get(i + 1).copied().unwrap_or(&[]);
                    total += maxsim_packed_before(isa, &packed, doc, next);
                }
                total
            })
        },
    );
    group.finish();
}

fn cliff(c: &mut Criterion) {
    for dim in [48, 64, 96, 128, 256] {
        for q in [8, 16, 32, 64] {
            shape(c, dim, q);
        }
    }
    shape(c, 100, 32);
    shape(c, 128, 33);
    shape(c, 100, 33);
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    targets = cliff
}
criterion_main!(benches);

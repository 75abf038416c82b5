//! No cliffs: the exact MaxSim kernel's GFLOP/s over token widths d in
//! {48, 64, 96, 128, 256} and query lengths q in {8, 16, 32, 64}, plus the
//! odd shapes d = 100 and q = 33, one thread, the best SIMD level (read
//! against the FMA peak that `benches/search.rs` measures in the same run).
//!
//! Each shape is measured three times. `cliff/` streams 2,000 documents of
//! 50..=150 tokens from memory, so short queries meet the memory bandwidth
//! (a query of q tokens does q / 2 FLOP per byte of document), from an
//! [`AlignedVec`] in small pages (4 KiB, where the hardware prefetchers
//! stop at every page boundary); `cliff_huge/` streams the same documents
//! from an `AlignedVec` in [`Pages::Huge`] (2 MiB pages where the OS grants
//! them: a caller's choice for a corpus scanned from memory), so the two
//! differ in their pages only; `cliff_l2/` scores the first documents that
//! fit in half of this core's L2 cache (as Linux reports it; 512 KiB where
//! it does not), which stay there, so it measures the kernel alone.
//! `cliff_memory/read` and `read_huge` read a buffer the size of the
//! d = 128 documents once, in vector chains: the bandwidth one thread gets
//! from each kind of page, so the streamed rows can be read against their
//! roofline of `q / 2` FLOP per byte times that bandwidth. The bench
//! prints how much of each kind of buffer the kernel backed with huge
//! pages.

use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use lemur::maxsim::{AlignedVec, Isa, PackedQuery, Pages, maxsim_packed_before};
use lemur::synthetic::Rng;

const N_DOCS: usize = 2000;
/// Bytes of documents the cache-resident rows score: half of this core's
/// L2, so they stay there beside the query (Zen 3 has 512 KiB of L2, the
/// other machines measured 1-2 MiB), or 512 KiB where Linux does not say.
fn resident_bytes() -> usize {
    lemur_bench::l2_cache_bytes().map_or(512 << 10, |bytes| bytes / 2)
}

fn shape(c: &mut Criterion, dim: usize, q: usize, resident_bytes: usize) {
    let mut rng = Rng::new((dim * 1000 + q) as u64);
    let counts: Vec<usize> = (0..N_DOCS).map(|_| rng.range(50, 151)).collect();
    let n_tokens: usize = counts.iter().sum();
    let tokens: Vec<f32> = (0..n_tokens * dim).map(|_| rng.normal()).collect();
    let query: Vec<f32> = (0..q * dim).map(|_| rng.normal()).collect();
    let packed = PackedQuery::new(&query, dim);
    let small = AlignedVec::from_slice_in(&tokens, Pages::Small);
    let huge = AlignedVec::from_slice_in(&tokens, Pages::Huge);
    drop(tokens);
    let isa = Isa::detect();
    for (group, tokens) in [("cliff", &small), ("cliff_huge", &huge)] {
        let docs = split(tokens, &counts, dim);
        let mut group = c.benchmark_group(group);
        group.throughput(Throughput::Elements((2 * q * n_tokens * dim) as u64));
        group.bench_function(
            BenchmarkId::new(isa.level().name(), format!("d{dim}_q{q}")),
            |b| {
                b.iter(|| {
                    // Documents one after another, each scored while the
                    // next one streams in, as `score_candidates` does.
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
    if dim == 128 && q == 8 {
        report_huge_pages("small", &small);
        report_huge_pages("huge", &huge);
    }
    let docs = split(&small, &counts, dim);

    let mut resident = 0;
    let mut resident_tokens = 0;
    // At least one document, however small the cache.
    while resident < docs.len()
        && (resident == 0 || (resident_tokens + counts[resident]) * dim * 4 <= resident_bytes)
    {
        resident_tokens += counts[resident];
        resident += 1;
    }
    let mut group = c.benchmark_group("cliff_l2");
    group.throughput(Throughput::Elements((2 * q * resident_tokens * dim) as u64));
    group.bench_function(
        BenchmarkId::new(isa.level().name(), format!("d{dim}_q{q}")),
        |b| {
            b.iter(|| {
                docs[..resident]
                    .iter()
                    .map(|doc| maxsim_packed_before(isa, &packed, doc, &[]))
                    .sum::<f32>()
            })
        },
    );
    group.finish();
}

/// `tokens` cut into documents of `counts` tokens of width `dim`.
fn split<'a>(tokens: &'a [f32], counts: &[usize], dim: usize) -> Vec<&'a [f32]> {
    let mut docs = Vec::with_capacity(counts.len());
    let mut start = 0;
    for &count in counts {
        docs.push(&tokens[start * dim..(start + count) * dim]);
        start += count;
    }
    docs
}

/// Prints how many bytes of the mappings holding `buffer` (the documents
/// in `pages`) sit in huge pages, from this process's memory map (Linux
/// only; silent elsewhere).
fn report_huge_pages(pages: &str, buffer: &[f32]) {
    let Some((huge, mapped)) = lemur_bench::anon_huge_page_bytes(buffer) else {
        return;
    };
    println!(
        "cliff: {:.0} MB of documents in {pages} pages: {:.0} of the {:.0} MB mapped for them are huge pages",
        size_of_val(buffer) as f64 / 1e6,
        huge as f64 / 1e6,
        mapped as f64 / 1e6
    );
}

/// One thread's streaming read bandwidth over as many bytes as the d = 128
/// streamed documents (2,000 of 100 tokens on average), from small pages
/// and from huge ones.
fn read_bandwidth(c: &mut Criterion) {
    let values: Vec<f32> = (0..N_DOCS * 100 * 128).map(|i| (i % 7) as f32).collect();
    let small = AlignedVec::from_slice_in(&values, Pages::Small);
    let huge = AlignedVec::from_slice_in(&values, Pages::Huge);
    let mut group = c.benchmark_group("cliff_memory");
    group.throughput(Throughput::Bytes((values.len() * size_of::<f32>()) as u64));
    group.bench_function("read", |b| b.iter(|| lemur_bench::stream_read(&small)));
    group.bench_function("read_huge", |b| b.iter(|| lemur_bench::stream_read(&huge)));
    group.finish();
}

fn cliff(c: &mut Criterion) {
    read_bandwidth(c);
    let resident_bytes = resident_bytes();
    for dim in [48, 64, 96, 128, 256] {
        for q in [8, 16, 32, 64] {
            shape(c, dim, q, resident_bytes);
        }
    }
    shape(c, 100, 32, resident_bytes);
    shape(c, 128, 33, resident_bytes);
    shape(c, 100, 33, resident_bytes);
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

//! Shared workloads for the criterion benchmarks (see `benches/search.rs`).
//!
//! W10k: 10,000 synthetic ColBERT-shaped documents of 50..=150 tokens,
//! d = 128, tokens around 256 centroids; 32-token queries; a one-block
//! 128 -> 2048 feature map; k' = 200 candidates, k = 10. Everything is
//! seeded, so every run measures the same data.

use lemur::synthetic::{self, CorpusSpec, Rng};
use lemur::{Activation, BuildConfig, DocWeights, Index, IndexBuilder, MultiVectors};

/// The feature width of the benchmark model (the original's default).
pub const FEATURE_DIM: usize = 2048;
/// Tokens per query.
pub const QUERY_TOKENS: usize = 32;

/// A benchmark workload: an index and a batch of queries.
pub struct Workload {
    /// The index (random feature map and `W`: speed does not depend on
    /// their values).
    pub index: Index,
    /// Queries drawn from the corpus's topics.
    pub queries: MultiVectors,
}

/// Builds W10k-shaped data with `n_docs` documents and `n_queries` queries.
pub fn workload(n_docs: usize, n_queries: usize) -> Workload {
    let spec = CorpusSpec {
        n_docs,
        ..CorpusSpec::colbert_10k()
    };
    let data = synthetic::corpus(&spec);
    let queries = data.queries(n_queries, QUERY_TOKENS, 1);
    let map = synthetic::random_mlp(&[spec.dim, FEATURE_DIM], Activation::Gelu, 2);
    let mut rng = Rng::new(3);
    let scale = 1.0 / (FEATURE_DIM as f32).sqrt();
    let weights: Vec<f32> = (0..n_docs * FEATURE_DIM)
        .map(|_| rng.normal() * scale)
        .collect();
    let weights = DocWeights::new(weights, n_docs, FEATURE_DIM).expect("valid weights");
    let index = Index::new(map, weights, data.corpus).expect("valid index");
    Workload { index, queries }
}

/// W10k with a fitted `W`: the index `IndexBuilder` builds from the
/// corpus (random features, `epochs = 0`, the default configuration), and
/// `n_queries` queries. A fitted `W` scores the best documents of a query
/// far above the rest (on W10k the best is 8.4 standard deviations of a
/// query's scores above the 200th, against 1.8 for a random `W`), which
/// is what the filtered precisions depend on. The build takes about half a
/// minute on two threads, so the index is saved under
/// `target/bench-cache/` on first use and opened after that (the build is
/// deterministic, the cache only saves time).
pub fn fitted_workload(n_queries: usize) -> Workload {
    let spec = CorpusSpec::colbert_10k();
    let data = synthetic::corpus(&spec);
    let queries = data.queries(n_queries, QUERY_TOKENS, 1);
    let cache = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../target/bench-cache/w10k-fitted-v1");
    let (map, weights) = match Index::open(&cache) {
        Ok(saved) if saved.len() == spec.n_docs => {
            (saved.feature_map().clone(), saved.weights().clone())
        }
        _ => {
            let config = BuildConfig {
                epochs: 0,
                ..BuildConfig::default()
            };
            let (built, _) = IndexBuilder::new(config)
                .build(data.corpus.clone(), None)
                .expect("W10k builds");
            built.save(&cache).expect("the bench cache is writable");
            (built.feature_map().clone(), built.weights().clone())
        }
    };
    let index = Index::new(map, weights, data.corpus).expect("valid index");
    Workload { index, queries }
}

/// A rayon pool with `threads` threads.
pub fn pool(threads: usize) -> rayon::ThreadPool {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .expect("a thread pool")
}

/// A register-only FMA loop: 12 independent accumulator chains, no memory
/// traffic. Its throughput is the machine's practical FMA peak, the
/// yardstick the rerank kernel's GFLOP/s is read against.
struct FmaPeak {
    iterations: usize,
}

impl pulp::WithSimd for FmaPeak {
    type Output = f32;

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, simd: S) -> f32 {
        // Opaque inputs, so the compiler cannot fold the chains away.
        let a = simd.splat_f32s(std::hint::black_box(0.999_9));
        let b = simd.splat_f32s(std::hint::black_box(1e-4));
        let mut acc = [simd.splat_f32s(std::hint::black_box(1.0)); 12];
        for _ in 0..std::hint::black_box(self.iterations) {
            for chain in &mut acc {
                *chain = simd.mul_add_e_f32s(*chain, a, b);
            }
        }
        let mut total = simd.splat_f32s(0.0);
        for chain in acc {
            total = simd.add_f32s(total, chain);
        }
        simd.reduce_sum_f32s(total)
    }
}

/// FLOP one [`fma_peak`] call performs at `lanes` f32 lanes.
pub fn fma_peak_flop(iterations: usize, lanes: usize) -> u64 {
    (iterations * 12 * lanes * 2) as u64
}

/// Runs the FMA peak loop at the best level this CPU has; returns the
/// result (so the loop is not optimised away) and the lane count used.
pub fn fma_peak(iterations: usize) -> (f32, usize) {
    let arch = pulp::Arch::new();
    struct Lanes;
    impl pulp::WithSimd for Lanes {
        type Output = usize;
        #[inline(always)]
        fn with_simd<S: pulp::Simd>(self, _: S) -> usize {
            S::F32_LANES
        }
    }
    (arch.dispatch(FmaPeak { iterations }), arch.dispatch(Lanes))
}

/// A streaming read: the sum of `values` in eight independent vector
/// chains, so loads, not add latency, set the pace. Its bytes per second
/// is the memory bandwidth one thread gets, the roofline of a MaxSim
/// kernel whose documents come from memory (a query of `q` tokens does
/// `q / 2` FLOP per byte of f32 document).
struct StreamRead<'a> {
    values: &'a [f32],
}

impl pulp::WithSimd for StreamRead<'_> {
    type Output = f32;

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, simd: S) -> f32 {
        let (vectors, tail) = S::as_simd_f32s(self.values);
        let mut acc = [simd.splat_f32s(0.0); 8];
        let (blocks, rest) = vectors.as_chunks::<8>();
        for block in blocks {
            for (chain, &vector) in acc.iter_mut().zip(block) {
                *chain = simd.add_f32s(*chain, vector);
            }
        }
        let mut total = simd.splat_f32s(0.0);
        for &vector in acc.iter().chain(rest) {
            total = simd.add_f32s(total, vector);
        }
        simd.reduce_sum_f32s(total) + tail.iter().sum::<f32>()
    }
}

/// Reads every value of `values` once at the best SIMD level (see
/// [`StreamRead`]); returns their sum so the reads are not optimised away.
pub fn stream_read(values: &[f32]) -> f32 {
    pulp::Arch::new().dispatch(StreamRead { values })
}

/// The L2 cache of CPU 0 in bytes, as Linux reports it in sysfs (`512K`),
/// or `None` elsewhere or when it does not say.
pub fn l2_cache_bytes() -> Option<usize> {
    let caches = std::fs::read_dir("/sys/devices/system/cpu/cpu0/cache").ok()?;
    caches.flatten().find_map(|cache| {
        let read = |name: &str| std::fs::read_to_string(cache.path().join(name)).ok();
        if read("level")?.trim() != "2" {
            return None;
        }
        let size = read("size")?;
        let size = size.trim();
        let (digits, unit) = size.split_at(size.find(|c: char| !c.is_ascii_digit())?);
        let scale = match unit {
            "K" => 1 << 10,
            "M" => 1 << 20,
            _ => return None,
        };
        Some(digits.parse::<usize>().ok()? * scale)
    })
}

/// Bytes of the mappings that overlap `buffer` which Linux backs with
/// transparent huge pages (`AnonHugePages` in `/proc/self/smaps`), and the
/// size of those mappings, or `None` where there is no such file.
pub fn anon_huge_page_bytes<T>(buffer: &[T]) -> Option<(usize, usize)> {
    let smaps = std::fs::read_to_string("/proc/self/smaps").ok()?;
    let start = buffer.as_ptr() as usize;
    let end = start + size_of_val(buffer);
    let mut overlapping = false;
    let (mut huge, mut mapped) = (0, 0);
    for line in smaps.lines() {
        let mut fields = line.split_whitespace();
        let Some(first) = fields.next() else { continue };
        if let Some((low, high)) = first.split_once('-')
            && let (Ok(low), Ok(high)) = (
                usize::from_str_radix(low, 16),
                usize::from_str_radix(high, 16),
            )
        {
            // A mapping's header line: "low-high perms offset ...".
            overlapping = low < end && start < high;
            if overlapping {
                mapped += high - low;
            }
        } else if overlapping && first == "AnonHugePages:" {
            let kib: usize = fields.next()?.parse().ok()?;
            huge += kib << 10;
        }
    }
    Some((huge, mapped))
}

/// A field of `/proc/self/status` in bytes (`VmHWM`: peak resident
/// memory; `VmRSS`: resident memory now, page-cache pages of mapped files
/// included). `None` where the file or field is missing.
pub fn proc_status_bytes(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| {
        l.strip_prefix(field)
            .is_some_and(|rest| rest.starts_with(':'))
    })?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Asks the kernel to drop the cached pages of every file under `dir`
/// (`posix_fadvise(DONTNEED)`; clean pages only, so files must have been
/// synced), as after a restart: what a benchmark then reads comes from the
/// disk. Returns the bytes of the files advised. Does nothing elsewhere
/// than on Linux.
#[allow(unsafe_code)]
pub fn drop_from_page_cache(dir: &std::path::Path) -> u64 {
    let mut bytes = 0;
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            bytes += drop_from_page_cache(&path);
        } else if let Ok(file) = std::fs::File::open(&path) {
            bytes += file.metadata().map_or(0, |m| m.len());
            #[cfg(target_os = "linux")]
            {
                use std::os::fd::AsRawFd;
                // SAFETY: `file` is an open descriptor for the whole call;
                // the advice only affects the page cache, never memory
                // this process holds.
                unsafe {
                    libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED);
                }
            }
        }
    }
    bytes
}

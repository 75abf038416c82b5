//! The AVX512-BF16 MaxSim kernel: `vdpbf16ps` multiplies 16 query tokens
//! by one broadcast document pair and adds both products into f32 lanes.
//! Two query blocks times four document tokens are eight independent
//! accumulator chains, enough to keep the unit busy rather than waiting on
//! latency.

// This module needs `unsafe`: pulp does not wrap the BF16 instructions, so
// the kernel is a `#[target_feature]` function called after run-time
// detection, and its loads and vector casts use raw intrinsics.
#![allow(unsafe_code)]

use core::arch::x86_64::*;

use super::BLOCK;

/// Whether the CPU has AVX-512F and AVX512-BF16 (cached by std).
pub(super) fn available() -> bool {
    std::arch::is_x86_feature_detected!("avx512f")
        && std::arch::is_x86_feature_detected!("avx512bf16")
}

/// MaxSim of a packed query (`[blocks][pairs][16]` bf16 pairs) against a
/// document of `doc.len() / pairs` tokens. The caller checked
/// [`available`], that `doc` is whole non-empty tokens and that `packed`
/// holds every block of `n_tokens`.
pub(super) fn maxsim(packed: &[u32], n_tokens: usize, pairs: usize, doc: &[u32]) -> f32 {
    assert!(available());
    assert_eq!(packed.len(), n_tokens.div_ceil(BLOCK) * pairs * BLOCK);
    assert!(!doc.is_empty() && doc.len().is_multiple_of(pairs));
    // SAFETY: the CPU features the function enables were detected just
    // above, and the slice shapes it relies on were asserted.
    unsafe { maxsim_impl(packed, n_tokens, pairs, doc) }
}

#[target_feature(enable = "avx512f,avx512bf16")]
fn maxsim_impl(packed: &[u32], n_tokens: usize, pairs: usize, doc: &[u32]) -> f32 {
    let blocks = n_tokens.div_ceil(BLOCK);
    let block_len = pairs * BLOCK;
    let mut total = 0.0f32;
    let mut block = 0;
    while block < blocks {
        let two = block + 1 < blocks;
        let first = &packed[block * block_len..(block + 1) * block_len];
        let second = if two {
            &packed[(block + 1) * block_len..(block + 2) * block_len]
        } else {
            first
        };
        let (max_a, max_b) = block_maxima(first, second, pairs, doc);
        total += _mm512_mask_reduce_add_ps(lane_mask(n_tokens, block), max_a);
        if two {
            total += _mm512_mask_reduce_add_ps(lane_mask(n_tokens, block + 1), max_b);
        }
        block += 2;
    }
    total
}

/// The valid lanes of query block `block`.
#[target_feature(enable = "avx512f")]
fn lane_mask(n_tokens: usize, block: usize) -> __mmask16 {
    let valid = (n_tokens - block * BLOCK).min(BLOCK);
    ((1u32 << valid) - 1) as __mmask16
}

/// 16 bf16 pairs of one query block at pair `p`, as a BF16 vector.
#[target_feature(enable = "avx512f,avx512bf16")]
fn query_vector(block: &[u32], p: usize) -> __m512bh {
    let lanes = &block[p * BLOCK..(p + 1) * BLOCK];
    // SAFETY: `lanes` is exactly 16 u32 = 64 readable bytes (unaligned
    // load), and __m512i and __m512bh are both 512 plain bits.
    unsafe { std::mem::transmute::<__m512i, __m512bh>(_mm512_loadu_si512(lanes.as_ptr().cast())) }
}

/// One document pair broadcast to every lane.
#[target_feature(enable = "avx512f,avx512bf16")]
fn broadcast(pair: u32) -> __m512bh {
    // SAFETY: both types are 512 plain bits.
    unsafe { std::mem::transmute::<__m512i, __m512bh>(_mm512_set1_epi32(pair as i32)) }
}

/// Per-lane maxima over all document tokens of two query blocks' dot
/// products (`second` may repeat `first` when there is one block left; its
/// result is then ignored).
#[target_feature(enable = "avx512f,avx512bf16")]
fn block_maxima(first: &[u32], second: &[u32], pairs: usize, doc: &[u32]) -> (__m512, __m512) {
    let n_doc = doc.len() / pairs;
    let neg = _mm512_set1_ps(f32::NEG_INFINITY);
    let (mut best_a, mut best_b) = ([neg; 4], [neg; 4]);
    let mut t = 0;
    while t + 4 <= n_doc {
        let rows = &doc[t * pairs..(t + 4) * pairs];
        let mut acc_a = [_mm512_setzero_ps(); 4];
        let mut acc_b = [_mm512_setzero_ps(); 4];
        for p in 0..pairs {
            let qa = query_vector(first, p);
            let qb = query_vector(second, p);
            for j in 0..4 {
                let d = broadcast(rows[j * pairs + p]);
                acc_a[j] = _mm512_dpbf16_ps(acc_a[j], qa, d);
                acc_b[j] = _mm512_dpbf16_ps(acc_b[j], qb, d);
            }
        }
        for j in 0..4 {
            best_a[j] = _mm512_max_ps(best_a[j], acc_a[j]);
            best_b[j] = _mm512_max_ps(best_b[j], acc_b[j]);
        }
        t += 4;
    }
    while t < n_doc {
        let row = &doc[t * pairs..(t + 1) * pairs];
        let (mut acc_a, mut acc_b) = (_mm512_setzero_ps(), _mm512_setzero_ps());
        for (p, &pair) in row.iter().enumerate() {
            let d = broadcast(pair);
            acc_a = _mm512_dpbf16_ps(acc_a, query_vector(first, p), d);
            acc_b = _mm512_dpbf16_ps(acc_b, query_vector(second, p), d);
        }
        best_a[0] = _mm512_max_ps(best_a[0], acc_a);
        best_b[0] = _mm512_max_ps(best_b[0], acc_b);
        t += 1;
    }
    (max4(best_a), max4(best_b))
}

#[target_feature(enable = "avx512f")]
fn max4(v: [__m512; 4]) -> __m512 {
    _mm512_max_ps(_mm512_max_ps(v[0], v[1]), _mm512_max_ps(v[2], v[3]))
}

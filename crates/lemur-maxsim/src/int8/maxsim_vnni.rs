//! The AVX512-VNNI int8 MaxSim: 16 query tokens (one block of unsigned
//! bytes) times one broadcast word of four signed document codes per
//! `vpdpbusd`, accumulated exactly in `i32` lanes.
//!
//! The structure is the AVX512-BF16 kernel's (`bf16/avx512.rs`): two query
//! blocks times 12 document tokens (24 chains) or one block times 16, then
//! tail blocks (the last overlapping tokens already seen, harmless for a
//! maximum), common widths as constants, and one line of the next token
//! block (into L1) and of whatever is scored next (into L2) prefetched
//! per step. Each finished token turns its sums into f32 and scales them
//! before the maximum, since every document token has its own scale.

// This module needs `unsafe`: pulp does not wrap the VNNI instructions, so
// the kernel is a `#[target_feature]` function called after run-time
// detection, and its loads use raw intrinsics.
#![allow(unsafe_code)]

use core::arch::x86_64::*;
use core::slice::Chunks;

use crate::prefetch::LINE_BYTES;

use super::tokens::{BLOCK, Int8Doc};

/// Code words per cache line.
const LINE_WORDS: usize = LINE_BYTES / size_of::<u32>();

/// Whether the CPU has AVX-512F and AVX512-VNNI (cached by std).
pub(super) fn available() -> bool {
    std::arch::is_x86_feature_detected!("avx512f")
        && std::arch::is_x86_feature_detected!("avx512vnni")
}

/// MaxSim of a packed query (`[blocks][quads][16]` words, `scales`
/// `[blocks * 16]`) against `doc`, streaming `next` into L2 meanwhile. The
/// caller checked that `doc` is whole non-empty tokens of `quads` words.
pub(super) fn maxsim(
    packed: &[u32],
    scales: &[f32],
    n_tokens: usize,
    quads: usize,
    doc: Int8Doc<'_>,
    next: &[u32],
) -> f32 {
    assert!(available());
    assert!(n_tokens > 0 && quads > 0);
    let blocks = n_tokens.div_ceil(BLOCK);
    assert_eq!(packed.len(), blocks * quads * BLOCK);
    assert_eq!(scales.len(), blocks * BLOCK);
    let n_doc = doc.scales.len();
    assert!(n_doc > 0 && doc.words.len() == n_doc * quads && doc.starts.len() == n_doc);
    // SAFETY: the CPU features the function enables were detected just
    // above, and the slice shapes it relies on were asserted.
    unsafe { maxsim_impl(packed, scales, quads, doc, next) }
}

#[target_feature(enable = "avx512f,avx512vnni")]
fn maxsim_impl(
    packed: &[u32],
    scales: &[f32],
    quads: usize,
    doc: Int8Doc<'_>,
    next: &[u32],
) -> f32 {
    let blocks = scales.len() / BLOCK;
    let block_len = quads * BLOCK;
    // Only the first pass over the document reads it from memory, so only
    // that pass streams the next one in.
    let mut next_lines = next.chunks(LINE_WORDS);
    let mut total = 0.0f32;
    let mut block = 0;
    while block < blocks {
        let group = if blocks - block >= 2 { 2 } else { 1 };
        let query = &packed[block * block_len..(block + group) * block_len];
        let best = if group == 2 {
            by_width::<2, 12, 6>(query, quads, doc, &mut next_lines)
        } else {
            let [best] = by_width::<1, 16, 8>(query, quads, doc, &mut next_lines);
            [best, best]
        };
        for (g, &lanes) in best.iter().take(group).enumerate() {
            // Padding lanes have scale 0 and a finite maximum: they add 0.
            let token_scales = load_scales(&scales[(block + g) * BLOCK..][..BLOCK]);
            total += _mm512_reduce_add_ps(_mm512_mul_ps(lanes, token_scales));
        }
        next_lines = next[..0].chunks(LINE_WORDS);
        block += group;
    }
    total
}

/// Per-lane scaled maxima of `G` query blocks over every document token,
/// with the common widths' word counts as constants.
#[target_feature(enable = "avx512f,avx512vnni")]
fn by_width<const G: usize, const R: usize, const T: usize>(
    query: &[u32],
    quads: usize,
    doc: Int8Doc<'_>,
    next: &mut Chunks<'_, u32>,
) -> [__m512; G] {
    match quads {
        12 => by_length::<G, R, T, 12>(query, quads, doc, next),
        16 => by_length::<G, R, T, 16>(query, quads, doc, next),
        24 => by_length::<G, R, T, 24>(query, quads, doc, next),
        32 => by_length::<G, R, T, 32>(query, quads, doc, next),
        64 => by_length::<G, R, T, 64>(query, quads, doc, next),
        _ => by_length::<G, R, T, 0>(query, quads, doc, next),
    }
}

/// Per-lane maxima in blocks of `R` tokens when the document has that
/// many, else in the largest smaller blocks it fills.
#[inline]
#[target_feature(enable = "avx512f,avx512vnni")]
fn by_length<const G: usize, const R: usize, const T: usize, const P: usize>(
    query: &[u32],
    quads: usize,
    doc: Int8Doc<'_>,
    next: &mut Chunks<'_, u32>,
) -> [__m512; G] {
    let quads = if P == 0 { quads } else { P };
    let scan = Scan { query, quads, doc };
    let mut best = [_mm512_set1_ps(f32::NEG_INFINITY); G];
    let n_tokens = doc.scales.len();
    if n_tokens >= R {
        scan_tokens::<G, R, T, P>(scan, next, &mut best);
    } else if n_tokens >= T {
        scan_tokens::<G, T, T, P>(scan, next, &mut best);
    } else if n_tokens >= 2 {
        scan_tokens::<G, 2, 2, P>(scan, next, &mut best);
    } else {
        token_block::<G, 1, P>(scan, 0, &[], next, &mut best);
    }
    best
}

/// One query group (`G` blocks of `[quads][16]`) against one document.
#[derive(Clone, Copy)]
struct Scan<'a> {
    query: &'a [u32],
    quads: usize,
    doc: Int8Doc<'a>,
}

/// All of a document's tokens (at least `R`) in blocks of `R`, then the
/// rest in blocks of `T <= R`, the last one overlapping tokens already
/// seen. While a block is scored, the block after it is prefetched into L1.
#[inline]
#[target_feature(enable = "avx512f,avx512vnni")]
fn scan_tokens<const G: usize, const R: usize, const T: usize, const P: usize>(
    scan: Scan<'_>,
    next: &mut Chunks<'_, u32>,
    best: &mut [__m512; G],
) {
    let quads = if P == 0 { scan.quads } else { P };
    let words = scan.doc.words;
    let n_tokens = scan.doc.scales.len();
    let block_len = R * quads;
    let full_blocks = n_tokens / R;
    for b in 0..full_blocks {
        let after = ((b + 1) * block_len).min(words.len());
        let ahead = &words[after..words.len().min(after + block_len)];
        token_block::<G, R, P>(scan, b * R, ahead, next, best);
    }
    let tail_start = full_blocks * R;
    for t in 0..(n_tokens - tail_start).div_ceil(T) {
        let start = (tail_start + t * T).min(n_tokens - T);
        token_block::<G, T, P>(scan, start, &[], next, best);
    }
}

/// Document tokens `first..first + R` against `G` query blocks: `G * R`
/// independent accumulators, each word of each token broadcast once and
/// fed to `G` products.
#[inline]
#[target_feature(enable = "avx512f,avx512vnni")]
fn token_block<const G: usize, const R: usize, const P: usize>(
    scan: Scan<'_>,
    first: usize,
    ahead: &[u32],
    next: &mut Chunks<'_, u32>,
    best: &mut [__m512; G],
) {
    let quads = if P == 0 { scan.quads } else { P };
    let tokens = &scan.doc.words[first * quads..][..R * quads];
    let starts = &scan.doc.starts[first..][..R];
    let token_scales = &scan.doc.scales[first..][..R];
    let block_len = quads * BLOCK;
    let blocks: [&[u32]; G] = core::array::from_fn(|g| &scan.query[g * block_len..][..block_len]);
    let mut ahead_lines = ahead.chunks(LINE_WORDS);
    let mut acc: [[__m512i; G]; R] = core::array::from_fn(|r| [_mm512_set1_epi32(starts[r]); G]);
    for q in 0..quads {
        if let Some(line) = ahead_lines.next() {
            crate::prefetch(&line[..1]);
        }
        if let Some(line) = next.next() {
            crate::prefetch_to_l2(&line[..1]);
        }
        let x: [__m512i; G] = core::array::from_fn(|g| load(&blocks[g][q * BLOCK..][..BLOCK]));
        for r in 0..R {
            let codes = _mm512_set1_epi32(tokens[r * quads + q] as i32);
            for g in 0..G {
                acc[r][g] = _mm512_dpbusd_epi32(acc[r][g], x[g], codes);
            }
        }
    }
    for (row, &scale) in acc.iter().zip(token_scales) {
        let scale = _mm512_set1_ps(scale);
        for g in 0..G {
            let scores = _mm512_mul_ps(_mm512_cvtepi32_ps(row[g]), scale);
            best[g] = _mm512_max_ps(best[g], scores);
        }
    }
}

/// Exactly 16 words as a vector.
#[inline]
#[target_feature(enable = "avx512f")]
fn load(words: &[u32]) -> __m512i {
    assert_eq!(words.len(), BLOCK);
    // SAFETY: `words` is 16 u32 = 64 readable bytes (unaligned load).
    unsafe { _mm512_loadu_si512(words.as_ptr().cast()) }
}

/// Exactly 16 scales as a vector.
#[inline]
#[target_feature(enable = "avx512f")]
fn load_scales(scales: &[f32]) -> __m512 {
    assert_eq!(scales.len(), BLOCK);
    // SAFETY: `scales` is 16 f32 = 64 readable bytes (unaligned load).
    unsafe { _mm512_loadu_ps(scales.as_ptr()) }
}

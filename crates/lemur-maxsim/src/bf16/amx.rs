//! The AMX-BF16 MaxSim kernel (Intel Sapphire Rapids and later).
//!
//! AMX multiplies whole tiles: `tdpbf16ps` adds a 16 x 32 bf16 tile times a
//! 32 x 16 one into a 16 x 16 f32 tile, 8,192 FLOP per instruction, about
//! five times what the AVX-512 FMAs of a core reach. The storage this
//! crate already has is the tiles' own layout, so nothing is copied:
//!
//! - the left tile is 16 document tokens x 32 values, read straight from
//!   [`Bf16Vectors`](super::Bf16Vectors) rows (stride one token);
//! - the right tile is 32 values x 16 query tokens as bf16 pairs, which is
//!   exactly a block of [`PackedQueryBf16`](super::PackedQueryBf16)'s
//!   `[blocks][pairs][16]` layout (stride 64 bytes);
//! - the product is 16 document tokens x 16 query tokens, so a query
//!   token's best match is the maximum down a column: 16 `vmaxps` over the
//!   tile's rows once it is stored.
//!
//! The same tiles give the dense products `f W^T` ([`dot_products`]): `W`
//! rows are the left tiles, the query features in the packed layout the
//! right ones, and the 16 x 16 products are written out transposed.
//!
//! Each step scores two 16-token document blocks against one or two query
//! blocks (up to four accumulator tiles, two document tiles and two query
//! tiles: all eight tile registers), then folds the stored products into
//! per-lane maxima with AVX-512. A document's last block overlaps the one
//! before it (the maximum is idempotent), so any length of at least 16
//! tokens runs here; shorter documents, and widths that are not a multiple
//! of 32 values, run the `vdpbf16ps` kernel instead.
//!
//! Linux hands out AMX state only to processes that ask for it
//! (`arch_prctl(ARCH_REQ_XCOMP_PERM)`); [`available`] asks once. Each call
//! loads the tile configuration (other AMX code in the thread may have
//! changed it) but does not release the tiles afterwards: `tilerelease`
//! per document cost about a fifth of the L2-resident throughput, and
//! Linux clears AMX state itself before a core idles.

// This module needs `unsafe`: Rust's AMX intrinsics are unstable, so the
// tile instructions are inline assembly on pointers the safe wrappers have
// bounds-checked, plus one raw system call to ask Linux for AMX state.
#![allow(unsafe_code)]

use core::arch::asm;
use core::arch::x86_64::*;
use std::sync::OnceLock;

use crate::prefetch::LINE_BYTES;

use super::BLOCK;

/// Document tokens (and f32 products) per tile row block.
const TILE_ROWS: usize = 16;
/// bf16 pairs per tile row: 64 bytes.
const TILE_PAIRS: usize = 16;
/// Bytes per tile row (all eight tiles are 16 rows x 64 bytes).
const ROW_BYTES: usize = 64;
/// bf16 pairs per cache line.
const LINE_PAIRS: usize = LINE_BYTES / size_of::<u32>();
/// Bytes of one right-hand (query) tile: 16 pair rows x 16 lanes.
const QUERY_TILE_BYTES: usize = TILE_PAIRS * BLOCK * size_of::<u32>();

/// Whether this CPU and OS run the AMX-BF16 kernel: AMX-TILE and AMX-BF16
/// in CPUID, the `vdpbf16ps` kernel for what AMX does not take, and Linux
/// granting the process tile state. Asked once per process.
pub(super) fn available() -> bool {
    static AVAILABLE: OnceLock<bool> = OnceLock::new();
    *AVAILABLE.get_or_init(|| super::avx512::available() && cpu_has_amx_bf16() && request_tiles())
}

/// CPUID leaf 7, sub-leaf 0, EDX bits 22 (AMX-BF16) and 24 (AMX-TILE).
fn cpu_has_amx_bf16() -> bool {
    if __cpuid(0).eax < 7 {
        return false;
    }
    let edx = __cpuid_count(7, 0).edx;
    edx & (1 << 22) != 0 && edx & (1 << 24) != 0
}

/// Asks Linux for permission to use tile data (XFEATURE 18); the kernel
/// refuses when it or the hypervisor does not support AMX.
#[cfg(target_os = "linux")]
fn request_tiles() -> bool {
    const SYS_ARCH_PRCTL: isize = 158;
    const ARCH_REQ_XCOMP_PERM: usize = 0x1023;
    const XFEATURE_XTILEDATA: usize = 18;
    let ret: isize;
    // SAFETY: arch_prctl(ARCH_REQ_XCOMP_PERM) only changes which extended
    // states this process may use; it reads and writes no memory of ours.
    // The syscall instruction clobbers rcx and r11, declared here.
    unsafe {
        asm!(
            "syscall",
            inlateout("rax") SYS_ARCH_PRCTL => ret,
            in("rdi") ARCH_REQ_XCOMP_PERM,
            in("rsi") XFEATURE_XTILEDATA,
            lateout("rcx") _,
            lateout("r11") _,
            options(nostack),
        );
    }
    ret == 0
}

/// Other systems are not asked (and not used).
#[cfg(not(target_os = "linux"))]
fn request_tiles() -> bool {
    false
}

/// Whether rows of `pairs` pairs fill whole tiles.
#[inline]
pub(super) fn fits_width(pairs: usize) -> bool {
    pairs.is_multiple_of(TILE_PAIRS)
}

/// Whether a document of `n_tokens` tokens of `pairs` pairs runs here.
#[inline]
pub(super) fn fits(pairs: usize, n_tokens: usize) -> bool {
    fits_width(pairs) && n_tokens >= TILE_ROWS
}

/// The tile configuration: palette 1, tiles 0..8 all 16 rows x 64 bytes.
#[repr(C, align(64))]
struct TileConfig([u8; 64]);

const CONFIG: TileConfig = {
    let mut bytes = [0u8; 64];
    bytes[0] = 1;
    let mut tile = 0;
    while tile < 8 {
        bytes[16 + 2 * tile] = ROW_BYTES as u8;
        bytes[48 + tile] = TILE_ROWS as u8;
        tile += 1;
    }
    TileConfig(bytes)
};

/// Loads [`CONFIG`]: every call does, since other AMX code in the thread
/// may have loaded another configuration.
fn configure() {
    assert!(available());
    // SAFETY: CONFIG is a valid palette-1 configuration (64 readable,
    // aligned bytes); `available` saw AMX-TILE and the OS grant.
    unsafe { asm!("ldtilecfg [{}]", in(reg) CONFIG.0.as_ptr(), options(nostack, readonly)) };
}

/// Four stored 16 x 16 f32 product tiles.
#[repr(C, align(64))]
struct Products([[f32; TILE_ROWS * BLOCK]; 4]);

/// MaxSim of a packed query (`[blocks][pairs][16]` bf16 pairs) against a
/// document of `doc.len() / pairs` tokens, streaming `next` (what is scored
/// after it; may be empty) into L2 meanwhile. The caller checked
/// [`available`] and [`fits`].
pub(super) fn maxsim(
    packed: &[u32],
    n_tokens: usize,
    pairs: usize,
    doc: &[u32],
    next: &[u32],
) -> f32 {
    assert!(available());
    assert!(n_tokens > 0);
    assert_eq!(packed.len(), n_tokens.div_ceil(BLOCK) * pairs * BLOCK);
    assert!(doc.len().is_multiple_of(pairs.max(1)) && fits(pairs, doc.len() / pairs));
    // SAFETY: the CPU features and tile permission the function relies on
    // were checked just above, and so were the slice shapes that bound
    // every tile load.
    unsafe { maxsim_impl(packed, n_tokens, pairs, doc, next) }
}

#[target_feature(enable = "avx512f")]
fn maxsim_impl(packed: &[u32], n_tokens: usize, pairs: usize, doc: &[u32], next: &[u32]) -> f32 {
    configure();
    let doc_tokens = doc.len() / pairs;
    let blocks = n_tokens.div_ceil(BLOCK);
    let block_len = pairs * BLOCK;
    let doc_blocks = doc_tokens.div_ceil(TILE_ROWS);
    let steps = doc_blocks.div_ceil(2);
    // The next document streams in during the first pass over this one,
    // spread evenly over its steps.
    let mut next_lines = next.chunks(LINE_PAIRS);
    let lines_per_step = next_lines.len().div_ceil(steps);
    let mut products = Products([[0.0; TILE_ROWS * BLOCK]; 4]);
    let mut total = 0.0f32;
    let mut block = 0;
    while block < blocks {
        let group = if blocks - block >= 2 { 2 } else { 1 };
        let query = &packed[block * block_len..(block + group) * block_len];
        let mut best = [_mm512_set1_ps(f32::NEG_INFINITY); 2];
        for step in 0..steps {
            for line in next_lines.by_ref().take(lines_per_step) {
                crate::prefetch_to_l2(&line[..1]);
            }
            // The last block overlaps the one before it; an odd count
            // ends with a step of one block.
            let start = |b: usize| (b * TILE_ROWS).min(doc_tokens - TILE_ROWS) * pairs;
            let first = &doc[start(2 * step)..][..TILE_ROWS * pairs];
            if 2 * step + 1 == doc_blocks {
                if group == 2 {
                    one_by_two(first, query, pairs, &mut products);
                    best[0] = fold(best[0], &products.0[0]);
                    best[1] = fold(best[1], &products.0[1]);
                } else {
                    two_by_one([first, first], query, pairs, &mut products);
                    best[0] = fold(best[0], &products.0[0]);
                }
                continue;
            }
            let docs = [first, &doc[start(2 * step + 1)..][..TILE_ROWS * pairs]];
            if group == 2 {
                two_by_two(docs, query, pairs, &mut products);
                best[0] = fold(best[0], &products.0[0]);
                best[0] = fold(best[0], &products.0[2]);
                best[1] = fold(best[1], &products.0[1]);
                best[1] = fold(best[1], &products.0[3]);
            } else {
                two_by_one(docs, query, pairs, &mut products);
                best[0] = fold(best[0], &products.0[0]);
                best[0] = fold(best[0], &products.0[1]);
            }
        }
        for (g, &lanes) in best.iter().take(group).enumerate() {
            let valid = (n_tokens - (block + g) * BLOCK).min(BLOCK);
            total += _mm512_mask_reduce_add_ps(((1u32 << valid) - 1) as __mmask16, lanes);
        }
        block += group;
    }
    total
}

/// `W` rows per group: a group's rows stay in L2 while every query block
/// passes over them.
const GROUP_BLOCKS: usize = 4;

/// `out[i * n_b + j] = <a_i, b_j>` for the `n_a` rows of `a`, given in the
/// tile layout (`[blocks][per_row][16]`, padding lanes zero), and the
/// `n_b = b.len() / per_row` rows of `b`. The caller checked [`available`]
/// and that `per_row` is a multiple of 16. Any `n_b` runs here, so that a
/// score never depends on where a block of `b` ends.
pub(super) fn dot_products(
    a_tiles: &[u32],
    n_a: usize,
    b: &[u32],
    per_row: usize,
    out: &mut [f32],
) {
    assert!(n_a > 0 && per_row > 0 && fits_width(per_row) && b.len().is_multiple_of(per_row));
    assert_eq!(a_tiles.len(), n_a.div_ceil(BLOCK) * per_row * BLOCK);
    let n_b = b.len() / per_row;
    assert_eq!(out.len(), n_a * n_b);
    if n_b == 0 {
        return;
    }
    if n_b < TILE_ROWS {
        // Too few rows for one tile: score them zero-padded to 16 rows
        // (each product is computed exactly as it would be in a full tile).
        let mut padded = b.to_vec();
        padded.resize(TILE_ROWS * per_row, 0);
        let mut wide = vec![0.0; n_a * TILE_ROWS];
        dot_products(a_tiles, n_a, &padded, per_row, &mut wide);
        for (row, wide_row) in out.chunks_exact_mut(n_b).zip(wide.chunks_exact(TILE_ROWS)) {
            row.copy_from_slice(&wide_row[..n_b]);
        }
        return;
    }
    configure();
    let block_len = per_row * BLOCK;
    let a_blocks = n_a.div_ceil(BLOCK);
    let b_blocks = n_b.div_ceil(TILE_ROWS);
    // The last block of `b` overlaps the one before it: its shared rows
    // are computed twice, identically.
    let start = |block: usize| (block * TILE_ROWS).min(n_b - TILE_ROWS);
    let rows = |block: usize| &b[start(block) * per_row..][..TILE_ROWS * per_row];
    let mut products = Products([[0.0; TILE_ROWS * BLOCK]; 4]);
    // A product tile is `[b row][a row]`: written transposed.
    let mut scatter = |tile: usize, b_block: usize, a_block: usize, products: &Products| {
        let valid = (n_a - a_block * BLOCK).min(BLOCK);
        let first = start(b_block);
        for (r, row) in products.0[tile].chunks_exact(BLOCK).enumerate() {
            for (c, &value) in row[..valid].iter().enumerate() {
                out[(a_block * BLOCK + c) * n_b + first + r] = value;
            }
        }
    };
    for group in (0..b_blocks).step_by(GROUP_BLOCKS) {
        let group_end = (group + GROUP_BLOCKS).min(b_blocks);
        for a_block in (0..a_blocks).step_by(2) {
            let two_a = a_block + 1 < a_blocks;
            let a = &a_tiles[a_block * block_len..(a_block + 1 + usize::from(two_a)) * block_len];
            for b_block in (group..group_end).step_by(2) {
                let two_b = b_block + 1 < group_end;
                match (two_b, two_a) {
                    (true, true) => {
                        two_by_two(
                            [rows(b_block), rows(b_block + 1)],
                            a,
                            per_row,
                            &mut products,
                        );
                        scatter(0, b_block, a_block, &products);
                        scatter(1, b_block, a_block + 1, &products);
                        scatter(2, b_block + 1, a_block, &products);
                        scatter(3, b_block + 1, a_block + 1, &products);
                    }
                    (true, false) => {
                        two_by_one(
                            [rows(b_block), rows(b_block + 1)],
                            a,
                            per_row,
                            &mut products,
                        );
                        scatter(0, b_block, a_block, &products);
                        scatter(1, b_block + 1, a_block, &products);
                    }
                    (false, true) => {
                        one_by_two(rows(b_block), a, per_row, &mut products);
                        scatter(0, b_block, a_block, &products);
                        scatter(1, b_block, a_block + 1, &products);
                    }
                    (false, false) => {
                        two_by_one([rows(b_block), rows(b_block)], a, per_row, &mut products);
                        scatter(0, b_block, a_block, &products);
                    }
                }
            }
        }
    }
}

/// `best` raised to each column's maximum over a stored 16 x 16 tile.
#[inline]
#[target_feature(enable = "avx512f")]
fn fold(best: __m512, tile: &[f32; TILE_ROWS * BLOCK]) -> __m512 {
    let mut rows = tile.chunks_exact(BLOCK).map(|row| {
        // SAFETY: each row is 16 f32 = 64 readable bytes (unaligned load).
        unsafe { _mm512_loadu_ps(row.as_ptr()) }
    });
    let mut acc = [best, rows.next().unwrap_or(best)];
    for (i, row) in rows.enumerate() {
        acc[i % 2] = _mm512_max_ps(acc[i % 2], row);
    }
    _mm512_max_ps(acc[0], acc[1])
}

/// Two document blocks (16 tokens each, `pairs` pairs per token) times two
/// query blocks (`[2][pairs][16]`), the four 16 x 16 products stored as
/// `products[2 * doc_block + query_block]`.
#[inline]
fn two_by_two(docs: [&[u32]; 2], query: &[u32], pairs: usize, products: &mut Products) {
    assert!(docs.iter().all(|d| d.len() == TILE_ROWS * pairs));
    assert_eq!(query.len(), 2 * pairs * BLOCK);
    assert!(pairs > 0 && pairs.is_multiple_of(TILE_PAIRS));
    let doc_stride = pairs * size_of::<u32>();
    // SAFETY: every tile load reads 16 rows of 64 bytes. Document tile `c`
    // of block `b` starts at `docs[b][c * 16]` with a stride of one token,
    // so it ends at the block's last token's pair `c * 16 + 15 < pairs`;
    // query tile `c` of block `g` is `query[(g * pairs + c * 16) * 16..]`
    // for 16 x 16 pairs, inside `query`. The stores write the four tiles
    // of `products` (4 x 1 KiB). The tiles were configured by the caller.
    unsafe {
        asm!(
            "tilezero tmm0",
            "tilezero tmm1",
            "tilezero tmm2",
            "tilezero tmm3",
            "2:",
            "tileloadd tmm4, [{a0} + {sa} * 1]",
            "tileloadd tmm6, [{b0} + {sb} * 1]",
            "tileloadd tmm5, [{a1} + {sa} * 1]",
            "tileloadd tmm7, [{b1} + {sb} * 1]",
            "tdpbf16ps tmm0, tmm4, tmm6",
            "tdpbf16ps tmm1, tmm4, tmm7",
            "tdpbf16ps tmm2, tmm5, tmm6",
            "tdpbf16ps tmm3, tmm5, tmm7",
            "add {a0}, 64",
            "add {a1}, 64",
            "add {b0}, {qt}",
            "add {b1}, {qt}",
            "dec {n}",
            "jnz 2b",
            "tilestored [{c} + {sb} * 1], tmm0",
            "tilestored [{c} + {sb} * 1 + 1024], tmm1",
            "tilestored [{c} + {sb} * 1 + 2048], tmm2",
            "tilestored [{c} + {sb} * 1 + 3072], tmm3",
            a0 = inout(reg) docs[0].as_ptr() => _,
            a1 = inout(reg) docs[1].as_ptr() => _,
            b0 = inout(reg) query.as_ptr() => _,
            b1 = inout(reg) query[pairs * BLOCK..].as_ptr() => _,
            n = inout(reg) pairs / TILE_PAIRS => _,
            sa = in(reg) doc_stride,
            sb = in(reg) ROW_BYTES,
            qt = const QUERY_TILE_BYTES,
            c = in(reg) products.0.as_mut_ptr(),
            options(nostack),
        );
    }
}

/// Two document blocks times one query block (`[pairs][16]`), the products
/// stored as `products[doc_block]`.
#[inline]
fn two_by_one(docs: [&[u32]; 2], query: &[u32], pairs: usize, products: &mut Products) {
    assert!(docs.iter().all(|d| d.len() == TILE_ROWS * pairs));
    assert_eq!(query.len(), pairs * BLOCK);
    assert!(pairs > 0 && pairs.is_multiple_of(TILE_PAIRS));
    let doc_stride = pairs * size_of::<u32>();
    // SAFETY: as in `two_by_two`, with one query block and two stores.
    unsafe {
        asm!(
            "tilezero tmm0",
            "tilezero tmm1",
            "2:",
            "tileloadd tmm4, [{a0} + {sa} * 1]",
            "tileloadd tmm6, [{b0} + {sb} * 1]",
            "tileloadd tmm5, [{a1} + {sa} * 1]",
            "tdpbf16ps tmm0, tmm4, tmm6",
            "tdpbf16ps tmm1, tmm5, tmm6",
            "add {a0}, 64",
            "add {a1}, 64",
            "add {b0}, {qt}",
            "dec {n}",
            "jnz 2b",
            "tilestored [{c} + {sb} * 1], tmm0",
            "tilestored [{c} + {sb} * 1 + 1024], tmm1",
            a0 = inout(reg) docs[0].as_ptr() => _,
            a1 = inout(reg) docs[1].as_ptr() => _,
            b0 = inout(reg) query.as_ptr() => _,
            n = inout(reg) pairs / TILE_PAIRS => _,
            sa = in(reg) doc_stride,
            sb = in(reg) ROW_BYTES,
            qt = const QUERY_TILE_BYTES,
            c = in(reg) products.0.as_mut_ptr(),
            options(nostack),
        );
    }
}

/// One document block times two query blocks, the products stored as
/// `products[query_block]`.
#[inline]
fn one_by_two(doc: &[u32], query: &[u32], pairs: usize, products: &mut Products) {
    assert_eq!(doc.len(), TILE_ROWS * pairs);
    assert_eq!(query.len(), 2 * pairs * BLOCK);
    assert!(pairs > 0 && pairs.is_multiple_of(TILE_PAIRS));
    let doc_stride = pairs * size_of::<u32>();
    // SAFETY: as in `two_by_two`, with one document block and two stores.
    unsafe {
        asm!(
            "tilezero tmm0",
            "tilezero tmm1",
            "2:",
            "tileloadd tmm4, [{a0} + {sa} * 1]",
            "tileloadd tmm6, [{b0} + {sb} * 1]",
            "tileloadd tmm7, [{b1} + {sb} * 1]",
            "tdpbf16ps tmm0, tmm4, tmm6",
            "tdpbf16ps tmm1, tmm4, tmm7",
            "add {a0}, 64",
            "add {b0}, {qt}",
            "add {b1}, {qt}",
            "dec {n}",
            "jnz 2b",
            "tilestored [{c} + {sb} * 1], tmm0",
            "tilestored [{c} + {sb} * 1 + 1024], tmm1",
            a0 = inout(reg) doc.as_ptr() => _,
            b0 = inout(reg) query.as_ptr() => _,
            b1 = inout(reg) query[pairs * BLOCK..].as_ptr() => _,
            n = inout(reg) pairs / TILE_PAIRS => _,
            sa = in(reg) doc_stride,
            sb = in(reg) ROW_BYTES,
            qt = const QUERY_TILE_BYTES,
            c = in(reg) products.0.as_mut_ptr(),
            options(nostack),
        );
    }
}

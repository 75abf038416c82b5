//! The feature map `psi`, its batched forward pass and query features.

use rayon::prelude::*;

use crate::activation::{Activation, gelu, layer_norm};
use crate::block::{Block, check_values};
use crate::error::{MlpError, Param};
use crate::gemm::matmul_a_b_in_parts;

/// Query features are `sum_x psi(x) / 32`: the original's constant. Any
/// positive scale ranks the same; keeping it makes scores comparable with
/// the original's.
pub const QUERY_FEATURE_SCALE: f32 = 1.0 / 32.0;

/// Token rows per forward chunk: large enough for an efficient GEMM, small
/// enough that the `[rows, h]` activations stay in L2 and memory stays
/// bounded however many tokens a batch has.
const CHUNK_ROWS: usize = 256;

/// Which of the two feature-map families this is.
#[derive(Debug, Clone, PartialEq)]
enum Kind {
    /// Learned blocks.
    Mlp {
        blocks: Vec<Block>,
        activation: Activation,
    },
    /// `LN_noaffine(sqrt(2/h) * gelu(x R))`, `R: [d, h]` row-major.
    Random { projection: Vec<f32> },
}

/// The LEMUR feature map `psi: R^d -> R^h`.
///
/// Built only through validating constructors ([`FeatureMap::mlp`],
/// [`FeatureMap::random`]), so a `FeatureMap` always has connected,
/// finite parameters and its forward pass cannot fail.
#[derive(Debug, Clone, PartialEq)]
pub struct FeatureMap {
    kind: Kind,
    input_dim: usize,
    output_dim: usize,
}

impl FeatureMap {
    /// A learned map of `Linear -> LayerNorm -> activation` blocks.
    ///
    /// Fails if there are no blocks or a block's input width differs from
    /// the previous block's output width.
    pub fn mlp(blocks: Vec<Block>, activation: Activation) -> Result<FeatureMap, MlpError> {
        let (first, last) = match (blocks.first(), blocks.last()) {
            (Some(first), Some(last)) => (first.in_dim, last.out_dim),
            _ => return Err(MlpError::NoBlocks),
        };
        for (index, pair) in blocks.windows(2).enumerate() {
            if pair[1].in_dim != pair[0].out_dim {
                return Err(MlpError::Chain {
                    block: index + 1,
                    expected_in: pair[0].out_dim,
                    found_in: pair[1].in_dim,
                });
            }
        }
        Ok(FeatureMap {
            kind: Kind::Mlp { blocks, activation },
            input_dim: first,
            output_dim: last,
        })
    }

    /// The random-feature ("ELM") map with projection `R`, row-major
    /// `[input_dim, output_dim]` (the transpose of a Linear weight).
    pub fn random(
        projection: Vec<f32>,
        input_dim: usize,
        output_dim: usize,
    ) -> Result<FeatureMap, MlpError> {
        if input_dim == 0 || output_dim == 0 {
            return Err(MlpError::ZeroWidth {
                block: 0,
                in_dim: input_dim,
                out_dim: output_dim,
            });
        }
        check_values(0, Param::Weight, &projection, input_dim * output_dim)?;
        Ok(FeatureMap {
            kind: Kind::Random { projection },
            input_dim,
            output_dim,
        })
    }

    /// Token width `d`.
    pub fn input_dim(&self) -> usize {
        self.input_dim
    }

    /// Feature width `h`.
    pub fn output_dim(&self) -> usize {
        self.output_dim
    }

    /// The learned blocks, or `None` for the random-feature map.
    pub fn blocks(&self) -> Option<&[Block]> {
        match &self.kind {
            Kind::Mlp { blocks, .. } => Some(blocks),
            Kind::Random { .. } => None,
        }
    }

    /// The activation of a learned map (GELU for the random-feature map).
    pub fn activation(&self) -> Activation {
        match &self.kind {
            Kind::Mlp { activation, .. } => *activation,
            Kind::Random { .. } => Activation::Gelu,
        }
    }

    /// The random projection `[input_dim, output_dim]`, or `None` for a
    /// learned map.
    pub fn projection(&self) -> Option<&[f32]> {
        match &self.kind {
            Kind::Random { projection } => Some(projection),
            Kind::Mlp { .. } => None,
        }
    }

    /// `psi` of every row of `tokens` (`[rows, input_dim]`) into `out`
    /// (`[rows, output_dim]`), on the calling thread.
    ///
    /// # Panics
    ///
    /// If the slice lengths do not match the widths.
    #[track_caller]
    pub fn forward(&self, tokens: &[f32], out: &mut [f32]) {
        self.forward_in_parts(tokens, out, 1);
    }

    /// [`FeatureMap::forward`] in chunks of rows, each spread over `parts`
    /// rayon tasks of the current pool when `parts` is more than one.
    #[track_caller]
    fn forward_in_parts(&self, tokens: &[f32], out: &mut [f32], parts: usize) {
        assert_eq!(tokens.len() % self.input_dim, 0, "tokens is not [rows, d]");
        let rows = tokens.len() / self.input_dim;
        assert_eq!(out.len(), rows * self.output_dim, "out is not [rows, h]");
        let mut scratch = [Vec::new(), Vec::new()];
        for (chunk, out_chunk) in tokens
            .chunks(CHUNK_ROWS * self.input_dim)
            .zip(out.chunks_mut(CHUNK_ROWS * self.output_dim))
        {
            self.forward_chunk(chunk, out_chunk, &mut scratch, parts);
        }
    }

    /// One chunk of rows; `scratch` holds intermediate activations of
    /// multi-block maps and keeps its memory between calls. With more than
    /// one of `parts`, each product is split by columns and the row-wise
    /// steps by rows into that many rayon tasks; every value is computed
    /// as with one.
    fn forward_chunk(
        &self,
        tokens: &[f32],
        out: &mut [f32],
        scratch: &mut [Vec<f32>; 2],
        parts: usize,
    ) {
        let rows = tokens.len() / self.input_dim;
        match &self.kind {
            Kind::Random { projection } => {
                let h = self.output_dim;
                matmul_a_b_in_parts(out, tokens, projection, rows, self.input_dim, h, parts);
                let scale = (2.0 / h as f32).sqrt();
                each_row(out, h, parts, RowStep::Random { scale });
            }
            Kind::Mlp { blocks, activation } => {
                // Block i writes into `even` or `odd` by its parity (the
                // last one into `out`) and reads the previous block's.
                let [even, odd] = scratch;
                for (index, block) in blocks.iter().enumerate() {
                    let is_last = index + 1 == blocks.len();
                    let width = block.out_dim;
                    let (input, dst): (&[f32], &mut [f32]) = match (index, is_last, index % 2) {
                        (0, true, _) => (tokens, &mut *out),
                        (0, false, _) => {
                            even.resize(rows * width, 0.0);
                            (tokens, &mut even[..])
                        }
                        (_, true, 1) => (&even[..], &mut *out),
                        (_, true, _) => (&odd[..], &mut *out),
                        (_, false, 1) => {
                            odd.resize(rows * width, 0.0);
                            (&even[..], &mut odd[..])
                        }
                        (_, false, _) => {
                            even.resize(rows * width, 0.0);
                            (&odd[..], &mut even[..])
                        }
                    };
                    let weight = &block.weight_by_input;
                    matmul_a_b_in_parts(dst, input, weight, rows, block.in_dim, width, parts);
                    let step = RowStep::Block {
                        block,
                        activation: *activation,
                    };
                    each_row(dst, width, parts, step);
                }
            }
        }
    }

    /// Query features `f = sum_x psi(x) * QUERY_FEATURE_SCALE` for a batch
    /// of queries stored raggedly: `tokens` `[n_tokens, d]` with query `i`
    /// at rows `offsets[i]..offsets[i + 1]`. Writes `[n_queries, h]` into
    /// `out`.
    ///
    /// With `parallel`, groups of whole queries (about 256 tokens each) are
    /// processed as rayon tasks in the current pool, each with a sequential
    /// GEMM; with fewer groups than threads, each group's products are
    /// split by columns over the pool instead. Neither changes a row's
    /// `psi` or the order of the sums, so the result is identical for any
    /// pool size and however the queries are batched.
    ///
    /// # Panics
    ///
    /// If the offsets are not non-decreasing from 0 to the token rows, or a
    /// length does not match.
    #[track_caller]
    pub fn query_features(
        &self,
        tokens: &[f32],
        offsets: &[usize],
        out: &mut [f32],
        parallel: bool,
    ) {
        let d = self.input_dim;
        let h = self.output_dim;
        assert!(
            !offsets.is_empty() && offsets[0] == 0,
            "offsets must start at 0"
        );
        assert!(
            offsets.windows(2).all(|w| w[0] <= w[1]),
            "offsets must not decrease"
        );
        assert_eq!(
            offsets[offsets.len() - 1] * d,
            tokens.len(),
            "offsets must end at the token rows"
        );
        let n_queries = offsets.len() - 1;
        assert_eq!(out.len(), n_queries * h, "out is not [n_queries, h]");

        // Group consecutive queries into ~CHUNK_ROWS-token tasks.
        let mut groups = Vec::new();
        let mut start = 0;
        while start < n_queries {
            let mut end = start + 1;
            while end < n_queries && offsets[end + 1] - offsets[start] <= CHUNK_ROWS {
                end += 1;
            }
            groups.push(start..end);
            start = end;
        }
        // `split` > 1 spreads one group's forward pass over the pool (its
        // products by columns, its row-wise steps by rows): a single query
        // then uses every thread. No value changes with the split, and the
        // sum below runs in token order either way.
        let run =
            |group: &std::ops::Range<usize>, out: &mut [f32], psi: &mut Vec<f32>, split: usize| {
                let (first, last) = (offsets[group.start], offsets[group.end]);
                let rows = last - first;
                psi.resize(rows * h, 0.0);
                self.forward_in_parts(&tokens[first * d..last * d], psi, split);
                out.fill(0.0);
                for (query, out_row) in group.clone().zip(out.chunks_exact_mut(h)) {
                    for token in offsets[query]..offsets[query + 1] {
                        let row = &psi[(token - first) * h..][..h];
                        out_row.iter_mut().zip(row).for_each(|(o, v)| *o += v);
                    }
                    out_row.iter_mut().for_each(|o| *o *= QUERY_FEATURE_SCALE);
                }
            };
        let mut pieces: Vec<&mut [f32]> = Vec::with_capacity(groups.len());
        let mut rest = out;
        for group in &groups {
            let (head, tail) = rest.split_at_mut(group.len() * h);
            pieces.push(head);
            rest = tail;
        }
        let threads = rayon::current_num_threads();
        if parallel && groups.len() >= threads {
            groups
                .par_iter()
                .zip(pieces.into_par_iter())
                .for_each_init(Vec::new, |psi, (group, piece)| run(group, piece, psi, 1));
        } else {
            // Fewer groups than threads (a handful of queries): each
            // group's forward pass is spread over the pool instead.
            let split = if parallel { threads } else { 1 };
            let mut psi = Vec::new();
            for (group, piece) in groups.iter().zip(pieces) {
                run(group, piece, &mut psi, split);
            }
        }
    }
}

/// What the forward pass does to each row after a product.
#[derive(Clone, Copy)]
enum RowStep<'a> {
    /// The random-feature map's `LN_noaffine(scale * gelu(x))`.
    Random { scale: f32 },
    /// A learned block's bias, LayerNorm and activation.
    Block {
        block: &'a Block,
        activation: Activation,
    },
}

impl RowStep<'_> {
    #[inline(always)]
    fn apply(self, row: &mut [f32]) {
        match self {
            RowStep::Random { scale } => {
                for v in row.iter_mut() {
                    *v = scale * gelu(*v);
                }
                layer_norm(row, None);
            }
            RowStep::Block { block, activation } => {
                for (v, b) in row.iter_mut().zip(&block.bias) {
                    *v += b;
                }
                layer_norm(row, Some((&block.ln_gain, &block.ln_bias)));
                activation.apply(row);
            }
        }
    }
}

/// Applies `step` to every `width`-wide row of `values`, compiled for the
/// CPU's SIMD level, in `parts` rayon tasks of whole rows when `parts` > 1.
fn each_row(values: &mut [f32], width: usize, parts: usize, step: RowStep<'_>) {
    let rows = values.len() / width;
    let rows_per_part = rows.div_ceil(parts.max(1)).max(1);
    let run = |part: &mut [f32]| {
        crate::simd::dispatch(
            #[inline(always)]
            || {
                for row in part.chunks_exact_mut(width) {
                    step.apply(row);
                }
            },
        )
    };
    if rows_per_part >= rows {
        run(values);
    } else {
        values.par_chunks_mut(rows_per_part * width).for_each(run);
    }
}

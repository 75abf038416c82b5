//! Saving and opening index directories (format: `docs/FORMAT.md`).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use lemur_io::{MappedF32, Store, StoreWriter, TargetNorm};
use lemur_maxsim::int8::Int8Matrix;
use lemur_maxsim::{MultiVectors, QuantizedVectors};
use lemur_mlp::{Activation, Block, FeatureMap};
use serde::{Deserialize, Serialize};

use crate::build::BuildConfig;
use crate::error::IndexError;
use crate::first_stage::{GraphStage, MAX_GRAPH_DEGREE, MAX_REFINE_FACTOR};
use crate::index::{Index, SolverState};
use crate::storage::{Compressed, MAX_RESCORE_DEPTH, TokenCodec, WeightCodec, code_bits};
use crate::weights::DocWeights;
use lemur_ann::{GraphConfig, GraphParts, ProjectedGraph};

/// The metadata part of the manifest. The top-level shape fields
/// (`n_docs`, `n_tokens`, `first_stage`, `storage`) describe the base
/// segment, whose arrays have bare names (`W`, `tokens`, ...); `segments`
/// lists the segments appended since and the ids and deletions of all.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Metadata {
    pub(crate) dim: usize,
    pub(crate) n_docs: usize,
    pub(crate) n_tokens: usize,
    pub(crate) feature_dim: usize,
    feature_map: FeatureMapMeta,
    target_norm: Option<NormMeta>,
    solver_norm: Option<NormMeta>,
    pub(crate) build_config: Option<BuildConfig>,
    /// What a layer above the index stores with it in the same generation
    /// (the text index's document ids), so both change in one commit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) extra: Option<serde_json::Value>,
    /// The graph first stage, when the index has one (arrays `ann_*`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) first_stage: Option<GraphMeta>,
    /// The compressed forms, when the index has them (arrays
    /// `token_codes`, `token_scales`, `W_codes`, `W_scales`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) storage: Option<StorageMeta>,
    /// Document ids, deletions and appended segments
    /// (`crate::segments`); absent in an index that was only ever saved
    /// whole, whose ids are its positions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) segments: Option<SegmentsMeta>,
}

/// The segments of an index directory beyond its base segment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SegmentsMeta {
    /// The id the next added document gets: ids are never reused.
    pub(crate) next_id: u32,
    /// The base segment's ids and deletions.
    pub(crate) base: SegmentIdsMeta,
    /// Segments appended after the base, oldest first.
    pub(crate) appended: Vec<SegmentMeta>,
}

/// A segment's document ids and deletions.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SegmentIdsMeta {
    /// The segment's documents have ids `first_id..first_id + n_docs`;
    /// `None`: array `doc_ids` lists them (increasing).
    pub(crate) first_id: Option<u32>,
    /// Positions deleted (array `deleted`, increasing; absent when 0).
    pub(crate) n_deleted: usize,
}

/// An appended segment: its arrays are named `<name>.W`, `<name>.tokens`
/// and so on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SegmentMeta {
    pub(crate) name: String,
    pub(crate) n_docs: usize,
    pub(crate) n_tokens: usize,
    pub(crate) ids: SegmentIdsMeta,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) first_stage: Option<GraphMeta>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) storage: Option<StorageMeta>,
}

/// Where one segment's arrays are and what shape they have.
#[derive(Debug, Clone)]
pub(crate) struct SegmentShape {
    /// Prepended to every array name: empty for the base segment,
    /// `"<name>."` for an appended one.
    pub(crate) prefix: String,
    pub(crate) dim: usize,
    pub(crate) feature_dim: usize,
    pub(crate) n_docs: usize,
    pub(crate) n_tokens: usize,
    pub(crate) first_stage: Option<GraphMeta>,
    pub(crate) storage: Option<StorageMeta>,
}

impl SegmentShape {
    /// The store name of this segment's array `array`.
    pub(crate) fn array(&self, array: &str) -> String {
        format!("{}{array}", self.prefix)
    }
}

impl Metadata {
    /// The base segment's shape.
    pub(crate) fn base_shape(&self) -> SegmentShape {
        SegmentShape {
            prefix: String::new(),
            dim: self.dim,
            feature_dim: self.feature_dim,
            n_docs: self.n_docs,
            n_tokens: self.n_tokens,
            first_stage: self.first_stage,
            storage: self.storage,
        }
    }

    /// An appended segment's shape.
    pub(crate) fn appended_shape(&self, segment: &SegmentMeta) -> SegmentShape {
        SegmentShape {
            prefix: format!("{}.", segment.name),
            dim: self.dim,
            feature_dim: self.feature_dim,
            n_docs: segment.n_docs,
            n_tokens: segment.n_tokens,
            first_stage: segment.first_stage,
            storage: segment.storage,
        }
    }
}

/// What a saved compressed index keeps.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct StorageMeta {
    tokens: TokenCodec,
    weights: WeightCodec,
    rescore_depth: usize,
}

/// The arrays of the compressed forms.
const STORAGE_ARRAYS: [&str; 4] = ["token_codes", "token_scales", "W_codes", "W_scales"];

/// The scalars of a saved first-stage graph.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct GraphMeta {
    max_degree: usize,
    ef_construction: usize,
    seed: u64,
    norm_cap: f32,
    refine_factor: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
enum FeatureMapMeta {
    Mlp {
        activation: String,
        widths: Vec<usize>,
    },
    Random,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct NormMeta {
    mean: f32,
    std: f32,
}

impl From<TargetNorm> for NormMeta {
    fn from(norm: TargetNorm) -> Self {
        NormMeta {
            mean: norm.mean,
            std: norm.std,
        }
    }
}

impl From<NormMeta> for TargetNorm {
    fn from(norm: NormMeta) -> Self {
        TargetNorm {
            mean: norm.mean,
            std: norm.std,
        }
    }
}

pub(crate) fn format_error(path: &Path, reason: impl Into<String>) -> IndexError {
    IndexError::Format {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

impl<T: AsRef<[f32]> + Sync> Index<T> {
    /// Saves the index as a directory, atomically: a new generation is
    /// written and synced beside the old one, then made current in one
    /// rename. A crash at any point leaves the previous index (or the new
    /// one) intact and loadable.
    pub fn save(&self, dir: impl AsRef<Path>) -> Result<(), IndexError> {
        self.save_with_extra(dir.as_ref(), None)
    }

    /// [`Index::save`] with `extra` stored in the same manifest.
    pub(crate) fn save_with_extra(
        &self,
        dir: &Path,
        extra: Option<serde_json::Value>,
    ) -> Result<(), IndexError> {
        let mut writer = StoreWriter::new(dir)?;
        writer.f32(
            "W",
            &[self.len(), self.feature_dim()],
            self.weights.values(),
        )?;
        writer.f32(
            "tokens",
            &[self.corpus.n_tokens(), self.dim()],
            self.corpus.tokens(),
        )?;
        let offsets: Vec<u64> = self.corpus.offsets().iter().map(|&o| o as u64).collect();
        writer.u64("offsets", &[offsets.len()], &offsets)?;
        self.model_parts().commit(writer, extra)
    }

    /// Everything a save writes besides `W`, the tokens and the offsets.
    fn model_parts(&self) -> ModelParts<'_> {
        ModelParts {
            feature_map: &self.feature_map,
            dim: self.dim(),
            n_docs: self.len(),
            n_tokens: self.corpus.n_tokens(),
            target_norm: self.target_norm,
            solver: self.solver.as_ref(),
            build_config: self.build_config.as_ref(),
            first_stage: self.first_stage.as_deref(),
            compressed: self.compressed.as_deref(),
            segments: None,
        }
    }
}

/// Everything of an index but `W`, the tokens and their offsets: what a
/// save writes after those, and what a streamed build (which writes those
/// a block of documents at a time) writes at its end.
pub(crate) struct ModelParts<'a> {
    pub(crate) feature_map: &'a FeatureMap,
    pub(crate) dim: usize,
    pub(crate) n_docs: usize,
    pub(crate) n_tokens: usize,
    pub(crate) target_norm: Option<TargetNorm>,
    pub(crate) solver: Option<&'a SolverState>,
    pub(crate) build_config: Option<&'a BuildConfig>,
    pub(crate) first_stage: Option<&'a GraphStage>,
    pub(crate) compressed: Option<&'a Compressed>,
    /// Ids and segments, when the base segment is a compaction's.
    pub(crate) segments: Option<SegmentsMeta>,
}

impl ModelParts<'_> {
    /// Writes the parts and the manifest into `writer`'s generation (which
    /// holds `W`, `tokens` and `offsets` already) and commits it.
    pub(crate) fn commit(
        &self,
        mut writer: StoreWriter,
        extra: Option<serde_json::Value>,
    ) -> Result<(), IndexError> {
        let (feature_map, solver_norm) =
            write_model(&mut writer, self.feature_map, self.dim, self.solver)?;
        let (first_stage, storage) =
            write_segment_parts(&mut writer, "", self.first_stage, self.compressed)?;
        let metadata = Metadata {
            dim: self.dim,
            n_docs: self.n_docs,
            n_tokens: self.n_tokens,
            feature_dim: self.feature_map.output_dim(),
            feature_map,
            target_norm: self.target_norm.map(Into::into),
            solver_norm,
            build_config: self.build_config.cloned(),
            extra,
            first_stage,
            storage,
            segments: self.segments.clone(),
        };
        writer.commit(serde_json::to_value(metadata).expect("metadata serialises"))?;
        Ok(())
    }
}

/// Writes the feature map and the solver's sample (the arrays every
/// segment shares) and returns their metadata.
fn write_model(
    writer: &mut StoreWriter,
    feature_map: &FeatureMap,
    dim: usize,
    solver: Option<&SolverState>,
) -> Result<(FeatureMapMeta, Option<NormMeta>), IndexError> {
    let map_meta = match feature_map.blocks() {
        Some(blocks) => {
            let mut widths = vec![dim];
            for (i, block) in blocks.iter().enumerate() {
                let (o, n) = (block.out_dim(), block.in_dim());
                writer.f32(&format!("layer_{i}_weight"), &[o, n], block.weight())?;
                writer.f32(&format!("layer_{i}_bias"), &[o], block.bias())?;
                writer.f32(&format!("layer_{i}_ln_weight"), &[o], block.ln_gain())?;
                writer.f32(&format!("layer_{i}_ln_bias"), &[o], block.ln_bias())?;
                widths.push(o);
            }
            FeatureMapMeta::Mlp {
                activation: feature_map.activation().name().to_owned(),
                widths,
            }
        }
        None => {
            let projection = feature_map
                .projection()
                .expect("a map is blocks or a projection");
            writer.f32("projection", &[dim, feature_map.output_dim()], projection)?;
            FeatureMapMeta::Random
        }
    };
    let (sample, norm) = match solver {
        Some(SolverState::Ready(solver)) => (solver.sample_tokens(), solver.norm()),
        Some(SolverState::Saved { sample, norm }) => (sample.as_slice(), *norm),
        None => return Ok((map_meta, None)),
    };
    writer.f32("solver_sample", &[sample.len() / dim, dim], sample)?;
    Ok((map_meta, Some(norm.into())))
}

/// Writes a segment's first-stage graph and compressed forms under
/// `prefix` and returns their metadata.
pub(crate) fn write_segment_parts(
    writer: &mut StoreWriter,
    prefix: &str,
    first_stage: Option<&GraphStage>,
    compressed: Option<&Compressed>,
) -> Result<(Option<GraphMeta>, Option<StorageMeta>), IndexError> {
    let name = |array: &str| format!("{prefix}{array}");
    let first_stage = match first_stage {
        Some(stage) => {
            let (mean, axes, graph) = stage.graph.to_parts();
            let (h, n) = (mean.len(), graph.levels.len());
            writer.f32(&name("ann_mean"), &[h], &mean)?;
            writer.f32(&name("ann_axes"), &[axes.len() / h, h], &axes)?;
            writer.i8(&name("ann_codes"), &[n, graph.dim], &graph.codes)?;
            writer.f32(&name("ann_scales"), &[n], &graph.scales)?;
            writer.f32(&name("ann_lifts"), &[n], &graph.lifts)?;
            writer.u8(&name("ann_levels"), &[n], &graph.levels)?;
            let degree = 2 * graph.config.max_degree;
            writer.u32(&name("ann_base"), &[n, degree], &graph.base)?;
            writer.u32(&name("ann_upper"), &[graph.upper.len()], &graph.upper)?;
            Some(GraphMeta {
                max_degree: graph.config.max_degree,
                ef_construction: graph.config.ef_construction,
                seed: graph.config.seed,
                norm_cap: graph.norm_cap,
                refine_factor: stage.refine_factor,
            })
        }
        None => None,
    };
    let storage = match compressed {
        Some(compressed) => {
            if let Some(tokens) = &compressed.tokens {
                let per_token = tokens.bits().bytes_per_token(tokens.dim());
                writer.u8(
                    &name("token_codes"),
                    &[tokens.n_tokens(), per_token],
                    tokens.codes(),
                )?;
                writer.f32(&name("token_scales"), &[tokens.n_tokens()], tokens.scales())?;
            }
            if let Some(rows) = &compressed.weights {
                let codes: Vec<i8> = (0..rows.n_rows()).flat_map(|i| rows.codes(i)).collect();
                let scales: Vec<f32> = (0..rows.n_rows()).map(|i| rows.scale(i)).collect();
                writer.i8(&name("W_codes"), &[rows.n_rows(), rows.dim()], &codes)?;
                writer.f32(&name("W_scales"), &[rows.n_rows()], &scales)?;
            }
            let config = compressed.config();
            Some(StorageMeta {
                tokens: config.tokens,
                weights: config.weights,
                rescore_depth: config.rescore_depth,
            })
        }
        None => None,
    };
    Ok((first_stage, storage))
}

/// The parts every segment of an index directory shares.
#[derive(Debug, Clone)]
pub(crate) struct SharedModel {
    pub(crate) feature_map: Arc<FeatureMap>,
    pub(crate) target_norm: Option<TargetNorm>,
    pub(crate) build_config: Option<BuildConfig>,
    pub(crate) solver: Option<SolverState>,
}

/// Reads and validates the feature map and the solver's sample.
pub(crate) fn read_model(
    root: &Path,
    store: &Store,
    metadata: &Metadata,
) -> Result<SharedModel, IndexError> {
    let dir = store.dir().to_path_buf();
    let feature_map = match &metadata.feature_map {
        FeatureMapMeta::Mlp { activation, widths } => {
            let activation = Activation::from_name(activation)
                .ok_or_else(|| format_error(root, format!("unknown activation {activation:?}")))?;
            if widths.len() < 2
                || widths[0] != metadata.dim
                || widths[widths.len() - 1] != metadata.feature_dim
            {
                return Err(format_error(
                    root,
                    format!(
                        "layer widths {widths:?} do not go from {} to {}",
                        metadata.dim, metadata.feature_dim
                    ),
                ));
            }
            let mut blocks = Vec::with_capacity(widths.len() - 1);
            for (i, pair) in widths.windows(2).enumerate() {
                let read = |suffix: &str, shape: &[usize]| -> Result<Vec<f32>, IndexError> {
                    let key = format!("layer_{i}_{suffix}");
                    let (found, values) = store.read_f32(&key)?;
                    if found != shape {
                        return Err(format_error(
                            &dir,
                            format!("{key} has shape {found:?}, not {shape:?}"),
                        ));
                    }
                    Ok(values)
                };
                let (n, o) = (pair[0], pair[1]);
                blocks.push(Block::new(
                    i,
                    read("weight", &[o, n])?,
                    n,
                    o,
                    read("bias", &[o])?,
                    read("ln_weight", &[o])?,
                    read("ln_bias", &[o])?,
                )?);
            }
            FeatureMap::mlp(blocks, activation)?
        }
        FeatureMapMeta::Random => {
            let (shape, projection) = store.read_f32("projection")?;
            if shape != [metadata.dim, metadata.feature_dim] {
                return Err(format_error(
                    &dir,
                    format!("projection has shape {shape:?}"),
                ));
            }
            FeatureMap::random(projection, metadata.dim, metadata.feature_dim)?
        }
    };
    let solver = match metadata.solver_norm {
        Some(norm) => {
            let (shape, sample) = store.read_f32("solver_sample")?;
            if shape.len() != 2 || shape[1] != metadata.dim || shape[0] == 0 {
                return Err(format_error(
                    &dir,
                    format!("solver_sample has shape {shape:?}"),
                ));
            }
            Some(SolverState::Saved {
                sample: Arc::new(sample),
                norm: norm.into(),
            })
        }
        None => None,
    };
    Ok(SharedModel {
        feature_map: Arc::new(feature_map),
        target_norm: metadata.target_norm.map(Into::into),
        build_config: metadata.build_config.clone(),
        solver,
    })
}

/// Whether `name` is one of the arrays every segment shares.
pub(crate) fn is_model_array(name: &str) -> bool {
    name == "projection" || name == "solver_sample" || name.starts_with("layer_")
}

/// Reads one segment's arrays but its tokens, validated, and assembles an
/// index of the segment around `tokens` and the shared `model`. With
/// `map_weights` as `Some(verify)`, the f32 `W` of a compressed segment
/// is memory-mapped rather than read (its checksum verified only with
/// `verify`).
pub(crate) fn read_segment<T: AsRef<[f32]> + Sync>(
    root: &Path,
    store: &Store,
    shape: &SegmentShape,
    model: &SharedModel,
    tokens: T,
    map_weights: Option<bool>,
) -> Result<Index<T>, IndexError> {
    let dir = store.dir().to_path_buf();
    let offsets_name = shape.array("offsets");
    let (offset_shape, offsets) = store.read_u64(&offsets_name)?;
    if offset_shape != [shape.n_docs + 1] {
        return Err(format_error(
            root,
            format!(
                "{offsets_name} has shape {offset_shape:?}, not [{}]",
                shape.n_docs + 1
            ),
        ));
    }
    let offsets: Vec<usize> = offsets
        .into_iter()
        .map(usize::try_from)
        .collect::<Result<_, _>>()
        .map_err(|_| format_error(&dir, "offsets do not fit in usize"))?;
    let corpus = MultiVectors::with_offsets(tokens, shape.dim, offsets)?;
    if corpus.n_tokens() != shape.n_tokens {
        return Err(format_error(
            root,
            format!("the token count of {offsets_name} disagrees with the manifest"),
        ));
    }
    let w_name = shape.array("W");
    let w_shape_error = |w_shape: &[usize]| {
        format_error(
            &dir,
            format!(
                "{w_name} has shape {w_shape:?}, not [{}, {}]",
                shape.n_docs, shape.feature_dim
            ),
        )
    };
    // A compressed index opened for searching keeps its f32 `W` on disk.
    let weights_resident = shape
        .storage
        .is_none_or(|storage| storage.weights == WeightCodec::F32);
    let weights = match map_weights {
        Some(verify) if !weights_resident => {
            let (w_shape, w) = store.map_f32(&w_name, verify)?;
            if w_shape != [shape.n_docs, shape.feature_dim] {
                return Err(w_shape_error(&w_shape));
            }
            DocWeights::mapped(w, shape.n_docs, shape.feature_dim)?
        }
        _ => {
            let (w_shape, w) = store.read_f32(&w_name)?;
            if w_shape != [shape.n_docs, shape.feature_dim] {
                return Err(w_shape_error(&w_shape));
            }
            DocWeights::new(w, shape.n_docs, shape.feature_dim)?
        }
    };
    let first_stage = match shape.first_stage {
        Some(meta) => Some(Arc::new(read_graph(store, shape, meta)?)),
        None if store
            .names()
            .any(|name| name.starts_with(&shape.array("ann_"))) =>
        {
            return Err(format_error(
                &dir,
                "first-stage arrays without first-stage metadata",
            ));
        }
        None => None,
    };
    let compressed = match shape.storage {
        Some(meta) => Some(Arc::new(read_compressed(store, shape, &corpus, meta)?)),
        None if store.names().any(|name| {
            name.strip_prefix(shape.prefix.as_str())
                .is_some_and(|array| STORAGE_ARRAYS.contains(&array))
        }) =>
        {
            return Err(format_error(
                &dir,
                "compressed arrays without storage metadata",
            ));
        }
        None => None,
    };
    let mut index = Index::with_shared_map(model.feature_map.clone(), weights, corpus)?;
    index.compressed = compressed;
    index.target_norm = model.target_norm;
    index.build_config = model.build_config.clone();
    index.first_stage = first_stage;
    index.solver = model.solver.clone();
    Ok(index)
}

/// Reads and validates the saved compressed forms.
fn read_compressed<T: AsRef<[f32]>>(
    store: &Store,
    metadata: &SegmentShape,
    corpus: &MultiVectors<T>,
    meta: StorageMeta,
) -> Result<Compressed, IndexError> {
    let dir = store.dir();
    let invalid = |reason: String| format_error(dir, reason);
    if meta.rescore_depth > MAX_RESCORE_DEPTH
        || (meta.tokens == TokenCodec::F32 && meta.weights == WeightCodec::F32)
    {
        return Err(invalid(format!(
            "storage metadata {meta:?} is out of range"
        )));
    }
    let tokens = match code_bits(meta.tokens) {
        Some(bits) => {
            let per_token = bits.bytes_per_token(metadata.dim);
            let (shape, codes) = store.read_u8(&metadata.array("token_codes"))?;
            if shape != [metadata.n_tokens, per_token] {
                return Err(invalid(format!("token_codes has shape {shape:?}")));
            }
            let (shape, scales) = store.read_f32(&metadata.array("token_scales"))?;
            if shape != [metadata.n_tokens] {
                return Err(invalid(format!("token_scales has shape {shape:?}")));
            }
            let tokens = QuantizedVectors::from_parts(
                bits,
                metadata.dim,
                codes,
                scales,
                corpus.offsets().to_vec(),
            )
            .map_err(|e| invalid(format!("compressed tokens: {e}")))?;
            Some(tokens)
        }
        None => None,
    };
    let weights = match meta.weights {
        WeightCodec::Int8 => {
            let (shape, codes) = store.read_i8(&metadata.array("W_codes"))?;
            if shape != [metadata.n_docs, metadata.feature_dim] {
                return Err(invalid(format!("W_codes has shape {shape:?}")));
            }
            let (shape, scales) = store.read_f32(&metadata.array("W_scales"))?;
            if shape != [metadata.n_docs] {
                return Err(invalid(format!("W_scales has shape {shape:?}")));
            }
            let rows = Int8Matrix::from_codes(&codes, scales, metadata.feature_dim)
                .map_err(|e| invalid(format!("compressed W: {e}")))?;
            Some(rows)
        }
        WeightCodec::F32 => None,
    };
    Ok(Compressed {
        tokens,
        weights,
        rescore_depth: meta.rescore_depth,
        f32_tokens: None,
    })
}

/// Reads and validates the saved first-stage graph.
fn read_graph(
    store: &Store,
    metadata: &SegmentShape,
    meta: GraphMeta,
) -> Result<GraphStage, IndexError> {
    let dir = store.dir();
    let shape_error = |name: &str, shape: &[usize]| {
        format_error(
            dir,
            format!("{name} has shape {shape:?}, which does not fit the index"),
        )
    };
    let (shape, mean) = store.read_f32(&metadata.array("ann_mean"))?;
    if shape != [metadata.feature_dim] {
        return Err(shape_error("ann_mean", &shape));
    }
    let (shape, axes) = store.read_f32(&metadata.array("ann_axes"))?;
    if shape.len() != 2 || shape[1] != metadata.feature_dim {
        return Err(shape_error("ann_axes", &shape));
    }
    // No axes: the identity, whose graph holds full rows.
    let r = if shape[0] == 0 {
        metadata.feature_dim
    } else {
        shape[0]
    };
    let (shape, codes) = store.read_i8(&metadata.array("ann_codes"))?;
    if shape != [metadata.n_docs, r] {
        return Err(shape_error("ann_codes", &shape));
    }
    let (shape, scales) = store.read_f32(&metadata.array("ann_scales"))?;
    if shape != [metadata.n_docs] {
        return Err(shape_error("ann_scales", &shape));
    }
    let (shape, lifts) = store.read_f32(&metadata.array("ann_lifts"))?;
    if shape != [metadata.n_docs] {
        return Err(shape_error("ann_lifts", &shape));
    }
    if !(2..=MAX_GRAPH_DEGREE).contains(&meta.max_degree)
        || !(1..=MAX_REFINE_FACTOR).contains(&meta.refine_factor)
    {
        return Err(format_error(
            dir,
            format!(
                "the first stage's max_degree {} or refine_factor {} is out of range",
                meta.max_degree, meta.refine_factor
            ),
        ));
    }
    let (shape, levels) = store.read_u8(&metadata.array("ann_levels"))?;
    if shape != [metadata.n_docs] {
        return Err(shape_error("ann_levels", &shape));
    }
    let (shape, base) = store.read_u32(&metadata.array("ann_base"))?;
    if shape != [metadata.n_docs, 2 * meta.max_degree] {
        return Err(shape_error("ann_base", &shape));
    }
    let (_, upper) = store.read_u32(&metadata.array("ann_upper"))?;
    let parts = GraphParts {
        dim: r,
        config: GraphConfig {
            max_degree: meta.max_degree,
            ef_construction: meta.ef_construction,
            seed: meta.seed,
        },
        norm_cap: meta.norm_cap,
        codes,
        scales,
        lifts,
        levels,
        base,
        upper,
    };
    Ok(GraphStage {
        graph: ProjectedGraph::from_parts(mean, axes, parts)?,
        refine_factor: meta.refine_factor,
    })
}

pub(crate) fn open_store(dir: &Path) -> Result<(Store, Metadata), IndexError> {
    let store = Store::open(dir)?;
    let metadata: Metadata = serde_json::from_value(store.metadata().clone())
        .map_err(|e| format_error(&store.dir().join("manifest.json"), format!("metadata: {e}")))?;
    if metadata.dim == 0 || metadata.feature_dim == 0 {
        return Err(format_error(dir, "zero widths"));
    }
    Ok((store, metadata))
}

/// Refuses a directory whose documents are not simply its base segment's
/// positions: a plain [`Index`] cannot hold deletions or several segments.
fn check_unsegmented(dir: &Path, metadata: &Metadata) -> Result<(), IndexError> {
    match &metadata.segments {
        Some(segments)
            if !segments.appended.is_empty()
                || segments.base.n_deleted > 0
                || segments.base.first_id != Some(0) =>
        {
            Err(IndexError::Segmented {
                path: dir.to_path_buf(),
                segments: 1 + segments.appended.len(),
            })
        }
        _ => Ok(()),
    }
}

/// Opens one segment of an opened store with its tokens memory-mapped.
pub(crate) fn open_segment(
    root: &Path,
    store: &Store,
    shape: &SegmentShape,
    model: &SharedModel,
    verify: bool,
) -> Result<MappedIndex, IndexError> {
    let tokens_name = shape.array("tokens");
    let (found, tokens) = store.map_f32(&tokens_name, verify)?;
    if found != [shape.n_tokens, shape.dim] {
        return Err(format_error(
            root,
            format!("{tokens_name} has shape {found:?}"),
        ));
    }
    let compressed_tokens = shape
        .storage
        .is_some_and(|storage| storage.tokens != TokenCodec::F32);
    let mut index = read_segment(root, store, shape, model, tokens, Some(verify))?;
    if compressed_tokens && let Some(compressed) = &mut index.compressed {
        // A second handle on the token file, never touched through its
        // map: the leaders' positional reads go through it.
        let (_, file) = store.map_f32(&tokens_name, false)?;
        Arc::make_mut(compressed).f32_tokens = Some(Arc::new(file));
    }
    Ok(index)
}

/// An index whose corpus tokens are memory-mapped from its directory.
pub type MappedIndex = Index<MappedF32>;

impl Index<MappedF32> {
    /// Opens a saved index without copying the corpus: the tokens are
    /// memory-mapped, everything else is read and checksum-verified. The
    /// structure of the token file (header, size, alignment) and the
    /// document offsets are validated before use; the token checksum,
    /// which needs every byte, is verified by [`Index::open_verified`].
    ///
    /// A directory with deletions or appended segments is opened with
    /// [`crate::SegmentedIndex::open`]; here it is
    /// [`IndexError::Segmented`].
    pub fn open(dir: impl AsRef<Path>) -> Result<MappedIndex, IndexError> {
        Self::open_with(dir.as_ref(), false)
    }

    /// As [`Index::open`], also verifying the token file's checksum (reads
    /// the whole corpus once).
    pub fn open_verified(dir: impl AsRef<Path>) -> Result<MappedIndex, IndexError> {
        Self::open_with(dir.as_ref(), true)
    }

    fn open_with(dir: &Path, verify: bool) -> Result<MappedIndex, IndexError> {
        let (store, metadata) = open_store(dir)?;
        check_unsegmented(dir, &metadata)?;
        let model = read_model(dir, &store, &metadata)?;
        open_segment(dir, &store, &metadata.base_shape(), &model, verify)
    }
}

impl Index<Vec<f32>> {
    /// Loads a saved index fully into memory, verifying every checksum.
    /// Use this to add documents to a saved index: load, add, save.
    pub fn load(dir: impl AsRef<Path>) -> Result<Index, IndexError> {
        Ok(Self::load_with_extra(dir.as_ref())?.0)
    }

    /// [`Index::load`], also returning what [`Index::save_with_extra`]
    /// stored, from the same generation.
    pub(crate) fn load_with_extra(
        dir: &Path,
    ) -> Result<(Index, Option<serde_json::Value>), IndexError> {
        let (store, mut metadata) = open_store(dir)?;
        check_unsegmented(dir, &metadata)?;
        let (shape, tokens) = store.read_f32("tokens")?;
        if shape != [metadata.n_tokens, metadata.dim] {
            return Err(format_error(dir, format!("tokens has shape {shape:?}")));
        }
        let extra = metadata.extra.take();
        let model = read_model(dir, &store, &metadata)?;
        let index = read_segment(dir, &store, &metadata.base_shape(), &model, tokens, None)?;
        Ok((index, extra))
    }
}

/// Where an index directory's current data lives (for tools and tests).
pub fn current_generation(dir: impl AsRef<Path>) -> Result<PathBuf, IndexError> {
    Ok(Store::open(dir)?.dir().to_path_buf())
}

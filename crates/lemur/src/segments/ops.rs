//! The changes a segmented index commits: adding a segment, deleting
//! documents, compacting, building the first stage again.

use std::ops::Range;
use std::sync::Arc;

use lemur_ann::AnnError;
use lemur_io::{Store, StoreWriter};
use lemur_maxsim::MultiVectors;

use super::sink::SegmentSink;
use super::{Deleted, SegmentIds, SegmentedIndex};
use crate::build::{BuildConfig, DocumentSource};
use crate::error::IndexError;
use crate::first_stage::{FirstStageConfig, query_directions};
use crate::fit::WeightSolver;
use crate::index::SolverState;
use crate::persist::{
    ModelParts, SegmentIdsMeta, SegmentMeta, SegmentsMeta, format_error, open_segment,
    write_segment_parts,
};
use crate::storage::{StorageConfig, TokenCodec, WeightCodec};
use crate::weights::DocWeights;

impl SegmentedIndex {
    /// Adds documents (`tokens` `[n_tokens, d]`, `counts` tokens per
    /// document) as a new segment, committed atomically: their rows of `W`
    /// are fitted with the index's solver (as [`crate::Index::add_documents`]
    /// fits them), nothing already stored is rewritten, and the new
    /// documents get the next unused ids, which are returned.
    ///
    /// The segment keeps the base segment's compressed forms (if it has
    /// any) and gets its own graph when it alone reaches the build
    /// configuration's `graph_min_docs`.
    pub fn add_documents(
        &mut self,
        tokens: &[f32],
        counts: &[usize],
    ) -> Result<Range<u32>, IndexError> {
        let added = MultiVectors::new(tokens, self.dim(), counts)?;
        let n = added.len();
        let first = self.next_id();
        let end =
            u32::try_from(u64::from(first) + n as u64).map_err(|_| IndexError::IdsExhausted {
                next_id: first,
                added: n,
            })?;
        if n == 0 {
            return Ok(first..first);
        }
        let solver = self.solver()?;
        let config = self.config();
        let name = self.next_segment_name();
        let prefix = format!("{name}.");
        let (dim, h) = (self.dim(), self.feature_dim());
        let (store, mut writer) = self.begin()?;
        for array in store.names() {
            writer.carry(&store, array)?;
        }
        let storage = self.segments[0]
            .index
            .compressed
            .as_ref()
            .map(|compressed| compressed.config());
        let graph = (n >= config.first_stage.graph_min_docs).then_some(config.first_stage);
        let directions = graph
            .and_then(|_| query_directions(&self.model.feature_map, self.model.solver.as_ref()));
        let mut sink = SegmentSink::new(&mut writer, &prefix, dim, h, storage, graph, directions)?;
        for start in (0..n).step_by(config.block_docs) {
            let block = added.documents(start..(start + config.block_docs).min(n))?;
            let rows = DocWeights::new(solver.fit(&block), block.len(), h)?;
            sink.push(rows.values(), &block)?;
        }
        let written = sink.finish(&mut writer, &prefix)?;
        let (first_stage, storage) = write_segment_parts(
            &mut writer,
            &prefix,
            written.first_stage.as_ref(),
            written.compressed.as_ref(),
        )?;
        let segment = SegmentMeta {
            name: name.clone(),
            n_docs: n,
            n_tokens: written.n_tokens,
            ids: SegmentIdsMeta {
                first_id: Some(first),
                n_deleted: 0,
            },
            first_stage,
            storage,
        };
        let mut metadata = self.metadata.clone();
        let segments = metadata.segments.as_mut().expect("opened");
        segments.appended.push(segment.clone());
        segments.next_id = end;
        writer.commit(serde_json::to_value(&metadata).expect("metadata serialises"))?;

        let store = self.committed()?;
        let shape = metadata.appended_shape(&segment);
        let index = open_segment(&self.dir, &store, &shape, &self.model, false)?;
        self.segments.push(super::Segment {
            name: Some(name),
            index,
            ids: SegmentIds::Range { first },
        });
        self.metadata = metadata;
        Ok(first..end)
    }

    /// Deletes the documents `ids`, committed atomically as new tombstone
    /// lists of the segments they are in (nothing else is rewritten; an
    /// appended segment left with no live document is dropped). Returns
    /// how many were deleted (repeated ids count once).
    ///
    /// Fails, changing nothing, with [`IndexError::UnknownDocument`] for an
    /// id that is not live (never added, or deleted already) and with
    /// [`IndexError::NoDocumentsLeft`] when no document would be left.
    pub fn delete_documents(&mut self, ids: &[u32]) -> Result<usize, IndexError> {
        let mut ids = ids.to_vec();
        ids.sort_unstable();
        ids.dedup();
        let mut by_segment: Vec<Vec<u32>> = vec![Vec::new(); self.segments.len()];
        for &id in &ids {
            let (segment, position) = self.locate(id).ok_or(IndexError::UnknownDocument { id })?;
            by_segment[segment].push(position);
        }
        if ids.is_empty() {
            return Ok(0);
        }
        if ids.len() == self.len() {
            return Err(IndexError::NoDocumentsLeft);
        }
        let mut deleted: Vec<Option<Deleted>> = Vec::with_capacity(self.segments.len());
        for (segment, new) in self.segments.iter().zip(&by_segment) {
            if new.is_empty() {
                deleted.push(None);
                continue;
            }
            let mut positions = segment.deleted().to_vec();
            positions.extend(new);
            positions.sort_unstable();
            let set = Deleted::new(positions, segment.index.len())
                .expect("live positions of the segment, each once");
            deleted.push(Some(set));
        }
        // Appended segments with nothing live are dropped whole.
        let dropped: Vec<bool> = self
            .segments
            .iter()
            .zip(&deleted)
            .map(|(segment, set)| {
                segment.name.is_some()
                    && set
                        .as_ref()
                        .is_some_and(|set| set.len() == segment.index.len())
            })
            .collect();

        let (store, mut writer) = self.begin()?;
        let prefix = |s: usize| match &self.segments[s].name {
            None => String::new(),
            Some(name) => format!("{name}."),
        };
        for array in store.names() {
            let replaced = (0..self.segments.len()).any(|s| {
                (deleted[s].is_some() && array == format!("{}deleted", prefix(s)))
                    || (dropped[s] && array.starts_with(&prefix(s)))
            });
            if !replaced {
                writer.carry(&store, array)?;
            }
        }
        let mut metadata = self.metadata.clone();
        let meta = metadata.segments.as_mut().expect("opened");
        for (s, set) in deleted.iter().enumerate() {
            let Some(set) = set else { continue };
            if dropped[s] {
                continue;
            }
            writer.u32(
                &format!("{}deleted", prefix(s)),
                &[set.len()],
                set.positions(),
            )?;
            match s {
                0 => meta.base.n_deleted = set.len(),
                _ => meta.appended[s - 1].ids.n_deleted = set.len(),
            }
        }
        meta.appended = std::mem::take(&mut meta.appended)
            .into_iter()
            .zip(&dropped[1..])
            .filter_map(|(segment, &dropped)| (!dropped).then_some(segment))
            .collect();
        writer.commit(serde_json::to_value(&metadata).expect("metadata serialises"))?;

        self.committed()?;
        self.segments = std::mem::take(&mut self.segments)
            .into_iter()
            .zip(deleted.into_iter().zip(dropped))
            .filter(|(_, (_, dropped))| !dropped)
            .map(|(mut segment, (set, _))| {
                if let Some(set) = set {
                    segment.index.deleted = Some(Arc::new(set));
                }
                segment
            })
            .collect();
        self.metadata = metadata;
        Ok(ids.len())
    }

    /// Merges every segment's live documents into one new base segment,
    /// committed atomically: rows of `W` and tokens are copied (not
    /// refitted), the compressed forms and the graph are built again for
    /// the merged documents (by the build configuration's thresholds, or
    /// as the base segment had them), and deleted documents are gone. Ids
    /// do not change. Returns `false`, committing nothing, when there is
    /// one segment without deletions.
    ///
    /// Memory: one block of `block_docs` documents plus the new segment's
    /// compressed forms and graph. Searches of another handle on the
    /// directory keep working on the files they opened.
    pub fn compact(&mut self) -> Result<bool, IndexError> {
        if self.segments.len() == 1 && self.n_deleted() == 0 {
            return Ok(false);
        }
        let live = self.len();
        let config = self.config();
        let base_storage = self.segments[0]
            .index
            .compressed
            .as_ref()
            .map(|compressed| compressed.config());
        let codecs_compress =
            config.storage.tokens != TokenCodec::F32 || config.storage.weights != WeightCodec::F32;
        let storage: Option<StorageConfig> = base_storage.or((live
            >= config.storage.compress_min_docs
            && codecs_compress)
            .then_some(config.storage));
        let graph = (live >= config.first_stage.graph_min_docs).then_some(config.first_stage);
        let (dim, h) = (self.dim(), self.feature_dim());
        let (_, mut writer) = self.begin()?;
        let directions = graph
            .and_then(|_| query_directions(&self.model.feature_map, self.model.solver.as_ref()));
        let mut sink = SegmentSink::new(&mut writer, "", dim, h, storage, graph, directions)?;
        let mut ids: Vec<u32> = Vec::with_capacity(live);
        for segment in &self.segments {
            let index = &segment.index;
            let positions: Vec<u32> = (0..index.len() as u32)
                .filter(|&p| !segment.is_deleted(p))
                .collect();
            for block in positions.chunks(config.block_docs) {
                let mut tokens = Vec::new();
                let mut rows = Vec::with_capacity(block.len() * h);
                let counts: Vec<usize> = block
                    .iter()
                    .map(|&p| {
                        tokens.extend_from_slice(index.corpus().get(p as usize));
                        rows.extend_from_slice(index.weights().row(p as usize));
                        index.corpus().token_count(p as usize)
                    })
                    .collect();
                let documents = MultiVectors::new(tokens, dim, &counts)?;
                sink.push(&rows, &documents)?;
                ids.extend(block.iter().map(|&p| segment.ids.id(p)));
            }
        }
        let written = sink.finish(&mut writer, "")?;
        let contiguous = ids.windows(2).all(|pair| pair[1] == pair[0] + 1);
        let first_id = if contiguous {
            Some(ids[0])
        } else {
            writer.u32("doc_ids", &[ids.len()], &ids)?;
            None
        };
        ModelParts {
            feature_map: &self.model.feature_map,
            dim,
            n_docs: written.n_docs,
            n_tokens: written.n_tokens,
            target_norm: self.model.target_norm,
            solver: self.model.solver.as_ref(),
            build_config: self.model.build_config.as_ref(),
            first_stage: written.first_stage.as_ref(),
            compressed: written.compressed.as_ref(),
            segments: Some(SegmentsMeta {
                next_id: self.next_id(),
                base: SegmentIdsMeta {
                    first_id,
                    n_deleted: 0,
                },
                appended: Vec::new(),
            }),
        }
        .commit(writer, self.metadata.extra.clone())?;
        drop(written);
        *self = SegmentedIndex::open(&self.dir)?;
        Ok(true)
    }

    /// Builds every segment's first stage again with `config` (a graph for
    /// each segment of at least `config.graph_min_docs` documents, none
    /// for the others) and keeps `config` for the segments added and
    /// compacted later; committed atomically, with every other array
    /// linked, not rewritten. Returns how many segments have a graph.
    ///
    /// The graphs are built from the stored rows of `W` (memory-mapped: a
    /// block of projected rows and the graph being built are held), on
    /// the current rayon pool. A segment's deleted documents stay in its
    /// graph, which lists proportionally more documents to make up for
    /// them.
    pub fn rebuild_first_stage(&mut self, config: &FirstStageConfig) -> Result<usize, IndexError> {
        config
            .validate()
            .map_err(|reason| IndexError::FirstStage(AnnError::Config(reason)))?;
        let (store, mut writer) = self.begin()?;
        for array in store.names() {
            let bare = array.rsplit_once('.').map_or(array, |(_, bare)| bare);
            if !bare.starts_with("ann_") {
                writer.carry(&store, array)?;
            }
        }
        let mut metadata = self.metadata.clone();
        let mut with_graph = 0;
        for (position, segment) in self.segments.iter().enumerate() {
            let stage = segment.index.graph_stage(config)?;
            let prefix = segment
                .name
                .as_ref()
                .map_or(String::new(), |name| format!("{name}."));
            let (first_stage, _) = write_segment_parts(&mut writer, &prefix, stage.as_ref(), None)?;
            with_graph += usize::from(first_stage.is_some());
            match position {
                0 => metadata.first_stage = first_stage,
                _ => {
                    let segments = metadata.segments.as_mut().expect("opened");
                    segments.appended[position - 1].first_stage = first_stage;
                }
            }
        }
        if let Some(build_config) = &mut metadata.build_config {
            build_config.first_stage = *config;
        }
        writer.commit(serde_json::to_value(&metadata).expect("metadata serialises"))?;
        *self = SegmentedIndex::open(&self.dir)?;
        Ok(with_graph)
    }

    /// The solver new documents are fitted with (computed once from the
    /// saved sample).
    fn solver(&mut self) -> Result<Arc<WeightSolver>, IndexError> {
        let solver = match &self.model.solver {
            Some(SolverState::Ready(solver)) => return Ok(solver.clone()),
            Some(SolverState::Saved { sample, norm }) => {
                Arc::new(WeightSolver::new(&self.model.feature_map, sample, *norm)?)
            }
            None => return Err(IndexError::NoSolver),
        };
        self.model.solver = Some(SolverState::Ready(solver.clone()));
        Ok(solver)
    }

    /// The build configuration, or the defaults for an imported index.
    fn config(&self) -> BuildConfig {
        self.model.build_config.clone().unwrap_or_default()
    }

    /// `seg-` and one more than the highest appended segment's number.
    fn next_segment_name(&self) -> String {
        let highest = self
            .segments
            .iter()
            .filter_map(|segment| segment.name.as_deref())
            .filter_map(|name| name.strip_prefix("seg-")?.parse::<u64>().ok())
            .max()
            .unwrap_or(0);
        format!("seg-{:06}", highest + 1)
    }

    /// Opens the directory's store for a commit, refusing if another
    /// writer has committed since this view was opened (its changes would
    /// be lost), and starts the new generation.
    fn begin(&self) -> Result<(Store, StoreWriter), IndexError> {
        let store = Store::open(&self.dir)?;
        if store.dir() != self.generation {
            return Err(format_error(
                &self.dir,
                "the index changed since it was opened (another writer committed); open it again",
            ));
        }
        let writer = StoreWriter::new(&self.dir)?;
        Ok((store, writer))
    }

    /// The store just committed, which this view now stands on.
    fn committed(&mut self) -> Result<Store, IndexError> {
        let store = Store::open(&self.dir)?;
        self.generation = store.dir().to_path_buf();
        Ok(store)
    }
}

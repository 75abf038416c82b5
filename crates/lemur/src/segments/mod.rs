//! Segments, stable document ids and deletions: an index directory that
//! grows by appending segments instead of being rewritten.
//!
//! A [`SegmentedIndex`] is bound to its directory. Every segment is an
//! [`Index`] of its own (its rows of `W`, tokens, compressed forms and
//! graph) over the one feature map the directory stores once, so query
//! features are computed once and approximate scores compare across
//! segments. Every document has a stable id: the base segment's documents
//! are numbered from 0 as they were built, each added document takes the
//! next unused id, and ids are never reused or renumbered, by deletions or
//! by compactions. Hits carry these ids.
//!
//! Each change is one commit of the directory's store (see
//! `lemur_io::Store`): a new generation that links the arrays it does not
//! change and writes the ones it does, made current by one rename.
//! - [`SegmentedIndex::add_documents`] writes a segment of the new
//!   documents (fitted with the index's solver) and links everything else;
//! - [`SegmentedIndex::delete_documents`] writes the touched segments'
//!   `deleted` lists (tombstones) and links everything else;
//! - [`SegmentedIndex::compact`] merges the live documents of every
//!   segment into one new base segment (rows of `W` and tokens copied, not
//!   refitted; compressed forms and the graph rebuilt) and drops the rest.
//!
//! # Example
//!
//! ```
//! use lemur::{BuildConfig, IndexBuilder, SearchParams, SegmentedIndex, synthetic};
//!
//! let corpus = synthetic::StreamedCorpus::new(&synthetic::CorpusSpec {
//!     dim: 16,
//!     ..synthetic::CorpusSpec::colbert_scale(305)
//! });
//! let config = BuildConfig { epochs: 0, final_hidden_dim: 128, fit_sample: 256,
//!     ..BuildConfig::default() };
//! let (index, _) = IndexBuilder::new(config).build(corpus.chunk(0..300), None)?;
//! let dir = std::env::temp_dir().join(format!("lemur-doc-segments-{}", std::process::id()));
//! index.save(&dir)?;
//!
//! let mut segmented = SegmentedIndex::open(&dir)?;
//! let more = corpus.chunk(300..305);
//! let counts: Vec<usize> = more.counts().collect();
//! assert_eq!(segmented.add_documents(more.tokens(), &counts)?, 300..305);
//! segmented.delete_documents(&[0, 301])?;
//! let queries = corpus.queries(3, 8, 1);
//! let hits = segmented.search(queries.tokens(), &[8; 3], SearchParams::default())?;
//! assert!(hits.iter().flatten().all(|hit| hit.doc != 0 && hit.doc != 301));
//! segmented.compact()?;
//! assert_eq!((segmented.len(), segmented.n_segments()), (303, 1));
//! # std::fs::remove_dir_all(&dir)?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod deleted;
mod ops;
pub(crate) mod sink;

use std::path::{Path, PathBuf};

use lemur_io::Store;
use lemur_maxsim::MultiVectors;
use lemur_topk::rank_order;

pub(crate) use deleted::Deleted;

use crate::error::{IndexError, SearchError};
use crate::index::{Hit, SearchParams};
use crate::persist::{
    MappedIndex, Metadata, SegmentIdsMeta, SegmentShape, SegmentsMeta, SharedModel, format_error,
    is_model_array, open_segment, open_store, read_model,
};

/// The ids of one segment's documents, by position.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum SegmentIds {
    /// `first..first + n_docs`.
    Range { first: u32 },
    /// Listed, increasing (a compaction's base segment).
    Listed(Vec<u32>),
}

impl SegmentIds {
    /// The id of position `position`.
    pub(crate) fn id(&self, position: u32) -> u32 {
        match self {
            SegmentIds::Range { first } => first + position,
            SegmentIds::Listed(ids) => ids[position as usize],
        }
    }

    /// The position of `id`, if this segment (of `n_docs` documents) has it.
    pub(crate) fn position(&self, id: u32, n_docs: usize) -> Option<u32> {
        match self {
            SegmentIds::Range { first } => id
                .checked_sub(*first)
                .filter(|&position| (position as usize) < n_docs),
            SegmentIds::Listed(ids) => ids.binary_search(&id).ok().map(|p| p as u32),
        }
    }
}

/// One segment of a [`SegmentedIndex`].
#[derive(Debug)]
pub(crate) struct Segment {
    /// `None` for the base segment, else the appended segment's name.
    pub(crate) name: Option<String>,
    pub(crate) index: MappedIndex,
    pub(crate) ids: SegmentIds,
}

impl Segment {
    /// Its deleted positions.
    pub(crate) fn deleted(&self) -> &[u32] {
        self.index.deleted.as_ref().map_or(&[], |d| d.positions())
    }

    /// Documents not deleted.
    pub(crate) fn live(&self) -> usize {
        self.index.len() - self.deleted().len()
    }

    /// Whether position `position` is deleted.
    fn is_deleted(&self, position: u32) -> bool {
        self.index
            .deleted
            .as_ref()
            .is_some_and(|d| d.contains(position))
    }
}

/// What [`SegmentedIndex::segments`] reports of one segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentInfo {
    /// `"base"` or the appended segment's name (`seg-000002`, ...).
    pub name: String,
    /// Documents stored, deleted ones included.
    pub n_docs: usize,
    /// Tokens stored, deleted documents' included.
    pub n_tokens: usize,
    /// Documents deleted (dropped by the next compaction).
    pub n_deleted: usize,
    /// Whether the segment searches its compressed forms.
    pub compressed: bool,
    /// Bytes of its compressed forms (resident).
    pub compressed_bytes: usize,
    /// Whether the segment has a graph first stage.
    pub graph: bool,
}

/// One live document of a [`SegmentedIndex`] as stored.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StoredDocument<'a> {
    /// Its stable id.
    pub id: u32,
    /// Its row of `W`, `h` wide.
    pub weights: &'a [f32],
    /// Its token vectors, `[n_tokens, d]` row-major, in f32.
    pub tokens: &'a [f32],
}

/// An index directory of one or more segments, with stable document ids,
/// deletions and compaction (see the module documentation).
///
/// Invariants: every segment shares the directory's feature map and
/// solver; ids increase through the base segment and then through the
/// appended segments in order, and are all below `next_id`; at least one
/// document is live.
#[derive(Debug)]
pub struct SegmentedIndex {
    dir: PathBuf,
    /// The generation this view was opened at: a commit from it refuses to
    /// run over a generation another writer made since.
    generation: PathBuf,
    metadata: Metadata,
    model: SharedModel,
    segments: Vec<Segment>,
}

impl SegmentedIndex {
    /// Opens an index directory (one saved by [`crate::Index::save`], a
    /// streamed build, or a segmented one) with every segment's tokens
    /// memory-mapped, as [`crate::Index::open`] does for one.
    pub fn open(dir: impl AsRef<Path>) -> Result<SegmentedIndex, IndexError> {
        Self::open_with(dir.as_ref(), false)
    }

    /// As [`SegmentedIndex::open`], also verifying every token file's
    /// checksum (reads each file once).
    pub fn open_verified(dir: impl AsRef<Path>) -> Result<SegmentedIndex, IndexError> {
        Self::open_with(dir.as_ref(), true)
    }

    fn open_with(dir: &Path, verify: bool) -> Result<SegmentedIndex, IndexError> {
        let (store, mut metadata) = open_store(dir)?;
        let model = read_model(dir, &store, &metadata)?;
        let segments_meta = match metadata.segments.take() {
            Some(meta) => meta,
            None => SegmentsMeta {
                next_id: u32::try_from(metadata.n_docs)
                    .map_err(|_| format_error(dir, "more documents than 32-bit ids"))?,
                base: SegmentIdsMeta {
                    first_id: Some(0),
                    n_deleted: 0,
                },
                appended: Vec::new(),
            },
        };
        check_array_names(dir, &store, &segments_meta)?;
        let mut segments = Vec::with_capacity(1 + segments_meta.appended.len());
        let base_shape = metadata.base_shape();
        segments.push(read_ids_and_deletions(
            dir,
            &store,
            None,
            open_segment(dir, &store, &base_shape, &model, verify)?,
            &base_shape,
            segments_meta.base,
        )?);
        for appended in &segments_meta.appended {
            let shape = metadata.appended_shape(appended);
            segments.push(read_ids_and_deletions(
                dir,
                &store,
                Some(appended.name.clone()),
                open_segment(dir, &store, &shape, &model, verify)?,
                &shape,
                appended.ids,
            )?);
        }
        check_ids(dir, &segments, segments_meta.next_id)?;
        metadata.segments = Some(segments_meta);
        Ok(SegmentedIndex {
            dir: dir.to_path_buf(),
            generation: store.dir().to_path_buf(),
            metadata,
            model,
            segments,
        })
    }

    /// The index directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Live (not deleted) documents.
    pub fn len(&self) -> usize {
        self.segments.iter().map(Segment::live).sum()
    }

    /// Whether no document is live (never true: a change that would leave
    /// none is refused).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Segments, the base one included.
    pub fn n_segments(&self) -> usize {
        self.segments.len()
    }

    /// Deleted documents still stored (until the next compaction).
    pub fn n_deleted(&self) -> usize {
        self.segments.iter().map(|s| s.deleted().len()).sum()
    }

    /// The id the next added document gets.
    pub fn next_id(&self) -> u32 {
        self.segments_meta().next_id
    }

    /// Token width `d`.
    pub fn dim(&self) -> usize {
        self.metadata.dim
    }

    /// Feature width `h`.
    pub fn feature_dim(&self) -> usize {
        self.metadata.feature_dim
    }

    /// The base segment as an index (its positions are not ids once the
    /// directory has been compacted with deletions).
    pub fn base(&self) -> &MappedIndex {
        &self.segments[0].index
    }

    /// What each segment holds, base first.
    pub fn segments(&self) -> Vec<SegmentInfo> {
        self.segments
            .iter()
            .map(|segment| SegmentInfo {
                name: segment.name.clone().unwrap_or_else(|| "base".into()),
                n_docs: segment.index.len(),
                n_tokens: segment.index.corpus().n_tokens(),
                n_deleted: segment.deleted().len(),
                compressed: segment.index.compressed.is_some(),
                compressed_bytes: segment.index.compressed_bytes(),
                graph: segment.index.first_stage.is_some(),
            })
            .collect()
    }

    /// Whether document `id` is live.
    pub fn contains(&self, id: u32) -> bool {
        self.locate(id).is_some()
    }

    /// The ids of every live document, increasing.
    pub fn ids(&self) -> Vec<u32> {
        self.segments
            .iter()
            .flat_map(|segment| {
                (0..segment.index.len() as u32)
                    .filter(|&position| !segment.is_deleted(position))
                    .map(|position| segment.ids.id(position))
            })
            .collect()
    }

    /// Live document `id` as stored: its row of `W` and its f32 tokens
    /// (read from the memory-mapped files whatever the segment searches
    /// on), for exporting an index to another engine.
    pub fn document(&self, id: u32) -> Result<StoredDocument<'_>, IndexError> {
        let (s, position) = self.locate(id).ok_or(IndexError::UnknownDocument { id })?;
        let index = &self.segments[s].index;
        Ok(StoredDocument {
            id,
            weights: index.weights().row(position as usize),
            tokens: index.corpus().get(position as usize),
        })
    }

    /// The segment and position of live document `id`.
    fn locate(&self, id: u32) -> Option<(usize, u32)> {
        self.segments.iter().enumerate().find_map(|(s, segment)| {
            segment
                .ids
                .position(id, segment.index.len())
                .filter(|&position| !segment.is_deleted(position))
                .map(|position| (s, position))
        })
    }

    pub(crate) fn segments_meta(&self) -> &SegmentsMeta {
        self.metadata
            .segments
            .as_ref()
            .expect("an opened segmented index has its segments' metadata")
    }

    /// Searches a batch of queries (one flat `[n_tokens, d]` buffer plus
    /// tokens per query) over every live document of every segment. Hits
    /// carry stable ids, best first, ties to the lower id.
    pub fn search(
        &self,
        query_tokens: &[f32],
        query_counts: &[usize],
        params: SearchParams,
    ) -> Result<Vec<Vec<Hit>>, SearchError> {
        let queries = self.base().queries(query_tokens, query_counts)?;
        self.search_batch(&queries, params)
    }

    /// Searches a validated batch of queries. Each segment proposes its
    /// `k'` best candidates by approximate score; the `k'` best of all of
    /// them are reranked exactly in their segments and the hits merged, so
    /// an index of exactly scanned segments returns what one index of all
    /// its live documents would.
    pub fn search_batch<Q: AsRef<[f32]> + Sync>(
        &self,
        queries: &MultiVectors<Q>,
        params: SearchParams,
    ) -> Result<Vec<Vec<Hit>>, SearchError> {
        self.base().check_queries(queries)?;
        let (k, n_candidates) = params.resolve(self.len())?;
        if k == 0 {
            return Ok(vec![Vec::new(); queries.len()]);
        }
        let features = self.base().query_features(queries);
        // (segment, candidate) by approximate score, per query.
        let mut pooled: Vec<Vec<(usize, lemur_topk::Hit)>> = vec![Vec::new(); queries.len()];
        for (s, segment) in self.segments.iter().enumerate() {
            let live = segment.live();
            if live == 0 {
                continue;
            }
            let lists = segment
                .index
                .scored_candidates(&features, n_candidates.min(live));
            for (pool, list) in pooled.iter_mut().zip(lists) {
                pool.extend(list.into_iter().map(|hit| (s, hit)));
            }
        }
        let mut per_segment: Vec<Vec<Vec<u32>>> =
            vec![vec![Vec::new(); queries.len()]; self.segments.len()];
        for (q, mut pool) in pooled.into_iter().enumerate() {
            // Ties between segments go to the lower stable id.
            let stable = |&(s, hit): &(usize, lemur_topk::Hit)| lemur_topk::Hit {
                id: self.segments[s].ids.id(hit.id),
                score: hit.score,
            };
            pool.sort_by(|a, b| rank_order(&stable(a), &stable(b)));
            for (s, hit) in pool.into_iter().take(n_candidates) {
                per_segment[s][q].push(hit.id);
            }
        }
        Ok(self.rerank_in_segments(queries, &per_segment, k))
    }

    /// Exact brute-force search over every live document (the ground
    /// truth): hits carry stable ids.
    pub fn exhaustive_search<Q: AsRef<[f32]> + Sync>(
        &self,
        queries: &MultiVectors<Q>,
        k: usize,
    ) -> Result<Vec<Vec<Hit>>, SearchError> {
        self.base().check_queries(queries)?;
        let live: Vec<Vec<u32>> = self
            .segments
            .iter()
            .map(|segment| {
                (0..segment.index.len() as u32)
                    .filter(|&p| !segment.is_deleted(p))
                    .collect()
            })
            .collect();
        let per_segment: Vec<Vec<&[u32]>> = live
            .iter()
            .map(|positions| vec![positions.as_slice(); queries.len()])
            .collect();
        Ok(self.rerank_in_segments(queries, &per_segment, k))
    }

    /// Reranks each segment's candidate lists (`per_segment[s][q]`:
    /// positions in segment `s` for query `q`) in that segment and merges
    /// every query's hits by exact score into its `k` best, with stable
    /// ids (ties to the lower id).
    fn rerank_in_segments<Q: AsRef<[f32]> + Sync, C: AsRef<[u32]> + Sync>(
        &self,
        queries: &MultiVectors<Q>,
        per_segment: &[Vec<C>],
        k: usize,
    ) -> Vec<Vec<Hit>> {
        let mut hits: Vec<Vec<lemur_topk::Hit>> = vec![Vec::new(); queries.len()];
        for (segment, lists) in self.segments.iter().zip(per_segment) {
            if lists.iter().all(|list| list.as_ref().is_empty()) {
                continue;
            }
            for (all, found) in hits.iter_mut().zip(segment.index.rerank(queries, lists, k)) {
                all.extend(found.into_iter().map(|hit| lemur_topk::Hit {
                    id: segment.ids.id(hit.doc),
                    score: hit.score,
                }));
            }
        }
        hits.into_iter()
            .map(|mut list| {
                list.sort_by(rank_order);
                list.truncate(k);
                list.into_iter()
                    .map(|hit| Hit {
                        doc: hit.id,
                        score: hit.score,
                    })
                    .collect()
            })
            .collect()
    }
}

/// Reads a segment's listed ids and deletions and attaches them.
fn read_ids_and_deletions(
    dir: &Path,
    store: &Store,
    name: Option<String>,
    mut index: MappedIndex,
    shape: &SegmentShape,
    meta: SegmentIdsMeta,
) -> Result<Segment, IndexError> {
    let ids = match meta.first_id {
        Some(first) => {
            if u64::from(first) + shape.n_docs as u64 > u64::from(u32::MAX) + 1 {
                return Err(format_error(dir, "segment ids overflow 32 bits"));
            }
            SegmentIds::Range { first }
        }
        None => {
            let key = shape.array("doc_ids");
            let (found, ids) = store.read_u32(&key)?;
            if found != [shape.n_docs] || !ids.windows(2).all(|pair| pair[0] < pair[1]) {
                return Err(format_error(
                    dir,
                    format!("{key} is not {} increasing ids", shape.n_docs),
                ));
            }
            SegmentIds::Listed(ids)
        }
    };
    if meta.n_deleted > 0 {
        let key = shape.array("deleted");
        let (found, positions) = store.read_u32(&key)?;
        if found != [meta.n_deleted] {
            return Err(format_error(
                dir,
                format!("{key} has shape {found:?}, not [{}]", meta.n_deleted),
            ));
        }
        let deleted = Deleted::new(positions, shape.n_docs)
            .map_err(|reason| format_error(dir, format!("{key}: {reason}")))?;
        index.deleted = Some(std::sync::Arc::new(deleted));
    }
    Ok(Segment { name, index, ids })
}

/// Checks that ids increase across segments, stay below `next_id`, and
/// that some document is live.
fn check_ids(dir: &Path, segments: &[Segment], next_id: u32) -> Result<(), IndexError> {
    let mut floor: u64 = 0;
    for segment in segments {
        let n = segment.index.len() as u32;
        if n == 0 {
            continue;
        }
        let (first, last) = (segment.ids.id(0), segment.ids.id(n - 1));
        if u64::from(first) < floor || u64::from(last) >= u64::from(next_id) {
            return Err(format_error(
                dir,
                "segment ids overlap or reach past next_id",
            ));
        }
        floor = u64::from(last) + 1;
    }
    if segments.iter().all(|segment| segment.live() == 0) {
        return Err(format_error(dir, "every document is deleted"));
    }
    Ok(())
}

/// Refuses arrays of segments the metadata does not list, and appended
/// segment names that are not `seg-` followed by digits.
fn check_array_names(dir: &Path, store: &Store, meta: &SegmentsMeta) -> Result<(), IndexError> {
    for segment in &meta.appended {
        let valid = segment
            .name
            .strip_prefix("seg-")
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
        if !valid {
            return Err(format_error(
                dir,
                format!("bad segment name {:?}", segment.name),
            ));
        }
    }
    for name in store.names() {
        if is_model_array(name) {
            continue;
        }
        if let Some((segment, _)) = name.split_once('.')
            && !meta.appended.iter().any(|s| s.name == segment)
        {
            return Err(format_error(
                dir,
                format!("array {name:?} belongs to no listed segment"),
            ));
        }
    }
    Ok(())
}

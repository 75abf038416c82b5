//! Both LEMUR stages inside a Qdrant collection, for indexes past one
//! machine.
//!
//! Every document of an index becomes a point whose id is its stable
//! document id, with two named vectors: [`W_VECTOR`] (its row of `W`,
//! dense, `Dot`) and [`TOKENS_VECTOR`] (its tokens, a `max_sim`
//! multivector without an HNSW graph). A search sends one query per LEMUR
//! query: a prefetch of the `k'` best points by `W` against the query
//! features, which lemur-rs computes, then the `k` best of those by exact
//! MaxSim. Qdrant runs it on every shard and merges the shards' hits by
//! score. With exact candidates and f32 tokens the hits are
//! [`lemur::SegmentedIndex::search`]'s, up to exact score ties.
//!
//! [`QdrantCollection`] is blocking: it runs the gRPC client on a runtime
//! of its own, so callers need no async code. Failed requests are sent
//! again with exponential back-off while the failure is a passing one
//! ([`RetryPolicy`]); an interrupted export resumes where it stopped.
//!
//! # Example
//!
//! The requests need no server, so they can be inspected:
//!
//! ```
//! use lemur_qdrant::{CollectionSpec, SearchSpec, TokenStorage, TOKENS_VECTOR};
//!
//! let spec = CollectionSpec { shards: 6, replicas: 2, ..CollectionSpec::default() };
//! let create = spec.create_request("docs", 2048, 128)?.build();
//! assert_eq!((create.shard_number, create.replication_factor), (Some(6), Some(2)));
//!
//! let search = SearchSpec { k: 10, n_candidates: 200, exact: true, ..SearchSpec::default() };
//! let query = search.query_request("docs", &[0.5; 2048], &[0.1; 4 * 128], 128);
//! assert_eq!((query.limit, query.using.as_deref()), (Some(10), Some(TOKENS_VECTOR)));
//! assert_eq!(query.prefetch[0].limit, Some(200));
//! # Ok::<(), lemur_qdrant::QdrantError>(())
//! ```
//!
//! With a server (`no_run`: it needs one):
//!
//! ```no_run
//! use lemur::{MultiVectors, SegmentedIndex};
//! use lemur_qdrant::{CollectionSpec, ExportOptions, QdrantCollection, SearchSpec};
//!
//! let index = SegmentedIndex::open("my-index")?;
//! let collection = QdrantCollection::connect("http://localhost:6334", "docs")?;
//! collection.create(&CollectionSpec { shards: 3, ..CollectionSpec::default() }, &index)?;
//! collection.export(&index, None, &ExportOptions::default(), &|_| Default::default(), &mut |_, _| {})?;
//! let (query_tokens, query_counts) = (vec![0.1; 32 * 128], vec![32]);
//! let hits = collection.search(&index, &query_tokens, &query_counts, &SearchSpec::default())?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod error;
mod points;
mod requests;
mod retry;
#[cfg(feature = "text")]
mod text;

use std::collections::HashMap;
use std::time::Duration;

use lemur::{Hit, MultiVectors, SegmentedIndex};
use qdrant_client::qdrant::{
    DeletePointsBuilder, GetPointsBuilder, PayloadIncludeSelector, PointId,
    QueryBatchPointsBuilder, ScoredPoint, UpsertPointsBuilder, Value, WithPayloadSelector,
    point_id::PointIdOptions, value::Kind,
};
use qdrant_client::{Payload, Qdrant};
use tokio::runtime::Runtime;

pub use error::QdrantError;
pub use points::{DOC_ID_KEY, FINGERPRINT_KEY, fingerprint, text_point_id};
use points::{Outgoing, id_key};
pub use requests::{
    CollectionSpec, SearchSpec, TOKENS_VECTOR, TokenStorage, W_VECTOR, check_collection,
};
pub use retry::RetryPolicy;

/// How an export sends its points.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExportOptions {
    /// Points per upsert request.
    pub batch_size: usize,
    /// Skip the points the collection holds already with the same vectors
    /// (exporting again after an interruption, or after the index changed,
    /// writes only what is missing or different). The fingerprint covers
    /// the vectors, not the payload: `false` rewrites every point, which
    /// is how changed payloads reach points already there.
    pub resume: bool,
}

impl Default for ExportOptions {
    /// 32 points a request (about 1.4 MB at `h = 2048` and 68 tokens of
    /// `d = 128`), resuming.
    fn default() -> Self {
        ExportOptions {
            batch_size: 32,
            resume: true,
        }
    }
}

/// A point's payload as a search returns it.
pub type PointPayload = HashMap<String, Value>;

/// Queries per query-batch request.
const QUERY_BATCH: usize = 64;

/// One collection on a Qdrant server, for one index.
pub struct QdrantCollection {
    client: Qdrant,
    name: String,
    retry: RetryPolicy,
    runtime: Runtime,
}

impl std::fmt::Debug for QdrantCollection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QdrantCollection")
            .field("name", &self.name)
            .field("retry", &self.retry)
            .finish_non_exhaustive()
    }
}

impl QdrantCollection {
    /// A client for collection `name` on the server at `url` (its gRPC
    /// port, usually 6334). Nothing is sent yet: an unreachable server
    /// shows at the first request, after its retries.
    pub fn connect(url: &str, name: &str) -> Result<Self, QdrantError> {
        Self::connect_with(url, name, None, Duration::from_secs(60))
    }

    /// [`QdrantCollection::connect`] with an API key and a per-request
    /// timeout.
    pub fn connect_with(
        url: &str,
        name: &str,
        api_key: Option<String>,
        timeout: Duration,
    ) -> Result<Self, QdrantError> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(QdrantError::Runtime)?;
        let client = {
            let _inside = runtime.enter();
            Qdrant::from_url(url)
                .api_key(api_key)
                .timeout(timeout)
                .connect_timeout(Duration::from_secs(5))
                .skip_compatibility_check()
                .build()
                .map_err(|error| QdrantError::InvalidUrl {
                    url: url.to_string(),
                    message: error.to_string(),
                })?
        };
        Ok(QdrantCollection {
            client,
            name: name.to_string(),
            retry: RetryPolicy::default(),
            runtime,
        })
    }

    /// Sets how failed requests are sent again.
    pub fn with_retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// The collection's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Creates the collection for `index` as `spec` says, or, when it
    /// exists, checks that it fits the index (never changing it). Returns
    /// whether it was created.
    pub fn create(
        &self,
        spec: &CollectionSpec,
        index: &SegmentedIndex,
    ) -> Result<bool, QdrantError> {
        self.create_for(spec, index.feature_dim(), index.dim())
    }

    /// [`QdrantCollection::create`] for an index of `h`-wide rows of `W`
    /// and `d`-wide tokens.
    fn create_for(&self, spec: &CollectionSpec, h: usize, d: usize) -> Result<bool, QdrantError> {
        let request = spec.create_request(&self.name, h, d)?;
        let exists = self.retry.run(
            || format!("looking up collection {:?}", self.name),
            || {
                self.runtime
                    .block_on(self.client.collection_exists(self.name.as_str()))
            },
        )?;
        if exists {
            self.check_for(h, d)?;
            return Ok(false);
        }
        self.retry.run(
            || format!("creating collection {:?}", self.name),
            || {
                self.runtime
                    .block_on(self.client.create_collection(request.clone()))
            },
        )?;
        Ok(true)
    }

    /// Checks that the collection has the named vectors `index` needs, as
    /// wide as its rows of `W` and its tokens.
    pub fn check(&self, index: &SegmentedIndex) -> Result<(), QdrantError> {
        self.check_for(index.feature_dim(), index.dim())
    }

    fn check_for(&self, h: usize, d: usize) -> Result<(), QdrantError> {
        let info = self.retry.run(
            || format!("reading collection {:?}", self.name),
            || {
                self.runtime
                    .block_on(self.client.collection_info(self.name.as_str()))
            },
        )?;
        let info = info.result.unwrap_or_default();
        check_collection(&self.name, &info, h, d)
    }

    /// Writes documents of `index` (every live one, or `ids`) as points, a
    /// batch at a time, creating nothing: call [`QdrantCollection::create`]
    /// first. `payload(id)` is each point's payload (to which the export
    /// adds [`FINGERPRINT_KEY`]); `progress(done, total)` follows each
    /// batch. With `options.resume`, points already in the collection with
    /// the same vectors (the same [`fingerprint`]) are not sent again.
    /// Returns the points written.
    pub fn export(
        &self,
        index: &SegmentedIndex,
        ids: Option<&[u32]>,
        options: &ExportOptions,
        payload: &dyn Fn(u32) -> Payload,
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<usize, QdrantError> {
        options.check()?;
        let ids = match ids {
            Some(ids) => {
                // Unknown or deleted ids fail before anything is written.
                for &id in ids {
                    index.document(id)?;
                }
                ids.to_vec()
            }
            None => index.ids(),
        };
        let documents = ids.iter().map(|&id| {
            let document = index.document(id)?;
            Ok(Outgoing::numbered(
                id,
                document.weights,
                document.tokens,
                payload(id),
            ))
        });
        self.export_documents(ids.len(), index.dim(), documents, options, progress)
    }

    /// Writes `documents` (`total` of them, `d`-wide tokens) a batch at a
    /// time, each batch without the points already up to date when
    /// `options.resume`. Returns the points written.
    fn export_documents<'a>(
        &self,
        total: usize,
        d: usize,
        mut documents: impl Iterator<Item = Result<Outgoing<'a>, QdrantError>>,
        options: &ExportOptions,
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<usize, QdrantError> {
        let (mut done, mut written) = (0, 0);
        loop {
            let batch = documents
                .by_ref()
                .take(options.batch_size)
                .collect::<Result<Vec<_>, _>>()?;
            let (Some(first), Some(last)) = (batch.first(), batch.last()) else {
                break;
            };
            let span = || format!("points {}..={} of {:?}", first.label, last.label, self.name);
            let outgoing: Vec<&Outgoing<'_>> = if options.resume {
                self.stale(&batch, span)?
            } else {
                batch.iter().collect()
            };
            if !outgoing.is_empty() {
                let points: Vec<_> = outgoing.iter().map(|document| document.point(d)).collect();
                let request = UpsertPointsBuilder::new(self.name.as_str(), points).wait(true);
                self.retry.run(
                    || format!("upserting {} (export again to resume)", span()),
                    || {
                        self.runtime
                            .block_on(self.client.upsert_points(request.clone()))
                    },
                )?;
                written += outgoing.len();
            }
            done += batch.len();
            progress(done, total);
        }
        Ok(written)
    }

    /// The documents of `batch` that the collection lacks, or holds with
    /// other vectors (another fingerprint).
    fn stale<'b, 'a>(
        &self,
        batch: &'b [Outgoing<'a>],
        span: impl Fn() -> String,
    ) -> Result<Vec<&'b Outgoing<'a>>, QdrantError> {
        let point_ids: Vec<PointId> = batch.iter().map(|document| document.id.clone()).collect();
        let request = GetPointsBuilder::new(self.name.as_str(), point_ids)
            .with_payload(PayloadIncludeSelector::from(vec![
                FINGERPRINT_KEY.to_string(),
            ]))
            .with_vectors(false);
        let found = self.retry.run(
            || format!("reading {}", span()),
            || {
                self.runtime
                    .block_on(self.client.get_points(request.clone()))
            },
        )?;
        let stored: HashMap<String, String> = found
            .result
            .into_iter()
            .filter_map(|point| {
                let key = id_key(point.id.as_ref()?)?;
                let fingerprint = string_value(point.payload.get(FINGERPRINT_KEY)?)?;
                Some((key, fingerprint.to_string()))
            })
            .collect();
        Ok(batch
            .iter()
            .filter(|document| {
                id_key(&document.id).and_then(|key| stored.get(&key)) != Some(&document.fingerprint)
            })
            .collect())
    }

    /// Deletes documents from the collection (ones deleted from the index,
    /// say); ids it does not hold are ignored.
    pub fn delete(&self, ids: &[u32]) -> Result<(), QdrantError> {
        let point_ids: Vec<PointId> = ids.iter().map(|&id| u64::from(id).into()).collect();
        self.delete_points(point_ids)
    }

    fn delete_points(&self, point_ids: Vec<PointId>) -> Result<(), QdrantError> {
        let count = point_ids.len();
        let request = DeletePointsBuilder::new(self.name.as_str())
            .points(point_ids)
            .wait(true);
        self.retry.run(
            || format!("deleting {count} points from {:?}", self.name),
            || {
                self.runtime
                    .block_on(self.client.delete_points(request.clone()))
            },
        )?;
        Ok(())
    }

    /// The `k` best documents of each query (`query_tokens`, `[n_tokens,
    /// d]`, split by `query_counts`), best first, as
    /// [`SegmentedIndex::search`] returns them: each shard takes its own
    /// `k'` candidates by `W` and reranks them by exact MaxSim.
    pub fn search(
        &self,
        index: &SegmentedIndex,
        query_tokens: &[f32],
        query_counts: &[usize],
        spec: &SearchSpec,
    ) -> Result<Vec<Vec<Hit>>, QdrantError> {
        let found = self.search_with_payloads(index, query_tokens, query_counts, spec)?;
        Ok(found
            .into_iter()
            .map(|hits| hits.into_iter().map(|(hit, _)| hit).collect())
            .collect())
    }

    /// [`QdrantCollection::search`] with each hit's payload (empty unless
    /// `spec.with_payload`).
    pub fn search_with_payloads(
        &self,
        index: &SegmentedIndex,
        query_tokens: &[f32],
        query_counts: &[usize],
        spec: &SearchSpec,
    ) -> Result<Vec<Vec<(Hit, PointPayload)>>, QdrantError> {
        spec.check()?;
        let queries = index.base().queries(query_tokens, query_counts)?;
        if let Some(q) = query_counts.iter().position(|&count| count == 0) {
            return Err(QdrantError::InvalidArgument(format!(
                "query {q} has no tokens"
            )));
        }
        if query_tokens.iter().any(|value| !value.is_finite()) {
            return Err(QdrantError::InvalidArgument(
                "the query tokens hold NaN or infinity".into(),
            ));
        }
        let features = index.base().query_features(&queries);
        let answers = self.query(&features, &queries, index.feature_dim(), spec, None)?;
        each_point(answers, |point| {
            let doc = match point.id.and_then(|id| id.point_id_options) {
                Some(PointIdOptions::Num(id)) => u32::try_from(id).ok(),
                _ => None,
            }
            .ok_or_else(|| self.mismatch("a point's id is not a document id"))?;
            let hit = Hit {
                doc,
                score: point.score,
            };
            Ok((hit, point.payload))
        })
    }

    /// The two-stage query of every query (`features`, `[n, h]`), in
    /// batches: each query's scored points, best first. `with_payload`
    /// overrides `spec.with_payload`.
    fn query<T: AsRef<[f32]>>(
        &self,
        features: &[f32],
        queries: &MultiVectors<T>,
        h: usize,
        spec: &SearchSpec,
        with_payload: Option<WithPayloadSelector>,
    ) -> Result<Vec<Vec<ScoredPoint>>, QdrantError> {
        let requests: Vec<_> = (0..queries.len())
            .map(|q| {
                let mut request = spec.query_request(
                    &self.name,
                    &features[q * h..(q + 1) * h],
                    queries.get(q),
                    queries.dim(),
                );
                if let Some(selector) = &with_payload {
                    request.with_payload = Some(selector.clone());
                }
                request
            })
            .collect();
        let mut answers = Vec::with_capacity(requests.len());
        for chunk in requests.chunks(QUERY_BATCH) {
            let request = QueryBatchPointsBuilder::new(self.name.as_str(), chunk.to_vec());
            let answer = self.retry.run(
                || format!("searching {:?}", self.name),
                || {
                    self.runtime
                        .block_on(self.client.query_batch(request.clone()))
                },
            )?;
            answers.extend(answer.result.into_iter().map(|batch| batch.result));
        }
        if answers.len() != queries.len() {
            return Err(self.mismatch(&format!(
                "{} answers to {} queries",
                answers.len(),
                queries.len()
            )));
        }
        Ok(answers)
    }

    fn mismatch(&self, reason: &str) -> QdrantError {
        QdrantError::Mismatch {
            collection: self.name.clone(),
            reason: reason.to_string(),
        }
    }
}

impl ExportOptions {
    fn check(&self) -> Result<(), QdrantError> {
        if self.batch_size == 0 {
            return Err(QdrantError::InvalidArgument(
                "batch_size must be at least 1".into(),
            ));
        }
        Ok(())
    }
}

/// Every query's scored points as `convert` makes them, or its first
/// refusal.
fn each_point<R>(
    answers: Vec<Vec<ScoredPoint>>,
    convert: impl Fn(ScoredPoint) -> Result<R, QdrantError>,
) -> Result<Vec<Vec<R>>, QdrantError> {
    answers
        .into_iter()
        .map(|points| points.into_iter().map(&convert).collect())
        .collect()
}

/// The string a payload value holds, if it is one.
fn string_value(value: &Value) -> Option<&str> {
    match value.kind.as_ref()? {
        Kind::StringValue(text) => Some(text),
        _ => None,
    }
}

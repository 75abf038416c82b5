//! The Qdrant requests for an index, built without a connection: the
//! collection, the points and the two-stage query.

use qdrant_client::qdrant::{
    CollectionInfo, CreateCollectionBuilder, Datatype, Distance, HnswConfigDiffBuilder,
    MultiVectorComparator, MultiVectorConfigBuilder, NamedVectors, PrefetchQueryBuilder,
    QuantizationSearchParamsBuilder, Query, QueryPoints, QueryPointsBuilder,
    ScalarQuantizationBuilder, SearchParamsBuilder, Vector, VectorInput, VectorParams,
    VectorParamsBuilder, VectorsConfigBuilder, vectors_config,
};

use crate::QdrantError;

/// The named vector holding each document's row of `W`.
pub const W_VECTOR: &str = "lemur_w";
/// The named multivector holding each document's tokens.
pub const TOKENS_VECTOR: &str = "tokens";

/// How the collection stores the documents' tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TokenStorage {
    /// Half the bytes; MaxSim within about 1e-3 of f32 on unit tokens.
    #[default]
    Float16,
    /// Exact.
    Float32,
}

/// The collection's layout and placement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CollectionSpec {
    /// Shards the documents are spread over.
    pub shards: u32,
    /// Copies of every shard.
    pub replicas: u32,
    /// Copies that must acknowledge a write.
    pub write_consistency: u32,
    /// How the tokens are stored.
    pub tokens: TokenStorage,
    /// Keep an int8 copy of `W` in RAM for the first stage (the f32 rows
    /// then rescore its best candidates).
    pub quantize_w: bool,
    /// Keep the f32 rows of `W` on disk rather than in RAM.
    pub w_on_disk: bool,
    /// Keep the tokens on disk rather than in RAM.
    pub tokens_on_disk: bool,
}

impl Default for CollectionSpec {
    /// One shard, one copy, float16 tokens on disk, int8 `W` in RAM over
    /// f32 rows on disk.
    fn default() -> Self {
        CollectionSpec {
            shards: 1,
            replicas: 1,
            write_consistency: 1,
            tokens: TokenStorage::Float16,
            quantize_w: true,
            w_on_disk: true,
            tokens_on_disk: true,
        }
    }
}

impl CollectionSpec {
    /// The request creating collection `name` for an index of `h`-wide
    /// rows of `W` and `d`-wide tokens.
    pub fn create_request(
        &self,
        name: &str,
        h: usize,
        d: usize,
    ) -> Result<CreateCollectionBuilder, QdrantError> {
        for (what, value) in [
            ("shards", self.shards),
            ("replicas", self.replicas),
            ("write_consistency", self.write_consistency),
        ] {
            if value == 0 {
                return Err(QdrantError::InvalidArgument(format!(
                    "{what} must be at least 1"
                )));
            }
        }
        let mut w = VectorParamsBuilder::new(h as u64, Distance::Dot).on_disk(self.w_on_disk);
        if self.quantize_w {
            w = w.quantization_config(ScalarQuantizationBuilder::default().always_ram(true));
        }
        let datatype = match self.tokens {
            TokenStorage::Float16 => Datatype::Float16,
            TokenStorage::Float32 => Datatype::Float32,
        };
        let tokens = VectorParamsBuilder::new(d as u64, Distance::Dot)
            .on_disk(self.tokens_on_disk)
            .datatype(datatype)
            .multivector_config(MultiVectorConfigBuilder::new(MultiVectorComparator::MaxSim))
            .hnsw_config(HnswConfigDiffBuilder::default().m(0));
        let mut vectors = VectorsConfigBuilder::default();
        vectors.add_named_vector_params(W_VECTOR, w);
        vectors.add_named_vector_params(TOKENS_VECTOR, tokens);
        Ok(CreateCollectionBuilder::new(name)
            .vectors_config(vectors)
            .shard_number(self.shards)
            .replication_factor(self.replicas)
            .write_consistency_factor(self.write_consistency))
    }
}

/// Checks that `info` (collection `name`'s) has the named vectors an index
/// of `h`-wide rows of `W` and `d`-wide tokens needs.
pub fn check_collection(
    name: &str,
    info: &CollectionInfo,
    h: usize,
    d: usize,
) -> Result<(), QdrantError> {
    let mismatch = |reason: String| QdrantError::Mismatch {
        collection: name.to_string(),
        reason,
    };
    let config = info
        .config
        .as_ref()
        .and_then(|config| config.params.as_ref())
        .and_then(|params| params.vectors_config.as_ref())
        .and_then(|vectors| vectors.config.as_ref());
    let Some(vectors_config::Config::ParamsMap(map)) = config else {
        return Err(mismatch(format!(
            "it has no named vectors {W_VECTOR:?} and {TOKENS_VECTOR:?}"
        )));
    };
    for (vector, size, multivector) in [(W_VECTOR, h, false), (TOKENS_VECTOR, d, true)] {
        let params: &VectorParams = map
            .map
            .get(vector)
            .ok_or_else(|| mismatch(format!("it has no vector named {vector:?}")))?;
        if params.size != size as u64 {
            return Err(mismatch(format!(
                "vector {vector:?} is {} wide, the index needs {size}",
                params.size
            )));
        }
        if params.distance != Distance::Dot as i32 {
            return Err(mismatch(format!("vector {vector:?} does not use Dot")));
        }
        let max_sim = params
            .multivector_config
            .is_some_and(|config| config.comparator == MultiVectorComparator::MaxSim as i32);
        if multivector != max_sim {
            return Err(mismatch(if multivector {
                format!("vector {vector:?} is not a max_sim multivector")
            } else {
                format!("vector {vector:?} is a multivector")
            }));
        }
    }
    Ok(())
}

/// A document's named vectors: its row of `W`, and its tokens (`[n, d]`
/// row-major) as a multivector.
pub(crate) fn document_vectors(weights: &[f32], tokens: &[f32], d: usize) -> NamedVectors {
    NamedVectors::default()
        .add_vector(W_VECTOR, Vector::new_dense(weights.to_vec()))
        .add_vector(TOKENS_VECTOR, Vector::new_multi(rows(tokens, d)))
}

/// How a search runs on the collection.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SearchSpec {
    /// Results per query.
    pub k: usize,
    /// Candidates each shard takes by `W` and reranks by MaxSim (`k'`).
    pub n_candidates: usize,
    /// HNSW beam width of the first stage (Qdrant's default when `None`).
    pub hnsw_ef: Option<u64>,
    /// Scan every row of `W` instead of the HNSW graph.
    pub exact: bool,
    /// Rescore the quantized `W`'s candidates on the f32 rows.
    pub rescore: bool,
    /// Candidates taken from the quantized `W` per one kept, before the
    /// rescore (Qdrant's default when `None`).
    pub oversampling: Option<f64>,
    /// Return the points' payloads.
    pub with_payload: bool,
}

impl Default for SearchSpec {
    /// `k = 10`, `k' = 200`, HNSW with Qdrant's defaults, rescored.
    fn default() -> Self {
        SearchSpec {
            k: 10,
            n_candidates: 200,
            hnsw_ef: None,
            exact: false,
            rescore: true,
            oversampling: None,
            with_payload: false,
        }
    }
}

impl SearchSpec {
    /// Refuses `k = 0`, fewer candidates than results, and oversampling
    /// below 1.
    pub fn check(&self) -> Result<(), QdrantError> {
        if self.k == 0 {
            return Err(QdrantError::InvalidArgument("k must be at least 1".into()));
        }
        if self.n_candidates < self.k {
            return Err(QdrantError::InvalidArgument(format!(
                "n_candidates ({}) must be at least k ({})",
                self.n_candidates, self.k
            )));
        }
        if let Some(oversampling) = self.oversampling
            && !(oversampling.is_finite() && oversampling >= 1.0)
        {
            return Err(QdrantError::InvalidArgument(format!(
                "oversampling must be at least 1, not {oversampling}"
            )));
        }
        Ok(())
    }

    /// The query of one LEMUR query: the `k'` best points by `lemur_w`
    /// against its `features`, then the `k` best of those by MaxSim of its
    /// `tokens` (`[n, d]` row-major).
    pub fn query_request(
        &self,
        name: &str,
        features: &[f32],
        tokens: &[f32],
        d: usize,
    ) -> QueryPoints {
        let mut params = SearchParamsBuilder::default().exact(self.exact);
        if let Some(ef) = self.hnsw_ef {
            params = params.hnsw_ef(ef);
        }
        let mut quantization = QuantizationSearchParamsBuilder::default().rescore(self.rescore);
        if let Some(oversampling) = self.oversampling {
            quantization = quantization.oversampling(oversampling);
        }
        let prefetch = PrefetchQueryBuilder::default()
            .query(Query::new_nearest(features.to_vec()))
            .using(W_VECTOR)
            .limit(self.n_candidates as u64)
            .params(params.quantization(quantization));
        QueryPointsBuilder::new(name)
            .add_prefetch(prefetch)
            .query(Query::new_nearest(VectorInput::new_multi(rows(tokens, d))))
            .using(TOKENS_VECTOR)
            .limit(self.k as u64)
            .with_payload(self.with_payload)
            .build()
    }
}

/// `values` (`[n, d]` row-major) as rows.
fn rows(values: &[f32], d: usize) -> Vec<Vec<f32>> {
    values.chunks_exact(d).map(<[f32]>::to_vec).collect()
}

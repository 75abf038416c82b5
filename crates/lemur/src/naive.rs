//! The naive pipeline: the definition of LEMUR search, computed the slow
//! obvious way in f64, for tests and fixtures.
//!
//! Naive features (`lemur_mlp::naive`), naive `f W^T`, a full sort for the
//! candidates, naive MaxSim (`lemur_maxsim::naive`) and a full sort for the
//! results. Nothing here is shared with the fast path but the definitions.

use lemur_maxsim::MultiVectors;
use lemur_mlp::FeatureMap;

use crate::{DocWeights, Hit, SearchParams};

/// Query features of every query, in f64.
pub fn query_features<Q: AsRef<[f32]>>(
    map: &FeatureMap,
    queries: &MultiVectors<Q>,
) -> Vec<Vec<f64>> {
    (0..queries.len())
        .map(|q| lemur_mlp::naive::query_feature(map, queries.get(q)))
        .collect()
}

/// Approximate scores `f . w_j` of one query feature against every row.
pub fn approximate_scores(feature: &[f64], weights: &DocWeights) -> Vec<f64> {
    (0..weights.n_docs())
        .map(|j| {
            feature
                .iter()
                .zip(weights.row(j))
                .map(|(f, &w)| f * w as f64)
                .sum()
        })
        .collect()
}

/// Sorts `(id, score)` pairs best first, ties to the lower id.
pub fn sort_ranked<S: Copy + PartialOrd>(ranked: &mut [(u32, S)]) {
    ranked.sort_by(|a, b| {
        b.1.partial_cmp(&a.1)
            .expect("finite scores")
            .then(a.0.cmp(&b.0))
    });
}

/// The candidates of one query: the `n_candidates` best approximate scores
/// (full sort), with their scores.
pub fn candidates(feature: &[f64], weights: &DocWeights, n_candidates: usize) -> Vec<(u32, f64)> {
    let mut ranked: Vec<(u32, f64)> = approximate_scores(feature, weights)
        .into_iter()
        .enumerate()
        .map(|(j, s)| (j as u32, s))
        .collect();
    sort_ranked(&mut ranked);
    ranked.truncate(n_candidates);
    ranked
}

/// The whole search, by definition. `params` must satisfy `k <=
/// n_candidates` (the fast path's error cases are not repeated here).
pub fn search<T: AsRef<[f32]>, Q: AsRef<[f32]>>(
    map: &FeatureMap,
    weights: &DocWeights,
    corpus: &MultiVectors<T>,
    queries: &MultiVectors<Q>,
    params: SearchParams,
) -> Vec<Vec<Hit>> {
    let n_candidates = params.n_candidates.min(corpus.len());
    let k = params.k.min(n_candidates);
    query_features(map, queries)
        .iter()
        .enumerate()
        .map(|(q, feature)| {
            let mut exact: Vec<(u32, f32)> = candidates(feature, weights, n_candidates)
                .into_iter()
                .map(|(j, _)| {
                    (
                        j,
                        lemur_maxsim::naive::maxsim(
                            queries.get(q),
                            corpus.get(j as usize),
                            corpus.dim(),
                        ),
                    )
                })
                .collect();
            sort_ranked(&mut exact);
            exact.truncate(k);
            exact
                .into_iter()
                .map(|(doc, score)| Hit { doc, score })
                .collect()
        })
        .collect()
}

/// Exact brute-force top-`k` by MaxSim over the whole corpus: the ground
/// truth recall is measured against.
pub fn exact_top_k<T: AsRef<[f32]>>(corpus: &MultiVectors<T>, query: &[f32], k: usize) -> Vec<Hit> {
    let mut all: Vec<(u32, f32)> = (0..corpus.len())
        .map(|j| {
            (
                j as u32,
                lemur_maxsim::naive::maxsim(query, corpus.get(j), corpus.dim()),
            )
        })
        .collect();
    sort_ranked(&mut all);
    all.truncate(k);
    all.into_iter()
        .map(|(doc, score)| Hit { doc, score })
        .collect()
}

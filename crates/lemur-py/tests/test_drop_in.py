"""The original LEMUR README's example with only the imports changed."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import exact_top_k, recall_at

from lemur_rs import Lemur
from lemur_rs.maxsim import MaxSim


@pytest.fixture(scope="module")
def corpus(readme_corpus):
    return readme_corpus


@pytest.fixture(scope="module")
def fitted(corpus, tmp_path_factory):
    index_dir = tmp_path_factory.mktemp("drop-in") / "lemur_index"
    lemur = Lemur(index=index_dir, device="cpu")
    lemur.fit(train=corpus.tokens, train_counts=corpus.counts, epochs=10, verbose=False)
    return lemur, index_dir


def test_readme_example_reaches_exact_maxsim(corpus, fitted):
    lemur, _ = fitted
    # 1) Compute features for test queries
    feats = lemur.compute_features((corpus.query_tokens, corpus.query_counts))
    # 2) Approximate scores for all documents, k' candidates
    scores = feats @ lemur.W.T
    k_candidates = 200
    cand = np.argsort(-scores, axis=1, kind="stable")[:, :k_candidates]
    # 3) Rerank with MaxSim
    cand_np = np.ascontiguousarray(cand.astype(np.int32))
    ms = MaxSim(corpus.tokens, corpus.counts)
    reranked = ms.rerank_subset(corpus.query_tokens, corpus.query_counts, 10, cand_np)
    assert reranked.dtype == np.int32 and reranked.shape == (len(corpus.query_counts), 10)
    truth, _ = exact_top_k(corpus, 10)
    recall = recall_at(reranked, truth)
    print(f"recall@10 against exact MaxSim: {recall:.4f}")
    assert recall >= 0.95


def test_shapes_and_scaling(corpus, fitted):
    lemur, _ = fitted
    n_docs = len(corpus.counts)
    assert lemur.W.shape == (n_docs, 2048) and lemur.W.dtype == np.float32
    assert lemur.final_hidden_dim == 2048
    feats = lemur.compute_features((corpus.query_tokens, corpus.query_counts))
    assert feats.shape == (len(corpus.query_counts), 2048)
    # The 3-D form averages a query's token features; the tuple form sums
    # them over 32.
    tokens = corpus.query_tokens[:24].reshape(4, 6, -1)
    mean = lemur.compute_features(tokens)
    summed = lemur.compute_features((corpus.query_tokens[:24], np.full(4, 6, dtype=np.int32)))
    np.testing.assert_allclose(mean, summed * 32 / 6, rtol=1e-5, atol=1e-6)


def test_compute_weights_gives_the_rows_fit_gave(corpus, fitted):
    lemur, _ = fitted
    ids = [5, 17, 1199, 0]
    tokens, counts = corpus.documents(ids)
    rows = lemur.compute_weights(tokens, counts.astype(np.uint64))
    assert rows.shape == (4, 2048)
    np.testing.assert_allclose(rows, lemur.W[ids], rtol=1e-4, atol=1e-5)


def test_fit_reuses_the_saved_index(corpus, fitted):
    lemur, index_dir = fitted
    again = Lemur(index=index_dir).fit(corpus.tokens, corpus.counts, epochs=10, verbose=False)
    np.testing.assert_array_equal(again.W, lemur.W)
    # A corpus of another shape is not served the stale index.
    tokens, counts = corpus.documents(range(500))
    other = Lemur(index=index_dir).fit(tokens, counts, epochs=0, verbose=False)
    assert other.W.shape == (500, 2048)


def test_rerank_subset_pads_and_breaks_ties_like_the_original(corpus):
    ms = MaxSim(corpus.tokens, corpus.counts)
    queries = corpus.query_tokens[:6]
    counts = np.array([6], dtype=np.int64)
    # Fewer candidates than k: the rest is -1; -1 candidates are skipped.
    ids = ms.rerank_subset(queries, counts, 5, np.array([[3, -1, 9, 4]], dtype=np.int64))
    assert sorted(ids[0, :3].tolist()) == [3, 4, 9] and ids[0, 3:].tolist() == [-1, -1]
    # The same document twice scores the same; the duplicate comes back
    # twice, as in the original.
    ids, scores = ms.rerank(queries, counts, 2, np.array([[8, 8]]))
    assert ids.tolist() == [[8, 8]] and scores[0, 0] == scores[0, 1]
    # k = 0 and fixed-length queries.
    assert ms.rerank_subset(queries, counts, 0, np.array([[1, 2]])).shape == (1, 0)
    fixed = ms.rerank_subset_fixed(queries.reshape(1, 6, -1), 3, np.array([[1, 2, 3, 4]]))
    flat = ms.rerank_subset(queries, counts, 3, np.array([[1, 2, 3, 4]]))
    np.testing.assert_array_equal(fixed, flat)


def test_rerank_scores_are_exact_maxsim(corpus):
    ms = MaxSim(corpus.tokens, corpus.counts)
    all_docs = np.tile(np.arange(len(corpus.counts)), (len(corpus.query_counts), 1))
    ids, scores = ms.rerank(corpus.query_tokens, corpus.query_counts, 10, all_docs, num_threads=2)
    truth_ids, truth_scores = exact_top_k(corpus, 10)
    np.testing.assert_allclose(scores, truth_scores, rtol=1e-5, atol=1e-5)
    assert recall_at(ids, truth_ids) >= 0.99
    one_thread = ms.rerank(corpus.query_tokens, corpus.query_counts, 10, all_docs, num_threads=1)
    np.testing.assert_array_equal(one_thread[0], ids)
    np.testing.assert_array_equal(one_thread[1], scores)

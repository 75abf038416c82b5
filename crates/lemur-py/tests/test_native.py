"""The native API: the same hits as the Rust engine, and index changes."""

from __future__ import annotations

import subprocess

import numpy as np
import pytest
from conftest import exact_top_k, recall_at

from lemur_rs import Index


@pytest.fixture(scope="module")
def built(corpus):
    return Index.build(corpus.tokens, corpus.counts, epochs=0, final_hidden_dim=512, seed=3)


def test_search_gives_the_rust_cli_hits(corpus, built, lemur_cli, tmp_path):
    built.save(tmp_path / "index")
    np.save(tmp_path / "q.npy", corpus.query_tokens)
    np.save(tmp_path / "qc.npy", corpus.query_counts.astype(np.int64))
    run = subprocess.run(
        [lemur_cli, "search", str(tmp_path / "index"), "--queries", str(tmp_path / "q.npy"),
         "--query-counts", str(tmp_path / "qc.npy"), "-k", "10", "--candidates", "100"],
        check=True, capture_output=True, text=True,
    ).stdout
    ids, scores = built.search(corpus.query_tokens, corpus.query_counts, k=10, n_candidates=100)
    assert ids.dtype == np.int64 and scores.dtype == np.float32 and ids.shape == (100, 10)
    rust_ids = np.full((100, 10), -1, dtype=np.int64)
    rust_scores = np.full((100, 10), -np.inf, dtype=np.float32)
    rank = np.zeros(100, dtype=int)
    for line in run.splitlines():
        q, doc, score = line.split("\t")
        q = int(q)
        rust_ids[q, rank[q]] = int(doc)
        rust_scores[q, rank[q]] = np.float32(score)
        rank[q] += 1
    np.testing.assert_array_equal(ids, rust_ids)
    np.testing.assert_array_equal(scores, rust_scores)
    truth, _ = exact_top_k(corpus, 10)
    assert recall_at(ids, truth) >= 0.9


def test_threads_do_not_change_hits(corpus, built):
    one = built.search(corpus.query_tokens, corpus.query_counts, num_threads=1)
    two = built.search(corpus.query_tokens, corpus.query_counts, num_threads=2)
    np.testing.assert_array_equal(one[0], two[0])
    np.testing.assert_array_equal(one[1], two[1])


def test_opened_directory_adds_deletes_and_compacts(corpus, tmp_path):
    first, first_counts = corpus.documents(range(2000))
    index = Index.build(first, first_counts, epochs=0, final_hidden_dim=256, seed=1)
    index.save(tmp_path / "grow")
    opened = Index.open(tmp_path / "grow")
    assert len(opened) == 2000 and opened.path is not None
    more, more_counts = corpus.documents(range(2000, 3000))
    added = opened.add(more, more_counts)
    np.testing.assert_array_equal(added, np.arange(2000, 3000))
    assert opened.n_segments == 2
    # A query built from document 2500's own tokens finds it.
    doc, _ = corpus.documents([2500])
    ids, _ = opened.search(doc, np.array([len(doc)]), k=1, n_candidates=50)
    assert ids[0, 0] == 2500
    assert opened.delete(np.array([2500, 7])) == 2
    ids, _ = opened.search(doc, np.array([len(doc)]), k=10, n_candidates=50)
    assert 2500 not in ids[0] and 7 not in ids[0]
    with pytest.raises(ValueError, match="2500"):
        opened.delete([2500])
    assert opened.compact()
    reopened = Index.open(tmp_path / "grow")
    assert len(reopened) == 2998 and reopened.n_segments == 1
    after, _ = reopened.search(doc, np.array([len(doc)]), k=10, n_candidates=50)
    np.testing.assert_array_equal(after, ids)


def test_build_config_round_trips(built):
    config = built.build_config
    assert config["final_hidden_dim"] == 512 and config["epochs"] == 0 and config["seed"] == 3
    assert built.feature_dim == 512 and built.dim == 48 and len(built) == 3000

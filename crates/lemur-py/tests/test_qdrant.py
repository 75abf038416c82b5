"""lemur_rs.qdrant: an index exported into Qdrant and searched there gives
lemur-rs's own hits, on Qdrant's engine in process (qdrant-edge-py, one and
two shards) and through qdrant-client's local mode, for document ids and a
text index's string ids; failures are typed, an interrupted export resumes
without duplicates, and exporting a changed index sends what changed."""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest
from qdrant_client import QdrantClient, models
from qdrant_client.http.exceptions import UnexpectedResponse

from conftest import assert_same_hits, make_corpus, make_texts
from edge_client import EdgeClient
from lemur_rs import Index, TextIndex
from lemur_rs import qdrant

K, N_CANDIDATES = 10, 40
#: Exact candidates and f32 storage, so Qdrant computes what lemur-rs does.
EXACT = dict(tokens_datatype="float32", quantize_w=False)


@pytest.fixture(scope="module")
def small():
    return make_corpus(n_docs=400, n_queries=30, seed=5)


@pytest.fixture()
def opened(small, tmp_path):
    """An index directory over ``small`` with an appended segment, opened."""
    first, first_counts = small.documents(range(300))
    Index.build(first, first_counts, epochs=0, final_hidden_dim=256, seed=2).save(tmp_path / "index")
    index = Index.open(tmp_path / "index")
    index.add(*small.documents(range(300, 400)))
    return index


def merged(results, k):
    """The ``k`` best hits of several searches, by score (ties: lower id)."""
    ids = np.concatenate([r[0] for r in results], axis=1)
    scores = np.concatenate([r[1] for r in results], axis=1)
    out_ids, out_scores = [], []
    for q in range(len(ids)):
        order = np.lexsort((ids[q], -scores[q]))[:k]
        out_ids.append(ids[q][order])
        out_scores.append(scores[q][order])
    return np.array(out_ids), np.array(out_scores)


def test_one_edge_shard_gives_the_index_hits(small, opened, tmp_path):
    client = EdgeClient(tmp_path / "edge")
    assert qdrant.export(opened, client, "docs", batch_size=48, **EXACT) == 400
    assert client.count("docs") == 400
    found = qdrant.search(
        opened, client, "docs", small.query_tokens, small.query_counts, K, N_CANDIDATES, exact=True
    )
    expected = opened.search(small.query_tokens, small.query_counts, K, N_CANDIDATES)
    assert_same_hits(found, expected)
    client.close()


def test_two_edge_shards_give_the_merged_hits_of_the_halves(small, opened, tmp_path):
    client = EdgeClient(tmp_path / "edge")
    qdrant.export(opened, client, "docs", shards=2, **EXACT)
    found = qdrant.search(
        opened, client, "docs", small.query_tokens, small.query_counts, K, N_CANDIDATES, exact=True
    )
    # lemur-rs over each shard's documents (ids of one parity), merged.
    halves = []
    for parity in (0, 1):
        path = tmp_path / f"half-{parity}"
        shutil.copytree(opened.path, path)
        half = Index.open(path)
        half.delete([i for i in opened.ids() if i % 2 != parity])
        halves.append(half.search(small.query_tokens, small.query_counts, K, N_CANDIDATES))
    assert_same_hits(found, merged(halves, K))
    # Each shard took its own k' candidates: more than one index's k'.
    single = opened.search(small.query_tokens, small.query_counts, K, N_CANDIDATES)
    assert (found[1] >= single[1] - 1e-4).all()
    client.close()


def test_local_mode_export_search_delete_and_reexport(small, opened):
    client = QdrantClient(":memory:")
    payloads = {int(i): {"name": f"doc-{i}"} for i in opened.ids()}
    assert qdrant.export(opened, client, "docs", payloads=payloads, **EXACT) == 400
    expected = opened.search(small.query_tokens, small.query_counts, K, N_CANDIDATES)
    ids, scores, hit_payloads = qdrant.search(
        opened, client, "docs", small.query_tokens, small.query_counts, K, N_CANDIDATES,
        with_payload=True,
    )
    assert_same_hits((ids, scores), expected)
    # The caller's payload, beside the fingerprint the export adds.
    assert hit_payloads[0][0]["name"] == f"doc-{ids[0][0]}"
    assert set(hit_payloads[0][0]) == {"name", qdrant.FINGERPRINT_KEY}

    # Deleting from both keeps them in step.
    doomed = np.unique(expected[0][:, 0])
    assert opened.delete(doomed) == len(doomed)
    qdrant.delete(client, "docs", doomed)
    found = qdrant.search(opened, client, "docs", small.query_tokens, small.query_counts, K, N_CANDIDATES)
    assert not np.isin(found[0], doomed).any()
    assert_same_hits(found, opened.search(small.query_tokens, small.query_counts, K, N_CANDIDATES))
    # Exporting again writes nothing; documents added later are written.
    assert qdrant.export(opened, client, "docs", **EXACT) == 0
    added = opened.add(*small.documents(range(5)))
    assert qdrant.export(opened, client, "docs", ids=added, **EXACT) == 5
    assert client.count("docs").count == 400 - len(doomed) + 5


def test_a_changed_index_is_rewritten_where_it_changed(small):
    documents, counts = small.documents(range(400))
    first = Index.build(documents, counts, epochs=0, final_hidden_dim=256, seed=2)
    client = QdrantClient(":memory:")
    assert qdrant.export(first, client, "docs", **EXACT) == 400
    # The same ids under another feature map: every point is stale.
    second = Index.build(documents, counts, epochs=0, final_hidden_dim=256, seed=3)
    assert qdrant.export(second, client, "docs", **EXACT) == 400
    assert qdrant.export(second, client, "docs", **EXACT) == 0
    q, c = small.query_tokens, small.query_counts
    assert_same_hits(
        qdrant.search(second, client, "docs", q, c, K, N_CANDIDATES, exact=True),
        second.search(q, c, K, N_CANDIDATES),
    )


def assert_same_text_hits(found, expected):
    """``assert_same_hits`` for lists of ``(id, score)`` lists: per query
    the same string ids (up to exact score ties), scores within 1e-4."""
    assert [len(hits) for hits in found] == [len(hits) for hits in expected]
    numbers = {doc: n for n, doc in enumerate(sorted({doc for hits in expected + found for doc, _ in hits}))}

    def arrays(results):
        ids = np.array([[numbers[doc] for doc, _ in hits] for hits in results])
        return ids, np.array([[score for _, score in hits] for hits in results])

    assert_same_hits(arrays(found), arrays(expected))


@pytest.mark.parametrize("where", ["edge", "local"])
def test_a_text_index_is_searched_by_its_string_ids(minilm, tmp_path, where):
    ids, texts, queries = make_texts(n_docs=80, n_queries=12, seed=3)
    index = TextIndex(minilm, n_candidates=N_CANDIDATES)
    index.index(ids, texts)
    client = EdgeClient(tmp_path / "edge") if where == "edge" else QdrantClient(":memory:")
    assert qdrant.export(index, client, "texts", batch_size=32, **EXACT) == 80
    found = qdrant.search_text(index, client, "texts", queries, k=5, n_candidates=N_CANDIDATES, exact=True)
    assert_same_text_hits(found, index.search(queries, k=5))
    one = qdrant.search_text(index, client, "texts", queries[0], k=5, n_candidates=N_CANDIDATES, exact=True)
    assert one == found[0]

    # A re-indexed text is the one point sent again; a removed one is
    # deleted by its string id.
    assert qdrant.export(index, client, "texts", **EXACT) == 0
    index.index("doc-003", "A lighthouse keeper polishes the brass lamp every evening.")
    assert index.remove("doc-007")
    assert qdrant.export(index, client, "texts", **EXACT) == 1
    qdrant.delete(client, "texts", ["doc-007"])
    count = client.count("texts")
    assert getattr(count, "count", count) == 79
    hits = qdrant.search_text(index, client, "texts", ["who polishes the lamp of the lighthouse"], k=3, exact=True)
    assert hits[0][0][0] == "doc-003"
    everything = qdrant.search_text(index, client, "texts", queries, k=20, exact=True)
    assert all(doc != "doc-007" for hits in everything for doc, _ in hits)

    with pytest.raises(ValueError, match="not in the index"):
        qdrant.export(index, client, "texts", ids=["doc-007"])
    with pytest.raises(ValueError, match="has no text"):
        qdrant.search_text(index, client, "texts", ["  "])
    with pytest.raises(ValueError, match="no documents"):
        qdrant.export(TextIndex(minilm), client, "empty")
    if where == "edge":
        client.close()


class Flaky:
    """A client whose upserts fail with HTTP 503 ``failures`` times, starting
    with upsert number ``at`` (counting from 0)."""

    def __init__(self, client, at, failures):
        self.client, self.at, self.failures, self.upserts = client, at, failures, 0

    def upsert(self, **kwargs):
        number, self.upserts = self.upserts, self.upserts + 1
        if number >= self.at and self.failures > 0:
            self.failures -= 1
            raise UnexpectedResponse(503, "Service Unavailable", b"overloaded", None)
        return self.client.upsert(**kwargs)

    def __getattr__(self, name):
        return getattr(self.client, name)


def test_a_failing_export_retries_then_resumes_without_duplicates(opened):
    client = QdrantClient(":memory:")
    # Two failures in a row are retried away.
    flaky = Flaky(client, at=1, failures=2)
    assert qdrant.export(opened, flaky, "a", batch_size=100, retries=2, backoff=0.001, **EXACT) == 400
    # Past the retries the export stops with a QdrantError after batch 2...
    flaky = Flaky(client, at=2, failures=10)
    with pytest.raises(qdrant.QdrantError, match="export again to resume"):
        qdrant.export(opened, flaky, "b", batch_size=100, retries=2, backoff=0.001, **EXACT)
    assert client.count("b").count == 200
    # ...and exporting again writes only what is missing.
    assert qdrant.export(opened, client, "b", batch_size=100, **EXACT) == 200
    assert client.count("b").count == client.count("a").count == 400


def test_bad_collections_and_inputs_are_typed_errors(small, opened):
    client = QdrantClient(":memory:")
    config = qdrant.vectors_config(opened, **EXACT)
    config["lemur_w"] = models.VectorParams(size=opened.feature_dim + 1, distance=models.Distance.DOT)
    client.create_collection("narrow", vectors_config=config)
    with pytest.raises(ValueError, match=f"is {opened.feature_dim + 1} wide, the index needs {opened.feature_dim}"):
        qdrant.export(opened, client, "narrow")
    client.create_collection(
        "single", vectors_config=models.VectorParams(size=8, distance=models.Distance.DOT)
    )
    with pytest.raises(ValueError, match="no named vectors"):
        qdrant.export(opened, client, "single")
    with pytest.raises(ValueError, match="not in the index"):
        qdrant.export(opened, client, "docs", ids=[5, 10_000])
    with pytest.raises(ValueError, match="shards"):
        qdrant.export(opened, client, "docs", shards=0)
    with pytest.raises(ValueError, match="tokens_datatype"):
        qdrant.export(opened, client, "docs", tokens_datatype="int8")
    assert not client.collection_exists("docs")
    qdrant.export(opened, client, "docs", **EXACT)
    q, c = small.query_tokens, small.query_counts
    with pytest.raises(ValueError, match="k must be"):
        qdrant.search(opened, client, "docs", q, c, k=0)
    with pytest.raises(ValueError, match="n_candidates"):
        qdrant.search(opened, client, "docs", q, c, k=10, n_candidates=5)
    with pytest.raises(ValueError, match="no tokens"):
        qdrant.search(opened, client, "docs", q, _no_tokens(c))
    bad = q.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError):
        qdrant.search(opened, client, "docs", bad, c)


def _no_tokens(counts):
    """``counts`` with the first query's tokens given to the second."""
    moved = counts.copy()
    moved[1] += moved[0]
    moved[0] = 0
    return moved


def test_an_unreachable_server_is_a_qdrant_error(opened):
    client = QdrantClient(url="http://127.0.0.1:9", timeout=1, check_compatibility=False)
    with pytest.raises(qdrant.QdrantError, match="after 2 tries"):
        qdrant.export(opened, client, "docs", retries=1, backoff=0.001)


def test_a_live_server(small, opened):
    url = os.environ.get("LEMUR_QDRANT_URL")
    if not url:
        pytest.skip("LEMUR_QDRANT_URL is not set: no Qdrant server to test against")
    client = QdrantClient(url=url, timeout=30)
    name = f"lemur-rs-test-{os.getpid()}"
    try:
        qdrant.export(opened, client, name, shards=2, **EXACT)
        expected = opened.search(small.query_tokens, small.query_counts, K, N_CANDIDATES)
        found = qdrant.search(opened, client, name, small.query_tokens, small.query_counts, K, N_CANDIDATES, exact=True)
        # Every shard reranks its own k' candidates, a superset of the
        # index's: no hit can be worse than the index's at its rank.
        assert (found[1] >= expected[1] - 1e-4).all()
        doomed = np.unique(found[0][:, 0])
        opened.delete(doomed)
        qdrant.delete(client, name, doomed)
        assert not np.isin(qdrant.search(opened, client, name, small.query_tokens, small.query_counts)[0], doomed).any()
        assert qdrant.export(opened, client, name) == 0
    finally:
        client.delete_collection(name)

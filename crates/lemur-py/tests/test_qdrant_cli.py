"""The Rust connector (`lemur qdrant export|search|delete`, crate
lemur-qdrant) over gRPC against Qdrant's engine in process: the same run
file as `lemur search` (`lemur text search` for a text index), per-shard
candidates merged like a cluster's, resumed exports, point ids and
fingerprints shared with the Python module, and typed failures."""

from __future__ import annotations

import json
import shutil
import subprocess

import numpy as np
import pytest

from conftest import assert_same_hits, make_corpus, make_texts
from edge_client import EdgeClient
from lemur_rs import Index, TextIndex
from lemur_rs import qdrant
from qdrant_grpc import serve

K, N_CANDIDATES = 10, 40


@pytest.fixture(scope="module")
def small():
    return make_corpus(n_docs=400, n_queries=30, seed=9)


@pytest.fixture()
def setup(small, tmp_path):
    """An index directory with an appended segment, the queries as .npy,
    and a gRPC endpoint on edge shards."""
    first, first_counts = small.documents(range(300))
    Index.build(first, first_counts, epochs=0, final_hidden_dim=256, seed=4).save(tmp_path / "index")
    Index.open(tmp_path / "index").add(*small.documents(range(300, 400)))
    np.save(tmp_path / "q.npy", small.query_tokens)
    np.save(tmp_path / "qc.npy", small.query_counts.astype(np.int64))
    client = EdgeClient(tmp_path / "edge")
    server, points, port = serve(client)
    yield tmp_path, f"http://127.0.0.1:{port}", client, points
    server.stop(None)
    client.close()


def lemur(cli, *args, check=True):
    return subprocess.run([cli, "--quiet", *map(str, args)], capture_output=True, text=True, check=check)


def read_run(path):
    rows = [line.split("\t") for line in path.read_text().splitlines()]
    n_queries = max(int(row[0]) for row in rows) + 1
    ids = [[] for _ in range(n_queries)]
    scores = [[] for _ in range(n_queries)]
    for query, doc, score in rows:
        ids[int(query)].append(int(doc))
        scores[int(query)].append(float(score))
    return np.array(ids), np.array(scores)


def search_args(tmp, url, run, *extra):
    return ("qdrant", "search", tmp / "index", "--url", url, "--collection", "docs",
            "--queries", tmp / "q.npy", "--query-counts", tmp / "qc.npy",
            "-k", K, "--candidates", N_CANDIDATES, "--out", run, *extra)


def test_export_and_search_give_lemur_search_run(setup, lemur_cli):
    tmp, url, client, _ = setup
    lemur(lemur_cli, "qdrant", "export", tmp / "index", "--url", url, "--collection", "docs",
          "--tokens", "f32", "--no-quantize-w", "--batch", 48)
    assert client.count("docs") == 400
    lemur(lemur_cli, *search_args(tmp, url, tmp / "qdrant.tsv", "--exact"))
    lemur(lemur_cli, "search", tmp / "index", "--queries", tmp / "q.npy",
          "--query-counts", tmp / "qc.npy", "-k", K, "--candidates", N_CANDIDATES,
          "--out", tmp / "lemur.tsv")
    assert_same_hits(read_run(tmp / "qdrant.tsv"), read_run(tmp / "lemur.tsv"))

    # Deleting from both keeps them in step.
    doomed = sorted(set(read_run(tmp / "lemur.tsv")[0][:, 0].tolist()))
    ids = ",".join(map(str, doomed))
    lemur(lemur_cli, "delete", tmp / "index", "--ids", ids)
    lemur(lemur_cli, "qdrant", "delete", "--url", url, "--collection", "docs", "--ids", ids)
    lemur(lemur_cli, *search_args(tmp, url, tmp / "qdrant.tsv", "--exact"))
    lemur(lemur_cli, "search", tmp / "index", "--queries", tmp / "q.npy",
          "--query-counts", tmp / "qc.npy", "-k", K, "--candidates", N_CANDIDATES,
          "--out", tmp / "lemur.tsv")
    found = read_run(tmp / "qdrant.tsv")
    assert not np.isin(found[0], doomed).any()
    assert_same_hits(found, read_run(tmp / "lemur.tsv"))


def test_two_shards_give_the_merged_runs_of_the_halves(setup, lemur_cli):
    tmp, url, _, _ = setup
    lemur(lemur_cli, "qdrant", "export", tmp / "index", "--url", url, "--collection", "docs",
          "--shards", 2, "--tokens", "f32", "--no-quantize-w")
    lemur(lemur_cli, *search_args(tmp, url, tmp / "qdrant.tsv", "--exact"))
    halves = []
    for parity in (0, 1):
        half = tmp / f"half-{parity}"
        shutil.copytree(tmp / "index", half)
        others = [i for i in range(400) if i % 2 != parity]
        lemur(lemur_cli, "delete", half, "--ids", ",".join(map(str, others)))
        lemur(lemur_cli, "search", half, "--queries", tmp / "q.npy", "--query-counts", tmp / "qc.npy",
              "-k", K, "--candidates", N_CANDIDATES, "--out", tmp / f"half-{parity}.tsv")
        halves.append(read_run(tmp / f"half-{parity}.tsv"))
    ids = np.concatenate([h[0] for h in halves], axis=1)
    scores = np.concatenate([h[1] for h in halves], axis=1)
    order = [np.lexsort((ids[q], -scores[q]))[:K] for q in range(len(ids))]
    merged = (np.take_along_axis(ids, np.array(order), 1), np.take_along_axis(scores, np.array(order), 1))
    assert_same_hits(read_run(tmp / "qdrant.tsv"), merged)


def test_a_failing_server_is_retried_and_the_export_resumes(setup, lemur_cli):
    tmp, url, client, points = setup
    export = ("qdrant", "export", tmp / "index", "--url", url, "--collection", "docs",
              "--batch", 100, "--retries", 1)
    # Past its retries the export stops after the batches that went in...
    lemur(lemur_cli, *export, "--ids", ",".join(map(str, range(200))))
    points.fail_upserts = 100
    failed = lemur(lemur_cli, *export, check=False)
    assert failed.returncode == 1
    assert "failed after 2 tries" in failed.stderr and "export again to resume" in failed.stderr
    assert client.count("docs") == 200
    # ...failures within the retries are sent again (qdrant-client itself
    # reconnects and resends once a try, so two tries outlast three), and
    # exporting again writes only what is missing.
    points.fail_upserts = 3
    done = lemur(lemur_cli, "--json", *export)
    assert points.fail_upserts == 0
    assert '"written": 200' in done.stdout
    assert client.count("docs") == 400


def test_bad_servers_and_collections_are_one_line_errors(setup, lemur_cli):
    tmp, url, client, _ = setup
    unreachable = lemur(lemur_cli, "qdrant", "export", tmp / "index", "--url", "http://127.0.0.1:9",
                        "--collection", "docs", "--retries", 0, check=False)
    assert unreachable.returncode == 1 and "failed after 1 tries" in unreachable.stderr
    bad_url = lemur(lemur_cli, "qdrant", "export", tmp / "index", "--url", "not a url",
                    "--collection", "docs", check=False)
    assert bad_url.returncode == 1 and "invalid Qdrant URL" in bad_url.stderr
    # A collection made for another index.
    from qdrant_client import models

    client.create_collection("other", {
        "lemur_w": models.VectorParams(size=64, distance=models.Distance.DOT),
        "tokens": models.VectorParams(size=48, distance=models.Distance.DOT,
                                      multivector_config=models.MultiVectorConfig(
                                          comparator=models.MultiVectorComparator.MAX_SIM)),
    })
    mismatch = lemur(lemur_cli, "qdrant", "export", tmp / "index", "--url", url,
                     "--collection", "other", check=False)
    assert mismatch.returncode == 1
    assert 'vector "lemur_w" is 64 wide, the index needs 256' in mismatch.stderr
    assert client.count("other") == 0
    zero = lemur(lemur_cli, "qdrant", "export", tmp / "index", "--url", url, "--collection", "x",
                 "--shards", 0, check=False)
    assert zero.returncode == 1 and "shards must be at least 1" in zero.stderr
    unknown = lemur(lemur_cli, "qdrant", "export", tmp / "index", "--url", url, "--collection", "fresh",
                    "--ids", "5,100000", check=False)
    assert unknown.returncode == 1 and "100000" in unknown.stderr
    assert not client.collection_exists("fresh")


def read_text_run(path):
    """A `lemur text search` run file: per query line, its (id, score) hits."""
    hits = {}
    for line in path.read_text().splitlines():
        query, doc, score = line.split("\t")
        hits.setdefault(int(query), []).append((doc, float(score)))
    return hits


def test_a_text_index_is_exported_and_searched_like_lemur_text_search(setup, minilm, lemur_cli):
    tmp, url, client, _ = setup
    ids, texts, queries = make_texts(n_docs=80, n_queries=12, seed=4)
    index = TextIndex(minilm, n_candidates=N_CANDIDATES)
    index.index(ids, texts)
    index.save(tmp / "texts")
    (tmp / "q.jsonl").write_text("".join(json.dumps({"text": q}) + "\n" for q in queries))
    # Exported by the Python module, the collection is already up to date
    # for the Rust connector: both derive the same point ids and
    # fingerprints.
    assert qdrant.export(index, client, "texts", tokens_datatype="float32", quantize_w=False) == 80
    export = ("qdrant", "export", tmp / "texts", "--url", url, "--collection", "texts")
    assert '"written": 0' in lemur(lemur_cli, "--json", *export).stdout
    search = ("qdrant", "search", tmp / "texts", "--url", url, "--collection", "texts",
              "--queries", tmp / "q.jsonl", "-k", 5, "--candidates", N_CANDIDATES, "--exact")
    lemur(lemur_cli, *search, "--out", tmp / "qdrant.tsv")
    lemur(lemur_cli, "text", "search", tmp / "texts", "--queries", tmp / "q.jsonl", "-k", 5,
          "--candidates", N_CANDIDATES, "--out", tmp / "text.tsv")
    found, expected = read_text_run(tmp / "qdrant.tsv"), read_text_run(tmp / "text.tsv")
    assert sorted(found) == sorted(expected) == list(range(1, 13))
    for line in expected:
        assert [doc for doc, _ in found[line]] == [doc for doc, _ in expected[line]]
        np.testing.assert_allclose([s for _, s in found[line]], [s for _, s in expected[line]], atol=1e-4)

    # A re-indexed text is sent again, and a removed one deleted by its id.
    index.index("doc-003", "A lighthouse keeper polishes the brass lamp every evening.")
    index.remove("doc-007")
    index.save(tmp / "texts")
    assert '"written": 1' in lemur(lemur_cli, "--json", *export).stdout
    lemur(lemur_cli, "qdrant", "delete", "--url", url, "--collection", "texts", "--doc-ids", "doc-007")
    assert client.count("texts") == 79
    lemur(lemur_cli, *search, "--out", tmp / "qdrant.tsv")
    assert all(doc != "doc-007" for hits in read_text_run(tmp / "qdrant.tsv").values() for doc, _ in hits)

    wrong = lemur(lemur_cli, *search, "--query-counts", tmp / "qc.npy", check=False)
    assert wrong.returncode == 1 and "query texts" in wrong.stderr
    not_text = lemur(lemur_cli, "qdrant", "export", tmp / "index", "--url", url, "--collection", "docs",
                     "--model", tmp / "nowhere", check=False)
    assert not_text.returncode == 1 and "not a text index" in not_text.stderr

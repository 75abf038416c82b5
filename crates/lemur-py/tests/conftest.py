"""A small synthetic corpus with planted structure, and exact MaxSim.

Documents are sets of unit token vectors drawn around a few topic centres;
a query is a noisy subset of one document's tokens, so its best documents
by MaxSim are few and clear, as with real late-interaction encoders.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

DIM = 48
#: The sentence-transformers model `cargo xtask fetch-models` puts here.
MINILM = Path(__file__).resolve().parents[3] / "models" / "all-MiniLM-L6-v2"


@dataclass
class Corpus:
    tokens: np.ndarray
    counts: np.ndarray
    query_tokens: np.ndarray
    query_counts: np.ndarray

    def documents(self, ids):
        """Tokens and counts of the documents ``ids`` (in that order)."""
        offsets = np.concatenate([[0], np.cumsum(self.counts)])
        parts = [self.tokens[offsets[i] : offsets[i + 1]] for i in ids]
        return np.concatenate(parts), self.counts[list(ids)].copy()


def _unit(rows: np.ndarray) -> np.ndarray:
    return (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)


def make_corpus(n_docs: int, n_queries: int, seed: int) -> Corpus:
    rng = np.random.default_rng(seed)
    topics = rng.standard_normal((32, DIM))
    counts = rng.integers(6, 20, size=n_docs).astype(np.int32)
    doc_topic = rng.integers(0, len(topics), size=n_docs)
    token_topic = np.repeat(doc_topic, counts)
    tokens = _unit(topics[token_topic] + 1.2 * rng.standard_normal((counts.sum(), DIM)))
    offsets = np.concatenate([[0], np.cumsum(counts)])
    sources = rng.integers(0, n_docs, size=n_queries)
    query_counts = rng.integers(4, 9, size=n_queries).astype(np.int32)
    parts = []
    for source, count in zip(sources, query_counts):
        doc = tokens[offsets[source] : offsets[source + 1]]
        rows = doc[rng.integers(0, len(doc), size=count)]
        parts.append(_unit(rows + 0.35 * rng.standard_normal(rows.shape)))
    return Corpus(tokens, counts, np.concatenate(parts), query_counts)


def exact_top_k(corpus: Corpus, k: int):
    """Exact MaxSim top ``k`` over every document, in NumPy: ``(ids, scores)``."""
    offsets = np.concatenate([[0], np.cumsum(corpus.counts)])
    query_offsets = np.concatenate([[0], np.cumsum(corpus.query_counts)])
    sims = corpus.query_tokens @ corpus.tokens.T
    ids, scores = [], []
    for q in range(len(corpus.query_counts)):
        block = sims[query_offsets[q] : query_offsets[q + 1]]
        totals = np.maximum.reduceat(block, offsets[:-1], axis=1).sum(axis=0, dtype=np.float64)
        order = np.lexsort((np.arange(len(totals)), -totals))[:k]
        ids.append(order)
        scores.append(totals[order])
    return np.array(ids), np.array(scores)


def assert_same_hits(found, expected):
    """``(ids, scores)`` against ``expected``: scores within 1e-4, ids equal
    except where two expected scores tie."""
    (ids, scores), (want_ids, want_scores) = found, expected
    np.testing.assert_allclose(scores, want_scores, atol=1e-4)
    for q in range(len(ids)):
        for got, want, score in zip(ids[q], want_ids[q], want_scores[q]):
            if got != want:
                ties = np.abs(np.asarray(want_scores[q]) - score) < 1e-5
                assert ties.sum() > 1, (q, ids[q], want_ids[q])


def recall_at(found: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(set(f) & set(t)) / len(t) for f, t in zip(found, truth)]))


@pytest.fixture(scope="session")
def corpus() -> Corpus:
    return make_corpus(n_docs=3000, n_queries=100, seed=7)


@pytest.fixture(scope="session")
def readme_corpus() -> Corpus:
    """Small enough for the README's 10 training epochs in a test build."""
    return make_corpus(n_docs=1200, n_queries=100, seed=11)


@pytest.fixture(scope="session")
def lemur_cli() -> str:
    """The ``lemur`` binary the Rust results come from (``LEMUR_CLI``)."""
    path = os.environ.get("LEMUR_CLI")
    if not path:
        pytest.fail("LEMUR_CLI is not set: run these tests with `cargo xtask test-python`")
    subprocess.run([path, "--help"], check=True, capture_output=True)
    return path


@pytest.fixture(scope="session")
def minilm():
    from lemur_rs import TextEncoder

    assert MINILM.is_dir(), "run `cargo xtask fetch-models` first"
    return TextEncoder(MINILM)


def make_texts(n_docs: int, n_queries: int, seed: int) -> tuple[list[str], list[str], list[str]]:
    """``n_docs`` short sentences with string ids, and query texts about
    some of them, drawn from a few word lists."""
    rng = np.random.default_rng(seed)
    subjects = ["The knight", "A baker", "The river", "An astronomer", "The volcano", "A gardener",
                "The orchestra", "A surgeon", "The goalkeeper", "A programmer", "The glacier", "A pilot"]
    verbs = ["watches", "builds", "crosses", "measures", "heats", "repairs", "paints", "carries"]
    objects = ["the moons of Mars", "fresh bread", "a stone bridge", "the chess board", "red tulips",
               "an old violin", "the broken wing", "a heavy ball", "the compiler", "cold water"]
    places = ["at dawn", "in the valley", "near the harbour", "under the stars", "in the kitchen",
              "beside the lake", "on the mountain", "in the city"]
    texts = [
        f"{rng.choice(subjects)} {rng.choice(verbs)} {rng.choice(objects)} {rng.choice(places)}."
        for _ in range(n_docs)
    ]
    ids = [f"doc-{i:03d}" for i in range(n_docs)]
    queries = [
        f"who {rng.choice(verbs)} {rng.choice(objects)} {rng.choice(places)}" for _ in range(n_queries)
    ]
    return ids, texts, queries

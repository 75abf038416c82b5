"""Bad input is a Python exception naming the cause, never a crash."""

from __future__ import annotations

import numpy as np
import pytest

from lemur_rs import Index, Lemur
from lemur_rs.maxsim import MaxSim


@pytest.fixture(scope="module")
def small(corpus):
    tokens, counts = corpus.documents(range(300))
    return tokens, counts, Index.build(tokens, counts, epochs=0, final_hidden_dim=128)


def test_index_inputs(small):
    tokens, counts, index = small
    query = tokens[:5]
    one = np.array([5])
    with pytest.raises(ValueError, match="wide"):
        index.search(np.zeros((5, 7), np.float32), one)
    with pytest.raises(ValueError, match="NaN"):
        index.search(np.full((5, 48), np.nan, np.float32), one)
    with pytest.raises(ValueError, match="sum"):
        index.search(query, np.array([4]))
    with pytest.raises(ValueError, match="0 tokens"):
        index.search(query, np.array([5, 0]))
    with pytest.raises(ValueError, match="n_candidates"):
        index.search(query, one, k=20, n_candidates=10)
    with pytest.raises(ValueError, match=">= 0"):
        index.search(query, one, k=-1)
    with pytest.raises(ValueError, match="integer"):
        index.search(query, np.array([5.0]))
    with pytest.raises(ValueError, match="float"):
        index.search(query.astype(np.int32), one)
    with pytest.raises(TypeError, match="numpy ndarray or torch tensor"):
        index.search(query.tolist(), one)
    ids, scores = index.search(query, one, k=0)
    assert ids.shape == (1, 0) and scores.shape == (1, 0)
    # More results than documents: padded.
    ids, scores = index.search(query, one, k=400, n_candidates=400)
    assert (ids[0, 300:] == -1).all() and np.isneginf(scores[0, 300:]).all()
    with pytest.raises(ValueError, match="0 tokens"):
        index.add(tokens[:3], np.array([3, 0]))
    with pytest.raises(ValueError, match="index directory"):
        index.delete([1])
    with pytest.raises(ValueError, match="unknown field"):
        Index.build(tokens, counts, epochs=0, no_such_setting=1)


def test_files(small, tmp_path):
    _, _, index = small
    with pytest.raises(OSError):
        Index.open(tmp_path / "missing")
    index.save(tmp_path / "ok")
    opened = Index.open(tmp_path / "ok")
    with pytest.raises(ValueError, match="not in the index"):
        opened.delete([5000])
    # A corrupt file: every array file of the generation cut short.
    generation = next(p for p in (tmp_path / "ok").iterdir() if p.is_dir())
    for file in generation.iterdir():
        if file.suffix == ".npy":
            file.write_bytes(file.read_bytes()[:100])
    with pytest.raises(OSError):
        Index.open(tmp_path / "ok")


def test_maxsim_inputs(small):
    tokens, counts, _ = small
    ms = MaxSim(tokens, counts)
    query = tokens[:5]
    with pytest.raises(ValueError, match="candidate 300"):
        ms.rerank_subset(query, np.array([5]), 3, np.array([[1, 300]]))
    with pytest.raises(ValueError, match="rows"):
        ms.rerank_subset(query, np.array([5]), 3, np.array([[1], [2]]))
    with pytest.raises(ValueError, match="0 tokens"):
        MaxSim(tokens, np.concatenate([counts[:-1], [0, counts[-1]]]))
    with pytest.raises(ValueError, match="non-negative"):
        MaxSim(tokens, -counts)


def test_lemur_inputs(small):
    tokens, counts, _ = small
    with pytest.raises(ValueError, match="CPU"):
        Lemur(device="cuda")
    with pytest.raises(ValueError, match="provided together"):
        Lemur().fit(tokens, counts, learn=tokens)
    with pytest.raises(ValueError, match="activation"):
        Lemur().fit(tokens, counts, activation="tanh")
    with pytest.raises(AttributeError, match="fit"):
        Lemur().compute_features((tokens[:5], np.array([5])))
    with pytest.raises(ValueError, match="2D"):
        Lemur().fit(tokens.reshape(-1), counts)

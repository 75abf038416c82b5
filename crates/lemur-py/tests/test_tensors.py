"""PyTorch tensors in, tensors out (only where PyTorch is installed)."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from lemur_rs import Lemur  # noqa: E402
from lemur_rs.maxsim import MaxSim  # noqa: E402


def test_readme_example_with_tensors(corpus):
    train = torch.from_numpy(corpus.tokens)
    train_counts = torch.from_numpy(corpus.counts.astype(np.uint64))
    test = torch.from_numpy(corpus.query_tokens)
    test_counts = torch.from_numpy(corpus.query_counts.astype(np.uint64))
    lemur = Lemur(device="cpu")
    lemur.fit(train=train, train_counts=train_counts, epochs=0, verbose=False)
    feats = lemur.compute_features((test, test_counts))
    assert isinstance(feats, torch.Tensor) and isinstance(lemur.W, torch.Tensor)
    scores = feats @ lemur.W.T
    cand = torch.topk(scores, 200, dim=1).indices
    cand_np = np.ascontiguousarray(cand.cpu().numpy().astype(np.int32))
    reranked = MaxSim(train, train_counts).rerank_subset(test, test_counts, 10, cand_np)
    assert reranked.shape == (len(corpus.query_counts), 10)
    tokens, counts = corpus.documents([0, 1, 2])
    new_w = lemur.compute_weights(torch.from_numpy(tokens), torch.from_numpy(counts))
    assert isinstance(new_w, torch.Tensor)
    np.testing.assert_allclose(new_w.numpy(), lemur.W[:3].numpy(), rtol=1e-4, atol=1e-5)

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


def test_an_index_directory_the_original_saved_is_imported_once(corpus, tmp_path):
    """mlp.pt and w.pt in the original's layout (state-dict keys, config,
    output_mean/std) are read with torch, and its features are the
    original's MLP forward."""
    generator = torch.Generator().manual_seed(0)
    d, h = corpus.tokens.shape[1], 256
    state = {
        "feature_extractor.0.weight": torch.randn(h, d, generator=generator) / d**0.5,
        "feature_extractor.0.bias": torch.randn(h, generator=generator) * 0.1,
        "feature_extractor.1.weight": 1 + 0.1 * torch.randn(h, generator=generator),
        "feature_extractor.1.bias": 0.1 * torch.randn(h, generator=generator),
        "output_layer.weight": torch.randn(64, h, generator=generator),
    }
    config = {
        "model_type": "mlp", "input_dim": d, "output_dim": 64, "hidden_dim": 512,
        "final_hidden_dim": h, "num_layers": 1, "activation": "gelu",
    }
    saved_w = torch.randn(len(corpus.counts), h, generator=generator)
    torch.save(
        {"state_dict": state, "config": config, "output_mean": 0.25, "output_std": 1.5},
        tmp_path / "mlp.pt",
    )
    torch.save({"W": saved_w}, tmp_path / "w.pt")

    train, train_counts = torch.from_numpy(corpus.tokens), torch.from_numpy(corpus.counts)
    lemur = Lemur(index=tmp_path).fit(train, train_counts, verbose=False)
    np.testing.assert_array_equal(lemur.W.numpy(), saved_w.numpy())
    queries = torch.from_numpy(corpus.query_tokens[:40])
    counts = torch.tensor([8, 12, 20], dtype=torch.int32)
    with torch.no_grad():
        hidden = queries @ state["feature_extractor.0.weight"].T + state["feature_extractor.0.bias"]
        hidden = torch.nn.functional.layer_norm(
            hidden, (h,), state["feature_extractor.1.weight"], state["feature_extractor.1.bias"]
        )
        token_features = torch.nn.functional.gelu(hidden)
        expected = torch.stack([part.sum(0) for part in token_features.split([8, 12, 20])]) / 32
    got = lemur.compute_features((queries, counts))
    np.testing.assert_allclose(got.numpy(), expected.numpy(), rtol=1e-4, atol=1e-5)
    # New documents get rows through the imported model's normalisation.
    tokens, doc_counts = corpus.documents([3, 4])
    assert lemur.compute_weights(torch.from_numpy(tokens), torch.from_numpy(doc_counts)).shape == (2, h)
    # Converted once: the directory now holds a lemur-rs index, reused as it is.
    assert (tmp_path / "lemur-rs" / "CURRENT").exists()
    again = Lemur(index=tmp_path).fit(train, train_counts, verbose=False)
    np.testing.assert_array_equal(again.W.numpy(), saved_w.numpy())

"""The original LEMUR's ``Lemur`` class on lemur-rs, without PyTorch.

``Lemur(index=...).fit(train, train_counts, ...)`` trains the feature map
and fits ``W`` in Rust; ``compute_features``, ``compute_weights`` and ``W``
behave as the original's (the same shapes, the same scaling: the tuple form
sums token features over 32, the 3-D form averages them), on NumPy arrays
or PyTorch tensors, returning what came in. The index directory holds a
lemur-rs index (docs/FORMAT.md), which ``fit`` reuses when it was built on
a corpus of the same shape, as the original reuses its ``mlp.pt``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from . import _arrays, _original
from .index import Index

__all__ = ["Lemur"]

#: The original's activations.
ACTIVATIONS = ("relu", "gelu", "silu", "mish")


def _checked_pair(name: str, matrix: Any, counts: Any) -> tuple[np.ndarray, np.ndarray] | None:
    """A ``(tokens, counts)`` pair checked as the original checks it."""
    if (matrix is None) != (counts is None):
        raise ValueError(f"{name} and {name}_counts must be provided together.")
    if matrix is None:
        return None
    tokens = _arrays.float_matrix(matrix, name)
    return tokens, _arrays.counts(counts, f"{name}_counts", rows=tokens.shape[0])


class Lemur:
    """Learns LEMUR's feature map and document weights ``W`` for a corpus.

    ``index`` names a directory the fitted index is saved to (and reused
    from); ``device`` must be ``"cpu"``: lemur-rs runs on the CPU.
    """

    def __init__(self, index: str | os.PathLike[str] | None = None, device: Any = "cpu") -> None:
        if str(device) != "cpu":
            raise ValueError(f"lemur_rs runs on the CPU only (device={device!r}); use device='cpu'")
        self.device = "cpu"
        self.index_path = Path(index) if index is not None else None
        self.final_hidden_dim: int | None = None
        self.index: Index | None = None
        self.W: Any = None
        self._like: Any = None

    def fit(
        self,
        train: Any,
        train_counts: Any,
        learn: Any = None,
        learn_counts: Any = None,
        test: Any = None,
        test_counts: Any = None,
        train_subset_size: int = 8192,
        learn_subset_size: int = 100000,
        ols_sample_size: int = 16384,
        num_layers: int = 1,
        hidden_dim: int = 512,
        final_hidden_dim: int | None = 2048,
        activation: str = "gelu",
        epochs: int = 100,
        lr: float = 3e-3,
        batch_size: int = 512,
        grad_clip: float | None = 0.5,
        force_retrain: bool = False,
        verbose: bool = True,
        *,
        seed: int = 0,
        num_threads: int = -1,
        **config: Any,
    ) -> "Lemur":
        """Trains the feature map on ``learn`` (default: the corpus tokens)
        against MaxSim targets over sampled corpus documents, then fits one
        row of ``W`` per document. Keywords are the original's; ``test`` is
        checked but not used (lemur-rs keeps the best epoch by training
        loss, or on held-out learn rows with ``validation_rows``). Extra
        keywords: ``seed`` (the original draws a new random state each
        time), ``num_threads``, and any other ``BuildConfig`` field."""
        corpus = _checked_pair("train", train, train_counts)
        learn_pair = _checked_pair("learn", learn, learn_counts)
        _checked_pair("test", test, test_counts)
        tokens, counts = corpus
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of: {', '.join(ACTIVATIONS)}")
        if epochs < 0:
            raise ValueError("epochs must be >= 0")
        if num_layers < 1:
            raise ValueError("num_layers must be >= 1")
        if final_hidden_dim is None:
            final_hidden_dim = hidden_dim
        self._like = train
        reused = None if force_retrain else self._reusable(tokens, counts, verbose)
        if reused is None and not force_retrain and self._has_original():
            learn_tokens = tokens if learn_pair is None else learn_pair[0]
            reused = _original.load(
                self.index_path, tokens, counts, learn_tokens, ols_sample_size, seed, num_threads
            )
            if verbose:
                print(f"lemur_rs: imported the original LEMUR's model in {self.index_path}")
            reused.save(self._native_dir())
        if reused is not None:
            self.index = reused
        else:
            build_config = {
                "epochs": int(epochs),
                "hidden_dims": [int(hidden_dim)] * (int(num_layers) - 1),
                "final_hidden_dim": int(final_hidden_dim),
                "activation": activation,
                "train_docs": int(train_subset_size),
                "learn_rows": int(learn_subset_size),
                "fit_sample": int(ols_sample_size),
                "batch_size": int(batch_size),
                "learning_rate": float(lr),
                "grad_clip": 0.0 if grad_clip is None else float(grad_clip),
                "seed": int(seed),
            }
            build_config.update(config)
            self.index = Index.build(
                tokens,
                counts,
                learn=None if learn_pair is None else learn_pair[0],
                verbose=verbose,
                num_threads=num_threads,
                **build_config,
            )
            if self.index_path is not None:
                self.index.save(self._native_dir())
        self.final_hidden_dim = self.index.feature_dim
        self.W = _arrays.like(self.index.W, train)
        return self

    def _reusable(self, tokens: np.ndarray, counts: np.ndarray, verbose: bool) -> Index | None:
        """The index saved in ``index_path`` when it was built on a corpus
        of this shape (documents, tokens and width), else ``None``."""
        if self.index_path is None or not (self._native_dir() / "CURRENT").exists():
            return None
        index = Index.load(self._native_dir())
        same = len(index) == len(counts) and index.dim == tokens.shape[1]
        if not same:
            if verbose:
                print(f"lemur_rs: {self.index_path} holds another corpus; training anew")
            return None
        if verbose:
            print(f"lemur_rs: reusing the index in {self.index_path}")
        return index

    def _native_dir(self) -> Path:
        """Where the lemur-rs index lives: ``index_path``, or beside the
        original's files in ``index_path/lemur-rs``."""
        assert self.index_path is not None
        return self.index_path / "lemur-rs" if self._has_original() else self.index_path

    def _has_original(self) -> bool:
        """Whether ``index_path`` holds the original LEMUR's saved model."""
        return self.index_path is not None and (self.index_path / "mlp.pt").exists()

    def _fitted(self) -> Index:
        if self.index is None:
            raise AttributeError("this Lemur is not fitted yet: call fit() first")
        return self.index

    def compute_features(self, X: Any) -> Any:  # noqa: N803 (the original's name)
        """Query features ``[n_queries, h]``: for ``(tokens, counts)`` the
        sum of each query's token features over 32; for a ``(B, N, d)``
        array the mean over its ``N`` tokens (padding included, as in the
        original)."""
        index = self._fitted()
        if isinstance(X, tuple):
            if len(X) != 2:
                raise ValueError("X must be a tuple of (queries, queries_counts)")
            queries, queries_counts = X
            return index.query_features(queries, queries_counts)
        batch = _arrays.float_matrix(X, "X", ndim=3)
        n_queries, n_tokens, dim = batch.shape
        if n_tokens == 0:
            raise ValueError("X has no tokens per query (shape (B, 0, d))")
        counts = np.full(n_queries, n_tokens, dtype=np.int64)
        features = index.query_features(batch.reshape(n_queries * n_tokens, dim), counts)
        features *= np.float32(32.0 / n_tokens)
        return _arrays.like(features, X)

    def compute_weights(
        self,
        X: Any,  # noqa: N803 (the original's name)
        X_counts: Any,  # noqa: N803
        sample_size: int = 16384,
        verbose: bool = True,
    ) -> Any:
        """Rows of ``W`` for new documents, ``[n_docs, h]``, fitted with
        the sample and normalisation of ``fit`` (``sample_size`` is the
        one ``fit`` used: ``ols_sample_size``)."""
        index = self._fitted()
        tokens = _arrays.float_matrix(X, "X")
        counts = _arrays.counts(X_counts, "X_counts", rows=tokens.shape[0])
        return _arrays.like(index.fit_weights(tokens, counts), X)

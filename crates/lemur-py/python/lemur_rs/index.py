"""The native lemur-rs index: build, open, save, search, add, delete, compact."""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np

from . import _arrays
from ._lemur_rs import Index as _NativeIndex

__all__ = ["Index"]


class Index:
    """A LEMUR index: a feature map, one row of ``W`` per document, and the
    documents' tokens for the exact rerank.

    ``Index.build`` makes one in memory (``save`` writes it to a directory);
    ``Index.open`` maps an index directory, and then ``add``, ``delete`` and
    ``compact`` commit there atomically as they are made.
    """

    def __init__(self, native: _NativeIndex) -> None:
        self._native = native

    @classmethod
    def build(
        cls,
        tokens: Any,
        counts: Any,
        *,
        learn: Any = None,
        verbose: bool = False,
        num_threads: int = -1,
        **config: Any,
    ) -> "Index":
        """Builds an index over ``tokens`` (``[n_tokens, d]``) split into
        documents by ``counts``. Every other keyword is a ``BuildConfig``
        field (``epochs``, ``final_hidden_dim``, ``seed``, ``first_stage``,
        ``storage``, ...; see docs/ARCHITECTURE.md); unknown ones are a
        ``ValueError``. ``learn`` holds optional tokens from the query
        distribution to train on."""
        tokens = _arrays.float_matrix(tokens, "tokens")
        counts = _arrays.counts(counts, "counts", rows=tokens.shape[0])
        learn_tokens = None if learn is None else _arrays.float_matrix(learn, "learn")
        native = _NativeIndex.build(
            tokens,
            counts,
            json.dumps(config),
            learn_tokens,
            bool(verbose),
            _arrays.threads(num_threads),
        )
        return cls(native)

    @classmethod
    def open(cls, path: str | os.PathLike[str]) -> "Index":
        """Maps the index directory ``path``; changes commit there."""
        return cls(_NativeIndex.open(os.fspath(path)))

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> "Index":
        """Reads a saved index (one segment, no deletions) into memory."""
        return cls(_NativeIndex.load(os.fspath(path)))

    def save(self, path: str | os.PathLike[str]) -> None:
        """Writes an index built in memory to ``path``, atomically."""
        self._native.save(os.fspath(path))

    def search(
        self,
        query_tokens: Any,
        query_counts: Any,
        k: int = 10,
        n_candidates: int = 200,
        num_threads: int = -1,
    ) -> tuple[np.ndarray, np.ndarray]:
        """``(ids, scores)`` of the ``k`` best documents per query,
        ``int64`` and ``float32`` ``[n_queries, k]``, best first; ``-1``
        and ``-inf`` past the last hit. ``n_candidates`` documents per
        query (``k'``) are reranked by exact MaxSim."""
        tokens = _arrays.float_matrix(query_tokens, "query_tokens")
        counts = _arrays.counts(query_counts, "query_counts", rows=tokens.shape[0])
        return self._native.search(
            tokens,
            counts,
            _arrays.count(k, "k"),
            _arrays.count(n_candidates, "n_candidates"),
            _arrays.threads(num_threads),
        )

    def add(self, tokens: Any, counts: Any, num_threads: int = -1) -> np.ndarray:
        """Adds documents without retraining; returns their ``int64`` ids."""
        tokens = _arrays.float_matrix(tokens, "tokens")
        counts = _arrays.counts(counts, "counts", rows=tokens.shape[0])
        return self._native.add(tokens, counts, _arrays.threads(num_threads))

    def delete(self, ids: Any) -> int:
        """Deletes documents of an opened directory by id; returns how many."""
        ids = _arrays.ids(ids, "ids").reshape(-1)
        return self._native.delete(ids)

    def compact(self, num_threads: int = -1) -> bool:
        """Merges an opened directory's segments, dropping deleted documents."""
        return self._native.compact(_arrays.threads(num_threads))

    def ids(self) -> np.ndarray:
        """The ids of every live document, ``int64``, increasing."""
        return self._native.ids()

    def documents(self, ids: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Documents as stored, by id: ``(W rows [n, h], tokens [n_tokens,
        d], tokens per document)``, ``float32`` and ``int64``; an unknown or
        deleted id is a ``ValueError``."""
        return self._native.documents(_arrays.ids(ids, "ids").reshape(-1))

    def query_features(self, query_tokens: Any, query_counts: Any, num_threads: int = -1) -> Any:
        """Query features ``[n_queries, h]``: each query's summed token
        features over 32, the original's ``compute_features``."""
        tokens = _arrays.float_matrix(query_tokens, "query_tokens")
        counts = _arrays.counts(query_counts, "query_counts", rows=tokens.shape[0])
        features = self._native.query_features(tokens, counts, _arrays.threads(num_threads))
        return _arrays.like(features, query_tokens)

    @property
    def W(self) -> np.ndarray:  # noqa: N802 (the original's name)
        """A copy of ``W``, ``[n_docs, h]``, ``float32``."""
        return self._native.weights()

    def fit_weights(self, tokens: Any, counts: Any, num_threads: int = -1) -> Any:
        """Rows of ``W`` for documents without adding them, ``[n, h]``."""
        array = _arrays.float_matrix(tokens, "tokens")
        doc_counts = _arrays.counts(counts, "counts", rows=array.shape[0])
        rows = self._native.fit_weights(array, doc_counts, _arrays.threads(num_threads))
        return _arrays.like(rows, tokens)

    def __len__(self) -> int:
        return len(self._native)

    @property
    def dim(self) -> int:
        """Width of a token vector."""
        return self._native.dim

    @property
    def feature_dim(self) -> int:
        """Width of the features and of ``W``'s rows."""
        return self._native.feature_dim

    @property
    def path(self) -> str | None:
        """The directory an opened index commits to, or ``None``."""
        path = self._native.path
        return None if path is None else os.fspath(path)

    @property
    def n_segments(self) -> int:
        """Segments of an opened directory (1 in memory)."""
        return self._native.n_segments

    @property
    def build_config(self) -> dict[str, Any] | None:
        """The build configuration (``None`` for an imported index)."""
        config = self._native.build_config()
        return None if config is None else json.loads(config)

    def __repr__(self) -> str:
        where = self.path or "memory"
        return f"Index({len(self)} documents, d={self.dim}, h={self.feature_dim}, {where})"

"""Exact MaxSim reranking, as the original LEMUR's ``lemur.maxsim.MaxSim``.

``MaxSim(train, train_counts).rerank_subset(queries, query_counts, k,
indices)`` returns the same ``int32`` ``(n_queries, k)`` array of document
ids as the original: best first by exact MaxSim, ties to the lower id,
``-1`` past the last candidate. Unlike the original it copies the corpus
(the original keeps pointers into the caller's arrays), checks every
candidate id (``-1`` entries are skipped; any other id outside the corpus
is a ``ValueError`` instead of undefined behaviour), refuses queries
without tokens, and releases the GIL while it works.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from . import _arrays
from ._lemur_rs import MaxSim as _NativeMaxSim

__all__ = ["MaxSim"]


class MaxSim:
    """A corpus of documents (ragged sets of token vectors) to rerank against."""

    def __init__(self, train: Any, train_counts: Any) -> None:
        tokens = _arrays.float_matrix(train, "train")
        counts = _arrays.counts(train_counts, "train_counts", rows=tokens.shape[0])
        self._native = _NativeMaxSim(tokens, counts)

    @property
    def n_docs(self) -> int:
        """Documents in the corpus."""
        return self._native.n_docs

    @property
    def dim(self) -> int:
        """Width of a token vector."""
        return self._native.dim

    def rerank(
        self,
        queries: Any,
        query_counts: Any,
        k: int,
        indices: Any,
        num_threads: int = -1,
    ) -> tuple[np.ndarray, np.ndarray]:
        """``(ids, scores)``: the ``k`` best candidates of each query with
        their exact MaxSim, ``int64`` and ``float32`` ``(n_queries, k)``,
        ``-1`` and ``-inf`` past the last candidate."""
        tokens = _arrays.to_numpy(queries, "queries")
        if tokens.ndim == 1:
            tokens = tokens.reshape(-1, self.dim)
        tokens = _arrays.float_matrix(tokens, "queries")
        counts = _arrays.counts(query_counts, "query_counts", rows=tokens.shape[0])
        candidates = _arrays.ids(indices, "indices")
        if candidates.ndim != 2:
            raise ValueError(f"indices must be a 2D array (got {candidates.ndim}D)")
        return self._native.rerank(
            tokens, counts, _arrays.count(k, "k"), candidates, _arrays.threads(num_threads)
        )

    def rerank_subset(
        self,
        queries: Any,
        query_counts: Any,
        k: int,
        indices: Any,
        num_threads: int = -1,
    ) -> np.ndarray:
        """The ids of the ``k`` best candidates of each query by exact
        MaxSim: ``int32`` ``(n_queries, k)``, ``-1`` past the last one."""
        ids, _ = self.rerank(queries, query_counts, k, indices, num_threads)
        return ids.astype(np.int32)

    def rerank_subset_fixed(
        self, queries: Any, k: int, indices: Any, num_threads: int = -1
    ) -> np.ndarray:
        """``rerank_subset`` for queries of equal length, ``(n_queries,
        n_tokens, d)``."""
        tokens = _arrays.float_matrix(queries, "queries", ndim=3)
        n_queries, n_tokens, dim = tokens.shape
        counts = np.full(n_queries, n_tokens, dtype=np.int64)
        return self.rerank_subset(
            tokens.reshape(n_queries * n_tokens, dim), counts, k, indices, num_threads
        )

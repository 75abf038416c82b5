"""The pure-Rust text front end: sentence-transformers-style embeddings,
PyLate-style token vectors, and a text index with string ids."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from . import _arrays
from ._lemur_rs import TextEncoder as _NativeTextEncoder
from ._lemur_rs import TextIndex as _NativeTextIndex

__all__ = ["TextEncoder", "TextIndex"]


def _texts(texts: str | Sequence[str], name: str) -> tuple[list[str], bool]:
    """``texts`` as a list, and whether a single string came in."""
    if isinstance(texts, str):
        return [texts], True
    texts = list(texts)
    if not all(isinstance(text, str) for text in texts):
        raise TypeError(f"{name} must be a string or a sequence of strings")
    return texts, False


class TextEncoder:
    """An encoder loaded from a model directory: a sentence-transformers
    BERT or ModernBERT model, or a PyLate or Stanford ColBERT model."""

    def __init__(self, model_dir: str | os.PathLike[str]) -> None:
        self._native = _NativeTextEncoder(os.fspath(model_dir))

    def encode(
        self,
        sentences: str | Sequence[str],
        batch_size: int = 32,
        normalize_embeddings: bool = True,
        output_dim: int | None = None,
        is_query: bool | None = None,
        num_threads: int = -1,
    ) -> Any:
        """Without ``is_query``: sentence embeddings as sentence-transformers'
        ``encode`` gives them (``[n, dim]``, or ``[dim]`` for one string;
        ``output_dim`` truncates, Matryoshka-style). With ``is_query``: the
        token vectors of each text as PyLate's ``encode(texts,
        is_query=...)`` gives them, one ``[tokens, token_dim]`` array per
        text (one array for one string)."""
        texts, single = _texts(sentences, "sentences")
        threads = _arrays.threads(num_threads)
        if is_query is None:
            embeddings = self._native.encode(
                texts, _arrays.count(batch_size, "batch_size"), bool(normalize_embeddings),
                None if output_dim is None else _arrays.count(output_dim, "output_dim"), threads,
            )
            return embeddings[0] if single else embeddings
        tokens, counts = self._native.encode_tokens(texts, bool(is_query), threads)
        arrays = np.split(tokens, np.cumsum(counts)[:-1])
        return arrays[0] if single else arrays

    def encode_tokens(
        self, texts: Sequence[str], is_query: bool = False, num_threads: int = -1
    ) -> tuple[np.ndarray, np.ndarray]:
        """Token vectors of every text as one ``[n_tokens, token_dim]``
        array and tokens per text (``int64``): the form ``Index`` takes."""
        texts, _ = _texts(texts, "texts")
        return self._native.encode_tokens(texts, bool(is_query), _arrays.threads(num_threads))

    @property
    def model_dir(self) -> Path | None:
        """The directory the model was loaded from (absolute)."""
        path = self._native.model_dir
        return None if path is None else Path(path)

    @property
    def token_dim(self) -> int:
        """Width of the token vectors."""
        return self._native.token_dim

    @property
    def hidden_size(self) -> int:
        """Width of the sentence embeddings."""
        return self._native.hidden_size

    @property
    def max_seq_length(self) -> int:
        """The model's window in tokens."""
        return self._native.max_seq_length

    @property
    def is_colbert(self) -> bool:
        """Whether the model is a ColBERT model (queries and documents are
        encoded differently)."""
        return self._native.is_colbert


class TextIndex:
    """Documents by string id, searched by text: late interaction over the
    model's token vectors, LEMUR's candidates, exact MaxSim."""

    def __init__(self, model: str | os.PathLike[str] | TextEncoder, **config: Any) -> None:
        """An empty index over ``model`` (a directory or a ``TextEncoder``);
        keywords are ``TextIndexConfig`` fields (``n_candidates``,
        ``document_window``, ``build={...}``, ...)."""
        self.encoder = model if isinstance(model, TextEncoder) else TextEncoder(model)
        self._native = _NativeTextIndex(self.encoder._native, json.dumps(config))

    @classmethod
    def open(
        cls,
        path: str | os.PathLike[str],
        model: str | os.PathLike[str] | TextEncoder | None = None,
    ) -> "TextIndex":
        """Opens a saved index with ``model``, or without it with the model
        directory the index records (the directory its encoder was loaded
        from)."""
        if model is None:
            model = _NativeTextIndex.saved_model_dir(os.fspath(path))
            if model is None:
                raise ValueError(f"{os.fspath(path)} does not record its model; pass model=")
        encoder = model if isinstance(model, TextEncoder) else TextEncoder(model)
        index = cls.__new__(cls)
        index.encoder = encoder
        index._native = _NativeTextIndex.open(os.fspath(path), encoder._native)
        return index

    def index(self, ids: str | Sequence[str], texts: str | Sequence[str], num_threads: int = -1) -> None:
        """Indexes documents (replacing any of the same id)."""
        ids, _ = _texts(ids, "ids")
        texts, _ = _texts(texts, "texts")
        self._native.index(ids, texts, _arrays.threads(num_threads))

    def search(
        self, queries: str | Sequence[str], k: int = 10, num_threads: int = -1
    ) -> Any:
        """``(id, score)`` pairs of the ``k`` best documents, best first:
        one list for one query string, a list of lists for several."""
        texts, single = _texts(queries, "queries")
        hits = self._native.search(texts, _arrays.count(k, "k"), _arrays.threads(num_threads))
        return hits[0] if single else hits

    def doc_ids(self) -> list[str]:
        """The ids of every searchable document, in storage order."""
        return self._native.doc_ids()

    def documents(self, doc_ids: Sequence[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Documents as stored: their rows of ``W`` (``[n, h]``), their
        tokens (``[n_tokens, d]``) and tokens per document (``int64``), for
        exporting the index to another engine."""
        doc_ids, _ = _texts(doc_ids, "doc_ids")
        return self._native.documents(doc_ids)

    def query_vectors_and_features(
        self, queries: str | Sequence[str], num_threads: int = -1
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The token vectors of query texts as ``search`` encodes them
        (tokens and tokens per query) and their LEMUR query features
        (``[n, h]``), for a search that runs elsewhere."""
        texts, _ = _texts(queries, "queries")
        return self._native.query_vectors_and_features(texts, _arrays.threads(num_threads))

    @property
    def dim(self) -> int:
        """Width of the token vectors (the index must hold a document)."""
        return self._widths()[1]

    @property
    def feature_dim(self) -> int:
        """Width of the rows of ``W`` (the index must hold a document)."""
        return self._widths()[0]

    def _widths(self) -> tuple[int, int]:
        widths = self._native.widths()
        if widths is None:
            raise ValueError("the text index holds no documents yet")
        return widths

    def remove(self, doc_id: str) -> bool:
        """Removes a document; returns whether it was indexed."""
        return self._native.remove(doc_id)

    def save(self, path: str | os.PathLike[str]) -> None:
        """Saves the index (and the path of its model) atomically."""
        self._native.save(os.fspath(path))

    def set_n_candidates(self, n_candidates: int) -> None:
        """Candidates per query reranked exactly (``k'``)."""
        self._native.set_n_candidates(_arrays.count(n_candidates, "n_candidates"))

    def __contains__(self, doc_id: str) -> bool:
        return doc_id in self._native

    def __len__(self) -> int:
        return len(self._native)

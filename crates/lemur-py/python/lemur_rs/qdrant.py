"""Both LEMUR stages inside a Qdrant collection, for indexes past one machine.

Each document is a point whose id is its document id, with two named
vectors: ``lemur_w``, its row of ``W`` (dense, ``Dot``), and ``tokens``, its
token vectors (a multivector compared by ``max_sim``, with no HNSW graph).
A search sends one query per LEMUR query: a ``prefetch`` of the ``k'`` best
points by ``lemur_w`` against the query features (computed here, by the
index's feature map), then the ``k`` best of those by MaxSim of the query's
tokens. Qdrant runs it on every shard and merges the shards' hits by score.
lemur-rs supplies what Qdrant cannot compute: the feature map, the fitted
``W`` rows and the query features. docs/SCALE-OUT.md has the cluster recipe.

Needs the ``qdrant-client`` package (``pip install qdrant-client``); the
``client`` arguments are ``qdrant_client.QdrantClient`` objects, for a
server (``QdrantClient(url=...)``) or in local mode
(``QdrantClient(":memory:")``).
"""

from __future__ import annotations

import math
import time
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from . import _arrays
from .index import Index

__all__ = [
    "QdrantError",
    "TOKENS_VECTOR",
    "W_VECTOR",
    "check_collection",
    "create_collection",
    "delete",
    "export",
    "search",
    "vectors_config",
]

#: The named vector holding each document's row of ``W``.
W_VECTOR = "lemur_w"
#: The named multivector holding each document's tokens.
TOKENS_VECTOR = "tokens"


class QdrantError(OSError):
    """Qdrant could not be reached or failed a request, after the retries."""


def _models():
    try:
        from qdrant_client import models
    except ImportError as error:
        raise ImportError("lemur_rs.qdrant needs qdrant-client: pip install qdrant-client") from error
    return models


def _transient(error: Exception) -> bool:
    """Whether a failed request is worth sending again: the server could
    not be reached, timed out, was overloaded or failed inside (HTTP 5xx or
    429, gRPC UNAVAILABLE and the like), as opposed to a request it refused."""
    if isinstance(error, (ConnectionError, TimeoutError)):
        return True
    status = getattr(error, "status_code", None)
    if status is not None:
        return status == 429 or status >= 500
    code = getattr(error, "code", None)
    if callable(code):
        try:
            name = getattr(code(), "name", "")
        except Exception:  # noqa: BLE001 (a failed call carries no usable code)
            return False
        return name in ("UNAVAILABLE", "DEADLINE_EXCEEDED", "RESOURCE_EXHAUSTED", "INTERNAL", "ABORTED")
    # qdrant-client's ResponseHandlingException: the request got no response.
    return type(error).__name__ == "ResponseHandlingException"


def _from_qdrant(error: Exception) -> bool:
    """Whether ``error`` is a Qdrant server's answer (an HTTP or gRPC
    error), rather than a bad argument caught on this side."""
    return any(kind.__name__ in ("ApiException", "RpcError") for kind in type(error).__mro__)


def _call(what: str, request: Callable[[], Any], retries: int, backoff: float) -> Any:
    """``request()``, sent again after ``backoff * 2**attempt`` seconds while
    it fails transiently, at most ``retries`` more times."""
    for attempt in range(retries + 1):
        try:
            return request()
        except Exception as error:  # noqa: BLE001 (sorted by _transient)
            if not _transient(error):
                if _from_qdrant(error):
                    raise QdrantError(f"{what} was refused: {error}") from error
                raise
            if attempt == retries:
                raise QdrantError(f"{what} failed after {retries + 1} tries: {error}") from error
            time.sleep(backoff * 2**attempt)
    raise AssertionError("unreachable")


def vectors_config(
    index: Index,
    *,
    tokens_datatype: str = "float16",
    quantize_w: bool = True,
    w_on_disk: bool = True,
    tokens_on_disk: bool = True,
) -> dict[str, Any]:
    """The collection's named vectors for ``index``: ``lemur_w`` (``h`` wide,
    ``Dot``; int8 scalar quantization kept in RAM with the originals on
    disk unless ``quantize_w`` is off) and ``tokens`` (``d`` wide, ``Dot``,
    a ``max_sim`` multivector without HNSW, ``float16`` or ``float32``)."""
    models = _models()
    datatypes = {"float16": models.Datatype.FLOAT16, "float32": models.Datatype.FLOAT32}
    if tokens_datatype not in datatypes:
        raise ValueError(f"tokens_datatype must be 'float16' or 'float32', not {tokens_datatype!r}")
    quantization = None
    if quantize_w:
        quantization = models.ScalarQuantization(
            scalar=models.ScalarQuantizationConfig(type=models.ScalarType.INT8, always_ram=True)
        )
    return {
        W_VECTOR: models.VectorParams(
            size=index.feature_dim,
            distance=models.Distance.DOT,
            on_disk=w_on_disk,
            quantization_config=quantization,
        ),
        TOKENS_VECTOR: models.VectorParams(
            size=index.dim,
            distance=models.Distance.DOT,
            on_disk=tokens_on_disk,
            datatype=datatypes[tokens_datatype],
            multivector_config=models.MultiVectorConfig(
                comparator=models.MultiVectorComparator.MAX_SIM
            ),
            hnsw_config=models.HnswConfigDiff(m=0),
        ),
    }


def check_collection(index: Index, client: Any, collection: str, *, retries: int = 3, backoff: float = 0.5) -> None:
    """Raises ``ValueError`` unless ``collection`` has the named vectors
    ``index`` needs, as wide as its ``W`` rows and tokens."""
    models = _models()
    info = _call(
        f"reading collection {collection!r}",
        lambda: client.get_collection(collection),
        retries,
        backoff,
    )
    vectors = info.config.params.vectors
    if not isinstance(vectors, Mapping):
        raise ValueError(f"collection {collection!r} has no named vectors {W_VECTOR!r} and {TOKENS_VECTOR!r}")
    for name, size, multivector in (
        (W_VECTOR, index.feature_dim, False),
        (TOKENS_VECTOR, index.dim, True),
    ):
        params = vectors.get(name)
        if params is None:
            raise ValueError(f"collection {collection!r} has no vector named {name!r}")
        if params.size != size:
            raise ValueError(
                f"collection {collection!r}: vector {name!r} is {params.size} wide, "
                f"the index needs {size}"
            )
        if params.distance != models.Distance.DOT:
            raise ValueError(f"collection {collection!r}: vector {name!r} uses {params.distance}, not Dot")
        comparator = params.multivector_config and params.multivector_config.comparator
        if multivector and comparator != models.MultiVectorComparator.MAX_SIM:
            raise ValueError(f"collection {collection!r}: vector {name!r} is not a max_sim multivector")
        if not multivector and comparator:
            raise ValueError(f"collection {collection!r}: vector {name!r} is a multivector")


def create_collection(
    index: Index,
    client: Any,
    collection: str,
    *,
    shards: int = 1,
    replicas: int = 1,
    write_consistency: int = 1,
    retries: int = 3,
    backoff: float = 0.5,
    **vectors: Any,
) -> bool:
    """Creates ``collection`` for ``index`` (``vectors_config`` keywords
    pass through) with ``shards`` shards of ``replicas`` copies each; an
    existing one is checked instead. Returns whether it was created."""
    for name, value in (("shards", shards), ("replicas", replicas), ("write_consistency", write_consistency)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    config = vectors_config(index, **vectors)
    exists = _call(
        f"looking up collection {collection!r}",
        lambda: client.collection_exists(collection),
        retries,
        backoff,
    )
    if exists:
        check_collection(index, client, collection, retries=retries, backoff=backoff)
        return False
    _call(
        f"creating collection {collection!r}",
        lambda: client.create_collection(
            collection_name=collection,
            vectors_config=config,
            shard_number=shards,
            replication_factor=replicas,
            write_consistency_factor=write_consistency,
        ),
        retries,
        backoff,
    )
    return True


def _points(index: Index, ids: np.ndarray, payloads: Mapping[int, Mapping[str, Any]] | None) -> list[Any]:
    models = _models()
    weights, tokens, counts = index.documents(ids)
    offsets = np.concatenate([[0], np.cumsum(counts)])
    return [
        models.PointStruct(
            id=int(doc),
            vector={
                W_VECTOR: weights[i].tolist(),
                TOKENS_VECTOR: tokens[offsets[i] : offsets[i + 1]].tolist(),
            },
            payload=None if payloads is None else dict(payloads.get(int(doc), {})),
        )
        for i, doc in enumerate(ids)
    ]


def export(
    index: Index,
    client: Any,
    collection: str,
    *,
    ids: Any = None,
    payloads: Mapping[int, Mapping[str, Any]] | None = None,
    shards: int = 1,
    replicas: int = 1,
    write_consistency: int = 1,
    batch_size: int = 64,
    resume: bool = True,
    retries: int = 5,
    backoff: float = 0.5,
    progress: Callable[[int, int], None] | None = None,
    **vectors: Any,
) -> int:
    """Writes the documents of ``index`` (all live ones, or ``ids``) into
    ``collection`` as points, creating it first (``create_collection``'s
    keywords) or checking the one there. Batches of ``batch_size`` points
    are upserted with ``wait=True``, each sent again with exponential
    back-off while Qdrant fails transiently (``retries``, ``backoff``
    seconds), then ``QdrantError``. Upserts are idempotent: exporting again
    resumes, skipping every batch whose points are all there already
    (``resume``). ``payloads`` maps a document id to its payload (a text
    index's string id, say); ``progress(done, total)`` is called after each
    batch. Returns the points written."""
    batch_size = _arrays.count(batch_size, "batch_size")
    if batch_size == 0:
        raise ValueError("batch_size must be at least 1")
    ids = index.ids() if ids is None else _arrays.ids(ids, "ids").reshape(-1)
    # Unknown or deleted ids fail here, before anything is written.
    live = set(index.ids().tolist())
    unknown = [int(doc) for doc in ids if int(doc) not in live]
    if unknown:
        raise ValueError(f"document ids {unknown[:5]} are not in the index (never added, or deleted)")
    create_collection(
        index,
        client,
        collection,
        shards=shards,
        replicas=replicas,
        write_consistency=write_consistency,
        retries=retries,
        backoff=backoff,
        **vectors,
    )
    written = 0
    for start in range(0, len(ids), batch_size):
        batch = ids[start : start + batch_size]
        first, last = int(batch[0]), int(batch[-1])
        if resume:
            present = _call(
                f"reading points {first}..{last} of {collection!r}",
                lambda: client.retrieve(collection, ids=batch.tolist(), with_payload=False, with_vectors=False),
                retries,
                backoff,
            )
            if len(present) == len(batch):
                if progress is not None:
                    progress(start + len(batch), len(ids))
                continue
        points = _points(index, batch, payloads)
        _call(
            f"upserting points {first}..{last} into {collection!r} (export again to resume)",
            lambda: client.upsert(collection_name=collection, points=points, wait=True),
            retries,
            backoff,
        )
        written += len(batch)
        if progress is not None:
            progress(start + len(batch), len(ids))
    return written


def delete(client: Any, collection: str, ids: Any, *, retries: int = 5, backoff: float = 0.5) -> None:
    """Deletes documents (deleted from the index, say) from ``collection``."""
    models = _models()
    ids = _arrays.ids(ids, "ids").reshape(-1)
    if (ids < 0).any():
        raise ValueError("document ids are >= 0")
    _call(
        f"deleting {len(ids)} points from {collection!r}",
        lambda: client.delete(
            collection_name=collection,
            points_selector=models.PointIdsList(points=ids.tolist()),
            wait=True,
        ),
        retries,
        backoff,
    )


def search(
    index: Index,
    client: Any,
    collection: str,
    query_tokens: Any,
    query_counts: Any,
    k: int = 10,
    n_candidates: int = 200,
    *,
    hnsw_ef: int | None = None,
    exact: bool = False,
    rescore: bool = True,
    oversampling: float | None = None,
    with_payload: bool = False,
    retries: int = 3,
    backoff: float = 0.5,
    num_threads: int = -1,
) -> tuple[np.ndarray, np.ndarray] | tuple[np.ndarray, np.ndarray, list[list[Any]]]:
    """``(ids, scores)`` of the ``k`` best documents per query, as
    ``Index.search`` returns them (``int64`` and ``float32`` ``[n_queries,
    k]``, ``-1`` and ``-inf`` past the last hit), from ``collection``: each
    shard takes its own ``n_candidates`` (``k'``) best by ``lemur_w``
    (``hnsw_ef``, ``exact``, and the quantized ``W``'s ``rescore`` and
    ``oversampling`` tune that stage) and reranks them by exact MaxSim.
    With ``with_payload`` the points' payloads come third, one list per
    query."""
    models = _models()
    tokens = _arrays.float_matrix(query_tokens, "query_tokens")
    counts = _arrays.counts(query_counts, "query_counts", rows=tokens.shape[0])
    k = _arrays.count(k, "k")
    n_candidates = _arrays.count(n_candidates, "n_candidates")
    if k == 0:
        raise ValueError("k must be at least 1")
    if n_candidates < k:
        raise ValueError(f"n_candidates ({n_candidates}) must be at least k ({k})")
    if (counts == 0).any():
        raise ValueError(f"query {int(np.argmax(counts == 0))} has no tokens")
    if oversampling is not None and not (math.isfinite(oversampling) and oversampling >= 1):
        raise ValueError(f"oversampling must be >= 1, got {oversampling}")
    features = index.query_features(tokens, counts, num_threads=num_threads)
    params = models.SearchParams(
        hnsw_ef=hnsw_ef,
        exact=exact,
        quantization=models.QuantizationSearchParams(rescore=rescore, oversampling=oversampling),
    )
    offsets = np.concatenate([[0], np.cumsum(counts)])
    requests = [
        models.QueryRequest(
            prefetch=models.Prefetch(
                query=features[q].tolist(), using=W_VECTOR, limit=n_candidates, params=params
            ),
            query=tokens[offsets[q] : offsets[q + 1]].tolist(),
            using=TOKENS_VECTOR,
            limit=k,
            with_payload=with_payload,
        )
        for q in range(len(counts))
    ]
    responses = _call(
        f"searching {collection!r}",
        lambda: client.query_batch_points(collection_name=collection, requests=requests),
        retries,
        backoff,
    )
    ids = np.full((len(counts), k), -1, dtype=np.int64)
    scores = np.full((len(counts), k), -np.inf, dtype=np.float32)
    payloads: list[list[Any]] = []
    for q, response in enumerate(responses):
        points = response.points[:k]
        ids[q, : len(points)] = [int(point.id) for point in points]
        scores[q, : len(points)] = [point.score for point in points]
        payloads.append([point.payload for point in points])
    if with_payload:
        return ids, scores, payloads
    return ids, scores

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

A ``TextIndex`` is exported the same way, each point's id derived from its
string id (``text_point_id``) and its payload carrying it (``doc_id``);
``search_text`` searches it with query texts. Every point's payload holds a
fingerprint of its vectors (``lemur_row``), so exporting again sends only
the points that are missing or changed (the Rust connector and ``lemur
qdrant`` derive ids and fingerprints the same way).

Needs the ``qdrant-client`` package (``pip install qdrant-client``); the
``client`` arguments are ``qdrant_client.QdrantClient`` objects, for a
server (``QdrantClient(url=...)``) or in local mode
(``QdrantClient(":memory:")``).
"""

from __future__ import annotations

import hashlib
import math
import time
import uuid
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from . import _arrays
from .index import Index
from .text import TextIndex

__all__ = [
    "DOC_ID_KEY",
    "FINGERPRINT_KEY",
    "QdrantError",
    "TOKENS_VECTOR",
    "W_VECTOR",
    "check_collection",
    "create_collection",
    "delete",
    "export",
    "fingerprint",
    "search",
    "search_text",
    "text_point_id",
    "vectors_config",
]

#: The named vector holding each document's row of ``W``.
W_VECTOR = "lemur_w"
#: The named multivector holding each document's tokens.
TOKENS_VECTOR = "tokens"
#: The payload key of a text document's string id.
DOC_ID_KEY = "doc_id"
#: The payload key of a point's fingerprint (``fingerprint``).
FINGERPRINT_KEY = "lemur_row"


def text_point_id(doc_id: str) -> str:
    """The point id of a text index's document ``doc_id``: the first 16
    bytes of the SHA-256 of its UTF-8 bytes, written as a UUID (Qdrant
    takes unsigned integers or UUIDs as point ids)."""
    return str(uuid.UUID(bytes=hashlib.sha256(doc_id.encode("utf-8")).digest()[:16]))


def fingerprint(weights: np.ndarray, tokens: np.ndarray) -> str:
    """The fingerprint of a document's vectors: the first 8 bytes, in hex,
    of the SHA-256 of its row of ``W`` and then its tokens as little-endian
    float32. A rebuilt index or a re-indexed text changes it."""
    digest = hashlib.sha256(np.ascontiguousarray(weights, dtype="<f4").tobytes())
    digest.update(np.ascontiguousarray(tokens, dtype="<f4").tobytes())
    return digest.hexdigest()[:16]


def _point_key(point_id: Any) -> str:
    """A point id as the collection returns it (an int, a UUID string or
    object), in the form ``export`` compares it with the id it wrote."""
    return str(point_id).lower()


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
    index: Index | TextIndex,
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


def check_collection(index: Index | TextIndex, client: Any, collection: str, *, retries: int = 3, backoff: float = 0.5) -> None:
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
    index: Index | TextIndex,
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


def _outgoing(
    index: Index | TextIndex, ids: Sequence[Any], payloads: Mapping[Any, Mapping[str, Any]] | None
) -> list[tuple[Any, str, Any]]:
    """The documents ``ids`` of ``index`` as ``(point id, fingerprint,
    point)``."""
    models = _models()
    text = isinstance(index, TextIndex)
    weights, tokens, counts = index.documents(list(ids) if text else np.asarray(ids, dtype=np.int64))
    offsets = np.concatenate([[0], np.cumsum(counts)])
    outgoing = []
    for i, doc in enumerate(ids):
        document_tokens = tokens[offsets[i] : offsets[i + 1]]
        key = fingerprint(weights[i], document_tokens)
        doc = doc if text else int(doc)
        payload = {} if payloads is None else dict(payloads.get(doc, {}))
        if text:
            point_id = text_point_id(doc)
            payload[DOC_ID_KEY] = doc
        else:
            point_id = int(doc)
        payload[FINGERPRINT_KEY] = key
        point = models.PointStruct(
            id=point_id,
            vector={W_VECTOR: weights[i].tolist(), TOKENS_VECTOR: document_tokens.tolist()},
            payload=payload,
        )
        outgoing.append((point_id, key, point))
    return outgoing


def export(
    index: Index | TextIndex,
    client: Any,
    collection: str,
    *,
    ids: Any = None,
    payloads: Mapping[Any, Mapping[str, Any]] | None = None,
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
    """Writes the documents of ``index`` (all live ones, or ``ids``: document
    ids, or a ``TextIndex``'s string ids) into ``collection`` as points,
    creating it first (``create_collection``'s keywords) or checking the one
    there. Batches of ``batch_size`` points are upserted with ``wait=True``,
    each sent again with exponential back-off while Qdrant fails
    transiently (``retries``, ``backoff`` seconds), then ``QdrantError``.
    Exporting again resumes: with ``resume``, points already there with the
    same vectors (the same ``fingerprint``) are not sent again, so an
    interrupted export finishes and a changed index (re-indexed texts, a
    rebuild) sends only what changed. The fingerprint covers the vectors,
    not the payload: to write changed ``payloads`` to points that are
    already there, export with ``resume=False``; a rewritten point gets
    this export's payload whole. ``payloads`` maps a document id to
    its payload; ``progress(done, total)`` is called after each batch.
    Returns the points written. Documents deleted from the index are not
    deleted from the collection: see ``delete``."""
    batch_size = _arrays.count(batch_size, "batch_size")
    if batch_size == 0:
        raise ValueError("batch_size must be at least 1")
    text = isinstance(index, TextIndex)
    if text:
        live = index.doc_ids()
        ids = live if ids is None else [ids] if isinstance(ids, str) else list(ids)
        missing = set(ids) - set(live)
    else:
        live = index.ids()
        ids = live if ids is None else _arrays.ids(ids, "ids").reshape(-1)
        missing = set(ids.tolist()) - set(live.tolist())
    # Unknown or deleted ids fail here, before anything is written.
    if missing:
        raise ValueError(f"document ids {sorted(missing)[:5]} are not in the index (never added, or deleted)")
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
        first, last = (batch[0], batch[-1]) if text else (int(batch[0]), int(batch[-1]))
        span = f"points {first!r}..{last!r}"
        outgoing = _outgoing(index, batch, payloads)
        if resume:
            stored = _call(
                f"reading {span} of {collection!r}",
                lambda: client.retrieve(
                    collection,
                    ids=[point_id for point_id, _, _ in outgoing],
                    with_payload=[FINGERPRINT_KEY],
                    with_vectors=False,
                ),
                retries,
                backoff,
            )
            fingerprints = {_point_key(point.id): (point.payload or {}).get(FINGERPRINT_KEY) for point in stored}
            outgoing = [item for item in outgoing if fingerprints.get(_point_key(item[0])) != item[1]]
        if outgoing:
            points = [point for _, _, point in outgoing]
            _call(
                f"upserting {span} into {collection!r} (export again to resume)",
                lambda: client.upsert(collection_name=collection, points=points, wait=True),
                retries,
                backoff,
            )
            written += len(points)
        if progress is not None:
            progress(start + len(batch), len(ids))
    return written


def delete(client: Any, collection: str, ids: Any, *, retries: int = 5, backoff: float = 0.5) -> None:
    """Deletes documents (deleted from the index, say) from ``collection``:
    document ids, or a ``TextIndex``'s string ids."""
    models = _models()
    if isinstance(ids, str) or (
        isinstance(ids, Sequence) and len(ids) > 0 and all(isinstance(doc, str) for doc in ids)
    ):
        point_ids: list[Any] = [text_point_id(doc) for doc in ([ids] if isinstance(ids, str) else ids)]
    else:
        numbers = _arrays.ids(ids, "ids").reshape(-1)
        if (numbers < 0).any():
            raise ValueError("document ids are >= 0")
        point_ids = numbers.tolist()
    _call(
        f"deleting {len(point_ids)} points from {collection!r}",
        lambda: client.delete(
            collection_name=collection,
            points_selector=models.PointIdsList(points=point_ids),
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
    tokens = _arrays.float_matrix(query_tokens, "query_tokens")
    counts = _arrays.counts(query_counts, "query_counts", rows=tokens.shape[0])
    k = _arrays.count(k, "k")
    n_candidates = _arrays.count(n_candidates, "n_candidates")
    _check_sizes(k, n_candidates, oversampling)
    if (counts == 0).any():
        raise ValueError(f"query {int(np.argmax(counts == 0))} has no tokens")
    features = index.query_features(tokens, counts, num_threads=num_threads)
    ids = np.full((len(counts), k), -1, dtype=np.int64)
    scores = np.full((len(counts), k), -np.inf, dtype=np.float32)
    payloads: list[list[Any]] = []
    responses = _query(
        client, collection, tokens, counts, features, k, n_candidates,
        hnsw_ef=hnsw_ef, exact=exact, rescore=rescore, oversampling=oversampling,
        with_payload=with_payload, retries=retries, backoff=backoff,
    )
    for q, points in enumerate(responses):
        ids[q, : len(points)] = [int(point.id) for point in points]
        scores[q, : len(points)] = [point.score for point in points]
        payloads.append([point.payload for point in points])
    if with_payload:
        return ids, scores, payloads
    return ids, scores


def search_text(
    index: TextIndex,
    client: Any,
    collection: str,
    queries: str | Sequence[str],
    k: int = 10,
    n_candidates: int = 200,
    *,
    hnsw_ef: int | None = None,
    exact: bool = False,
    rescore: bool = True,
    oversampling: float | None = None,
    retries: int = 3,
    backoff: float = 0.5,
    num_threads: int = -1,
) -> list[tuple[str, float]] | list[list[tuple[str, float]]]:
    """``(id, score)`` pairs of the ``k`` best documents per query text,
    best first, as ``TextIndex.search`` returns them (one list for one
    query string), from a collection ``export`` filled from ``index``: the
    queries are encoded and their features computed here, and each shard
    reranks its own ``n_candidates`` by exact MaxSim."""
    single = isinstance(queries, str)
    texts = [queries] if single else list(queries)
    k = _arrays.count(k, "k")
    n_candidates = _arrays.count(n_candidates, "n_candidates")
    _check_sizes(k, n_candidates, oversampling)
    if not texts:
        return []
    tokens, counts, features = index.query_vectors_and_features(texts, num_threads=num_threads)
    responses = _query(
        client, collection, tokens, counts, features, k, n_candidates,
        hnsw_ef=hnsw_ef, exact=exact, rescore=rescore, oversampling=oversampling,
        with_payload=[DOC_ID_KEY], retries=retries, backoff=backoff,
    )
    hits = []
    for points in responses:
        found = []
        for point in points:
            doc_id = (point.payload or {}).get(DOC_ID_KEY)
            if not isinstance(doc_id, str):
                raise ValueError(f"collection {collection!r}: point {point.id} has no text document id")
            found.append((doc_id, float(point.score)))
        hits.append(found)
    return hits[0] if single else hits


def _check_sizes(k: int, n_candidates: int, oversampling: float | None) -> None:
    if k == 0:
        raise ValueError("k must be at least 1")
    if n_candidates < k:
        raise ValueError(f"n_candidates ({n_candidates}) must be at least k ({k})")
    if oversampling is not None and not (math.isfinite(oversampling) and oversampling >= 1):
        raise ValueError(f"oversampling must be >= 1, got {oversampling}")


def _query(
    client: Any,
    collection: str,
    tokens: np.ndarray,
    counts: np.ndarray,
    features: np.ndarray,
    k: int,
    n_candidates: int,
    *,
    hnsw_ef: int | None,
    exact: bool,
    rescore: bool,
    oversampling: float | None,
    with_payload: Any,
    retries: int,
    backoff: float,
) -> list[list[Any]]:
    """The two-stage query of every query, in one batch: each query's
    scored points, best first (at most ``k``)."""
    models = _models()
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
    return [response.points[:k] for response in responses]

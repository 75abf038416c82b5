"""Qdrant's engine in process (``qdrant-edge-py``) behind the part of
``qdrant_client.QdrantClient`` that ``lemur_rs.qdrant`` calls.

An edge shard is Qdrant's shard engine (segments, HNSW, quantization,
MaxSim) without the server around it. ``EdgeCollection`` holds ``shards``
of them under a directory, routes each point to one shard by its id, asks
every shard the same query and merges their hits by score, as Qdrant's
collection layer does across the shards of a cluster. It translates the
``qdrant_client.models`` objects ``lemur_rs.qdrant`` builds into the edge
API's, so the module's own requests run on the real engine.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import qdrant_edge as edge
from qdrant_client import models


def _edge_vector_params(params: models.VectorParams) -> edge.EdgeVectorParams:
    datatypes = {
        None: None,
        models.Datatype.FLOAT32: edge.VectorStorageDatatype.Float32,
        models.Datatype.FLOAT16: edge.VectorStorageDatatype.Float16,
    }
    assert params.distance == models.Distance.DOT
    multivector = None
    if params.multivector_config is not None:
        assert params.multivector_config.comparator == models.MultiVectorComparator.MAX_SIM
        multivector = edge.MultiVectorConfig(edge.MultiVectorComparator.MaxSim)
    quantization = None
    if params.quantization_config is not None:
        scalar = params.quantization_config.scalar
        assert scalar.type == models.ScalarType.INT8
        quantization = edge.ScalarQuantizationConfig(type=edge.ScalarType.Int8, always_ram=scalar.always_ram)
    hnsw = None
    if params.hnsw_config is not None and params.hnsw_config.m is not None:
        hnsw = edge.HnswIndexConfig(m=params.hnsw_config.m, ef_construct=100, full_scan_threshold=10000)
    return edge.EdgeVectorParams(
        size=params.size,
        distance=edge.Distance.Dot,
        on_disk=params.on_disk,
        multivector_config=multivector,
        datatype=datatypes[params.datatype],
        quantization_config=quantization,
        hnsw_config=hnsw,
    )


def _route(point_id: Any) -> int:
    """The number a point is routed by: its id, or its UUID's value."""
    if isinstance(point_id, int):
        return point_id
    return uuid.UUID(str(point_id)).int


def _vector(query: Any) -> Any:
    """The vector of a query given as a vector or a ``NearestQuery``."""
    return getattr(query, "nearest", query)


def _edge_params(params: models.SearchParams | None) -> edge.SearchParams | None:
    if params is None:
        return None
    quantization = None
    if params.quantization is not None:
        q = params.quantization
        quantization = edge.QuantizationSearchParams(
            ignore=bool(q.ignore), rescore=q.rescore, oversampling=q.oversampling
        )
    return edge.SearchParams(hnsw_ef=params.hnsw_ef, exact=bool(params.exact), quantization=quantization)


@dataclass
class EdgeCollection:
    vectors: dict[str, models.VectorParams]
    shards: list[edge.EdgeShard]


@dataclass
class EdgeClient:
    """The ``QdrantClient`` calls ``lemur_rs.qdrant`` makes, on edge shards
    under ``root`` (``shard_number`` of them per collection, where a server
    would spread them over its nodes)."""

    root: Path
    collections: dict[str, EdgeCollection] = field(default_factory=dict)

    def collection_exists(self, collection_name: str) -> bool:
        return collection_name in self.collections

    def create_collection(self, collection_name, vectors_config, shard_number=1, **_: Any) -> bool:
        config = edge.EdgeConfig(
            vectors={name: _edge_vector_params(params) for name, params in vectors_config.items()}
        )
        shards = []
        for s in range(shard_number):
            path = self.root / collection_name / f"shard-{s}"
            path.mkdir(parents=True)
            shards.append(edge.EdgeShard.create(str(path), config))
        self.collections[collection_name] = EdgeCollection(dict(vectors_config), shards)
        return True

    def get_collection(self, collection_name: str) -> Any:
        vectors = self.collections[collection_name].vectors
        return SimpleNamespace(config=SimpleNamespace(params=SimpleNamespace(vectors=vectors)))

    def _shard(self, collection: EdgeCollection, point_id: Any) -> edge.EdgeShard:
        return collection.shards[_route(point_id) % len(collection.shards)]

    def upsert(self, collection_name: str, points, wait: bool = True, **_: Any) -> None:
        assert wait
        collection = self.collections[collection_name]
        by_shard: dict[int, list[edge.Point]] = {}
        for point in points:
            vector = {name: list(values) for name, values in point.vector.items()}
            by_shard.setdefault(_route(point.id) % len(collection.shards), []).append(
                edge.Point(id=point.id, vector=vector, payload=point.payload)
            )
        for s, shard_points in by_shard.items():
            collection.shards[s].update(edge.UpdateOperation.upsert_points(shard_points))

    def retrieve(self, collection_name: str, ids, with_payload=True, with_vectors=False, **_: Any):
        collection = self.collections[collection_name]
        found = []
        for point_id in ids:
            found += self._shard(collection, point_id).retrieve([point_id], bool(with_payload), False)
        return found

    def delete(self, collection_name: str, points_selector, wait: bool = True, **_: Any) -> None:
        collection = self.collections[collection_name]
        for shard in collection.shards:
            shard.update(edge.UpdateOperation.delete_points(list(points_selector.points)))

    def count(self, collection_name: str) -> int:
        shards = self.collections[collection_name].shards
        return sum(shard.count(edge.CountRequest(exact=True)) for shard in shards)

    def query_batch_points(self, collection_name: str, requests, **_: Any):
        collection = self.collections[collection_name]
        responses = []
        for request in requests:
            # A request converted from gRPC holds a list of prefetches and
            # NearestQuery objects where qdrant-client's own holds one and
            # plain vectors.
            prefetch = request.prefetch
            if isinstance(prefetch, list):
                (prefetch,) = prefetch
            query = edge.QueryRequest(
                limit=request.limit,
                prefetches=[
                    edge.Prefetch(
                        limit=prefetch.limit,
                        query=edge.Query.Nearest(_vector(prefetch.query), using=prefetch.using),
                        params=_edge_params(prefetch.params),
                    )
                ],
                query=edge.Query.Nearest(_vector(request.query), using=request.using),
                with_payload=bool(request.with_payload),
            )
            # Every shard answers with its own k best of its own k'
            # candidates; the collection keeps the k best of them all.
            hits = [hit for shard in collection.shards for hit in shard.query(query)]
            hits.sort(key=lambda hit: (-hit.score, hit.id))
            responses.append(SimpleNamespace(points=hits[: request.limit]))
        return responses

    def close(self) -> None:
        for collection in self.collections.values():
            for shard in collection.shards:
                shard.close()

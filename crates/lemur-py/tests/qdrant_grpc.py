"""A Qdrant gRPC endpoint in process, for the Rust connector's tests.

It serves the calls ``lemur-qdrant`` makes (collection exists, create and
get; points upsert, get, delete and batch query) with Qdrant's own message
definitions and converters from ``qdrant-client``, on Qdrant's engine
(``EdgeClient``'s edge shards). ``fail_upserts`` makes the next upserts
fail with ``UNAVAILABLE``, as an overloaded or restarting server would.
"""

from __future__ import annotations

from concurrent import futures

import grpc
from qdrant_client.conversions.conversion import GrpcToRest, RestToGrpc
from qdrant_client.grpc import (
    collections_pb2,
    collections_service_pb2_grpc,
    points_pb2,
    points_service_pb2_grpc,
)

from edge_client import EdgeClient


def _grpc_id(point_id):
    """A point id from the edge engine (an int or a ``uuid.UUID``) as gRPC's."""
    return RestToGrpc.convert_extended_point_id(point_id if isinstance(point_id, int) else str(point_id))


class Collections(collections_service_pb2_grpc.CollectionsServicer):
    def __init__(self, client: EdgeClient) -> None:
        self.client = client

    def CollectionExists(self, request, context):  # noqa: N802 (gRPC's names)
        exists = self.client.collection_exists(request.collection_name)
        return collections_pb2.CollectionExistsResponse(
            result=collections_pb2.CollectionExists(exists=exists)
        )

    def Create(self, request, context):  # noqa: N802
        vectors = GrpcToRest.convert_vectors_config(request.vectors_config)
        self.client.create_collection(
            request.collection_name, vectors, shard_number=request.shard_number or 1
        )
        return collections_pb2.CollectionOperationResponse(result=True)

    def Get(self, request, context):  # noqa: N802
        if not self.client.collection_exists(request.collection_name):
            context.abort(grpc.StatusCode.NOT_FOUND, f"no collection {request.collection_name}")
        vectors = self.client.collections[request.collection_name].vectors
        params = collections_pb2.CollectionParams(vectors_config=RestToGrpc.convert_vectors_config(vectors))
        info = collections_pb2.CollectionInfo(config=collections_pb2.CollectionConfig(params=params))
        return collections_pb2.GetCollectionInfoResponse(result=info)


class Points(points_service_pb2_grpc.PointsServicer):
    def __init__(self, client: EdgeClient) -> None:
        self.client = client
        self.fail_upserts = 0
        self.upserts = 0

    def _collection(self, name, context):
        if not self.client.collection_exists(name):
            context.abort(grpc.StatusCode.NOT_FOUND, f"no collection {name}")

    def Upsert(self, request, context):  # noqa: N802
        self._collection(request.collection_name, context)
        if self.fail_upserts > 0:
            self.fail_upserts -= 1
            context.abort(grpc.StatusCode.UNAVAILABLE, "the server is restarting")
        points = [GrpcToRest.convert_point_struct(point) for point in request.points]
        self.client.upsert(request.collection_name, points, wait=True)
        self.upserts += 1
        return points_pb2.PointsOperationResponse(
            result=points_pb2.UpdateResult(operation_id=self.upserts, status=points_pb2.Completed)
        )

    def Get(self, request, context):  # noqa: N802
        self._collection(request.collection_name, context)
        ids = [GrpcToRest.convert_point_id(point_id) for point_id in request.ids]
        with_payload = request.HasField("with_payload") and GrpcToRest.convert_with_payload_selector(
            request.with_payload
        )
        found = self.client.retrieve(request.collection_name, ids, with_payload=with_payload)
        return points_pb2.GetResponse(
            result=[
                points_pb2.RetrievedPoint(
                    id=_grpc_id(record.id), payload=RestToGrpc.convert_payload(record.payload or {})
                )
                for record in found
            ]
        )

    def Delete(self, request, context):  # noqa: N802
        self._collection(request.collection_name, context)
        selector = GrpcToRest.convert_points_selector(request.points)
        self.client.delete(request.collection_name, selector)
        return points_pb2.PointsOperationResponse(
            result=points_pb2.UpdateResult(status=points_pb2.Completed)
        )

    def QueryBatch(self, request, context):  # noqa: N802
        self._collection(request.collection_name, context)
        queries = [GrpcToRest.convert_query_points(query) for query in request.query_points]
        answers = self.client.query_batch_points(request.collection_name, queries)
        return points_pb2.QueryBatchResponse(
            result=[
                points_pb2.BatchResult(
                    result=[
                        points_pb2.ScoredPoint(
                            id=_grpc_id(point.id),
                            score=point.score,
                            payload=RestToGrpc.convert_payload(point.payload or {}),
                        )
                        for point in answer.points
                    ]
                )
                for answer in answers
            ]
        )


def serve(client: EdgeClient) -> tuple[grpc.Server, Points, int]:
    """Starts the endpoint on a free local port: the server, its points
    service (to inject failures) and the port."""
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=2),
        options=[("grpc.max_receive_message_length", 64 << 20)],
    )
    points = Points(client)
    collections_service_pb2_grpc.add_CollectionsServicer_to_server(Collections(client), server)
    points_service_pb2_grpc.add_PointsServicer_to_server(points, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    return server, points, port


__all__ = ["serve"]

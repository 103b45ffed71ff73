"""The containerd Snapshots API (``containerd.services.snapshots.v1``) over grpc.aio.

Translates protobuf messages to ``Snapshotter`` calls and errors to gRPC status codes
(``soci.containerd.status``: NOT_FOUND, ALREADY_EXISTS, FAILED_PRECONDITION, ...). The containerd
namespace of a call comes from the ``containerd-namespace`` metadata.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any, Final, TypeVar

import grpc
from google.protobuf import empty_pb2
from google.protobuf.timestamp_pb2 import Timestamp

from soci.containerd import api
from soci.containerd._proto import mount_pb2, snapshots_pb2
from soci.containerd.status import grpc_code
from soci.errors import SociError
from soci.snapshotter.metastore import Info, Usage
from soci.snapshotter.mounts import Mount
from soci.snapshotter.snapshotter import Snapshotter

log = logging.getLogger(__name__)

T = TypeVar("T")
LIST_BATCH: Final = 100
"""Snapshots per List response message (containerd's service batches them as well)."""


def _namespace(context: grpc.aio.ServicerContext) -> str:
    for key, value in context.invocation_metadata() or ():
        if key == api.NAMESPACE_HEADER:
            return str(value)
    return ""


def _timestamp(ns: int) -> Timestamp:
    return Timestamp(seconds=ns // 1_000_000_000, nanos=ns % 1_000_000_000)


def info_to_proto(info: Info) -> snapshots_pb2.Info:
    return snapshots_pb2.Info(
        name=info.name,
        parent=info.parent,
        kind=snapshots_pb2.Kind.Value(info.kind.name),
        created_at=_timestamp(info.created_ns),
        updated_at=_timestamp(info.updated_ns),
        labels=dict(info.labels),
    )


def mounts_to_proto(mounts: Sequence[Mount]) -> list[mount_pb2.Mount]:
    return [mount_pb2.Mount(type=m.type, source=m.source, target=m.target, options=list(m.options)) for m in mounts]


async def _call(context: grpc.aio.ServicerContext, what: str, work: Awaitable[T]) -> T:
    """Run ``work``; a failure becomes the gRPC status of its class, with its message as details."""
    try:
        return await work
    except SociError as exc:
        code, details = grpc_code(exc), str(exc)
        log.debug("%s: %s (%s)", what, details, code.name)
    except Exception as exc:
        log.exception("%s failed unexpectedly", what)
        code, details = grpc.StatusCode.UNKNOWN, f"{what}: {exc}"
    await context.abort(code, details)
    raise AssertionError("unreachable: abort raises")


class SnapshotsService:
    """gRPC handlers for one ``Snapshotter`` (the request's ``snapshotter`` field is ignored: one per socket)."""

    def __init__(self, snapshotter: Snapshotter) -> None:
        self.snapshotter = snapshotter

    async def Prepare(
        self, request: snapshots_pb2.PrepareSnapshotRequest, context: grpc.aio.ServicerContext
    ) -> snapshots_pb2.PrepareSnapshotResponse:
        # A cancelled caller must not leave a half-mounted layer behind: the work runs to its end
        # (bounded by mount_timeout_sec) and a retry finds the committed layer.
        work = asyncio.ensure_future(
            self.snapshotter.prepare(request.key, request.parent, dict(request.labels), namespace=_namespace(context))
        )
        mounts = await _call(context, f"prepare {request.key}", asyncio.shield(work))
        return snapshots_pb2.PrepareSnapshotResponse(mounts=mounts_to_proto(mounts))

    async def View(
        self, request: snapshots_pb2.ViewSnapshotRequest, context: grpc.aio.ServicerContext
    ) -> snapshots_pb2.ViewSnapshotResponse:
        mounts = await _call(
            context, f"view {request.key}", self.snapshotter.view(request.key, request.parent, dict(request.labels))
        )
        return snapshots_pb2.ViewSnapshotResponse(mounts=mounts_to_proto(mounts))

    async def Mounts(
        self, request: snapshots_pb2.MountsRequest, context: grpc.aio.ServicerContext
    ) -> snapshots_pb2.MountsResponse:
        mounts = await _call(context, f"mounts {request.key}", self.snapshotter.mounts(request.key))
        return snapshots_pb2.MountsResponse(mounts=mounts_to_proto(mounts))

    async def Commit(
        self, request: snapshots_pb2.CommitSnapshotRequest, context: grpc.aio.ServicerContext
    ) -> empty_pb2.Empty:
        await _call(
            context,
            f"commit {request.key} as {request.name}",
            self.snapshotter.commit(request.name, request.key, dict(request.labels)),
        )
        return empty_pb2.Empty()

    async def Remove(
        self, request: snapshots_pb2.RemoveSnapshotRequest, context: grpc.aio.ServicerContext
    ) -> empty_pb2.Empty:
        await _call(context, f"remove {request.key}", self.snapshotter.remove(request.key))
        return empty_pb2.Empty()

    async def Stat(
        self, request: snapshots_pb2.StatSnapshotRequest, context: grpc.aio.ServicerContext
    ) -> snapshots_pb2.StatSnapshotResponse:
        info = await _call(context, f"stat {request.key}", self.snapshotter.stat(request.key))
        return snapshots_pb2.StatSnapshotResponse(info=info_to_proto(info))

    async def Update(
        self, request: snapshots_pb2.UpdateSnapshotRequest, context: grpc.aio.ServicerContext
    ) -> snapshots_pb2.UpdateSnapshotResponse:
        paths = list(request.update_mask.paths) if request.HasField("update_mask") else []
        info = await _call(
            context,
            f"update {request.info.name}",
            self.snapshotter.update(request.info.name, dict(request.info.labels), paths),
        )
        return snapshots_pb2.UpdateSnapshotResponse(info=info_to_proto(info))

    async def List(
        self, request: snapshots_pb2.ListSnapshotsRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[snapshots_pb2.ListSnapshotsResponse]:
        infos = await _call(context, "list", self.snapshotter.walk(list(request.filters)))
        for start in range(0, len(infos), LIST_BATCH):
            batch = [info_to_proto(i) for i in infos[start : start + LIST_BATCH]]
            yield snapshots_pb2.ListSnapshotsResponse(info=batch)

    async def Usage(
        self, request: snapshots_pb2.UsageRequest, context: grpc.aio.ServicerContext
    ) -> snapshots_pb2.UsageResponse:
        usage: Usage = await _call(context, f"usage {request.key}", self.snapshotter.usage(request.key))
        return snapshots_pb2.UsageResponse(size=usage.size, inodes=usage.inodes)

    async def Cleanup(
        self, request: snapshots_pb2.CleanupRequest, context: grpc.aio.ServicerContext
    ) -> empty_pb2.Empty:
        await _call(context, "cleanup", self.snapshotter.cleanup())
        return empty_pb2.Empty()


def snapshots_handler(service: SnapshotsService) -> Any:
    """A ``grpc.GenericRpcHandler`` serving ``service`` under containerd's service name."""
    handlers: dict[str, Any] = {}
    for name, method in api.SNAPSHOTS.items():
        function: Callable[..., Any] = getattr(service, name)
        streaming = method.shape == "stream_out"
        make: Callable[..., Any] = (
            grpc.unary_stream_rpc_method_handler if streaming else grpc.unary_unary_rpc_method_handler
        )
        handlers[name] = make(
            function,
            request_deserializer=method.request.FromString,
            response_serializer=method.response.SerializeToString,
        )
    return grpc.method_handlers_generic_handler(api.SNAPSHOTS_SERVICE, handlers)

"""containerd's gRPC methods as typed values: full path, request and response classes, call shape.

Generated stubs (``*_pb2_grpc.py``) are untyped; these tables are what both sides use instead: the
pull client calls them on a ``grpc.aio.Channel`` and the snapshotter service builds its handlers from
``SNAPSHOTS``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final, Generic, Literal, TypeVar

from google.protobuf import empty_pb2
from google.protobuf.message import Message

from soci.containerd._proto import content_pb2, diff_pb2, images_pb2, leases_pb2, snapshots_pb2

Req = TypeVar("Req", bound=Message)
Resp = TypeVar("Resp", bound=Message)

Shape = Literal["unary", "stream_out", "stream_both"]

NAMESPACE_HEADER: Final = "containerd-namespace"
"""gRPC metadata key carrying the containerd namespace of a call."""
LEASE_HEADER: Final = "containerd-lease"
"""gRPC metadata key naming the lease that protects what a call creates."""


@dataclass(frozen=True, slots=True)
class Method(Generic[Req, Resp]):
    service: str
    name: str
    request: type[Req]
    response: type[Resp]
    shape: Shape = "unary"

    @property
    def path(self) -> str:
        return f"/{self.service}/{self.name}"


def _methods(service: str, *specs: tuple[str, type[Any], type[Any], Shape]) -> dict[str, Method[Any, Any]]:
    return {name: Method(service, name, req, resp, shape) for name, req, resp, shape in specs}


SNAPSHOTS_SERVICE: Final = "containerd.services.snapshots.v1.Snapshots"
SNAPSHOTS: Final = _methods(
    SNAPSHOTS_SERVICE,
    ("Prepare", snapshots_pb2.PrepareSnapshotRequest, snapshots_pb2.PrepareSnapshotResponse, "unary"),
    ("View", snapshots_pb2.ViewSnapshotRequest, snapshots_pb2.ViewSnapshotResponse, "unary"),
    ("Mounts", snapshots_pb2.MountsRequest, snapshots_pb2.MountsResponse, "unary"),
    ("Commit", snapshots_pb2.CommitSnapshotRequest, empty_pb2.Empty, "unary"),
    ("Remove", snapshots_pb2.RemoveSnapshotRequest, empty_pb2.Empty, "unary"),
    ("Stat", snapshots_pb2.StatSnapshotRequest, snapshots_pb2.StatSnapshotResponse, "unary"),
    ("Update", snapshots_pb2.UpdateSnapshotRequest, snapshots_pb2.UpdateSnapshotResponse, "unary"),
    ("List", snapshots_pb2.ListSnapshotsRequest, snapshots_pb2.ListSnapshotsResponse, "stream_out"),
    ("Usage", snapshots_pb2.UsageRequest, snapshots_pb2.UsageResponse, "unary"),
    ("Cleanup", snapshots_pb2.CleanupRequest, empty_pb2.Empty, "unary"),
)

CONTENT_SERVICE: Final = "containerd.services.content.v1.Content"
CONTENT: Final = _methods(
    CONTENT_SERVICE,
    ("Info", content_pb2.InfoRequest, content_pb2.InfoResponse, "unary"),
    ("Update", content_pb2.UpdateRequest, content_pb2.UpdateResponse, "unary"),
    ("Delete", content_pb2.DeleteContentRequest, empty_pb2.Empty, "unary"),
    ("Read", content_pb2.ReadContentRequest, content_pb2.ReadContentResponse, "stream_out"),
    ("Write", content_pb2.WriteContentRequest, content_pb2.WriteContentResponse, "stream_both"),
    ("Abort", content_pb2.AbortRequest, empty_pb2.Empty, "unary"),
)

IMAGES_SERVICE: Final = "containerd.services.images.v1.Images"
IMAGES: Final = _methods(
    IMAGES_SERVICE,
    ("Get", images_pb2.GetImageRequest, images_pb2.GetImageResponse, "unary"),
    ("List", images_pb2.ListImagesRequest, images_pb2.ListImagesResponse, "unary"),
    ("Create", images_pb2.CreateImageRequest, images_pb2.CreateImageResponse, "unary"),
    ("Update", images_pb2.UpdateImageRequest, images_pb2.UpdateImageResponse, "unary"),
    ("Delete", images_pb2.DeleteImageRequest, empty_pb2.Empty, "unary"),
)

LEASES_SERVICE: Final = "containerd.services.leases.v1.Leases"
LEASES: Final = _methods(
    LEASES_SERVICE,
    ("Create", leases_pb2.CreateRequest, leases_pb2.CreateResponse, "unary"),
    ("Delete", leases_pb2.DeleteRequest, empty_pb2.Empty, "unary"),
    ("List", leases_pb2.ListRequest, leases_pb2.ListResponse, "unary"),
    ("AddResource", leases_pb2.AddResourceRequest, empty_pb2.Empty, "unary"),
)

DIFF_SERVICE: Final = "containerd.services.diff.v1.Diff"
DIFF: Final = _methods(
    DIFF_SERVICE,
    ("Apply", diff_pb2.ApplyRequest, diff_pb2.ApplyResponse, "unary"),
)

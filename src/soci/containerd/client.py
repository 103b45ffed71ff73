"""``ContainerdClient``: the calls the lazy pull needs, on containerd's gRPC socket.

Every call carries the namespace (``containerd-namespace`` metadata) and, inside ``lease()``, the
lease that keeps what the pull writes safe from garbage collection until the image record exists.
Failed calls raise our error classes (``status.error_from_rpc``).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Final, TypeVar

import grpc
from google.protobuf.field_mask_pb2 import FieldMask

from soci.containerd import api
from soci.containerd._proto import (
    content_pb2,
    descriptor_pb2,
    diff_pb2,
    images_pb2,
    leases_pb2,
    mount_pb2,
    snapshots_pb2,
)
from soci.containerd.status import error_from_rpc
from soci.errors import AlreadyExists, NotFound

Req = TypeVar("Req")
Resp = TypeVar("Resp")

WRITE_CHUNK_BYTES: Final = 1 << 20
"""Content is streamed to containerd in messages of this size (far below its 16 MiB message limit)."""
LEASE_EXPIRE_LABEL: Final = "containerd.io/gc.expire"
DEFAULT_LEASE_SEC: Final = 24 * 3600


@dataclass(frozen=True, slots=True)
class ContentInfo:
    digest: str
    size: int
    labels: Mapping[str, str]


@dataclass(frozen=True, slots=True)
class SnapshotInfo:
    name: str
    parent: str
    kind: int
    labels: Mapping[str, str]


class ContainerdClient:
    """A connection to containerd at ``address`` (a unix socket path) in ``namespace``."""

    def __init__(self, address: str, namespace: str = "default", *, timeout_sec: float | None = None) -> None:
        self.address = address.removeprefix("unix://")
        self.namespace = namespace
        self.timeout_sec = timeout_sec or None
        self._channel = grpc.aio.insecure_channel(f"unix:{self.address}")
        self.lease_id = ""

    async def aclose(self) -> None:
        await self._channel.close()

    async def __aenter__(self) -> ContainerdClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # ---- plumbing -------------------------------------------------------------------------------------

    def _metadata(self) -> tuple[tuple[str, str], ...]:
        metadata = [(api.NAMESPACE_HEADER, self.namespace)]
        if self.lease_id:
            metadata.append((api.LEASE_HEADER, self.lease_id))
        return tuple(metadata)

    def _stub(self, shape: str, method: api.Method[Any, Any]) -> Any:
        """A callable for ``method`` on the channel (``shape``: unary_unary, unary_stream, stream_stream)."""
        factory = getattr(self._channel, shape)
        return factory(
            method.path,
            request_serializer=method.request.SerializeToString,
            response_deserializer=method.response.FromString,
        )

    async def call(self, method: api.Method[Any, Any], request: Any, what: str) -> Any:
        callable_ = self._channel.unary_unary(
            method.path,
            request_serializer=method.request.SerializeToString,
            response_deserializer=method.response.FromString,
        )
        try:
            return await callable_(request, metadata=self._metadata(), timeout=self.timeout_sec)
        except grpc.aio.AioRpcError as exc:
            raise error_from_rpc(exc, what) from exc

    async def ping(self) -> None:
        """Raise Unavailable unless containerd answers (a cheap image listing)."""
        await self.call(
            api.IMAGES["List"], images_pb2.ListImagesRequest(filters=["name==soci-ping"]), "ping containerd"
        )

    # ---- leases ---------------------------------------------------------------------------------------

    @asynccontextmanager
    async def lease(self, expire_sec: int = DEFAULT_LEASE_SEC) -> AsyncIterator[str]:
        """Hold a lease for the duration of the block; everything created inside it is protected."""
        expire = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + expire_sec))
        request = leases_pb2.CreateRequest(
            id=f"soci-rpull-{uuid.uuid4().hex[:12]}", labels={LEASE_EXPIRE_LABEL: expire}
        )
        response = await self.call(api.LEASES["Create"], request, "create lease")
        previous, self.lease_id = self.lease_id, response.lease.id
        try:
            yield self.lease_id
        finally:
            lease_id, self.lease_id = self.lease_id, previous
            await self.call(api.LEASES["Delete"], leases_pb2.DeleteRequest(id=lease_id), f"delete lease {lease_id}")

    # ---- content --------------------------------------------------------------------------------------

    async def content_info(self, digest: str) -> ContentInfo | None:
        try:
            response = await self.call(api.CONTENT["Info"], content_pb2.InfoRequest(digest=digest), f"content {digest}")
        except NotFound:
            return None
        info = response.info
        return ContentInfo(info.digest, info.size, dict(info.labels))

    async def update_content_labels(self, digest: str, labels: Mapping[str, str]) -> None:
        """Set (or, with an empty value, remove) the given labels of a blob; others stay."""
        request = content_pb2.UpdateRequest(
            info=content_pb2.Info(digest=digest, labels=dict(labels)),
            update_mask=FieldMask(paths=[f"labels.{key}" for key in labels]),
        )
        await self.call(api.CONTENT["Update"], request, f"label content {digest}")

    async def write_content(
        self,
        digest: str,
        size: int,
        chunks: AsyncIterator[bytes] | Sequence[bytes],
        labels: Mapping[str, str] | None = None,
    ) -> bool:
        """Store a blob (verified by containerd against ``digest`` and ``size``); False if it was there already
        (its labels are then updated)."""
        if await self.content_info(digest) is not None:
            if labels:
                await self.update_content_labels(digest, labels)
            return False
        ref = f"soci-{digest}"

        async def requests() -> AsyncIterator[content_pb2.WriteContentRequest]:
            offset = 0
            if isinstance(chunks, Sequence):
                source: AsyncIterator[bytes] = _iterate(chunks)
            else:
                source = chunks
            async for chunk in source:
                for start in range(0, len(chunk), WRITE_CHUNK_BYTES):
                    piece = chunk[start : start + WRITE_CHUNK_BYTES]
                    yield content_pb2.WriteContentRequest(
                        action=content_pb2.WRITE, ref=ref, offset=offset, data=piece, total=size, expected=digest
                    )
                    offset += len(piece)
            yield content_pb2.WriteContentRequest(
                action=content_pb2.COMMIT,
                ref=ref,
                offset=offset,
                total=size,
                expected=digest,
                labels=dict(labels or {}),
            )

        method = api.CONTENT["Write"]
        call = self._channel.stream_stream(
            method.path,
            request_serializer=method.request.SerializeToString,
            response_deserializer=method.response.FromString,
        )
        try:
            async for _ in call(requests(), metadata=self._metadata(), timeout=self.timeout_sec):
                pass
        except grpc.aio.AioRpcError as exc:
            error = error_from_rpc(exc, f"write content {digest}")
            if isinstance(error, AlreadyExists):
                if labels:
                    await self.update_content_labels(digest, labels)
                return False
            raise error from exc
        return True

    async def read_content(self, digest: str) -> bytes:
        return b"".join([chunk async for chunk in self.read_content_stream(digest)])

    async def read_content_stream(self, digest: str) -> AsyncIterator[bytes]:
        """A blob of containerd's content store, chunk by chunk (containerd verifies it on ingest, not here)."""
        method = api.CONTENT["Read"]
        call = self._channel.unary_stream(
            method.path,
            request_serializer=method.request.SerializeToString,
            response_deserializer=method.response.FromString,
        )
        try:
            async for response in call(
                content_pb2.ReadContentRequest(digest=digest), metadata=self._metadata(), timeout=self.timeout_sec
            ):
                yield response.data
        except grpc.aio.AioRpcError as exc:
            raise error_from_rpc(exc, f"read content {digest}") from exc

    # ---- images ---------------------------------------------------------------------------------------

    async def get_image(self, name: str) -> images_pb2.Image | None:
        try:
            response = await self.call(api.IMAGES["Get"], images_pb2.GetImageRequest(name=name), f"image {name}")
        except NotFound:
            return None
        image: images_pb2.Image = response.image
        return image

    async def put_image(
        self, name: str, media_type: str, digest: str, size: int, labels: Mapping[str, str] | None = None
    ) -> None:
        """Create the image record, or point an existing one at the new target."""
        image = images_pb2.Image(
            name=name,
            labels=dict(labels or {}),
            target=descriptor_pb2.Descriptor(media_type=media_type, digest=digest, size=size),
        )
        try:
            await self.call(api.IMAGES["Create"], images_pb2.CreateImageRequest(image=image), f"create image {name}")
        except AlreadyExists:
            request = images_pb2.UpdateImageRequest(image=image, update_mask=FieldMask(paths=["target"]))
            await self.call(api.IMAGES["Update"], request, f"update image {name}")

    async def delete_image(self, name: str, *, sync: bool = False) -> None:
        await self.call(
            api.IMAGES["Delete"], images_pb2.DeleteImageRequest(name=name, sync=sync), f"delete image {name}"
        )

    # ---- snapshots (through containerd's metadata layer) ------------------------------------------------

    async def stat_snapshot(self, snapshotter: str, key: str) -> SnapshotInfo | None:
        request = snapshots_pb2.StatSnapshotRequest(snapshotter=snapshotter, key=key)
        try:
            response = await self.call(api.SNAPSHOTS["Stat"], request, f"stat snapshot {key}")
        except NotFound:
            return None
        info = response.info
        return SnapshotInfo(info.name, info.parent, info.kind, dict(info.labels))

    async def prepare_snapshot(
        self, snapshotter: str, key: str, parent: str, labels: Mapping[str, str]
    ) -> list[mount_pb2.Mount]:
        """Mounts of the new active snapshot; AlreadyExists when the snapshotter made the layer itself."""
        request = snapshots_pb2.PrepareSnapshotRequest(
            snapshotter=snapshotter, key=key, parent=parent, labels=dict(labels)
        )
        response = await self.call(api.SNAPSHOTS["Prepare"], request, f"prepare snapshot {key}")
        return list(response.mounts)

    async def view_snapshot(
        self, snapshotter: str, key: str, parent: str, labels: Mapping[str, str] | None = None
    ) -> list[mount_pb2.Mount]:
        request = snapshots_pb2.ViewSnapshotRequest(
            snapshotter=snapshotter, key=key, parent=parent, labels=dict(labels or {})
        )
        response = await self.call(api.SNAPSHOTS["View"], request, f"view snapshot {key}")
        return list(response.mounts)

    async def snapshot_mounts(self, snapshotter: str, key: str) -> list[mount_pb2.Mount]:
        request = snapshots_pb2.MountsRequest(snapshotter=snapshotter, key=key)
        response = await self.call(api.SNAPSHOTS["Mounts"], request, f"mounts of snapshot {key}")
        return list(response.mounts)

    async def commit_snapshot(self, snapshotter: str, name: str, key: str, labels: Mapping[str, str]) -> None:
        request = snapshots_pb2.CommitSnapshotRequest(snapshotter=snapshotter, name=name, key=key, labels=dict(labels))
        await self.call(api.SNAPSHOTS["Commit"], request, f"commit snapshot {key} as {name}")

    async def remove_snapshot(self, snapshotter: str, key: str) -> None:
        request = snapshots_pb2.RemoveSnapshotRequest(snapshotter=snapshotter, key=key)
        await self.call(api.SNAPSHOTS["Remove"], request, f"remove snapshot {key}")

    # ---- diff -----------------------------------------------------------------------------------------

    async def apply_layer(self, media_type: str, digest: str, size: int, mounts: Sequence[mount_pb2.Mount]) -> str:
        """Unpack a layer blob from containerd's content store onto ``mounts``; returns its diff ID."""
        request = diff_pb2.ApplyRequest(
            diff=descriptor_pb2.Descriptor(media_type=media_type, digest=digest, size=size), mounts=list(mounts)
        )
        response = await self.call(api.DIFF["Apply"], request, f"apply layer {digest}")
        applied: str = response.applied.digest
        return applied


async def _iterate(chunks: Sequence[bytes]) -> AsyncIterator[bytes]:
    for chunk in chunks:
        yield chunk

"""Remote (lazily loaded) snapshots: what the snapshotter needs, and the SOCI discovery in front of it.

``RemoteFS`` is the snapshotter's whole view of a lazy filesystem (stargz's three methods). Its SOCI
implementation, ``SociRemoteFS``, does what upstream's ``fs.Mount`` does before any FUSE work: find
the image's SOCI index (explicit label → v2 annotation → v1 referrers; once per manifest), fetch the
index and the layer's zTOC, and tell the snapshotter which fallback applies:

* no index for the image → ``NoIndexError`` → containerd pulls the image itself;
* index without a zTOC for this layer → ``NoZtocError`` → the snapshotter unpacks the layer locally.

The mounting itself is delegated to a ``LayerMounter`` (the FUSE filesystem), bounded by
``mount_timeout_sec``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Protocol, TypeVar

from soci.errors import DataLoss, FormatError, NoIndexError, NotFound, NoZtocError, SociError, Unavailable
from soci.formats import soci_index as si
from soci.formats.digest import sha256_digest
from soci.formats.load_order import decode_ztoc_metadata
from soci.formats.oci import INDEX_MEDIA_TYPES, Descriptor, Manifest
from soci.formats.zinfo import zinfo_from_blob
from soci.fs.layer import gzip_header_length
from soci.fs.ztoc_reader import read_ztoc_info
from soci.futures import mark_retrieved
from soci.index.discover import discover_index, fetch_index
from soci.loadorder.service import MountedImage
from soci.registry import RegistryClient, parse_reference
from soci.snapshotter import metrics as m
from soci.snapshotter.keyed_locks import KeyedLocks
from soci.snapshotter.labels import LayerSource
from soci.snapshotter.resolver import RegistryResolver

log = logging.getLogger(__name__)

T = TypeVar("T")
K = TypeVar("K")
V = TypeVar("V")

CONTEXT_CACHE_ENTRIES: Final = 256
"""Images whose SOCI lookup is remembered (upstream keeps one per image manifest for the daemon's life)."""
ZTOC_CACHE_ENTRIES: Final = 16
"""zTOC blobs kept after a mount, for the next layers of the same image and for re-mounts."""
ZTOC_PREFETCH_CONCURRENCY: Final = 3
"""zTOCs of the layers above the one being mounted fetched at once, lowest layer first."""
ZTOC_PREFETCH_MAX: Final = 128
"""zTOC fetches started ahead and not yet claimed by a mount; beyond this none are started."""
STAND_IN_WAIT_SEC: Final = 5.0
"""Longest a layer's mount waits for its image's load order document (for zTOC metadata) before fetching the
zTOC instead."""
ZTOC_PREFETCH_TTL_SEC: Final = 600.0
"""An unclaimed zTOC fetched ahead (a pull that stopped half way) is dropped after this long."""


class RemoteFS(Protocol):
    """Mounts one registry layer at a directory, lazily."""

    async def mount(self, mountpoint: Path, source: LayerSource) -> None:
        """Mount the layer at ``mountpoint`` (an empty directory).

        Raises:
            NoIndexError: the image has no SOCI index (containerd should pull it).
            NoZtocError: the index has no zTOC for this layer (unpack it locally).
        """

    async def check(self, mountpoint: Path, source: LayerSource) -> None:
        """Raise (Unavailable, ...) unless the mount at ``mountpoint`` can still serve its layer."""

    async def unmount(self, mountpoint: Path, *, discard: bool = False) -> None:
        """Unmount ``mountpoint``; not an error if nothing is mounted there.

        ``discard``: the snapshot is being removed: once no mount uses the layer any more, its cached spans go.
        """


@dataclass(frozen=True, slots=True)
class RemoteLayer:
    """Everything a lazy filesystem needs to serve one layer."""

    source: LayerSource
    client: RegistryClient
    repo: str
    layer: Descriptor
    """The layer as the image manifest describes it (media type, digest, size)."""
    ztoc_descriptor: Descriptor
    ztoc: bytes
    """The zTOC blob, digest-verified."""
    index: si.SociIndex
    index_digest: str
    manifest: Manifest
    gzip_header: bytes | None = None
    """The blob's gzip header when it was fetched ahead with the zTOC (unchecked: the mount checks it)."""
    ztoc_complete: bool = True
    """False: ``ztoc`` is a load order document's zTOC metadata (the zTOC with its windows zeroed), and the
    zTOC itself is fetched when a span must first be inflated (``fetch_ztoc``)."""

    async def fetch_ztoc(self) -> bytes:
        """The zTOC blob, digest-verified."""
        return await self.client.get_blob(self.repo, self.ztoc_descriptor.digest, self.ztoc_descriptor.size)

    @property
    def disable_xattrs(self) -> bool:
        return (self.ztoc_descriptor.annotations or {}).get(si.ANNOTATION_DISABLE_XATTRS, "").lower() in ("true", "1")

    @property
    def prefetch(self) -> Descriptor | None:
        for d in self.index.prefetches():
            if (d.annotations or {}).get(si.ANNOTATION_LAYER_DIGEST) == self.layer.digest:
                return d
        return None


class LayerMounter(Protocol):
    """The filesystem half of a remote snapshot: serve ``RemoteLayer`` at a mountpoint."""

    async def mount(self, mountpoint: Path, layer: RemoteLayer) -> None: ...
    async def check(self, mountpoint: Path) -> None: ...
    async def unmount(self, mountpoint: Path, *, discard: bool = False) -> None: ...


class ZtocStandIns(Protocol):
    """Where a layer's zTOC metadata can come from instead of its zTOC (``LoadOrderService``)."""

    def image_preparing(self, image: MountedImage) -> None:
        """Start looking for ``image``'s metadata (its ``layers`` may still be unknown)."""

    async def ztoc_stand_ins(self, image: MountedImage) -> dict[str, bytes]:
        """zTOC digest -> compressed zTOC metadata (``formats.load_order.decode_ztoc_metadata``)."""
        ...


class UnavailableMounter:
    """Stands in while no lazy filesystem is wired in: every remote mount fails, so layers with a zTOC
    are unpacked locally by the snapshotter instead (images without an index still defer)."""

    def __init__(self, reason: str = "no lazy filesystem is available in this daemon") -> None:
        self.reason = reason

    async def mount(self, mountpoint: Path, layer: RemoteLayer) -> None:
        raise Unavailable(self.reason)

    async def check(self, mountpoint: Path) -> None:
        raise Unavailable(self.reason)

    async def unmount(self, mountpoint: Path, *, discard: bool = False) -> None:
        return None


@dataclass(frozen=True, slots=True)
class _Ahead:
    """A zTOC fetched before its layer's Prepare, with the layer's gzip header (None: not fetched)."""

    ztoc: bytes
    gzip_header: bytes | None
    complete: bool = True
    """False: ``ztoc`` is zTOC metadata (windows zeroed), as ``RemoteLayer.ztoc_complete``."""
    from_document: bool = False
    """``ztoc`` came from a load order document's zTOC metadata, not from the registry."""


@dataclass(frozen=True, slots=True)
class _ImageContext:
    """One image manifest's SOCI artifacts, looked up once (upstream's "soci context")."""

    repo: str
    manifest: Manifest
    index: si.SociIndex | None
    index_digest: str
    no_index_reason: str = ""


class SociRemoteFS:
    """``RemoteFS`` for SOCI-indexed images.

    Args:
        resolver: registry clients per domain.
        mounter: the filesystem that serves a resolved layer.
        mount_timeout_sec: bound on one layer's mount (upstream ``mount_timeout_sec``).
        soci_v1 / soci_v2: pull modes (upstream ``[pull_modes]``).
        stand_ins: load order documents' zTOC metadata: a layer that has some is mounted from it, and its zTOC
            is fetched only once a span of it must be inflated.
    """

    def __init__(
        self,
        resolver: RegistryResolver,
        mounter: LayerMounter,
        *,
        mount_timeout_sec: float = 30.0,
        soci_v1: bool = False,
        soci_v2: bool = True,
        metrics: m.MetricsSink | None = None,
        clock: Callable[[], float] = time.monotonic,
        stand_ins: ZtocStandIns | None = None,
    ) -> None:
        self._resolver = resolver
        self._stand_ins = stand_ins
        self._mounter = mounter
        self._mount_timeout_sec = mount_timeout_sec
        self._soci_v1 = soci_v1
        self._soci_v2 = soci_v2
        self._metrics = metrics or m.NullMetrics()
        self._clock = clock
        self._contexts: OrderedDict[tuple[str, str, str], _ImageContext] = OrderedDict()
        self._context_locks = KeyedLocks()
        self._ztocs: OrderedDict[str, bytes] = OrderedDict()
        self._ahead: dict[str, tuple[float, asyncio.Task[_Ahead]]] = {}
        self._ahead_limit = asyncio.Semaphore(ZTOC_PREFETCH_CONCURRENCY)

    async def resolve(self, source: LayerSource) -> RemoteLayer:
        """Look up the layer's index and zTOC (cached per image manifest and per zTOC)."""
        client = self._resolver.client_for(source.image_ref)
        if self._stand_ins is not None:  # the document's fetch overlaps the index lookup
            self._stand_ins.image_preparing(_image_of(source, client))
        context = await self._context(source)
        if context.index is None:
            raise NoIndexError(context.no_index_reason)
        layer = next((d for d in context.manifest.layers or () if d.digest == source.layer_digest), None)
        if layer is None:
            raise NotFound(f"layer {source.layer_digest} is not in image manifest {source.manifest_digest}")
        ztoc_descriptor = context.index.ztoc_for_layer(source.layer_digest)
        if ztoc_descriptor is None:
            raise NoZtocError(f"no ztoc for layer {source.layer_digest} in SOCI index {context.index_digest}")
        ztoc = _lru_get(self._ztocs, ztoc_descriptor.digest)
        on_its_way = ztoc is not None or ztoc_descriptor.digest in self._ahead
        stand_ins: dict[str, bytes] = {}
        if self._stand_ins is not None and not on_its_way:
            layers = tuple(d.digest for d in context.manifest.layers or ())
            try:
                async with asyncio.timeout(STAND_IN_WAIT_SEC):
                    stand_ins = await self._stand_ins.ztoc_stand_ins(_image_of(source, client, layers))
            except TimeoutError:
                log.warning("load order document of %s not here after %g s; fetching zTOCs", source.image_ref,
                            STAND_IN_WAIT_SEC)  # fmt: skip
        if on_its_way:
            self._fetch_upper_ztocs(client, context, source.layer_digest, stand_ins)
        header = None
        complete, from_document = True, False
        if ztoc is None and (ahead := await self._claim_ahead(ztoc_descriptor.digest)) is not None:
            ztoc, header, complete, from_document = ahead.ztoc, ahead.gzip_header, ahead.complete, ahead.from_document
        if ztoc is None and ztoc_descriptor.digest in stand_ins:
            found = await self._stand_in(stand_ins[ztoc_descriptor.digest], ztoc_descriptor, source.layer_digest)
            if found is not None:
                (ztoc, complete), from_document = found, True
        if from_document:
            how = "the whole zTOC" if complete else "its windows come with the zTOC, fetched when first needed"
            log.info("layer %s mounts from the load order document's zTOC metadata (%s)", source.layer_digest, how)
        if ztoc is None:
            ztoc = await self._timed(
                m.OP_ZTOC_FETCH,
                source.layer_digest,
                client.get_blob(context.repo, ztoc_descriptor.digest, ztoc_descriptor.size),
            )
        if not on_its_way:
            # the first layer's zTOC alone first: fetched beside it, the uppers' would share the link with it and
            # delay the mount that every later Prepare waits behind
            self._fetch_upper_ztocs(client, context, source.layer_digest, stand_ins)
        if complete:
            _lru_put(self._ztocs, ztoc_descriptor.digest, ztoc, ZTOC_CACHE_ENTRIES)
        return RemoteLayer(
            source=source,
            client=client,
            repo=context.repo,
            layer=layer,
            ztoc_descriptor=ztoc_descriptor,
            ztoc=ztoc,
            index=context.index,
            index_digest=context.index_digest,
            manifest=context.manifest,
            gzip_header=header,
            ztoc_complete=complete,
        )

    async def _stand_in(self, packed: bytes, descriptor: Descriptor, layer: str) -> tuple[bytes, bool] | None:
        """``(zTOC metadata, whether it is the whole zTOC)``, or None when it cannot be this zTOC's (logged)."""
        try:
            return await asyncio.to_thread(_decode_stand_in, packed, descriptor, layer)
        except FormatError as exc:
            log.warning("%s; fetching zTOC %s", exc, descriptor.digest)
            return None

    def _fetch_upper_ztocs(
        self, client: RegistryClient, context: _ImageContext, layer_digest: str, stand_ins: Mapping[str, bytes]
    ) -> None:
        """Start fetching the zTOCs of the layers above ``layer_digest`` (decoding ``stand_ins`` instead where
        they have the zTOC's metadata).

        containerd prepares an image's layers one after another, bottom up, and each waits for its zTOC. A
        layer being prepared means no layer above it is on this node either (their chain IDs include it), so
        these zTOCs will be asked for next: fetching them now overlaps their transfer with the mounts below.
        """
        assert context.index is not None
        now = self._clock()
        for digest in [d for d, (t, _) in self._ahead.items() if now - t > ZTOC_PREFETCH_TTL_SEC]:
            self._ahead.pop(digest)[1].cancel()
        layers = [d.digest for d in context.manifest.layers or ()]
        if layer_digest not in layers:
            return
        for upper in layers[layers.index(layer_digest) + 1 :]:
            descriptor = context.index.ztoc_for_layer(upper)
            if descriptor is None or descriptor.digest in self._ahead or descriptor.digest in self._ztocs:
                continue
            if len(self._ahead) >= ZTOC_PREFETCH_MAX:
                return
            task = asyncio.get_running_loop().create_task(
                self._fetch_ahead(client, context.repo, upper, descriptor, stand_ins.get(descriptor.digest)),
                name=f"soci-ztoc-ahead-{upper}",
            )
            task.add_done_callback(mark_retrieved)
            self._ahead[descriptor.digest] = (now, task)

    async def _fetch_ahead(
        self, client: RegistryClient, repo: str, layer: str, descriptor: Descriptor, stand_in: bytes | None
    ) -> _Ahead:
        found = None if stand_in is None else await self._stand_in(stand_in, descriptor, layer)
        if found is not None:
            ztoc, complete = found
        else:
            complete = True
            async with self._ahead_limit:
                ztoc = await self._timed(
                    m.OP_ZTOC_FETCH, layer, client.get_blob(repo, descriptor.digest, descriptor.size)
                )
        # the layer's gzip header too: its request would otherwise wait for the Prepare, one round trip per layer
        try:
            info = read_ztoc_info(ztoc)
            length = gzip_header_length(zinfo_from_blob(info.compression_algorithm, info.checkpoints))
            header = await client.read_blob_range(repo, layer, 0, length) if length else None
        except (SociError, OSError) as exc:  # the mount reads the zTOC itself, and fetches the header
            log.debug("gzip header of layer %s not fetched ahead: %s", layer, exc)
            header = None
        return _Ahead(ztoc, header, complete, from_document=found is not None)

    async def _claim_ahead(self, ztoc_digest: str) -> _Ahead | None:
        """The zTOC fetched ahead, or None (not started, or failed: the caller fetches it itself)."""
        entry = self._ahead.pop(ztoc_digest, None)
        if entry is None:
            return None
        try:
            return await asyncio.shield(entry[1])
        except (SociError, OSError) as exc:
            log.info("zTOC %s fetched ahead failed (%s); fetching it again", ztoc_digest, exc)
            return None

    async def aclose(self) -> None:
        """Cancel the zTOC fetches started ahead."""
        ahead, self._ahead = self._ahead, {}
        for _, task in ahead.values():
            task.cancel()
        await asyncio.gather(*(task for _, task in ahead.values()), return_exceptions=True)

    async def mount(self, mountpoint: Path, source: LayerSource) -> None:
        start = self._clock()
        layer = await self.resolve(source)
        remaining = self._mount_timeout_sec - (self._clock() - start)
        try:
            await asyncio.wait_for(self._mounter.mount(mountpoint, layer), timeout=max(remaining, 0.001))
        except TimeoutError as exc:
            await self._mounter.unmount(mountpoint)
            raise Unavailable(
                f"mounting layer {source.layer_digest} took longer than mount_timeout_sec={self._mount_timeout_sec:g}"
            ) from exc
        self._metrics.observe(m.OP_MOUNT, source.layer_digest, self._clock() - start)

    async def check(self, mountpoint: Path, source: LayerSource) -> None:
        await self._mounter.check(mountpoint)

    async def unmount(self, mountpoint: Path, *, discard: bool = False) -> None:
        await self._mounter.unmount(mountpoint, discard=discard)

    async def _context(self, source: LayerSource) -> _ImageContext:
        # per repository: the same manifest pulled from another repository (or registry) reads its blobs and
        # its referrers there, not where it was first seen
        key = (parse_reference(source.image_ref).name, source.manifest_digest, source.index_digest)
        context = _lru_get(self._contexts, key)
        if context is not None:
            return context
        async with self._context_locks.hold(key):
            context = _lru_get(self._contexts, key)
            if context is None:
                context = await self._lookup(source)
                # a missing index is remembered, as upstream does; transient errors are raised and retried
                _lru_put(self._contexts, key, context, CONTEXT_CACHE_ENTRIES)
        return context

    async def _lookup(self, source: LayerSource) -> _ImageContext:
        reference = parse_reference(source.image_ref)
        client = self._resolver.client_for(source.image_ref)
        repo = reference.path

        async def fetch_manifest() -> Manifest:
            data, media_type, _ = await client.get_manifest(repo, source.manifest_digest)
            if media_type in INDEX_MEDIA_TYPES:
                raise FormatError(f"{source.manifest_digest} is an image index, not an image manifest")
            return Manifest.unmarshal(data, f"image manifest {source.manifest_digest}")

        loop = asyncio.get_running_loop()
        fetching = loop.create_task(fetch_manifest())
        fetching.add_done_callback(mark_retrieved)
        # one fetch of the manifest serves both; the v1 referrers lookup needs only its digest and runs beside it
        finding = loop.create_task(self._find_index(client, repo, source, fetching))
        try:
            manifest = await fetching
        except BaseException:
            finding.cancel()
            await asyncio.gather(finding, return_exceptions=True)
            raise
        found = await finding
        if isinstance(found, str):
            return _ImageContext(repo, manifest, None, "", found)
        index_digest, index = found
        return _ImageContext(repo, manifest, index, index_digest)

    async def _find_index(
        self, client: RegistryClient, repo: str, source: LayerSource, manifest: Awaitable[Manifest]
    ) -> tuple[str, si.SociIndex] | str:
        """``(digest, index)`` of the image's SOCI index, or why it has none."""
        try:
            found = await discover_index(
                client,
                repo,
                source.manifest_digest,
                explicit_digest=source.index_digest,
                v2_enabled=self._soci_v2,
                v1_enabled=self._soci_v1,
                manifest=manifest,
            )
            index = await self._timed(m.OP_SOCI_INDEX_FETCH, "", fetch_index(client, repo, found.index_digest))
        except NoIndexError as exc:
            log.info("no SOCI index for image", extra={"manifest": source.manifest_digest, "reason": str(exc)})
            return str(exc)
        except (NotFound, DataLoss, FormatError) as exc:
            reason = f"unable to fetch SOCI artifacts for {source.manifest_digest}: {exc}"
            log.warning(reason)
            return reason
        return found.index_digest, index

    async def _timed(self, operation: str, layer: str, work: Awaitable[T]) -> T:
        start = self._clock()
        result = await work
        self._metrics.observe(operation, layer, self._clock() - start)
        return result


def _decode_stand_in(packed: bytes, descriptor: Descriptor, layer: str) -> tuple[bytes, bool]:
    data = decode_ztoc_metadata(packed, f"zTOC metadata for layer {layer}")
    if len(data) != descriptor.size:
        raise FormatError(f"zTOC metadata for layer {layer} is {len(data)} bytes, the zTOC {descriptor.size}")
    # an uncompressed layer's zTOC has no windows: its metadata is the zTOC itself
    return data, sha256_digest(data) == descriptor.digest


def _image_of(source: LayerSource, client: RegistryClient, layers: tuple[str, ...] = ()) -> MountedImage:
    return MountedImage(
        client=client,
        repo=parse_reference(source.image_ref).path,  # the pulled reference's repository
        image_ref=source.image_ref,
        manifest_digest=source.manifest_digest,
        layers=layers,
        namespace=source.namespace,
        label=source.load_order,
    )


def _lru_get(cache: OrderedDict[K, V], key: K) -> V | None:
    value = cache.get(key)
    if value is not None:
        cache.move_to_end(key)
    return value


def _lru_put(cache: OrderedDict[K, V], key: K, value: V, limit: int) -> None:
    cache[key] = value
    cache.move_to_end(key)
    while len(cache) > limit:
        cache.popitem(last=False)

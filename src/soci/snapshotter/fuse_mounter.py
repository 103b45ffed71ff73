"""``FuseLayerMounter``: remote snapshots served lazily by ``soci.fs``.

pyfuse3 allows one filesystem per process, so the daemon has one FUSE mount
(``<root>/soci/fuse``) with a directory per layer. Each remote snapshot's ``fs`` directory is either an EROFS
mount of an image of the layer's tree whose data device is the layer's uncompressed tar on that FUSE mount
(``[fuse] metadata``: the kernel answers every metadata request, and only file data reach this process), or
a read-only bind mount of the layer's directory (this process answers everything). Every system call on
those paths runs in a worker thread: the FUSE requests it causes are answered by this same event loop.

The daemon builds it with ``soci.daemon.mounters.fuse`` (``SOCI_SNAPSHOTTER_LAYER_MOUNTER=soci.daemon.mounters:fuse``).
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from pathlib import Path

from soci import system
from soci.errors import SociError, Unavailable
from soci.formats.soci_index import PrefetchSpan, parse_prefetch
from soci.fs import erofs
from soci.fs import metrics as fm
from soci.fs.background import BackgroundFetcher
from soci.fs.blob import BlobReader
from soci.fs.layer import Layer, LayerRequest, LayerResolver
from soci.fs.mount import LazyMount
from soci.fs.ops import ARCHIVE_DIR_NAME
from soci.fs.options import FsOptions
from soci.fs.session import default_keeper, read_record
from soci.futures import mark_retrieved
from soci.loadorder.service import LoadOrderOptions, LoadOrderService, MountedImage
from soci.registry import RemoteBlob, parse_reference
from soci.snapshotter.remote import RemoteLayer

log = logging.getLogger(__name__)


class FuseLayerMounter:
    """``LayerMounter`` on the lazy filesystem; ``root`` is the daemon root."""

    def __init__(
        self,
        root: Path,
        options: FsOptions | None = None,
        *,
        userxattr: bool = False,
        load_order: LoadOrderOptions | None = None,
    ) -> None:
        self.options = options or FsOptions()
        self._userxattr = userxattr
        fuse_dir = root / "soci" / "fuse"
        self._lazy = LazyMount(fuse_dir, self.options.fuse, keeper=default_keeper(fuse_dir))
        self._background = BackgroundFetcher(self.options.background_fetch)
        self._resolver = LayerResolver(root, self.options, background=self._background)
        self.load_order = LoadOrderService(root, load_order, background=self._background)
        self._served: dict[Path, tuple[str, Layer]] = {}
        self._erofs_dir = root / "soci" / "erofs"
        self._use_erofs: bool | None = None  # decided at the first mount
        self._pinned: dict[Path, system.LockedPages] = {}
        self._pin_warned = False
        self._start_lock = asyncio.Lock()
        self._warming: asyncio.Future[None] | None = None
        self._metrics: fm.FsMetrics = fm.NullFsMetrics()

    def set_metrics(self, metrics: fm.FsMetrics) -> None:
        """Report to ``metrics`` from every part of the lazy filesystem (FUSE handlers, background fetch, ...)."""
        self._metrics = metrics
        self._lazy.operations.metrics = metrics
        self._background.metrics = metrics
        self._resolver.metrics = metrics

    def layer_sizes(self) -> list[tuple[str, str, int, int]]:
        """``(layer digest, mountpoint, size, fetched size)`` of every served snapshot (upstream's layer gauges)."""
        return [(layer.digest, str(mp), layer.size, layer.fetched_size()) for mp, (_, layer) in self._served.items()]

    async def _start(self) -> None:
        async with self._start_lock:
            if not self._lazy.mounted:
                await self._lazy.start()
                self._background.start()

    async def _prefetch_spans(self, layer: RemoteLayer) -> tuple[PrefetchSpan, ...]:
        """The layer's prefetch artifact when prefetch is enabled; best effort, as upstream: never fails a mount."""
        desc = layer.prefetch
        if desc is None or not self.options.prefetch.enable:
            return ()
        try:
            return tuple(parse_prefetch(await layer.client.get_blob(layer.repo, desc.digest, desc.size)))
        except SociError as exc:
            log.warning("prefetch artifact %s of layer %s ignored: %s", desc.digest, layer.layer.digest, exc)
            return ()

    async def mount(self, mountpoint: Path, layer: RemoteLayer) -> None:
        image = MountedImage(
            client=layer.client,
            # the pulled reference's repository (layer.repo is the first one seen for this manifest)
            repo=parse_reference(layer.source.image_ref).path,
            image_ref=layer.source.image_ref,
            manifest_digest=layer.source.manifest_digest,
            layers=tuple(d.digest for d in layer.manifest.layers or ()),
            namespace=layer.source.namespace,
            label=layer.source.load_order,
            last_lazy_layer=_last_lazy_layer(layer),
        )
        # the image's load order document is fetched while its first layer opens, not after it mounts
        self.load_order.image_preparing(image)
        # a fresh daemon's FUSE mount (and its holder process) starts while the layer's zTOC is parsed
        starting = asyncio.ensure_future(self._start())
        try:
            opened = await self._open(layer)
        except BaseException:
            await _settle(starting)
            raise
        self.load_order.layer_opened(opened, image)
        erofs_image: asyncio.Future[bytes] | None = None
        try:
            if await self._erofs_wanted():
                # the EROFS image is written while a fresh daemon's FUSE mount is still starting
                erofs_image = asyncio.ensure_future(self._erofs_image(opened))
                erofs_image.add_done_callback(mark_retrieved)
            await starting
            self._served[mountpoint] = (await self._attach(mountpoint, layer, opened, erofs_image), opened)
        except BaseException:
            if erofs_image is not None:
                await asyncio.gather(erofs_image, return_exceptions=True)
            await self._release(opened)
            raise
        self.load_order.layer_mounted(opened)

    async def _open(self, layer: RemoteLayer) -> Layer:
        request = LayerRequest(
            layer_digest=layer.layer.digest,
            ztoc_digest=layer.ztoc_descriptor.digest,
            ztoc=layer.ztoc,
            blob=MeteredBlob(
                RemoteBlob(layer.client, layer.repo, layer.layer.digest, layer.layer.size),
                layer.layer.digest,
                self._metrics,
            ),
            layer_size=layer.layer.size,
            disable_xattrs=layer.disable_xattrs,
            userxattr=self._userxattr,
            image_ref=layer.source.image_ref,
            prefetch=await self._prefetch_spans(layer),
            gzip_header=layer.gzip_header,
            full_ztoc=None if layer.ztoc_complete else layer.fetch_ztoc,
        )
        return await self._resolver.acquire(request)

    async def _attach(
        self, mountpoint: Path, layer: RemoteLayer, opened: Layer, image: asyncio.Future[bytes] | None
    ) -> str:
        """Add the open layer to the FUSE mount and mount its tree at ``mountpoint`` (its EROFS ``image``, or the
        FUSE tree when there is none); its FUSE name."""
        snapshot_id = mountpoint.parent.name
        name = f"snapshot-{snapshot_id}"  # one directory per snapshot (its id)
        # the snapshot id (never reused) fixes the layer's inode numbers: after a restart, the adopted
        # session's kernel side still uses them
        slot = int(snapshot_id) if snapshot_id.isdigit() and 0 < int(snapshot_id) < 1 << 31 else None
        start = time.monotonic()
        source = self._lazy.add_layer(name, opened, slot=slot)
        try:
            if image is not None:
                await self._mount_erofs(name, opened, image, source, mountpoint)
            else:
                await asyncio.to_thread(system.bind_mount, source, mountpoint, read_only=True)
        except BaseException:
            self._lazy.remove_layer(name)
            raise
        self._metrics.observe(fm.OP_FUSE_MOUNT, layer.layer.digest, time.monotonic() - start)
        return name

    async def _erofs_wanted(self) -> bool:
        if self._use_erofs is None:
            mode = self.options.fuse.metadata
            if mode == "auto":
                self._use_erofs = await asyncio.to_thread(erofs.kernel_supports_file_backed)
                served_by = "EROFS" if self._use_erofs else "the FUSE tree (this kernel has no file-backed EROFS)"
                log.info("layer metadata served by %s", served_by)
            else:
                self._use_erofs = mode == "erofs"
        return self._use_erofs

    async def _erofs_image(self, layer: Layer) -> bytes:
        return await asyncio.to_thread(
            erofs.image_for_tree,
            layer.tree,
            layer.spans.uncompressed_size,
            opaque_xattr=layer.opaque_xattr,
            xattrs=not layer.disable_xattrs,
        )

    async def _mount_erofs(
        self, name: str, layer: Layer, building: asyncio.Future[bytes], source: Path, mountpoint: Path
    ) -> None:
        """Mount the layer's EROFS image at ``mountpoint``, its data device ``.soci-archives/<name>``.

        The image file is removed once mounted (the mount holds it open), so a crash leaves none behind. Its
        pages stay locked in memory while the layer is served (about 128 bytes per entry): metadata never waits
        for the disk, as with the FUSE tree, which holds it in Python objects. A layer the image cannot describe
        (an xattr name EROFS has no prefix for) gets the FUSE tree instead, with a warning.
        """
        start = time.monotonic()
        try:
            image = await building
        except SociError as exc:
            log.warning("layer %s is served by the FUSE tree: no EROFS image: %s", layer.digest, exc)
            await asyncio.to_thread(system.bind_mount, source, mountpoint, read_only=True)
            return
        path = self._erofs_dir / f"{name}.erofs"
        device = self._lazy.mountpoint / ARCHIVE_DIR_NAME.decode() / name

        def mount() -> system.LockedPages | None:
            self._erofs_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
            erofs.write_image(path, image)
            try:
                erofs.mount_image(path, device, mountpoint)
                return self._pin(path)
            finally:
                path.unlink(missing_ok=True)

        pinned = await asyncio.to_thread(mount)
        if pinned is not None:
            self._pinned[mountpoint] = pinned
        seconds = time.monotonic() - start
        log.debug("layer %s: EROFS image of %d bytes mounted in %.3fs", layer.digest, len(image), seconds)

    def _pin(self, image: Path) -> system.LockedPages | None:
        try:
            return system.LockedPages(image)
        except OSError as exc:  # performance only: the kernel reads the image from the disk when it must
            if not self._pin_warned:
                self._pin_warned = True
                log.warning("EROFS layer metadata is not locked in memory (%s): cold lookups read the disk",
                            os.strerror(exc.errno or 0))  # fmt: skip
            return None

    async def check(self, mountpoint: Path) -> None:
        served = self._served.get(mountpoint)
        if served is None:
            raise Unavailable(f"{mountpoint} is not served by this process")
        _, opened = served
        if opened.error:
            raise Unavailable(f"layer {opened.digest} failed: {opened.error}")

    async def unmount(self, mountpoint: Path, *, discard: bool = False) -> None:
        await asyncio.to_thread(system.unmount_all, mountpoint)
        pinned = self._pinned.pop(mountpoint, None)
        if pinned is not None:
            pinned.close()
        served = self._served.pop(mountpoint, None)
        if served is None:
            return
        name, opened = served
        self._lazy.remove_layer(name)
        await self._release(opened, discard=discard)

    async def _release(self, opened: Layer, *, discard: bool = False) -> None:
        if await self._resolver.release(opened, discard=discard):
            self.load_order.layer_closed(opened)  # its replay, if still queued, would only fail from here on

    async def restored(self) -> None:
        """The snapshotter has mounted every remote snapshot it could again (the daemon's start).

        A FUSE session left by the previous process is adopted here at the latest, and requests for
        layers that did not come back stop waiting (they fail with ENOENT).
        """
        if read_record(self._lazy.mountpoint) is not None:
            await self._start()
        else:
            # a fresh daemon mounts FUSE while it waits for its first pull, not during it (about 0.1 s of the
            # first layer's mount); a failure here is only logged: the first lazy mount tries again and reports its own
            self._warming = asyncio.ensure_future(self._warm())
        self._lazy.layers_restored()

    async def _warm(self) -> None:
        try:
            await self._start()
        except Exception as exc:
            log.warning("FUSE not mounted at start (the first lazy mount tries again): %s", exc)

    async def aclose(self) -> None:
        """Stop serving. While remote snapshots are still mounted (SIGTERM), the FUSE session and the
        bind mounts stay for the next process, which adopts them: running containers keep reading, their
        requests wait in the kernel meanwhile. Once none is (SIGINT unmounted them), the mount goes."""
        if self._warming is not None:
            await asyncio.wait([self._warming])  # a start half done would leave the mount behind
        keep = bool(self._served)
        self._served.clear()
        for pinned in self._pinned.values():  # kept mounts read their images from the disk again
            pinned.close()
        self._pinned.clear()
        if keep:
            # first: requests being answered must finish before the layers' readers close
            await self._lazy.aclose(keep=True)
        await self.load_order.aclose()
        await self._resolver.aclose()
        await self._background.aclose()
        await self._lazy.aclose()


class MeteredBlob:
    """A ``BlobReader`` that reports each range request's latency as ``remote_registry_get``."""

    def __init__(self, blob: BlobReader, layer: str, metrics: fm.FsMetrics) -> None:
        self._blob = blob
        self._layer = layer
        self._metrics = metrics

    @property
    def size(self) -> int:
        return self._blob.size

    async def read_at(self, offset: int, length: int) -> bytes:
        start = time.monotonic()
        data = await self._blob.read_at(offset, length)
        self._metrics.observe(fm.OP_REMOTE_REGISTRY_GET, self._layer, time.monotonic() - start)
        return data

    async def refresh(self) -> None:
        await self._blob.refresh()


async def _settle(task: asyncio.Future[None]) -> None:
    """Wait for ``task`` after the work beside it failed; its own failure is logged, not raised over that one."""
    try:
        await task
    except Exception as exc:
        log.warning("FUSE mount start failed too: %s", exc)


def _last_lazy_layer(layer: RemoteLayer) -> str:
    """The image's topmost layer that its SOCI index gives a zTOC (mounted last by a pull)."""
    indexed = [d.digest for d in layer.manifest.layers or () if layer.index.ztoc_for_layer(d.digest) is not None]
    return indexed[-1] if indexed else ""

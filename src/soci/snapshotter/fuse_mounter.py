"""``FuseLayerMounter``: remote snapshots served lazily by ``soci.fs``.

pyfuse3 allows one filesystem per process, so the daemon has one FUSE mount
(``<root>/soci/fuse``) with a directory per layer; each remote snapshot's ``fs`` directory is a
read-only bind mount of its layer's directory. Every system call on those paths runs in a worker
thread: the FUSE requests it causes are answered by this same event loop.

Load it with ``SOCI_SNAPSHOTTER_LAYER_MOUNTER=soci.snapshotter.fuse_mounter:factory`` (or make
``soci.daemon.server.default_layer_mounter`` return it).
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from soci.config import Config
from soci.errors import Unavailable
from soci.fs.background import BackgroundFetcher
from soci.fs.layer import Layer, LayerRequest, LayerResolver
from soci.fs.mount import LazyMount
from soci.fs.options import (
    BackgroundFetchOptions,
    BlobOptions,
    DirectoryCacheOptions,
    FsOptions,
    FuseOptions,
    PrefetchOptions,
)
from soci.registry import RemoteBlob
from soci.snapshotter import system
from soci.snapshotter.remote import RemoteLayer

log = logging.getLogger(__name__)


class FuseLayerMounter:
    """``LayerMounter`` on the lazy filesystem; ``root`` is the daemon root."""

    def __init__(self, root: Path, options: FsOptions | None = None, *, userxattr: bool = False) -> None:
        self.options = options or FsOptions()
        self._userxattr = userxattr
        self._lazy = LazyMount(root / "soci" / "fuse", self.options.fuse)
        self._background = BackgroundFetcher(self.options.background_fetch)
        self._resolver = LayerResolver(root, self.options, background=self._background)
        self._served: dict[Path, tuple[str, Layer]] = {}
        self._start_lock = asyncio.Lock()

    async def _start(self) -> None:
        async with self._start_lock:
            if not self._lazy.mounted:
                await self._lazy.start()
                self._background.start()

    async def mount(self, mountpoint: Path, layer: RemoteLayer) -> None:
        await self._start()
        request = LayerRequest(
            layer_digest=layer.layer.digest,
            ztoc_digest=layer.ztoc_descriptor.digest,
            ztoc=layer.ztoc,
            blob=RemoteBlob(layer.client, layer.repo, layer.layer.digest, layer.layer.size),
            layer_size=layer.layer.size,
            disable_xattrs=layer.disable_xattrs,
            userxattr=self._userxattr,
            image_ref=layer.source.image_ref,
        )
        opened = await self._resolver.acquire(request)
        name = f"snapshot-{mountpoint.parent.name}"  # one directory per snapshot (its id)
        try:
            source = self._lazy.add_layer(name, opened)
            try:
                await asyncio.to_thread(system.bind_mount, source, mountpoint, read_only=True)
            except BaseException:
                self._lazy.remove_layer(name)
                raise
        except BaseException:
            await self._resolver.release(opened)
            raise
        self._served[mountpoint] = (name, opened)

    async def check(self, mountpoint: Path) -> None:
        served = self._served.get(mountpoint)
        if served is None:
            raise Unavailable(f"{mountpoint} is not served by this process")
        _, opened = served
        if opened.error:
            raise Unavailable(f"layer {opened.digest} failed: {opened.error}")

    async def unmount(self, mountpoint: Path) -> None:
        await asyncio.to_thread(system.unmount_all, mountpoint)
        served = self._served.pop(mountpoint, None)
        if served is None:
            return
        name, opened = served
        self._lazy.remove_layer(name)
        await self._resolver.release(opened)

    async def aclose(self) -> None:
        """Stop serving: the bind mounts of remote snapshots die with the FUSE mount; the next start
        of the daemon finds them dead and mounts them again."""
        for mountpoint in list(self._served):
            await asyncio.to_thread(system.unmount_all, mountpoint)
        self._served.clear()
        await self._resolver.aclose()
        await self._background.aclose()
        await self._lazy.aclose()


def fs_options(config: Config) -> FsOptions:
    """The lazy filesystem's options from the daemon config (both use upstream's keys and defaults)."""
    bg = config.background_fetch
    return FsOptions(
        fuse=FuseOptions(
            attr_timeout=config.fuse.attr_timeout,
            entry_timeout=config.fuse.entry_timeout,
            negative_timeout=config.fuse.negative_timeout,
            log_fuse_operations=config.fuse.log_fuse_operations,
        ),
        background_fetch=BackgroundFetchOptions(
            disable=bg.disable,
            silence_period_msec=bg.silence_period_msec,
            fetch_period_msec=bg.fetch_period_msec,
            max_queue_size=bg.max_queue_size,
            drop_policy="oldest" if bg.drop_policy == "oldest" else "newest",
            emit_metric_period_sec=bg.emit_metric_period_sec,
        ),
        blob=BlobOptions(
            valid_interval=config.blob.valid_interval,
            fetching_timeout_sec=config.blob.fetching_timeout_sec,
            max_retries=config.blob.max_retries,
            min_wait_msec=config.blob.min_wait_msec,
            max_wait_msec=config.blob.max_wait_msec,
            check_always=config.blob.check_always,
            force_single_range_mode=config.blob.force_single_range_mode,
            max_span_verification_retries=config.blob.max_span_verification_retries,
        ),
        directory_cache=DirectoryCacheOptions(
            max_lru_cache_entry=config.directory_cache.max_lru_cache_entry or 10,
            max_cache_fds=config.directory_cache.max_cache_fds or 10,
            sync_add=config.directory_cache.sync_add,
            direct=config.directory_cache.direct,
        ),
        prefetch=PrefetchOptions(enable=config.prefetch.enable, max_concurrency=config.prefetch.max_concurrency),
        filesystem_cache_type=config.filesystem_cache_type,
        disable_verification=config.disable_verification,
        max_concurrency=config.max_concurrency,
        mount_timeout_sec=config.mount_timeout_sec,
        debug=config.debug,
    )


def factory(config: Config, root: Path) -> FuseLayerMounter:
    return FuseLayerMounter(root, fs_options(config), userxattr=system.needs_userxattr())

"""The lazy filesystems the daemon can put behind remote snapshots: ``MODULE:FACTORY`` values for
``SOCI_SNAPSHOTTER_LAYER_MOUNTER``; each factory takes the config and the daemon root."""

from __future__ import annotations

from pathlib import Path

from soci import system
from soci.config import Config
from soci.fs.options import (
    BackgroundFetchOptions,
    BlobOptions,
    DirectoryCacheOptions,
    FsOptions,
    FuseOptions,
    PrefetchOptions,
)
from soci.loadorder.select import Rule
from soci.loadorder.service import LoadOrderOptions
from soci.snapshotter.fuse_mounter import FuseLayerMounter
from soci.snapshotter.remote import LayerMounter, UnavailableMounter


def fs_options(config: Config) -> FsOptions:
    """The lazy filesystem's options from the daemon config (both use upstream's keys and defaults)."""
    bg = config.background_fetch
    return FsOptions(
        fuse=FuseOptions(
            attr_timeout=config.fuse.attr_timeout,
            entry_timeout=config.fuse.entry_timeout,
            negative_timeout=config.fuse.negative_timeout,
            log_fuse_operations=config.fuse.log_fuse_operations,
            metadata=config.fuse.metadata,  # type: ignore[arg-type]  # checked by FuseOptions
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
            max_size_bytes=config.directory_cache.max_size_bytes,
        ),
        prefetch=PrefetchOptions(enable=config.prefetch.enable, max_concurrency=config.prefetch.max_concurrency),
        filesystem_cache_type=config.filesystem_cache_type,
        disable_verification=config.disable_verification,
        max_concurrency=config.max_concurrency,
        mount_timeout_sec=config.mount_timeout_sec,
        debug=config.debug,
        neighbour_spans=config.blob.neighbour_spans,
    )


def load_order_options(config: Config) -> LoadOrderOptions:
    lo = config.load_order
    return LoadOrderOptions(
        record=lo.record,
        default=lo.default,
        rules=tuple(Rule(r.name, r.image, r.namespace) for r in lo.rules),
        max_concurrency=max(1, lo.max_concurrency),
    )


def fuse(config: Config, root: Path) -> LayerMounter:
    """The lazy filesystem (``soci.fs``) behind remote snapshots."""
    return FuseLayerMounter(
        root, fs_options(config), userxattr=system.needs_userxattr(), load_order=load_order_options(config)
    )


def unavailable(config: Config, root: Path) -> LayerMounter:
    """No lazy filesystem: remote mounts fail, so indexed layers are unpacked locally by the snapshotter."""
    return UnavailableMounter()

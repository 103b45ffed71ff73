"""Options of the lazy filesystem, named as upstream's ``config.toml`` keys (soci-format.md §6.6).

Defaults are upstream's effective values (except the ``[fuse]`` timeouts: see ``IMMUTABLE_CACHE_SEC``), so an
empty config section and these defaults mean the same.
The daemon's config loader fills them; ``soci mount`` uses them directly.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final, Literal

from soci.errors import InvalidArgument

DropPolicy = Literal["newest", "oldest"]
LayerMetadata = Literal["auto", "erofs", "fuse"]
METADATA_CHOICES: Final = ("auto", "erofs", "fuse")

IMMUTABLE_CACHE_SEC: Final = 3600
"""Kernel cache lifetime of layer metadata. Upstream's default is 1 s, but a layer never changes while mounted,
and a 1 s lifetime sends every lookup and getattr of a starting container back to Python again and again."""


@dataclass(frozen=True, slots=True)
class FuseOptions:
    """``[fuse]``: kernel cache lifetimes in seconds for layer contents (layer data never changes)."""

    attr_timeout: float = IMMUTABLE_CACHE_SEC
    entry_timeout: float = IMMUTABLE_CACHE_SEC
    negative_timeout: float = IMMUTABLE_CACHE_SEC
    log_fuse_operations: bool = False
    metadata: LayerMetadata = "auto"
    """Who answers metadata requests of a layer: "erofs" (the kernel, from an EROFS image over the layer's tar
    on this FUSE mount), "fuse" (this process, the FUSE tree), "auto" (EROFS when the kernel mounts it)."""

    def __post_init__(self) -> None:
        if self.metadata not in METADATA_CHOICES:
            raise InvalidArgument(f"fuse.metadata {self.metadata!r}: want auto, erofs or fuse")


@dataclass(frozen=True, slots=True)
class BackgroundFetchOptions:
    """``[background_fetch]``: fetch every span of mounted layers slowly, after a quiet period."""

    disable: bool = False
    silence_period_msec: int = 30_000
    fetch_period_msec: int = 500
    max_queue_size: int = 300  # -1: unlimited
    drop_policy: DropPolicy = "newest"
    emit_metric_period_sec: int = 10

    def __post_init__(self) -> None:
        if self.drop_policy not in ("newest", "oldest"):
            raise InvalidArgument(f"background_fetch.drop_policy {self.drop_policy!r}: want newest or oldest")


@dataclass(frozen=True, slots=True)
class BlobOptions:
    """``[blob]``: how layer blobs are read from the registry."""

    valid_interval: int = 60
    fetching_timeout_sec: int = 300
    max_retries: int = 8
    min_wait_msec: int = 30
    max_wait_msec: int = 300_000
    check_always: bool = False
    force_single_range_mode: bool = False
    max_span_verification_retries: int = 0  # extra fetches after a digest mismatch; < 0 means 3

    @property
    def span_verification_retries(self) -> int:
        return 3 if self.max_span_verification_retries < 0 else self.max_span_verification_retries


@dataclass(frozen=True, slots=True)
class DirectoryCacheOptions:
    """``[directory_cache]``: the on-disk span cache."""

    max_lru_cache_entry: int = 10
    max_cache_fds: int = 10
    sync_add: bool = False
    direct: bool = True
    max_size_bytes: int = 0  # the whole spancache directory; 0: soci.cache.budget.DEFAULT_MAX_SIZE_BYTES


@dataclass(frozen=True, slots=True)
class PrefetchOptions:
    """``[prefetch]``: fetch the spans listed in prefetch artifacts before a layer is reported ready."""

    enable: bool = False
    max_concurrency: int = 0  # 0 (or < 0): unlimited


@dataclass(frozen=True, slots=True)
class FsOptions:
    """Everything the lazy filesystem reads from the daemon's configuration."""

    fuse: FuseOptions = field(default_factory=FuseOptions)
    background_fetch: BackgroundFetchOptions = field(default_factory=BackgroundFetchOptions)
    blob: BlobOptions = field(default_factory=BlobOptions)
    directory_cache: DirectoryCacheOptions = field(default_factory=DirectoryCacheOptions)
    prefetch: PrefetchOptions = field(default_factory=PrefetchOptions)
    filesystem_cache_type: str = ""  # "memory": spans cached in memory; anything else: on disk
    disable_verification: bool = False  # skips the per-file tar header check only; span digests are always checked
    max_concurrency: int = 100  # span fetches in flight across all layers; < 0: unlimited
    mount_timeout_sec: int = 30
    debug: bool = False
    readahead_spans: int = 2
    """Not upstream: spans fetched ahead of a sequential reader, beyond the span it reads."""
    neighbour_spans: int = 1
    """Not upstream: spans fetched after those a read had to fetch, when the reader's file ends in them (the next
    files of the tar are often read next); not with a load order document, which says what is read."""
    recent_spans_bytes: int = 32 << 20
    """Not upstream: memory for recently inflated spans, shared by all layers (sequential readers hit it)."""

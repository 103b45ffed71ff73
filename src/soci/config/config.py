"""The daemon's TOML configuration: upstream's keys, defaults and "0 means default" rules.

Attribute names are the TOML keys (``[http]`` keeps upstream's CamelCase), so an upstream
``config.toml`` loads unchanged; dataclass field order is the order ``config dump`` writes.
Unknown keys are ignored, as upstream ignores them (its own docs list keys its code does not have, such as
``[content_store] namespace``), but each is logged once as a warning naming it, so a typo is visible.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from soci.errors import InvalidArgument, NotFound
from soci.formats import toml
from soci.fs.options import IMMUTABLE_CACHE_SEC, METADATA_CHOICES
from soci.paths import DEFAULT_CONTAINERD_ADDRESS

UNBOUNDED: Final = -1

log = logging.getLogger(__name__)


@dataclass
class HttpConfig:
    """``[http]``: the registry HTTP client."""

    DialTimeoutMsec: int = 3_000
    ResponseHeaderTimeoutMsec: int = 3_000
    RequestTimeoutMsec: int = 300_000
    MaxRetries: int = 8
    MinWaitMsec: int = 30
    MaxWaitMsec: int = 300_000


@dataclass
class BlobConfig:
    """``[blob]``: lazily fetched layer blobs; retry settings inherit ``[http]`` when 0."""

    valid_interval: int = 60
    fetching_timeout_sec: int = 300
    max_retries: int = 0
    min_wait_msec: int = 0
    max_wait_msec: int = 0
    check_always: bool = False
    force_single_range_mode: bool = False
    max_span_verification_retries: int = 0
    neighbour_spans: int = 1  # ours: spans fetched after a miss (soci.fs.options.FsOptions.neighbour_spans); 0: off


@dataclass
class DirectoryCacheConfig:
    max_lru_cache_entry: int = 0
    max_cache_fds: int = 0
    sync_add: bool = False
    direct: bool = True
    max_size_bytes: int = 0  # not upstream's (it has no limit): the whole spancache; 0 means 10 GiB


@dataclass
class FuseConfig:
    # not upstream's 1 s: layers never change while mounted (soci.fs.options.IMMUTABLE_CACHE_SEC)
    attr_timeout: int = IMMUTABLE_CACHE_SEC
    entry_timeout: int = IMMUTABLE_CACHE_SEC
    negative_timeout: int = IMMUTABLE_CACHE_SEC
    log_fuse_operations: bool = False
    metadata: str = "auto"  # ours: "auto", "erofs" or "fuse" (soci.fs.options.FuseOptions.metadata)


@dataclass
class BackgroundFetchConfig:
    disable: bool = False
    silence_period_msec: int = 30_000
    fetch_period_msec: int = 500
    max_queue_size: int = 300
    drop_policy: str = "newest"
    emit_metric_period_sec: int = 10


@dataclass
class ContentStoreConfig:
    type: str = "soci"
    containerd_address: str = DEFAULT_CONTAINERD_ADDRESS


@dataclass
class PrefetchConfig:
    enable: bool = False
    max_concurrency: int = 0


@dataclass
class PullModeV1:
    enable: bool = False


@dataclass
class PullModeV2:
    enable: bool = True


@dataclass
class DecompressStream:
    path: str = ""
    args: list[str] = field(default_factory=list)


@dataclass
class ParallelPullUnpack:
    max_concurrent_downloads: int = UNBOUNDED
    max_concurrent_downloads_per_image: int = 3
    concurrent_download_chunk_size: str = ""
    max_concurrent_unpacks: int = UNBOUNDED
    max_concurrent_unpacks_per_image: int = 1
    discard_unpacked_layers: bool = False
    enable: bool = False
    experimental_parallel_pull_as_fallback: bool = False
    decompress_streams: dict[str, DecompressStream] = field(default_factory=dict)

    @property
    def chunk_size_bytes(self) -> int:
        """``concurrent_download_chunk_size`` in bytes (-1: whole layer)."""
        return parse_size(self.concurrent_download_chunk_size)


@dataclass
class PullModes:
    soci_v1: PullModeV1 = field(default_factory=PullModeV1)
    soci_v2: PullModeV2 = field(default_factory=PullModeV2)
    parallel_pull_unpack: ParallelPullUnpack = field(default_factory=ParallelPullUnpack)


@dataclass
class KubeconfigKeychainConfig:
    enable_keychain: bool = False
    kubeconfig_path: str = ""


@dataclass
class CriKeychainConfig:
    enable_keychain: bool = False
    image_service_path: str = DEFAULT_CONTAINERD_ADDRESS


@dataclass
class MirrorConfig:
    host: str = ""
    insecure: bool = False
    request_timeout_sec: int = 0


@dataclass
class HostConfig:
    mirrors: list[MirrorConfig] = field(default_factory=list)


@dataclass
class ResolverConfig:
    auth_client_ttl_sec: int = 3600
    enable_auth_client_sharing: bool = False
    host: dict[str, HostConfig] = field(default_factory=dict)


@dataclass
class SnapshotterConfig:
    min_layer_size: int = 0
    allow_invalid_mounts_on_restart: bool = False


@dataclass
class LoadOrderRuleConfig:
    """One ``[[load_order.rules]]`` entry: images matching ``image`` (a glob on the reference; empty: all) in
    ``namespace`` (empty: all) replay the load order ``name`` (``none``: no replay)."""

    name: str = ""
    image: str = ""
    namespace: str = ""


@dataclass
class LoadOrderConfig:
    """``[load_order]`` (ours, no upstream equivalent): workload load order documents."""

    record: bool = False
    default: str = ""
    max_concurrency: int = 4
    rules: list[LoadOrderRuleConfig] = field(default_factory=list)


@dataclass
class Config:
    """The whole file; top-level keys first, then the tables, in upstream's order."""

    http_cache_type: str = ""
    filesystem_cache_type: str = ""
    resolve_result_entry: int = 0
    debug: bool = False
    disable_verification: bool = False
    max_concurrency: int = 100
    mount_timeout_sec: int = 30
    fuse_metrics_emit_wait_duration_sec: int = 60
    metrics_address: str = ""
    metrics_network: str = "tcp"
    no_prometheus: bool = False
    debug_address: str = ""
    metadata_store: str = "db"
    metadata_db_no_sync: bool = False
    metadata_insertion_chunk_size: int = 0
    skip_check_snapshotter_supported: bool = False
    http: HttpConfig = field(default_factory=HttpConfig)
    blob: BlobConfig = field(default_factory=BlobConfig)
    directory_cache: DirectoryCacheConfig = field(default_factory=DirectoryCacheConfig)
    fuse: FuseConfig = field(default_factory=FuseConfig)
    background_fetch: BackgroundFetchConfig = field(default_factory=BackgroundFetchConfig)
    content_store: ContentStoreConfig = field(default_factory=ContentStoreConfig)
    prefetch: PrefetchConfig = field(default_factory=PrefetchConfig)
    pull_modes: PullModes = field(default_factory=PullModes)
    kubeconfig_keychain: KubeconfigKeychainConfig = field(default_factory=KubeconfigKeychainConfig)
    cri_keychain: CriKeychainConfig = field(default_factory=CriKeychainConfig)
    resolver: ResolverConfig = field(default_factory=ResolverConfig)
    snapshotter: SnapshotterConfig = field(default_factory=SnapshotterConfig)
    load_order: LoadOrderConfig = field(default_factory=LoadOrderConfig)


def default_config() -> Config:
    """Upstream's effective defaults (what ``config default`` prints)."""
    return normalize(Config())


def load_config(path: Path, *, required: bool = True) -> Config:
    """Read ``path``; a missing file is the default config when not ``required``.

    Raises:
        NotFound: ``required`` and the file does not exist.
        InvalidArgument: the TOML is malformed, a value has the wrong type or is invalid (unknown keys are
            logged and ignored).
    """
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        if required:
            raise NotFound(f"config file {path} does not exist") from exc
        return default_config()
    except OSError as exc:
        raise InvalidArgument(f"cannot read config file {path}: {exc.strerror}") from exc
    except UnicodeDecodeError as exc:
        raise InvalidArgument(f"config file {path} is not UTF-8: {exc.reason} at byte {exc.start}") from None
    return parse_config(text, str(path))


def parse_config(text: str, where: str = "config") -> Config:
    document = toml.loads(text, where)
    unknown: list[str] = []
    config = _decode(Config, document, where, "", unknown)
    for key in unknown:
        log.warning("%s: ignoring unknown key %s", where, key)
    return normalize(config, where)


def normalize(config: Config, where: str = "config") -> Config:
    """Apply upstream's parse step: zeros become defaults, dependent values are derived, choices checked."""
    if not config.metrics_network:
        config.metrics_network = "tcp"
    if config.metrics_network not in ("tcp", "unix"):
        raise InvalidArgument(f"{where}: metrics_network must be 'tcp' or 'unix', not {config.metrics_network!r}")
    if config.fuse.metadata not in METADATA_CHOICES:
        raise InvalidArgument(f"{where}: [fuse] metadata must be auto, erofs or fuse, not {config.fuse.metadata!r}")
    if not config.metadata_store:
        config.metadata_store = "db"
    if config.metadata_store not in ("db", "db-multi"):
        raise InvalidArgument(f"{where}: metadata_store must be 'db' or 'db-multi', not {config.metadata_store!r}")
    if config.mount_timeout_sec == 0:
        config.mount_timeout_sec = 30
    if config.fuse_metrics_emit_wait_duration_sec == 0:
        config.fuse_metrics_emit_wait_duration_sec = 60
    if config.max_concurrency == 0:
        config.max_concurrency = 100
    elif config.max_concurrency < 0:
        config.max_concurrency = 0  # unlimited
    if config.prefetch.max_concurrency < 0:
        config.prefetch.max_concurrency = 0
    if config.directory_cache.max_size_bytes < 0:
        raise InvalidArgument(f"{where}: [directory_cache] max_size_bytes must be >= 0 (0: 10 GiB), "
                              f"not {config.directory_cache.max_size_bytes}")  # fmt: skip
    fuse = config.fuse
    fuse.attr_timeout = fuse.attr_timeout or IMMUTABLE_CACHE_SEC
    fuse.entry_timeout = fuse.entry_timeout or IMMUTABLE_CACHE_SEC
    fuse.negative_timeout = fuse.negative_timeout or IMMUTABLE_CACHE_SEC
    bg = config.background_fetch
    bg.fetch_period_msec = bg.fetch_period_msec or 500
    bg.silence_period_msec = bg.silence_period_msec or 30_000
    bg.max_queue_size = bg.max_queue_size or 300
    bg.emit_metric_period_sec = bg.emit_metric_period_sec or 10
    bg.drop_policy = bg.drop_policy or "newest"
    if bg.drop_policy not in ("newest", "oldest"):
        raise InvalidArgument(f"{where}: [background_fetch] drop_policy must be 'newest' or 'oldest'")
    http = config.http
    http.DialTimeoutMsec = http.DialTimeoutMsec or 3_000
    http.ResponseHeaderTimeoutMsec = http.ResponseHeaderTimeoutMsec or 3_000
    http.RequestTimeoutMsec = http.RequestTimeoutMsec or 300_000
    http.MaxRetries = http.MaxRetries or 8
    http.MinWaitMsec = http.MinWaitMsec or 30
    http.MaxWaitMsec = http.MaxWaitMsec or 300_000
    blob = config.blob
    blob.valid_interval = blob.valid_interval or 60
    if blob.check_always:
        blob.valid_interval = 0
    blob.fetching_timeout_sec = blob.fetching_timeout_sec or 300
    blob.max_retries = blob.max_retries or http.MaxRetries
    blob.min_wait_msec = blob.min_wait_msec or http.MinWaitMsec
    blob.max_wait_msec = blob.max_wait_msec or http.MaxWaitMsec
    config.content_store.type = config.content_store.type or "soci"
    if config.content_store.type not in ("soci", "containerd"):
        raise InvalidArgument(f"{where}: [content_store] type must be 'soci' or 'containerd'")
    address = config.content_store.containerd_address
    config.content_store.containerd_address = address.removeprefix("unix://") or DEFAULT_CONTAINERD_ADDRESS
    config.cri_keychain.image_service_path = config.cri_keychain.image_service_path or DEFAULT_CONTAINERD_ADDRESS
    if config.resolver.auth_client_ttl_sec == 0:
        config.resolver.auth_client_ttl_sec = 3600
    config.load_order.max_concurrency = config.load_order.max_concurrency or LoadOrderConfig.max_concurrency
    for i, rule in enumerate(config.load_order.rules):
        if not rule.name:
            raise InvalidArgument(f"{where}: load_order.rules[{i}] needs a name")
    parallel = config.pull_modes.parallel_pull_unpack
    try:
        parallel.chunk_size_bytes  # noqa: B018 - validates the size grammar
    except InvalidArgument as exc:
        raise InvalidArgument(f"{where}: [pull_modes.parallel_pull_unpack] {exc}") from exc
    for name, stream in parallel.decompress_streams.items():
        if not os.path.isabs(stream.path) or not os.access(stream.path, os.X_OK):
            raise InvalidArgument(
                f"{where}: decompress_streams.{name}.path must be an absolute path to an executable, "
                f"not {stream.path!r}"
            )
    return config


IGNORED_KEYS: Final = {
    "http_cache_type": "unused upstream too",
    "resolve_result_entry": "layers are cached while mounted",
    "debug": "no go-fuse debug log; use --log-level debug and [fuse] log_fuse_operations",
    "fuse_metrics_emit_wait_duration_sec": "no per-image FUSE operation counts",
    "metadata_store": "inode tables are kept in memory",
    "metadata_db_no_sync": "inode tables are kept in memory",
    "metadata_insertion_chunk_size": "inode tables are kept in memory",
    "blob.valid_interval": "blobs are not re-checked in the background",
    "blob.check_always": "blobs are not re-checked in the background",
    "blob.force_single_range_mode": "every request is a single range already",
    "directory_cache.sync_add": "cache writes never block a read",
    "directory_cache.direct": "span files are always read directly",
    "background_fetch.emit_metric_period_sec": "the metrics are read at each scrape",
    "resolver.auth_client_ttl_sec": "only [cri_keychain] uses it, as the lifetime of pull credentials, and it is off",
    "resolver.enable_auth_client_sharing": "auth clients are per registry host",
}
"""Dotted keys this daemon accepts (so upstream files load) but does not act on, and why."""


def ignored_settings(config: Config) -> list[str]:
    """The ``IGNORED_KEYS`` set to something other than their default, each with the reason it has no effect."""
    defaults = default_config()
    found = []
    for dotted, why in IGNORED_KEYS.items():
        if dotted == "resolver.auth_client_ttl_sec" and config.cri_keychain.enable_keychain:
            continue  # the CRI keychain's credential lifetime
        value: Any = config
        default: Any = defaults
        for part in dotted.split("."):
            value, default = getattr(value, part), getattr(default, part)
        if value != default:
            found.append(f"{dotted} = {value!r} ({why})")
    for domain, host in config.resolver.host.items():
        if any(m.request_timeout_sec for m in host.mirrors):
            found.append(f'resolver.host."{domain}" mirrors request_timeout_sec (the [http] timeouts apply)')
    return found


_SIZE_RE: Final = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(gb|mb|kb|b)?\s*$", re.IGNORECASE)
_UNITS: Final = {"": 1, "b": 1, "kb": 1 << 10, "mb": 1 << 20, "gb": 1 << 30}


def parse_size(text: str) -> int:
    """``<number>[.<fraction>] [b|kb|mb|gb]`` (powers of 1024, any case); "" or 0 → -1 (unbounded)."""
    if not text:
        return UNBOUNDED
    match = _SIZE_RE.match(text)
    if match is None:
        raise InvalidArgument(f"invalid size {text!r}: want a number with an optional b, kb, mb or gb unit")
    size = int(float(match.group(1)) * _UNITS[(match.group(2) or "").lower()])
    return size or UNBOUNDED


# ---- decoding ------------------------------------------------------------------------------------------


def _decode(cls: type[Any], table: Any, where: str, section: str, unknown: list[str]) -> Any:
    """``cls`` from ``table``; keys ``cls`` does not have are appended to ``unknown`` (as "'key' in [section]")."""
    if not isinstance(table, dict):
        raise InvalidArgument(f"{where}: [{section}] must be a table")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    values: dict[str, Any] = {}
    for key, value in table.items():
        if key not in fields:
            unknown.append(f"{key!r} in [{section}]" if section else f"{key!r} at the top level")
            continue
        dotted = f"{section}.{key}" if section else key
        values[key] = _value(hints[key], value, where, dotted, unknown)
    return cls(**values)


def _value(hint: Any, value: Any, where: str, dotted: str, unknown: list[str]) -> Any:
    origin = typing.get_origin(hint)
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        return _decode(hint, value, where, dotted, unknown)
    if origin is dict:
        _, item_type = typing.get_args(hint)
        if not isinstance(value, dict):
            raise InvalidArgument(f"{where}: {dotted} must be a table")
        return {k: _value(item_type, v, where, f"{dotted}.{k}", unknown) for k, v in value.items()}
    if origin is list:
        (item_type,) = typing.get_args(hint)
        if not isinstance(value, list):
            raise InvalidArgument(f"{where}: {dotted} must be an array")
        return [_value(item_type, v, where, f"{dotted}[{i}]", unknown) for i, v in enumerate(value)]
    if origin in (types.UnionType, typing.Union):
        raise AssertionError(f"unsupported config type {hint}")
    expected = {bool: "a boolean", int: "an integer", str: "a string"}[hint]
    # bool is an int in Python; TOML keeps them apart and so do we
    if not isinstance(value, hint) or (hint is int and isinstance(value, bool)):
        raise InvalidArgument(f"{where}: {dotted} must be {expected}, not {value!r}")
    return value

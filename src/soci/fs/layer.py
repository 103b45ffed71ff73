"""A mounted layer (inode table + span manager + file reader) and the resolver that opens and shares them.

Opening a layer (upstream's ``fs/layer`` resolve): the zTOC is loaded into a packed inode table, its span
table and sizes are checked (soci-format.md §2.5), the bytes before the first span must parse as a gzip
header, a span manager is set up over the blob and the layer's span cache
(``<root>/soci/spancache/<zTOC digest hex>/``: the zTOC fixes every span's bytes, so its digest names them),
the spans listed by a prefetch artifact are loaded when prefetch is enabled, and the layer joins the
background fetcher.
"""

from __future__ import annotations

import asyncio
import ctypes
import json
import logging
import shutil
import struct
import zlib
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from soci.cache import DirectorySpanCache, FallbackNotice, FallbackSpanCache, MemorySpanCache, SpanCache
from soci.cache.budget import CacheBudget, effective_limit
from soci.errors import DataLoss, FormatError, SociError, Unavailable
from soci.formats.digest import digest_hex, parse_digest
from soci.formats.soci_index import PrefetchSpan
from soci.formats.zinfo import GzipZinfo, TarZinfo, zinfo_from_blob
from soci.fs import metrics as fm
from soci.fs.background import BackgroundFetcher
from soci.fs.blob import BlobReader
from soci.fs.options import FsOptions
from soci.fs.reader import FileReader
from soci.fs.spans import RecentSpans, SpanManager, SpanStatistics, check_span_table
from soci.fs.tree import LayerTree
from soci.fs.ztoc_reader import ZtocInfo, load_ztoc, read_ztoc_info, ztoc_without_windows
from soci.futures import mark_retrieved
from soci.registry.transport import retry_corrupt

log = logging.getLogger(__name__)

SPANCACHE_DIR = Path("soci") / "spancache"
GZIP_HEADER_KEY = "gzip-header"
_MEMORY_CACHE_BYTES = 256 << 20


@dataclass(frozen=True, slots=True)
class LayerRequest:
    """Everything needed to mount one layer lazily (one value, not nine arguments)."""

    layer_digest: str
    ztoc_digest: str
    ztoc: bytes = field(repr=False)
    blob: BlobReader
    layer_size: int | None = None
    disable_xattrs: bool = False
    userxattr: bool = False
    """Present opaque directories with ``user.overlay.opaque`` instead of ``trusted.overlay.opaque``."""
    prefetch: tuple[PrefetchSpan, ...] = ()
    image_ref: str = ""
    gzip_header: bytes | None = field(default=None, repr=False)
    """The blob's first ``gzip_header_length`` bytes if already fetched (beside the zTOC); still checked."""
    full_ztoc: Callable[[], Awaitable[bytes]] | None = field(default=None, repr=False)
    """Set when ``ztoc`` is the zTOC without its windows (a load order document's zTOC metadata): fetches the
    digest-verified zTOC, the first time a span must be inflated."""


def gzip_header_length(zinfo: GzipZinfo | TarZinfo) -> int:
    """Blob bytes before the first span that must parse as a gzip header (0: not a gzip layer)."""
    return zinfo.start_compressed_offset(0) if isinstance(zinfo, GzipZinfo) else 0


class Layer:
    """One lazily loaded layer; ``tree`` answers metadata, ``reader`` file contents."""

    def __init__(
        self,
        request: LayerRequest,
        info: ZtocInfo,
        tree: LayerTree,
        spans: SpanManager,
        reader: FileReader,
        cache: SpanCache,
        header_bytes: int,
    ) -> None:
        self.digest = request.layer_digest
        self.ztoc_digest = request.ztoc_digest
        self.size = request.blob.size
        self.info = info
        self.tree = tree
        self.spans = spans
        self.reader = reader
        self.cache = cache
        self.disable_xattrs = request.disable_xattrs
        self.opaque_xattr = b"user.overlay.opaque" if request.userxattr else b"trusted.overlay.opaque"
        self.error = ""
        self._header_bytes = header_bytes

    def record_error(self, exc: BaseException) -> None:
        self.error = str(exc)

    def statistics(self) -> SpanStatistics:
        return self.spans.statistics()

    def fetched_size(self) -> int:
        return min(self.size, self.spans.statistics().fetched_bytes + self._header_bytes)

    def state_json(self) -> bytes:
        """Upstream's per-layer state file: ``{"error"?, "digest", "size", "fetchedSize", "fetchedPercent"}``."""
        fetched = self.fetched_size()
        percent = fetched / self.size * 100.0 if self.size else 100.0
        parts = [f'"error":{_json_string(self.error)},'] if self.error else []
        parts.append(f'"digest":{_json_string(self.digest)},"size":{self.size},"fetchedSize":{fetched},')
        parts.append(f'"fetchedPercent":{_go_float(percent)}')
        return ("{" + "".join(parts) + "}").encode()

    async def aclose(self) -> None:
        await self.spans.aclose()
        self.cache.close()


class LayerResolver:
    """Opens layers and shares an open layer between mounts of the same layer and zTOC (refcounted).

    Args:
        root: the snapshotter root; span caches live under ``<root>/soci/spancache``.
        options: filesystem options.
        executor: threads for zTOC loading, hashing, inflation and cache I/O.
        background: the background fetcher layers join (None: no background fetch).
    """

    def __init__(
        self,
        root: Path,
        options: FsOptions | None = None,
        *,
        executor: Executor | None = None,
        background: BackgroundFetcher | None = None,
    ) -> None:
        self.root = Path(root)
        self.options = options or FsOptions()
        self._executor = executor
        self._background = background
        limit = self.options.max_concurrency
        self._limiter = asyncio.Semaphore(limit) if limit > 0 else None
        self._recent = RecentSpans(self.options.recent_spans_bytes)
        self._layers: dict[tuple[str, str], tuple[Layer, int]] = {}
        self._opening: dict[tuple[str, str], asyncio.Future[Layer]] = {}
        self.metrics: fm.FsMetrics = fm.NullFsMetrics()
        self.budget: CacheBudget | None = None
        if self.options.filesystem_cache_type != "memory":
            spancache = self.root / SPANCACHE_DIR
            # one limit for all layers' caches; counts (and trims) what earlier runs left
            limit = effective_limit(spancache, self.options.directory_cache.max_size_bytes)
            self.budget = CacheBudget(spancache, limit)
        self._fallback = FallbackNotice()

    async def acquire(self, request: LayerRequest) -> Layer:
        """The open layer for ``request`` (opening it if needed); pair with ``release``."""
        key = (request.layer_digest, request.ztoc_digest)
        while True:
            held = self._layers.get(key)
            if held is not None:
                self._layers[key] = (held[0], held[1] + 1)
                return held[0]
            pending = self._opening.get(key)
            if pending is None:
                break
            await asyncio.shield(pending)
        future: asyncio.Future[Layer] = asyncio.get_running_loop().create_future()
        future.add_done_callback(mark_retrieved)
        self._opening[key] = future
        try:
            layer = await self._open(request)
        except BaseException as exc:
            future.set_exception(exc if isinstance(exc, Exception) else SociError(f"opening layer cancelled: {exc}"))
            raise
        finally:
            del self._opening[key]
        self._layers[key] = (layer, 1)
        future.set_result(layer)
        return layer

    async def release(self, layer: Layer, *, discard: bool = False) -> bool:
        """Drop one holder; the last one closes the layer (True then). ``discard``: then also delete its span
        cache (its snapshot was removed; a later mount of the layer fetches the spans again)."""
        key = (layer.digest, layer.ztoc_digest)
        held = self._layers.get(key)
        if held is None or held[0] is not layer:
            return False
        if held[1] > 1:
            self._layers[key] = (layer, held[1] - 1)
            return False
        del self._layers[key]
        if self._background is not None:
            self._background.remove(layer.spans)
        await layer.aclose()
        if discard:
            await self._discard_cache(layer.ztoc_digest)
        return True

    async def _discard_cache(self, ztoc_digest: str) -> None:
        """Delete the span cache of a zTOC no open or opening layer uses (the directory is per zTOC)."""
        if any(z == ztoc_digest for _, z in (*self._layers, *self._opening)):
            return
        ztoc_hex = digest_hex(ztoc_digest)
        directory = self.root / SPANCACHE_DIR / ztoc_hex
        try:
            await asyncio.get_running_loop().run_in_executor(self._executor, shutil.rmtree, directory)
        except FileNotFoundError:
            pass
        except OSError as exc:  # read-only or otherwise: eviction reclaims it later
            log.warning("cannot delete span cache %s of a removed layer: %s", directory, exc)
        else:
            log.info("span cache %s of a removed layer deleted", directory)
        if self.budget is not None:
            self.budget.forget(ztoc_hex)

    async def aclose(self) -> None:
        layers = [layer for layer, _ in self._layers.values()]
        self._layers.clear()
        for layer in layers:
            if self._background is not None:
                self._background.remove(layer.spans)
            await layer.aclose()

    async def _open(self, request: LayerRequest) -> Layer:
        parse_digest(request.layer_digest)
        ztoc_hex = digest_hex(request.ztoc_digest)
        loop = asyncio.get_running_loop()
        start = loop.time()
        info = read_ztoc_info(request.ztoc)
        blob_size = request.blob.size
        if request.layer_size is not None and request.layer_size != blob_size:
            raise DataLoss(f"layer {request.layer_digest}: blob is {blob_size} bytes, descriptor says "
                           f"{request.layer_size}")  # fmt: skip
        if info.compressed_archive_size != blob_size:
            raise FormatError(f"layer {request.layer_digest}: zTOC describes a {info.compressed_archive_size}-byte "
                              f"blob, the blob is {blob_size} bytes")  # fmt: skip
        zinfo = zinfo_from_blob(info.compression_algorithm, info.checkpoints)
        check_span_table(zinfo, info.span_digests, info.max_span_id, compressed_size=info.compressed_archive_size,
                         uncompressed_size=info.uncompressed_archive_size)  # fmt: skip
        cache = self._cache(ztoc_hex)
        try:
            header_bytes = 0
            header: asyncio.Task[None] | None = None
            async with asyncio.timeout(self.options.mount_timeout_sec):
                header_bytes = gzip_header_length(zinfo)
                if header_bytes:
                    # the header's round trip overlaps the TOC's parse, most of a mount's CPU time
                    header = loop.create_task(self._check_gzip_header(request, cache, header_bytes))
                try:
                    info, tree = await loop.run_in_executor(self._executor, load_ztoc, request.ztoc)
                except BaseException:
                    if header is not None:
                        header.cancel()
                        await asyncio.gather(header, return_exceptions=True)
                    raise
                self.metrics.observe(fm.OP_INIT_METADATA_STORE, request.layer_digest, loop.time() - start)
                if header is not None:
                    await header
            errors: list[Layer] = []
            spans = SpanManager(
                zinfo, info.span_digests,
                compressed_size=info.compressed_archive_size, uncompressed_size=info.uncompressed_archive_size,
                blob=request.blob, cache=cache, executor=self._executor,
                retries=self.options.blob.span_verification_retries,
                fetch_timeout_sec=self.options.blob.fetching_timeout_sec, limiter=self._limiter,
                readahead_spans=self.options.readahead_spans, neighbour_spans=self.options.neighbour_spans,
                recent=self._recent, name=request.layer_digest,
                windows=None if request.full_ztoc is None else lambda: self._windows(request, errors),
            )  # fmt: skip
            reader = FileReader(tree, spans, verify=not self.options.disable_verification, name=request.layer_digest)
            layer = Layer(request, info, tree, spans, reader, cache, header_bytes)
            errors.append(layer)
            if self.options.prefetch.enable and request.prefetch:
                try:
                    async with asyncio.timeout(self.options.mount_timeout_sec):
                        await self._prefetch(layer, request.prefetch)
                except TimeoutError:
                    log.warning("prefetch of layer %s did not finish in %d s; going on without it",
                                request.layer_digest, self.options.mount_timeout_sec)  # fmt: skip
        except BaseException:
            cache.close()
            raise
        if self._background is not None:
            self._background.add(spans)
        _trim_heap()
        log.info("layer %s ready: %d inodes, %d spans", request.layer_digest, tree.inode_count, spans.span_count)
        return layer

    async def _windows(self, request: LayerRequest, layer: list[Layer]) -> GzipZinfo | TarZinfo:
        """The real checkpoint table of a layer mounted from zTOC metadata: its zTOC, which must equal the
        metadata but for the windows (DataLoss otherwise, recorded as the layer's error)."""
        assert request.full_ztoc is not None
        try:
            ztoc = await request.full_ztoc()
        except DataLoss as exc:  # corrupted on the way (after the client's own retries): worth another try later
            raise Unavailable(f"layer {request.layer_digest}: zTOC {request.ztoc_digest}: {exc}") from exc
        loop = asyncio.get_running_loop()
        if await loop.run_in_executor(self._executor, ztoc_without_windows, ztoc) != request.ztoc:
            mismatch = DataLoss(f"layer {request.layer_digest}: zTOC {request.ztoc_digest} is not the zTOC the load "
                                "order document's metadata was made from")  # fmt: skip
            log.error("%s", mismatch)
            for opened in layer:
                opened.record_error(mismatch)
            raise mismatch
        info = read_ztoc_info(ztoc)
        return zinfo_from_blob(info.compression_algorithm, info.checkpoints)

    def _cache(self, ztoc_hex: str) -> SpanCache:
        if self.options.filesystem_cache_type == "memory":
            return self._memory_cache()
        directory = self.root / SPANCACHE_DIR / ztoc_hex
        return FallbackSpanCache(
            directory,
            lambda: DirectorySpanCache(
                directory, max_open_files=max(1, self.options.directory_cache.max_cache_fds), budget=self.budget
            ),
            self._memory_cache(),
            self._fallback,
        )

    def _memory_cache(self) -> MemorySpanCache:
        return MemorySpanCache(max(1, self.options.directory_cache.max_lru_cache_entry) * 16, _MEMORY_CACHE_BYTES)

    async def _check_gzip_header(self, request: LayerRequest, cache: SpanCache, length: int) -> None:
        """The bytes before the first span must be a gzip header (cached, so a later mount needs no request)."""
        data = cache.get(GZIP_HEADER_KEY)
        if data is not None and len(data) == length:
            check_gzip_header(data, request.layer_digest)
            return
        given = request.gzip_header
        if given is not None and len(given) == length:
            try:
                check_gzip_header(given, request.layer_digest)
            except FormatError as exc:  # fetched ahead and corrupted on the way: fetch it again, as below
                log.info("%s", exc)
            else:
                cache.put(GZIP_HEADER_KEY, given)
                return

        async def fetch() -> bytes:
            answer = await request.blob.read_at(0, length)
            check_gzip_header(answer, request.layer_digest)
            return answer

        # the header has no digest of its own: a corrupted answer shows as a bad header and is fetched again
        data = await retry_corrupt(fetch, f"gzip header of layer {request.layer_digest}")
        cache.put(GZIP_HEADER_KEY, data)

    async def _prefetch(self, layer: Layer, ranges: Sequence[PrefetchSpan]) -> None:
        """Load the listed spans before the layer is ready; failures are logged, never fatal."""
        limit = self.options.prefetch.max_concurrency
        gate = asyncio.Semaphore(limit) if limit > 0 else None
        last = layer.spans.span_count - 1

        async def load(first: int, final: int) -> None:
            try:
                if gate is None:
                    await layer.spans.load(first, final)
                else:
                    async with gate:
                        await layer.spans.load(first, final)
            except SociError as exc:
                log.warning("prefetch of layer %s spans %d-%d failed: %s", layer.digest, first, final, exc)

        jobs: list[Any] = []
        for r in ranges:
            if r.start_span > last:
                log.warning("prefetch of layer %s: span %d does not exist", layer.digest, r.start_span)
                continue
            # one job per few spans, so max_concurrency bounds requests in flight
            for first in range(r.start_span, min(r.end_span, last) + 1, 8):
                jobs.append(load(first, min(first + 7, r.end_span, last)))
        await asyncio.gather(*jobs)


def _trim_heap() -> None:
    """Give the memory freed after building an inode table back to the system (glibc keeps it otherwise)."""
    global _malloc_trim
    if _malloc_trim is None:
        try:
            _malloc_trim = ctypes.CDLL("libc.so.6").malloc_trim
        except (OSError, AttributeError):
            _malloc_trim = False
    if _malloc_trim:
        _malloc_trim(0)


_malloc_trim: Any = None


def check_gzip_header(data: bytes, what: str = "layer") -> None:
    """FormatError unless ``data`` holds a complete gzip member header (as Go's ``gzip.NewReader`` reads it)."""
    if len(data) < 10 or data[0] != 0x1F or data[1] != 0x8B or data[2] != 8:
        raise FormatError(f"{what}: the bytes before the first span are not a gzip header")
    flags = data[3]
    pos = 10
    try:
        if flags & 0x04:  # FEXTRA
            (extra,) = struct.unpack_from("<H", data, pos)
            pos += 2 + extra
        for bit in (0x08, 0x10):  # FNAME, FCOMMENT: zero-terminated
            if flags & bit:
                pos = data.index(b"\0", pos) + 1
        if flags & 0x02:  # FHCRC: low 16 bits of the CRC-32 of the header so far
            (crc,) = struct.unpack_from("<H", data, pos)
            if crc != zlib.crc32(data[:pos]) & 0xFFFF:
                raise FormatError(f"{what}: gzip header checksum mismatch")
            pos += 2
    except (struct.error, ValueError):
        raise FormatError(f"{what}: the gzip header is truncated") from None
    if pos > len(data):
        raise FormatError(f"{what}: the gzip header is truncated")


def _json_string(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)


def _go_float(value: float) -> str:
    """Go's ``encoding/json`` form of a float64 in the range used here (shortest round trip, no ``.0``)."""
    if value == int(value):
        return str(int(value))
    return repr(value)

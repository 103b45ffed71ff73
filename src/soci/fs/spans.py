"""``SpanManager``: uncompressed layer bytes on demand, span by span, verified before use.

Read path for ``read(start, end)``: the spans covering the range are looked up in the state table.
Spans not yet fetched are fetched with one HTTP range request per run of adjacent spans (distant runs in
parallel, at most ``limiter`` requests in flight overall); every span's compressed bytes are checked
against its zTOC digest *before* they are inflated (a mismatch is fetched again up to ``retries`` times,
then the read fails with DataLoss); inflation runs in an executor thread; the uncompressed span goes to
the span cache, committed atomically, and later reads come from there. Concurrent readers of a span share
one fetch. A failed fetch puts the span back to UNREQUESTED, so a later read tries again.

States (upstream's ``fs/span-manager/span.go``), changed only through ``TRANSITIONS``::

    UNREQUESTED -> REQUESTED -> FETCHED (compressed bytes cached: background fetcher)
                             -> UNCOMPRESSED (uncompressed bytes cached: reads, prefetch)
                             -> UNREQUESTED (failure)
    FETCHED -> UNCOMPRESSED
"""

from __future__ import annotations

import asyncio
import bisect
import enum
import hashlib
import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any, Final, TypeVar

from soci.cache import SpanCache
from soci.codec.zran import inflate_at, inflate_span_into
from soci.errors import DataLoss, FailedPrecondition, FormatError, SociError, SpanDigestMismatch, Unavailable
from soci.formats.load_order import FetchPoint
from soci.formats.zinfo import GzipZinfo, TarZinfo
from soci.fs.blob import BlobReader
from soci.futures import mark_retrieved

log = logging.getLogger(__name__)

_T = TypeVar("_T")

SpanBytes = bytes | bytearray
"""An uncompressed span: freshly inflated spans stay in the buffer they were inflated into."""
_PointSource = FetchPoint | asyncio.Future[SpanBytes | None] | None
"""Where a fetch point's bytes are: the replay has yet to fetch it, in flight, or (None) in the cache."""

MAX_RUN_BYTES = 32 << 20
"""Adjacent spans are merged into one request up to this many compressed bytes."""
MAX_POINT_CHAIN = 8
"""Fetch points one read is served from at most (a read straddles two, rarely more)."""
CACHED_READAHEAD_SPANS = 4
CACHED_ADVISE_SPANS = 8


class SpanState(enum.Enum):
    UNREQUESTED = "unrequested"
    REQUESTED = "requested"
    FETCHED = "fetched"
    UNCOMPRESSED = "uncompressed"


TRANSITIONS: Final[Mapping[SpanState, frozenset[SpanState]]] = {
    SpanState.UNREQUESTED: frozenset({SpanState.REQUESTED}),
    SpanState.REQUESTED: frozenset({SpanState.UNREQUESTED, SpanState.FETCHED, SpanState.UNCOMPRESSED}),
    SpanState.FETCHED: frozenset({SpanState.UNCOMPRESSED}),
    SpanState.UNCOMPRESSED: frozenset(),
}


class RecentSpans:
    """Recently inflated spans kept in memory, shared by all layers under one byte budget (LRU).

    Sequential readers ask for a span in several FUSE requests; the first loads it, the others find it
    here instead of reading it back from the span cache.
    """

    def __init__(self, max_bytes: int = 32 << 20) -> None:
        self._max_bytes = max_bytes
        self._entries: OrderedDict[tuple[int, int], SpanBytes] = OrderedDict()
        self._bytes = 0

    def get(self, owner: int, span_id: int) -> SpanBytes | None:
        data = self._entries.get((owner, span_id))
        if data is not None:
            self._entries.move_to_end((owner, span_id))
        return data

    def put(self, owner: int, span_id: int, data: SpanBytes) -> None:
        if len(data) > self._max_bytes:
            return
        old = self._entries.pop((owner, span_id), None)
        if old is not None:
            self._bytes -= len(old)
        self._entries[(owner, span_id)] = data
        self._bytes += len(data)
        while self._bytes > self._max_bytes:
            _, evicted = self._entries.popitem(last=False)
            self._bytes -= len(evicted)

    def drop(self, owner: int) -> None:
        for key in [k for k in self._entries if k[0] == owner]:
            self._bytes -= len(self._entries.pop(key))


def uncompressed_key(span_id: int) -> str:
    return f"u{span_id}"


def compressed_key(span_id: int) -> str:
    return f"c{span_id}"


def piece_key(start: int, end: int) -> str:
    """Cache key of the uncompressed bytes ``[start, end)`` a fetch point delivered."""
    return f"p{start}-{end}"


@dataclass(frozen=True, slots=True)
class SpanStatistics:
    spans: int
    states: Mapping[SpanState, int]
    fetched_bytes: int
    """Compressed bytes of the spans that are FETCHED or UNCOMPRESSED (upstream's FetchedSize)."""
    requests: int
    """Range requests sent to the blob."""
    requested_bytes: int
    verification_failures: int
    fetch_points: int = 0
    """Fetch points loaded (their bytes are in requested_bytes too)."""
    fetch_point_failures: int = 0
    """Fetch points rejected (their spans were loaded instead)."""


def check_span_table(zinfo: GzipZinfo | TarZinfo, span_digests: Sequence[str], max_span_id: int, *,
                     compressed_size: int, uncompressed_size: int) -> None:  # fmt: skip
    """Runtime integrity checks of a zTOC's span table (upstream's span manager ``New``, soci-format.md §2.5)."""
    count = len(zinfo)
    if max_span_id != count - 1 or len(span_digests) != count:
        raise FormatError(
            f"incorrect max span id: zTOC says {max_span_id} with {len(span_digests)} span digests, "
            f"checkpoints describe {count} spans"
        )
    for i in range(count - 1):
        if not (
            zinfo.start_compressed_offset(i) < zinfo.end_compressed_offset(i, compressed_size)
            and zinfo.start_uncompressed_offset(i) < zinfo.end_uncompressed_offset(i, uncompressed_size)
        ):
            raise FormatError(f"non-monotonic checkpoints: span {i} is empty or runs backwards")
    # the last span ends at the archive sizes: a checkpoint past them (a corrupt zTOC) would make a negative span
    last = count - 1
    if count and not (
        0 <= zinfo.start_compressed_offset(last) <= compressed_size
        and 0 <= zinfo.start_uncompressed_offset(last) <= uncompressed_size
    ):
        raise FormatError(f"checkpoints: span {last} starts beyond the archive sizes the zTOC gives")
    if compressed_size < 0 or uncompressed_size < 0:
        raise FormatError(f"zTOC archive sizes are negative: compressed {compressed_size}, "
                          f"uncompressed {uncompressed_size}")  # fmt: skip
    if isinstance(zinfo, TarZinfo) and uncompressed_size > compressed_size:
        raise FormatError(f"uncompressed layer: zTOC gives {uncompressed_size} bytes uncompressed but only "
                          f"{compressed_size} in the blob")  # fmt: skip
    # a read allocates (and inflates) one whole span: each must be within what its compressed bytes can hold
    # and near the span size the zTOC was built with, so a lying archive size cannot make reads allocate gigabytes
    for i in range(count):
        clen = zinfo.end_compressed_offset(i, compressed_size) - zinfo.start_compressed_offset(i)
        ulen = zinfo.end_uncompressed_offset(i, uncompressed_size) - zinfo.start_uncompressed_offset(i)
        bound = span_bound(zinfo, clen)
        if ulen > bound:
            raise FormatError(f"span {i}: zTOC gives {ulen} uncompressed bytes for {clen} compressed (at most "
                              f"{bound} possible): archive size {uncompressed_size} is not believable")  # fmt: skip


MAX_DEFLATE_RATIO: Final = 1032
"""DEFLATE's largest expansion (a 258-byte match in about two bits)."""
SPAN_SLACK_BYTES: Final = 64 << 20
"""A span ends at the first deflate block boundary after ``span_size``; blocks of any encoder stay far below this."""


def span_bound(zinfo: GzipZinfo | TarZinfo, compressed_length: int) -> int:
    """The most uncompressed bytes a span of ``compressed_length`` bytes may claim."""
    if isinstance(zinfo, TarZinfo):
        return compressed_length
    return min(compressed_length * MAX_DEFLATE_RATIO + 1024, max(zinfo.span_size, 0) + SPAN_SLACK_BYTES)


class SpanManager:
    """Span-level access to one layer.

    Args:
        zinfo: the layer's checkpoint table.
        span_digests: expected ``sha256:`` digest of each span's compressed bytes.
        compressed_size / uncompressed_size: the zTOC's archive sizes.
        blob: the remote layer blob.
        cache: where spans go (keys ``u<id>`` uncompressed, ``c<id>`` compressed).
        executor: threads for hashing, inflating and cache I/O (None: the loop's default).
        retries: extra fetches of a span after a digest mismatch.
        fetch_timeout_sec: bound on one range request.
        limiter: shared bound on range requests in flight (None: unbounded).
        readahead_spans: spans loaded ahead of a sequential reader.
        neighbour_spans: spans fetched after those a read had to fetch, once that read has them (0: none).
        recent: memory for recently inflated spans, shared between layers (None: none).
        name: for messages (the layer digest).
        windows: set when ``zinfo``'s checkpoint windows are zeroed (a load order document's zTOC metadata):
            returns the real table, fetched once before the first span is inflated (fetch points and
            compressed background fetches need none). A failure fails the reads waiting for it; the next
            read tries again, unless it was DataLoss (the zTOC contradicts the metadata).
    """

    def __init__(
        self,
        zinfo: GzipZinfo | TarZinfo,
        span_digests: Sequence[str],
        *,
        compressed_size: int,
        uncompressed_size: int,
        blob: BlobReader,
        cache: SpanCache,
        executor: Executor | None = None,
        retries: int = 0,
        fetch_timeout_sec: float = 300.0,
        limiter: asyncio.Semaphore | None = None,
        readahead_spans: int = 2,
        neighbour_spans: int = 0,
        recent: RecentSpans | None = None,
        name: str = "layer",
        windows: Callable[[], Awaitable[GzipZinfo | TarZinfo]] | None = None,
    ) -> None:
        check_span_table(zinfo, span_digests, len(span_digests) - 1, compressed_size=compressed_size,
                         uncompressed_size=uncompressed_size)  # fmt: skip
        self._zinfo = zinfo
        self._digests = tuple(span_digests)
        self._csize = compressed_size
        self._usize = uncompressed_size
        self._blob = blob
        self._cache = cache
        self._executor = executor
        self._retries = max(0, retries)
        self._fetch_timeout_sec = fetch_timeout_sec
        self._limiter = limiter
        self._readahead_spans = max(0, readahead_spans)
        self._neighbour_spans = max(0, neighbour_spans)
        self._recent = recent
        self.name = name
        count = len(self._digests)
        self._cstart = [zinfo.start_compressed_offset(i) for i in range(count)]
        self._cend = [zinfo.end_compressed_offset(i, compressed_size) for i in range(count)]
        self._ustart = [zinfo.start_uncompressed_offset(i) for i in range(count)]
        self._uend = [zinfo.end_uncompressed_offset(i, uncompressed_size) for i in range(count)]
        self._states = [SpanState.UNREQUESTED] * count
        self._inflight: dict[int, asyncio.Future[SpanBytes | None]] = {}
        self._arrivals: dict[int, asyncio.Future[None]] = {}
        """Per span being fetched: resolved when its run's compressed bytes have arrived."""
        self._cache_loads: dict[int, asyncio.Future[SpanBytes | None]] = {}
        self._advised = bytearray(count)
        self._tasks: set[asyncio.Task[None]] = set()
        self._fetched_bytes = 0
        self._requests = 0
        self._requested_bytes = 0
        self._verification_failures = 0
        self._closed = False
        # fetch points: verified uncompressed ranges outside the span table, sorted by start
        self._piece_starts: list[int] = []
        self._pieces: list[tuple[int, int]] = []
        self._piece_waits: dict[tuple[int, int], asyncio.Future[SpanBytes | None]] = {}
        # a replay's fetch points, fetched or not, sorted by start: a read one covers fetches it, not its spans
        self._planned_starts: list[int] = []
        self._planned: list[FetchPoint] = []
        self._fetch_points = 0
        self._fetch_point_failures = 0
        self._windows_loader = windows
        self._windows: asyncio.Future[None] | None = None

    # ---- public ----------------------------------------------------------------------------------------

    @property
    def span_count(self) -> int:
        return len(self._digests)

    @property
    def uncompressed_size(self) -> int:
        return self._usize

    def state(self, span_id: int) -> SpanState:
        return self._states[span_id]

    def span_of(self, uncompressed_offset: int) -> int:
        return self._zinfo.span_of(uncompressed_offset)

    def compressed_range(self, span_id: int) -> tuple[int, int]:
        return self._cstart[span_id], self._cend[span_id]

    def uncompressed_range(self, span_id: int) -> tuple[int, int]:
        return self._ustart[span_id], self._uend[span_id]

    async def read(self, start: int, end: int, *, readahead_limit: int | None = None) -> bytes:
        """Uncompressed bytes ``[start, end)`` (clipped to the layer).

        ``readahead_limit``: the reader is sequential and its file ends here; spans after the last one
        read are then loaded in the background, up to ``readahead_spans`` of them.
        """
        end = min(end, self._usize)
        if start >= end:
            return b""
        if self._pieces or self._piece_waits or self._planned:
            served = await self._read_points(start, end)
            if served is not None:
                # spans after a fetch point are loaded ahead only for a reader that got to its end: the workload
                # read no further when it was recorded, and loading whole spans after every head read would undo
                # the point (a reader going on past the point reads through spans, with their readahead)
                if readahead_limit is not None and self._readahead_spans and readahead_limit > end >= served[1]:
                    self._readahead(self.span_of(min(served[1], self._usize - 1)), readahead_limit)
                return served[0]
        first, last = self.span_of(start), self.span_of(end - 1)
        if self._planned and any(self._states[i] is SpanState.UNREQUESTED for i in range(first, last + 1)):
            # a read the document did not foresee: what tells a recording that missed reads from one that is stale
            log.debug("%s: read %d-%d is in no fetch point; loading spans %d-%d", self.name, start, end, first, last)
        # a miss past the end of the reader's file: the next files in the tar are likely read next (a package's
        # modules, a program's libraries), and are fetched while this read is served instead of on the next miss
        neighbours = (
            self._neighbour_spans > 0
            and not self._planned
            and (readahead_limit is None or readahead_limit <= self._uend[last])
            and any(self._states[i] is SpanState.UNREQUESTED for i in range(first, last + 1))
        )
        fresh = await self._ensure(first, last)
        if neighbours:
            stop = min(last + 1 + self._neighbour_spans, len(self._states))
            wanted = [i for i in range(last + 1, stop) if self._states[i] is SpanState.UNREQUESTED]
            if wanted:
                self._start(wanted)  # futures settle on their own; errors surface to whoever reads later
        sequential = readahead_limit is not None
        pieces: list[bytes] = []
        for i in range(first, last + 1):
            base = self._ustart[i]
            lo, hi = max(start, base), min(end, self._uend[i])
            data = fresh.get(i)
            if data is None and self._recent is not None:
                data = self._recent.get(id(self), i)
                if data is None and sequential:
                    # a sequential reader will want the rest of the span: read it from the cache at once
                    data = await self._cached_span(i)
            piece = None if data is not None else await self._read_cached(i, lo - base, hi - lo)
            if piece is None:
                if data is None:
                    log.debug("%s: span %d is no longer in the cache; fetching it again", self.name, i)
                    data = await self._refetch(i)
                piece = bytes(memoryview(data)[lo - base : hi - base])
            pieces.append(piece)
        if readahead_limit is not None and self._readahead_spans:
            self._readahead(last + 1, readahead_limit)
        return pieces[0] if len(pieces) == 1 else b"".join(pieces)

    async def load(self, first: int, last: int) -> None:
        """Make spans ``first..last`` UNCOMPRESSED (prefetch): returns once they are in the cache."""
        await self._ensure(first, last)
        await self.wait_idle()

    async def fetch(self, first: int, last: int) -> None:
        """Start making spans ``first..last`` UNCOMPRESSED; return once their compressed bytes have arrived.

        For a caller that orders fetches (a load order replay): its next request can go out while these spans
        are verified, inflated and cached, so the link never waits for the CPU. A fetch that fails raises
        here; a span that then fails verification is left UNREQUESTED, and the next read fetches it again.
        """
        self._start(range(first, last + 1))
        arrivals = {f for i in range(first, last + 1) if (f := self._arrivals.get(i)) is not None}
        if arrivals:
            await asyncio.gather(*(asyncio.shield(f) for f in arrivals))

    async def prefetch_compressed(self, span_id: int) -> bool:
        """Background fetch: cache the span's compressed bytes. False when there was nothing to do."""
        future = self._inflight.get(span_id)
        if future is not None:
            await asyncio.shield(future)
            return False
        if self._states[span_id] is not SpanState.UNREQUESTED or self._adopt_cached(span_id):
            return False
        future = self._register(span_id)
        self._transition(span_id, SpanState.REQUESTED)
        try:
            raw = await self._fetch_verified(span_id)
            await self._in_thread(self._cache.put, compressed_key(span_id), raw)
        except BaseException as exc:
            self._transition(span_id, SpanState.UNREQUESTED)
            self._settle(span_id, exc)
            raise
        self._transition(span_id, SpanState.FETCHED)
        self._fetched_bytes += len(raw)
        self._settle(span_id, None)
        return True

    @property
    def requests(self) -> int:
        """Range requests sent so far (``statistics`` without counting the states of every span)."""
        return self._requests

    def accepts(self, point: FetchPoint) -> bool:
        """Whether ``point`` fits this layer (a gzip layer; ranges inside the blob and the layer)."""
        return (
            isinstance(self._zinfo, GzipZinfo)
            and 0 <= point.first_byte < point.compressed_end <= self._csize
            and 0 <= point.uncompressed_offset < point.uncompressed_end
            and point.uncompressed_offset < self._usize
        )

    def plan_points(self, points: Sequence[FetchPoint]) -> None:
        """Points a replay will fetch (each must be ``accepts``-ed): until it does, a read inside one fetches it."""
        for point in points:
            i = bisect.bisect_right(self._planned_starts, point.uncompressed_offset)
            self._planned_starts.insert(i, point.uncompressed_offset)
            self._planned.insert(i, point)

    async def fetch_point(self, point: FetchPoint) -> None:
        """Load a load order document's fetch point; return once its compressed bytes have arrived.

        The bytes are checked against the point's digests (compressed, then inflated from its checkpoint) before
        any reader sees them; a point that does not fit, cannot be fetched or fails a check is counted, logged,
        and its spans are loaded instead, verified as always. Raises only when those spans cannot be fetched.
        """
        start, end = point.uncompressed_offset, min(point.uncompressed_end, self._usize)
        if not self.accepts(point):
            self._fetch_point_failures += 1
            raise FormatError(f"{self.name}: fetch point at {start} does not fit the layer")
        first, last = self.span_of(start), self.span_of(end - 1)
        if (start, end) in self._piece_waits or self._piece_covering(start, end) is not None:
            return
        if all(self._states[i] is SpanState.UNCOMPRESSED or i in self._inflight for i in range(first, last + 1)):
            return  # the spans are (being) loaded anyway
        key = piece_key(start, end)
        if self._cache.contains(key):  # from an earlier mount of this layer
            self._add_piece(start, end)
            return
        future: asyncio.Future[SpanBytes | None] = asyncio.get_running_loop().create_future()
        future.add_done_callback(mark_retrieved)
        self._piece_waits[(start, end)] = future
        try:
            raw = await self._read_blob(point.first_byte, point.compressed_end, f"fetch point at {start}")
        except (SociError, OSError) as exc:
            del self._piece_waits[(start, end)]
            future.set_result(None)
            self._fetch_point_failures += 1
            log.warning("%s: fetch point at %d: %s; loading spans %d-%d instead", self.name, start, exc, first, last)
            await self.fetch(first, last)
            return
        self._spawn(self._finish_point(point, end, raw, future, first, last))

    def statistics(self) -> SpanStatistics:
        states = dict.fromkeys(SpanState, 0)
        for s in self._states:
            states[s] += 1
        return SpanStatistics(
            len(self._states), states, self._fetched_bytes, self._requests, self._requested_bytes,
            self._verification_failures, self._fetch_points, self._fetch_point_failures,
        )  # fmt: skip

    async def wait_idle(self) -> None:
        """Wait until no fetch, inflation or cache write of this layer is running."""
        while self._tasks:
            await asyncio.wait(list(self._tasks))

    async def aclose(self, grace_sec: float = 5.0) -> None:
        """Refuse new fetches; let running work finish for up to ``grace_sec``, then cancel it."""
        self._closed = True
        if self._recent is not None:
            self._recent.drop(id(self))
        tasks = list(self._tasks)
        if tasks:
            _, running = await asyncio.wait(tasks, timeout=grace_sec)
            for task in running:
                task.cancel()
            await asyncio.gather(*running, return_exceptions=True)

    # ---- state table -------------------------------------------------------------------------------------

    def _transition(self, span_id: int, new: SpanState) -> None:
        old = self._states[span_id]
        if new not in TRANSITIONS[old]:
            raise FailedPrecondition(
                f"{self.name}: span {span_id}: invalid state transition {old.value} -> {new.value}"
            )
        self._states[span_id] = new

    def _adopt_cached(self, span_id: int) -> bool:
        """An UNREQUESTED span already in the cache (from an earlier mount): take it. True if taken."""
        if self._cache.contains(uncompressed_key(span_id)):
            new = SpanState.UNCOMPRESSED
        elif self._cache.contains(compressed_key(span_id)):
            new = SpanState.FETCHED
        else:
            return False
        self._transition(span_id, SpanState.REQUESTED)
        self._transition(span_id, new)
        self._fetched_bytes += self._cend[span_id] - self._cstart[span_id]
        return True

    def _register(self, span_id: int) -> asyncio.Future[SpanBytes | None]:
        future: asyncio.Future[SpanBytes | None] = asyncio.get_running_loop().create_future()
        future.add_done_callback(mark_retrieved)
        self._inflight[span_id] = future
        return future

    def _settle(self, span_id: int, outcome: SpanBytes | BaseException | None) -> None:
        """Resolve and forget the in-flight future of a span."""
        future = self._inflight.pop(span_id, None)
        if future is None or future.done():
            return
        if isinstance(outcome, BaseException):
            if isinstance(outcome, asyncio.CancelledError):
                outcome = Unavailable(f"{self.name}: fetch of span {span_id} was cancelled")
            future.set_exception(outcome)
        else:
            future.set_result(outcome)

    # ---- checkpoint windows ------------------------------------------------------------------------------

    @property
    def has_windows(self) -> bool:
        """Whether spans can be inflated without fetching the zTOC first."""
        return self._windows_loader is None

    def _load_windows(self) -> asyncio.Future[None] | None:
        """Start fetching the real checkpoint table (once); None when it is here already."""
        if self._windows_loader is None:
            return None
        if self._windows is None:
            self._windows = asyncio.ensure_future(self._fetch_windows(self._windows_loader))
            self._windows.add_done_callback(mark_retrieved)
        return self._windows

    async def _fetch_windows(self, loader: Callable[[], Awaitable[GzipZinfo | TarZinfo]]) -> None:
        zinfo = await loader()
        self._zinfo = zinfo
        self._windows_loader = None
        log.info("%s: checkpoint windows fetched", self.name)

    async def _need_windows(self) -> None:
        pending = self._load_windows()
        if pending is None:
            return
        try:
            await asyncio.shield(pending)
        except BaseException as exc:
            if pending.done() and self._windows is pending and not isinstance(exc, DataLoss):
                self._windows = None  # a transient failure: the next read tries again
            raise

    # ---- loading -------------------------------------------------------------------------------------------

    async def _ensure(self, first: int, last: int) -> dict[int, SpanBytes]:
        """Make spans ``first..last`` available; returns the bytes of those loaded by this call."""
        fresh: dict[int, SpanBytes] = {}
        pending = list(range(first, last + 1))
        while pending:
            waits = self._start(pending)
            if not waits:
                break
            results = await asyncio.gather(*(asyncio.shield(f) for _, f in waits))
            # None: a background fetch of compressed bytes finished; that span still needs inflating
            pending = [i for (i, _), data in zip(waits, results, strict=True) if data is None]
            fresh.update((i, data) for (i, _), data in zip(waits, results, strict=True) if data is not None)
        return fresh

    def _start(self, ids: Sequence[int]) -> list[tuple[int, asyncio.Future[SpanBytes | None]]]:
        """Futures for the given spans that are not UNCOMPRESSED, starting the work they need."""
        waits: list[tuple[int, asyncio.Future[SpanBytes | None]]] = []
        fetch: list[int] = []
        for i in ids:
            future = self._inflight.get(i)
            if future is not None:
                waits.append((i, future))
                continue
            if self._states[i] is SpanState.UNREQUESTED:
                self._adopt_cached(i)
            state = self._states[i]
            if state is SpanState.UNREQUESTED:
                fetch.append(i)
            elif state is SpanState.FETCHED:
                waits.append((i, self._register(i)))
                self._spawn(self._inflate_fetched(i))
        if waits or fetch:
            self._load_windows()  # the zTOC travels beside the spans, not after them
        for run in self._runs(fetch):
            arrival: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            arrival.add_done_callback(mark_retrieved)
            for i in run:
                self._transition(i, SpanState.REQUESTED)
                waits.append((i, self._register(i)))
                self._arrivals[i] = arrival
            self._spawn(self._fetch_run(run, arrival))
        return waits

    def _runs(self, ids: list[int]) -> list[list[int]]:
        runs: list[list[int]] = []
        for i in ids:
            if runs and runs[-1][-1] == i - 1 and self._cend[i] - self._cstart[runs[-1][0]] <= MAX_RUN_BYTES:
                runs[-1].append(i)
            else:
                runs.append([i])
        return runs

    def _spawn(self, coro: Any) -> None:
        task: asyncio.Task[None] = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            # whoever waits for the span got the error through its future; nobody waits for the task
            log.debug("%s: background span work failed: %s", self.name, task.exception())

    async def _fetch_run(self, run: list[int], arrival: asyncio.Future[None]) -> None:
        """Fetch spans ``run`` (REQUESTED, adjacent) in one request, then finish each on its own."""
        first, last = run[0], run[-1]
        try:
            data = await self._fetch(first, last)
        except BaseException as exc:
            for i in run:
                self._arrivals.pop(i, None)
                self._transition(i, SpanState.UNREQUESTED)
                self._settle(i, exc)
            if not arrival.done():
                arrival.set_exception(exc if isinstance(exc, Exception) else Unavailable(f"{self.name}: cancelled"))
            if isinstance(exc, asyncio.CancelledError):
                raise
            return
        for i in run:
            self._arrivals.pop(i, None)
        if not arrival.done():
            arrival.set_result(None)
        view = memoryview(data)
        base = self._cstart[first]
        await asyncio.gather(
            *(self._finish(i, view[self._cstart[i] - base : self._cend[i] - base]) for i in run),
            return_exceptions=True,
        )

    async def _finish(self, span_id: int, raw: memoryview) -> None:
        """Verify (refetching on mismatch) and inflate a REQUESTED span, then cache it as UNCOMPRESSED."""
        try:
            data = await self._verified_inflate(span_id, raw)
        except BaseException as exc:
            self._transition(span_id, SpanState.UNREQUESTED)
            self._settle(span_id, exc)
            raise
        future = self._inflight.get(span_id)
        if future is not None and not future.done():
            future.set_result(data)  # waiting readers go on while the cache is written
        if self._recent is not None:
            self._recent.put(id(self), span_id, data)
        try:
            await self._in_thread(self._cache.put, uncompressed_key(span_id), data)
        except Exception as exc:
            log.warning("%s: cannot cache span %d: %s", self.name, span_id, exc)
            self._transition(span_id, SpanState.UNREQUESTED)
        else:
            self._transition(span_id, SpanState.UNCOMPRESSED)
            self._fetched_bytes += len(raw)
        finally:
            self._settle(span_id, None)

    async def _inflate_fetched(self, span_id: int) -> None:
        """FETCHED -> UNCOMPRESSED: inflate the cached compressed bytes (fetching them again if lost)."""
        try:
            raw = await self._in_thread(self._cache.get, compressed_key(span_id))
            if raw is None:
                data = await self._verified_inflate(span_id, memoryview(await self._fetch(span_id, span_id)))
            else:
                await self._need_windows()
                data = await self._in_thread(self._inflate, span_id, memoryview(raw))
            await self._in_thread(self._cache.put, uncompressed_key(span_id), data)
        except BaseException as exc:
            self._settle(span_id, exc)
            raise
        self._transition(span_id, SpanState.UNCOMPRESSED)
        self._settle(span_id, data)
        if self._recent is not None:
            self._recent.put(id(self), span_id, data)
        try:
            await self._in_thread(self._cache.remove, compressed_key(span_id))
        except Exception as exc:
            log.debug("%s: cannot drop compressed span %d from the cache: %s", self.name, span_id, exc)

    async def _refetch(self, span_id: int) -> SpanBytes:
        """A span whose cached bytes vanished: fetch and inflate it again, outside the state table."""
        return await self._verified_inflate(span_id, memoryview(await self._fetch(span_id, span_id)))

    async def _verified_inflate(self, span_id: int, raw: memoryview) -> SpanBytes:
        await self._need_windows()
        for attempt in range(self._retries + 1):
            try:
                return await self._in_thread(self._verify_and_inflate, span_id, raw)
            except SpanDigestMismatch as exc:
                self._verification_failures += 1
                log.warning("span digests do not match: %s (layer %s, attempt %d of %d)",
                            exc, self.name, attempt + 1, self._retries + 1)  # fmt: skip
                if attempt == self._retries:
                    raise
            raw = memoryview(await self._fetch(span_id, span_id))
        raise AssertionError("unreachable")  # pragma: no cover

    async def _fetch_verified(self, span_id: int) -> bytes:
        raw = await self._fetch(span_id, span_id)
        for attempt in range(self._retries + 1):
            try:
                await self._in_thread(self._verify, span_id, raw)
                return raw
            except SpanDigestMismatch as exc:
                self._verification_failures += 1
                log.warning("span digests do not match: %s (layer %s, attempt %d of %d)",
                            exc, self.name, attempt + 1, self._retries + 1)  # fmt: skip
                if attempt == self._retries:
                    raise
            raw = await self._fetch(span_id, span_id)
        raise AssertionError("unreachable")  # pragma: no cover

    # ---- fetch points ----------------------------------------------------------------------------------------

    async def _finish_point(self, point: FetchPoint, end: int, raw: bytes, future: asyncio.Future[SpanBytes | None],
                            first: int, last: int) -> None:  # fmt: skip
        start = point.uncompressed_offset
        try:
            data = await self._in_thread(self._check_point, point, raw)
        except Exception as exc:
            self._piece_waits.pop((start, end), None)
            future.set_result(None)
            self._fetch_point_failures += 1
            log.warning("%s: fetch point at %d rejected: %s; loading spans %d-%d instead", self.name, start, exc,
                        first, last)  # fmt: skip
            self._start(range(first, last + 1))  # readers that came meanwhile fetch the same spans
            return
        future.set_result(data)  # waiting readers go on while the cache is written
        try:
            # the point may run past the layer's end (tar padding after the archive size): keep what is served
            kept = data if len(data) == end - start else bytes(memoryview(data)[: end - start])
            await self._in_thread(self._cache.put, piece_key(start, end), kept)
        except Exception as exc:
            log.warning("%s: cannot cache fetch point at %d: %s", self.name, start, exc)
        else:
            self._add_piece(start, end)
            self._fetch_points += 1
        finally:
            self._piece_waits.pop((start, end), None)

    @staticmethod
    def _check_point(point: FetchPoint, raw: bytes) -> SpanBytes:
        actual = "sha256:" + hashlib.sha256(raw).hexdigest()
        if actual != point.digest:
            raise DataLoss(f"compressed bytes have digest {actual}, the document says {point.digest}")
        data = inflate_at(raw, base=point.first_byte, bits=point.bits, window=point.window,
                          length=point.uncompressed_end - point.uncompressed_offset)  # fmt: skip
        actual = "sha256:" + hashlib.sha256(data).hexdigest()
        if actual != point.uncompressed_digest:
            raise DataLoss(f"inflated bytes have digest {actual}, the document says {point.uncompressed_digest}")
        return data

    def _add_piece(self, start: int, end: int) -> None:
        i = bisect.bisect_left(self._pieces, (start, end))
        if i < len(self._pieces) and self._pieces[i] == (start, end):
            return
        self._pieces.insert(i, (start, end))
        self._piece_starts.insert(i, start)

    def _piece_covering(self, start: int, end: int) -> tuple[int, int] | None:
        i = bisect.bisect_right(self._piece_starts, start)
        for j in range(i - 1, max(i - 3, -1), -1):  # neighbouring points may overlap by a block
            if self._pieces[j][1] >= end:
                return self._pieces[j]
        return None

    async def _read_points(self, start: int, end: int) -> tuple[bytes, int] | None:
        """``[start, end)`` from fetch points, with the end of the last one; None when they do not hold it all.

        A read may straddle neighbouring points (runs of one file whose block boundaries meet), so it is served
        from a chain of them. Points the replay has not got to yet are fetched now, rather than whole spans,
        when they cost no more bytes than those spans (a point that fails falls back to its spans itself).
        """
        chain = self._point_chain(start, end, planned=True)
        if chain is None:
            return None
        todo = [source for _, _, source in chain if isinstance(source, FetchPoint)]
        if todo:
            first, last = self.span_of(start), self.span_of(end - 1)
            if sum(p.compressed_end - p.first_byte for p in todo) > self._cend[last] - self._cstart[first]:
                return None
            await asyncio.gather(*(self.fetch_point(p) for p in todo))
            chain = self._point_chain(start, end, planned=False)
            if chain is None:
                return None
        parts: list[bytes] = []
        for lo, hi, source in chain:
            a, b = max(start, lo), min(end, hi)
            if isinstance(source, asyncio.Future):
                data = await asyncio.shield(source)
                if data is None:  # the point failed its checks: its spans serve the read
                    return None
                parts.append(bytes(memoryview(data)[a - lo : b - lo]))
                continue
            piece = await self._in_thread(self._cache.read, piece_key(lo, hi), a - lo, b - a)
            if piece is None or len(piece) != b - a:
                if (lo, hi) in self._pieces:  # evicted from the cache: whole spans serve it from now on
                    i = self._pieces.index((lo, hi))  # (a concurrent reader may have found that out first)
                    del self._pieces[i], self._piece_starts[i]
                return None
            parts.append(piece)
        return (parts[0] if len(parts) == 1 else b"".join(parts)), chain[-1][1]

    def _point_chain(self, start: int, end: int, *, planned: bool) -> list[tuple[int, int, _PointSource]] | None:
        """Points that hold ``[start, end)`` between them, in order: loaded ones first, then ones in flight, then
        (``planned``) ones the replay has not fetched; None if there is a hole."""
        chain: list[tuple[int, int, _PointSource]] = []
        at = start
        while at < end and len(chain) < MAX_POINT_CHAIN:
            best: tuple[int, int, _PointSource] | None = None
            i = bisect.bisect_right(self._piece_starts, at)
            for j in range(i - 1, max(i - 3, -1), -1):  # neighbouring points may overlap by a block
                lo, hi = self._pieces[j]
                if lo <= at < hi and (best is None or hi > best[1]):
                    best = (lo, hi, None)
            if best is None or best[1] < end:
                for (lo, hi), future in self._piece_waits.items():
                    if lo <= at < hi and (best is None or hi > best[1]):
                        best = (lo, hi, future)
            if best is None and planned:
                i = bisect.bisect_right(self._planned_starts, at)
                for j in range(i - 1, max(i - 3, -1), -1):
                    point = self._planned[j]
                    hi = min(point.uncompressed_end, self._usize)
                    if point.uncompressed_offset <= at < hi and (best is None or hi > best[1]):
                        best = (point.uncompressed_offset, hi, point)
            if best is None:
                return None
            chain.append(best)
            at = best[1]
        return chain if at >= end else None

    async def _fetch(self, first: int, last: int) -> bytes:
        """Compressed bytes of spans ``first..last`` in one range request."""
        return await self._read_blob(self._cstart[first], self._cend[last], f"spans {first}-{last}")

    async def _read_blob(self, start: int, end: int, what: str) -> bytes:
        """Blob bytes ``[start, end)`` in one range request (``what`` names them in errors)."""
        if self._closed:
            raise Unavailable(f"{self.name}: layer is closed")
        if self._limiter is not None:
            await self._limiter.acquire()
        try:
            self._requests += 1
            async with asyncio.timeout(self._fetch_timeout_sec):
                data = await self._blob.read_at(start, end - start)
        except DataLoss:
            raise
        except TimeoutError as exc:
            raise Unavailable(f"{self.name}: fetching {what} timed out after "
                              f"{self._fetch_timeout_sec} s") from exc  # fmt: skip
        except (SociError, OSError) as exc:
            raise Unavailable(f"{self.name}: cannot fetch {what} (bytes {start}-{end - 1}): "
                              f"{exc}") from exc  # fmt: skip
        finally:
            if self._limiter is not None:
                self._limiter.release()
        if len(data) != end - start:
            raise DataLoss(f"{self.name}: short read of {what}: got {len(data)} of {end - start} bytes")
        self._requested_bytes += len(data)
        return data

    def _readahead(self, from_span: int, limit: int) -> None:
        if from_span >= len(self._states) or limit <= self._ustart[from_span]:
            return
        stop = min(from_span + self._readahead_spans, self.span_of(min(limit, self._usize) - 1) + 1)
        wanted = [i for i in range(from_span, stop) if self._states[i] is not SpanState.UNCOMPRESSED]
        if wanted:
            self._start(wanted)  # futures settle on their own; errors surface to whoever reads later
        if self._recent is not None:
            # reading cached spans ahead is cheap (a disk read each), so go further than fetching
            cached_stop = min(from_span + max(self._readahead_spans, CACHED_READAHEAD_SPANS),
                              self.span_of(min(limit, self._usize) - 1) + 1)  # fmt: skip
            for i in range(from_span, cached_stop):
                if (self._states[i] is SpanState.UNCOMPRESSED and i not in self._cache_loads
                        and self._recent.get(id(self), i) is None):  # fmt: skip
                    self._spawn(self._cached_span(i))  # disk reads of the cache overlap with serving
            # further ahead, only ask the kernel to start reading the cached files: separate span files get
            # no readahead across them otherwise
            advise_stop = min(cached_stop + CACHED_ADVISE_SPANS, len(self._states))
            keys = [uncompressed_key(i) for i in range(cached_stop, advise_stop)
                    if self._states[i] is SpanState.UNCOMPRESSED and not self._advised[i]]  # fmt: skip
            if keys:
                for i in range(cached_stop, advise_stop):
                    self._advised[i] = 1
                self._spawn(self._in_thread(self._cache.advise, keys))

    async def _cached_span(self, span_id: int) -> SpanBytes | None:
        """A whole cached span, read once into ``recent`` (concurrent callers share the read)."""
        assert self._recent is not None
        pending = self._cache_loads.get(span_id)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[SpanBytes | None] = asyncio.get_running_loop().create_future()
        future.add_done_callback(mark_retrieved)
        self._cache_loads[span_id] = future
        try:
            data = await self._in_thread(self._cache.get, uncompressed_key(span_id))
            if data is not None and len(data) != self._uend[span_id] - self._ustart[span_id]:
                data = None
            if data is not None:
                self._recent.put(id(self), span_id, data)
            future.set_result(data)
            return data
        except BaseException as exc:
            future.set_exception(exc if isinstance(exc, Exception) else Unavailable("cache read cancelled"))
            raise
        finally:
            del self._cache_loads[span_id]

    # ---- executor work -------------------------------------------------------------------------------------

    async def _in_thread(self, func: Callable[..., _T], *args: Any) -> _T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, func, *args)

    async def _read_cached(self, span_id: int, offset: int, length: int) -> bytes | None:
        data = await self._in_thread(self._cache.read, uncompressed_key(span_id), offset, length)
        return data if data is not None and len(data) == length else None

    def _verify(self, span_id: int, raw: bytes | memoryview) -> None:
        actual = "sha256:" + hashlib.sha256(raw).hexdigest()
        expected = self._digests[span_id]
        if actual != expected:
            raise SpanDigestMismatch(span_id, expected, actual)

    def _verify_and_inflate(self, span_id: int, raw: memoryview) -> SpanBytes:
        self._verify(span_id, raw)
        return self._inflate(span_id, raw)

    def _inflate(self, span_id: int, raw: memoryview) -> SpanBytes:
        length = self._uend[span_id] - self._ustart[span_id]
        if isinstance(self._zinfo, TarZinfo):
            if len(raw) < length:
                raise FormatError(f"{self.name}: span {span_id} has {len(raw)} bytes, want {length}")
            return bytes(raw[:length])
        out = bytearray(length)  # filled in place and kept as is: no copy of the whole span
        made = inflate_span_into(self._zinfo, span_id, raw, out)
        if made != length:
            raise FormatError(f"{self.name}: span {span_id} inflated to {made} bytes, want {length}")
        return out

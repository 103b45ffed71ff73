"""Replay: segments → span runs in first-access order, loaded ahead of the background fetcher.

One ``ReplayScheduler`` per daemon holds the runs of every layer being replayed in one queue ordered by
first access time (``time_ms``), across layers: the link is usually the bottleneck, so a few requests in
flight, in the order the workload will need them, deliver each span soonest. Each worker fetches one run at
a time and sends the next request as soon as the bytes are in (verification, inflation and caching go on
behind it); a FUSE read needing a span that is not loaded yet fetches it at once (the span manager shares
one fetch between the two). The background fetcher is held while runs are queued. Failures are logged and
skipped: a replay never fails a mount.

A layer whose document has fetch points replays those instead of the spans of the ranges they cover: one
request for the bytes between two deflate block boundaries, checked against the document's digests and
inflated from its checkpoint (``SpanManager.fetch_point``, which falls back to the whole spans on any failure).
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from soci.errors import SociError
from soci.formats.load_order import FetchPoint, Segment
from soci.fs.background import BackgroundFetcher
from soci.fs.layer import Layer
from soci.fs.tree import LayerTree

log = logging.getLogger(__name__)

RUN_SPANS = 4
"""Longest run one worker loads in one go (one range request per run of uncached spans)."""
MAX_CONCURRENCY = 4
"""Runs loaded at once by default (``[load_order] max_concurrency``): with 2 the link idled during each run's
round trip."""


@dataclass(frozen=True, slots=True)
class SpanPlan:
    runs: tuple[tuple[int, int], ...]
    """Inclusive span ranges, in the order to load them; each span appears once."""
    segments: int
    missing: int
    """Segments whose path is not a regular file of this layer (skipped)."""
    times: tuple[int, ...] = ()
    """First access time (ms) of each run."""

    @property
    def span_count(self) -> int:
        return sum(last - first + 1 for first, last in self.runs)


def segment_ranges(tree: LayerTree, segment: Segment) -> list[tuple[int, int]] | None:
    """The uncompressed layer ranges a segment needs: its file's tar header (the first read of a file verifies
    it) and its data; None when the path is not a regular file of the layer."""
    ino = tree.resolve(segment.path.encode())
    if not ino or not tree.is_regular(ino):
        return None
    data_offset, size = tree.data_range(ino)
    pieces = [(tree.header_offset(ino), data_offset)]
    if segment.offset < size:
        pieces.append((data_offset + segment.offset, data_offset + min(segment.end, size)))
    return [(start, end) for start, end in pieces if start < end]


def plan_spans(
    tree: LayerTree,
    span_of: Callable[[int], int],
    segments: Sequence[Segment],
    covered: Sequence[FetchPoint] = (),
) -> SpanPlan:
    """Map segments to spans through the layer's own inode table; ranges inside one of the ``covered`` fetch
    points need no span."""
    seen: set[int] = set()
    order: list[tuple[int, int]] = []  # (span, time_ms)
    missing = 0
    for segment in segments:
        pieces = segment_ranges(tree, segment)
        if pieces is None:
            missing += 1
            continue
        for start, end in pieces:
            if any(p.uncompressed_offset <= start and end <= p.uncompressed_end for p in covered):
                continue
            for span in range(span_of(start), span_of(end - 1) + 1):
                if span not in seen:
                    seen.add(span)
                    order.append((span, segment.time_ms))
    runs: list[tuple[int, int]] = []
    times: list[int] = []
    for span, when in order:
        if runs and span == runs[-1][1] + 1 and span - runs[-1][0] < RUN_SPANS:
            runs[-1] = (runs[-1][0], span)
        else:
            runs.append((span, span))
            times.append(when)
    return SpanPlan(tuple(runs), len(segments), missing, tuple(times))


@dataclass(frozen=True, slots=True)
class ReplayResult:
    name: str
    layer: str
    spans: int
    failed_runs: int
    missing: int
    seconds: float
    fetch_points: int = 0


@dataclass(eq=False)
class _Job:
    name: str
    layer: Layer
    plan: SpanPlan
    start: float
    pending: int
    failed: int = 0
    points: int = 0
    done: asyncio.Future[ReplayResult] = field(default_factory=lambda: asyncio.get_running_loop().create_future())


class ReplayScheduler:
    """Loads the runs of every queued replay, earliest first access first, ``max_concurrency`` at a time."""

    def __init__(self, *, max_concurrency: int = MAX_CONCURRENCY, background: BackgroundFetcher | None = None) -> None:
        self._limit = max(1, max_concurrency)
        self._background = background
        # (time_ms, seq, first span, last span, or a fetch point instead, job)
        self._heap: list[tuple[int, int, int, int, FetchPoint | None, _Job]] = []
        self._seq = itertools.count()
        self._workers: set[asyncio.Task[None]] = set()
        self._finishing: set[asyncio.Task[None]] = set()

    def add(
        self, layer: Layer, segments: Sequence[Segment], *, name: str = "", fetch_points: Sequence[FetchPoint] = ()
    ) -> asyncio.Future[ReplayResult]:
        """Queue the fetch points and the spans of what they do not cover; the future resolves when they are all
        loaded (or failed)."""
        points = [p for p in fetch_points if layer.spans.accepts(p)]
        if len(points) < len(fetch_points):
            log.warning("load order %s: %d of %d fetch points of layer %s do not fit it; their spans are loaded",
                        name, len(fetch_points) - len(points), len(fetch_points), layer.digest)  # fmt: skip
        plan = plan_spans(layer.tree, layer.spans.span_of, segments, points)
        if plan.missing:
            log.warning("load order %s: %d of %d segments of layer %s name no regular file; skipped",
                        name, plan.missing, plan.segments, layer.digest)  # fmt: skip
        layer.spans.plan_points(points)
        job = _Job(name, layer, plan, time.monotonic(), len(plan.runs) + len(points), points=len(points))
        if not job.pending:
            self._finish(job)
            return job.done
        if not self._heap and not self._workers and self._background is not None:
            self._background.hold()
        for (first, last), when in zip(plan.runs, plan.times, strict=True):
            heapq.heappush(self._heap, (when, next(self._seq), first, last, None, job))
        for point in points:
            heapq.heappush(self._heap, (point.time_ms, next(self._seq), 0, 0, point, job))
        loop = asyncio.get_running_loop()
        while len(self._workers) < min(self._limit, len(self._heap)):
            task = loop.create_task(self._work(), name="soci-load-order-replay")
            self._workers.add(task)
            task.add_done_callback(self._worker_done)
        return job.done

    def drop(self, layer: Layer) -> None:
        """Forget what is queued for ``layer`` (unmounted, or its mount failed after it opened): its replay ends
        with the work already in flight, instead of failing every remaining request on a closed layer."""
        kept = [item for item in self._heap if item[5].layer is not layer]
        if len(kept) == len(self._heap):
            return
        log.info("load order: layer %s closed; %d queued replay requests dropped", layer.digest,
                 len(self._heap) - len(kept))  # fmt: skip
        dropped = [job for *_, job in self._heap if job.layer is layer]
        # the workers stop when the heap is empty, and the last one to stop releases the background fetcher
        self._heap = kept
        heapq.heapify(self._heap)
        for job in dropped:
            job.pending -= 1
            if not job.pending:
                self._finish(job)

    def _worker_done(self, task: asyncio.Task[None]) -> None:
        self._workers.discard(task)
        if not self._workers and not self._heap and self._background is not None:
            self._background.unhold()

    async def _work(self) -> None:
        while self._heap:
            _, _, first, last, point, job = heapq.heappop(self._heap)
            try:
                # only the transfer is waited for: the next request goes out while these bytes are inflated
                if point is None:
                    await job.layer.spans.fetch(first, last)
                else:
                    await job.layer.spans.fetch_point(point)
            except (SociError, OSError) as exc:
                job.failed += 1
                what = f"spans {first}-{last}" if point is None else f"fetch point at {point.uncompressed_offset}"
                log.warning("load order %s: layer %s %s: %s", job.name, job.layer.digest, what, exc)
            job.pending -= 1
            if not job.pending:
                self._finishing.add(task := asyncio.get_running_loop().create_task(self._settle(job)))
                task.add_done_callback(self._finishing.discard)

    async def _settle(self, job: _Job) -> None:
        await job.layer.spans.wait_idle()
        self._finish(job)

    def _finish(self, job: _Job) -> None:
        result = ReplayResult(job.name, job.layer.digest, job.plan.span_count, job.failed, job.plan.missing,
                              time.monotonic() - job.start, job.points)  # fmt: skip
        log.info("load order %s replayed on layer %s: %d fetch points and %d spans in %.2f s (%d runs failed)",
                 job.name, job.layer.digest, result.fetch_points, result.spans, result.seconds,
                 result.failed_runs)  # fmt: skip
        if not job.done.done():
            job.done.set_result(result)

    async def aclose(self) -> None:
        self._heap.clear()
        tasks = [*self._workers, *self._finishing]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def replay(
    layer: Layer,
    segments: Sequence[Segment],
    *,
    name: str = "",
    max_concurrency: int = MAX_CONCURRENCY,
    background: BackgroundFetcher | None = None,
    fetch_points: Sequence[FetchPoint] = (),
) -> ReplayResult:
    """Load the fetch points and the spans ``segments`` need beyond them, in order, ``max_concurrency`` runs at
    a time."""
    scheduler = ReplayScheduler(max_concurrency=max_concurrency, background=background)
    try:
        return await scheduler.add(layer, segments, name=name, fetch_points=fetch_points)
    finally:
        await scheduler.aclose()

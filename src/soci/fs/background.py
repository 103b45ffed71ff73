"""``BackgroundFetcher``: slowly fetch every span of the mounted layers, as upstream's background fetcher.

One global queue of layers, served round robin: each step fetches the next span (compressed bytes only,
state FETCHED) of the layer at the head and puts the layer back at the tail, until it has no span left.
Steps are rate limited to one per ``fetch_period_msec`` (burst 1). Mounting a layer pauses everything for
``silence_period_msec``, so lazy reads of a starting container get the network first. When the queue is
full, ``drop_policy`` "newest" refuses the new layer and "oldest" drops the layer at the head.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from dataclasses import dataclass

from soci.errors import SociError
from soci.fs import metrics as fm
from soci.fs.clock import Clock, MonotonicClock
from soci.fs.options import BackgroundFetchOptions
from soci.fs.spans import SpanManager, SpanState

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class BackgroundStatistics:
    queued_layers: int
    spans_fetched: int
    failures: int
    evicted: int


class _Entry:
    __slots__ = ("cursor", "spans")

    def __init__(self, spans: SpanManager) -> None:
        self.spans = spans
        self.cursor = 0


class BackgroundFetcher:
    def __init__(self, options: BackgroundFetchOptions | None = None, *, clock: Clock | None = None) -> None:
        self.options = options or BackgroundFetchOptions()
        self._clock = clock or MonotonicClock()
        self._queue: deque[_Entry] = deque()
        self._paused_until = self._clock.now() + self.options.silence_period_msec / 1000
        self._next_step = self._clock.now()
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._spans_fetched = 0
        self._failures = 0
        self._evicted = 0
        self._holds = 0
        self.metrics: fm.FsMetrics = fm.NullFsMetrics()

    def start(self) -> None:
        if self._task is None and not self.options.disable:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="soci-background-fetch")

    def add(self, spans: SpanManager) -> bool:
        """Queue a layer (and pause for the silence period). False when the drop policy refused it."""
        self.pause()
        if self.options.disable:
            return False
        limit = self.options.max_queue_size
        if 0 <= limit <= len(self._queue):
            if self.options.drop_policy == "newest" or limit == 0:
                self._evicted += 1
                self.metrics.count(fm.OP_BACKGROUND_FETCH_WORK_QUEUE_EVICTED, spans.name)
                log.debug("background fetch queue full: not queueing %s", spans.name)
                return False
            dropped = self._queue.popleft()
            self._evicted += 1
            self.metrics.count(fm.OP_BACKGROUND_FETCH_WORK_QUEUE_EVICTED, dropped.spans.name)
            log.debug("background fetch queue full: dropped %s", dropped.spans.name)
        self._queue.append(_Entry(spans))
        self._wakeup.set()
        return True

    def remove(self, spans: SpanManager) -> None:
        self._queue = deque(e for e in self._queue if e.spans is not spans)

    def pause(self) -> None:
        """Hold all fetching for the silence period from now (a new mount is starting)."""
        self._paused_until = max(self._paused_until, self._clock.now() + self.options.silence_period_msec / 1000)

    def hold(self) -> None:
        """Stop stepping until the matching ``unhold`` (a priority fetch such as a load order replay runs)."""
        self._holds += 1

    def unhold(self) -> None:
        self._holds = max(0, self._holds - 1)
        if not self._holds:
            self._wakeup.set()

    def statistics(self) -> BackgroundStatistics:
        return BackgroundStatistics(len(self._queue), self._spans_fetched, self._failures, self._evicted)

    async def aclose(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def _run(self) -> None:
        while True:
            if not self._queue or self._holds:
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            now = self._clock.now()
            if now < self._paused_until:
                await self._clock.sleep(self._paused_until - now)
                continue
            if now < self._next_step:
                await self._clock.sleep(self._next_step - now)
                continue
            self._next_step = max(now, self._next_step) + self.options.fetch_period_msec / 1000
            await self._step()

    async def _step(self) -> None:
        entry = self._queue.popleft()
        spans = entry.spans
        while entry.cursor < spans.span_count and spans.state(entry.cursor) is not SpanState.UNREQUESTED:
            entry.cursor += 1
        if entry.cursor >= spans.span_count:
            log.debug("background fetch of %s complete", spans.name)
            return
        span_id = entry.cursor
        entry.cursor += 1
        self._queue.append(entry)
        start = self._clock.now()
        try:
            if await spans.prefetch_compressed(span_id):
                self._spans_fetched += 1
                self.metrics.count(fm.OP_BACKGROUND_SPAN_FETCH_COUNT, spans.name)
                self.metrics.observe(fm.OP_BACKGROUND_FETCH, spans.name, self._clock.now() - start)
        except (SociError, OSError) as exc:
            self._failures += 1
            self.metrics.count(fm.OP_BACKGROUND_SPAN_FETCH_FAILURE_COUNT, spans.name)
            log.debug("background fetch of %s span %d failed: %s", spans.name, span_id, exc)

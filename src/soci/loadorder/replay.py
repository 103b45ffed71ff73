"""Replay: a layer's segments → span runs in first-access order, loaded ahead of the background fetcher.

Spans are loaded (fetched, verified, inflated, cached) by a few workers taking runs in document order,
so requests in flight stay bounded; a FUSE read needing a span that is not loaded yet fetches it at
once (the span manager shares one fetch between the two). The background fetcher is held while a
replay runs. Failures are logged and skipped: a replay never fails a mount.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from soci.errors import SociError
from soci.formats.load_order import Segment
from soci.fs.background import BackgroundFetcher
from soci.fs.layer import Layer
from soci.fs.tree import LayerTree

log = logging.getLogger(__name__)

RUN_SPANS = 4
"""Longest run one worker loads in one go (one range request per run of uncached spans)."""


@dataclass(frozen=True, slots=True)
class SpanPlan:
    runs: tuple[tuple[int, int], ...]
    """Inclusive span ranges, in the order to load them; each span appears once."""
    segments: int
    missing: int
    """Segments whose path is not a regular file of this layer (skipped)."""

    @property
    def span_count(self) -> int:
        return sum(last - first + 1 for first, last in self.runs)


def plan_spans(tree: LayerTree, span_of: Callable[[int], int], segments: Sequence[Segment]) -> SpanPlan:
    """Map segments to spans through the layer's own inode table (the tar header of each file is included,
    since the first read of a file verifies it)."""
    seen: set[int] = set()
    order: list[int] = []
    missing = 0
    for segment in segments:
        ino = tree.resolve(segment.path.encode())
        if not ino or not tree.is_regular(ino):
            missing += 1
            continue
        data_offset, size = tree.data_range(ino)
        pieces = [(tree.header_offset(ino), data_offset)]
        if segment.offset < size:
            pieces.append((data_offset + segment.offset, data_offset + min(segment.end, size)))
        for start, end in pieces:
            if end <= start:
                continue
            for span in range(span_of(start), span_of(end - 1) + 1):
                if span not in seen:
                    seen.add(span)
                    order.append(span)
    runs: list[tuple[int, int]] = []
    for span in order:
        if runs and span == runs[-1][1] + 1 and span - runs[-1][0] < RUN_SPANS:
            runs[-1] = (runs[-1][0], span)
        else:
            runs.append((span, span))
    return SpanPlan(tuple(runs), len(segments), missing)


@dataclass(frozen=True, slots=True)
class ReplayResult:
    name: str
    layer: str
    spans: int
    failed_runs: int
    missing: int
    seconds: float


async def replay(
    layer: Layer,
    segments: Sequence[Segment],
    *,
    name: str = "",
    max_concurrency: int = 4,
    background: BackgroundFetcher | None = None,
) -> ReplayResult:
    """Load the spans ``segments`` need, in order, ``max_concurrency`` runs at a time."""
    start = time.monotonic()
    plan = plan_spans(layer.tree, layer.spans.span_of, segments)
    if plan.missing:
        log.warning("load order %s: %d of %d segments of layer %s name no regular file; skipped",
                    name, plan.missing, plan.segments, layer.digest)  # fmt: skip
    queue = list(reversed(plan.runs))
    failed = 0

    async def worker() -> None:
        nonlocal failed
        while queue:
            first, last = queue.pop()
            try:
                await layer.spans.load(first, last)
            except (SociError, OSError) as exc:
                failed += 1
                log.warning("load order %s: layer %s spans %d-%d: %s", name, layer.digest, first, last, exc)

    if background is not None:
        background.hold()
    try:
        await asyncio.gather(*(worker() for _ in range(max(1, max_concurrency))))
    finally:
        if background is not None:
            background.unhold()
    result = ReplayResult(name, layer.digest, plan.span_count, failed, plan.missing, time.monotonic() - start)
    log.info("load order %s replayed on layer %s: %d spans in %.2f s (%d runs failed)",
             name, layer.digest, result.spans, result.seconds, failed)  # fmt: skip
    return result

"""Replay: segments map to spans through the layer's own zTOC; only those spans are loaded, in order."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from lo_layers import BigFilesLayer, big_files_layer

from soci.formats.load_order import Segment
from soci.fs.background import BackgroundFetcher
from soci.fs.layer import LayerResolver
from soci.fs.options import BackgroundFetchOptions
from soci.fs.spans import SpanState
from soci.loadorder.replay import ReplayScheduler, plan_spans, replay

pytestmark = pytest.mark.timeout(60)

HEAD = 4096


@pytest.fixture(scope="module")
def layer() -> BigFilesLayer:
    return big_files_layer()


@pytest.fixture(scope="module")
def executor() -> Iterator[ThreadPoolExecutor]:
    with ThreadPoolExecutor(2) as pool:
        yield pool


@pytest.mark.parametrize("span_size", [65536, 262144])
async def test_sub_file_segments_load_only_their_spans(
    layer: BigFilesLayer, span_size: int, tmp_path: Path, executor: ThreadPoolExecutor
) -> None:
    """A workload reading the first 4 KiB of many large files: the same document works on zTOCs of any
    span size, loads just the spans holding those heads, and the reads then need no request."""
    segments = [Segment(name, 0, HEAD) for name in layer.names[::2]]
    request, blob = layer.request(span_size)
    resolver = LayerResolver(tmp_path, executor=executor)
    opened = await resolver.acquire(request)
    try:
        plan = plan_spans(opened.tree, opened.spans.span_of, segments)
        wanted = {s for first, last in plan.runs for s in range(first, last + 1)}
        assert plan.missing == 0
        assert 0 < len(wanted) < opened.spans.span_count // 2
        result = await replay(opened, segments, name="heads", max_concurrency=2)
        assert result.spans == len(wanted) and result.failed_runs == 0
        loaded = {i for i in range(opened.spans.span_count) if opened.spans.state(i) is SpanState.UNCOMPRESSED}
        assert loaded == wanted
        before = len(blob.reads)
        for name in layer.names[::2]:
            ino = opened.tree.resolve(name.encode())
            assert len(await opened.reader.read(ino, 0, HEAD)) == HEAD
        assert len(blob.reads) == before
        # files the document does not name are still fetched on demand
        ino = opened.tree.resolve(layer.names[1].encode())
        await opened.reader.read(ino, 0, HEAD)
        assert len(blob.reads) > before
    finally:
        await resolver.release(opened)


async def test_plan_keeps_first_access_order_and_skips_unknown_paths(
    layer: BigFilesLayer, tmp_path: Path, executor: ThreadPoolExecutor
) -> None:
    request, _ = layer.request(65536)
    resolver = LayerResolver(tmp_path, executor=executor)
    opened = await resolver.acquire(request)
    try:
        last, first = layer.names[-1], layer.names[0]
        plan = plan_spans(opened.tree, opened.spans.span_of,
                          [Segment(last, 0, HEAD), Segment("no/such/file", 0, 1), Segment(first, 0, HEAD)])  # fmt: skip
        assert plan.missing == 1
        assert plan.runs[0][0] > plan.runs[-1][0]  # the last file's span comes first, as recorded
        assert plan.runs[-1][0] == 0
    finally:
        await resolver.release(opened)


async def test_background_fetcher_waits_while_held(
    layer: BigFilesLayer, tmp_path: Path, executor: ThreadPoolExecutor
) -> None:
    background = BackgroundFetcher(BackgroundFetchOptions(silence_period_msec=0, fetch_period_msec=0))
    background.hold()
    resolver = LayerResolver(tmp_path, executor=executor, background=background)
    opened = await resolver.acquire(layer.request(65536)[0])
    background.start()
    try:
        await asyncio.sleep(0.3)  # long enough for many unheld steps (fetch period 0)
        assert background.statistics().spans_fetched == 0
        background.unhold()
        for _ in range(200):
            if background.statistics().spans_fetched:
                break
            await asyncio.sleep(0.01)
        assert background.statistics().spans_fetched > 0
    finally:
        await background.aclose()
        await resolver.release(opened)


async def test_scheduler_loads_runs_of_all_layers_in_first_access_order(
    tmp_path: Path, executor: ThreadPoolExecutor
) -> None:
    """Two layers replayed at once: with one run in flight, spans arrive in the recorded time order,
    whichever layer they belong to."""
    a, b = big_files_layer(files=4, seed=11), big_files_layer(files=4, seed=12)
    resolver = LayerResolver(tmp_path, executor=executor)
    (request_a, blob_a), (request_b, blob_b) = a.request(65536), b.request(65536)
    order: list[str] = []
    for label, blob in (("a", blob_a), ("b", blob_b)):
        original = blob.read_at

        async def read_at(
            offset: int, length: int, _label: str = label, _original: Callable[[int, int], Awaitable[bytes]] = original
        ) -> bytes:
            order.append(_label)
            return await _original(offset, length)

        blob.read_at = read_at  # type: ignore[method-assign]
    layer_a, layer_b = await resolver.acquire(request_a), await resolver.acquire(request_b)
    background = BackgroundFetcher()
    scheduler = ReplayScheduler(max_concurrency=1, background=background)
    try:
        # the gzip header reads at open are done; from here on only replay reads
        order.clear()
        segments_a = [Segment(a.names[0], 0, HEAD, 0), Segment(a.names[3], 0, HEAD, 30)]
        segments_b = [Segment(b.names[0], 0, HEAD, 10), Segment(b.names[3], 0, HEAD, 20)]
        done = [scheduler.add(layer_a, segments_a, name="w"), scheduler.add(layer_b, segments_b, name="w")]
        assert background._holds == 1
        results = await asyncio.gather(*done)
        assert [r.failed_runs for r in results] == [0, 0]
        assert order == ["a", "b", "b", "a"]
        assert background._holds == 0
    finally:
        await scheduler.aclose()
        await resolver.release(layer_a)
        await resolver.release(layer_b)


async def test_a_closed_layers_queued_replay_is_dropped_and_the_other_layers_go_on(
    tmp_path: Path, executor: ThreadPoolExecutor
) -> None:
    a, b = big_files_layer(files=4, seed=11), big_files_layer(files=4, seed=12)
    resolver = LayerResolver(tmp_path, executor=executor)
    (request_a, blob_a), (request_b, blob_b) = a.request(65536), b.request(65536)
    layer_a, layer_b = await resolver.acquire(request_a), await resolver.acquire(request_b)
    scheduler = ReplayScheduler(max_concurrency=1)
    try:
        before_a, before_b = len(blob_a.reads), len(blob_b.reads)
        done_a = scheduler.add(layer_a, [Segment(name, 0, HEAD, 10 * i) for i, name in enumerate(a.names)], name="w")
        done_b = scheduler.add(layer_b, [Segment(name, 0, HEAD, 10 * i + 5) for i, name in enumerate(b.names)])
        scheduler.drop(layer_a)  # before the worker has sent anything: a's mount failed, or it was unmounted
        result_a, result_b = await asyncio.wait_for(asyncio.gather(done_a, done_b), 30)
        assert len(blob_a.reads) == before_a  # none of a's runs went out, and its replay still ended
        assert result_a.failed_runs == 0
        assert result_b.failed_runs == 0 and result_b.spans == 4
        assert len(blob_b.reads) == before_b + 4
        scheduler.drop(layer_a)  # nothing queued for it: no effect
    finally:
        await scheduler.aclose()
        await resolver.release(layer_a)
        await resolver.release(layer_b)

"""BackgroundFetcher on a manual clock: silence period, rate, round robin, drop policies, pause on mount."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
from fs_blobs import MemoryBlob
from fs_layers import BuiltLayer, TarWriter, build_layer, compressible

from soci.cache import MemorySpanCache
from soci.formats.zinfo import zinfo_from_blob
from soci.fs.background import BackgroundFetcher
from soci.fs.clock import ManualClock
from soci.fs.options import BackgroundFetchOptions
from soci.fs.spans import SpanManager, SpanState

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def layer() -> BuiltLayer:
    import random

    rng = random.Random(9)
    w = TarWriter()
    for i in range(4):
        w.file(f"f{i}", compressible(rng, 100_000) + rng.randbytes(60_000))
    built = build_layer(w.finish(), level=1)
    assert built.ztoc.max_span_id >= 3
    return built


@pytest.fixture(scope="module")
def executor() -> Iterator[ThreadPoolExecutor]:
    with ThreadPoolExecutor(2) as pool:
        yield pool


def manager(layer: BuiltLayer, executor: ThreadPoolExecutor, name: str) -> tuple[SpanManager, MemoryBlob]:
    z = layer.ztoc
    blob = MemoryBlob(layer.blob)
    spans = SpanManager(
        zinfo_from_blob(z.compression_algorithm, z.checkpoints), z.span_digests,
        compressed_size=z.compressed_archive_size, uncompressed_size=z.uncompressed_archive_size,
        blob=blob, cache=MemorySpanCache(100), executor=executor, name=name,
    )  # fmt: skip
    return spans, blob


async def settle(clock: ManualClock, bf: BackgroundFetcher | None = None) -> None:
    """Let the fetcher run until it waits on the clock again, or has nothing left (executor work included)."""
    for _ in range(1000):
        await asyncio.sleep(0.002)
        if clock.sleepers or (bf is not None and not bf.statistics().queued_layers):
            return
    raise AssertionError("the background fetcher never went back to sleep")


def fetcher(clock: ManualClock, **kw: object) -> BackgroundFetcher:
    settings: dict[str, object] = {"silence_period_msec": 1000, "fetch_period_msec": 100, **kw}
    opts = BackgroundFetchOptions(**settings)  # type: ignore[arg-type]
    return BackgroundFetcher(opts, clock=clock)


async def test_waits_for_the_silence_period_then_fetches_one_span_per_period(
    layer: BuiltLayer, executor: ThreadPoolExecutor
) -> None:
    clock = ManualClock()
    bf = fetcher(clock)
    spans, blob = manager(layer, executor, "a")
    bf.start()
    assert bf.add(spans)
    await settle(clock)
    await clock.advance(0.9)
    await settle(clock)
    assert blob.reads == []
    await clock.advance(0.1)
    await settle(clock)
    assert len(blob.reads) == 1
    await clock.advance(0.05)
    await settle(clock)
    assert len(blob.reads) == 1
    await clock.advance(0.05)
    await settle(clock)
    assert len(blob.reads) == 2
    assert [spans.state(i) for i in range(3)] == [SpanState.FETCHED, SpanState.FETCHED, SpanState.UNREQUESTED]
    await bf.aclose()


async def test_round_robin_until_every_span_is_fetched(layer: BuiltLayer, executor: ThreadPoolExecutor) -> None:
    clock = ManualClock()
    bf = fetcher(clock)
    a, blob_a = manager(layer, executor, "a")
    b, blob_b = manager(layer, executor, "b")
    bf.start()
    bf.add(a)
    bf.add(b)
    await clock.advance(1.0)
    await settle(clock)
    order = []
    for _ in range(2 * a.span_count + 2):
        before = (len(blob_a.reads), len(blob_b.reads))
        await clock.advance(0.1)
        await settle(clock, bf)
        after = (len(blob_a.reads), len(blob_b.reads))
        order.append("a" if after[0] > before[0] else "b" if after[1] > before[1] else "-")
    assert "".join(order).startswith("ba" * (a.span_count - 1))  # a went first, before this loop
    assert all(a.state(i) is SpanState.FETCHED for i in range(a.span_count))
    assert all(b.state(i) is SpanState.FETCHED for i in range(b.span_count))
    assert bf.statistics().queued_layers == 0
    assert bf.statistics().spans_fetched == 2 * a.span_count
    await bf.aclose()


async def test_spans_already_read_are_skipped(layer: BuiltLayer, executor: ThreadPoolExecutor) -> None:
    clock = ManualClock()
    bf = fetcher(clock, silence_period_msec=0)
    spans, blob = manager(layer, executor, "a")
    start, end = spans.uncompressed_range(0)
    await spans.read(start, end)
    await spans.wait_idle()
    bf.start()
    bf.add(spans)
    await settle(clock)
    assert spans.state(1) is SpanState.FETCHED  # the first background fetch went to span 1
    assert len(blob.reads) == 2
    await bf.aclose()


async def test_a_new_mount_pauses_fetching(layer: BuiltLayer, executor: ThreadPoolExecutor) -> None:
    clock = ManualClock()
    bf = fetcher(clock)
    a, blob_a = manager(layer, executor, "a")
    b, _ = manager(layer, executor, "b")
    bf.start()
    bf.add(a)
    await clock.advance(1.0)
    await settle(clock)
    assert len(blob_a.reads) == 1
    bf.add(b)  # pauses everything for the silence period again
    await clock.advance(0.5)
    await settle(clock)
    assert len(blob_a.reads) == 1
    await clock.advance(0.5)
    await settle(clock)
    assert len(blob_a.reads) == 2
    await bf.aclose()


def test_drop_policies(layer: BuiltLayer, executor: ThreadPoolExecutor) -> None:
    clock = ManualClock()
    a, _ = manager(layer, executor, "a")
    b, _ = manager(layer, executor, "b")
    newest = fetcher(clock, max_queue_size=1, drop_policy="newest")
    assert newest.add(a) and not newest.add(b)
    assert newest.statistics().evicted == 1
    oldest = fetcher(clock, max_queue_size=1, drop_policy="oldest")
    assert oldest.add(a) and oldest.add(b)
    assert oldest.statistics().evicted == 1 and oldest.statistics().queued_layers == 1
    unlimited = fetcher(clock, max_queue_size=-1)
    assert all(unlimited.add(m) for m in (a, b, a))
    disabled = fetcher(clock, disable=True)
    assert not disabled.add(a)


def test_unknown_drop_policy_is_rejected() -> None:
    from soci.errors import InvalidArgument

    with pytest.raises(InvalidArgument):
        BackgroundFetchOptions(drop_policy="random")  # type: ignore[arg-type]

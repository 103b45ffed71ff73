"""SpanManager against an in-memory blob: correctness, sharing, merging, verification, failures, cache reuse."""

from __future__ import annotations

import asyncio
import itertools
import random
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from fs_blobs import MemoryBlob
from fs_layers import BuiltLayer, TarWriter, build_layer, build_plain_layer, compressible

from soci.cache import DirectorySpanCache, MemorySpanCache, SpanCache
from soci.errors import DataLoss, FailedPrecondition, FormatError, Unavailable
from soci.formats.zinfo import zinfo_from_blob
from soci.fs.spans import TRANSITIONS, SpanManager, SpanState, check_span_table

pytestmark = pytest.mark.timeout(60)


def _many_spans_tar() -> bytes:
    rng = random.Random(5)
    w = TarWriter()
    for i in range(12):
        w.file(f"f{i}", compressible(rng, 150_000) if i % 2 else rng.randbytes(120_000))
    return w.finish()


@pytest.fixture(scope="module")
def gz_layer() -> BuiltLayer:
    layer = build_layer(_many_spans_tar(), level=1)
    assert layer.ztoc.max_span_id >= 8
    return layer


@pytest.fixture(scope="module")
def executor() -> Iterator[ThreadPoolExecutor]:
    with ThreadPoolExecutor(2) as pool:
        yield pool


def _manager(layer: BuiltLayer, blob: MemoryBlob, cache: SpanCache, executor: ThreadPoolExecutor,
             **kw: object) -> SpanManager:  # fmt: skip
    z = layer.ztoc
    return SpanManager(
        zinfo_from_blob(z.compression_algorithm, z.checkpoints), z.span_digests,
        compressed_size=z.compressed_archive_size, uncompressed_size=z.uncompressed_archive_size,
        blob=blob, cache=cache, executor=executor, name="test-layer", **kw,  # type: ignore[arg-type]
    )  # fmt: skip


def test_transition_table_is_enforced_for_every_pair(gz_layer: BuiltLayer, executor: ThreadPoolExecutor) -> None:
    manager = _manager(gz_layer, MemoryBlob(gz_layer.blob), MemorySpanCache(), executor)
    for old, new in itertools.product(SpanState, SpanState):
        manager._states[0] = old
        if new in TRANSITIONS[old]:
            manager._transition(0, new)
            assert manager.state(0) is new
        else:
            with pytest.raises(FailedPrecondition):
                manager._transition(0, new)
            assert manager.state(0) is old


@pytest.mark.parametrize("kind", ["gzip", "plain"])
@pytest.mark.parametrize("cache_kind", ["directory", "memory"])
async def test_random_reads_equal_the_tar(kind: str, cache_kind: str, tmp_path: Path,
                                          executor: ThreadPoolExecutor) -> None:  # fmt: skip
    layer = build_layer(_many_spans_tar(), level=1) if kind == "gzip" else build_plain_layer(_many_spans_tar())
    cache: SpanCache = DirectorySpanCache(tmp_path) if cache_kind == "directory" else MemorySpanCache(3)
    manager = _manager(layer, MemoryBlob(layer.blob), cache, executor)
    size = layer.ztoc.uncompressed_archive_size
    rng = random.Random(11)
    ranges = [(0, size), (size - 1, size + 100), (0, 1)]
    ranges += [(a, a + rng.randrange(1, 300_000)) for a in (rng.randrange(size) for _ in range(40))]
    for start, end in ranges:
        assert await manager.read(start, end) == layer.tar[start : min(end, size)]
    assert await manager.read(size, size + 10) == b""
    await manager.aclose()


async def test_concurrent_readers_of_one_span_share_one_fetch(gz_layer: BuiltLayer, tmp_path: Path,
                                                              executor: ThreadPoolExecutor) -> None:  # fmt: skip
    blob = MemoryBlob(gz_layer.blob)
    manager = _manager(gz_layer, blob, DirectorySpanCache(tmp_path), executor)
    start = manager.uncompressed_range(3)[0]
    results = await asyncio.gather(*(manager.read(start + k * 100, start + k * 100 + 50) for k in range(20)))
    assert results == [gz_layer.tar[start + k * 100 : start + k * 100 + 50] for k in range(20)]
    c_start, c_end = manager.compressed_range(3)
    assert blob.reads == [(c_start, c_end - c_start)]
    await manager.wait_idle()
    assert manager.state(3) is SpanState.UNCOMPRESSED


async def test_adjacent_spans_merged_distant_spans_parallel(gz_layer: BuiltLayer, tmp_path: Path,
                                                            executor: ThreadPoolExecutor) -> None:  # fmt: skip
    blob = MemoryBlob(gz_layer.blob)
    manager = _manager(gz_layer, blob, DirectorySpanCache(tmp_path), executor)
    start = manager.uncompressed_range(1)[0]
    end = manager.uncompressed_range(3)[1]
    far = manager.uncompressed_range(7)
    got = list(await asyncio.gather(manager.read(start, end), manager.read(far[0], far[1])))
    assert got == [gz_layer.tar[start:end], gz_layer.tar[far[0] : far[1]]]
    c1, c3, c7 = manager.compressed_range(1), manager.compressed_range(3), manager.compressed_range(7)
    assert sorted(blob.reads) == [(c1[0], c3[1] - c1[0]), (c7[0], c7[1] - c7[0])]
    # all cached now: no more requests, whether the cache writes have finished or not
    again = await asyncio.gather(manager.read(start, end), manager.read(far[0], far[1]))
    assert list(again) == got
    await manager.wait_idle()
    assert await manager.read(start, end) == got[0]
    assert len(blob.reads) == 2


async def test_corrupt_span_is_refetched_and_never_served(gz_layer: BuiltLayer, tmp_path: Path,
                                                          executor: ThreadPoolExecutor) -> None:  # fmt: skip
    blob = MemoryBlob(gz_layer.blob)
    blob.corrupt_next = 2
    manager = _manager(gz_layer, blob, DirectorySpanCache(tmp_path), executor, retries=2)
    start, end = manager.uncompressed_range(2)
    assert await manager.read(start, end) == gz_layer.tar[start:end]
    assert len(blob.reads) == 3
    assert manager.statistics().verification_failures == 2


async def test_corruption_beyond_retries_fails_then_recovers(gz_layer: BuiltLayer, tmp_path: Path,
                                                             executor: ThreadPoolExecutor) -> None:  # fmt: skip
    blob = MemoryBlob(gz_layer.blob)
    blob.corrupt_next = 2
    cache = DirectorySpanCache(tmp_path)
    manager = _manager(gz_layer, blob, cache, executor, retries=1)
    start, end = manager.uncompressed_range(4)
    with pytest.raises(DataLoss):
        await manager.read(start, end)
    assert manager.state(4) is SpanState.UNREQUESTED
    assert not cache.contains("u4")
    assert await manager.read(start, end) == gz_layer.tar[start:end]


async def test_registry_failure_fails_the_read_and_a_later_read_succeeds(
    gz_layer: BuiltLayer, tmp_path: Path, executor: ThreadPoolExecutor
) -> None:
    blob = MemoryBlob(gz_layer.blob)
    blob.fail_next = 1
    manager = _manager(gz_layer, blob, DirectorySpanCache(tmp_path), executor)
    start, end = manager.uncompressed_range(0)
    with pytest.raises(Unavailable):
        await manager.read(start, end)
    assert manager.state(0) is SpanState.UNREQUESTED
    assert await manager.read(start, end) == gz_layer.tar[start:end]


async def test_fetch_returns_when_the_bytes_arrive_not_when_they_are_inflated(
    gz_layer: BuiltLayer, tmp_path: Path
) -> None:
    gate = threading.Event()
    with ThreadPoolExecutor(1) as one_thread:
        blocked = one_thread.submit(gate.wait)  # nothing can be verified, inflated or cached until the gate opens
        blob = MemoryBlob(gz_layer.blob)
        manager = _manager(gz_layer, blob, DirectorySpanCache(tmp_path), one_thread)
        await asyncio.wait_for(manager.fetch(2, 3), 10)
        assert len(blob.reads) == 1 and {manager.state(2), manager.state(3)} == {SpanState.REQUESTED}
        await manager.fetch(2, 3)  # in flight already: no second request
        assert len(blob.reads) == 1
        gate.set()
        blocked.result()
        await manager.wait_idle()
        assert {manager.state(2), manager.state(3)} == {SpanState.UNCOMPRESSED}
        start, end = manager.uncompressed_range(2)[0], manager.uncompressed_range(3)[1]
        assert await manager.read(start, end) == gz_layer.tar[start:end]
        assert len(blob.reads) == 1
        blob.fail_next = 1
        with pytest.raises(Unavailable):
            await manager.fetch(5, 5)
        assert manager.state(5) is SpanState.UNREQUESTED
        await manager.aclose()


async def test_slow_blob_times_out(gz_layer: BuiltLayer, tmp_path: Path, executor: ThreadPoolExecutor) -> None:
    blob = MemoryBlob(gz_layer.blob)
    blob.delay_sec = 5
    manager = _manager(gz_layer, blob, DirectorySpanCache(tmp_path), executor, fetch_timeout_sec=0.05)
    with pytest.raises(Unavailable, match="timed out"):
        await manager.read(0, 10)
    assert manager.state(0) is SpanState.UNREQUESTED


async def test_second_manager_serves_from_the_cache(gz_layer: BuiltLayer, tmp_path: Path,
                                                    executor: ThreadPoolExecutor) -> None:  # fmt: skip
    first = _manager(gz_layer, MemoryBlob(gz_layer.blob), DirectorySpanCache(tmp_path), executor)
    size = gz_layer.ztoc.uncompressed_archive_size
    assert await first.read(0, size) == gz_layer.tar[:size]
    await first.aclose()  # lets the cache writes finish
    blob = MemoryBlob(gz_layer.blob)
    second = _manager(gz_layer, blob, DirectorySpanCache(tmp_path), executor)
    assert await second.read(0, size) == gz_layer.tar[:size]
    assert blob.reads == []
    assert second.statistics().fetched_bytes == first.statistics().fetched_bytes


async def test_background_fetch_then_read(gz_layer: BuiltLayer, tmp_path: Path, executor: ThreadPoolExecutor) -> None:
    blob = MemoryBlob(gz_layer.blob)
    cache = DirectorySpanCache(tmp_path)
    manager = _manager(gz_layer, blob, cache, executor)
    assert await manager.prefetch_compressed(5)
    assert not await manager.prefetch_compressed(5)
    assert manager.state(5) is SpanState.FETCHED and cache.contains("c5")
    start, end = manager.uncompressed_range(5)
    assert await manager.read(start, end) == gz_layer.tar[start:end]
    await manager.wait_idle()
    assert manager.state(5) is SpanState.UNCOMPRESSED
    assert len(blob.reads) == 1
    assert not cache.contains("c5") and cache.contains("u5")


async def test_sequential_reader_triggers_readahead(gz_layer: BuiltLayer, tmp_path: Path,
                                                    executor: ThreadPoolExecutor) -> None:  # fmt: skip
    blob = MemoryBlob(gz_layer.blob)
    manager = _manager(gz_layer, blob, DirectorySpanCache(tmp_path), executor, readahead_spans=2)
    size = gz_layer.ztoc.uncompressed_archive_size
    start, end = manager.uncompressed_range(0)
    await manager.read(start, end, readahead_limit=size)
    await manager.wait_idle()
    assert [manager.state(i) for i in range(4)] == [SpanState.UNCOMPRESSED] * 3 + [SpanState.UNREQUESTED]
    assert len(blob.reads) == 2  # spans 1 and 2 in one request
    # the readahead limit (end of the file) is respected
    manager2 = _manager(gz_layer, MemoryBlob(gz_layer.blob), MemorySpanCache(), executor, readahead_spans=2)
    await manager2.read(start, end, readahead_limit=end)
    await manager2.wait_idle()
    assert manager2.state(1) is SpanState.UNREQUESTED


async def test_a_read_that_misses_fetches_the_next_span_after_it(
    gz_layer: BuiltLayer, executor: ThreadPoolExecutor
) -> None:
    blob = MemoryBlob(gz_layer.blob)
    manager = _manager(gz_layer, blob, MemorySpanCache(), executor, neighbour_spans=1)
    start, end = manager.uncompressed_range(3)
    assert await manager.read(start + 10, start + 20) == gz_layer.tar[start + 10 : start + 20]
    await manager.wait_idle()
    assert [manager.state(i) for i in range(2, 6)] == [SpanState.UNREQUESTED] + [SpanState.UNCOMPRESSED] * 2 + [
        SpanState.UNREQUESTED
    ]
    (first_at, first_length), (second_at, second_length) = blob.reads
    # the missed span alone first: its reader does not wait for the next
    assert (first_at, first_at + first_length) == manager.compressed_range(3)
    assert (second_at, second_at + second_length) == manager.compressed_range(4)
    # a read served without a fetch starts nothing, nor does one whose file goes on past the span (readahead's)
    assert await manager.read(start, end) == gz_layer.tar[start:end]
    next_start = manager.uncompressed_range(6)[0]
    await manager.read(next_start, next_start + 1, readahead_limit=gz_layer.ztoc.uncompressed_archive_size)
    await manager.wait_idle()
    assert manager.state(7) is not SpanState.UNREQUESTED  # the sequential readahead's, not a neighbour's
    assert len(blob.reads) == 4


async def test_no_neighbour_is_fetched_when_turned_off(gz_layer: BuiltLayer, executor: ThreadPoolExecutor) -> None:
    blob = MemoryBlob(gz_layer.blob)
    manager = _manager(gz_layer, blob, MemorySpanCache(), executor)  # neighbour_spans defaults to 0
    start, _ = manager.uncompressed_range(3)
    await manager.read(start, start + 1)
    await manager.wait_idle()
    assert manager.state(4) is SpanState.UNREQUESTED and len(blob.reads) == 1


def test_span_table_checks(gz_layer: BuiltLayer) -> None:
    z = gz_layer.ztoc
    zinfo = zinfo_from_blob(z.compression_algorithm, z.checkpoints)
    sizes = {"compressed_size": z.compressed_archive_size, "uncompressed_size": z.uncompressed_archive_size}
    check_span_table(zinfo, z.span_digests, z.max_span_id, **sizes)
    with pytest.raises(FormatError, match="max span id"):
        check_span_table(zinfo, z.span_digests, z.max_span_id + 1, **sizes)
    with pytest.raises(FormatError, match="max span id"):
        check_span_table(zinfo, z.span_digests[:-1], z.max_span_id, **sizes)

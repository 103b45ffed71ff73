"""The read log: every read of an attached layer is logged; a window of it becomes a document."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from lo_layers import BigFilesLayer, big_files_layer

from soci.errors import FailedPrecondition
from soci.formats import load_order as lo
from soci.fs.layer import LayerResolver
from soci.loadorder.record import READ_LOG, LogWindow, ReadLog, collect

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def layer() -> BigFilesLayer:
    return big_files_layer(files=6, size=200_000, seed=9)


@pytest.fixture(scope="module")
def executor() -> Iterator[ThreadPoolExecutor]:
    with ThreadPoolExecutor(2) as pool:
        yield pool


async def _workload(resolver: LayerResolver, layer: BigFilesLayer, log: ReadLog) -> None:
    """Deterministic: the head of every other file, then a middle piece of the first."""
    opened = await resolver.acquire(layer.request(65536)[0])
    log.attach(opened)
    try:
        for name in layer.names[::2]:
            await opened.reader.read(opened.tree.resolve(name.encode()), 0, 4096)
        await opened.reader.read(opened.tree.resolve(layer.names[0].encode()), 100_000, 10_000)
    finally:
        await resolver.release(opened)


async def test_recording_a_deterministic_workload_twice_gives_the_same_document(
    layer: BigFilesLayer, tmp_path: Path, executor: ThreadPoolExecutor
) -> None:
    resolver = LayerResolver(tmp_path, executor=executor)
    log = ReadLog(tmp_path / READ_LOG)
    documents = []
    try:
        for _ in range(2):
            window = LogWindow(tmp_path / READ_LOG)
            await _workload(resolver, layer, log)
            window.stop()
            documents.append(collect(window, "heads", [layer.digest]))
    finally:
        log.close()
    first, second = documents
    assert lo.identity_bytes(first) == lo.identity_bytes(second)
    (entry,) = first.layers
    assert entry.digest == layer.digest
    assert [(s.path, s.offset, s.length) for s in entry.segments] == [
        (layer.names[0], 0, 4096),
        (layer.names[2], 0, 4096),
        (layer.names[4], 0, 4096),
        (layer.names[0], 98304, 12288),  # widened to pages
    ]
    # each line of the log is one read
    lines = [json.loads(line) for line in (tmp_path / READ_LOG).read_text().splitlines()]
    assert len(lines) == 8 and all(line[1] == layer.digest for line in lines)


async def test_window_keeps_only_its_image_layers(
    layer: BigFilesLayer, tmp_path: Path, executor: ThreadPoolExecutor
) -> None:
    resolver = LayerResolver(tmp_path, executor=executor)
    log = ReadLog(tmp_path / READ_LOG)
    try:
        window = LogWindow(tmp_path / READ_LOG)
        await _workload(resolver, layer, log)
        window.stop()
    finally:
        log.close()
    assert collect(window, "other", ["sha256:" + "0" * 64]).layers == ()


def test_removed_log_is_recreated_and_missing_log_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(FailedPrecondition, match="not recording reads"):
        LogWindow(tmp_path / READ_LOG)
    log = ReadLog(tmp_path / READ_LOG)
    try:
        os.unlink(tmp_path / READ_LOG)
        log._check()  # what the next read does at most once a second
        assert (tmp_path / READ_LOG).exists()
    finally:
        log.close()

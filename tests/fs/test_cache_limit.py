"""The spancache size limit through the layer resolver: reading twice the limit keeps the directory within
10 % of it at every moment, every byte read is correct, and a second pass (refetching evicted spans) too."""

from __future__ import annotations

import dataclasses
import hashlib
import random
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from fs_blobs import MemoryBlob
from fs_layers import BuiltLayer, TarWriter, build_layer

from soci.fs.layer import SPANCACHE_DIR, LayerRequest, LayerResolver
from soci.fs.options import DirectoryCacheOptions, FsOptions
from soci.testing.files import file_bytes_under

pytestmark = pytest.mark.timeout(120)

LIMIT = 4 << 20
FILES = 8
FILE_SIZE = LIMIT * 2 // FILES  # the layer holds twice the limit (incompressible)
CHUNK = 128 << 10


@pytest.fixture(scope="module")
def layer() -> tuple[BuiltLayer, dict[str, bytes]]:
    rng = random.Random(12)
    files = {f"data/f{i}": rng.randbytes(FILE_SIZE) for i in range(FILES)}
    w = TarWriter()
    for name, data in files.items():
        w.file(name, data)
    return build_layer(w.finish()), files


class Sampler:
    """Samples the directory's size from another thread for as long as the reads run."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.peak = 0
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, file_bytes_under(self.root))
            self.samples += 1

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


@pytest.fixture
def executor() -> Iterator[ThreadPoolExecutor]:
    with ThreadPoolExecutor(2) as pool:
        yield pool


async def read_all(resolver: LayerResolver, built: BuiltLayer, files: dict[str, bytes], root: Path) -> int:
    """Read every file in chunks; returns the peak directory size seen after any chunk."""
    layer = await resolver.acquire(LayerRequest(built.digest, built.ztoc_digest, built.ztoc_bytes,
                                                MemoryBlob(built.blob)))  # fmt: skip
    peak = 0
    try:
        for name, data in files.items():
            ino = layer.tree.resolve(name.encode())
            digest = hashlib.sha256()
            for offset in range(0, len(data), CHUNK):
                digest.update(await layer.reader.read(ino, offset, CHUNK))
                peak = max(peak, file_bytes_under(root))
            assert digest.hexdigest() == hashlib.sha256(data).hexdigest(), name
        await layer.spans.wait_idle()
    finally:
        await resolver.release(layer)
    return max(peak, file_bytes_under(root))


async def test_reading_twice_the_limit_stays_within_it(
    layer: tuple[BuiltLayer, dict[str, bytes]], tmp_path: Path, executor: ThreadPoolExecutor
) -> None:
    built, files = layer
    options = FsOptions(directory_cache=DirectoryCacheOptions(max_size_bytes=LIMIT))
    root = tmp_path / SPANCACHE_DIR
    resolver = LayerResolver(tmp_path, options, executor=executor)
    assert resolver.budget is not None and resolver.budget.max_size_bytes == LIMIT
    with Sampler(root) as sampler:
        first = await read_all(resolver, built, files, root)
        second = await read_all(resolver, built, files, root)  # evicted spans are fetched again
    await resolver.aclose()
    assert sampler.samples > 10
    assert resolver.budget.evictions > 0
    for peak in (first, second, sampler.peak):
        assert peak <= LIMIT * 1.1, (peak, LIMIT)
    assert resolver.budget.total_bytes == file_bytes_under(root)

    # a restart with a lower limit trims what is on disk at once
    lower = dataclasses.replace(options, directory_cache=DirectoryCacheOptions(max_size_bytes=LIMIT // 4))
    restarted = LayerResolver(tmp_path, lower, executor=executor)
    assert file_bytes_under(root) <= LIMIT // 4
    await restarted.aclose()


async def test_discarding_the_last_holder_deletes_the_layers_spans(
    layer: tuple[BuiltLayer, dict[str, bytes]], tmp_path: Path, executor: ThreadPoolExecutor
) -> None:
    built, files = layer
    resolver = LayerResolver(tmp_path, executor=executor)
    root = tmp_path / SPANCACHE_DIR
    request = LayerRequest(built.digest, built.ztoc_digest, built.ztoc_bytes, MemoryBlob(built.blob))
    first = await resolver.acquire(request)
    second = await resolver.acquire(request)
    ino = first.tree.resolve(b"data/f0")
    assert await first.reader.read(ino, 0, 10) == files["data/f0"][:10]
    await first.spans.wait_idle()
    assert file_bytes_under(root) > 0
    await resolver.release(second, discard=True)  # another mount still uses the layer: kept
    assert file_bytes_under(root) > 0
    await resolver.release(first)  # closed but not removed (a daemon stopping, a remount): kept
    assert file_bytes_under(root) > 0
    again = await resolver.acquire(request)
    await resolver.release(again, discard=True)
    assert file_bytes_under(root) == 0 and list(root.iterdir()) == []
    assert resolver.budget is not None and resolver.budget.total_bytes == 0
    await resolver.aclose()

"""A read-only or full span cache directory degrades to memory: one warning naming it, every read correct."""

from __future__ import annotations

import hashlib
import logging
import random
import subprocess
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from fs_blobs import MemoryBlob
from fs_layers import BuiltLayer, TarWriter, build_layer

from soci.cache import DirectorySpanCache, FallbackNotice, FallbackSpanCache, MemorySpanCache
from soci.fs.layer import SPANCACHE_DIR, LayerRequest, LayerResolver

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def layer() -> tuple[BuiltLayer, dict[str, bytes]]:
    rng = random.Random(5)
    files = {f"f{i}": rng.randbytes(512 << 10) for i in range(4)}  # 2 MiB, incompressible
    w = TarWriter()
    for name, data in files.items():
        w.file(name, data)
    return build_layer(w.finish()), files


@pytest.fixture
def executor() -> Iterator[ThreadPoolExecutor]:
    with ThreadPoolExecutor(2) as pool:
        yield pool


@pytest.fixture
def mounted() -> Iterator[list[Path]]:
    targets: list[Path] = []
    yield targets
    for target in reversed(targets):
        subprocess.run(["umount", str(target)], check=True)


def warnings_from(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


async def read_everything(tmp_path: Path, executor: ThreadPoolExecutor, built: BuiltLayer,
                          files: dict[str, bytes]) -> None:  # fmt: skip
    resolver = LayerResolver(tmp_path, executor=executor)
    for _ in range(2):  # the second pass is served from whatever cache there is
        layer = await resolver.acquire(LayerRequest(built.digest, built.ztoc_digest, built.ztoc_bytes,
                                                    MemoryBlob(built.blob)))  # fmt: skip
        for name, data in files.items():
            ino = layer.tree.resolve(name.encode())
            got = b"".join([await layer.reader.read(ino, off, 100_000) for off in range(0, len(data), 100_000)])
            assert hashlib.sha256(got).digest() == hashlib.sha256(data).digest(), name
        await layer.spans.wait_idle()
        await resolver.release(layer)
    await resolver.aclose()


async def test_read_only_directory(layer: tuple[BuiltLayer, dict[str, bytes]], tmp_path: Path,
                                   executor: ThreadPoolExecutor, mounted: list[Path],
                                   caplog: pytest.LogCaptureFixture) -> None:  # fmt: skip
    spancache = tmp_path / SPANCACHE_DIR
    spancache.mkdir(parents=True)
    subprocess.run(["mount", "--bind", str(spancache), str(spancache)], check=True)
    mounted.append(spancache)
    subprocess.run(["mount", "-o", "remount,bind,ro", str(spancache)], check=True)
    caplog.set_level(logging.WARNING)
    await read_everything(tmp_path, executor, *layer)
    warned = warnings_from(caplog)
    assert len(warned) == 1, warned
    assert str(spancache) in warned[0] and "Read-only file system" in warned[0]
    assert list(spancache.iterdir()) == []


async def test_full_directory(layer: tuple[BuiltLayer, dict[str, bytes]], tmp_path: Path,
                              executor: ThreadPoolExecutor, mounted: list[Path],
                              caplog: pytest.LogCaptureFixture) -> None:  # fmt: skip
    spancache = tmp_path / SPANCACHE_DIR
    spancache.mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(spancache)], check=True)
    mounted.append(spancache)
    # leave ~150 KiB free: the size limit (half of this filesystem) alone would never let it fill up
    (spancache / "filler").write_bytes(b"\0" * (870 << 10))
    caplog.set_level(logging.WARNING)
    await read_everything(tmp_path, executor, *layer)
    warned = warnings_from(caplog)
    assert len(warned) == 1, warned
    assert str(spancache) in warned[0] and "No space left on device" in warned[0]
    assert not [p for p in spancache.rglob(".tmp-*")]  # failed writes left nothing behind


def test_unreadable_entries_are_misses(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "u0").mkdir()  # reading it fails with IsADirectoryError
    notice = FallbackNotice()
    cache = FallbackSpanCache(tmp_path / "a", lambda: DirectorySpanCache(tmp_path / "a"), MemorySpanCache(), notice)
    assert cache.get("u0") is None and cache.degraded and notice.count == 1
    cache.put("u0", b"kept in memory")
    assert cache.get("u0") == b"kept in memory"
    assert cache.read("u0", 5, 2) == b"in"

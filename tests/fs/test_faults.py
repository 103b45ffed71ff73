"""Registry faults under a live mount: corrupt bytes, a registry dying mid-read, a slow registry; cache reuse.

A fault proxy (soci.testing.fault_proxy) sits between the mount and a real docker-registry.
"""

from __future__ import annotations

import asyncio
import errno
import hashlib
import io
import json
import os
import tarfile
from pathlib import Path

import pytest
from aiohttp import web
from fs_layers import BuiltLayer, build_layer, every_entry_type_tar
from fs_serve import needs_fuse_and_registry, serve

from soci.errors import FormatError
from soci.fs.options import BlobOptions, FsOptions
from soci.registry.transport import CORRUPT_ANSWER_RETRIES
from soci.testing.fault_proxy import Fault, FaultProxy
from soci.testing.registry_server import RegistryServer

pytestmark = needs_fuse_and_registry(180)

FILE = "data/text.txt"  # 900 kB over several 64 KiB spans


@pytest.fixture(scope="module")
def layer() -> BuiltLayer:
    return build_layer(every_entry_type_tar())


def expected_sha(layer: BuiltLayer, path: str) -> str:
    with tarfile.open(fileobj=io.BytesIO(layer.tar)) as tar:
        f = tar.extractfile(path)
        assert f is not None
        return hashlib.sha256(f.read()).hexdigest()


def read_sha(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def options(retries: int = 3) -> FsOptions:
    return FsOptions(blob=BlobOptions(max_span_verification_retries=retries))


class SlowProxy(FaultProxy):
    """Answers blob requests only after ``delay_sec``."""

    delay_sec = 1.0

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        if "/blobs/" in request.path:
            await asyncio.sleep(self.delay_sec)
        return await super()._handle(request)


async def test_flipped_bits_are_detected_retried_and_never_served(
    registry: RegistryServer, repo: str, layer: BuiltLayer, tmp_path: Path
) -> None:
    registry.push_blob(repo, layer.blob)
    async with (
        FaultProxy(registry.url) as proxy,
        serve(proxy.host, repo, [layer], tmp_path, options=options(retries=3)) as served,
    ):
        proxy.add(Fault("flip", match=layer.digest, times=2, flip_at=5000))
        got = await asyncio.to_thread(read_sha, served.paths["layer0"] / FILE)
        assert got == expected_sha(layer, FILE)
        assert served.layers["layer0"].statistics().verification_failures == 2
        assert all(f.times == 0 for f in proxy.faults)


async def test_corruption_beyond_retries_fails_with_eio_and_the_mount_stays_up(
    registry: RegistryServer, repo: str, layer: BuiltLayer, tmp_path: Path
) -> None:
    registry.push_blob(repo, layer.blob)
    async with (
        FaultProxy(registry.url) as proxy,
        serve(proxy.host, repo, [layer], tmp_path, options=options(retries=1)) as served,
    ):
        root = served.paths["layer0"]
        proxy.add(Fault("flip", match=layer.digest, times=1000, flip_at=5000))
        with pytest.raises(OSError) as info:
            await asyncio.to_thread(read_sha, root / FILE)
        assert info.value.errno == errno.EIO
        state_file = served.mount.mountpoint / ".soci-snapshotter" / f"{layer.digest}.json"
        state = json.loads(await asyncio.to_thread(state_file.read_bytes))
        assert "do not match" in state["error"] or "does not match" in state["error"]
        assert "etc" in await asyncio.to_thread(os.listdir, root)
        proxy.faults.clear()  # the registry serves good bytes again
        assert await asyncio.to_thread(read_sha, root / FILE) == expected_sha(layer, FILE)


async def test_registry_dying_mid_read_fails_with_eio_then_recovers(
    registry: RegistryServer, repo: str, layer: BuiltLayer, tmp_path: Path
) -> None:
    registry.push_blob(repo, layer.blob)
    async with FaultProxy(registry.url) as proxy, serve(proxy.host, repo, [layer], tmp_path) as served:
        root = served.paths["layer0"]
        proxy.add(Fault("drop", match=layer.digest, times=1000, after_bytes=300))
        with pytest.raises(OSError) as info:
            await asyncio.to_thread(read_sha, root / FILE)
        assert info.value.errno == errno.EIO
        assert len(proxy.requests_to(layer.digest)) > 1  # the client retried before giving up
        proxy.faults.clear()
        assert await asyncio.to_thread(read_sha, root / FILE) == expected_sha(layer, FILE)


async def test_slow_registry_blocks_reads_without_failing_them(
    registry: RegistryServer, repo: str, layer: BuiltLayer, tmp_path: Path
) -> None:
    registry.push_blob(repo, layer.blob)
    async with SlowProxy(registry.url) as proxy, serve(proxy.host, repo, [layer], tmp_path) as served:
        got = await asyncio.to_thread(read_sha, served.paths["layer0"] / FILE)
        assert got == expected_sha(layer, FILE)


async def test_second_mount_reads_only_from_the_span_cache(
    registry: RegistryServer, repo: str, layer: BuiltLayer, tmp_path: Path
) -> None:
    registry.push_blob(repo, layer.blob)
    names = ["etc/hostname", FILE, "data/random.bin", "links/a"]
    async with FaultProxy(registry.url) as proxy:
        async with serve(proxy.host, repo, [layer], tmp_path) as served:
            first = [await asyncio.to_thread(read_sha, served.paths["layer0"] / n) for n in names]
            await served.layers["layer0"].spans.wait_idle()
        assert proxy.requests_to(layer.digest)
        proxy.seen.clear()
        async with serve(proxy.host, repo, [layer], tmp_path) as served:
            second = [await asyncio.to_thread(read_sha, served.paths["layer0"] / n) for n in names]
            stats = served.layers["layer0"].statistics()
        assert second == first == [expected_sha(layer, n) for n in names]
        assert proxy.requests_to(layer.digest) == []
        assert stats.requests == 0 and stats.fetched_bytes > 0


async def test_corrupt_gzip_header_answer_is_fetched_again(
    registry: RegistryServer, repo: str, layer: BuiltLayer, tmp_path: Path
) -> None:
    registry.push_blob(repo, layer.blob)
    async with FaultProxy(registry.url) as proxy:
        # the first answer for the layer is the gzip header read: its magic byte arrives flipped once
        proxy.add(Fault("flip", match=layer.digest, times=1, flip_at=0))
        async with serve(proxy.host, repo, [layer], tmp_path) as served:
            assert proxy.faults[0].times == 0
            got = await asyncio.to_thread(read_sha, served.paths["layer0"] / FILE)
            assert got == expected_sha(layer, FILE)


async def test_gzip_header_corrupt_every_time_is_a_clean_error(
    registry: RegistryServer, repo: str, layer: BuiltLayer, tmp_path: Path
) -> None:
    registry.push_blob(repo, layer.blob)
    async with FaultProxy(registry.url) as proxy:
        proxy.add(Fault("flip", match=layer.digest, times=1000, flip_at=0))
        with pytest.raises(FormatError, match="gzip header") as info:
            async with serve(proxy.host, repo, [layer], tmp_path):
                pass
        assert "\n" not in str(info.value)
        assert len(proxy.requests_to(layer.digest)) == 1 + CORRUPT_ANSWER_RETRIES

"""ContainerdClient against a real containerd: content, labels, leases, images."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from soci.containerd.client import WRITE_CHUNK_BYTES, ContainerdClient
from soci.containerd.testing import ContainerdServer, containerd_available
from soci.errors import NotFound, SociError
from soci.formats.digest import sha256_digest

pytestmark = [
    pytest.mark.containerd,
    pytest.mark.root,
    pytest.mark.skipif(not containerd_available(), reason="containerd is needed"),
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root"),
]


@pytest.fixture(scope="module")
def containerd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ContainerdServer]:
    with ContainerdServer(tmp_path_factory.mktemp("ctrd")) as server:
        yield server


@pytest.fixture
async def client(containerd: ContainerdServer) -> AsyncIterator[ContainerdClient]:
    async with ContainerdClient(containerd.address, "client-test", timeout_sec=60) as c:
        yield c


async def _chunks(data: bytes, size: int) -> AsyncIterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


async def test_write_read_and_label_content(client: ContainerdClient) -> None:
    big = os.urandom(WRITE_CHUNK_BYTES * 2 + 123)
    digest = sha256_digest(big)
    async with client.lease():  # without a lease (or a GC root) containerd collects unreferenced content
        assert await client.write_content(digest, len(big), _chunks(big, 300_000), {"a": "1"})
        assert not await client.write_content(digest, len(big), [big], {"b": "2"})  # already there: labels added
        info = await client.content_info(digest)
        assert info is not None and info.size == len(big)
        assert info.labels["a"] == "1" and info.labels["b"] == "2"
        assert await client.read_content(digest) == big
        await client.update_content_labels(digest, {"a": ""})
        info = await client.content_info(digest)
        assert info is not None and "a" not in info.labels


async def test_content_that_does_not_match_its_digest_is_refused(client: ContainerdClient) -> None:
    data = b"some bytes"
    wrong = sha256_digest(b"other bytes")
    async with client.lease():
        with pytest.raises(SociError, match="write content"):
            await client.write_content(wrong, len(data), [data])
        assert await client.content_info(wrong) is None


async def test_image_records(client: ContainerdClient, containerd: ContainerdServer) -> None:
    config = b'{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}'
    async with client.lease():
        await client.write_content(sha256_digest(config), len(config), [config])
        await client.put_image("example.test/app:v1", "application/vnd.oci.image.config.v1+json",
                               sha256_digest(config), len(config))  # fmt: skip
        await client.put_image("example.test/app:v1", "application/vnd.oci.image.config.v1+json",
                               sha256_digest(config), len(config))  # an update, not an error  # fmt: skip
    image = await client.get_image("example.test/app:v1")
    assert image is not None and image.target.digest == sha256_digest(config)
    assert "example.test/app:v1" in containerd.ctr("-n", "client-test", "images", "ls", "-q").stdout
    await client.delete_image("example.test/app:v1", sync=True)
    assert await client.get_image("example.test/app:v1") is None
    with pytest.raises(NotFound):
        await client.delete_image("example.test/app:v1")


async def test_unreachable_containerd_is_unavailable(tmp_path: Path) -> None:
    from soci.errors import Unavailable

    async with ContainerdClient(str(tmp_path / "nothing.sock"), timeout_sec=5) as client:
        with pytest.raises(Unavailable):
            await client.ping()

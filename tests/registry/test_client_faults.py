"""Faults injected between the client and a real registry: retries, resumption, and no corrupt data."""

from __future__ import annotations

import base64
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from soci.errors import DataLoss, FailedPrecondition, Unavailable
from soci.registry import Credentials, RegistryClient, StaticCredentials, TransportOptions, resolve_hosts
from soci.registry.client import OCI_MANIFEST
from soci.registry.transport import CORRUPT_ANSWER_RETRIES
from soci.testing.fault_proxy import Fault, FaultProxy, digest_of
from soci.testing.registry_server import RegistryServer

pytestmark = pytest.mark.registry

FAST = TransportOptions(max_retries=3, min_wait_msec=1, max_wait_msec=20)


def client_via(proxy: FaultProxy, options: TransportOptions = FAST, **kwargs: object) -> RegistryClient:
    hosts = resolve_hosts(proxy.host, plain_http=True)
    return RegistryClient(proxy.host, hosts=hosts, transport_options=options, **kwargs)  # type: ignore[arg-type]


async def test_full_blob_resumes_after_connection_drops(plain_registry: RegistryServer, repo: str) -> None:
    data = os.urandom(200_000)
    digest = plain_registry.push_blob(repo, data)
    async with FaultProxy(plain_registry.url) as proxy, client_via(proxy) as client:
        proxy.add(Fault("drop", after_bytes=70_000)).add(Fault("drop", after_bytes=50_000))
        assert await client.get_blob(repo, digest) == data
        ranges = [r.headers.get("Range") for r in proxy.requests_to(digest)]
    assert ranges == [None, "bytes=70000-", "bytes=120000-"]


async def test_range_read_resumes_the_remainder(plain_registry: RegistryServer, repo: str) -> None:
    data = os.urandom(100_000)
    digest = plain_registry.push_blob(repo, data)
    async with FaultProxy(plain_registry.url) as proxy, client_via(proxy) as client:
        proxy.add(Fault("drop", after_bytes=4096))
        assert await client.read_blob_range(repo, digest, 10_000, 50_000) == data[10_000:60_000]
        ranges = [r.headers.get("Range") for r in proxy.requests_to(digest)]
    assert ranges == ["bytes=10000-59999", "bytes=14096-59999"]


async def test_server_ignoring_range_is_sliced(plain_registry: RegistryServer, repo: str) -> None:
    data = os.urandom(50_000)
    digest = plain_registry.push_blob(repo, data)
    async with FaultProxy(plain_registry.url) as proxy, client_via(proxy) as client:
        proxy.add(Fault("ignore_range", times=3))
        assert await client.read_blob_range(repo, digest, 30_000, 1000) == data[30_000:31_000]
        assert await client.read_blob_range(repo, digest, 49_990, 100) == data[49_990:]
        proxy.add(Fault("drop", after_bytes=20_000)).add(Fault("ignore_range"))
        assert await client.get_blob(repo, digest) == data


async def test_retryable_statuses_are_retried(plain_registry: RegistryServer, repo: str) -> None:
    data = os.urandom(1000)
    digest = plain_registry.push_blob(repo, data)
    async with FaultProxy(plain_registry.url) as proxy, client_via(proxy) as client:
        proxy.add(Fault("status", status=500)).add(Fault("status", status=503))
        proxy.add(Fault("status", status=429, retry_after="1"))
        assert await client.get_blob(repo, digest) == data
        assert len(proxy.requests_to(digest)) == 4


async def test_persistent_failure_is_bounded_and_clear(plain_registry: RegistryServer, repo: str) -> None:
    digest = plain_registry.push_blob(repo, b"z")
    async with FaultProxy(plain_registry.url) as proxy, client_via(proxy) as client:
        proxy.add(Fault("status", status=502, times=100))
        with pytest.raises(Unavailable) as caught:
            await client.get_blob(repo, digest)
        assert len(proxy.requests_to(digest)) == 1 + FAST.max_retries
        assert "502" in str(caught.value) and digest in str(caught.value)
        data = os.urandom(10_000)
        big = plain_registry.push_blob(repo, data)
        proxy.faults = [Fault("drop", after_bytes=10, times=100, match=big)]
        with pytest.raises(Unavailable, match="connection broke"):
            await client.read_blob_range(repo, big, 0, 5000)


async def test_501_is_not_retried(plain_registry: RegistryServer, repo: str) -> None:
    digest = plain_registry.push_blob(repo, b"q")
    async with FaultProxy(plain_registry.url) as proxy, client_via(proxy) as client:
        proxy.add(Fault("status", status=501, times=10))
        with pytest.raises(FailedPrecondition):
            await client.get_blob(repo, digest)
        assert len(proxy.requests_to(digest)) == 1


async def test_flipped_bits_never_return_corrupt_blobs(plain_registry: RegistryServer, repo: str) -> None:
    data = os.urandom(3 << 20)
    digest = plain_registry.push_blob(repo, data)
    async with FaultProxy(plain_registry.url) as proxy, client_via(proxy) as client:
        # one corrupted answer is fetched again; a blob corrupted every time is DataLoss after the bound
        proxy.add(Fault("flip", flip_at=len(data) // 2))
        assert await client.get_blob(repo, digest) == data
        assert len(proxy.requests_to(digest)) == 2
        proxy.add(Fault("flip", flip_at=len(data) // 2, times=1000))
        with pytest.raises(DataLoss, match="does not match") as info:
            await client.get_blob(repo, digest)
        assert "\n" not in str(info.value)
        assert len(proxy.requests_to(digest)) == 2 + 1 + CORRUPT_ANSWER_RETRIES
        proxy.faults.clear()
        proxy.add(Fault("flip", flip_at=len(data) - 1))
        received = 0
        with pytest.raises(DataLoss):
            async for chunk in client.open_blob_stream(repo, digest):
                received += len(chunk)
        assert received < len(data), "the final chunk was yielded before verification"


async def test_flipped_manifest_is_fetched_again_then_data_loss(plain_registry: RegistryServer, repo: str) -> None:
    digest, _ = plain_registry.push_image(repo, "v1", [b"layer"])
    async with FaultProxy(plain_registry.url) as proxy, client_via(proxy) as client:
        proxy.add(Fault("flip", match="/manifests/", flip_at=30, times=2))
        data, _, got = await client.get_manifest(repo, digest)
        assert got == digest == digest_of(data)
        proxy.add(Fault("flip", match="/manifests/", flip_at=30, times=1000))
        with pytest.raises(DataLoss):
            await client.get_manifest(repo, digest)
        with pytest.raises(DataLoss, match="Docker-Content-Digest"):
            await client.get_manifest(repo, "v1")
        proxy.faults.clear()
        data, media_type, got = await client.get_manifest(repo, "v1")
    assert (media_type, got, digest_of(data)) == (OCI_MANIFEST, digest, digest)


async def test_redirect_to_another_host_drops_authorization(plain_registry: RegistryServer, repo: str) -> None:
    data = os.urandom(2000)
    digest = plain_registry.push_blob(repo, data)
    secret = "Basic " + base64.b64encode(b"user:redirect-secret").decode()
    async with (
        FaultProxy(plain_registry.url) as storage,
        FaultProxy(plain_registry.url, require_basic=secret) as front,
    ):
        front.add(Fault("redirect", location=storage.url, times=2))
        credentials = StaticCredentials(Credentials("user", "redirect-secret"))
        async with client_via(front, credentials=credentials) as client:
            assert await client.get_blob(repo, digest) == data
            assert await client.read_blob_range(repo, digest, 100, 50) == data[100:150]
        assert [r.headers.get("Authorization") for r in front.requests_to(digest)] == [None, secret, secret]
        assert len(storage.requests_to(digest)) == 2
        assert all("Authorization" not in r.headers for r in storage.seen)


async def test_failed_upload_restarts_unless_streamed(
    plain_registry: RegistryServer, repo: str, tmp_path: Path
) -> None:
    data = os.urandom(50_000)
    path = tmp_path / "blob"
    path.write_bytes(data)
    async with FaultProxy(plain_registry.url) as proxy, client_via(proxy) as client:
        proxy.add(Fault("status", status=500, method="PUT", match="/blobs/uploads/"))
        assert await client.push_blob(repo, digest_of(data), path) == "uploaded"
        assert len(proxy.requests_to("/blobs/uploads/", "POST")) == 2
        assert len(proxy.requests_to("/blobs/uploads/", "PUT")) == 2
        assert await client.get_blob(repo, digest_of(data)) == data

        async def stream() -> AsyncIterator[bytes]:
            yield data[::-1]

        proxy.add(Fault("status", status=500, method="PUT", match="/blobs/uploads/"))
        with pytest.raises(Unavailable):
            await client.push_blob(repo, digest_of(data[::-1]), stream(), len(data))
        assert len(proxy.requests_to("/blobs/uploads/", "PUT")) == 3


async def test_connection_refused_is_unavailable(tmp_path: Path) -> None:
    async with FaultProxy("http://127.0.0.1:9") as proxy:
        dead_host = proxy.host
    hosts = resolve_hosts(dead_host, plain_http=True)
    async with RegistryClient(dead_host, hosts=hosts, transport_options=FAST) as client:
        with pytest.raises(Unavailable, match="cannot connect"):
            await client.ping()

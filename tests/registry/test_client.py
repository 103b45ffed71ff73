"""RegistryClient against a real docker-registry 2.8 (plain HTTP)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web

from soci.errors import DataLoss, InvalidArgument, NotFound
from soci.registry import ClientOptions, RegistryClient, RemoteBlob, referrers_tag, resolve_hosts
from soci.registry.client import DOCKER_MANIFEST, OCI_INDEX, OCI_MANIFEST, encode_index
from soci.testing.fault_proxy import FaultProxy, digest_of
from soci.testing.registry_server import OCI_EMPTY_CONFIG, RegistryServer

pytestmark = pytest.mark.registry

ARTIFACT_TYPE = "application/vnd.amazon.soci.index.v1+json"


def client_for(registry: RegistryServer, **kwargs: object) -> RegistryClient:
    return RegistryClient(registry.host, hosts=resolve_hosts(registry.host, plain_http=True), **kwargs)  # type: ignore[arg-type]


def image_manifest(
    config_digest: str, layers: list[tuple[str, int]], subject: dict[str, object] | None = None
) -> bytes:
    manifest: dict[str, object] = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_EMPTY_CONFIG, "digest": config_digest, "size": 2},
        "layers": [{"mediaType": "application/octet-stream", "digest": d, "size": s} for d, s in layers],
    }
    if subject is not None:
        manifest["artifactType"] = ARTIFACT_TYPE
        manifest["subject"] = subject
    return json.dumps(manifest).encode()


async def test_ping_push_and_read_blob(plain_registry: RegistryServer, repo: str) -> None:
    data = os.urandom(300_000)
    digest = digest_of(data)
    async with client_for(plain_registry) as client:
        await client.ping()
        assert not await client.blob_exists(repo, digest)
        assert await client.push_blob(repo, digest, data) == "uploaded"
        assert await client.push_blob(repo, digest, data) == "exists"
        assert await client.blob_exists(repo, digest)
        assert await client.blob_size(repo, digest) == len(data)
        assert await client.get_blob(repo, digest, size=len(data)) == data
        chunks = [c async for c in client.open_blob_stream(repo, digest)]
        assert b"".join(chunks) == data
        assert await client.read_blob_range(repo, digest, 1234, 5000) == data[1234:6234]
        assert await client.read_blob_range(repo, digest, len(data) - 10, 100) == data[-10:]
        assert await client.read_blob_range(repo, digest, 0, 0) == b""


async def test_missing_blob_and_manifest_are_not_found(plain_registry: RegistryServer, repo: str) -> None:
    absent = digest_of(b"never pushed " + repo.encode())
    async with client_for(plain_registry) as client:
        with pytest.raises(NotFound):
            await client.get_blob(repo, absent)
        with pytest.raises(NotFound):
            await client.blob_size(repo, absent)
        with pytest.raises(NotFound):
            await client.get_manifest(repo, "nope")
        with pytest.raises(NotFound):
            await client.read_blob_range(repo, absent, 0, 10)


async def test_wrong_digest_upload_is_data_loss(plain_registry: RegistryServer, repo: str) -> None:
    async with client_for(plain_registry) as client:
        with pytest.raises(DataLoss):
            await client.push_blob(repo, digest_of(b"other"), b"these bytes")
        with pytest.raises(InvalidArgument):
            await client.push_blob(repo, digest_of(b"x"), b"x", size=2)


async def test_chunked_upload_from_bytes_file_and_stream(
    plain_registry: RegistryServer, repo: str, tmp_path: Path
) -> None:
    options = ClientOptions(monolithic_upload_max_bytes=100_000, upload_chunk_bytes=64 * 1024)
    data = os.urandom(333_333)
    path = tmp_path / "blob"
    path.write_bytes(data)

    async def stream(payload: bytes) -> AsyncIterator[bytes]:
        for start in range(0, len(payload), 10_000):
            yield payload[start : start + 10_000]

    async with client_for(plain_registry, options=options) as client:
        for index, source in enumerate(["bytes", "path", "stream", "small-stream"]):
            payload = data + bytes([index])
            if source == "small-stream":
                payload = payload[:5000]
            digest = digest_of(payload)
            if source == "bytes":
                outcome = await client.push_blob(repo, digest, payload)
            elif source == "path":
                path.write_bytes(payload)
                outcome = await client.push_blob(repo, digest, path)
            else:
                outcome = await client.push_blob(repo, digest, stream(payload), len(payload))
            assert outcome == "uploaded"
            assert await client.get_blob(repo, digest) == payload


async def test_cross_repository_mount(plain_registry: RegistryServer, repo: str) -> None:
    data = os.urandom(10_000)
    digest = digest_of(data)
    async with client_for(plain_registry) as client:
        await client.push_blob(repo, digest, data)
        assert await client.push_blob(repo + "-copy", digest, data, mount_from=repo) == "mounted"
        assert await client.get_blob(repo + "-copy", digest) == data
        # a source that lacks the blob falls back to uploading
        other = os.urandom(100)
        assert await client.push_blob(repo + "-copy", digest_of(other), other, mount_from=repo) == "uploaded"


async def test_manifests_by_tag_and_digest(plain_registry: RegistryServer, repo: str) -> None:
    config_digest = plain_registry.push_blob(repo, b"{}")
    layer = os.urandom(1000)
    layer_digest = plain_registry.push_blob(repo, layer)
    manifest = image_manifest(config_digest, [(layer_digest, len(layer))])
    async with client_for(plain_registry) as client:
        digest = await client.put_manifest(repo, "v1", manifest, OCI_MANIFEST)
        assert digest == digest_of(manifest)
        assert await client.get_manifest(repo, "v1") == (manifest, OCI_MANIFEST, digest)
        assert await client.get_manifest(repo, digest) == (manifest, OCI_MANIFEST, digest)
        assert await client.head_manifest(repo, "v1") == {
            "mediaType": OCI_MANIFEST,
            "digest": digest,
            "size": len(manifest),
        }
        index = encode_index([{"mediaType": OCI_MANIFEST, "digest": digest, "size": len(manifest)}])
        index_digest = await client.put_manifest(repo, digest_of(index), index, OCI_INDEX)
        assert (await client.get_manifest(repo, index_digest))[1] == OCI_INDEX
        with pytest.raises(InvalidArgument):
            await client.put_manifest(repo, digest_of(b"other"), manifest, OCI_MANIFEST)
        await client.put_manifest(repo, "v2", manifest, OCI_MANIFEST)
        assert sorted(await client.list_tags(repo)) == ["v1", "v2"]
        await client.delete_manifest(repo, digest)
        with pytest.raises(NotFound):
            await client.get_manifest(repo, digest)


async def test_docker_manifest_media_type_is_reported(plain_registry: RegistryServer, repo: str) -> None:
    config = b'{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}'
    config_digest = plain_registry.push_blob(repo, config)
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": DOCKER_MANIFEST,
            "config": {
                "mediaType": "application/vnd.docker.container.image.v1+json",
                "digest": config_digest,
                "size": len(config),
            },
            "layers": [],
        }
    ).encode()
    plain_registry.push_manifest(repo, "docker", manifest, DOCKER_MANIFEST)
    async with client_for(plain_registry) as client:
        data, media_type, digest = await client.get_manifest(repo, "docker")
    assert (data, media_type, digest) == (manifest, DOCKER_MANIFEST, digest_of(manifest))


async def test_list_tags_follows_pagination(plain_registry: RegistryServer, repo: str) -> None:
    _, manifest = plain_registry.push_image(repo, "t0", [b"layer"])
    for number in range(1, 7):
        plain_registry.push_manifest(repo, f"t{number}", manifest)
    async with client_for(plain_registry, options=ClientOptions(tags_page_size=2)) as client:
        assert sorted(await client.list_tags(repo)) == [f"t{n}" for n in range(7)]


async def test_stream_stopped_early_releases_cleanly(plain_registry: RegistryServer, repo: str) -> None:
    data = os.urandom(4 << 20)
    digest = plain_registry.push_blob(repo, data)
    async with client_for(plain_registry) as client:
        async with contextlib.aclosing(client.open_blob_stream(repo, digest)) as stream:
            async for _chunk in stream:
                break
        assert await client.read_blob_range(repo, digest, 100, 10) == data[100:110]


async def test_remote_blob(plain_registry: RegistryServer, repo: str) -> None:
    data = os.urandom(70_000)
    digest = plain_registry.push_blob(repo, data)
    async with client_for(plain_registry) as client:
        blob = await RemoteBlob.open(client, repo, digest)
        assert blob.size == len(data)
        assert await blob.read_at(65_000, 10_000) == data[65_000:]
        assert await blob.read_at(len(data), 5) == b""
        reads = await asyncio.gather(*(blob.read_at(i * 1000, 1000) for i in range(70)))
        assert b"".join(reads) == data
        await blob.refresh()
        assert blob.size == len(data)


async def test_referrers_fall_back_to_the_tag_index(plain_registry: RegistryServer, repo: str) -> None:
    subject_digest, subject = plain_registry.push_image(repo, "app", [b"layer-bytes"])
    config_digest = plain_registry.push_blob(repo, b"{}")
    subject_descriptor = {"mediaType": OCI_MANIFEST, "digest": subject_digest, "size": len(subject)}
    async with client_for(plain_registry) as client:
        assert await client.referrers(repo, subject_digest) == []
        assert not await client.referrers_api_supported(repo, subject_digest)
        descriptors = []
        for n in range(2):
            ztoc = f"ztoc {n}".encode()
            ztoc_digest = await client.push_blob(repo, digest_of(ztoc), ztoc) and digest_of(ztoc)
            manifest = image_manifest(config_digest, [(ztoc_digest, len(ztoc))], subject_descriptor)
            digest = await client.put_manifest(repo, digest_of(manifest), manifest, OCI_MANIFEST)
            descriptor = {
                "mediaType": OCI_MANIFEST,
                "digest": digest,
                "size": len(manifest),
                "artifactType": ARTIFACT_TYPE if n == 0 else "application/other",
                "annotations": {"n": str(n)},
            }
            await client.add_referrer(repo, subject_digest, descriptor)
            descriptors.append(descriptor)
        await client.add_referrer(repo, subject_digest, descriptors[0])  # idempotent
        assert await client.referrers(repo, subject_digest) == descriptors
        assert await client.referrers(repo, subject_digest, ARTIFACT_TYPE) == descriptors[:1]
        assert referrers_tag(subject_digest) in await client.list_tags(repo)
        raw, media_type, _ = await client.get_manifest(repo, referrers_tag(subject_digest))
        assert media_type == OCI_INDEX and raw == encode_index(descriptors)

        await client.remove_referrer(repo, subject_digest, descriptors[0]["digest"])  # type: ignore[arg-type]
        assert await client.referrers(repo, subject_digest) == descriptors[1:]
        await client.remove_referrer(repo, subject_digest, descriptors[1]["digest"])  # type: ignore[arg-type]
        assert await client.referrers(repo, subject_digest) == []
        assert referrers_tag(subject_digest) not in await client.list_tags(repo)


class _HeldReferrers(FaultProxy):
    """Holds each referrers API request until a fallback tag request has arrived (5 s at most)."""

    def __init__(self, upstream: str) -> None:
        super().__init__(upstream)
        self.tag_asked = asyncio.Event()
        self.overlapped: list[bool] = []

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        if "/manifests/sha256-" in request.path:
            self.tag_asked.set()
        if "/referrers/" in request.path:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.tag_asked.wait(), 5)
            self.overlapped.append(self.tag_asked.is_set())
        return await super()._handle(request)


async def test_the_first_referrers_lookup_asks_the_api_and_the_fallback_tag_at_once(
    plain_registry: RegistryServer, repo: str
) -> None:
    subject_digest, _ = plain_registry.push_image(repo, "app", [b"layer-bytes"])
    async with (
        _HeldReferrers(plain_registry.url) as proxy,
        RegistryClient(proxy.host, hosts=resolve_hosts(proxy.host, plain_http=True)) as client,
    ):
        assert await client.referrers(repo, subject_digest) == []
        assert proxy.overlapped == [True]  # the tag was asked while the API's answer was still pending
        assert await client.referrers(repo, subject_digest) == []  # the API is known to be missing now
        assert len(proxy.requests_to("/referrers/")) == 1
        assert len(proxy.requests_to("/manifests/" + referrers_tag(subject_digest))) == 2


async def test_concurrent_add_referrer_keeps_every_referrer(plain_registry: RegistryServer, repo: str) -> None:
    subject_digest, subject = plain_registry.push_image(repo, "app", [b"layer"])
    subject_descriptor = {"mediaType": OCI_MANIFEST, "digest": subject_digest, "size": len(subject)}
    config_digest = plain_registry.push_blob(repo, b"{}")
    options = ClientOptions(referrers_settle_sec=0.1, referrers_max_attempts=20)
    # separate clients behave like separate pushing processes; two tasks also share one client
    clients = [client_for(plain_registry, options=options) for _ in range(5)]
    writers = [*clients, clients[0]]
    descriptors = []
    for n in range(len(writers) * 2):
        ztoc = f"ztoc {n}".encode()
        manifest = image_manifest(
            config_digest, [(plain_registry.push_blob(repo, ztoc), len(ztoc))], subject_descriptor
        )
        digest = plain_registry.push_manifest(repo, digest_of(manifest), manifest)
        descriptors.append(
            {"mediaType": OCI_MANIFEST, "digest": digest, "size": len(manifest), "artifactType": ARTIFACT_TYPE}
        )
    try:
        await asyncio.gather(
            *(writers[n % len(writers)].add_referrer(repo, subject_digest, d) for n, d in enumerate(descriptors))
        )
        found = await clients[0].referrers(repo, subject_digest)
    finally:
        for client in clients:
            await client.aclose()
    assert sorted(str(d["digest"]) for d in found) == sorted(str(d["digest"]) for d in descriptors)


def test_encode_index_uses_go_field_order_and_escapes() -> None:
    descriptor = {
        "artifactType": "a/b",
        "annotations": {"z": "<&>", "a": "1"},
        "size": 3,
        "platform": {"os": "linux", "architecture": "amd64"},
        "digest": "sha256:" + "0" * 64,
        "mediaType": OCI_MANIFEST,
        "unknown": "dropped",
    }
    expected = (
        '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{'
        '"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:' + "0" * 64 + '","size":3,'
        '"annotations":{"a":"1","z":"\\u003c\\u0026\\u003e"},"platform":{"architecture":"amd64","os":"linux"},'
        '"artifactType":"a/b"}]}'
    )
    assert encode_index([descriptor]).decode() == expected
    assert json.loads(encode_index([])) == {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": []}

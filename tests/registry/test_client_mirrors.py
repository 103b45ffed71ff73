"""Mirrors from hosts.toml: a dead mirror falls through to the next, pull-through caches serve pulls."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from soci.errors import Unavailable
from soci.registry import RegistryClient, TransportOptions
from soci.testing.fault_proxy import digest_of
from soci.testing.registry_server import RegistryServer, free_port, write_hosts_toml

pytestmark = pytest.mark.registry

QUICK = TransportOptions(max_retries=1, min_wait_msec=1, max_wait_msec=10)


@pytest.fixture(scope="module")
def upstream() -> Iterator[RegistryServer]:
    with RegistryServer() as server:
        yield server


@pytest.fixture(scope="module")
def pull_through(upstream: RegistryServer) -> Iterator[RegistryServer]:
    with RegistryServer(proxy_remote=upstream.url) as server:
        yield server


def dead_url() -> str:
    return f"http://127.0.0.1:{free_port()}"


async def test_dead_mirror_falls_through_to_pull_through_cache(
    upstream: RegistryServer, pull_through: RegistryServer, tmp_path: Path, repo: str
) -> None:
    layer = os.urandom(20_000)
    manifest_digest, manifest = upstream.push_image(repo, "v1", [layer])
    # the server itself is unreachable too, so everything must come through the second mirror
    write_hosts_toml(tmp_path, "images.example", server=dead_url(), mirrors=[dead_url(), pull_through.url])
    async with RegistryClient("images.example", hosts_dir=tmp_path, transport_options=QUICK) as client:
        assert [h.base_url for h in client.hosts][1] == pull_through.url + "/v2"
        data, _, digest = await client.get_manifest(repo, "v1")
        assert (data, digest) == (manifest, manifest_digest)
        assert await client.get_blob(repo, digest_of(layer)) == layer
        assert await client.read_blob_range(repo, digest_of(layer), 5, 5) == layer[5:10]


async def test_mirror_without_the_object_falls_through_to_server(
    upstream: RegistryServer, tmp_path: Path, repo: str
) -> None:
    layer = os.urandom(1000)
    upstream.push_image(repo, "v1", [layer])
    with RegistryServer() as empty_mirror:
        write_hosts_toml(tmp_path, upstream.host, server=upstream.url, mirrors=[empty_mirror.url])
        async with RegistryClient(upstream.host, hosts_dir=tmp_path, transport_options=QUICK) as client:
            assert await client.get_blob(repo, digest_of(layer)) == layer
            manifest, media_type, _ = await client.get_manifest(repo, "v1")
            # pushes skip mirrors without the push capability
            await client.put_manifest(repo, "v2", manifest, media_type)
        status, _, _ = empty_mirror.http_request("GET", f"/v2/{repo}/tags/list")
        assert status == 404, "the manifest push went to a pull-only mirror"
    assert "v2" in upstream_tags(upstream, repo)


def upstream_tags(registry: RegistryServer, repo: str) -> list[str]:
    status, _, body = registry.http_request("GET", f"/v2/{repo}/tags/list")
    assert status == 200
    return list(json.loads(body)["tags"])


async def test_all_endpoints_down_is_unavailable(tmp_path: Path) -> None:
    write_hosts_toml(tmp_path, "down.example", server=dead_url(), mirrors=[dead_url()])
    async with RegistryClient("down.example", hosts_dir=tmp_path, transport_options=QUICK) as client:
        with pytest.raises(Unavailable, match="cannot connect"):
            await client.get_manifest("a/b", "latest")

"""Registry-to-registry convert, create + push, and discovery against a real docker-registry on loopback."""

from __future__ import annotations

import asyncio
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from soci.cli.main import cli
from soci.errors import NoIndexError
from soci.formats import soci_index as si
from soci.formats.digest import sha256_digest
from soci.formats.oci import MEDIA_TYPE_OCI_CONFIG, MEDIA_TYPE_OCI_MANIFEST, Descriptor, Index, Manifest
from soci.index.discover import FOUND_V1_REFERRERS, FOUND_V2_ANNOTATION, discover_index, fetch_index
from soci.registry import Credentials, RegistryClient, StaticCredentials
from soci.testing.images import Layer, gzip_layer, random_tree_tar, write_oci_layout
from soci.testing.registry_server import DEFAULT_USERS, RegistryServer, registry_available

pytestmark = [
    pytest.mark.registry,
    pytest.mark.skipif(not registry_available(), reason="docker-registry is not installed"),
]


@pytest.fixture(scope="module")
def registry() -> Iterator[RegistryServer]:
    with RegistryServer() as server:
        yield server


@pytest.fixture(scope="module")
def image(registry: RegistryServer, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, list[Layer]]:
    layers = [gzip_layer(random_tree_tar(seed, files=120)) for seed in (11, 12, 13)]
    layout = tmp_path_factory.mktemp("layout")
    write_oci_layout(layout, layers)
    ref = f"{registry.host}/remote/app:v1"
    subprocess.run(
        ["skopeo", "copy", "--quiet", "--dest-tls-verify=false", f"oci:{layout}:latest", f"docker://{ref}"],
        check=True,
    )
    return ref, layers


def soci(root: Path, *args: str) -> str:
    result = CliRunner().invoke(cli, ["--root", str(root), *args])
    assert result.exit_code == 0, result.output
    return result.output


def test_convert_remote_then_skopeo_pull(
    registry: RegistryServer, image: tuple[str, list[Layer]], tmp_path: Path
) -> None:
    src, layers = image
    dst = f"{registry.host}/remote/app:v1-soci"
    gets_before = {
        layer.descriptor().digest: registry.completed_gets("blobs", layer.descriptor().digest) for layer in layers
    }
    soci(tmp_path / "root", "convert", "--remote", "--plain-http", "--min-layer-size", "0",
         "--span-size", "65536", src, dst)  # fmt: skip
    for layer in layers:  # each layer streamed exactly once, and mounted (not downloaded again) for the push
        digest = layer.descriptor().digest
        assert registry.completed_gets("blobs", digest) - gets_before[digest] == 1, digest

    out = tmp_path / "pulled"
    subprocess.run(
        ["skopeo", "copy", "--quiet", "--all", "--src-tls-verify=false", f"docker://{dst}", f"oci:{out}:x"],
        check=True,
    )
    top_digest = json.loads((out / "index.json").read_bytes())["manifests"][0]["digest"]
    top = Index.unmarshal((out / "blobs" / "sha256" / top_digest[7:]).read_bytes())
    assert top.manifests is not None
    # skopeo 1.9 re-encodes the index without descriptor artifactType; the annotations survive, and discovery
    # goes through the image manifest's annotation anyway.
    soci_desc = next(d for d in top.manifests if si.ANNOTATION_IMAGE_MANIFEST_DIGEST in (d.annotations or {}))
    image_desc = next(d for d in top.manifests if d is not soci_desc)
    manifest = Manifest.unmarshal((out / "blobs" / "sha256" / image_desc.digest[7:]).read_bytes())
    assert manifest.layers == tuple(layer.descriptor() for layer in layers)

    async def discover() -> None:
        async with RegistryClient(registry.host, plain_http=True) as client:
            found = await discover_index(client, "remote/app", image_desc.digest)
            assert found.found_by == FOUND_V2_ANNOTATION and found.index_digest == soci_desc.digest
            index = await fetch_index(client, "remote/app", found.index_digest)
            assert len(index.ztocs()) == 3
            with pytest.raises(NoIndexError):
                src_manifest_digest = (await client.get_manifest("remote/app", "v1"))[2]
                await discover_index(client, "remote/app", src_manifest_digest)

    asyncio.run(discover())


def test_create_remote_push_and_discover_v1(
    registry: RegistryServer, image: tuple[str, list[Layer]], tmp_path: Path
) -> None:
    src, _ = image
    root = tmp_path / "root"
    soci(root, "create", "--remote", "--plain-http", "--min-layer-size", "0", src)
    soci(root, "push", "--plain-http", src)

    async def discover() -> None:
        async with RegistryClient(registry.host, plain_http=True) as client:
            digest = (await client.get_manifest("remote/app", "v1"))[2]
            with pytest.raises(NoIndexError):
                await discover_index(client, "remote/app", digest)  # v1 is off by default, as upstream
            found = await discover_index(client, "remote/app", digest, v1_enabled=True)
            assert found.found_by == FOUND_V1_REFERRERS
            index = await fetch_index(client, "remote/app", found.index_digest)
            assert index.manifest.subject is not None and index.manifest.subject.digest == digest
            for ztoc in index.ztocs():
                assert await client.blob_exists("remote/app", ztoc.digest)

    asyncio.run(discover())
    again = soci(root, "push", "--plain-http", "--existing-index", "skip", src)
    assert "already has" not in again  # the same index is not "another" index


def test_convert_remote_rejects_untagged_destination(registry: RegistryServer, tmp_path: Path) -> None:
    result = CliRunner().invoke(
        cli, ["--root", str(tmp_path), "convert", "--remote", "--plain-http", f"{registry.host}/a:b",
              f"{registry.host}/a@sha256:" + "0" * 64],
    )  # fmt: skip
    assert result.exit_code == 1
    assert "tagged reference" in result.output


def _push_test_image(registry: RegistryServer, repo: str, tag: str, layers: list[Layer]) -> None:
    config = json.dumps({
        "architecture": "amd64", "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": [sha256_digest(layer.tar) for layer in layers]},
    }).encode()  # fmt: skip
    descriptors = tuple(
        Descriptor(layer.media_type, registry.push_blob(repo, layer.blob), len(layer.blob)) for layer in layers
    )
    manifest = Manifest(
        config=Descriptor(MEDIA_TYPE_OCI_CONFIG, registry.push_blob(repo, config), len(config)),
        layers=descriptors,
        media_type=MEDIA_TYPE_OCI_MANIFEST,
    )
    registry.push_manifest(repo, tag, manifest.marshal())


@pytest.mark.parametrize("mode", ["tls-htpasswd", "token"])
def test_every_auth_mode(mode: str, tmp_path: Path) -> None:
    """convert --remote, create --remote and push through basic auth over TLS (CA from hosts.toml) and tokens."""
    server = RegistryServer(tls=True, auth="htpasswd") if mode == "tls-htpasswd" else RegistryServer(auth="token")
    with server as registry:
        layers = [gzip_layer(random_tree_tar(seed, files=60)) for seed in (21, 22)]
        _push_test_image(registry, "auth/app", "v1", layers)
        hosts = tmp_path / "certs.d"
        registry.write_hosts_toml(hosts)
        user, password = next(iter(DEFAULT_USERS.items()))
        flags = ["--hosts-dir", str(hosts), "--user", f"{user}:{password}"]
        if mode == "token":
            flags.append("--plain-http")
        src, dst = f"{registry.host}/auth/app:v1", f"{registry.host}/auth/app:v1-soci"
        root = tmp_path / "root"
        soci(root, "convert", "--remote", *flags, "--min-layer-size", "0", src, dst)
        soci(root, "create", "--remote", *flags, "--min-layer-size", "0", src)
        soci(root, "push", *flags, src)
        without = CliRunner().invoke(cli, ["--root", str(root), "push", "--hosts-dir", str(hosts),
                                           *(["--plain-http"] if mode == "token" else []), src])  # fmt: skip
        assert without.exit_code == 1
        assert password not in without.output

        async def check() -> None:
            creds = StaticCredentials(Credentials(user, password))
            async with RegistryClient(registry.host, hosts_dir=hosts, plain_http=mode == "token",
                                      credentials=creds) as client:  # fmt: skip
                data, _, _ = await client.get_manifest("auth/app", "v1-soci")
                top = Index.unmarshal(data)
                image = next(d for d in top.manifests or () if not d.artifact_type)
                assert (await discover_index(client, "auth/app", image.digest)).found_by == FOUND_V2_ANNOTATION
                digest = (await client.get_manifest("auth/app", "v1"))[2]
                found = await discover_index(client, "auth/app", digest, v1_enabled=True)
                assert found.found_by == FOUND_V1_REFERRERS

        asyncio.run(check())

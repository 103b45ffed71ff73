"""`soci create REF` and `soci convert SRC DST` on images that containerd pulled (its content store)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from soci.cli.main import cli
from soci.containerd.testing import ContainerdServer, containerd_available
from soci.formats import soci_index as si
from soci.formats.oci import Index, Manifest
from soci.index.discover import FOUND_V1_REFERRERS, FOUND_V2_ANNOTATION, discover_index
from soci.registry import RegistryClient
from soci.testing.images import gzip_layer, random_tree_tar, write_oci_layout
from soci.testing.registry_server import RegistryServer, registry_available

pytestmark = [
    pytest.mark.containerd,
    pytest.mark.registry,
    pytest.mark.root,
    pytest.mark.skipif(not containerd_available() or not registry_available(), reason="needs containerd, registry"),
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root"),
]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RegistryServer, ContainerdServer, str]]:
    layout = tmp_path_factory.mktemp("layout")
    write_oci_layout(layout, [gzip_layer(random_tree_tar(seed, files=80)) for seed in (31, 32)])
    with RegistryServer() as registry, ContainerdServer(tmp_path_factory.mktemp("ctrd")) as containerd:
        ref = f"{registry.host}/ctrd/app:v1"
        subprocess.run(["skopeo", "copy", "--quiet", "--dest-tls-verify=false", f"oci:{layout}:latest",
                        f"docker://{ref}"], check=True)  # fmt: skip
        containerd.ctr("images", "pull", "--plain-http", ref)
        yield registry, containerd, ref


def soci(containerd: ContainerdServer, root: Path, *args: str) -> str:
    result = CliRunner().invoke(cli, ["--address", containerd.address, "--root", str(root), *args])
    assert result.exit_code == 0, result.output
    return result.output


def test_create_from_containerd_then_push(stack: tuple[RegistryServer, ContainerdServer, str], tmp_path: Path) -> None:
    registry, containerd, ref = stack
    out = soci(containerd, tmp_path, "create", "--min-layer-size", "0", ref)
    assert out.count(" -> ztoc ") == 2
    soci(containerd, tmp_path, "push", "--plain-http", ref)

    async def check() -> None:
        async with RegistryClient(registry.host, plain_http=True) as client:
            digest = (await client.get_manifest("ctrd/app", "v1"))[2]
            found = await discover_index(client, "ctrd/app", digest, v1_enabled=True)
            assert found.found_by == FOUND_V1_REFERRERS

    asyncio.run(check())


def test_convert_in_containerd_then_push_with_ctr(
    stack: tuple[RegistryServer, ContainerdServer, str], tmp_path: Path
) -> None:
    registry, containerd, ref = stack
    dst = f"{registry.host}/ctrd/app:v1-soci"
    soci(containerd, tmp_path, "convert", "--min-layer-size", "0", ref, dst)
    listed = containerd.ctr("images", "ls", "-q").stdout.split()
    assert dst in listed
    # containerd has every blob of the new image, and can push it as it is
    containerd.ctr("images", "push", "--plain-http", dst)

    async def check() -> None:
        async with RegistryClient(registry.host, plain_http=True) as client:
            data, _, _ = await client.get_manifest("ctrd/app", "v1-soci")
            top = Index.unmarshal(data)
            image = next(d for d in top.manifests or () if not d.artifact_type)
            found = await discover_index(client, "ctrd/app", image.digest)
            assert found.found_by == FOUND_V2_ANNOTATION
            manifest = Manifest.unmarshal((await client.get_manifest("ctrd/app", image.digest))[0])
            assert (manifest.annotations or {})[si.ANNOTATION_INDEX_DIGEST] == found.index_digest
            for ztoc in si.parse_index((await client.get_manifest("ctrd/app", found.index_digest))[0]).ztocs():
                assert await client.blob_exists("ctrd/app", ztoc.digest)

    asyncio.run(check())
    # GC labels tie the SOCI artifacts to the image: removing the image lets containerd collect them
    index_digest = json.loads(containerd.ctr("content", "get", _top_digest(containerd, dst)).stdout)["manifests"][-1][
        "digest"
    ]
    assert "containerd.io/gc.ref.content.ztoc.0" in containerd.ctr("content", "ls").stdout
    containerd.ctr("images", "rm", "--sync", dst)
    assert index_digest not in containerd.ctr("content", "ls", "-q").stdout


def _top_digest(containerd: ContainerdServer, name: str) -> str:
    for line in containerd.ctr("images", "ls").stdout.splitlines():
        if line.startswith(name + " "):
            return next(word for word in line.split() if word.startswith("sha256:"))
    raise AssertionError(f"{name} not listed")


def test_missing_image_is_a_clear_error(stack: tuple[RegistryServer, ContainerdServer, str], tmp_path: Path) -> None:
    _, containerd, _ = stack
    result = CliRunner().invoke(cli, ["--address", containerd.address, "--root", str(tmp_path), "create", "nope:1"])
    assert result.exit_code == 1
    assert "not found in containerd" in result.output

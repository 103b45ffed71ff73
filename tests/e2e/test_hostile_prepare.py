"""Hostile SOCI artifacts sent to the daemon through gRPC Prepare, with the real FUSE mounter.

The index and zTOC have valid digests (the registry stores whatever it is given), so only their parsers stand
between them and the snapshotter. A Prepare must then fall back (local unpack, or containerd's own unpack when
the index itself is unusable), say so in one warning line, count it, and leave no active snapshot row behind.
"""

from __future__ import annotations

import asyncio
import json
import random
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from e2e_images import BuiltImage, push_image
from e2e_stack import FUSE_MOUNTER, Stack, needs_stack, stack_running

from soci.containerd.client import ContainerdClient
from soci.errors import AlreadyExists
from soci.formats.digest import sha256_digest
from soci.formats.oci import MEDIA_TYPE_OCI_MANIFEST, Manifest
from soci.formats.soci_index import (
    ARTIFACT_TYPE_V2,
    EMPTY_CONFIG,
    EMPTY_CONFIG_DIGEST,
    build_index_manifest,
    ztoc_descriptor,
)
from soci.registry import RegistryClient
from soci.snapshotter import labels as lb
from soci.testing.registry_server import RegistryServer

pytestmark = [*needs_stack, pytest.mark.timeout(300)]

NAMESPACE = "hostile"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with (
        RegistryServer() as registry,
        stack_running(tmp_path_factory.mktemp("hostile"), registry, mounter=FUSE_MOUNTER) as s,
    ):
        yield s


@pytest.fixture(scope="module")
def image(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> BuiltImage:
    return push_image(stack.registry, tmp_path_factory.mktemp("img"), "hostile/app", "v1", seed=41)


async def _push_index(stack: Stack, repo: str, manifest: Manifest, ztoc: bytes) -> str:
    """An index naming ``ztoc`` (pushed as is, valid digest) for the first layer; returns the index digest."""
    layer = (manifest.layers or ())[0]
    digest = sha256_digest(ztoc)
    index = build_index_manifest(
        [ztoc_descriptor(digest, len(ztoc), layer, 1 << 22, disable_xattrs=False)],
        artifact_type=ARTIFACT_TYPE_V2,
        subject=None,
    )
    async with RegistryClient(stack.registry.host, plain_http=True) as client:
        await client.push_blob(repo, digest, ztoc)
        await client.push_blob(repo, EMPTY_CONFIG_DIGEST, EMPTY_CONFIG)
        data = index.marshal()
        return await client.put_manifest(repo, sha256_digest(data), data, MEDIA_TYPE_OCI_MANIFEST)


async def _image_manifest(stack: Stack, repo: str, tag: str) -> tuple[str, Manifest]:
    async with RegistryClient(stack.registry.host, plain_http=True) as client:
        data, _, digest = await client.get_manifest(repo, tag)
    return digest, Manifest.unmarshal(data, "image manifest")


def _hostile_ztocs() -> dict[str, bytes]:
    rng = random.Random(7)
    return {
        "random": rng.randbytes(4096),
        "ones": b"\xff" * 512,
        "tiny-root-offset": b"\x08\x00\x00\x00" + rng.randbytes(60),
        "empty-table": b"\x04\x00\x00\x00\x00\x00\x00\x00",
    }


def _row(stack: Stack, key: str) -> object:
    """The daemon's own snapshot row for ``key`` (None when there is none), asked on its socket: containerd's
    ``ctr snapshots ls`` lists only what containerd's metadata knows, not Prepares sent straight to the daemon."""

    async def stat() -> object:
        async with ContainerdClient(str(stack.daemon.socket), NAMESPACE, timeout_sec=60) as client:
            return await client.stat_snapshot("soci", key)

    return asyncio.run(stat())


def _fallback_count(stack: Stack) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{stack.metrics_port}/metrics", timeout=10) as response:
        text = response.read().decode()
    total = 0.0
    for line in text.splitlines():
        if line.startswith("soci_fs_operation_count{") and 'operation_type="remote_snapshot_fallback_count"' in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


@pytest.mark.parametrize("case", sorted(_hostile_ztocs()))
def test_hostile_ztoc_falls_back_to_local_unpack(stack: Stack, image: BuiltImage, case: str) -> None:
    repo = "hostile/app"
    manifest_digest, manifest = asyncio.run(_image_manifest(stack, repo, "v1"))
    index_digest = asyncio.run(_push_index(stack, repo, manifest, _hostile_ztocs()[case]))
    layer = (manifest.layers or ())[0]
    key = f"hostile-{case}"
    labels = {
        lb.TARGET_SNAPSHOT_REF: f"target-{case}",
        lb.CRI_IMAGE_REF: image.ref,
        lb.CRI_MANIFEST_DIGEST: manifest_digest,
        lb.CRI_LAYER_DIGEST: layer.digest,
        lb.TARGET_SOCI_INDEX_DIGEST: index_digest,
    }
    before = _fallback_count(stack)

    async def prepare() -> None:
        async with ContainerdClient(str(stack.daemon.socket), NAMESPACE, timeout_sec=240) as client:
            await client.prepare_snapshot("soci", key, "", labels)

    # the layer is unpacked here instead (ALREADY_EXISTS: the snapshotter made the target itself)
    with pytest.raises(AlreadyExists):
        asyncio.run(prepare())
    entries = [e for e in stack.log_entries() if e.get("key") == key]
    assert any(e.get("local-snapshot-prepared") == "true" for e in entries), entries
    warnings = [e for e in entries if e.get("remote-snapshot-prepared") == "false"]
    assert len(warnings) == 1 and "\n" not in str(warnings[0].get("msg", "")), warnings
    assert _fallback_count(stack) == before + 1
    assert _row(stack, key) is None
    assert "Traceback" not in stack.daemon.log_path.read_text(errors="replace")


def test_unparsable_index_defers_and_leaves_no_row(stack: Stack, image: BuiltImage, tmp_path: Path) -> None:
    repo = "hostile/app"
    manifest_digest, manifest = asyncio.run(_image_manifest(stack, repo, "v1"))
    # a valid index manifest for the registry (Go ignores the unknown key, nesting up to 10,000 deep)
    config = f'{{"mediaType":"{ARTIFACT_TYPE_V2}","digest":"{EMPTY_CONFIG_DIGEST}","size":2}}'
    head = f'{{"schemaVersion":2,"mediaType":"{MEDIA_TYPE_OCI_MANIFEST}","config":{config},"layers":[],"x":'
    deep = head.encode() + b"[" * 5000 + b"]" * 5000 + b"}"

    async def push() -> str:
        async with RegistryClient(stack.registry.host, plain_http=True) as client:
            await client.push_blob(repo, EMPTY_CONFIG_DIGEST, EMPTY_CONFIG)
            return await client.put_manifest(repo, sha256_digest(deep), deep, MEDIA_TYPE_OCI_MANIFEST)

    index_digest = asyncio.run(push())
    labels = {
        lb.TARGET_SNAPSHOT_REF: "target-deep",
        lb.CRI_IMAGE_REF: image.ref,
        lb.CRI_MANIFEST_DIGEST: manifest_digest,
        lb.CRI_LAYER_DIGEST: (manifest.layers or ())[0].digest,
        lb.TARGET_SOCI_INDEX_DIGEST: index_digest,
    }

    async def prepare() -> int:
        async with ContainerdClient(str(stack.daemon.socket), NAMESPACE, timeout_sec=240) as client:
            mounts = await client.prepare_snapshot("soci", "hostile-deep", "", labels)
            assert (await client.stat_snapshot("soci", "hostile-deep")) is not None  # containerd unpacks into it
            await client.remove_snapshot("soci", "hostile-deep")
            return len(mounts)

    assert asyncio.run(prepare()) == 1
    assert _row(stack, "hostile-deep") is None
    assert any(
        e.get("key") == "hostile-deep" and e.get("defer-snapshot-runtime") == "true" for e in stack.log_entries()
    )
    assert "Traceback" not in stack.daemon.log_path.read_text(errors="replace")


CORPUS = Path(__file__).parent.parent / "data" / "hostile"
CORPUS_ZTOCS = sorted(
    name for name, case in json.loads((CORPUS / "cases.json").read_text()).items() if case["kind"] == "ztoc"
)


@pytest.mark.parametrize("case", CORPUS_ZTOCS)
def test_corpus_ztoc_through_prepare(stack: Stack, image: BuiltImage, case: str) -> None:
    """The committed corpus' zTOCs (for the golden all-types layer, pushed here as a one-layer image's layer is
    not that layer: the zTOC then also mismatches the blob, which must fail just as cleanly)."""
    repo = "hostile/app"
    manifest_digest, manifest = asyncio.run(_image_manifest(stack, repo, "v1"))
    index_digest = asyncio.run(_push_index(stack, repo, manifest, (CORPUS / f"{case}.ztoc").read_bytes()))
    key = f"corpus-{case}"
    labels = {
        lb.TARGET_SNAPSHOT_REF: f"target-corpus-{case}",
        lb.CRI_IMAGE_REF: image.ref,
        lb.CRI_MANIFEST_DIGEST: manifest_digest,
        lb.CRI_LAYER_DIGEST: (manifest.layers or ())[0].digest,
        lb.TARGET_SOCI_INDEX_DIGEST: index_digest,
    }

    async def prepare() -> None:
        async with ContainerdClient(str(stack.daemon.socket), NAMESPACE, timeout_sec=240) as client:
            await client.prepare_snapshot("soci", key, "", labels)

    with pytest.raises(AlreadyExists):  # remote or local: the layer is ready either way
        asyncio.run(prepare())
    modes = [e for e in stack.log_entries() if e.get("key") == key and str(e.get("msg", "")).endswith("prepared")]
    assert modes, stack.daemon.log_tail(20)
    assert _row(stack, key) is None
    assert "Traceback" not in stack.daemon.log_path.read_text(errors="replace")

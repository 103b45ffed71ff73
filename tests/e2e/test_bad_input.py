"""Bad layer Prepares sent straight to the daemon: clear errors or the documented fallback, never a hang."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
from e2e_stack import Stack, needs_stack, stack_running

from soci.containerd.client import ContainerdClient
from soci.errors import NotFound
from soci.snapshotter import labels as lb
from soci.testing.registry_server import RegistryServer, free_port

pytestmark = [*needs_stack, pytest.mark.timeout(180)]

DIGEST = "sha256:" + "ab" * 32


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with RegistryServer() as registry, stack_running(tmp_path_factory.mktemp("bad"), registry, _FAST_RETRIES) as s:
        yield s


_FAST_RETRIES = "[http]\nMaxRetries = 2\nMinWaitMsec = 10\nMaxWaitMsec = 50\n"


def _layer_labels(image_ref: str, **override: str) -> dict[str, str]:
    labels = {
        lb.TARGET_SNAPSHOT_REF: "sha256:" + "cd" * 32,
        lb.CRI_IMAGE_REF: image_ref,
        lb.CRI_MANIFEST_DIGEST: DIGEST,
        lb.CRI_LAYER_DIGEST: DIGEST,
    }
    labels.update(override)
    return labels


def _prepare(stack: Stack, key: str, labels: dict[str, str], parent: str = "") -> list[object]:
    async def call() -> list[object]:
        async with ContainerdClient(str(stack.daemon.socket), "bad-input", timeout_sec=150) as client:
            mounts = await client.prepare_snapshot("soci", key, parent, labels)
            await client.remove_snapshot("soci", key)
            return list(mounts)

    return asyncio.run(call())


def _deferred(stack: Stack, key: str) -> bool:
    return any(e.get("key") == key and e.get("defer-snapshot-runtime") == "true" for e in stack.log_entries())


def test_unreachable_registry_defers_to_containerd(stack: Stack) -> None:
    dead = f"127.0.0.1:{free_port()}/nobody/home:v1"
    mounts = _prepare(stack, "bad-1", _layer_labels(dead))
    assert len(mounts) == 1  # containerd gets the mounts and unpacks the layer itself
    assert _deferred(stack, "bad-1")


def test_missing_manifest_defers_to_containerd(stack: Stack) -> None:
    mounts = _prepare(stack, "bad-2", _layer_labels(f"{stack.registry.host}/missing/image:v1"))
    assert len(mounts) == 1 and _deferred(stack, "bad-2")


@pytest.mark.parametrize(
    "override",
    [
        {lb.CRI_LAYER_DIGEST: "sha256:not-a-digest"},
        {lb.CRI_IMAGE_REF: "UPPER CASE/not a ref"},
        {lb.TARGET_SIZE: "twelve"},
        {lb.CRI_MANIFEST_DIGEST: ""},
    ],
)
def test_malformed_labels_defer_to_containerd(stack: Stack, override: dict[str, str]) -> None:
    key = f"bad-3-{abs(hash(tuple(override.items())))}"
    mounts = _prepare(stack, key, _layer_labels(f"{stack.registry.host}/x/y:v1", **override))
    assert len(mounts) == 1 and _deferred(stack, key)


def test_unknown_parent_is_not_found(stack: Stack) -> None:
    with pytest.raises(NotFound, match="parent"):
        _prepare(stack, "bad-4", _layer_labels(f"{stack.registry.host}/x/y:v1"), parent="no-such-parent")


def test_no_snapshot_or_directory_is_left_behind(stack: Stack) -> None:
    snapshots = stack.daemon.root / "snapshotter" / "snapshots"
    leftovers = [p for p in snapshots.iterdir() if p.is_dir()]
    assert leftovers == [], leftovers
    assert Path(stack.daemon.socket).exists()

"""The daemon with the real lazy filesystem (``soci.fs`` through ``FuseLayerMounter``): lazy pull, run,
same root filesystem as overlayfs, restarts."""

from __future__ import annotations

import re
import signal
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from e2e_images import EXPECTED_OUTPUT, SCRIPT, BuiltImage, convert, push_image, walk_tree
from e2e_stack import FUSE_MOUNTER, Stack, layer_modes, mounted_view, needs_stack, stack_running
from prometheus_client.parser import text_string_to_metric_families

from soci.containerd.pull import MODE_LAZY, chain_ids
from soci.formats.digest import sha256_digest
from soci.snapshotter import system
from soci.testing.registry_server import RegistryServer

pytestmark = [*needs_stack, pytest.mark.fuse, pytest.mark.slow]


@pytest.fixture(scope="module")
def registry() -> Iterator[RegistryServer]:
    with RegistryServer() as server:
        yield server


@pytest.fixture(scope="module")
def stack(registry: RegistryServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with stack_running(tmp_path_factory.mktemp("fuse"), registry, mounter=FUSE_MOUNTER) as running:
        yield running


@pytest.fixture(scope="module")
def lazy_image(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> BuiltImage:
    workdir = tmp_path_factory.mktemp("fuse-image")
    src = push_image(stack.registry, workdir, "fuse/app", "v1", seed=301)
    return convert(workdir / "soci", src, "v1-soci")


def _bytes_served(registry: RegistryServer, digest: str) -> int:
    """Blob bytes the registry sent for ``digest`` (from its request log)."""
    total = 0
    for line in registry.log_path.read_text().splitlines():
        if 'msg="response completed' in line and f"/blobs/{digest}" in line:
            written = re.search(r"http\.response\.written=(\d+)", line)
            total += int(written.group(1)) if written else 0
    return total


def test_rpull_is_lazy_and_the_container_runs(stack: Stack, lazy_image: BuiltImage) -> None:
    big = lazy_image.layers[1].descriptor()
    served_before = _bytes_served(stack.registry, big.digest)  # soci convert read the whole layer once
    output = stack.rpull(lazy_image.ref)
    assert layer_modes(output) == [MODE_LAZY] * 3, output
    assert stack.run(lazy_image.ref, "/bin/sh", "-c", SCRIPT) == EXPECTED_OUTPUT
    # the command never reads the big layer's files: only a fraction of it came over the wire
    assert _bytes_served(stack.registry, big.digest) - served_before < big.size // 2


def test_lazy_rootfs_equals_overlayfs(stack: Stack, lazy_image: BuiltImage, tmp_path: Path) -> None:
    stack.rpull(lazy_image.ref)
    stack.containerd.ctr("-n", "overlay-baseline", "images", "pull", "--plain-http", lazy_image.ref)
    top = chain_ids([sha256_digest(layer.tar) for layer in lazy_image.layers])[-1]
    with mounted_view(stack.containerd, "soci", top, tmp_path / "lazy") as view:
        ours = dict(walk_tree(view))
    with mounted_view(stack.containerd, "overlayfs", top, tmp_path / "ovl", "overlay-baseline") as view:
        theirs = dict(walk_tree(view))
    assert ours == theirs


def _scrape(stack: Stack) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of the daemon's /metrics, parsed as Prometheus would: (name, labels) -> value."""
    with urllib.request.urlopen(f"http://127.0.0.1:{stack.metrics_port}/metrics", timeout=10) as response:
        text = response.read().decode()
    assert "\nsoci_fs_operation_count{" in text and "soci_fs_operation_count_total" not in text
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def _total(samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str) -> float:
    want = set(labels.items())
    names = (name, name + "_total")  # the parser renames counter samples; the text has upstream's name
    return sum(v for (n, have), v in samples.items() if n in names and want <= have)


def test_metrics_scraped_during_a_lazy_run(stack: Stack, lazy_image: BuiltImage) -> None:
    stack.rpull(lazy_image.ref)
    assert stack.run(lazy_image.ref, "/bin/sh", "-c", SCRIPT) == EXPECTED_OUTPUT
    samples = _scrape(stack)
    for layer in lazy_image.layers:
        digest = layer.descriptor().digest
        assert _total(samples, "soci_fs_layer_size_bytes", digest=digest) >= layer.descriptor().size, digest
        assert _total(samples, "soci_fs_layer_fetched_size_bytes", digest=digest) > 0, digest
    count = "soci_fs_operation_count"
    assert _total(samples, count, operation_type="synchronous_read_count") > 0
    assert _total(samples, count, operation_type="synchronous_read_remote_registry_fetch_count") > 0
    assert _total(samples, "soci_fs_bytes_served", operation_type="synchronous_bytes_served") > 0
    for operation in ("mount", "fuse_mount", "init_metadata_store", "remote_registry_get", "ztoc_fetch"):
        assert _total(samples, "soci_fs_operation_duration_milliseconds_count", operation_type=operation) > 0, operation
    assert _total(samples, "soci_fs_operation_duration_microseconds_count", operation_type="synchronous_read") > 0
    assert _total(samples, "process_resident_memory_bytes") > 0


def test_restart_repairs_dead_fuse_mounts(stack: Stack, lazy_image: BuiltImage) -> None:
    stack.rpull(lazy_image.ref)
    snapshots = stack.daemon.root / "snapshotter" / "snapshots"
    assert stack.daemon.stop(signal.SIGTERM) == 0
    stack.restart_daemon()
    assert len(system.mountpoints_under(snapshots)) >= 3
    assert stack.run(lazy_image.ref, "/bin/sh", "-c", SCRIPT) == EXPECTED_OUTPUT
    assert stack.daemon.stop(signal.SIGINT) == 0
    assert system.mountpoints_under(stack.daemon.root) == []  # SIGINT: nothing left mounted, FUSE included
    stack.restart_daemon()
    assert stack.run(lazy_image.ref, "/bin/sh", "-c", SCRIPT) == EXPECTED_OUTPUT

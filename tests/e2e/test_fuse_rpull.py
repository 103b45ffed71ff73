"""The daemon with the real lazy filesystem (``soci.fs`` through ``FuseLayerMounter``): lazy pull, run,
same root filesystem as overlayfs, restarts."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
from e2e_images import EXPECTED_OUTPUT, SCRIPT, BuiltImage, convert, push_image, walk_tree
from e2e_stack import (
    FUSE_MOUNTER,
    Stack,
    layer_modes,
    metric_total,
    mounted_view,
    needs_stack,
    scrape_metrics,
    stack_running,
    wait_until,
)

from soci import system
from soci.containerd.pull import MODE_LAZY, chain_ids
from soci.formats.digest import sha256_digest
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


def test_rpull_is_lazy_and_the_container_runs(stack: Stack, lazy_image: BuiltImage) -> None:
    big = lazy_image.layers[1].descriptor()
    served_before = stack.registry.bytes_served(big.digest)  # soci convert read the whole layer once
    output = stack.rpull(lazy_image.ref)
    assert layer_modes(output) == [MODE_LAZY] * 3, output
    assert stack.run(lazy_image.ref, "/bin/sh", "-c", SCRIPT) == EXPECTED_OUTPUT
    # the command never reads the big layer's files: only a fraction of it came over the wire
    assert stack.registry.bytes_served(big.digest) - served_before < big.size // 2


def test_lazy_rootfs_equals_overlayfs(stack: Stack, lazy_image: BuiltImage, tmp_path: Path) -> None:
    stack.rpull(lazy_image.ref)
    stack.containerd.ctr("-n", "overlay-baseline", "images", "pull", "--plain-http", lazy_image.ref)
    top = chain_ids([sha256_digest(layer.tar) for layer in lazy_image.layers])[-1]
    with mounted_view(stack.containerd, "soci", top, tmp_path / "lazy") as view:
        ours = dict(walk_tree(view))
    with mounted_view(stack.containerd, "overlayfs", top, tmp_path / "ovl", "overlay-baseline") as view:
        theirs = dict(walk_tree(view))
    assert ours == theirs


def test_metrics_scraped_during_a_lazy_run(stack: Stack, lazy_image: BuiltImage) -> None:
    stack.rpull(lazy_image.ref)
    assert stack.run(lazy_image.ref, "/bin/sh", "-c", SCRIPT) == EXPECTED_OUTPUT
    samples = scrape_metrics(stack.metrics_port)
    for layer in lazy_image.layers:
        digest = layer.descriptor().digest
        assert metric_total(samples, "soci_fs_layer_size_bytes", digest=digest) >= layer.descriptor().size, digest
        assert metric_total(samples, "soci_fs_layer_fetched_size_bytes", digest=digest) > 0, digest
    count = "soci_fs_operation_count"
    assert metric_total(samples, count, operation_type="synchronous_read_count") > 0
    assert metric_total(samples, count, operation_type="synchronous_read_remote_registry_fetch_count") > 0
    assert metric_total(samples, "soci_fs_bytes_served", operation_type="synchronous_bytes_served") > 0
    for operation in ("mount", "fuse_mount", "init_metadata_store", "remote_registry_get", "ztoc_fetch"):
        milliseconds = "soci_fs_operation_duration_milliseconds_count"
        assert metric_total(samples, milliseconds, operation_type=operation) > 0, operation
    assert metric_total(samples, "soci_fs_operation_duration_microseconds_count", operation_type="synchronous_read") > 0
    assert metric_total(samples, "process_resident_memory_bytes") > 0


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


def test_image_removal_deletes_its_span_caches(stack: Stack, tmp_path: Path) -> None:
    """``ctr images rm`` -> GC removes the snapshots -> the lazy layers' span caches are deleted."""
    image = convert(tmp_path / "soci", push_image(stack.registry, tmp_path, "fuse/gone", "v1", seed=309), "v1-soci")
    spancache = stack.daemon.root / "soci" / "spancache"
    before = set(spancache.iterdir()) if spancache.exists() else set()
    output = stack.rpull(image.ref, namespace="gc-spans")
    assert layer_modes(output) == [MODE_LAZY] * 3, output
    ours = set(spancache.iterdir()) - before  # each mounted layer cached at least its gzip header
    assert len(ours) == 3, ours
    locked = locked_kib(stack.daemon.pid)
    assert locked >= 3 * 4, "the three layers' EROFS images are not locked in memory"
    stack.containerd.ctr("-n", "gc-spans", "images", "rm", "--sync", image.ref)
    assert wait_until(lambda: not any(p.exists() for p in ours)), [p for p in ours if p.exists()]
    assert locked_kib(stack.daemon.pid) <= locked - 3 * 4, "unmounted layers' EROFS images stay locked"


def locked_kib(pid: int) -> int:
    """VmLck: the daemon's memory locked by mlock(2), the EROFS images of the layers it serves."""
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(ln for ln in status.splitlines() if ln.startswith("VmLck:")).split()[1])

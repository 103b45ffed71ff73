"""containerd 2.x (v2.2.9, built from the Go module proxy) in front of our snapshotter and upstream's.

* Our ``soci image rpull`` still works against containerd 2.x.
* ``ctr image pull --snapshotter soci`` goes through containerd's transfer service, which hands the
  remote-snapshot labels to the snapshotter because the proxy plugin exports
  ``enable_remote_snapshot_annotations = "true"``; both daemons must then mount the layers lazily.

Each case runs a container and compares the snapshotter's root filesystem with an overlayfs unpack.
"""

from __future__ import annotations

import secrets
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from e2e_images import BuiltImage, convert, create_and_push_v1, push_image
from e2e_stack import FUSE_MOUNTER, Stack, daemon_config, layer_modes, mounter_env, needs_stack
from interop_stack import Containerd2Server, build_tools, check_run_and_rootfs, upstream_running

from soci.containerd.pull import MODE_LAZY
from soci.daemon.testing import SnapshotterProcess
from soci import system
from soci.testing.registry_server import RegistryServer

pytestmark = [*needs_stack, pytest.mark.fuse, pytest.mark.golang, pytest.mark.slow]

V1_ON = "[pull_modes.soci_v1]\nenable = true\n"


@pytest.fixture(scope="module")
def registry() -> Iterator[RegistryServer]:
    with RegistryServer() as server:
        yield server


@contextmanager
def ours_running(workdir: Path, registry: RegistryServer) -> Iterator[Stack]:
    daemon = SnapshotterProcess(
        workdir / "daemon", config=daemon_config(0, V1_ON), env=mounter_env(FUSE_MOUNTER)
    ).start()
    try:
        with Containerd2Server(
            workdir / "containerd", proxy_plugins={"soci": daemon.socket}, roots={"soci": daemon.root}
        ) as containerd:
            yield Stack(registry, daemon, containerd, workdir)
    finally:
        daemon.stop(signal.SIGINT)
        leftovers = system.mountpoints_under(daemon.root)
        system.unmount_all(daemon.root)
        assert leftovers == [], f"our daemon left mounts after SIGINT: {leftovers}"


@pytest.fixture(scope="module")
def ours(registry: RegistryServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    build_tools("containerd2")
    with ours_running(tmp_path_factory.mktemp("ctrd2-ours"), registry) as running:
        yield running


@pytest.fixture(scope="module")
def upstream(registry: RegistryServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    build_tools("soci-snapshotter-grpc", "containerd2")
    with upstream_running(tmp_path_factory.mktemp("ctrd2-upstream"), registry) as running:
        yield running


def lazy_image(stack: Stack, workdir: Path, version: str) -> BuiltImage:
    """A fresh image (own seed, so no snapshot is shared) with a SOCI index of ``version`` we built."""
    seed = 2000 + secrets.randbelow(1_000_000)
    src = push_image(stack.registry, workdir, f"ctrd2/{version}", "src", seed)
    if version == "v2":
        return convert(workdir / "soci", src, "soci")
    create_and_push_v1(workdir / "soci", src)
    return src


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_our_rpull_then_run(ours: Stack, version: str, tmp_path: Path) -> None:
    # upstream's daemon behind containerd 2.x with our rpull: test_cross_consumption
    image = lazy_image(ours, tmp_path, version)
    output = ours.rpull(image.ref)
    assert layer_modes(output) == [MODE_LAZY] * len(image.layers), output + ours.daemon.log_tail(40)
    check_run_and_rootfs(ours, image, tmp_path)


@pytest.mark.parametrize("version", ["v1", "v2"])
@pytest.mark.parametrize("daemon", ["ours", "upstream"])
def test_transfer_service_pull_is_lazy(request: pytest.FixtureRequest, daemon: str, version: str, tmp_path: Path
                                       ) -> None:  # fmt: skip
    stack: Stack = request.getfixturevalue(daemon)
    image = lazy_image(stack, tmp_path, version)
    big = image.layers[1].descriptor()
    served_before = stack.registry.bytes_served(big.digest)  # the index build read it once
    stack.containerd.ctr("images", "pull", "--snapshotter", "soci", "--plain-http", image.ref, timeout=300)
    fetched = stack.registry.bytes_served(big.digest) - served_before
    assert fetched < big.size // 2, f"the transfer-service pull fetched {fetched} of {big.size} bytes of the big layer"
    check_run_and_rootfs(stack, image, tmp_path)

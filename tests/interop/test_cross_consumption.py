"""Cross-consumption with upstream SOCI v0.16.1, both directions, v1 and v2 indexes.

* Our snapshotter (real FUSE) lazily runs images whose SOCI index upstream's own code built: v2 from its
  unmodified ``soci convert --standalone``, v1 from its ``IndexBuilder`` (``soci-golden create``), pushed
  to the registry byte for byte, the v1 one through the ``sha256-<hex>`` referrers tag as upstream's push does.
  This side runs under Debian's containerd 1.6.
* Upstream's unmodified ``soci-snapshotter-grpc`` lazily runs images whose index we built (``soci convert
  --remote`` for v2, ``soci create --remote`` + ``soci push`` for v1). This side runs under containerd 2.x:
  containerd 1.6 does not forward the namespace to proxy snapshotters, and upstream's Prepare needs it.

Each case runs a container and compares its output, and the snapshotter's root filesystem (walked and hashed)
with the same image unpacked by overlayfs in another namespace of the same containerd.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from e2e_images import BuiltImage, convert, create_and_push_v1, image_layers, soci
from e2e_stack import FUSE_MOUNTER, Stack, layer_modes, needs_stack, stack_running, wait_until
from interop_stack import (
    TOOLS,
    build_tools,
    check_run_and_rootfs,
    push_layout,
    push_v1_index,
    run_tool,
    upstream_running,
)

from soci.containerd.pull import MODE_LAZY
from soci import system
from soci.testing.images import write_oci_layout
from soci.testing.registry_server import RegistryServer

pytestmark = [*needs_stack, pytest.mark.fuse, pytest.mark.golang, pytest.mark.slow]

# the settings upstream's daemon gets too (interop_stack.upstream_daemon_config)
OUR_CONFIG = "[pull_modes.soci_v1]\nenable = true\n[prefetch]\nenable = true\n"


@pytest.fixture(scope="module")
def tools() -> Path:
    build_tools("soci", "soci-golden", "soci-snapshotter-grpc", "containerd2")
    return TOOLS


@pytest.fixture(scope="module")
def registry() -> Iterator[RegistryServer]:
    with RegistryServer() as server:
        yield server


@pytest.fixture(scope="module")
def ours(registry: RegistryServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with stack_running(tmp_path_factory.mktemp("ours"), registry, OUR_CONFIG, mounter=FUSE_MOUNTER) as running:
        yield running


@pytest.fixture(scope="module")
def upstream(registry: RegistryServer, tools: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with upstream_running(tmp_path_factory.mktemp("upstream"), registry) as running:
        yield running


def source_image(registry: RegistryServer, workdir: Path, name: str, seed: int) -> tuple[BuiltImage, Path]:
    """The three-layer e2e image for ``seed`` as an OCI layout, pushed unchanged as ``interop/NAME:src``."""
    layers = image_layers(seed)
    layout = workdir / f"{name}-src"
    write_oci_layout(layout, layers)
    ref = f"{registry.host}/interop/{name}:src"
    push_layout(registry, ref, layout)
    return BuiltImage(ref, layers), layout


def check_lazy_run_and_rootfs(stack: Stack, image: BuiltImage, tmp_path: Path) -> None:
    output = stack.rpull(image.ref)
    assert layer_modes(output) == [MODE_LAZY] * len(image.layers), output + stack.daemon.log_tail(40)
    check_run_and_rootfs(stack, image, tmp_path)


# ---- upstream built the index, our snapshotter runs it ---------------------------------------------------


@pytest.mark.parametrize("variant", ["plain", "xattr-optimization", "prefetch"])
def test_ours_runs_upstream_v2_convert(ours: Stack, tools: Path, tmp_path: Path, variant: str) -> None:
    seed = {"plain": 1101, "xattr-optimization": 1103, "prefetch": 1104}[variant]
    src, layout = source_image(ours.registry, tmp_path, f"up-v2-{variant}", seed)
    big = src.layers[1].descriptor()
    extra = {
        "plain": [],
        # layers without xattrs get upstream's disable-xattrs annotation (the base layer has one)
        "xattr-optimization": ["--optimizations", "xattr"],
        # a file of the big layer, which the container never reads
        "prefetch": ["--prefetch-file", "/etc/greeting", "--prefetch-file", f"/opt/app/file-{seed}-4.bin"],
    }[variant]
    converted = tmp_path / "converted"
    run_tool(
        str(tools / "soci"), "--root", str(tmp_path / "soci-root"), "convert", "--standalone",
        "--format", "oci-dir", "--min-layer-size", "0", *extra, str(layout), str(converted),
    )  # fmt: skip
    image = BuiltImage(src.ref.replace(":src", ":soci"), src.layers)
    push_layout(ours.registry, image.ref, converted, layout)
    output = ours.rpull(image.ref)
    assert layer_modes(output) == [MODE_LAZY] * len(image.layers), output + ours.daemon.log_tail(40)
    if variant == "prefetch":
        # Within the background fetcher's 30 s silence period only the prefetch reads the big layer (the mount
        # itself reads 10 bytes of it); the listed file's span is the whole layer at the default 4 MiB spans.
        def fetched() -> int:
            return ours.registry.bytes_served(big.digest)

        assert wait_until(lambda: fetched() > big.size // 2, 30.0), f"{fetched()} of {big.size} bytes prefetched"
    check_run_and_rootfs(ours, image, tmp_path)


def test_ours_runs_upstream_v1_index(ours: Stack, tools: Path, tmp_path: Path) -> None:
    src, layout = source_image(ours.registry, tmp_path, "up-v1", seed=1102)
    created = tmp_path / "created"
    run_tool(str(tools / "soci-golden"), "create", "--min-layer-size", "0", str(layout), str(created))
    push_v1_index(ours.registry, src.ref, created)
    check_lazy_run_and_rootfs(ours, src, tmp_path)


# ---- we built the index, upstream's snapshotter runs it --------------------------------------------------


def upstream_fuse_mounts(stack: Stack) -> list[Path]:
    return system.mountpoints_under(stack.daemon.root)


def test_upstream_runs_our_v2_convert(upstream: Stack, tmp_path: Path) -> None:
    src, _ = source_image(upstream.registry, tmp_path, "our-v2", seed=1201)
    image = convert(tmp_path / "soci", src, "soci")
    check_lazy_run_and_rootfs(upstream, image, tmp_path)
    assert len(upstream_fuse_mounts(upstream)) >= len(image.layers)


def test_upstream_runs_our_v2_convert_with_prefetch(upstream: Stack, tmp_path: Path) -> None:
    seed = 1203
    src, _ = source_image(upstream.registry, tmp_path, "our-v2-prefetch", seed)
    listing = tmp_path / "prefetch.json"
    listing.write_text(json.dumps(["/etc/greeting", f"/opt/app/file-{seed}-4.bin"]))
    dst = src.ref.replace(":src", ":soci")
    soci(tmp_path / "soci", "convert", "--remote", "--plain-http", "--min-layer-size", "0",
         "--prefetch-files-json", str(listing), src.ref, dst)  # fmt: skip
    image = BuiltImage(dst, src.layers)
    since = len(upstream.daemon.log_entries())
    check_lazy_run_and_rootfs(upstream, image, tmp_path)
    messages = [str(e.get("msg", "")) for e in upstream.daemon.log_entries()[since:]]
    loaded = [m for m in messages if m.startswith("Successfully loaded prefetch artifact")]
    assert len(loaded) == 2, messages  # one artifact per layer holding a listed file: base and big
    assert not [m for m in messages if "prefetch" in m.lower() and ("fail" in m.lower() or "not found" in m)]


def test_upstream_runs_our_v1_index(upstream: Stack, tmp_path: Path) -> None:
    src, _ = source_image(upstream.registry, tmp_path, "our-v1", seed=1202)
    create_and_push_v1(tmp_path / "soci", src)
    check_lazy_run_and_rootfs(upstream, src, tmp_path)

"""``soci image rpull`` then ``ctr run`` on the soci snapshotter, for every pull mode.

The daemon's lazy filesystem is the test mounter (``e2e_mounter``: a tmpfs filled with the layer), so
these tests cover discovery, labels, the Prepare decision tree, containerd's remote-snapshot protocol,
image records and GC, not laziness itself.
"""

from __future__ import annotations

import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from e2e_images import EXPECTED_OUTPUT, SCRIPT, BuiltImage, convert, create_and_push_v1, push_image, walk_tree
from e2e_mounter import MARKER
from e2e_stack import Stack, layer_modes, mounted_view, needs_stack, stack_running, wait_until

from soci import system
from soci.cli.main import cli
from soci.containerd.pull import MODE_LAZY, MODE_PULLED, MODE_SNAPSHOTTER_UNPACKED
from soci.testing.registry_server import RegistryServer

pytestmark = [*needs_stack, pytest.mark.slow]


@pytest.fixture(scope="module")
def registry() -> Iterator[RegistryServer]:
    with RegistryServer() as server:
        yield server


@pytest.fixture(scope="module")
def stack(registry: RegistryServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with stack_running(tmp_path_factory.mktemp("e2e"), registry) as running:
        yield running


@pytest.fixture(scope="module")
def soci_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("soci-cli")


def _modes(stack: Stack, key: str) -> list[str]:
    return [str(e.get(key)) for e in stack.log_entries() if key in e]


def test_every_layer_indexed_is_mounted_remotely(stack: Stack, soci_root: Path, tmp_path: Path) -> None:
    src = push_image(stack.registry, tmp_path, "e2e/all", "v1", seed=101)
    image = convert(soci_root, src, "v1-soci")
    remote_before = _modes(stack, "remote-snapshot-prepared").count("true")
    output = stack.rpull(image.ref)
    assert layer_modes(output) == [MODE_LAZY] * 3, output
    assert _modes(stack, "remote-snapshot-prepared").count("true") - remote_before == 3
    assert stack.run(image.ref, "/bin/sh", "-c", SCRIPT) == EXPECTED_OUTPUT


def test_mixed_small_and_large_layers(stack: Stack, soci_root: Path, tmp_path: Path) -> None:
    src = push_image(stack.registry, tmp_path, "e2e/mixed", "v1", seed=102)
    sizes = [layer.descriptor().size for layer in src.layers]
    threshold = sorted(sizes)[-1]  # only the biggest layer gets a zTOC
    image = convert(soci_root, src, "v1-soci", min_layer_size=threshold)
    local_before = _modes(stack, "local-snapshot-prepared").count("true")
    output = stack.rpull(image.ref)
    expected = [MODE_LAZY if size >= threshold else MODE_SNAPSHOTTER_UNPACKED for size in sizes]
    assert layer_modes(output) == expected, output
    assert _modes(stack, "local-snapshot-prepared").count("true") - local_before == expected.count(
        MODE_SNAPSHOTTER_UNPACKED
    )
    assert stack.run(image.ref, "/bin/sh", "-c", SCRIPT) == EXPECTED_OUTPUT


def test_image_without_index_is_pulled_normally(stack: Stack, tmp_path: Path) -> None:
    image = push_image(stack.registry, tmp_path, "e2e/plain", "v1", seed=103)
    deferred_before = _modes(stack, "defer-snapshot-runtime").count("true")
    output = stack.rpull(image.ref)
    assert layer_modes(output) == [MODE_PULLED] * 3, output
    assert _modes(stack, "defer-snapshot-runtime").count("true") - deferred_before == 3
    assert stack.run(image.ref, "/bin/sh", "-c", SCRIPT) == EXPECTED_OUTPUT


def test_explicit_index_digest_label(stack: Stack, soci_root: Path, tmp_path: Path) -> None:
    # a v1 index is invisible to the default pull modes (v1 off) but an explicit digest is always used
    image = push_image(stack.registry, tmp_path, "e2e/explicit", "v1", seed=104)
    index_digest = create_and_push_v1(soci_root, image)
    output = stack.rpull(image.ref, "--soci-index-digest", index_digest)
    assert layer_modes(output) == [MODE_LAZY] * 3, output
    assert any(e.get("msg") == "using provided soci index digest" for e in stack.log_entries())
    assert stack.run(image.ref, "/bin/sh", "-c", SCRIPT) == EXPECTED_OUTPUT


def test_v1_index_is_ignored_unless_enabled(stack: Stack, soci_root: Path, tmp_path: Path) -> None:
    image = push_image(stack.registry, tmp_path, "e2e/v1-off", "v1", seed=105)
    create_and_push_v1(soci_root, image)
    assert layer_modes(stack.rpull(image.ref)) == [MODE_PULLED] * 3


def test_v1_discovery_when_enabled(registry: RegistryServer, soci_root: Path, tmp_path: Path) -> None:
    with stack_running(tmp_path / "v1", registry, "[pull_modes.soci_v1]\nenable = true\n") as v1_stack:
        image = push_image(registry, tmp_path, "e2e/v1-on", "v1", seed=106)
        create_and_push_v1(soci_root, image)
        output = v1_stack.rpull(image.ref)
        assert layer_modes(output) == [MODE_LAZY] * 3, output
        assert any(e.get("msg") == "using soci v1 index via referrers API" for e in v1_stack.log_entries())
        assert v1_stack.run(image.ref, "/bin/sh", "-c", SCRIPT) == EXPECTED_OUTPUT


def test_rootfs_equals_overlayfs_pull(stack: Stack, soci_root: Path, tmp_path: Path) -> None:
    src = push_image(stack.registry, tmp_path, "e2e/compare", "v1", seed=107)
    image = convert(soci_root, src, "v1-soci")
    stack.rpull(image.ref)
    stack.containerd.ctr("-n", "overlay-baseline", "images", "pull", "--plain-http", image.ref)
    top = _top_chain_id(stack, image)
    with mounted_view(stack.containerd, "soci", top, tmp_path / "soci-view") as soci_view:
        ours = dict(walk_tree(soci_view))
    with mounted_view(stack.containerd, "overlayfs", top, tmp_path / "ovl", "overlay-baseline") as ovl_view:
        theirs = dict(walk_tree(ovl_view))
    assert ours.keys() == theirs.keys()
    different = {path: (ours[path], theirs[path]) for path in ours if ours[path] != theirs[path]}
    assert not different
    assert "data/old/hidden.txt" not in ours and "data/remove-me.txt" not in ours  # whiteouts applied


def test_image_removal_lets_gc_remove_snapshots_and_mounts(stack: Stack, soci_root: Path, tmp_path: Path) -> None:
    src = push_image(stack.registry, tmp_path, "e2e/gc", "v1", seed=108)
    image = convert(soci_root, src, "v1-soci")
    stack.rpull(image.ref, namespace="gc-test")
    snapshots_dir = stack.daemon.root / "snapshotter" / "snapshots"
    mounted = set(system.mountpoints_under(snapshots_dir))
    digests = {layer.descriptor().digest for layer in image.layers}
    ours = {p for p in mounted if _mounted_layer(p) in digests}
    assert len(ours) == 3
    stack.containerd.ctr("-n", "gc-test", "images", "rm", "--sync", image.ref)
    assert wait_until(lambda: not (set(system.mountpoints_under(snapshots_dir)) & ours)), ours
    assert wait_until(lambda: not any(p.parent.exists() for p in ours))


def test_metrics_report_pull_modes(stack: Stack) -> None:
    with urllib.request.urlopen(f"http://127.0.0.1:{stack.metrics_port}/metrics", timeout=10) as response:
        text = response.read().decode()
        content_type = response.headers["Content-Type"]
    assert content_type.startswith("text/plain; version=0.0.4")
    assert 'soci_snapshotter_pull_mode_count{mode="remote"}' in text
    assert 'soci_fs_operation_duration_milliseconds_bucket{layer="sha256:' in text
    assert 'operation_type="mount"' in text
    assert "# TYPE soci_fs_operation_count counter" in text


def _mounted_layer(mountpoint: Path) -> str:
    marker = mountpoint.parent / MARKER
    return marker.read_text() if marker.exists() else ""


def _top_chain_id(stack: Stack, image: BuiltImage) -> str:
    from soci.containerd.pull import chain_ids
    from soci.formats.digest import sha256_digest

    return chain_ids([sha256_digest(layer.tar) for layer in image.layers])[-1]


def test_missing_image_reports_the_registry_error(stack: Stack) -> None:
    """The gRPC stack is imported while the registry answers; a failed resolution still reports the registry."""
    ref = f"{stack.registry.host}/e2e/absent:v1"
    result = CliRunner().invoke(cli, ["--address", stack.containerd.address, "image", "rpull", "--plain-http", ref])
    assert result.exit_code == 1, result.output
    assert result.output.startswith("soci: ") and "e2e/absent" in result.output, result.output
    assert len(result.output.strip().splitlines()) == 1, result.output


def test_unreachable_containerd_is_reported_after_resolution(stack: Stack, tmp_path: Path) -> None:
    image = push_image(stack.registry, tmp_path, "e2e/nocontainerd", "v1", seed=104)
    address = str(tmp_path / "no-containerd.sock")
    result = CliRunner().invoke(cli, ["--address", address, "--timeout", "5s", "image", "rpull", "--plain-http",
                                      image.ref])  # fmt: skip
    assert result.exit_code == 1, result.output
    assert result.output.startswith("soci: ") and address in result.output, result.output

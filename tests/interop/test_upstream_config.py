"""Our daemon reads upstream's registry-mirror settings as upstream does.

Upstream's ``[[resolver.host."<domain>".mirrors]]`` ``host`` is a URL (``http://127.0.0.1:5000``, its own
daemon rejects a bare ``127.0.0.1:5000``). Here the image lives in two registries, its references name the
first, and the daemon config (the one upstream's daemon gets in the other interop tests) sends the daemon to
the second as a mirror: every zTOC must come from the mirror and none from the first registry.
"""

from __future__ import annotations

import json
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from e2e_images import EXPECTED_OUTPUT, SCRIPT, image_layers
from e2e_stack import FUSE_MOUNTER, Stack, layer_modes, mounter_env, needs_stack
from interop_stack import TOOLS, build_tools, push_layout, run_tool

from soci.containerd.pull import MODE_LAZY
from soci.containerd.testing import ContainerdServer
from soci.daemon.testing import SnapshotterProcess
from soci.formats import soci_index as si
from soci.registry.hosts import CAP_PULL, CAP_RESOLVE
from soci.snapshotter.resolver import Mirror, mirror_host
from soci.testing.images import write_oci_layout
from soci.testing.registry_server import RegistryServer

pytestmark = [*needs_stack, pytest.mark.fuse, pytest.mark.golang, pytest.mark.slow]


@pytest.mark.parametrize(
    ("configured", "insecure", "expected"),
    [
        ("http://127.0.0.1:5000", False, "http://127.0.0.1:5000/v2"),
        ("https://mirror.example.com:5000/prefix/v2", True, "http://mirror.example.com:5000/prefix/v2"),
        ("http://mirror.example.com", False, "https://mirror.example.com/v2"),  # upstream ignores the scheme
        ("mirror.example.com:5000", False, "https://mirror.example.com:5000/v2"),
    ],
)
def test_mirror_url_forms(configured: str, insecure: bool, expected: str) -> None:
    host = mirror_host(Mirror(configured, insecure))
    assert host.base_url == expected
    assert host.capabilities == {CAP_PULL, CAP_RESOLVE}


@pytest.fixture
def registries() -> Iterator[tuple[RegistryServer, RegistryServer]]:
    with RegistryServer() as origin, RegistryServer() as mirror:
        yield origin, mirror


def test_daemon_pulls_through_an_upstream_style_mirror(
    registries: tuple[RegistryServer, RegistryServer], tmp_path: Path
) -> None:
    origin, mirror = registries
    build_tools("soci")
    layout = tmp_path / "src"
    write_oci_layout(layout, image_layers(3101))
    converted = tmp_path / "converted"
    run_tool(
        str(TOOLS / "soci"), "--root", str(tmp_path / "soci-root"), "convert", "--standalone",
        "--format", "oci-dir", "--min-layer-size", "0", str(layout), str(converted),
    )  # fmt: skip
    ref = f"{origin.host}/interop/mirrored:soci"
    push_layout(origin, ref, converted, layout)
    push_layout(mirror, f"{mirror.host}/interop/mirrored:soci", converted, layout)
    ztocs = ztoc_digests(converted)
    assert ztocs, "upstream's convert wrote no SOCI index"

    config = f'[[resolver.host."{origin.host}".mirrors]]\nhost = "http://{mirror.host}"\ninsecure = true\n'
    daemon = SnapshotterProcess(tmp_path / "daemon", config=config, env=mounter_env(FUSE_MOUNTER)).start()
    try:
        with ContainerdServer(tmp_path / "containerd", proxy_plugins={"soci": daemon.socket}) as containerd:
            stack = Stack(origin, daemon, containerd, tmp_path)
            output = stack.rpull(ref)
            assert layer_modes(output) == [MODE_LAZY] * 3, output + daemon.log_tail(40)
            assert stack.run(ref, "/bin/sh", "-c", SCRIPT) == EXPECTED_OUTPUT
    finally:
        daemon.stop(signal.SIGINT)
    assert [origin.bytes_served(z) for z in ztocs] == [0] * len(ztocs)
    assert all(mirror.bytes_served(z) > 0 for z in ztocs)


def ztoc_digests(layout: Path) -> list[str]:
    """The zTOC digests of the v2 SOCI index in a layout written by upstream's ``convert``."""

    def blob(digest: str) -> Any:
        return json.loads((layout / "blobs" / "sha256" / digest.split(":", 1)[1]).read_bytes())

    (top,) = json.loads((layout / "index.json").read_bytes())["manifests"]
    indexes = [d for d in blob(top["digest"])["manifests"] if d.get("artifactType") == si.ARTIFACT_TYPE_V2]
    return [layer["digest"] for d in indexes for layer in blob(d["digest"])["layers"]]

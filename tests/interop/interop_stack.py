"""Helpers for running upstream SOCI (Go) next to ours: its tools, its daemon, containerd 2.x, and pushing
index artifacts upstream built to the test registry byte for byte."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from e2e_images import EXPECTED_OUTPUT, SCRIPT, BuiltImage, walk_tree
from e2e_stack import Stack, mounted_view

from soci.containerd.pull import chain_ids
from soci.containerd.testing import ContainerdServer
from soci.daemon.testing import SnapshotterProcess
from soci.formats import soci_index as si
from soci.formats.digest import sha256_digest
from soci.formats.oci import INDEX_MEDIA_TYPES, MEDIA_TYPE_OCI_INDEX, MEDIA_TYPE_OCI_MANIFEST
from soci.registry.client import encode_index, referrers_tag
from soci import system
from soci.testing.registry_server import RegistryServer

REPO = Path(__file__).resolve().parents[2]
BUILD_SH = REPO / "interop" / "build.sh"
TOOLS = REPO / "interop" / ".cache" / "bin"
CONTAINERD2_BIN = REPO / "interop" / ".cache" / "containerd2" / "bin"


def go_available() -> bool:
    return shutil.which("go") is not None or Path("/usr/local/go/bin/go").exists()


def build_tools(*targets: str) -> None:
    """interop/build.sh TARGETS (cached: a no-op when nothing changed)."""
    if not go_available():
        pytest.skip("Go toolchain not installed")
    subprocess.run([str(BUILD_SH), *targets], check=True, timeout=1800)


def run_tool(*args: str) -> str:
    result = subprocess.run(list(args), capture_output=True, text=True, check=False, timeout=300)
    assert result.returncode == 0, f"{' '.join(args)} failed ({result.returncode}):\n{result.stderr}{result.stdout}"
    return result.stdout


# ---- pushing what upstream wrote to disk, unchanged -------------------------------------------------------


def _blob(layouts: Sequence[Path], digest: str) -> bytes:
    """A blob from the first of ``layouts`` holding it (upstream's convert output holds only what it added)."""
    algorithm, hex_digest = digest.split(":", 1)
    for layout in layouts:
        path = layout / "blobs" / algorithm / hex_digest
        if path.exists():
            return path.read_bytes()
    raise FileNotFoundError(f"blob {digest} is in none of {[str(p) for p in layouts]}")


def _push_manifest_tree(registry: RegistryServer, repo: str, layouts: Sequence[Path], desc: dict[str, Any]) -> None:
    """Push one manifest (or index, children first) of an OCI layout, with the blobs it names."""
    digest, media_type = str(desc["digest"]), str(desc["mediaType"])
    data = _blob(layouts, digest)
    document = json.loads(data)
    if media_type in INDEX_MEDIA_TYPES:
        for child in document.get("manifests") or ():
            _push_manifest_tree(registry, repo, layouts, child)
    else:
        for blob in (document["config"], *(document.get("layers") or ())):
            registry.push_blob(repo, _blob(layouts, blob["digest"]))
    registry.push_manifest(repo, digest, data, media_type)


def push_layout(registry: RegistryServer, ref: str, *layouts: Path) -> str:
    """Push the one image of the first OCI layout as ``ref`` (host/repo:tag) with its exact bytes; blobs may
    come from any of ``layouts``. Returns the image's digest."""
    repo, tag = ref.split("/", 1)[1].rsplit(":", 1)
    (desc,) = json.loads((layouts[0] / "index.json").read_bytes())["manifests"]
    _push_manifest_tree(registry, repo, layouts, desc)
    registry.push_manifest(repo, tag, _blob(layouts, desc["digest"]), desc["mediaType"])
    return str(desc["digest"])


def push_v1_index(registry: RegistryServer, ref: str, created: Path) -> str:
    """Push the v1 index ``soci-golden create`` wrote (zTOCs, config, manifest) as upstream's ``soci push`` does
    on a registry without the referrers API: the manifest by digest, then the ``sha256-<hex>`` fallback index
    listing it. Returns the index digest."""
    repo = ref.split("/", 1)[1].rsplit(":", 1)[0]
    data = (created / "index-manifest.json").read_bytes()
    manifest = json.loads(data)
    for blob in (manifest["config"], *manifest["layers"]):
        registry.push_blob(repo, _blob([created], blob["digest"]))
    digest = registry.push_manifest(repo, sha256_digest(data), data, MEDIA_TYPE_OCI_MANIFEST)
    referrer = {
        "mediaType": MEDIA_TYPE_OCI_MANIFEST,
        "digest": digest,
        "size": len(data),
        "artifactType": si.ARTIFACT_TYPE_V1,
        "annotations": manifest.get("annotations") or {},
    }
    subject = manifest["subject"]["digest"]
    registry.push_manifest(repo, referrers_tag(subject), encode_index([referrer]), MEDIA_TYPE_OCI_INDEX)
    return digest


# ---- upstream's daemon and containerd 2.x ----------------------------------------------------------------


def upstream_daemon_config(registry: RegistryServer) -> str:
    """Upstream's config: v1 discovery and prefetch on, and plain HTTP to the test registry."""
    host = registry.host
    return "\n".join(
        [
            "[pull_modes.soci_v1]",
            "enable = true",
            "[pull_modes.soci_v2]",
            "enable = true",
            "[prefetch]",
            "enable = true",
            f'[[resolver.host."{host}".mirrors]]',
            f'host = "http://{host}"',
            "insecure = true",
            "",
        ]
    )


class UpstreamSnapshotter(SnapshotterProcess):
    """Upstream's unmodified ``soci-snapshotter-grpc`` (same flags, same readiness line, SIGINT unmounts)."""

    def command(self) -> list[str]:
        args = [str(TOOLS / "soci-snapshotter-grpc"), "--address", str(self.socket), "--root", str(self.root)]
        args += ["--log-level", self.log_level]
        if self.config is not None:
            config_path = self.workdir / "config.toml"
            config_path.write_text(self.config)
            args += ["--config", str(config_path)]
        return args + list(self.extra_args)


class Containerd2Server(ContainerdServer):
    """containerd 2.x (built into interop/.cache/containerd2/bin) with a version 3 config whose transfer
    service unpacks into the proxy snapshotters and passes them the remote-snapshot labels.

    Its ``ctr`` is the 2.x one, and the 2.x runc shim is found first on containerd's ``PATH``; the test
    process's own ``PATH`` is left alone, so a containerd 1.6 stack can run next to it.
    """

    def __init__(self, workdir: Path, *, proxy_plugins: dict[str, Path], roots: dict[str, Path]) -> None:
        super().__init__(workdir, proxy_plugins=proxy_plugins, bin_dir=CONTAINERD2_BIN)
        self.roots = roots

    def config_text(self) -> str:
        lines = [
            "version = 3",
            f'root = "{self.root}"',
            f'state = "{self.workdir / "state"}"',
            'disabled_plugins = ["io.containerd.grpc.v1.cri", "io.containerd.cri.v1.images",'
            ' "io.containerd.cri.v1.runtime", "io.containerd.podsandbox.controller.v1.podsandbox",'
            ' "io.containerd.sandbox.controller.v1.shim"]',
            "",
            "[grpc]",
            f'  address = "{self.address}"',
            "[ttrpc]",
            f'  address = "{self.address}.ttrpc"',
            "[debug]",
            f'  address = "{self.socket_dir / "debug.sock"}"',
            f'  level = "{self.log_level}"',
            "",
            "[plugins]",
            "  [plugins.'io.containerd.transfer.v1.local']",
            "    [[plugins.'io.containerd.transfer.v1.local'.unpack_config]]",
            "      platform = 'linux/amd64'",
            "      snapshotter = 'overlayfs'",
        ]
        for name in self.proxy_plugins:
            lines += [
                "    [[plugins.'io.containerd.transfer.v1.local'.unpack_config]]",
                "      platform = 'linux/amd64'",
                f"      snapshotter = '{name}'",
            ]
        lines += ["", "[proxy_plugins]"]
        for name, socket_path in self.proxy_plugins.items():
            lines += [
                f"  [proxy_plugins.{name}]",
                "    type = 'snapshot'",
                f"    address = '{socket_path}'",
                f"    [proxy_plugins.{name}.exports]",
                "      enable_remote_snapshot_annotations = 'true'",
                f"      root = '{self.roots[name]}'",
            ]
        return "\n".join(lines) + "\n"


@contextmanager
def upstream_running(workdir: Path, registry: RegistryServer) -> Iterator[Stack]:
    """Upstream's daemon behind containerd 2.x (containerd 1.6 does not pass the namespace to proxy
    snapshotters, and upstream's Prepare refuses a request without one)."""
    daemon = UpstreamSnapshotter(workdir / "daemon", config=upstream_daemon_config(registry)).start()
    try:
        with Containerd2Server(
            workdir / "containerd", proxy_plugins={"soci": daemon.socket}, roots={"soci": daemon.root}
        ) as containerd:
            yield Stack(registry, daemon, containerd, workdir)
    finally:
        daemon.stop(signal.SIGINT)
        leftovers = system.mountpoints_under(daemon.root)
        system.unmount_all(daemon.root)
        assert leftovers == [], f"upstream's daemon left mounts after SIGINT: {leftovers}"


BASELINE_NAMESPACE = "overlay-baseline"


def check_run_and_rootfs(stack: Stack, image: BuiltImage, tmp_path: Path) -> None:
    """Run the e2e script from ``image`` on the ``soci`` snapshotter, then compare its root filesystem with
    the same image unpacked by overlayfs in another namespace of the same containerd."""
    assert stack.run(image.ref, "/bin/sh", "-c", SCRIPT) == EXPECTED_OUTPUT
    stack.containerd.ctr("-n", BASELINE_NAMESPACE, "images", "pull", "--plain-http", image.ref)
    top = chain_ids([sha256_digest(layer.tar) for layer in image.layers])[-1]
    with mounted_view(stack.containerd, "soci", top, tmp_path / "lazy") as view:
        lazy = dict(walk_tree(view))
    with mounted_view(stack.containerd, "overlayfs", top, tmp_path / "ovl", BASELINE_NAMESPACE) as view:
        unpacked = dict(walk_tree(view))
    assert lazy == unpacked

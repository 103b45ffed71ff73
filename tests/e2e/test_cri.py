"""Kubernetes' path: crictl -> our CRI image service proxy -> containerd's CRI plugin -> the soci snapshotter.

A private registry (TLS from a throwaway CA, htpasswd auth) holds a SOCI-enabled image and a pause image.
`crictl pull --creds` goes through the daemon's ImageService proxy, which keeps the credentials; containerd's
CRI plugin then prepares the layers with CRI's labels, and the snapshotter mounts them lazily with those
credentials (no Docker config exists). A pod sandbox and a container run from it with runc, the container's
output is checked, the registry must have served less than half of the big layer, the daemon's metrics carry
upstream's names, and the lazily mounted tree equals containerd's own overlayfs unpack of the image.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import subprocess
import tarfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from e2e_images import EXPECTED_OUTPUT, SCRIPT, BuiltImage, image_layers, soci, walk_tree
from e2e_stack import FUSE_MOUNTER, daemon_config, metric_total, mounted_view, mounter_env, needs_stack, scrape_metrics

from soci.containerd.pull import chain_ids
from soci.containerd.testing import ContainerdServer, cri_plugin_config
from soci.daemon.testing import SnapshotterProcess
from soci.formats.digest import sha256_digest
from soci.testing.images import Layer, gzip_layer, write_oci_layout
from soci.testing.registry_server import DEFAULT_USERS, RegistryServer, free_port

REPO = Path(__file__).parents[2]
CRICTL = REPO / ".work" / "cache" / "bin" / "crictl"
BUSYBOX = Path("/bin/busybox")
USER, PASSWORD = next(iter(DEFAULT_USERS.items()))
CREDS = f"{USER}:{PASSWORD}"

pytestmark = [
    *needs_stack,
    pytest.mark.slow,
    pytest.mark.skipif(not CRICTL.is_file(), reason="no crictl: run scripts/build-crictl.sh (needs Go)"),
    pytest.mark.skipif(not BUSYBOX.is_file(), reason="busybox-static is needed for the pause image"),
]


@dataclass
class CriNode:
    registry: RegistryServer
    daemon: SnapshotterProcess
    containerd: ContainerdServer
    hosts_dir: Path
    workdir: Path
    metrics_port: int
    image: BuiltImage
    pause_ref: str

    def crictl(self, *args: str, timeout: float = 180.0) -> subprocess.CompletedProcess[str]:
        config = self.workdir / "crictl.yaml"  # never the machine's /etc/crictl.yaml
        config.write_text(
            f"runtime-endpoint: unix://{self.containerd.address}\n"
            f"image-endpoint: unix://{self.daemon.socket}\n"  # the daemon's CRI image service proxy
            "timeout: 120\n"
        )
        command = [str(CRICTL), "--config", str(config), *args]
        return subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)

    def crictl_ok(self, *args: str) -> str:
        result = self.crictl(*args)
        assert result.returncode == 0, f"crictl {' '.join(args)}: {result.stderr}\n{self.daemon.log_tail(30)}"
        return result.stdout.strip()


def _push_layout(registry: RegistryServer, layout: Path, ref: str) -> None:
    subprocess.run(
        [
            "skopeo",
            "copy",
            "--quiet",
            "--dest-tls-verify=false",
            "--dest-creds",
            CREDS,
            f"oci:{layout}:latest",
            f"docker://{ref}",
        ],
        check=True,
        timeout=300,
    )


def _pause_layer() -> Layer:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo("bin/busybox")
        data = BUSYBOX.read_bytes()
        info.size, info.mode, info.mtime = len(data), 0o755, 1_700_000_000
        tar.addfile(info, io.BytesIO(data))
    return gzip_layer(buffer.getvalue())


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CriNode]:
    workdir = tmp_path_factory.mktemp("cri")
    with RegistryServer(tls=True, auth="htpasswd", workdir=workdir / "registry") as registry:
        hosts_dir = workdir / "certs.d"
        # containerd (>= 1.6.9) talks plain HTTP to a loopback registry's default server even when hosts.toml
        # names https (containerd#9157); a [host] entry keeps its scheme, so the registry is listed as one too
        registry.write_hosts_toml(hosts_dir, mirrors=[registry.url])

        layers = image_layers(seed=401)
        write_oci_layout(workdir / "app-layout", layers)
        src_ref = f"{registry.host}/private/app:v1"
        _push_layout(registry, workdir / "app-layout", src_ref)
        dst_ref = f"{registry.host}/private/app:v1-soci"
        root = workdir / "soci"
        soci(root, "convert", "--remote", "-u", CREDS, "--hosts-dir", str(hosts_dir), "--min-layer-size", "0",
             src_ref, dst_ref)  # fmt: skip
        write_oci_layout(workdir / "pause-layout", [_pause_layer()], cmd=("/bin/busybox", "sleep", "2147483647"))
        pause_ref = f"{registry.host}/private/pause:1"
        _push_layout(registry, workdir / "pause-layout", pause_ref)

        cni_dir = workdir / "cni"
        cni_dir.mkdir(parents=True, exist_ok=True)
        cri = cri_plugin_config(sandbox_image=pause_ref, cni_dir=cni_dir, hosts_dir=hosts_dir)
        containerd = ContainerdServer(workdir / "containerd", cri_config=cri, log_level="debug")
        port = free_port()
        # Background fetch off: the test measures what the container's reads fetched, not the idle fill-in.
        extra = (
            "[background_fetch]\n  disable = true\n"
            f'[cri_keychain]\n  enable_keychain = true\n  image_service_path = "{containerd.address}"\n'
        )
        env = {
            **mounter_env(FUSE_MOUNTER),
            "SOCI_SNAPSHOTTER_HOSTS_DIR": str(hosts_dir),
            "HOME": str(workdir / "home"),  # no Docker config: credentials can only come through CRI
            "DOCKER_CONFIG": str(workdir / "home" / ".docker"),
        }
        daemon = SnapshotterProcess(workdir / "daemon", config=daemon_config(port, extra), env=env).start()
        containerd.proxy_plugins["soci"] = daemon.socket
        try:
            with containerd:
                yield CriNode(
                    registry, daemon, containerd, hosts_dir, workdir, port, BuiltImage(dst_ref, layers), pause_ref
                )
        finally:
            daemon.stop(signal.SIGINT)


def _container_logs(path: Path) -> list[str]:
    """The stdout lines of a CRI log file (``<time> <stream> <tag> <line>`` per line)."""
    lines = []
    for entry in path.read_text().splitlines():
        parts = entry.split(" ", 3)
        if len(parts) == 4 and parts[1] == "stdout":
            lines.append(parts[3])
    return lines


def test_pull_without_credentials_fails_clearly(node: CriNode) -> None:
    # first, before any pull has given the keychain credentials for this repository
    started = time.monotonic()
    result = node.crictl("pull", node.image.ref)
    assert result.returncode != 0
    assert "401 unauthorized" in result.stderr.lower() or "authorization failed" in result.stderr.lower(), result.stderr
    assert time.monotonic() - started < 170, "the pull without credentials hung until crictl's timeout"


def test_private_image_runs_lazily_through_cri(node: CriNode, tmp_path: Path) -> None:
    big = node.image.layers[1].descriptor()
    served_before = node.registry.bytes_served(big.digest)  # soci convert read the whole layer once
    node.crictl_ok("pull", "--creds", CREDS, node.pause_ref)
    node.crictl_ok("pull", "--creds", CREDS, node.image.ref)
    images = json.loads(node.crictl_ok("images", "-o", "json"))
    assert any(node.image.ref in image.get("repoTags", []) for image in images["images"]), images

    logs = tmp_path / "logs"
    logs.mkdir()
    pod = {
        "metadata": {"name": "soci-pod", "namespace": "default", "uid": os.urandom(4).hex(), "attempt": 0},
        "log_directory": str(logs),
        "linux": {"security_context": {"namespace_options": {"network": 2}}},  # NODE: no CNI needed
    }
    container = {
        "metadata": {"name": "app"},
        "image": {"image": node.image.ref},
        "command": ["/bin/sh", "-c", SCRIPT],
        "log_path": "app.log",
        "linux": {},
    }
    (tmp_path / "pod.json").write_text(json.dumps(pod))
    (tmp_path / "container.json").write_text(json.dumps(container))
    pod_id = node.crictl_ok("runp", str(tmp_path / "pod.json"))
    try:
        container_id = node.crictl_ok("create", pod_id, str(tmp_path / "container.json"), str(tmp_path / "pod.json"))
        node.crictl_ok("start", container_id)
        deadline = time.monotonic() + 120
        state = ""
        while time.monotonic() < deadline:
            state = json.loads(node.crictl_ok("inspect", container_id))["status"]["state"]
            if state == "CONTAINER_EXITED":
                break
            time.sleep(0.2)
        assert state == "CONTAINER_EXITED", state
        status = json.loads(node.crictl_ok("inspect", container_id))["status"]
        assert status["exitCode"] == 0, status
        assert _container_logs(logs / "app.log") == EXPECTED_OUTPUT

        # the container read a few small files: only a fraction of the big layer came over the wire
        served = node.registry.bytes_served(big.digest) - served_before
        print(f"big layer: {served} of {big.size} bytes served")
        assert served < big.size // 2

        samples = scrape_metrics(node.metrics_port)
        for layer in node.image.layers:
            digest = layer.descriptor().digest
            assert metric_total(samples, "soci_fs_layer_fetched_size_bytes", digest=digest) > 0, digest
        assert metric_total(samples, "soci_fs_operation_count", operation_type="synchronous_read_count") > 0
        assert metric_total(samples, "soci_fs_operation_duration_milliseconds_count", operation_type="mount") > 0
    finally:
        node.crictl("stopp", pod_id)
        node.crictl("rmp", pod_id)

    # every byte of the lazily mounted image equals containerd's own unpack (overlayfs) of it
    node.containerd.ctr(
        "-n", "baseline", "images", "pull", "--hosts-dir", str(node.hosts_dir), "--user", CREDS, node.image.ref
    )
    top = chain_ids([sha256_digest(layer.tar) for layer in node.image.layers])[-1]
    with mounted_view(node.containerd, "soci", top, tmp_path / "lazy", "k8s.io") as view:
        ours = dict(walk_tree(view))
    with mounted_view(node.containerd, "overlayfs", top, tmp_path / "ovl", "baseline") as view:
        theirs = dict(walk_tree(view))
    assert ours == theirs
    shutil.rmtree(logs, ignore_errors=True)

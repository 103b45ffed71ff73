"""The end-to-end stack (registry, snapshotter daemon with the test mounter, containerd) and its helpers."""

from __future__ import annotations

import asyncio
import os
import re
import secrets
import signal
import subprocess
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner
from prometheus_client.parser import text_string_to_metric_families

from soci.cli.image import image
from soci.cli.main import cli
from soci.containerd.client import ContainerdClient
from soci.containerd.testing import ContainerdServer, containerd_available
from soci.daemon.testing import SnapshotterProcess
from soci.testing.registry_server import RegistryServer, free_port, registry_available

HERE = Path(__file__).parent

needs_stack = [
    pytest.mark.containerd,
    pytest.mark.registry,
    pytest.mark.root,
    pytest.mark.skipif(not containerd_available(), reason="containerd, ctr and runc are needed"),
    pytest.mark.skipif(not registry_available(), reason="docker-registry is not installed"),
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root"),
]

if "image" not in cli.commands:  # the lead registers it in soci.cli.main; tests must not wait for that
    cli.add_command(image)


TEST_MOUNTER = "e2e_mounter:factory"
FUSE_MOUNTER = "soci.daemon.mounters:fuse"


def mounter_env(mounter: str = TEST_MOUNTER) -> dict[str, str]:
    path = os.pathsep.join(p for p in (str(HERE), os.environ.get("PYTHONPATH", "")) if p)
    return {"SOCI_SNAPSHOTTER_LAYER_MOUNTER": mounter, "PYTHONPATH": path}


@dataclass
class Stack:
    registry: RegistryServer
    daemon: SnapshotterProcess
    containerd: ContainerdServer
    workdir: Path
    metrics_port: int = 0

    def rpull(self, ref: str, *args: str, namespace: str = "default") -> str:
        result = CliRunner().invoke(
            cli,
            [
                "--address",
                self.containerd.address,
                "--namespace",
                namespace,
                "image",
                "rpull",
                "--plain-http",
                *args,
                ref,
            ],
        )
        assert result.exit_code == 0, result.output + "\n" + self.daemon.log_tail(40)
        return result.output

    def run(self, ref: str, *command: str, namespace: str = "default", snapshotter: str = "soci") -> list[str]:
        container = "c-" + secrets.token_hex(4)
        result = self.containerd.ctr(
            "-n", namespace, "run", "--rm", "--snapshotter", snapshotter, ref, container, *command, timeout=120
        )
        return result.stdout.splitlines()

    def restart_daemon(self) -> None:
        """Start the daemon again and wait until containerd's connection to it works again (containerd
        retries a broken proxy connection with backoff)."""
        self.daemon.start()
        # containerd reconnects with backoff; only a call that reaches the snapshotter shows that it has. Its
        # metadata store answers Stat and Usage of snapshots it does not know itself, so a throwaway Prepare it is
        probe = ("snapshots", "--snapshotter", "soci")

        def answered() -> bool:
            key = f"restart-probe-{secrets.token_hex(4)}"
            if self.containerd.ctr(*probe, "prepare", key, check=False).returncode != 0:
                return False
            self.containerd.ctr(*probe, "rm", key)
            return True

        assert wait_until(answered), "containerd cannot reach the restarted snapshotter"

    def log_entries(self) -> list[dict[str, object]]:
        return self.daemon.log_entries()


def layer_modes(rpull_output: str) -> list[str]:
    """The mode printed for each layer by ``soci image rpull``."""
    return [m.group(1) for m in re.finditer(r"^layer \d+/\d+ \S+ \([^)]*\): (.+?) \[", rpull_output, re.M)]


def daemon_config(metrics_port: int = 0, extra: str = "") -> str:
    lines = []
    if metrics_port:
        lines.append(f'metrics_address = "127.0.0.1:{metrics_port}"')
    return "\n".join(lines) + "\n" + extra


@contextmanager
def stack_running(
    workdir: Path, registry: RegistryServer, config_extra: str = "", mounter: str = TEST_MOUNTER
) -> Iterator[Stack]:
    port = free_port()
    daemon = SnapshotterProcess(
        workdir / "daemon", config=daemon_config(port, config_extra), env=mounter_env(mounter)
    ).start()
    try:
        with ContainerdServer(workdir / "containerd", proxy_plugins={"soci": daemon.socket}) as containerd:
            yield Stack(registry, daemon, containerd, workdir, port)
    finally:
        daemon.stop(signal.SIGINT)


Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape_metrics(port: int) -> Samples:
    """Every sample of the daemon's /metrics, parsed as Prometheus would: (name, labels) -> value."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    assert "\nsoci_fs_operation_count{" in text and "soci_fs_operation_count_total" not in text
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def metric_total(samples: Samples, name: str, **labels: str) -> float:
    want = set(labels.items())
    names = (name, name + "_total")  # the parser renames counter samples; the text has upstream's name
    return sum(v for (n, have), v in samples.items() if n in names and want <= have)


def wait_until(condition: Callable[[], bool], timeout_sec: float = 90.0) -> bool:
    deadline = time.monotonic() + timeout_sec
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.1)
    return condition()


@contextmanager
def mounted_view(
    containerd: ContainerdServer, snapshotter: str, parent: str, target: Path, namespace: str = "default"
) -> Iterator[Path]:
    """A read-only view of committed snapshot ``parent`` mounted at ``target`` (as containerd would mount it).

    The view is made under a lease: an unreferenced view would be fair game for containerd's GC.
    """
    key = f"view-{secrets.token_hex(4)}"
    target.mkdir(parents=True, exist_ok=True)

    async def create() -> list[tuple[str, str, str]]:
        async with ContainerdClient(containerd.address, namespace, timeout_sec=120) as client:
            async with client.lease(expire_sec=600):
                await client.view_snapshot(snapshotter, key, parent, {"containerd.io/gc.root": "test"})
            return [(m.type, m.source, ",".join(m.options)) for m in await client.snapshot_mounts(snapshotter, key)]

    (mount,) = asyncio.run(create())
    kind, source, options = mount
    if kind == "bind":
        options = options.replace("rbind", "bind")
    subprocess.run(["mount", "-t", kind, "-o", options, source, str(target)], check=True)
    try:
        yield target
    finally:
        subprocess.run(["umount", str(target)], check=True)
        containerd.ctr("-n", namespace, "snapshots", "--snapshotter", snapshotter, "rm", key)

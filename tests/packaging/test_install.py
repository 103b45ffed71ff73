"""scripts/install.sh on a clean tree: the installed commands, units and config start a working daemon."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import urllib.request
from pathlib import Path

import pytest

from soci.containerd.client import ContainerdClient
from soci.daemon.testing import SnapshotterProcess
from soci.testing.registry_server import free_port

REPO = Path(__file__).parents[2]

pytestmark = [
    pytest.mark.root,
    pytest.mark.slow,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root (the daemon's overlay check)"),
]


def _install(layout: dict[str, Path]) -> subprocess.CompletedProcess[str]:
    # a clean environment: nothing of the test's virtualenv may leak into the installed one
    env = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/root"), "SKIP_APT": "1"}
    env.update({name: str(path) for name, path in layout.items()})
    env["PATH"] = ":".join(p for p in env["PATH"].split(":") if ".venv" not in p)
    return subprocess.run(
        ["bash", str(REPO / "scripts" / "install.sh")], env=env, capture_output=True, text=True, timeout=900
    )


def _stat_missing(socket_path: Path) -> bool:
    async def ask() -> bool:
        async with ContainerdClient(str(socket_path), timeout_sec=20) as client:
            return await client.stat_snapshot("soci", "no-such-snapshot") is None

    return asyncio.run(ask())


def test_install_on_a_clean_root_starts_the_installed_daemon(tmp_path: Path) -> None:
    layout = {
        "PREFIX": tmp_path / "opt" / "soci-py",
        "BINDIR": tmp_path / "usr" / "local" / "bin",
        "UNITDIR": tmp_path / "etc" / "systemd" / "system",
        "CONFDIR": tmp_path / "etc" / "soci-snapshotter-grpc",
    }
    result = _install(layout)
    assert result.returncode == 0, result.stderr

    daemon_bin = layout["BINDIR"] / "soci-snapshotter-grpc"
    assert daemon_bin.resolve() == (layout["PREFIX"] / "bin" / "soci-snapshotter-grpc")
    soci_help = subprocess.run([str(layout["BINDIR"] / "soci"), "--help"], capture_output=True, text=True, cwd="/")
    assert soci_help.returncode == 0 and "SOCI" in soci_help.stdout, soci_help.stderr
    # the installed environment is the product alone: no test or lint tools from the lock
    pip_list = subprocess.run([str(layout["PREFIX"] / "bin" / "pip"), "list"], capture_output=True, text=True)
    assert pip_list.returncode == 0 and "pyfuse3" in pip_list.stdout
    assert "pytest" not in pip_list.stdout and "mypy" not in pip_list.stdout

    service = (layout["UNITDIR"] / "soci-snapshotter.service").read_text()
    assert f"ExecStart={daemon_bin} --address fd://" in service
    if shutil.which("systemd-analyze"):
        units = sorted(str(p) for p in layout["UNITDIR"].iterdir())
        verify = subprocess.run(["systemd-analyze", "verify", "--man=no", *units], capture_output=True, text=True)
        assert verify.returncode == 0 and verify.stderr.strip() == "", verify.stderr

    config = layout["CONFDIR"] / "config.toml"
    assert config.read_text() == (REPO / "packaging" / "config.toml").read_text()
    port = free_port()
    text = config.read_text().replace('metrics_address = "127.0.0.1:8000"', f'metrics_address = "127.0.0.1:{port}"')
    assert f"127.0.0.1:{port}" in text
    daemon = SnapshotterProcess(tmp_path / "run", config=text, program=(str(daemon_bin),)).start()
    try:
        assert _stat_missing(daemon.socket)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
            assert "# TYPE soci_fs_operation_count counter" in response.read().decode()
    finally:
        assert daemon.stop(signal.SIGTERM) == 0, daemon.log_tail()
    warnings = [str(e.get("msg")) for e in daemon.log_entries() if e.get("level") == "warning"]
    assert not [w for w in warnings if "unknown key" in w], warnings

    # a second run upgrades in place and keeps the operator's config
    config.write_text(config.read_text() + "\n# edited by the operator\n")
    again = _install(layout)
    assert again.returncode == 0, again.stderr
    assert config.read_text().endswith("# edited by the operator\n")
    assert "kept" in again.stdout
    assert not list(layout["PREFIX"].parent.glob("soci-py.*")), "staging or old virtualenvs left behind"

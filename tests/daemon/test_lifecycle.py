"""The daemon process: socket, signals, systemd notification and socket activation."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import stat
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from soci.containerd.client import ContainerdClient
from soci.daemon.testing import SnapshotterProcess
from soci.testing.registry_server import free_port

pytestmark = [pytest.mark.root, pytest.mark.skipif(os.geteuid() != 0, reason="needs root (overlay check)")]


def _stat_missing(socket_path: Path) -> bool:
    """Ask the daemon at ``socket_path`` for a snapshot that does not exist (True: it answered NOT_FOUND)."""

    async def ask() -> bool:
        async with ContainerdClient(str(socket_path), timeout_sec=20) as client:
            return await client.stat_snapshot("soci", "no-such-snapshot") is None

    return asyncio.run(ask())


def test_socket_mode_and_clean_stop(tmp_path: Path) -> None:
    daemon = SnapshotterProcess(tmp_path).start()
    try:
        assert stat.S_IMODE(daemon.socket.stat().st_mode) == 0o660
        assert _stat_missing(daemon.socket)
    finally:
        assert daemon.stop(signal.SIGTERM) == 0
    assert any(e.get("msg") == "exiting" and e.get("cleanup") is False for e in daemon.log_entries())


def test_second_daemon_on_the_same_socket_is_refused(tmp_path: Path) -> None:
    first = SnapshotterProcess(tmp_path / "a").start()
    try:
        second = SnapshotterProcess(tmp_path / "b")
        second.workdir.mkdir()
        result = subprocess.run(
            [*second.command()[:3], "--address", str(first.socket), "--root", str(second.root)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 1
        assert "already serving" in result.stderr
        assert first.accepts_connections()  # the first daemon's socket survived
    finally:
        first.stop(signal.SIGINT)


def test_stale_socket_file_is_replaced(tmp_path: Path) -> None:
    daemon = SnapshotterProcess(tmp_path)
    tmp_path.mkdir(exist_ok=True)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as stale:
        stale.bind(str(daemon.socket))  # bound, never listening: what a killed process leaves
    daemon.start()
    try:
        assert _stat_missing(daemon.socket)
    finally:
        daemon.stop(signal.SIGINT)


def test_sd_notify_ready_and_stopping(tmp_path: Path) -> None:
    notify_path = tmp_path / "notify.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as notify:
        notify.bind(str(notify_path))
        notify.settimeout(60)
        daemon = SnapshotterProcess(tmp_path / "d", env={"NOTIFY_SOCKET": str(notify_path)}).start()
        assert notify.recv(64) == b"READY=1"
        daemon.stop(signal.SIGTERM)
        assert notify.recv(64) == b"STOPPING=1"


def test_socket_activation(tmp_path: Path) -> None:
    activated = tmp_path / "activated.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(activated))
    listener.listen(16)
    fd = listener.fileno()
    root = tmp_path / "root"
    # LISTEN_PID must be the daemon's own PID: set it in a shell that then execs the daemon
    command = f'LISTEN_PID=$$ LISTEN_FDS=1 exec {sys.executable} -m soci.daemon --address fd:// --root "{root}"'
    process = subprocess.Popen(
        ["sh", "-c", command],
        preexec_fn=lambda: os.dup2(fd, 3),  # dup2 leaves fd 3 inheritable
        close_fds=False,  # Popen would close fd 3 after preexec_fn otherwise
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    listener.close()  # the daemon holds it now
    try:
        assert _stat_missing(activated)  # connection queued on the activated socket, answered by gRPC
        assert activated.exists()
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(60)
    assert process.returncode == 0, process.stderr.read().decode() if process.stderr else ""


def test_a_config_copied_from_upstreams_docs_starts_the_daemon(tmp_path: Path) -> None:
    port = free_port()
    text = (Path(__file__).parent.parent / "data" / "upstream-config.toml").read_text()
    text = text.replace('metrics_address = "127.0.0.1:0"', f'metrics_address = "127.0.0.1:{port}"')
    daemon = SnapshotterProcess(tmp_path, config=text).start()
    try:
        assert _stat_missing(daemon.socket)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
            assert "# TYPE soci_fs_operation_count counter" in response.read().decode()
    finally:
        assert daemon.stop(signal.SIGTERM) == 0
    warnings = [str(e.get("msg")) for e in daemon.log_entries() if e.get("level") == "warning"]
    assert [w for w in warnings if "unknown key" in w] == [
        f"{daemon.workdir / 'config.toml'}: ignoring unknown key 'namespace' in [content_store]"
    ]

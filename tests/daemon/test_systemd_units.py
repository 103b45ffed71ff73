"""The packaged systemd units: socket activation wired to the daemon's flags, verified by systemd."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from soci.fs import session

UNITS = Path(__file__).parents[2] / "packaging" / "systemd"


def _settings(path: Path) -> dict[str, str]:
    settings = {}
    for line in path.read_text().splitlines():
        if "=" in line and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            settings[key.strip()] = value.strip()
    return settings


def test_service_and_socket_agree_with_the_daemon() -> None:
    service = _settings(UNITS / "soci-snapshotter.service")
    socket = _settings(UNITS / "soci-snapshotter.socket")
    assert service["Type"] == "notify"
    assert service["ExecStart"].endswith("soci-snapshotter-grpc --address fd://")
    assert socket["ListenStream"] == "/run/soci-snapshotter-grpc/soci-snapshotter-grpc.sock"
    assert socket["SocketMode"] == "0660"


def test_service_turns_on_the_fd_store_for_fuse_sessions() -> None:
    service = _settings(UNITS / "soci-snapshotter.service")
    store_max = int(service["FileDescriptorStoreMax"])
    # one descriptor per mounted layer: a limit of a few would drop sessions on a busy node
    assert store_max >= 4096
    # systemd < 254 does not export $FDSTORE; without it default_keeper would not use the store
    assert service["Environment"] == f"FDSTORE={store_max}"
    env = {"NOTIFY_SOCKET": "/run/systemd/notify", "FDSTORE": service["Environment"].partition("=")[2]}
    assert isinstance(session.default_keeper(Path("/var/lib/soci/mnt/1"), env), session.SystemdStore)


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_units_pass_systemd_analyze_verify(tmp_path: Path) -> None:
    for unit in UNITS.iterdir():
        text = unit.read_text().replace("/usr/local/bin/soci-snapshotter-grpc", f"{sys.executable} -m soci.daemon")
        (tmp_path / unit.name).write_text(text)
    result = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", *sorted(str(p) for p in tmp_path.iterdir())],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0 and result.stderr.strip() == "", result.stderr

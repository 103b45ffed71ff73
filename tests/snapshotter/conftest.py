"""Fixtures: a snapshotter daemon and a containerd using it as the ``soci`` proxy plugin."""

from __future__ import annotations

import signal
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from soci.containerd.testing import ContainerdServer
from soci.daemon.testing import SnapshotterProcess

_HERE = Path(__file__).parent
for _helpers in (_HERE, _HERE.parent / "e2e"):  # snapshotter_* helpers here, the test mounter of the e2e tests
    if str(_helpers) not in sys.path:
        sys.path.insert(0, str(_helpers))


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[SnapshotterProcess, ContainerdServer]]:
    workdir = tmp_path_factory.mktemp("stack")
    daemon = SnapshotterProcess(workdir / "daemon").start()
    try:
        # debug: containerd logs each garbage collection, which test_removed_snapshots_leave_no_directories needs
        plugins = {"soci": daemon.socket}
        with ContainerdServer(workdir / "containerd", proxy_plugins=plugins, log_level="debug") as containerd:
            yield daemon, containerd
    finally:
        daemon.stop(signal.SIGINT)

"""Fixtures: a snapshotter daemon and a containerd using it as the ``soci`` proxy plugin."""

from __future__ import annotations

import signal
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from soci.containerd.testing import ContainerdServer
from soci.daemon.testing import SnapshotterProcess

_HERE = str(Path(__file__).parent)
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)  # the snapshotter_* helper modules next to this file


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[SnapshotterProcess, ContainerdServer]]:
    workdir = tmp_path_factory.mktemp("stack")
    daemon = SnapshotterProcess(workdir / "daemon").start()
    try:
        with ContainerdServer(workdir / "containerd", proxy_plugins={"soci": daemon.socket}) as containerd:
            yield daemon, containerd
    finally:
        daemon.stop(signal.SIGINT)

"""A short load soak: 8 containers from 2 images at once on the real FUSE mounter, a kill -9 restart of
the daemon in the middle; every read's sha256 is right and the daemon does not leak descriptors.
``bench/soak.py`` runs the longer one and prints the figures."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from e2e_soak import BUSYBOX, soak
from e2e_stack import needs_stack

from soci.testing.registry_server import RegistryServer

pytestmark = [*needs_stack, pytest.mark.slow]

# descriptors a restarted daemon may hold beyond its predecessor's (log, sockets of a new gRPC server,
# a watcher); a leak per container or per read would exceed it
FD_SLACK = 16


@pytest.fixture(scope="module")
def registry() -> Iterator[RegistryServer]:
    with RegistryServer() as server:
        yield server


@pytest.mark.skipif(not BUSYBOX.exists(), reason="needs a static /usr/bin/busybox")
def test_soak_8_containers_2_images_with_a_kill9_restart(registry: RegistryServer, tmp_path: Path) -> None:
    result = soak(registry, tmp_path, containers=8, images=2)
    print(f"\n{result}")
    assert result.failures == []
    assert result.reads == 8 * 3 * 4  # every round of every container ran
    assert result.daemons_sampled == 2  # the killed daemon and the one started after it
    assert result.fds_after <= result.fds_before + FD_SLACK
    assert result.peak_fds <= result.fds_before + FD_SLACK

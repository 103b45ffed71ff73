"""Daemon restarts: SIGTERM keeps mounts, SIGINT removes them, a crash's dead mounts are repaired."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from e2e_images import EXPECTED_OUTPUT, SCRIPT, convert, push_image
from e2e_stack import FUSE_MOUNTER, HERE, Stack, needs_stack, stack_running

from soci.snapshotter import system
from soci.testing.registry_server import RegistryServer

pytestmark = [*needs_stack, pytest.mark.slow]


@pytest.fixture(scope="module")
def registry() -> Iterator[RegistryServer]:
    with RegistryServer() as server:
        yield server


@pytest.fixture
def lazy_stack(registry: RegistryServer, tmp_path: Path) -> Iterator[tuple[Stack, str]]:
    with stack_running(tmp_path / "stack", registry) as stack:
        src = push_image(registry, tmp_path, "restart/app", f"s{os.getpid()}", seed=201)
        image = convert(tmp_path / "soci", src, f"s{os.getpid()}-soci")
        stack.rpull(image.ref)
        yield stack, image.ref


@pytest.fixture
def fuse_stack(registry: RegistryServer, tmp_path: Path) -> Iterator[tuple[Stack, str]]:
    """The stack with the real lazy filesystem (one FUSE mount, a bind of it per remote snapshot)."""
    with stack_running(tmp_path / "stack", registry, mounter=FUSE_MOUNTER) as stack:
        src = push_image(registry, tmp_path, "restart/fuse", f"f{os.getpid()}", seed=202)
        image = convert(tmp_path / "soci", src, f"f{os.getpid()}-soci")
        stack.rpull(image.ref)
        yield stack, image.ref


def _remote_mounts(stack: Stack) -> list[Path]:
    return system.mountpoints_under(stack.daemon.root / "snapshotter" / "snapshots")


def _all_readable(paths: list[Path]) -> bool:
    for path in paths:
        try:
            os.listdir(path)
        except OSError:
            return False
    return True


def test_sigterm_keeps_mounts_and_restart_reuses_them(lazy_stack: tuple[Stack, str]) -> None:
    stack, ref = lazy_stack
    before = _remote_mounts(stack)
    assert len(before) == 3
    assert stack.daemon.stop(signal.SIGTERM) == 0
    assert _remote_mounts(stack) == before  # left for the next start
    stack.restart_daemon()
    assert _remote_mounts(stack) == before  # checked and kept, not stacked
    assert stack.run(ref, "/bin/sh", "-c", SCRIPT) == EXPECTED_OUTPUT


def test_sigint_unmounts_and_restart_mounts_again(lazy_stack: tuple[Stack, str]) -> None:
    stack, ref = lazy_stack
    assert stack.daemon.stop(signal.SIGINT) == 0
    assert _remote_mounts(stack) == []
    stack.restart_daemon()
    assert len(_remote_mounts(stack)) == 3
    assert any("mounted again" in str(e.get("msg")) for e in stack.daemon.log_entries(since_start=True))
    assert stack.run(ref, "/bin/sh", "-c", SCRIPT) == EXPECTED_OUTPUT


def test_dead_mounts_and_leftovers_from_a_crash_are_repaired(lazy_stack: tuple[Stack, str], tmp_path: Path) -> None:
    stack, ref = lazy_stack
    mounts = _remote_mounts(stack)
    assert stack.daemon.stop(signal.SIGKILL) is not None  # a crash: nothing cleaned up
    victim = mounts[0]
    system.unmount_all(victim)
    fuse = subprocess.Popen(
        [sys.executable, str(HERE / "e2e_deadfuse.py"), str(victim)], stdout=subprocess.PIPE, text=True
    )
    assert fuse.stdout is not None and fuse.stdout.readline().strip() == "mounted"
    fuse.send_signal(signal.SIGKILL)
    fuse.wait()
    with pytest.raises(OSError):
        os.listdir(victim)  # dead: "Transport endpoint is not connected"
    leftover = stack.daemon.root / "snapshotter" / "snapshots" / "new-crashed"
    (leftover / "fs").mkdir(parents=True)
    system.mount("soci-leftover", leftover / "fs", "tmpfs")

    stack.restart_daemon()
    remaining = _remote_mounts(stack)
    assert len(remaining) == 3 and _all_readable(remaining)
    assert not leftover.exists()
    assert stack.run(ref, "/bin/sh", "-c", SCRIPT) == EXPECTED_OUTPUT


def test_kill9_then_restart_on_the_real_fuse_mounter(fuse_stack: tuple[Stack, str]) -> None:
    stack, ref = fuse_stack
    fuse_dir = stack.daemon.root / "soci" / "fuse"
    assert system.is_mountpoint(fuse_dir) and len(_remote_mounts(stack)) == 3
    assert stack.daemon.stop(signal.SIGKILL) is not None  # a crash: the FUSE mount and its binds are dead
    with pytest.raises(OSError):
        os.listdir(fuse_dir)
    stack.restart_daemon()  # same flags, no manual step
    assert any("dead FUSE mount" in str(e.get("msg")) for e in stack.daemon.log_entries(since_start=True))
    remaining = _remote_mounts(stack)
    assert len(remaining) == 3 and _all_readable(remaining)
    assert system.mountpoints().count(fuse_dir) == 1
    assert stack.run(ref, "/bin/sh", "-c", SCRIPT) == EXPECTED_OUTPUT

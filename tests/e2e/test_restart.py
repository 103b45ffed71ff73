"""Daemon restarts on the real FUSE mounter: SIGTERM keeps mounts, SIGINT removes them, a crash's dead mounts are
repaired. Every test runs ``soci.daemon.mounters:fuse`` (the tmpfs test mounter could not fail for the real path)."""

from __future__ import annotations

import hashlib
import io
import os
import secrets
import signal
import subprocess
import sys
import tarfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import pytest
from e2e_images import EXPECTED_OUTPUT, SCRIPT, BuiltImage, convert, push_image
from e2e_stack import FUSE_MOUNTER, HERE, Stack, needs_stack, stack_running, wait_until

from soci import system
from soci.fs.session import HolderStore, default_keeper
from soci.testing.registry_server import RegistryServer

pytestmark = [*needs_stack, pytest.mark.slow]


@pytest.fixture(scope="module")
def registry() -> Iterator[RegistryServer]:
    with RegistryServer() as server:
        yield server


@pytest.fixture
def fuse_stack(registry: RegistryServer, tmp_path: Path) -> Iterator[tuple[Stack, BuiltImage]]:
    """The stack with the real lazy filesystem (one FUSE mount, a bind of it per remote snapshot)."""
    with stack_running(tmp_path / "stack", registry, mounter=FUSE_MOUNTER) as stack:
        src = push_image(registry, tmp_path, "restart/fuse", f"f{secrets.token_hex(4)}", seed=202)
        image = convert(tmp_path / "soci", src, f"{src.ref.rsplit(':', 1)[1]}-soci")
        stack.rpull(image.ref)
        yield stack, image


def _remote_mounts(stack: Stack) -> list[Path]:
    return system.mountpoints_under(stack.daemon.root / "snapshotter" / "snapshots")


def _all_readable(paths: list[Path]) -> bool:
    for path in paths:
        try:
            os.listdir(path)
        except OSError:
            return False
    return True


def test_sigterm_keeps_mounts_and_restart_reuses_them(fuse_stack: tuple[Stack, BuiltImage]) -> None:
    stack, ref = fuse_stack[0], fuse_stack[1].ref
    before = sorted(_remote_mounts(stack))
    assert len(before) == 3
    assert stack.daemon.stop(signal.SIGTERM) == 0
    assert sorted(_remote_mounts(stack)) == before  # left for the next start
    stack.restart_daemon()
    # the new process serves every snapshot again at the same path (the kept mount it does not know is
    # replaced, never stacked); running containers keep reading through the adopted session meanwhile
    assert sorted(_remote_mounts(stack)) == before
    assert stack.run(ref, "/bin/sh", "-c", SCRIPT) == EXPECTED_OUTPUT


def test_sigint_unmounts_and_restart_mounts_again(fuse_stack: tuple[Stack, BuiltImage]) -> None:
    stack, ref = fuse_stack[0], fuse_stack[1].ref
    assert stack.daemon.stop(signal.SIGINT) == 0
    assert _remote_mounts(stack) == []
    stack.restart_daemon()
    assert len(_remote_mounts(stack)) == 3
    assert any("mounted again" in str(e.get("msg")) for e in stack.daemon.log_entries(since_start=True))
    assert stack.run(ref, "/bin/sh", "-c", SCRIPT) == EXPECTED_OUTPUT


def test_dead_mounts_and_leftovers_from_a_crash_are_repaired(fuse_stack: tuple[Stack, BuiltImage]) -> None:
    stack, ref = fuse_stack[0], fuse_stack[1].ref
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


def test_kill9_then_restart_on_the_real_fuse_mounter(fuse_stack: tuple[Stack, BuiltImage]) -> None:
    stack, image = fuse_stack
    ref = image.ref
    fuse_dir = stack.daemon.root / "soci" / "fuse"
    assert system.is_mountpoint(fuse_dir) and len(_remote_mounts(stack)) == 3
    holder = default_keeper(fuse_dir)
    assert isinstance(holder, HolderStore)
    holder_pid = holder.pid()
    assert holder_pid is not None
    assert stack.daemon.stop(signal.SIGKILL) is not None
    os.kill(holder_pid, signal.SIGKILL)  # no one keeps the session: the FUSE mount and its binds are dead
    assert wait_until(lambda: holder.pid() is None, 30)
    with pytest.raises(OSError):
        os.listdir(fuse_dir)
    stack.restart_daemon()  # same flags, no manual step
    messages = [str(e.get("msg")) for e in stack.daemon.log_entries(since_start=True)]
    assert any("dead FUSE mount" in m or "stale fuse mount" in m for m in messages)
    remaining = _remote_mounts(stack)
    assert len(remaining) == 3 and _all_readable(remaining)
    assert system.mountpoints().count(fuse_dir) == 1
    assert stack.run(ref, "/bin/sh", "-c", SCRIPT) == EXPECTED_OUTPUT


BUSYBOX = Path("/usr/bin/busybox")


def _layer_files(tar: bytes, prefix: str) -> dict[str, bytes]:
    with tarfile.open(fileobj=io.BytesIO(tar)) as archive:
        return {
            "/" + m.name: archive.extractfile(m).read()  # type: ignore[union-attr]
            for m in archive.getmembers()
            if m.isfile() and m.name.startswith(prefix)
        }


@contextmanager
def _running_container(stack: Stack, ref: str) -> Iterator[str]:
    """A container that only sleeps; its files are read with ``ctr task exec`` (the host's static busybox)."""
    name = "r-" + secrets.token_hex(4)
    mount = f"type=bind,src={BUSYBOX},dst=/busybox,options=rbind:ro"
    stack.containerd.ctr("run", "-d", "--snapshotter", "soci", "--mount", mount, ref, name, "/busybox", "sleep", "3600")
    try:
        yield name
    finally:
        stack.containerd.ctr("task", "kill", "-s", "SIGKILL", name, check=False)
        wait_until(lambda: stack.containerd.ctr("task", "delete", name, check=False).returncode == 0, 30)
        stack.containerd.ctr("container", "delete", name, check=False)


def _sha256_in(stack: Stack, container: str, path: str) -> str:
    result = stack.containerd.ctr(
        "task", "exec", "--exec-id", "x" + secrets.token_hex(4), container, "/busybox", "sha256sum", path, timeout=120
    )
    return result.stdout.split()[0]


def _drop_page_cache() -> None:
    os.sync()
    Path("/proc/sys/vm/drop_caches").write_text("3\n")


@pytest.mark.parametrize("signum", [signal.SIGKILL, signal.SIGTERM], ids=["kill9", "sigterm"])
@pytest.mark.skipif(not BUSYBOX.exists(), reason="needs a static /usr/bin/busybox")
def test_running_container_reads_new_files_across_a_restart(
    fuse_stack: tuple[Stack, BuiltImage], signum: signal.Signals
) -> None:
    stack, image = fuse_stack
    ref = image.ref
    files = _layer_files(image.layers[1].tar, "opt/app/")
    paths = sorted(files)
    with _running_container(stack, ref) as container:
        first = paths[0]
        assert _sha256_in(stack, container, first) == hashlib.sha256(files[first]).hexdigest()
        assert stack.daemon.stop(signum) is not None
        started = time.monotonic()
        # a read that starts while no daemon runs: it waits in the kernel's queue
        with ThreadPoolExecutor(1) as pool:
            blocked = pool.submit(_sha256_in, stack, container, paths[1])
            stack.restart_daemon()
            assert blocked.result(timeout=120) == hashlib.sha256(files[paths[1]]).hexdigest()
            gap_ms = (time.monotonic() - started) * 1000
        _drop_page_cache()
        wrong = [p for p in paths[2:12] if _sha256_in(stack, container, p) != hashlib.sha256(files[p]).hexdigest()]
        assert wrong == []
        print(f"\n{signal.Signals(signum).name}: reads blocked for {gap_ms:.0f} ms across the restart, 0 failed")
    assert any("session adopted" in str(e.get("msg")) for e in stack.daemon.log_entries(since_start=True))
    assert stack.run(ref, "/bin/sh", "-c", SCRIPT) == EXPECTED_OUTPUT

"""``ctr snapshots --snapshotter soci`` against the daemon through a real containerd."""

from __future__ import annotations

import json
import stat
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from snapshotter_stack import needs_containerd

from soci.containerd.testing import ContainerdServer
from soci.daemon.testing import SnapshotterProcess

pytestmark = needs_containerd

SN = ("snapshots", "--snapshotter", "soci")


def _ctr(containerd: ContainerdServer, *args: str) -> str:
    return containerd.ctr(*SN, *args).stdout


def test_socket_is_not_world_accessible(stack: tuple[SnapshotterProcess, ContainerdServer]) -> None:
    daemon, _ = stack
    mode = stat.S_IMODE(daemon.socket.stat().st_mode)
    assert mode == 0o660


def test_prepare_commit_view_label_usage_tree_remove(
    stack: tuple[SnapshotterProcess, ContainerdServer], tmp_path: Path
) -> None:
    _, containerd = stack
    _ctr(containerd, "prepare", "t1-base")
    mounts = _ctr(containerd, "mounts", str(tmp_path / "m"), "t1-base")
    assert mounts.startswith("mount -t bind ") and "-o rw,rbind" in mounts
    upper = Path(mounts.split()[3])
    (upper / "hello.txt").write_text("from the base layer\n")
    (upper / "gone.txt").write_text("removed in the child\n")

    _ctr(containerd, "commit", "t1-c1", "t1-base")
    _ctr(containerd, "prepare", "t1-child", "t1-c1")
    child_mounts = _ctr(containerd, "mounts", str(tmp_path / "m"), "t1-child")
    assert child_mounts.startswith("mount -t overlay overlay ")
    assert f"lowerdir={upper}" in child_mounts

    # the overlay containerd would mount works: reads the parent, writes to the upper dir
    target = tmp_path / "merged"
    target.mkdir()
    subprocess.run(child_mounts.replace(str(tmp_path / "m"), str(target)), shell=True, check=True)
    try:
        assert (target / "hello.txt").read_text() == "from the base layer\n"
        (target / "gone.txt").unlink()
        (target / "new.txt").write_text("child\n")
    finally:
        subprocess.run(["umount", str(target)], check=True)
    _ctr(containerd, "commit", "t1-c2", "t1-child")
    _ctr(containerd, "view", "t1-view", "t1-c2")
    view_mounts = _ctr(containerd, "mounts", str(tmp_path / "m"), "t1-view")
    assert "lowerdir=" in view_mounts and "upperdir" not in view_mounts

    info = json.loads(_ctr(containerd, "info", "t1-c2"))
    assert info["Kind"] == "Committed" and info["Parent"] == "t1-c1"
    _ctr(containerd, "label", "t1-c2", "team=storage")
    assert json.loads(_ctr(containerd, "info", "t1-c2"))["Labels"]["team"] == "storage"

    usage = {line.split()[0]: line.split()[1:] for line in _ctr(containerd, "usage").splitlines()[1:]}
    assert usage["t1-c1"][0] != "0.0"  # holds the two files
    tree = _ctr(containerd, "tree")
    assert "t1-c1" in tree and "\\_ t1-c2" in tree

    listed = _ctr(containerd, "ls")
    assert "t1-view" in listed and "t1-c2" in listed
    for key in ("t1-view", "t1-c2", "t1-c1"):
        _ctr(containerd, "rm", key)
    assert "t1-" not in _ctr(containerd, "ls")


def test_bad_requests_are_clear_errors(stack: tuple[SnapshotterProcess, ContainerdServer]) -> None:
    _, containerd = stack
    missing = containerd.ctr(*SN, "info", "t2-missing", check=False)
    assert missing.returncode != 0 and "not found" in missing.stderr
    orphan = containerd.ctr(*SN, "prepare", "t2-k", "t2-no-such-parent", check=False)
    assert orphan.returncode != 0 and "not found" in orphan.stderr
    _ctr(containerd, "prepare", "t2-dup")
    duplicate = containerd.ctr(*SN, "prepare", "t2-dup", check=False)
    assert duplicate.returncode != 0 and "already exists" in duplicate.stderr
    _ctr(containerd, "commit", "t2-c", "t2-dup")
    _ctr(containerd, "prepare", "t2-child", "t2-c")
    busy = containerd.ctr(*SN, "rm", "t2-c", check=False)
    assert busy.returncode != 0
    _ctr(containerd, "rm", "t2-child")
    _ctr(containerd, "rm", "t2-c")


def test_removed_snapshots_leave_no_directories(stack: tuple[SnapshotterProcess, ContainerdServer]) -> None:
    daemon, containerd = stack
    snapshots_dir = daemon.root / "snapshotter" / "snapshots"
    # other tests share this daemon, and their snapshots go in containerd's GC at their own pace: watch only
    # the directory this test's snapshot creates
    before = set(snapshots_dir.iterdir()) if snapshots_dir.exists() else set()
    _ctr(containerd, "prepare", "t3-k")
    info = json.loads(_ctr(containerd, "info", "t3-k"))
    assert info["Kind"] == "Active"
    assert wait_until(lambda: len(set(snapshots_dir.iterdir()) - before) == 1)
    created = set(snapshots_dir.iterdir()) - before
    _ctr(containerd, "rm", "t3-k")
    # containerd removes the backend snapshot in its garbage collection, normally within a second of `rm`; but its
    # scheduler spaces collections by their average duration, which a loaded machine can stretch past a minute
    # (seen once in CI). Then a synchronous lease removal makes it collect now.
    gone = lambda: not any(p.exists() for p in created)  # noqa: E731
    if not wait_until(gone, timeout_sec=10):
        containerd.ctr("leases", "create", "--id", "t3-gc")
        containerd.ctr("leases", "rm", "--sync", "t3-gc")
    assert wait_until(gone, timeout_sec=30), sorted(created)


def wait_until(condition: Callable[[], bool], timeout_sec: float = 90.0) -> bool:
    deadline = time.monotonic() + timeout_sec
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.1)
    return condition()

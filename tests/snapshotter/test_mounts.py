"""Mount lists as upstream's overlay-derived snapshotter builds them."""

from __future__ import annotations

from pathlib import Path

from soci.snapshotter.metastore import Kind
from soci.snapshotter.mounts import Mount, snapshot_mounts

UP, WORK = Path("/s/3/fs"), Path("/s/3/work")
P1, P2 = Path("/s/2/fs"), Path("/s/1/fs")


def test_no_parent_is_a_bind_mount() -> None:
    assert snapshot_mounts(Kind.ACTIVE, UP, WORK, []) == [Mount("bind", "/s/3/fs", ("rw", "rbind"))]
    assert snapshot_mounts(Kind.VIEW, UP, WORK, []) == [Mount("bind", "/s/3/fs", ("ro", "rbind"))]


def test_view_of_one_parent_binds_the_parent_read_only() -> None:
    assert snapshot_mounts(Kind.VIEW, UP, WORK, [P1]) == [Mount("bind", "/s/2/fs", ("ro", "rbind"))]


def test_active_with_parents_is_overlay_nearest_parent_first() -> None:
    (mount,) = snapshot_mounts(Kind.ACTIVE, UP, WORK, [P1, P2])
    assert mount.type == "overlay" and mount.source == "overlay"
    assert mount.options == ("workdir=/s/3/work", "upperdir=/s/3/fs", "lowerdir=/s/2/fs:/s/1/fs")


def test_view_of_many_parents_is_a_lower_only_overlay_and_userxattr_comes_last() -> None:
    (mount,) = snapshot_mounts(Kind.VIEW, UP, WORK, [P1, P2], userxattr=True)
    assert mount.options == ("lowerdir=/s/2/fs:/s/1/fs", "userxattr")

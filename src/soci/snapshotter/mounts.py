"""Mount lists for snapshots, built the way upstream's (overlayfs-derived) snapshotter builds them.

* no parents: a bind mount of the snapshot's own ``fs`` dir (``rw`` when active, ``ro`` for a view);
* a view (or committed snapshot) with one parent: a read-only bind mount of the parent's ``fs``;
* otherwise overlay: ``workdir``/``upperdir`` when active, ``lowerdir`` = parents nearest first,
  then ``userxattr`` when the kernel needs it (rootless overlay).
Pure: paths in, mounts out.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from soci.snapshotter.metastore import Kind


@dataclass(frozen=True, slots=True)
class Mount:
    type: str
    source: str
    options: tuple[str, ...] = ()
    target: str = ""


def snapshot_mounts(
    kind: Kind,
    upper: Path,
    work: Path,
    parent_uppers: Sequence[Path],
    *,
    userxattr: bool = False,
) -> list[Mount]:
    """Mounts for a snapshot whose own dirs are ``upper``/``work`` and whose parents' ``fs`` dirs
    are ``parent_uppers`` (nearest parent first)."""
    if not parent_uppers:
        return [Mount("bind", str(upper), ("ro" if kind is Kind.VIEW else "rw", "rbind"))]
    options: list[str] = []
    if kind is Kind.ACTIVE:
        options += [f"workdir={work}", f"upperdir={upper}"]
    elif len(parent_uppers) == 1:
        return [Mount("bind", str(parent_uppers[0]), ("ro", "rbind"))]
    options.append("lowerdir=" + ":".join(str(p) for p in parent_uppers))
    if userxattr:
        options.append("userxattr")
    return [Mount("overlay", "overlay", tuple(options))]

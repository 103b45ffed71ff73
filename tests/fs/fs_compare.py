"""Reference trees (``tar -x`` as root, whiteouts in overlayfs form) and full tree snapshots to compare."""

from __future__ import annotations

import hashlib
import os
import stat
import subprocess
import tarfile
from dataclasses import dataclass
from pathlib import Path

OPAQUE_XATTR = "trusted.overlay.opaque"
_WHITEOUT = ".wh."
_OPAQUE = ".wh..wh..opq"


@dataclass(frozen=True)
class Node:
    kind: str
    mode: int
    uid: int
    gid: int
    mtime_ns: int | None  # None: not compared (directories no tar entry describes)
    size: int | None
    link: str | None
    rdev: tuple[int, int] | None
    nlink: int | None
    xattrs: tuple[tuple[str, bytes], ...]
    sha256: str | None


def extract(tar_path: Path, dest: Path) -> None:
    """``tar -x`` as root, keeping owners, modes, xattrs; then whiteouts as containerd's overlay applier does."""
    dest.mkdir(parents=True, exist_ok=True)
    # directory times last: GNU tar otherwise creates symlinks (via placeholders) after setting them
    command = ["tar", "-x", "--delay-directory-restore", "--xattrs", "--xattrs-include=*", "--numeric-owner", "-p"]
    subprocess.run([*command, "-f", str(tar_path), "-C", str(dest)], check=True)
    convert_whiteouts(dest)


def convert_whiteouts(root: Path) -> None:
    """``.wh.x`` -> char device 0/0 ``x`` (owner and mtime kept); ``.wh..wh..opq`` -> opaque xattr on the dir."""
    for dirpath, dirnames, filenames in os.walk(root):
        names = [n for n in filenames + dirnames if n.startswith(_WHITEOUT)]
        if not names:
            continue
        before = os.lstat(dirpath)
        for name in names:
            path = os.path.join(dirpath, name)
            st = os.lstat(path)
            os.unlink(path)
            if name == _OPAQUE:
                os.setxattr(dirpath, OPAQUE_XATTR, b"y")
                continue
            target = os.path.join(dirpath, name[len(_WHITEOUT) :])
            if os.path.lexists(target):
                continue
            os.mknod(target, stat.S_IFCHR | 0, os.makedev(0, 0))
            os.chown(target, st.st_uid, st.st_gid, follow_symlinks=False)
            os.utime(target, ns=(st.st_mtime_ns, st.st_mtime_ns), follow_symlinks=False)
        os.utime(dirpath, ns=(before.st_atime_ns, before.st_mtime_ns))
        dirnames[:] = [d for d in dirnames if not d.startswith(_WHITEOUT)]


def described_paths(tar_path: Path) -> set[str]:
    """Cleaned names of the tar's entries (others are parents ``tar -x`` made up)."""
    out = set()
    with tarfile.open(tar_path) as tar:
        for member in tar:
            name = os.path.normpath("/" + member.name).lstrip("/")
            out.add(name or ".")
    return out


def snapshot(root: Path, *, described: set[str] | None = None, contents: bool = True) -> dict[str, Node]:
    """Every path under ``root`` (``"."`` is the root) with everything compared; hard links grouped apart."""
    nodes = {".": _node(root, ".", described, contents)}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in sorted(dirnames + filenames):
            path = Path(dirpath) / name
            rel = os.path.relpath(path, root)
            nodes[rel] = _node(path, rel, described, contents)
    return nodes


def overlay_described(tars_bottom_up: list[Path]) -> set[str]:
    """Paths whose merged attributes come from a tar entry: the topmost layer holding the path describes it."""
    seen: set[str] = set()
    described: set[str] = set()
    for tar_path in reversed(tars_bottom_up):
        names = described_paths(tar_path)
        present = set(names)
        for name in names:
            parent = os.path.dirname(name)
            while parent:
                present.add(parent)
                parent = os.path.dirname(parent)
        present.add(".")
        for path in present - seen:
            if path in names:
                described.add(path)
        seen |= present
    return described


def hard_link_groups(root: Path) -> set[frozenset[str]]:
    groups: dict[tuple[int, int], set[str]] = {}
    for dirpath, _, filenames in os.walk(root):
        for name in filenames:
            path = os.path.join(dirpath, name)
            try:
                st = os.lstat(path)
            except FileNotFoundError:
                continue  # see _LISTED_ONLY
            if st.st_nlink > 1 and not stat.S_ISDIR(st.st_mode):
                groups.setdefault((st.st_dev, st.st_ino), set()).add(os.path.relpath(path, root))
    return {frozenset(g) for g in groups.values() if len(g) > 1}


_LISTED_ONLY = Node("listed-only", 0, 0, 0, None, None, None, None, None, (), None)


def _node(path: Path, rel: str, described: set[str] | None, contents: bool) -> Node:
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        # overlayfs lists a lower layer's whiteout in a directory no other layer has, yet finds no such name
        return _LISTED_ONLY
    mode = st.st_mode
    kind = _kind(mode)
    known = described is None or rel in described
    digest = None
    if contents and stat.S_ISREG(mode):
        h = hashlib.sha256()
        with open(path, "rb") as f:
            while chunk := f.read(1 << 20):
                h.update(chunk)
        digest = h.hexdigest()
    xattrs = tuple(sorted((n, os.getxattr(path, n, follow_symlinks=False))
                          for n in os.listxattr(path, follow_symlinks=False)))  # fmt: skip
    return Node(
        kind=kind,
        mode=stat.S_IMODE(mode),
        uid=st.st_uid if known else 0,
        gid=st.st_gid if known else 0,
        mtime_ns=st.st_mtime_ns if known else None,
        size=st.st_size if kind in ("reg", "symlink") else None,
        link=os.readlink(path) if kind == "symlink" else None,
        rdev=(os.major(st.st_rdev), os.minor(st.st_rdev)) if kind in ("char", "block") else None,
        nlink=None if kind == "dir" else st.st_nlink,
        xattrs=xattrs,
        sha256=digest,
    )


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISDIR, "dir"), (stat.S_ISREG, "reg"), (stat.S_ISLNK, "symlink"),
                       (stat.S_ISCHR, "char"), (stat.S_ISBLK, "block"), (stat.S_ISFIFO, "fifo")):  # fmt: skip
        if test(mode):
            return name
    return "other"


def differences(expected: dict[str, Node], actual: dict[str, Node], limit: int = 20) -> list[str]:
    """Readable differences, at most ``limit``."""
    out = []
    for path in sorted(expected.keys() | actual.keys()):
        e, a = expected.get(path), actual.get(path)
        if e is None:
            out.append(f"only in mount: {path}")
        elif a is None:
            out.append(f"missing from mount: {path}")
        elif e != a:
            fields = [f"{k}: {getattr(e, k)!r} != {getattr(a, k)!r}"
                      for k in Node.__dataclass_fields__ if getattr(e, k) != getattr(a, k)]  # fmt: skip
            out.append(f"{path}: " + "; ".join(fields))
        if len(out) >= limit:
            break
    return out

"""Kernel-facing helpers: mount(2) and the mount table, unmounting, disk usage, overlay feature checks.

Below every package that mounts (``soci.fs`` for FUSE and EROFS, ``soci.snapshotter`` for overlay and binds).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import shutil
import stat
from pathlib import Path

from soci.errors import FailedPrecondition

MNT_DETACH = 2
MS_RDONLY = 1
MS_REMOUNT = 32
MS_BIND = 4096

PROT_READ = 1
MAP_SHARED = 1
_MAP_FAILED = ctypes.c_void_p(-1).value

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
_libc.mmap.restype = ctypes.c_void_p
_libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
_libc.mlock.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
_libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]


def _unescape(field: str) -> str:
    # /proc/self/mountinfo escapes space, tab, newline and backslash as \ooo
    out, i = [], 0
    while i < len(field):
        if field[i] == "\\" and field[i + 1 : i + 4].isdigit() and len(field[i + 1 : i + 4]) == 3:
            out.append(chr(int(field[i + 1 : i + 4], 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def mountpoints() -> list[Path]:
    """Every mount point of this mount namespace, in mount order."""
    points = []
    with open("/proc/self/mountinfo", encoding="utf-8", errors="surrogateescape") as table:
        for line in table:
            fields = line.split(" ")
            if len(fields) > 4:
                points.append(Path(_unescape(fields[4])))
    return points


def is_mountpoint(path: Path) -> bool:
    """True even for a dead FUSE mount, which ``os.path.ismount`` cannot stat."""
    return path in mountpoints()


def mountpoints_under(root: Path) -> list[Path]:
    """Mount points at or below ``root``, deepest first (the order they must be unmounted in)."""
    found = [p for p in mountpoints() if p == root or root in p.parents]
    return sorted(set(found), key=lambda p: len(p.parts), reverse=True)


def unmount(path: Path, flags: int = 0) -> None:
    """umount2(2); a path that is not mounted is not an error."""
    if _libc.umount2(os.fsencode(path), flags) != 0:
        err = ctypes.get_errno()
        if err in (errno.EINVAL, errno.ENOENT) and not is_mountpoint(path):
            return
        raise OSError(err, f"unmount {path}: {os.strerror(err)}")


def unmount_all(path: Path) -> None:
    """Detach every mount at or below ``path`` (stacked mounts included), dead ones too."""
    for point in mountpoints_under(path):
        while is_mountpoint(point):
            unmount(point, MNT_DETACH)


def mount(source: str | Path, target: Path, fstype: str, options: str | bytes = "", flags: int = 0) -> None:
    """mount(2) itself: util-linux's mount(8) would set up a loop device for a file source."""
    data = os.fsencode(options) or None
    if _libc.mount(os.fsencode(source), os.fsencode(target), fstype.encode() or None, flags, data) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"mount {fstype or 'bind'} on {target}: {os.strerror(err)}")


class LockedPages:
    """The pages of a file, mapped and locked in memory (mlock(2)) until ``close``: whoever reads the file
    through the page cache (a file-backed mount, say) never waits for the disk, even after the file is unlinked.
    OSError if the file cannot be mapped or locked (RLIMIT_MEMLOCK without CAP_IPC_LOCK, or no memory)."""

    def __init__(self, path: Path) -> None:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            self.size = os.fstat(fd).st_size
            address = _libc.mmap(None, self.size, PROT_READ, MAP_SHARED, fd, 0) if self.size else None
        finally:
            os.close(fd)
        if address == _MAP_FAILED:
            err = ctypes.get_errno()
            raise OSError(err, f"mmap {path}: {os.strerror(err)}")
        if address is not None and _libc.mlock(address, self.size) != 0:
            err = ctypes.get_errno()
            _libc.munmap(address, self.size)
            raise OSError(err, f"mlock {path}: {os.strerror(err)}")
        self._address: int | None = address

    def close(self) -> None:
        if self._address is not None:
            _libc.munmap(self._address, self.size)
            self._address = None


def bind_mount(source: Path, target: Path, *, read_only: bool = True) -> None:
    """Bind ``source`` onto ``target`` (read-only needs a second, remounting call)."""
    mount(str(source), target, "", flags=MS_BIND)
    if read_only:
        try:
            mount("", target, "", flags=MS_BIND | MS_REMOUNT | MS_RDONLY)
        except OSError:
            unmount(target, MNT_DETACH)
            raise


def remove_tree(path: Path) -> None:
    """Remove ``path`` after detaching any mount inside it, so a live filesystem is never emptied."""
    unmount_all(path)
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif os.path.lexists(path):
        path.unlink()


def empty_dir(path: Path) -> None:
    """Delete the contents of ``path`` (mounts inside it detached first), keeping the directory."""
    unmount_all(path)
    for child in path.iterdir():
        remove_tree(child)


def disk_usage(root: Path) -> tuple[int, int]:
    """``(bytes, inodes)`` as containerd counts them: 512-byte blocks allocated, hard links once.

    Stays on the filesystem of ``root`` (never descends into mounts below it)."""
    root_dev = os.lstat(root).st_dev
    seen: set[tuple[int, int]] = set()
    size = 0
    stack = [root]
    while stack:
        path = stack.pop()
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            continue
        key = (st.st_dev, st.st_ino)
        if key not in seen:
            seen.add(key)
            size += st.st_blocks * 512
        if stat.S_ISDIR(st.st_mode) and st.st_dev == root_dev:
            try:
                stack.extend(Path(entry.path) for entry in os.scandir(path))
            except (FileNotFoundError, NotADirectoryError):
                continue
    return size, len(seen)


def in_user_namespace() -> bool:
    try:
        with open("/proc/self/uid_map", encoding="ascii") as uid_map:
            fields = uid_map.read().split()
    except OSError:
        return False
    return fields[:3] != ["0", "0", "4294967295"]


def needs_userxattr() -> bool:
    """overlayfs needs ``userxattr`` when mounted from a user namespace (rootless); root in the initial
    namespace uses trusted.* xattrs."""
    return in_user_namespace()


def check_overlay_supported(directory: Path) -> None:
    """Mount a throwaway overlay under ``directory`` and unmount it.

    Raises:
        FailedPrecondition: the kernel or the filesystem of ``directory`` cannot host overlay layers.
    """
    directory.mkdir(parents=True, exist_ok=True)
    probe = directory / f".overlay-check-{os.getpid()}"
    try:
        for name in ("lower", "upper", "work", "merged"):
            (probe / name).mkdir(parents=True, exist_ok=True)
        options = f"lowerdir={probe / 'lower'},upperdir={probe / 'upper'},workdir={probe / 'work'}"
        if needs_userxattr():
            options += ",userxattr"
        try:
            mount("overlay", probe / "merged", "overlay", options)
        except OSError as exc:
            raise FailedPrecondition(f"overlayfs is not usable on {directory}: {exc.strerror}") from exc
        unmount(probe / "merged")
    finally:
        shutil.rmtree(probe, ignore_errors=True)

"""Layer metadata served by the kernel: an EROFS image of a layer's tree over its uncompressed tar.

``image_for_tree`` turns a ``LayerTree`` into an EROFS image (``soci.formats.erofs``) whose regular files point
into device 1, the layer's uncompressed tar; ``mount_image`` mounts it file-backed with that tar as the extra
device (``device=``), so lookups, attributes, xattrs and directory listings never reach this process, and file
reads go to the tar file, which the lazy filesystem serves from verified spans.
"""

from __future__ import annotations

import os
import stat
import tempfile
from collections.abc import Iterable
from pathlib import Path

from soci import system
from soci.errors import FormatError, Unavailable
from soci.formats import erofs
from soci.fs.tree import ROOT_INODE, LayerTree, build_tree
from soci.store.content import atomic_write


class _TreeSource:
    root = ROOT_INODE

    def __init__(self, tree: LayerTree, opaque_xattr: bytes, xattrs: bool) -> None:
        self._tree = tree
        self._opaque_xattr = opaque_xattr
        self._xattrs = xattrs

    def entry(self, ino: int) -> erofs.Entry:
        tree = self._tree
        a = tree.attributes(ino)
        kind = stat.S_IFMT(a.mode)
        xattrs = [(k, v) for k, v in tree.xattrs(ino) if k != self._opaque_xattr] if self._xattrs else []
        if tree.is_opaque(ino):
            xattrs.append((self._opaque_xattr, b"y"))
        offset, _ = tree.data_range(ino)
        return erofs.Entry(
            a.mode,
            nlink=a.nlink,
            uid=a.uid,
            gid=a.gid,
            size=a.size if kind == stat.S_IFREG else 0,
            mtime_ns=a.mtime_ns,
            rdev=(a.rdev_major, a.rdev_minor),
            data_offset=offset if kind == stat.S_IFREG else 0,
            target=tree.link_target(ino) if kind == stat.S_IFLNK else b"",
            xattrs=xattrs,
        )

    def children(self, ino: int) -> Iterable[tuple[bytes, int]]:
        return [(name, child) for _, name, child in self._tree.children(ino)]


def image_for_tree(
    tree: LayerTree, tar_size: int, *, opaque_xattr: bytes = b"trusted.overlay.opaque", xattrs: bool = True
) -> bytes:
    """The EROFS image of ``tree`` with file data in the ``tar_size``-byte uncompressed tar (``xattrs``: keep
    the entries' extended attributes; opaque directories are marked either way, as the FUSE tree does)."""
    return erofs.build_image(_TreeSource(tree, opaque_xattr, xattrs), tar_size)


def write_image(path: Path, image: bytes) -> None:
    """Write ``image`` to ``path`` atomically (a half-written image must never be mounted)."""
    atomic_write(path, image, 0o600)


def mount_image(image: Path, device: Path, target: Path) -> None:
    """Mount ``image`` read-only at ``target``, file-backed, with ``device`` as its data device.

    util-linux's ``mount -t erofs FILE`` sets up a loop device (and fails on a FUSE-backed file); the direct
    mount(2) with a regular file as source is the kernel's file-backed mode (CONFIG_EROFS_FS_BACKED_BY_FILE).
    """
    if b"," in os.fsencode(device):
        raise FormatError(f"EROFS data device path {device} contains a comma (mount options are comma separated)")
    try:
        system.mount(image, target, "erofs", b"device=" + os.fsencode(device), system.MS_RDONLY)
    except OSError as exc:
        raise Unavailable(f"mount erofs {image} at {target}: {os.strerror(exc.errno or 0)}") from None


def kernel_supports_file_backed() -> bool:
    """Whether this kernel mounts an EROFS image file with a data device file (checked with a tiny image)."""
    with tempfile.TemporaryDirectory(prefix="soci-erofs-probe-") as work:
        root = Path(work)
        data = root / "data"
        data.write_bytes(b"\0" * erofs.BLOCK_SIZE)
        image = root / "image"
        write_image(image, image_for_tree(build_tree([]), erofs.BLOCK_SIZE))
        target = root / "mnt"
        target.mkdir()
        try:
            mount_image(image, data, target)
        except Unavailable:
            return False
        system.unmount(target, system.MNT_DETACH)
        return True

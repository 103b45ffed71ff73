"""Inode table of one layer, built from its zTOC entries and packed into flat arrays.

The tree is what the layer looks like to overlayfs (soci-format.md §3.5):

* names are cleaned as ``clean("/" + name)`` without the leading slash, so ``..`` can never climb out of
  the layer root, and missing parent directories are synthesised (0755, owner 0, mtime 0);
* a repeated directory entry overwrites the existing directory's attributes; any other repeated name
  replaces the earlier entry, as ``tar -x`` does;
* hard links add a name for an existing inode (its link count grows); the target must come earlier;
* ``.wh.<x>`` is presented as a character device 0/0 named ``<x>`` (an overlayfs whiteout) unless a real
  ``<x>`` exists in the same directory; ``.wh..wh..opq`` marks its directory opaque; no ``.wh.`` name is
  ever listed or found;
* the mode is the tar mode's permission, setuid, setgid and sticky bits plus the type from the entry.

Memory: no Python object per entry. Every attribute lives in an ``array.array`` indexed by a local inode
number (1 is the layer root), names in one ``bytes`` blob, and each directory's children are a sorted
slice of the child arrays, searched by bisection.
"""

from __future__ import annotations

import stat
from array import array
from collections.abc import Iterable, Iterator
from typing import NamedTuple

from soci.errors import FormatError
from soci.formats.gotime import parse_go_time
from soci.formats.ztoc import (
    TAR_BLOCK_SIZE,
    TYPE_BLOCK,
    TYPE_CHAR,
    TYPE_DIR,
    TYPE_FIFO,
    TYPE_HARDLINK,
    TYPE_REG,
    TYPE_SYMLINK,
    FileMetadata,
)

ROOT_INODE = 1
WHITEOUT_PREFIX = b".wh."
OPAQUE_WHITEOUT = b".wh..wh..opq"
BLOCK_SIZE = 4096
DIRECTORY_SIZE = 4096
PERMISSION_BITS = 0o7777  # rwx for all three, plus setuid, setgid, sticky
SYNTHETIC_DIR_MODE = stat.S_IFDIR | 0o755

FLAG_OPAQUE = 1
FLAG_WHITEOUT = 2
FLAG_SYNTHETIC = 4  # a parent directory no entry described

_TYPE_BITS = {
    TYPE_REG: stat.S_IFREG,
    TYPE_DIR: stat.S_IFDIR,
    TYPE_SYMLINK: stat.S_IFLNK,
    TYPE_CHAR: stat.S_IFCHR,
    TYPE_BLOCK: stat.S_IFBLK,
    TYPE_FIFO: stat.S_IFIFO,
}
_U32 = 0xFFFF_FFFF


class Attributes(NamedTuple):
    """What ``stat`` reports for one inode (without the inode number)."""

    mode: int
    nlink: int
    uid: int
    gid: int
    rdev_major: int
    rdev_minor: int
    size: int
    blocks: int  # 512-byte units
    mtime_ns: int


class TreeStatistics(NamedTuple):
    inodes: int
    dirents: int
    memory_bytes: int


def clean_name(name: bytes) -> bytes:
    """Go's ``path.Clean("/" + name)`` without the leading slash: ``./a//b/../c/`` -> ``a/c``, ``..`` -> ``""``."""
    if name.startswith(b"./"):
        name = name[2:]
    if name.endswith(b"/"):
        name = name[:-1]
    if not (name.startswith((b".", b"/")) or name.endswith(b"/") or b"//" in name or b"/." in name):
        return name  # already clean: the common case
    parts: list[bytes] = []
    for part in name.split(b"/"):
        if part == b"..":
            if parts:
                parts.pop()
        elif part and part != b".":
            parts.append(part)
    return b"/".join(parts)


class LayerTree:
    """Read-only inode table; build with ``build_tree``. Local inode numbers run from 1 to ``inode_count``."""

    __slots__ = (
        "_child_count",
        "_child_ino",
        "_child_name_len",
        "_child_name_off",
        "_child_start",
        "_dev",
        "_extra",
        "_extra_off",
        "_flags",
        "_gid",
        "_hdr_off",
        "_link_len",
        "_mode",
        "_mtime_ns",
        "_mtime_s",
        "_name_len",
        "_name_off",
        "_names",
        "_nlink",
        "_offset",
        "_parent",
        "_size",
        "_uid",
        "_xattr_len",
    )

    def __init__(self, b: TreeBuilder) -> None:
        self._mode = b.mode
        self._uid = b.uid
        self._gid = b.gid
        self._nlink = b.nlink
        self._size = b.size
        self._offset = b.offset
        self._hdr_off = b.hdr_off
        self._mtime_s = b.mtime_s
        self._mtime_ns = b.mtime_ns
        self._dev = b.dev
        self._parent = b.parent
        self._name_off = b.name_off
        self._name_len = b.name_len
        self._extra_off = b.extra_off
        self._link_len = b.link_len
        self._xattr_len = b.xattr_len
        self._flags = b.flags
        self._extra = bytes(b.extra)
        self._names = bytes(b.names)
        self._child_start = b.child_start
        self._child_count = b.child_count
        self._child_ino = b.child_ino
        self._child_name_off = b.child_name_off
        self._child_name_len = b.child_name_len

    @property
    def inode_count(self) -> int:
        return len(self._mode) - 1

    def valid(self, ino: int) -> bool:
        return 1 <= ino < len(self._mode)

    def mode(self, ino: int) -> int:
        return self._mode[ino]

    def is_dir(self, ino: int) -> bool:
        return stat.S_ISDIR(self._mode[ino])

    def is_regular(self, ino: int) -> bool:
        return stat.S_ISREG(self._mode[ino])

    def is_opaque(self, ino: int) -> bool:
        return bool(self._flags[ino] & FLAG_OPAQUE)

    def is_whiteout(self, ino: int) -> bool:
        return bool(self._flags[ino] & FLAG_WHITEOUT)

    def attributes(self, ino: int) -> Attributes:
        mode = self._mode[ino]
        size = self._size[ino]
        dev = self._dev[ino]
        device = stat.S_ISCHR(mode) or stat.S_ISBLK(mode)
        return Attributes(
            mode=mode,
            nlink=self._nlink[ino],
            uid=self._uid[ino],
            gid=self._gid[ino],
            rdev_major=dev >> 32 if device else 0,
            rdev_minor=dev & _U32 if device else 0,
            size=size,
            blocks=(size + 511) // 512 if stat.S_ISREG(mode) else 0,
            mtime_ns=self._mtime_s[ino] * 1_000_000_000 + self._mtime_ns[ino],
        )

    def mtime(self, ino: int) -> tuple[int, int]:
        return self._mtime_s[ino], self._mtime_ns[ino]

    def device_numbers(self, ino: int) -> tuple[int, int]:
        """The entry's devmajor/devminor as recorded (whatever its type)."""
        dev = self._dev[ino]
        return dev >> 32, dev & _U32

    def data_range(self, ino: int) -> tuple[int, int]:
        """(uncompressed offset of the file data, size)."""
        return self._offset[ino], self._size[ino]

    def header_offset(self, ino: int) -> int:
        """Where the tar header of the entry that created this inode starts (upstream's TarHeaderOffset)."""
        return self._hdr_off[ino]

    def link_target(self, ino: int) -> bytes:
        """Symlink target (or the link name a non-symlink entry happened to carry)."""
        start = self._extra_off[ino]
        return self._extra[start : start + self._link_len[ino]]

    def xattrs(self, ino: int) -> list[tuple[bytes, bytes]]:
        """``SCHILY.xattr.*`` records of the entry, prefix stripped, sorted by key."""
        pos = self._extra_off[ino] + self._link_len[ino]
        end = pos + self._xattr_len[ino]
        extra = self._extra
        out = []
        while pos < end:
            klen = int.from_bytes(extra[pos : pos + 4], "little")
            vlen = int.from_bytes(extra[pos + 4 : pos + 8], "little")
            pos += 8
            out.append((extra[pos : pos + klen], extra[pos + klen : pos + klen + vlen]))
            pos += klen + vlen
        return out

    def xattr(self, ino: int, key: bytes) -> bytes | None:
        for k, v in self.xattrs(ino):
            if k == key:
                return v
        return None

    def name(self, ino: int) -> bytes:
        """The name this inode was created under (its first name for hard-linked files)."""
        start = self._name_off[ino]
        return self._names[start : start + self._name_len[ino]]

    def path(self, ino: int) -> bytes:
        """Cleaned path of the inode's first name, relative to the layer root (``b""`` for the root)."""
        parts = []
        while ino != ROOT_INODE and ino:
            parts.append(self.name(ino))
            ino = self._parent[ino]
        return b"/".join(reversed(parts))

    def parent(self, ino: int) -> int:
        return self._parent[ino] or ROOT_INODE

    def child_count(self, ino: int) -> int:
        return self._child_count[ino]

    def lookup(self, parent: int, name: bytes) -> int:
        """Inode of ``name`` in directory ``parent``; 0 when there is none."""
        lo = self._child_start[parent]
        hi = lo + self._child_count[parent]
        names = self._names
        offs = self._child_name_off
        lens = self._child_name_len
        while lo < hi:
            mid = (lo + hi) >> 1
            off = offs[mid]
            candidate = names[off : off + lens[mid]]
            if candidate < name:
                lo = mid + 1
            elif candidate > name:
                hi = mid
            else:
                return self._child_ino[mid]
        return 0

    def resolve(self, path: bytes) -> int:
        """Inode of a cleaned relative path (no symlinks followed); 0 when missing."""
        ino = ROOT_INODE
        for part in clean_name(path).split(b"/") if path else ():
            if not part:
                continue
            if not self.is_dir(ino):
                return 0
            ino = self.lookup(ino, part)
            if not ino:
                return 0
        return ino

    def children(self, ino: int, start: int = 0) -> Iterator[tuple[int, bytes, int]]:
        """``(position, name, inode)`` of the directory's entries in name order, from ``start``.

        ``position`` is the value to pass as ``start`` to continue after that entry.
        """
        first = self._child_start[ino]
        names = self._names
        for i in range(first + start, first + self._child_count[ino]):
            off = self._child_name_off[i]
            yield i - first + 1, names[off : off + self._child_name_len[i]], self._child_ino[i]

    def statistics(self) -> TreeStatistics:
        arrays: list[array[int]] = [
            self._mode, self._uid, self._gid, self._nlink, self._size, self._offset, self._hdr_off, self._mtime_s,
            self._mtime_ns, self._dev, self._parent, self._name_off, self._name_len, self._extra_off,
            self._link_len, self._xattr_len, self._flags, self._child_start, self._child_count, self._child_ino,
            self._child_name_off, self._child_name_len,
        ]  # fmt: skip
        memory = sum(a.buffer_info()[1] * a.itemsize for a in arrays) + len(self._names) + len(self._extra)
        return TreeStatistics(self.inode_count, len(self._child_ino), memory)


_TYPE_BITS_RAW = {k.encode(): v for k, v in _TYPE_BITS.items()}
_HARDLINK_RAW = TYPE_HARDLINK.encode()
_DIR_RAW = TYPE_DIR.encode()
_REG_RAW = TYPE_REG.encode()
_SYMLINK_RAW = TYPE_SYMLINK.encode()
_XATTR_PREFIX = b"SCHILY.xattr."


class TreeBuilder:
    """Accepts a layer's entries in ``uncompressed_offset`` order (``add``), then packs them (``finish``).

    Growable arrays plus transient maps (children by name, parsed times) that ``finish`` drops.
    """

    def __init__(self) -> None:
        self.mode = array("I", [0, SYNTHETIC_DIR_MODE])  # index 0 unused: local inode numbers start at 1
        self.uid = array("I", [0, 0])
        self.gid = array("I", [0, 0])
        self.nlink = array("I", [0, 2])
        self.size = array("q", [0, 0])
        self.offset = array("q", [0, 0])
        self.hdr_off = array("q", [0, 0])
        self.mtime_s = array("q", [0, 0])
        self.mtime_ns = array("I", [0, 0])
        self.dev = array("Q", [0, 0])
        self.parent = array("I", [0, 0])
        self.name_off = array("I", [0, 0])
        self.name_len = array("I", [0, 0])
        self.extra_off = array("Q", [0, 0])
        self.link_len = array("I", [0, 0])
        self.xattr_len = array("I", [0, 0])
        self.flags = array("B", [0, FLAG_SYNTHETIC])
        self.extra = bytearray()
        self.names = bytearray()
        self.child_start = array("I")
        self.child_count = array("I")
        self.child_ino = array("I")
        self.child_name_off = array("I")
        self.child_name_len = array("I")
        # transient
        self.kids: dict[int, dict[bytes, int]] = {ROOT_INODE: {}}
        self.first_name: list[bytes] = [b"", b""]
        self.times: dict[bytes, tuple[int, int]] = {}
        self.last_dir_path: bytes | None = None
        self.last_dir_ino = 0
        self.next_header = 0

    def new_inode(
        self,
        mode: int,
        parent: int,
        name: bytes,
        *,
        uid: int = 0,
        gid: int = 0,
        mtime: tuple[int, int] = (0, 0),
        dev: int = 0,
        flags: int = 0,
        size: int = 0,
        offset: int = 0,
        header_offset: int = 0,
        linkname: bytes = b"",
        xattrs: bytes = b"",
    ) -> int:
        ino = len(self.mode)
        self.mode.append(mode)
        self.uid.append(uid)
        self.gid.append(gid)
        self.nlink.append(1)
        self.size.append(size)
        self.offset.append(offset)
        self.hdr_off.append(header_offset)
        self.mtime_s.append(mtime[0])
        self.mtime_ns.append(mtime[1])
        self.dev.append(dev)
        self.parent.append(parent)
        self.name_off.append(0)
        self.name_len.append(0)
        self.extra_off.append(len(self.extra))
        self.link_len.append(len(linkname))
        self.xattr_len.append(len(xattrs))
        self.flags.append(flags)
        self.first_name.append(name)
        if linkname or xattrs:
            self.extra += linkname
            self.extra += xattrs
        return ino

    def parse_time(self, text: bytes) -> tuple[int, int]:
        cached = self.times.get(text)
        if cached is None:
            parsed = parse_go_time(text) if text else None
            cached = self.times[text] = parsed if parsed is not None else (0, 0)
        return cached

    def is_dir(self, ino: int) -> bool:
        return stat.S_ISDIR(self.mode[ino])

    def directory(self, path: bytes) -> int:
        """Inode of directory ``path`` (cleaned), creating synthetic directories (and replacing non-dirs)."""
        if path == self.last_dir_path:
            return self.last_dir_ino
        ino = ROOT_INODE
        if path:
            for part in path.split(b"/"):
                children = self.kids[ino]
                child = children.get(part)
                if child is None or not self.is_dir(child):
                    if child is not None:
                        self.replaced(child)
                    child = self.new_inode(SYNTHETIC_DIR_MODE, ino, part, flags=FLAG_SYNTHETIC)
                    self.kids[child] = {}
                    children[part] = child
                ino = child
        self.last_dir_path, self.last_dir_ino = path, ino
        return ino

    def find(self, path: bytes) -> int:
        ino = ROOT_INODE
        for part in path.split(b"/") if path else ():
            children = self.kids.get(ino)
            if children is None:
                return 0
            ino = children.get(part, 0)
            if not ino:
                return 0
        return ino

    def replaced(self, ino: int) -> None:
        """A name stops pointing at ``ino``."""
        self.nlink[ino] -= 1
        if self.is_dir(ino):
            self.last_dir_path = None  # the cached directory lookup may point into the replaced subtree

    def add_entry(self, e: FileMetadata) -> None:
        self.add(
            e.name, e.type.encode(), e.uncompressed_offset, e.uncompressed_size, e.linkname, e.mode, e.uid, e.gid,
            e.mod_time.encode(), e.devmajor, e.devminor, e.pax_records,
        )  # fmt: skip

    def add(
        self,
        raw_name: bytes,
        entry_type: bytes,
        offset: int,
        size: int,
        linkname: bytes,
        mode: int,
        uid: int,
        gid: int,
        mod_time: bytes,
        devmajor: int,
        devminor: int,
        pax_records: Iterable[tuple[bytes, bytes]],
    ) -> None:
        """One TOC entry; entries must arrive in data offset order (which fixes their tar header offsets)."""
        header_offset = self.next_header
        if header_offset > offset:
            raise FormatError(
                f"invalid toc entry {raw_name!r}: data offset {offset} is before the end of the previous entry "
                f"({header_offset})"
            )
        end = offset + size
        self.next_header = end + (-end % TAR_BLOCK_SIZE)
        path = clean_name(raw_name)
        slash = path.rfind(b"/")
        dir_path, name = (path[:slash], path[slash + 1 :]) if slash >= 0 else (b"", path)
        uid &= _U32
        gid &= _U32
        if not path:
            if entry_type == _DIR_RAW:  # the layer root itself, e.g. "./"
                self.mode[ROOT_INODE] = stat.S_IFDIR | (mode & PERMISSION_BITS)
                self.uid[ROOT_INODE], self.gid[ROOT_INODE] = uid, gid
                self.mtime_s[ROOT_INODE], self.mtime_ns[ROOT_INODE] = self.parse_time(mod_time)
                self.extra_off[ROOT_INODE] = len(self.extra)
                self.link_len[ROOT_INODE] = 0
                xattrs = _pack_xattrs(pax_records)
                self.xattr_len[ROOT_INODE] = len(xattrs)
                self.extra += xattrs
                self.flags[ROOT_INODE] &= ~FLAG_SYNTHETIC
            return
        parent = self.directory(dir_path)
        children = self.kids[parent]
        if name.startswith(WHITEOUT_PREFIX):
            self.add_whiteout(parent, name, uid, gid, mod_time)
            return
        existing = children.get(name)
        if entry_type == _HARDLINK_RAW:
            target = self.find(clean_name(linkname))
            if not target:
                raise FormatError(f"received a hardlink but cannot get link destination: {raw_name!r} -> {linkname!r}")
            if self.is_dir(target):
                raise FormatError(f"hard link {raw_name!r} points at directory {linkname!r}")
            if existing == target:
                return
            if existing is not None:
                self.replaced(existing)
            children[name] = target
            self.nlink[target] += 1
            return
        type_bits = _TYPE_BITS_RAW.get(entry_type)
        if type_bits is None:
            raise FormatError(f"entry {raw_name!r} has unknown type {entry_type!r}")
        st_mode = type_bits | (mode & PERMISSION_BITS)
        mtime = self.parse_time(mod_time)
        xattrs = _pack_xattrs(pax_records)
        dev = ((devmajor & _U32) << 32) | (devminor & _U32)
        if existing is not None and entry_type == _DIR_RAW and self.is_dir(existing):
            self.mode[existing] = st_mode
            self.uid[existing], self.gid[existing] = uid, gid
            self.mtime_s[existing], self.mtime_ns[existing] = mtime
            self.dev[existing] = dev
            self.extra_off[existing] = len(self.extra)
            self.link_len[existing] = len(linkname)
            self.xattr_len[existing] = len(xattrs)
            self.extra += linkname
            self.extra += xattrs
            self.flags[existing] &= ~FLAG_SYNTHETIC
            return
        if existing is not None:
            self.replaced(existing)
        if entry_type == _REG_RAW:
            ino = self.new_inode(
                st_mode, parent, name, uid=uid, gid=gid, mtime=mtime, dev=dev, size=size, offset=offset,
                header_offset=header_offset, linkname=linkname, xattrs=xattrs,
            )  # fmt: skip
        else:
            ino = self.new_inode(
                st_mode, parent, name, uid=uid, gid=gid, mtime=mtime, dev=dev,
                size=len(linkname) if entry_type == _SYMLINK_RAW else 0, linkname=linkname, xattrs=xattrs,
            )  # fmt: skip
            if entry_type == _DIR_RAW:
                self.kids[ino] = {}
        children[name] = ino

    def add_whiteout(self, parent: int, name: bytes, uid: int, gid: int, mod_time: bytes) -> None:
        if name == OPAQUE_WHITEOUT:
            self.flags[parent] |= FLAG_OPAQUE
            return
        hidden = name[len(WHITEOUT_PREFIX) :]
        if not hidden:
            return
        children = self.kids[parent]
        existing = children.get(hidden)
        if existing is not None and not self.flags[existing] & FLAG_WHITEOUT:
            return  # a real entry of that name wins
        if existing is not None:
            self.replaced(existing)
        ino = self.new_inode(
            stat.S_IFCHR, parent, hidden, uid=uid, gid=gid, mtime=self.parse_time(mod_time), flags=FLAG_WHITEOUT
        )
        children[hidden] = ino

    def finish(self) -> LayerTree:
        count = len(self.mode)
        self.child_start = array("I", bytes(4 * count))
        self.child_count = array("I", bytes(4 * count))
        names = self.names
        for ino in range(1, count):
            children = self.kids.pop(ino, None)
            if children is None:
                continue
            self.child_start[ino] = len(self.child_ino)
            self.child_count[ino] = len(children)
            subdirs = 0
            for name, child in sorted(children.items()):
                off = len(names)
                names += name
                self.child_ino.append(child)
                self.child_name_off.append(off)
                self.child_name_len.append(len(name))
                if stat.S_ISDIR(self.mode[child]):
                    subdirs += 1
                if self.parent[child] == ino and self.first_name[child] == name:
                    self.name_off[child] = off
                    self.name_len[child] = len(name)
            self.nlink[ino] = 2 + subdirs
        for ino in range(2, count):
            if not self.name_len[ino] and self.first_name[ino]:
                # the first name was replaced later; keep it for path() anyway
                self.name_off[ino] = len(names)
                self.name_len[ino] = len(self.first_name[ino])
                names += self.first_name[ino]
        self.first_name = []
        self.times = {}
        return LayerTree(self)


def _pack_xattrs(pax_records: Iterable[tuple[bytes, bytes]]) -> bytes:
    """``SCHILY.xattr.*`` records, prefix stripped, as (u32 key length, u32 value length, key, value)*."""
    packed = b""
    for key, value in pax_records:
        if key.startswith(_XATTR_PREFIX):
            key = key[len(_XATTR_PREFIX) :]
            packed += len(key).to_bytes(4, "little") + len(value).to_bytes(4, "little") + key + value
    return packed


def build_tree(entries: Iterable[FileMetadata]) -> LayerTree:
    """The inode table of a layer from its TOC entries in ``uncompressed_offset`` order (as unmarshalled)."""
    builder = TreeBuilder()
    for e in entries:
        builder.add_entry(e)
    return builder.finish()

"""EROFS metadata images whose file data live in a second device: a layer's uncompressed tar.

The kernel then answers lookup, getattr, getxattr, readdir, open and readlink from this image alone, and
reads file bytes straight from the tar at each file's offset. Only those reads reach the process serving the
tar. The layout follows the kernel's ``fs/erofs/erofs_fs.h`` (on-disk format, little endian):

* 512-byte blocks (``blkszbits`` 9), because tar puts file data at 512-byte offsets, so every regular file is
  one chunk (``EROFS_INODE_CHUNK_BASED`` with an 8-byte chunk index naming device 1 and the block address);
* the superblock at byte 1024, a one-slot device table after it, then the inodes (always the 64-byte extended
  form: 64-bit sizes, 32-bit owners, nanosecond mtimes), then directory and symlink blocks (plain layout);
* extended attributes inline in the inode, with the kernel's five short name prefixes.

Nothing here reads a file system; the caller supplies the tree (``Tree``) and gets the image bytes.
"""

from __future__ import annotations

import stat
import struct
from collections.abc import Iterable
from typing import Final, Protocol

from soci.errors import FormatError

MAGIC: Final = 0xE0F5E1E2
SUPERBLOCK_OFFSET: Final = 1024
BLOCK_BITS: Final = 9
BLOCK_SIZE: Final = 1 << BLOCK_BITS
DATA_DEVICE_ID: Final = 1
NULL_ADDR: Final = 0xFFFF_FFFF

_SLOT: Final = 32  # nids count 32-byte slots from the start of the metadata area
_DEVICE_SLOT_SIZE: Final = 128
_DEVT_SLOTOFF: Final = (SUPERBLOCK_OFFSET + 128) // _DEVICE_SLOT_SIZE
_META_BLKADDR: Final = -(-(_DEVT_SLOTOFF + 1) * _DEVICE_SLOT_SIZE // BLOCK_SIZE)
_EXTENDED_INODE_SIZE: Final = 64
_CHUNK_INDEX_SIZE: Final = 8
_XATTR_HEADER_SIZE: Final = 12
_DIRENT_SIZE: Final = 12

_INCOMPAT_CHUNKED_FILE: Final = 0x4
_INCOMPAT_DEVICE_TABLE: Final = 0x8
_CHUNK_FORMAT_INDEXES: Final = 0x0020
_CHUNK_FORMAT_BLKBITS_MASK: Final = 0x001F

_LAYOUT_FLAT_PLAIN: Final = 0
_LAYOUT_CHUNK_BASED: Final = 4
_VERSION_EXTENDED: Final = 1

_FILE_TYPES: Final = {
    stat.S_IFREG: 1,
    stat.S_IFDIR: 2,
    stat.S_IFCHR: 3,
    stat.S_IFBLK: 4,
    stat.S_IFIFO: 5,
    stat.S_IFSOCK: 6,
    stat.S_IFLNK: 7,
}

# (name index, prefix) in the order they are tried; the two ACL names are whole names with an empty suffix
_INODE: Final = struct.Struct("<HHHHQIIIIQII16x")  # erofs_inode_extended
_DIRENT: Final = struct.Struct("<QHBx")  # erofs_dirent: nid, nameoff, file type
_CHUNK_INDEX: Final = struct.Struct("<HHI")  # erofs_inode_chunk_index: advise, device id, block address

_XATTR_PREFIXES: Final = (
    (2, b"system.posix_acl_access"),
    (3, b"system.posix_acl_default"),
    (1, b"user."),
    (4, b"trusted."),
    (6, b"security."),
)


class Entry:
    """One inode as the writer stores it."""

    __slots__ = ("data_offset", "gid", "mode", "mtime_ns", "nlink", "rdev", "size", "target", "uid", "xattrs")

    def __init__(
        self,
        mode: int,
        *,
        nlink: int = 1,
        uid: int = 0,
        gid: int = 0,
        size: int = 0,
        mtime_ns: int = 0,
        rdev: tuple[int, int] = (0, 0),
        data_offset: int = 0,
        target: bytes = b"",
        xattrs: Iterable[tuple[bytes, bytes]] = (),
    ) -> None:
        self.mode = mode
        self.nlink = nlink
        self.uid = uid
        self.gid = gid
        self.size = size
        self.mtime_ns = mtime_ns
        self.rdev = rdev
        self.data_offset = data_offset
        self.target = target
        self.xattrs = sorted(xattrs)


class Source(Protocol):
    """The layer as the writer walks it: integer inode numbers, ``root`` first."""

    root: int

    def entry(self, ino: int) -> Entry: ...

    def children(self, ino: int) -> Iterable[tuple[bytes, int]]: ...


def _xattr_body(xattrs: list[tuple[bytes, bytes]], ino: int) -> bytes:
    if not xattrs:
        return b""
    parts = [struct.pack("<IB7x", 0, 0)]  # no name filter, no shared xattrs
    for key, value in xattrs:
        for index, prefix in _XATTR_PREFIXES:
            whole_name = index in (2, 3)  # the ACL names are stored with an empty suffix
            if key == prefix if whole_name else key.startswith(prefix) and len(key) > len(prefix):
                suffix = key[len(prefix) :]
                break
        else:
            raise FormatError(f"inode {ino}: extended attribute {key!r} has no EROFS name prefix")
        if len(suffix) > 255 or len(value) > 0xFFFF:
            raise FormatError(f"inode {ino}: extended attribute {key!r} is too long for EROFS")
        item = struct.pack("<BBH", len(suffix), index, len(value)) + suffix + value
        parts.append(item + b"\0" * (-len(item) % 4))
    return b"".join(parts)


def _encode_dev(major: int, minor: int) -> int:
    """The kernel's ``new_encode_dev``: 12 bits of major, 20 of minor, in one 32-bit number."""
    if major >= 1 << 12 or minor >= 1 << 20:
        raise FormatError(f"device number {major}:{minor} does not fit in 32 bits")
    return (minor & 0xFF) | (major << 8) | ((minor & ~0xFF) << 12)


def _dir_blocks(entries: list[tuple[bytes, int, int]]) -> tuple[bytes, int]:
    """Directory blocks for ``(name, nid, file type)`` sorted by name: ``(blocks, i_size)``."""
    blocks: list[bytes] = []
    i = 0
    used_last = 0
    while i < len(entries):
        j = i
        size = 0
        while j < len(entries) and size + _DIRENT_SIZE + len(entries[j][0]) <= BLOCK_SIZE:
            size += _DIRENT_SIZE + len(entries[j][0])
            j += 1
        chunk = entries[i:j]
        block = bytearray(BLOCK_SIZE)
        nameoff = _DIRENT_SIZE * len(chunk)
        at = 0
        for name, nid, file_type in chunk:
            _DIRENT.pack_into(block, at, nid, nameoff, file_type)
            block[nameoff : nameoff + len(name)] = name
            at += _DIRENT_SIZE
            nameoff += len(name)
        used_last = nameoff
        blocks.append(bytes(block))
        i = j
    return b"".join(blocks), (len(blocks) - 1) * BLOCK_SIZE + used_last


def build_image(source: Source, data_size: int, device_tag: bytes = b"") -> bytes:
    """The EROFS image for ``source``; regular files' data are at ``data_offset`` in a ``data_size``-byte device.

    Raises:
        FormatError: a file's data are not on a 512-byte boundary or not inside the device, a name or an
            extended attribute cannot be stored, or the tree has more than one root.
    """
    # pass 1: every inode once (hard links share one), the root first so its nid fits the superblock's 16 bits
    order: list[int] = []
    pending = [source.root]
    entries: dict[int, Entry] = {}
    children: dict[int, list[tuple[bytes, int]]] = {}
    while pending:
        ino = pending.pop()
        if ino in entries:
            continue
        order.append(ino)
        entry = entries[ino] = source.entry(ino)
        if stat.S_ISDIR(entry.mode):
            kids = children[ino] = list(source.children(ino))
            pending.extend([child for _, child in reversed(kids)])

    # pass 2: inode records (inode, inline xattrs, chunk index) laid out in 32-byte slots
    records: dict[int, tuple[int, bytes]] = {}  # ino -> (offset in the metadata area, xattr body)
    offset = 0
    for ino in order:
        entry = entries[ino]
        xattrs = _xattr_body(entry.xattrs, ino)
        length = _EXTENDED_INODE_SIZE + len(xattrs)
        if stat.S_ISREG(entry.mode) and entry.size:
            length = -(-length // _CHUNK_INDEX_SIZE) * _CHUNK_INDEX_SIZE + _CHUNK_INDEX_SIZE
        if length <= BLOCK_SIZE and offset // BLOCK_SIZE != (offset + length - 1) // BLOCK_SIZE:
            offset = -(-offset // BLOCK_SIZE) * BLOCK_SIZE  # keep a record inside one block when it can be
        records[ino] = (offset, xattrs)
        offset += -(-length // _SLOT) * _SLOT
    root_nid = records[source.root][0] // _SLOT
    if root_nid != 0:
        raise FormatError("the root inode must come first")
    meta_size = -(-offset // BLOCK_SIZE) * BLOCK_SIZE
    data_blkaddr = _META_BLKADDR + meta_size // BLOCK_SIZE

    # pass 3: directory and symlink data blocks after the metadata
    data_parts: list[bytes] = []
    data_at: dict[int, tuple[int, int]] = {}  # ino -> (block address, i_size)
    next_block = data_blkaddr
    parent_of: dict[int, int] = {source.root: source.root}
    for ino in order:
        entry = entries[ino]
        if stat.S_ISDIR(entry.mode):
            dirents = [(b".", records[ino][0] // _SLOT, 2), (b"..", records[parent_of[ino]][0] // _SLOT, 2)]
            for name, child in children[ino]:
                if not name or b"/" in name or name in (b".", b"..") or len(name) > 255:
                    raise FormatError(f"directory inode {ino}: name {name!r} cannot be stored")
                child_mode = entries[child].mode
                if stat.S_ISDIR(child_mode):
                    parent_of.setdefault(child, ino)
                dirents.append((name, records[child][0] // _SLOT, _FILE_TYPES.get(stat.S_IFMT(child_mode), 0)))
            dirents.sort(key=lambda d: d[0])
            blob, size = _dir_blocks(dirents)
        elif stat.S_ISLNK(entry.mode):
            if not entry.target or len(entry.target) > 4095:
                raise FormatError(f"symlink inode {ino}: target of {len(entry.target)} bytes cannot be stored")
            blob, size = entry.target + b"\0" * (-len(entry.target) % BLOCK_SIZE), len(entry.target)
        else:
            continue
        data_at[ino] = (next_block, size)
        data_parts.append(blob)
        next_block += len(blob) // BLOCK_SIZE

    # pass 4: the inodes themselves
    meta = bytearray(meta_size)
    pack_inode = _INODE.pack_into
    for ino in order:
        entry = entries[ino]
        slot, xattrs = records[ino]
        kind = stat.S_IFMT(entry.mode)
        layout = _LAYOUT_FLAT_PLAIN
        size = entry.size
        chunk = None
        if ino in data_at:
            i_u, size = data_at[ino]
        elif kind == stat.S_IFREG and size:
            if entry.data_offset % BLOCK_SIZE or entry.data_offset + size > data_size:
                raise FormatError(
                    f"file inode {ino}: data at {entry.data_offset} (+{size}) are not a 512-byte aligned range "
                    f"of the {data_size}-byte archive"
                )
            layout = _LAYOUT_CHUNK_BASED
            chunk_bits = max(BLOCK_BITS, (size - 1).bit_length())
            i_u = _CHUNK_FORMAT_INDEXES | ((chunk_bits - BLOCK_BITS) & _CHUNK_FORMAT_BLKBITS_MASK)
            blkaddr = entry.data_offset // BLOCK_SIZE
            if blkaddr >= NULL_ADDR:
                raise FormatError(f"file inode {ino}: data beyond the 2 TiB EROFS addresses")
            chunk = blkaddr
        elif kind in (stat.S_IFCHR, stat.S_IFBLK):
            i_u = _encode_dev(*entry.rdev)
            size = 0
        else:
            i_u = 0 if kind != stat.S_IFREG else NULL_ADDR
            size = 0
        icount = (len(xattrs) - _XATTR_HEADER_SIZE) // 4 + 1 if xattrs else 0
        seconds, nanoseconds = divmod(entry.mtime_ns, 1_000_000_000)
        pack_inode(
            meta,
            slot,
            _VERSION_EXTENDED | (layout << 1),
            icount,
            entry.mode & 0xFFFF,
            0,
            size,
            i_u,
            ino & 0xFFFF_FFFF,
            entry.uid,
            entry.gid,
            seconds & 0xFFFF_FFFF_FFFF_FFFF,
            nanoseconds,
            entry.nlink,
        )
        end = slot + _EXTENDED_INODE_SIZE
        if xattrs:
            meta[end : end + len(xattrs)] = xattrs
            end += len(xattrs)
        if chunk is not None:
            _CHUNK_INDEX.pack_into(meta, end + (-end % _CHUNK_INDEX_SIZE), 0, DATA_DEVICE_ID, chunk)

    total_blocks = next_block
    device_blocks = -(-data_size // BLOCK_SIZE)
    superblock = struct.pack(
        "<IIIBBHQQIIII16s16sIHHHBBIQB23x",
        MAGIC,
        0,  # no checksum (feature_compat SB_CHKSUM is off)
        0,
        BLOCK_BITS,
        0,
        root_nid,
        len(order),
        0,
        0,
        total_blocks,
        _META_BLKADDR,
        0,
        b"",
        b"",
        _INCOMPAT_CHUNKED_FILE | _INCOMPAT_DEVICE_TABLE,
        0,
        1,  # extra devices: the tar
        _DEVT_SLOTOFF,
        0,
        0,
        0,
        0,
        0,
    )
    device_slot = struct.pack("<64sII56x", device_tag[:64], device_blocks, 0)
    head = bytearray(_META_BLKADDR * BLOCK_SIZE)
    head[SUPERBLOCK_OFFSET : SUPERBLOCK_OFFSET + len(superblock)] = superblock
    slot_at = _DEVT_SLOTOFF * _DEVICE_SLOT_SIZE
    head[slot_at : slot_at + _DEVICE_SLOT_SIZE] = device_slot
    return bytes(head) + bytes(meta) + b"".join(data_parts)

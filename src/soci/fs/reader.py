"""File reads: a file's byte range -> layer byte range, with the tar header checked on first read.

Before the first read of a file (unless verification is disabled) the bytes between the end of the
previous entry and the file's data are parsed as a tar header through the span manager, and every field
the zTOC claims about the file must match (upstream's ``fs/reader`` verification, soci-format.md §6.7):
exactly one entry consuming exactly those bytes, same name, type, size, mtime, link name, mode, owner,
device numbers and xattrs. So a zTOC cannot point a file at bytes of another file, even if every span
verifies.
"""

from __future__ import annotations

import asyncio
import bisect
import datetime
from array import array
from collections import OrderedDict
from collections.abc import Callable

from soci.errors import DataLoss, FormatError
from soci.formats.gotime import parse_go_time
from soci.formats.tar import BLOCK_SIZE, TocBuilder
from soci.formats.ztoc import TYPE_REG, FileMetadata
from soci.fs.spans import SpanManager
from soci.fs.tree import PERMISSION_BITS, LayerTree, clean_name
from soci.futures import mark_retrieved

_ZEROS = memoryview(bytes(1 << 20))
_END_OF_ARCHIVE = bytes(2 * BLOCK_SIZE)
_U32 = 0xFFFF_FFFF
_SEQUENTIAL_TRACKED = 1024  # files whose last read end is remembered to spot sequential readers


class FileReader:
    """Reads regular files of one layer."""

    def __init__(self, tree: LayerTree, spans: SpanManager, *, verify: bool = True, name: str = "layer") -> None:
        self._tree = tree
        self._spans = spans
        self._verify = verify
        self._verified = bytearray(tree.inode_count + 1)
        self._verifying: dict[int, asyncio.Future[None]] = {}
        self._last_end: OrderedDict[int, int] = OrderedDict()
        self._by_offset: tuple[array[int], array[int]] | None = None  # built on the first archive read
        self._archive_end = 0
        self.name = name
        self.on_read: Callable[[int, int, int], None] | None = None
        """Called with ``(inode, offset, length)`` of every read (load order recording)."""

    async def read(self, ino: int, offset: int, size: int) -> bytes:
        data_offset, file_size = self._tree.data_range(ino)
        end = min(offset + size, file_size)
        if offset >= end:
            return b""
        if self.on_read is not None:
            self.on_read(ino, offset, end - offset)
        if self._verify and not self._verified[ino]:
            await self.verify(ino)
        sequential = offset == 0 or self._last_end.get(ino) == offset
        self._last_end[ino] = end
        self._last_end.move_to_end(ino)
        if len(self._last_end) > _SEQUENTIAL_TRACKED:
            self._last_end.popitem(last=False)
        return await self._spans.read(
            data_offset + offset,
            data_offset + end,
            readahead_limit=data_offset + file_size if sequential else None,
        )

    async def read_archive(self, offset: int, size: int) -> bytes:
        """Bytes of the layer's uncompressed tar (the EROFS data device): each file the range overlaps is
        checked (its tar header, once) and reported to ``on_read`` as a read of that file."""
        end = min(offset + size, self._spans.uncompressed_size)
        if offset >= end:
            return b""
        file_end = 0
        for ino, data_offset, lo, hi in self._files_between(offset, end):
            if self.on_read is not None:
                self.on_read(ino, lo - data_offset, hi - lo)
            if self._verify and not self._verified[ino]:
                await self.verify(ino)
            file_end = max(file_end, data_offset + self._tree.data_range(ino)[1])
        sequential = offset == self._archive_end
        self._archive_end = end
        return await self._spans.read(offset, end, readahead_limit=file_end if sequential and file_end else None)

    def _files_between(self, start: int, end: int) -> list[tuple[int, int, int, int]]:
        """``(inode, data offset, overlap start, overlap end)`` of the regular files whose data overlap."""
        if self._by_offset is None:
            files = sorted(
                (self._tree.data_range(i)[0], i)
                for i in range(1, self._tree.inode_count + 1)
                if self._tree.is_regular(i) and self._tree.data_range(i)[1]
            )
            self._by_offset = (array("Q", (o for o, _ in files)), array("Q", (i for _, i in files)))
        offsets, inodes = self._by_offset
        found = []
        i = max(0, bisect.bisect_right(offsets, start) - 1)
        while i < len(offsets) and offsets[i] < end:
            data_offset = offsets[i]
            ino = inodes[i]
            lo, hi = max(start, data_offset), min(end, data_offset + self._tree.data_range(ino)[1])
            if lo < hi:
                found.append((ino, data_offset, lo, hi))
            i += 1
        return found

    async def verify(self, ino: int) -> None:
        """Check the file's tar header once (concurrent callers share the check); DataLoss on mismatch."""
        if self._verified[ino]:
            return
        pending = self._verifying.get(ino)
        if pending is None:
            pending = asyncio.get_running_loop().create_future()
            pending.add_done_callback(mark_retrieved)
            self._verifying[ino] = pending
            try:
                await self._check_header(ino)
            except BaseException as exc:
                pending.set_exception(exc)
                raise
            else:
                self._verified[ino] = 1
                pending.set_result(None)
            finally:
                del self._verifying[ino]
        await asyncio.shield(pending)

    async def _check_header(self, ino: int) -> None:
        tree = self._tree
        header_offset = tree.header_offset(ino)
        data_offset, size = tree.data_range(ino)
        path = tree.path(ino)
        where = f"{self.name}: file {path.decode(errors='replace')!r}: tar header at offset {header_offset}"
        region = await self._spans.read(header_offset, data_offset)
        if len(region) != data_offset - header_offset:
            raise DataLoss(f"{where}: layer ends inside the header")
        entry = _parse_header(region, size, where)
        mismatch = _first_mismatch(tree, ino, entry, path, size)
        if mismatch:
            raise DataLoss(f"{where} does not match the zTOC: {mismatch}")


def _parse_header(region: bytes, size: int, where: str) -> FileMetadata:
    """The one entry whose headers fill ``region`` exactly (its data is fed as zeros, only counted)."""
    builder = TocBuilder(tz=datetime.UTC, strict=False)  # accept whatever upstream indexes
    try:
        builder.feed(region)
        remaining = size + (-size % BLOCK_SIZE)
        while remaining:
            step = min(remaining, len(_ZEROS))
            builder.feed(_ZEROS[:step])
            remaining -= step
        builder.feed(_END_OF_ARCHIVE)
        entries = builder.finish().entries
    except FormatError as exc:
        raise DataLoss(f"{where}: not a valid tar header: {exc}") from exc
    if len(entries) != 1 or entries[0].uncompressed_offset != len(region):
        raise DataLoss(f"{where}: the header bytes do not hold exactly this file's header")
    return entries[0]


def _first_mismatch(tree: LayerTree, ino: int, e: FileMetadata, path: bytes, size: int) -> str:
    if clean_name(e.name) != path:
        return f"name {e.name!r}"
    if e.type != TYPE_REG:
        return f"type {e.type}"
    if e.uncompressed_size != size:
        return f"size {e.uncompressed_size} != {size}"
    mtime = parse_go_time(e.mod_time) if e.mod_time else None
    if (mtime or (0, 0)) != tree.mtime(ino):
        return f"mtime {e.mod_time}"
    if e.linkname != tree.link_target(ino):
        return f"link name {e.linkname!r}"
    if e.mode & PERMISSION_BITS != tree.mode(ino) & PERMISSION_BITS:
        return f"mode {e.mode:o}"
    attrs = tree.attributes(ino)
    if (e.uid & _U32, e.gid & _U32) != (attrs.uid, attrs.gid):
        return f"owner {e.uid}:{e.gid}"
    if (e.devmajor & _U32, e.devminor & _U32) != tree.device_numbers(ino):
        return f"device numbers {e.devmajor},{e.devminor}"
    if sorted(e.xattrs().items()) != tree.xattrs(ino):
        return "xattrs"
    return ""

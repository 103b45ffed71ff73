"""Load a zTOC straight into a ``LayerTree`` without one Python object per entry.

``soci.formats.ztoc_codec.unmarshal_ztoc`` builds a ``FileMetadata`` per entry, which is right for tools but
costs time and transient memory when a layer is mounted. This reader walks the same FlatBuffers tables
with bounds-checked ``struct`` reads, feeds each entry's fields to the tree builder in data offset order
(as upstream sorts them), and keeps only what the read path needs: sizes, span digests and checkpoints.
It rejects what ``unmarshal_ztoc`` rejects, with FormatError.
"""

from __future__ import annotations

import dataclasses
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from soci.errors import FormatError
from soci.formats.digest import is_digest
from soci.formats.zinfo import without_windows
from soci.formats.ztoc import ALGORITHM_GZIP, ALGORITHM_UNCOMPRESSED, Ztoc
from soci.formats.ztoc_codec import TableReader
from soci.fs.tree import LayerTree, TreeBuilder

_ALGORITHMS = {1: ALGORITHM_GZIP, 2: ALGORITHM_UNCOMPRESSED}
_DEFAULT_ALGORITHM = 1
T = TypeVar("T")
_U32 = 0xFFFF_FFFF
_u32 = struct.Struct("<I").unpack_from
_i32 = struct.Struct("<i").unpack_from
_u16 = struct.Struct("<H").unpack_from
_i64 = struct.Struct("<q").unpack_from
_i8 = struct.Struct("<b").unpack_from


@dataclass(frozen=True, slots=True)
class ZtocInfo:
    """Everything of a zTOC but its TOC."""

    compressed_archive_size: int
    uncompressed_archive_size: int
    compression_algorithm: str
    max_span_id: int
    span_digests: tuple[str, ...]
    checkpoints: bytes
    entry_count: int
    version: str = ""
    build_tool_identifier: str = ""

    @classmethod
    def of(cls, z: Ztoc) -> ZtocInfo:
        return cls(
            z.compressed_archive_size, z.uncompressed_archive_size, z.compression_algorithm, z.max_span_id,
            z.span_digests, z.checkpoints, len(z.entries), z.version, z.build_tool_identifier,
        )  # fmt: skip


def load_ztoc(data: bytes | bytearray | memoryview) -> tuple[ZtocInfo, LayerTree]:
    """Parse zTOC bytes into its info and the layer's inode table."""
    return _parse(data, _Loader.load)


def read_ztoc_info(data: bytes | bytearray | memoryview) -> ZtocInfo:
    """The zTOC's info without its TOC (``entry_count`` 0): cheap, for what a mount needs before the tree."""
    return _parse(data, lambda loader: loader.info()[0])


def ztoc_without_windows(data: bytes | bytearray | memoryview) -> bytes:
    """The zTOC with its checkpoint windows zeroed (``zinfo.without_windows``), byte for byte otherwise.

    What a load order document carries so that a layer can be mounted before its zTOC is fetched: the
    table of contents, span table and digests are all there, and compress to a few percent of the zTOC (the
    windows, 32 KiB per span, are most of its bytes and do not compress). The zTOC of an uncompressed layer has
    no windows and is returned as it is.
    """
    return _parse(data, _Loader.without_windows)


def _parse(data: bytes | bytearray | memoryview, part: Callable[[_Loader], T]) -> T:
    try:
        return part(_Loader(bytes(data)))
    except FormatError:
        raise
    except (struct.error, IndexError, ValueError, OverflowError) as exc:
        raise FormatError(f"cannot unmarshal ztoc: {exc}") from None


class _Loader(TableReader):
    """Walks the zTOC tables with the codec's bounds-checked reader, building the tree instead of objects."""

    __slots__ = ()

    def info(self) -> tuple[ZtocInfo, int, int]:
        """The zTOC's info, the position of its TOC table and of its checkpoints (``entry_count`` is left 0)."""
        buf = self.buf
        root = _u32(buf, 0)[0]
        f = self.fields(root, 6)
        version = self.string(root, f[0]).decode("utf-8", "surrogateescape")
        build_tool = self.string(root, f[1]).decode("utf-8", "surrogateescape")
        compressed_size = _i64(buf, root + f[2])[0] if f[2] else 0
        uncompressed_size = _i64(buf, root + f[3])[0] if f[3] else 0
        toc = self.child(root, f[4], "toc")
        info = self.child(root, f[5], "compression info")

        info_fields = self.fields(info, 4)
        algorithm_enum = _i8(buf, info + info_fields[0])[0] if info_fields[0] else _DEFAULT_ALGORITHM
        algorithm = _ALGORITHMS.get(algorithm_enum)
        if algorithm is None:
            raise FormatError(f"cannot unmarshal ztoc: unknown compression algorithm {algorithm_enum}")
        max_span_id = _i32(buf, info + info_fields[1])[0] if info_fields[1] else 0
        first, count = self.vector(info, info_fields[2], 4)
        digests = []
        for i in range(count):
            digest = self.string_at(self.table_at(first + 4 * i)).decode("utf-8", "surrogateescape")
            digests.append(digest if is_digest(digest) else "")  # upstream ignores parse errors
        first, count = self.vector(info, info_fields[3], 1)
        checkpoints = buf[first : first + count]
        info_record = ZtocInfo(
            compressed_size, uncompressed_size, algorithm, max_span_id, tuple(digests), checkpoints, 0,
            version, build_tool,
        )  # fmt: skip
        return info_record, toc, first

    def without_windows(self) -> bytes:
        info, _, at = self.info()
        if info.compression_algorithm != ALGORITHM_GZIP:
            return self.buf
        return self.buf[:at] + without_windows(info.checkpoints) + self.buf[at + len(info.checkpoints) :]

    def load(self) -> tuple[ZtocInfo, LayerTree]:
        info, toc, _ = self.info()
        first, count = self.vector(toc, self.fields(toc, 1)[0], 4)
        tables = [self.table_at(first + 4 * i) for i in range(count)]
        offsets = [self.data_offset(t) for t in tables]
        if any(offsets[i] > offsets[i + 1] for i in range(count - 1)):
            order = sorted(range(count), key=offsets.__getitem__)  # stable, as upstream's sort
            tables = [tables[i] for i in order]
        builder = TreeBuilder()
        for table in tables:
            self.add_entry(builder, table, info.uncompressed_archive_size)
        return dataclasses.replace(info, entry_count=count), builder.finish()

    def data_offset(self, table: int) -> int:
        f = self.fields(table, 14)
        return _i64(self.buf, table + f[2])[0] if f[2] else 0

    def add_entry(self, builder: TreeBuilder, table: int, archive_size: int) -> None:
        buf = self.buf
        size = self.size
        f = self.fields(table, 14)
        offset = _i64(buf, table + f[2])[0] if f[2] else 0
        length = _i64(buf, table + f[3])[0] if f[3] else 0
        if offset < 0 or length < 0 or offset + length > archive_size:
            name = self.string(table, f[0]) if f[0] else b""
            raise FormatError(f"zTOC entry {name.decode('utf-8', 'replace')!r}: data at {offset}, {length} bytes, "
                              f"is not inside the {archive_size}-byte archive")  # fmt: skip
        strings = []
        for field in (f[0], f[1], f[4], f[10]):  # name, type, linkname, mod_time: inlined string reads
            if field:
                at = (table + field) & _U32
                start = (at + _u32(buf, at)[0]) & _U32
                end = start + 4 + _u32(buf, start)[0]
                if end > size:
                    raise FormatError(f"cannot unmarshal ztoc: string at {start} runs past the end of the buffer")
                strings.append(buf[start + 4 : end])
            else:
                strings.append(b"")
        records: list[tuple[bytes, bytes]] = []
        if f[13]:
            first, count = self.vector(table, f[13], 4)
            for i in range(count):
                xattr = self.table_at(first + 4 * i)
                xf = self.fields(xattr, 2)
                records.append((self.string(xattr, xf[0]), self.string(xattr, xf[1])))
            if any(records[i][0] >= records[i + 1][0] for i in range(count - 1)):
                records = sorted(dict(records).items())  # upstream reads them into a map: last value wins
        builder.add(
            strings[0],
            strings[1],
            offset,
            length,
            strings[2],
            _i64(buf, table + f[5])[0] if f[5] else 0,
            _u32(buf, table + f[6])[0] if f[6] else 0,
            _u32(buf, table + f[7])[0] if f[7] else 0,
            strings[3],
            _i64(buf, table + f[11])[0] if f[11] else 0,
            _i64(buf, table + f[12])[0] if f[12] else 0,
            records,
        )

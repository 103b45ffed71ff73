"""zTOC bytes <-> ``Ztoc``, byte-identical with upstream SOCI's Go marshaller.

FlatBuffers output depends on the order of builder calls, so ``marshal_ztoc`` replays upstream's exact
sequence (soci-format.md §1.3) on a small builder of our own that lays out bytes exactly as the Go
FlatBuffers runtime does, including its vtable deduplication, which compares field offsets only. Building
back to front into a list of pieces keeps the per-entry cost low; the tests check the bytes against the
``flatbuffers`` package's Builder driven call by call.

``unmarshal_ztoc`` reads the tables directly with ``struct`` and bounds checks, because the generated
accessors are slow on 60k entries, and rejects every malformed buffer with FormatError.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable

from soci.errors import FormatError
from soci.formats.digest import is_digest
from soci.formats.ztoc import ALGORITHM_GZIP, ALGORITHM_UNCOMPRESSED, TAR_BLOCK_SIZE, FileMetadata, Ztoc

# CompressionAlgorithm enum values; Gzip is the schema default and therefore never written.
_ALGORITHM_TO_ENUM = {ALGORITHM_GZIP: 1, ALGORITHM_UNCOMPRESSED: 2}
_ENUM_TO_ALGORITHM = {v: k for k, v in _ALGORITHM_TO_ENUM.items()}
_DEFAULT_ALGORITHM_ENUM = 1

_FILE_METADATA_FIELDS = 14
_COMPRESSION_INFO_FIELDS = 4
_ZTOC_FIELDS = 6
_UINT32_MASK = 0xFFFF_FFFF
_ZEROS = bytes(8)
_ZEROS4 = bytes(4)
_EMPTY_VECTOR = bytes(4)  # a vector with no elements: just its uint32 length
_FILE_METADATA_VTABLE_BYTES = 2 * (_FILE_METADATA_FIELDS + 2)
_pack_file_metadata_vtable = struct.Struct(f"<{_FILE_METADATA_FIELDS + 2}H").pack

_pack_u32 = struct.Struct("<I").pack
_pack_i32 = struct.Struct("<i").pack
_pack_i64 = struct.Struct("<q").pack
_pack_i8 = struct.Struct("<b").pack
_unpack_u32 = struct.Struct("<I").unpack_from
_unpack_i32 = struct.Struct("<i").unpack_from
_unpack_u16 = struct.Struct("<H").unpack_from
_unpack_i64 = struct.Struct("<q").unpack_from
_unpack_i8 = struct.Struct("<b").unpack_from


class _GoBuilder:
    """The subset of Go's ``flatbuffers.Builder`` the zTOC needs, producing the same bytes.

    Go's builder writes from the end of its buffer towards the front; offsets are counted from the end.
    Here every write appends a piece to ``pieces`` (in write order) and the output is the reversed join,
    which gives the same bytes without moving data as the buffer grows.
    """

    __slots__ = ("minalign", "object_end", "offset", "pieces", "vtable", "vtables")

    def __init__(self) -> None:
        self.pieces: list[bytes] = []
        self.offset = 0  # Go's Builder.Offset(): bytes written so far
        self.minalign = 1
        self.vtable: list[int] = []
        self.object_end = 0
        # Field-offset tuple -> offset of the vtable already written for it (Go ignores the object size).
        self.vtables: dict[tuple[int, ...], int] = {}

    def prep(self, size: int, additional: int) -> None:
        if size > self.minalign:
            self.minalign = size
        pad = -(self.offset + additional) & (size - 1)
        if pad:
            self.pieces.append(_ZEROS[:pad])
            self.offset += pad

    def create_string(self, data: bytes) -> int:
        n = len(data)
        self.prep(4, n + 1)
        self.pieces.append(_pack_u32(n) + data + b"\x00")
        self.offset += n + 5
        return self.offset

    def create_byte_vector(self, data: bytes) -> int:
        n = len(data)
        self.prep(4, n)
        self.pieces.append(bytes(data))
        self.pieces.append(_pack_u32(n))  # pieces are reversed at the end: the length precedes the data
        self.offset += n + 4
        return self.offset

    def create_offset_vector(self, targets: list[int]) -> int:
        """StartVector(4, n, 4), PrependUOffsetT of targets last to first, EndVector."""
        n = len(targets)
        self.prep(4, 4 * n)
        base = self.offset
        # Element j ends up (n - j) slots in front of `base`; its value is relative to its own position.
        values = [base + 4 * (n - j) - target for j, target in enumerate(targets)]
        self.pieces.append(struct.pack(f"<{n + 1}I", n, *values))
        self.offset = base + 4 * (n + 1)
        return self.offset

    def start_object(self, fields: int) -> None:
        self.vtable = [0] * fields
        self.object_end = self.offset

    def add_offset(self, slot: int, target: int) -> None:
        if target:
            self.prep(4, 0)
            self.pieces.append(_pack_u32(self.offset + 4 - target))
            self.offset += 4
            self.vtable[slot] = self.offset

    def add_int64(self, slot: int, value: int) -> None:
        if value:
            self.prep(8, 0)
            self.pieces.append(_pack_i64(value))
            self.offset += 8
            self.vtable[slot] = self.offset

    def add_int32(self, slot: int, value: int) -> None:
        if value:
            self.prep(4, 0)
            self.pieces.append(_pack_i32(value))
            self.offset += 4
            self.vtable[slot] = self.offset

    def add_uint32(self, slot: int, value: int) -> None:
        if value:
            self.prep(4, 0)
            self.pieces.append(_pack_u32(value))
            self.offset += 4
            self.vtable[slot] = self.offset

    def add_int8(self, slot: int, value: int, default: int) -> None:
        if value != default:
            self.prep(1, 0)
            self.pieces.append(_pack_i8(value))
            self.offset += 1
            self.vtable[slot] = self.offset

    def end_object(self) -> int:
        self.prep(4, 0)
        soffset_index = len(self.pieces)
        self.pieces.append(b"")  # the object's offset to its vtable, filled in below
        self.offset += 4
        object_offset = self.offset
        vtable = self.vtable
        while vtable and not vtable[-1]:
            vtable.pop()
        key = tuple(object_offset - v if v else 0 for v in vtable)
        existing = self.vtables.get(key)
        if existing is None:
            # Voffsets are 2 bytes and the offset is 4-aligned here, so no padding goes in between.
            self.pieces.append(
                struct.pack(f"<{len(key) + 2}H", 2 * (len(key) + 2), object_offset - self.object_end, *key)
            )
            self.offset += 2 * (len(key) + 2)
            self.minalign = max(self.minalign, 2)
            existing = self.offset
            self.vtables[key] = existing
        self.pieces[soffset_index] = _pack_i32(existing - object_offset)
        return object_offset

    def finish(self, root: int) -> bytes:
        self.prep(self.minalign, 4)
        self.pieces.append(_pack_u32(self.offset + 4 - root))
        self.offset += 4
        self.pieces.reverse()
        return b"".join(self.pieces)


def marshal_ztoc(z: Ztoc) -> bytes:
    """The zTOC flatbuffer of ``z``, byte for byte what upstream's ``ztoc.Marshal`` writes."""
    algorithm = _ALGORITHM_TO_ENUM.get(z.compression_algorithm) if z.compression_algorithm else None
    if z.compression_algorithm and algorithm is None:
        raise FormatError(f"cannot marshal ztoc: unknown compression algorithm {z.compression_algorithm!r}")
    try:
        return _marshal(z, algorithm)
    except (struct.error, OverflowError, TypeError, UnicodeEncodeError) as exc:
        raise FormatError(f"cannot marshal ztoc: {exc}") from None


def _marshal(z: Ztoc, algorithm: int | None) -> bytes:
    b = _GoBuilder()
    version = b.create_string(_encode(z.version))
    build_tool = b.create_string(_encode(z.build_tool_identifier))

    entries = z.entries
    entry_offsets = [0] * len(entries)
    for index in range(len(entries) - 1, -1, -1):
        entry_offsets[index] = _write_entry(b, entries[index])
    metadata = b.create_offset_vector(entry_offsets)
    b.start_object(1)
    b.add_offset(0, metadata)
    toc = b.end_object()

    checkpoints = b.create_byte_vector(z.checkpoints)
    digest_offsets = [b.create_string(_encode(d)) for d in z.span_digests]
    span_digests = b.create_offset_vector(digest_offsets)
    b.start_object(_COMPRESSION_INFO_FIELDS)
    b.add_int32(1, z.max_span_id)
    b.add_offset(2, span_digests)
    b.add_offset(3, checkpoints)
    if algorithm is not None:
        b.add_int8(0, algorithm, _DEFAULT_ALGORITHM_ENUM)
    compression_info = b.end_object()

    b.start_object(_ZTOC_FIELDS)
    b.add_offset(0, version)
    b.add_offset(1, build_tool)
    b.add_offset(4, toc)
    b.add_int64(2, z.compressed_archive_size)
    b.add_int64(3, z.uncompressed_archive_size)
    b.add_offset(5, compression_info)
    return b.finish(b.end_object())


def _write_entry(b: _GoBuilder, e: FileMetadata) -> int:
    """One FileMetadata table and everything it references, in upstream's call order.

    This is the hot loop of marshalling, so the builder steps are inlined: inside the table the offset is
    always 4-aligned (strings, vectors, offsets and uint32s keep it so), hence only int64 fields can need
    padding, and it is then exactly 4 bytes.
    """
    pieces = b.pieces
    off = b.offset
    string_offsets = []
    for text in (e.name, _encode(e.type), e.linkname, e.uname, e.gname, _encode(e.mod_time)):
        n = len(text)
        pad = -(off + n + 1) & 3
        if pad:
            pieces.append(_ZEROS[:pad])
        pieces.append(_pack_u32(n) + text + b"\x00")
        off += pad + n + 5
        string_offsets.append(off)
    name, type_, linkname, uname, gname, mod_time = string_offsets

    if e.pax_records:
        b.offset = off
        xattr_offsets = []
        for record_key, record_value in _sorted_records(e.pax_records):
            key_offset = b.create_string(record_key)
            value_offset = b.create_string(record_value)
            b.start_object(2)
            b.add_offset(0, key_offset)
            b.add_offset(1, value_offset)
            xattr_offsets.append(b.end_object())
        xattrs = b.create_offset_vector(xattr_offsets)
        off = b.offset
    else:
        if off & 3:
            pieces.append(_ZEROS[: -off & 3])
            off += -off & 3
        pieces.append(_EMPTY_VECTOR)
        off += 4
        xattrs = off

    object_end = off
    fields: list[bytes] = []  # in write order; memory order is the reverse
    append = fields.append
    off += 4
    append(_pack_u32(off - name))
    slot_name = off
    off += 4
    append(_pack_u32(off - type_))
    slot_type = off
    wide = False
    slot_offset = slot_size = slot_mode = slot_uid = slot_gid = slot_devmajor = slot_devminor = 0
    if e.uncompressed_offset:
        if off & 7:
            append(_ZEROS4)
            off += 4
        off += 8
        append(_pack_i64(e.uncompressed_offset))
        slot_offset = off
        wide = True
    if e.uncompressed_size:
        if off & 7:
            append(_ZEROS4)
            off += 4
        off += 8
        append(_pack_i64(e.uncompressed_size))
        slot_size = off
        wide = True
    off += 4
    append(_pack_u32(off - linkname))
    slot_linkname = off
    if e.mode:
        if off & 7:
            append(_ZEROS4)
            off += 4
        off += 8
        append(_pack_i64(e.mode))
        slot_mode = off
        wide = True
    uid = e.uid & _UINT32_MASK
    if uid:
        off += 4
        append(_pack_u32(uid))
        slot_uid = off
    gid = e.gid & _UINT32_MASK
    if gid:
        off += 4
        append(_pack_u32(gid))
        slot_gid = off
    off += 4
    append(_pack_u32(off - uname))
    slot_uname = off
    off += 4
    append(_pack_u32(off - gname))
    slot_gname = off
    off += 4
    append(_pack_u32(off - mod_time))
    slot_mod_time = off
    if e.devmajor:
        if off & 7:
            append(_ZEROS4)
            off += 4
        off += 8
        append(_pack_i64(e.devmajor))
        slot_devmajor = off
        wide = True
    if e.devminor:
        if off & 7:
            append(_ZEROS4)
            off += 4
        off += 8
        append(_pack_i64(e.devminor))
        slot_devminor = off
        wide = True
    off += 4
    append(_pack_u32(off - xattrs))
    slot_xattrs = off

    off += 4  # the table's offset to its vtable
    obj = off
    key = (
        obj - slot_name,
        obj - slot_type,
        obj - slot_offset if slot_offset else 0,
        obj - slot_size if slot_size else 0,
        obj - slot_linkname,
        obj - slot_mode if slot_mode else 0,
        obj - slot_uid if slot_uid else 0,
        obj - slot_gid if slot_gid else 0,
        obj - slot_uname,
        obj - slot_gname,
        obj - slot_mod_time,
        obj - slot_devmajor if slot_devmajor else 0,
        obj - slot_devminor if slot_devminor else 0,
        obj - slot_xattrs,
    )
    existing = b.vtables.get(key)
    if existing is None:
        existing = off + _FILE_METADATA_VTABLE_BYTES
    fields.append(_pack_i32(existing - obj))
    fields.reverse()
    pieces.append(b"".join(fields))
    if existing > off:
        pieces.append(_pack_file_metadata_vtable(_FILE_METADATA_VTABLE_BYTES, obj - object_end, *key))
        off = existing
        b.vtables[key] = existing
    if wide and b.minalign < 8:
        b.minalign = 8
    b.offset = off
    return obj


def _sorted_records(records: Iterable[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    # Upstream keeps PAX records in a Go map: one value per key, written in ascending key order.
    return sorted(dict(records).items())


def _encode(text: str) -> bytes:
    # Strings read from a zTOC keep undecodable bytes as surrogates; writing them back restores the bytes.
    return text.encode("utf-8", "surrogateescape")


def unmarshal_ztoc(data: bytes | bytearray | memoryview) -> Ztoc:
    """Decode a zTOC as upstream's ``ztoc.Unmarshal`` does; FormatError for anything it would reject.

    Entries come back sorted by ``uncompressed_offset`` (stably) and must leave room for each entry's tar
    header, as upstream checks; span digests that do not parse become "" as upstream ignores the error.
    """
    buf = bytes(data)
    try:
        return TableReader(buf).ztoc()
    except FormatError:
        raise
    except (struct.error, IndexError, ValueError, OverflowError) as exc:
        raise FormatError(f"cannot unmarshal ztoc: {exc}") from None


_U32 = 0xFFFF_FFFF


class TableReader:
    """Table access with Go's offset arithmetic (uint32, wrapping) and explicit bounds on every slice.

    Reads through ``struct.unpack_from`` fail with struct.error past the end, and positions are masked to
    uint32 so they are never negative; slices, which Python would silently shorten, are checked here.
    """

    __slots__ = ("buf", "size", "vtables")

    def __init__(self, buf: bytes) -> None:
        self.buf = buf
        self.size = len(buf)
        self.vtables: dict[int, tuple[int, ...]] = {}

    def fields(self, table: int, count: int) -> tuple[int, ...]:
        """Offsets of the first ``count`` fields of the table at ``table`` (0 = absent)."""
        vtable = (table - _unpack_i32(self.buf, table)[0]) & _U32
        cached = self.vtables.get(vtable)
        if cached is not None and len(cached) >= count:
            return cached
        vtable_size = _unpack_u16(self.buf, vtable)[0]
        offsets = tuple(
            _unpack_u16(self.buf, vtable + 4 + 2 * i)[0] if 4 + 2 * i < vtable_size else 0 for i in range(count)
        )
        self.vtables[vtable] = offsets
        return offsets

    def string(self, table: int, field: int) -> bytes:
        if not field:
            return b""
        at = (table + field) & _U32
        return self.string_at((at + _unpack_u32(self.buf, at)[0]) & _U32)

    def string_at(self, start: int) -> bytes:
        end = start + 4 + _unpack_u32(self.buf, start)[0]
        if end > self.size:
            raise FormatError(f"cannot unmarshal ztoc: string at {start} runs past the end of the buffer")
        return self.buf[start + 4 : end]

    def vector(self, table: int, field: int, element_size: int) -> tuple[int, int]:
        """(position of the first element, element count) of a vector field; (0, 0) when absent."""
        if not field:
            return 0, 0
        at = (table + field) & _U32
        start = (at + _unpack_u32(self.buf, at)[0]) & _U32
        count = _unpack_u32(self.buf, start)[0]
        if start + 4 + count * element_size > self.size:
            raise FormatError(
                f"cannot unmarshal ztoc: vector of {count} elements at {start} runs past the end of the buffer"
            )
        return start + 4, count

    def table_at(self, element: int) -> int:
        """Position of the table an offset-vector element points to."""
        position: int = (element + _unpack_u32(self.buf, element)[0]) & _U32
        return position

    def child(self, table: int, field: int, what: str) -> int:
        if not field:
            raise FormatError(f"cannot unmarshal ztoc: missing {what}")
        return self.table_at((table + field) & _U32)

    def ztoc(self) -> Ztoc:
        buf = self.buf
        root = _unpack_u32(buf, 0)[0]
        f = self.fields(root, _ZTOC_FIELDS)
        version = self.string(root, f[0])
        build_tool = self.string(root, f[1])
        compressed_size = _unpack_i64(buf, root + f[2])[0] if f[2] else 0
        uncompressed_size = _unpack_i64(buf, root + f[3])[0] if f[3] else 0
        toc = self.child(root, f[4], "toc")
        info = self.child(root, f[5], "compression info")

        toc_fields = self.fields(toc, 1)
        first, count = self.vector(toc, toc_fields[0], 4)
        entries = [self.entry(self.table_at(first + 4 * i)) for i in range(count)]

        info_fields = self.fields(info, _COMPRESSION_INFO_FIELDS)
        algorithm_enum = _unpack_i8(buf, info + info_fields[0])[0] if info_fields[0] else _DEFAULT_ALGORITHM_ENUM
        algorithm = _ENUM_TO_ALGORITHM.get(algorithm_enum)
        if algorithm is None:
            raise FormatError(f"cannot unmarshal ztoc: unknown compression algorithm {algorithm_enum}")
        max_span_id = _unpack_i32(buf, info + info_fields[1])[0] if info_fields[1] else 0
        first, count = self.vector(info, info_fields[2], 4)
        span_digests = []
        for i in range(count):
            digest = self._vector_string(first + 4 * i)
            span_digests.append(digest if is_digest(digest) else "")
        first, count = self.vector(info, info_fields[3], 1)
        checkpoints = buf[first : first + count]

        entries.sort(key=_data_offset)
        _check_header_room(entries)
        return Ztoc(
            compressed_archive_size=compressed_size,
            uncompressed_archive_size=uncompressed_size,
            entries=tuple(entries),
            compression_algorithm=algorithm,
            max_span_id=max_span_id,
            span_digests=tuple(span_digests),
            checkpoints=checkpoints,
            version=_decode(version),
            build_tool_identifier=_decode(build_tool),
        )

    def _vector_string(self, element: int) -> str:
        start = self.table_at(element)
        end = start + 4 + _unpack_u32(self.buf, start)[0]
        if end > self.size:
            raise FormatError(f"cannot unmarshal ztoc: string at {start} runs past the end of the buffer")
        return _decode(self.buf[start + 4 : end])

    def entry(self, table: int) -> FileMetadata:
        buf = self.buf
        f = self.fields(table, _FILE_METADATA_FIELDS)
        string = self.string
        pax_records: tuple[tuple[bytes, bytes], ...] = ()
        if f[13]:
            first, count = self.vector(table, f[13], 4)
            if count:
                records = []
                for i in range(count):
                    xattr = self.table_at(first + 4 * i)
                    xf = self.fields(xattr, 2)
                    records.append((string(xattr, xf[0]), string(xattr, xf[1])))
                if any(records[i][0] >= records[i + 1][0] for i in range(count - 1)):
                    records = _sorted_records(records)  # upstream reads them into a map
                pax_records = tuple(records)
        return FileMetadata(
            string(table, f[0]),
            _decode(string(table, f[1])),
            _unpack_i64(buf, table + f[2])[0] if f[2] else 0,
            _unpack_i64(buf, table + f[3])[0] if f[3] else 0,
            string(table, f[4]),
            _unpack_i64(buf, table + f[5])[0] if f[5] else 0,
            _unpack_u32(buf, table + f[6])[0] if f[6] else 0,
            _unpack_u32(buf, table + f[7])[0] if f[7] else 0,
            string(table, f[8]),
            string(table, f[9]),
            _decode(string(table, f[10])),
            _unpack_i64(buf, table + f[11])[0] if f[11] else 0,
            _unpack_i64(buf, table + f[12])[0] if f[12] else 0,
            pax_records,
        )


def _data_offset(e: FileMetadata) -> int:
    return e.uncompressed_offset


def _check_header_room(entries: list[FileMetadata]) -> None:
    """Each entry's header must fit between the previous entry's padded data and its own data."""
    next_header = 0
    for e in entries:
        if next_header > e.uncompressed_offset:
            raise FormatError(
                f"cannot unmarshal ztoc: invalid toc entry {e.name!r}: data offset "
                f"{e.uncompressed_offset} is before the end of the previous entry ({next_header})"
            )
        end = e.uncompressed_offset + e.uncompressed_size
        next_header = end + (-end % TAR_BLOCK_SIZE)


def _decode(raw: bytes) -> str:
    return raw.decode("utf-8", "surrogateescape")

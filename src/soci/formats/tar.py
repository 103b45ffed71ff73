"""TOC of a tar stream with the semantics of Go's ``archive/tar`` Reader, as upstream SOCI builds it.

``TocBuilder`` is a push parser: feed it the decompressed layer in chunks of any size. It copies only
header blocks and PAX/GNU meta data, and skips entry data by counting, so a layer never needs to fit in
memory. Every field of the resulting ``FileMetadata`` is what upstream's TOC builder takes from Go's
``tar.Header`` (soci-format.md §3.2), including where Go's reader leaves its stream position.

Names are recorded verbatim, as upstream records them, even when absolute or climbing out with ``..``: the
zTOC must list every entry, and whatever serves the layer cleans each name against the layer root (so no name
can reach outside it). By default (``strict=True``) one thing upstream accepts is refused: GNU sparse files in
PAX form, whose holes a zTOC cannot describe (upstream records them, then serves the wrong bytes for them).
``strict=False`` records them exactly as upstream does, for byte-identical zTOCs of such layers.
"""

from __future__ import annotations

import datetime
import re
from dataclasses import dataclass

from soci.errors import FormatError, UnsupportedEntry
from soci.formats.gotime import format_go_time
from soci.formats.ztoc import (
    TYPE_BLOCK,
    TYPE_CHAR,
    TYPE_DIR,
    TYPE_FIFO,
    TYPE_HARDLINK,
    TYPE_REG,
    TYPE_SYMLINK,
    FileMetadata,
)

BLOCK_SIZE = 512
# Go's limit on a PAX extended header or GNU long name/link; larger ones are an error.
MAX_SPECIAL_FILE_SIZE = 1 << 20

_ZERO_BLOCK = bytes(BLOCK_SIZE)
_TIME_CACHE_LIMIT = 1 << 14
_UINT32_MASK = 0xFFFF_FFFF
_INT64_MIN = -(1 << 63)
_INT64_MAX = (1 << 63) - 1

_TYPE_REGA = 0  # legacy regular file: reg, or dir when the name ends in "/"
_TYPE_XHEADER = ord("x")
_TYPE_XGLOBAL = ord("g")
_TYPE_LONGNAME = ord("L")
_TYPE_LONGLINK = ord("K")
_TYPE_NAMES = {
    ord("0"): TYPE_REG,
    ord("1"): TYPE_HARDLINK,
    ord("2"): TYPE_SYMLINK,
    ord("3"): TYPE_CHAR,
    ord("4"): TYPE_BLOCK,
    ord("5"): TYPE_DIR,
    ord("6"): TYPE_FIFO,
}
# Types whose header size says nothing about data: Go reads no data for them whatever the size field says.
_HEADER_ONLY_TYPES = frozenset(ord(c) for c in "123456")

_MAGIC_USTAR = b"ustar\x00"
_MAGIC_GNU = b"ustar "
_VERSION_GNU = b" \x00"
_TRAILER_STAR = b"tar\x00"

_FORMAT_V7 = "v7"
_FORMAT_USTAR = "ustar"  # also PAX: same magic
_FORMAT_GNU = "gnu"
_FORMAT_STAR = "star"

_PAX_PATH = b"path"
_PAX_LINKPATH = b"linkpath"
_PAX_UNAME = b"uname"
_PAX_GNAME = b"gname"
_PAX_STRING_KEYS = frozenset((_PAX_PATH, _PAX_LINKPATH, _PAX_UNAME, _PAX_GNAME))
_PAX_SPARSE_OFFSET = b"GNU.sparse.offset"
_PAX_SPARSE_NUMBYTES = b"GNU.sparse.numbytes"
_PAX_SPARSE_MAP = b"GNU.sparse.map"
_PAX_SPARSE_MAJOR = b"GNU.sparse.major"
_PAX_SPARSE_MINOR = b"GNU.sparse.minor"

_OCTAL_RE = re.compile(rb"[0-7]+")
_DECIMAL_RE = re.compile(rb"[+-]?[0-9]+")
_DIGITS_RE = re.compile(rb"[0-9]*")
_HIGH_BYTES = bytes(range(0x80, 0x100))


@dataclass(frozen=True, slots=True)
class TocResult:
    """Entries in stream order, and the stream position at which Go's reader reports end of archive."""

    entries: list[FileMetadata]
    uncompressed_archive_size: int


class _HeaderError(Exception):
    """A header field Go's parser rejects; turned into a FormatError with the block's offset."""


class _Header:
    __slots__ = (
        "devmajor",
        "devminor",
        "gid",
        "gname",
        "linkname",
        "mode",
        "mtime",
        "name",
        "size",
        "typeflag",
        "uid",
        "uname",
    )

    def __init__(self) -> None:
        self.name = b""
        self.linkname = b""
        self.typeflag = 0
        self.size = 0
        self.mode = 0
        self.uid = 0
        self.gid = 0
        self.mtime = (0, 0)
        self.uname = b""
        self.gname = b""
        self.devmajor = 0
        self.devminor = 0


class _SparseMap:
    """A GNU sparse 1.0 entry whose map (at the start of its data) is still being read."""

    __slots__ = ("buf", "data_left", "data_size", "hdr", "offset", "pax", "type_name", "wanted")

    def __init__(self, hdr: _Header, type_name: str, pax: dict[bytes, bytes], data_size: int, offset: int) -> None:
        self.hdr = hdr
        self.type_name = type_name
        self.pax = pax
        self.data_size = data_size  # the entry's stored (dense) size, map included
        self.data_left = data_size
        self.offset = offset
        self.buf = bytearray()
        self.wanted = 1  # newlines needed before parsing can go on: first the entry count, then the pairs


class TocBuilder:
    """Push parser: ``feed`` decompressed tar bytes in order, then ``finish`` for the TOC.

    ``tz`` is the zone ``mod_time`` strings are rendered in; None means the local zone, as upstream's
    builder does (Go's ``time.Unix``). ``strict=False`` accepts what upstream accepts (see the module
    docstring) so that the zTOC is byte-identical to upstream's for any layer upstream can index.
    """

    def __init__(self, *, tz: datetime.tzinfo | None = None, strict: bool = True) -> None:
        self._tz = tz
        self._strict = strict
        self._sparse: _SparseMap | None = None
        self._time_texts: dict[tuple[int, int], str] = {}  # most entries of a layer share a few mtimes
        self._entries: list[FileMetadata] = []
        self._pos = 0  # bytes of the stream consumed so far
        self._skip = 0  # bytes still to pass over: entry data, then block padding
        self._data_end = 0  # stream offset where the current entry's data ends (EOF before it = truncated)
        self._partial = bytearray()  # a header block split across feeds
        self._after_zero_block = False
        self._done = False  # two zero blocks seen: the rest of the stream is not part of the archive
        self._finished = False
        self._error: FormatError | None = None
        # Meta entry (PAX 'x', GNU 'L'/'K') whose data is being collected.
        self._meta_type = 0
        self._meta_left = 0
        self._meta_pad = 0
        self._meta_offset = 0
        self._meta_buf = bytearray()
        # What the meta entries say about the next real entry.
        self._pax: dict[bytes, bytes] | None = None
        self._long_name = b""
        self._long_link = b""

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        """Consume the next chunk of the decompressed tar stream."""
        if self._error is not None:
            raise self._error
        if self._finished:
            raise FormatError("tar: feed after finish")
        view = memoryview(data)
        if view.format != "B" or view.ndim != 1:
            view = view.cast("B")
        try:
            self._consume(view)
        except FormatError as exc:
            self._error = exc
            raise

    def finish(self) -> TocResult:
        """End of the stream: the TOC, or FormatError if the archive stops where Go's reader would fail."""
        if self._error is not None:
            raise self._error
        self._finished = True
        if not self._done:
            if self._partial:
                self._fail(
                    FormatError(
                        f"tar: archive truncated inside the header block at offset {self._pos - len(self._partial)}"
                    )
                )
            if self._meta_left:
                self._fail(
                    FormatError(
                        f"tar: archive truncated inside the extended header at offset "
                        f"{self._meta_offset}: {self._meta_left} bytes missing"
                    )
                )
            if self._sparse is not None:
                self._fail(
                    FormatError(
                        f"tar: archive truncated inside the sparse map of entry "
                        f"{self._sparse.hdr.name!r} at offset {self._sparse.offset}"
                    )
                )
            if self._skip and self._pos < self._data_end:
                name = self._entries[-1].name if self._entries else b""
                self._fail(
                    FormatError(
                        f"tar: archive truncated inside the data of entry {name!r}: "
                        f"{self._data_end - self._pos} bytes missing at offset {self._pos}"
                    )
                )
        # Go stops at the end-of-archive marker, or reports a clean EOF at a block boundary or in padding.
        return TocResult(entries=self._entries, uncompressed_archive_size=self._pos)

    def _time_text(self, mtime: tuple[int, int]) -> str:
        text = self._time_texts.get(mtime)
        if text is None:
            if len(self._time_texts) >= _TIME_CACHE_LIMIT:
                self._time_texts.clear()
            text = self._time_texts[mtime] = format_go_time(mtime[0], mtime[1], self._tz)
        return text

    def _fail(self, exc: FormatError) -> None:
        self._error = exc
        raise exc

    def _consume(self, view: memoryview) -> None:
        i = 0
        n = len(view)
        while i < n:
            if self._done:
                return
            if self._skip:
                take = min(self._skip, n - i)
                i += take
                self._pos += take
                self._skip -= take
                continue
            if self._meta_left:
                take = min(self._meta_left, n - i)
                self._meta_buf += view[i : i + take]
                i += take
                self._pos += take
                self._meta_left -= take
                if not self._meta_left:
                    self._end_meta()
                continue
            if not self._partial and n - i >= BLOCK_SIZE:
                block = bytes(view[i : i + BLOCK_SIZE])
                i += BLOCK_SIZE
                self._pos += BLOCK_SIZE
            else:
                take = min(BLOCK_SIZE - len(self._partial), n - i)
                self._partial += view[i : i + take]
                i += take
                self._pos += take
                if len(self._partial) < BLOCK_SIZE:
                    continue
                block = bytes(self._partial)
                self._partial.clear()
            if self._sparse is not None:
                self._on_sparse_block(block)
            else:
                self._on_block(block, self._pos - BLOCK_SIZE)

    def _on_block(self, block: bytes, offset: int) -> None:
        if block == _ZERO_BLOCK:
            if self._after_zero_block:
                self._done = True
            self._after_zero_block = True
            return
        if self._after_zero_block:
            raise FormatError(
                f"tar: non-zero block at offset {offset} after the zero block at offset "
                f"{offset - BLOCK_SIZE}; want a second zero block or the end of the archive"
            )
        try:
            hdr = _parse_header(block)
        except _HeaderError as exc:
            raise FormatError(f"tar: invalid header block at offset {offset}: {exc}") from None
        flag = hdr.typeflag
        if flag in (_TYPE_XHEADER, _TYPE_LONGNAME, _TYPE_LONGLINK):
            self._begin_meta(hdr, offset)
        elif flag == _TYPE_XGLOBAL:
            raise UnsupportedEntry(
                f"unsupported input tar entry {hdr.name!r} at offset {offset}: typeflag 'g' (PAX global header)"
            )
        else:
            self._add_entry(hdr, offset)

    def _begin_meta(self, hdr: _Header, offset: int) -> None:
        if hdr.size < 0:
            raise FormatError(f"tar: meta entry {hdr.name!r} at offset {offset} has negative size {hdr.size}")
        if hdr.size > MAX_SPECIAL_FILE_SIZE:
            raise FormatError(
                f"tar: meta entry {hdr.name!r} at offset {offset} is {hdr.size} bytes, "
                f"over the {MAX_SPECIAL_FILE_SIZE}-byte limit"
            )
        self._meta_type = hdr.typeflag
        self._meta_left = hdr.size
        self._meta_pad = -hdr.size % BLOCK_SIZE
        self._meta_offset = offset
        self._meta_buf = bytearray()
        if not hdr.size:
            self._end_meta()

    def _end_meta(self) -> None:
        data = bytes(self._meta_buf)
        self._meta_buf = bytearray()
        if self._meta_type == _TYPE_XHEADER:
            try:
                self._pax = _parse_pax(data)
            except _HeaderError as exc:
                raise FormatError(f"tar: invalid PAX extended header at offset {self._meta_offset}: {exc}") from None
        elif self._meta_type == _TYPE_LONGNAME:
            self._long_name = _c_string(data)
        else:
            self._long_link = _c_string(data)
        self._skip = self._meta_pad
        self._data_end = self._pos

    def _add_entry(self, hdr: _Header, offset: int) -> None:
        if hdr.size < 0 and hdr.typeflag not in _HEADER_ONLY_TYPES:
            # Go checks the header's own size before any PAX size record replaces it.
            raise FormatError(f"tar: entry {hdr.name!r} at offset {offset} has negative size {hdr.size}")
        pax = self._pax
        if pax is not None:
            try:
                _merge_pax(hdr, pax)
            except _HeaderError as exc:
                raise FormatError(f"tar: invalid PAX record for entry {hdr.name!r} at offset {offset}: {exc}") from None
        if self._long_name:
            hdr.name = self._long_name
        if self._long_link:
            hdr.linkname = self._long_link
        self._pax = None
        self._long_name = b""
        self._long_link = b""

        flag = hdr.typeflag
        if flag == _TYPE_REGA:
            flag = ord("5") if hdr.name.endswith(b"/") else ord("0")
        type_name = _TYPE_NAMES.get(flag)
        if type_name is None:
            raise UnsupportedEntry(
                f"unsupported input tar entry {hdr.name!r} at offset {offset}: typeflag {chr(flag)!r}"
            )
        data_size = 0 if flag in _HEADER_ONLY_TYPES else hdr.size
        if data_size < 0:
            raise FormatError(f"tar: entry {hdr.name!r} at offset {offset} has negative size {hdr.size}")
        if self._strict:
            if pax is not None and _is_pax_sparse(pax):
                name = pax.get(b"GNU.sparse.name") or hdr.name
                raise UnsupportedEntry(
                    f"unsupported input tar entry {name!r} at offset {offset}: GNU sparse file in PAX format"
                )
        elif pax is not None and _is_pax_sparse(pax):
            self._begin_sparse(hdr, type_name, pax, flag, data_size, offset)
            return
        self._append(hdr, type_name, pax, data_size, data_size)

    def _append(
        self, hdr: _Header, type_name: str, pax: dict[bytes, bytes] | None, data_left: int, data_size: int
    ) -> None:
        """Record the entry whose data starts here; ``data_left`` of its ``data_size`` stored bytes follow."""
        self._entries.append(
            FileMetadata(
                name=hdr.name,
                type=type_name,
                uncompressed_offset=self._pos,
                uncompressed_size=hdr.size,
                linkname=hdr.linkname,
                mode=hdr.mode,
                uid=hdr.uid & _UINT32_MASK,
                gid=hdr.gid & _UINT32_MASK,
                uname=hdr.uname,
                gname=hdr.gname,
                mod_time=self._time_text(hdr.mtime),
                devmajor=hdr.devmajor,
                devminor=hdr.devminor,
                pax_records=tuple(sorted(pax.items())) if pax else (),
            )
        )
        self._data_end = self._pos + data_left
        self._skip = data_left + (-data_size % BLOCK_SIZE)

    def _begin_sparse(
        self, hdr: _Header, type_name: str, pax: dict[bytes, bytes], flag: int, data_size: int, offset: int
    ) -> None:
        """Go's reading of a GNU sparse file in PAX form (``readGNUSparsePAXHeaders``), as upstream records it.

        The entry gets its real name and size from the GNU.sparse records; format 1.0 keeps its map in front
        of the data, so the recorded data offset is after that map.
        """
        if flag in _HEADER_ONLY_TYPES:
            raise FormatError(f"tar: {type_name} entry {hdr.name!r} at offset {offset} has a GNU sparse map")
        if pax.get(b"GNU.sparse.name"):
            hdr.name = pax[b"GNU.sparse.name"]
        real_size = pax.get(b"GNU.sparse.size") or pax.get(b"GNU.sparse.realsize")
        if real_size:
            try:
                hdr.size = _parse_go_int(b"GNU.sparse.size", real_size)
            except _HeaderError as exc:
                raise FormatError(
                    f"tar: invalid GNU sparse record for entry {hdr.name!r} at offset {offset}: {exc}"
                ) from None
        if (pax.get(_PAX_SPARSE_MAJOR), pax.get(_PAX_SPARSE_MINOR)) == (b"1", b"0"):
            self._sparse = _SparseMap(hdr, type_name, pax, data_size, offset)
            self._need_sparse_block()
            return
        try:
            regions = _sparse_map_0x(pax)
        except _HeaderError as exc:
            raise FormatError(f"tar: invalid GNU sparse map for entry {hdr.name!r} at offset {offset}: {exc}") from None
        if not _valid_sparse_regions(regions, hdr.size):
            raise FormatError(f"tar: invalid GNU sparse map for entry {hdr.name!r} at offset {offset}")
        self._append(hdr, type_name, pax, data_size, data_size)

    def _need_sparse_block(self) -> None:
        sparse = self._sparse
        assert sparse is not None
        if sparse.data_left < BLOCK_SIZE:
            raise FormatError(
                f"tar: sparse map of entry {sparse.hdr.name!r} at offset {sparse.offset} runs past its data"
            )
        if len(sparse.buf) + BLOCK_SIZE > MAX_SPECIAL_FILE_SIZE:
            raise FormatError(
                f"tar: sparse map of entry {sparse.hdr.name!r} at offset {sparse.offset} is over the "
                f"{MAX_SPECIAL_FILE_SIZE}-byte limit"
            )

    def _on_sparse_block(self, block: bytes) -> None:
        """One more block of a sparse 1.0 map: newline-terminated decimal count, then offset/length pairs."""
        sparse = self._sparse
        assert sparse is not None
        sparse.buf += block
        sparse.data_left -= BLOCK_SIZE
        name, offset = sparse.hdr.name, sparse.offset
        lines = sparse.buf.count(b"\n")
        if lines < sparse.wanted:
            self._need_sparse_block()
            return
        tokens = bytes(sparse.buf).split(b"\n")
        if sparse.wanted == 1:
            count = tokens[0]
            if _DECIMAL_RE.fullmatch(count) is None or int(count) < 0 or int(count) > _INT64_MAX // 2:
                raise FormatError(f"tar: bad entry count {count!r} in the sparse map of {name!r} at offset {offset}")
            sparse.wanted = 1 + 2 * int(count)
            if lines < sparse.wanted:
                self._need_sparse_block()
                return
        numbers = tokens[1 : sparse.wanted]
        if len(numbers) // 2 > 1 << 20:
            raise FormatError(f"tar: sparse map of {name!r} at offset {offset} has too many entries")
        try:
            values = [_parse_go_int(b"GNU sparse map", token) for token in numbers]
        except _HeaderError as exc:
            raise FormatError(f"tar: invalid sparse map of {name!r} at offset {offset}: {exc}") from None
        regions = list(zip(values[0::2], values[1::2], strict=True))
        if not _valid_sparse_regions(regions, sparse.hdr.size):
            raise FormatError(f"tar: invalid GNU sparse map for entry {name!r} at offset {offset}")
        self._sparse = None
        self._append(sparse.hdr, sparse.type_name, sparse.pax, sparse.data_left, sparse.data_size)


def _parse_header(block: bytes) -> _Header:
    """Decode one header block as Go's ``readHeader`` does; raises _HeaderError where Go returns ErrHeader."""
    _check_checksum(block)
    magic = block[257:263]
    if magic == _MAGIC_USTAR:
        fmt = _FORMAT_STAR if block[508:512] == _TRAILER_STAR else _FORMAT_USTAR
    elif magic == _MAGIC_GNU and block[263:265] == _VERSION_GNU:
        fmt = _FORMAT_GNU
    else:
        fmt = _FORMAT_V7

    # Numeric fields repeat from entry to entry (modes, ids, times), so decoded values are memoised.
    get = _NUMERIC_CACHE.get
    hdr = _Header()
    hdr.typeflag = block[156]
    hdr.name = _c_string(block[0:100])
    hdr.linkname = _c_string(block[157:257])
    field = block[124:136]
    value = get(field)
    hdr.size = _numeric(field) if value is None else value
    field = block[100:108]
    value = get(field)
    hdr.mode = _numeric(field) if value is None else value
    field = block[108:116]
    value = get(field)
    hdr.uid = _numeric(field) if value is None else value
    field = block[116:124]
    value = get(field)
    hdr.gid = _numeric(field) if value is None else value
    field = block[136:148]
    value = get(field)
    hdr.mtime = (_numeric(field) if value is None else value, 0)
    if fmt == _FORMAT_V7:
        return hdr

    hdr.uname = _c_string(block[265:297])
    hdr.gname = _c_string(block[297:329])
    field = block[329:337]
    value = get(field)
    hdr.devmajor = _numeric(field) if value is None else value
    field = block[337:345]
    value = get(field)
    hdr.devminor = _numeric(field) if value is None else value
    prefix = b""
    if fmt == _FORMAT_USTAR:
        prefix = _c_string(block[345:500])
    elif fmt == _FORMAT_STAR:
        prefix = _c_string(block[345:476])
        _parse_numeric(block[476:488])  # access and change times: only validated, as in Go
        _parse_numeric(block[488:500])
    else:
        # Go falls back to a USTAR prefix when the GNU atime/ctime fields do not parse (files written by
        # Go before 1.8 put a prefix there).
        try:
            if block[345]:
                _parse_numeric(block[345:357])
            if block[357]:
                _parse_numeric(block[357:369])
        except _HeaderError:
            candidate = _c_string(block[345:500])
            if candidate.isascii():
                prefix = candidate
    if prefix:
        hdr.name = prefix + b"/" + hdr.name
    return hdr


def _check_checksum(block: bytes) -> None:
    try:
        recorded = _parse_octal(block[148:156])
    except _HeaderError:
        raise _HeaderError("checksum field is not octal") from None
    # The checksum field counts as eight spaces; Go accepts sums of unsigned or of signed bytes.
    unsigned = sum(block) - sum(block[148:156]) + 8 * 0x20
    if recorded == unsigned:
        return
    outside = block[:148] + block[156:]
    high = len(outside) - len(outside.translate(None, _HIGH_BYTES))
    if recorded != unsigned - 256 * high:
        raise _HeaderError(f"checksum {recorded} does not match the computed {unsigned}")


def _c_string(field: bytes) -> bytes:
    nul = field.find(b"\x00")
    return field if nul < 0 else field[:nul]


_NUMERIC_CACHE: dict[bytes, int] = {}
_NUMERIC_CACHE_LIMIT = 1 << 16


def _numeric(field: bytes) -> int:
    """_parse_numeric, remembering the result for identical field bytes."""
    value = _parse_numeric(field)
    if len(_NUMERIC_CACHE) >= _NUMERIC_CACHE_LIMIT:
        _NUMERIC_CACHE.clear()
    _NUMERIC_CACHE[field] = value
    return value


def _parse_numeric(field: bytes) -> int:
    """A numeric header field: base-256 when the top bit of the first byte is set, else octal."""
    first = field[0]
    if not first & 0x80:
        return _parse_octal(field)
    inv = 0xFF if first & 0x40 else 0
    x = 0
    for index, c in enumerate(field):
        c ^= inv
        if index == 0:
            c &= 0x7F
        if x >> 56:
            raise _HeaderError("base-256 number overflows 64 bits")
        x = (x << 8) | c
    if x >> 63:
        raise _HeaderError("base-256 number overflows 64 bits")
    return ~x if inv else x


def _parse_octal(field: bytes) -> int:
    text = _c_string(field.strip(b" \x00"))
    if not text:
        return 0
    if _OCTAL_RE.fullmatch(text) is None:
        raise _HeaderError(f"numeric field {field!r} is not octal")
    value = int(text, 8)
    if value >> 64:
        raise _HeaderError(f"numeric field {field!r} overflows 64 bits")
    return value - (1 << 64) if value >> 63 else value  # Go converts the uint64 to int64


def _parse_pax(data: bytes) -> dict[bytes, bytes]:
    """Records of a PAX extended header (later duplicates win), as Go's ``parsePAX``."""
    records: dict[bytes, bytes] = {}
    sparse_map: list[bytes] = []
    pos = 0
    end = len(data)
    while pos < end:
        space = data.find(b" ", pos)
        if space < 0:
            raise _HeaderError(f"record at byte {pos} has no length")
        length_text = data[pos:space]
        if _DECIMAL_RE.fullmatch(length_text) is None:
            raise _HeaderError(f"record at byte {pos} has a bad length {length_text!r}")
        length = int(length_text)
        if length < 5 or length > end - pos or length <= space - pos + 1:
            raise _HeaderError(f"record at byte {pos} has an impossible length {length}")
        record_end = pos + length
        if data[record_end - 1] != 0x0A:
            raise _HeaderError(f"record at byte {pos} does not end in a newline")
        key, eq, value = data[space + 1 : record_end - 1].partition(b"=")
        if not eq or not key:
            raise _HeaderError(f"record at byte {pos} is not key=value")
        if b"\x00" in (value if key in _PAX_STRING_KEYS else key):
            raise _HeaderError(f"record {key!r} contains a NUL byte")
        if key in (_PAX_SPARSE_OFFSET, _PAX_SPARSE_NUMBYTES):
            # GNU sparse 0.0 pairs, which Go folds into one GNU.sparse.map record.
            want = _PAX_SPARSE_OFFSET if len(sparse_map) % 2 == 0 else _PAX_SPARSE_NUMBYTES
            if key != want or b"," in value:
                raise _HeaderError(f"GNU sparse record {key!r} out of order")
            sparse_map.append(value)
        else:
            records[key] = value
        pos = record_end
    if sparse_map:
        records[_PAX_SPARSE_MAP] = b",".join(sparse_map)
    return records


def _merge_pax(hdr: _Header, pax: dict[bytes, bytes]) -> None:
    """Apply the PAX records Go's ``mergePAX`` applies; an empty value keeps the header's own field."""
    for key, value in pax.items():
        if not value:
            continue
        if key == _PAX_PATH:
            hdr.name = value
        elif key == _PAX_LINKPATH:
            hdr.linkname = value
        elif key == _PAX_UNAME:
            hdr.uname = value
        elif key == _PAX_GNAME:
            hdr.gname = value
        elif key == b"uid":
            hdr.uid = _parse_go_int(key, value)
        elif key == b"gid":
            hdr.gid = _parse_go_int(key, value)
        elif key == b"size":
            hdr.size = _parse_go_int(key, value)
        elif key == b"mtime":
            hdr.mtime = _parse_pax_time(value)
        elif key in (b"atime", b"ctime"):
            _parse_pax_time(value)  # not kept, but Go rejects the entry when it does not parse


def _parse_go_int(key: bytes, value: bytes) -> int:
    if _DECIMAL_RE.fullmatch(value) is None:
        raise _HeaderError(f"{key.decode()}={value!r} is not a decimal integer")
    number = int(value)
    if not _INT64_MIN <= number <= _INT64_MAX:
        raise _HeaderError(f"{key.decode()}={value!r} overflows 64 bits")
    return number


def _parse_pax_time(value: bytes) -> tuple[int, int]:
    """Go's ``parsePAXTime``: "<seconds>[.<fraction>]", seconds may be negative; (seconds, nanoseconds)."""
    whole, _, fraction = value.partition(b".")
    seconds = _parse_go_int(b"time", whole)
    if not fraction:
        return seconds, 0
    if _DIGITS_RE.fullmatch(fraction) is None:
        raise _HeaderError(f"time {value!r} has a non-digit fraction")
    nanoseconds = int(fraction[:9].ljust(9, b"0"))
    if whole.startswith(b"-"):
        nanoseconds = -nanoseconds
    extra, nanoseconds = divmod(nanoseconds, 1_000_000_000)
    return seconds + extra, nanoseconds


def _is_pax_sparse(pax: dict[bytes, bytes]) -> bool:
    """Whether Go would read this entry as a GNU sparse file (``readGNUSparsePAXHeaders``)."""
    major = pax.get(_PAX_SPARSE_MAJOR, b"")
    minor = pax.get(_PAX_SPARSE_MINOR, b"")
    if (major == b"0" and minor in (b"0", b"1")) or (major == b"1" and minor == b"0"):
        return True
    if major or minor:
        return False
    return bool(pax.get(_PAX_SPARSE_MAP))


def _sparse_map_0x(pax: dict[bytes, bytes]) -> list[tuple[int, int]]:
    """(offset, length) data regions of GNU sparse format 0.0/0.1, kept in PAX records (Go's 0x1 reader)."""
    count_text = pax.get(b"GNU.sparse.numblocks", b"")
    if _DECIMAL_RE.fullmatch(count_text) is None or not 0 <= int(count_text) <= _INT64_MAX // 2:
        raise _HeaderError(f"GNU.sparse.numblocks={count_text!r} is not a count")
    raw = pax.get(_PAX_SPARSE_MAP, b"")
    fields = raw.split(b",") if raw else []
    if len(fields) != 2 * int(count_text):
        raise _HeaderError(f"GNU.sparse.map has {len(fields)} numbers for {int(count_text)} regions")
    if len(fields) // 2 > 1 << 20:
        raise _HeaderError("GNU.sparse.map has too many regions")
    values = [_parse_go_int(b"GNU.sparse.map", field) for field in fields]
    return list(zip(values[0::2], values[1::2], strict=True))


def _valid_sparse_regions(regions: list[tuple[int, int]], size: int) -> bool:
    """Go's validateSparseEntries: ordered, non-overlapping, non-negative regions inside the file size."""
    if size < 0:
        return False
    previous_end = 0
    for start, length in regions:
        if start < 0 or length < 0 or start > _INT64_MAX - length or start + length > size or previous_end > start:
            return False
        previous_end = start + length
    return True

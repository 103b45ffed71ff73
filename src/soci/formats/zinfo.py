"""zInfo: the checkpoint table stored in a zTOC, and the span <-> byte-range arithmetic built on it.

Two payloads exist, chosen by the layer's compression algorithm:

* ``GzipZinfo`` (gzip layers): upstream's packed little-endian blob
  ``int32 N | int64 span_size | N x (int64 in, int64 out, uint8 bits, 32 KiB window)``.
  There is no version field; the version is inferred from the length (v1 omits checkpoint 0).
* ``TarZinfo`` (uncompressed layers): a FlatBuffer ``zinfo.TarZinfo{version, span_size, size}``
  describing fixed-size spans.

Pure: no I/O, never decompresses (soci.codec.zran does that).

The FlatBuffers code in ``soci/formats/_fbs/zinfo/`` is generated from ``schemas/zinfo.fbs`` with Debian's
flatc 2.0.8 and committed; regenerate it from the repository root with::

    tmp=$(mktemp -d) && flatc --python -o "$tmp" schemas/zinfo.fbs \\
      && rm -rf src/soci/formats/_fbs/zinfo && cp -r "$tmp/zinfo" src/soci/formats/_fbs/zinfo && rm -rf "$tmp"

(the generated module has no cross-module imports, so no import rewriting is needed).
"""

from __future__ import annotations

import struct
from bisect import bisect_right
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import flatbuffers

from soci.errors import FormatError, InvalidArgument
from soci.formats._fbs.zinfo import TarZinfo as _generated

WINDOW_SIZE = 32768
BLOB_HEADER_SIZE = 12  # int32 checkpoint count + int64 span size
CHECKPOINT_RECORD_SIZE = 8 + 8 + 1 + WINDOW_SIZE
ZINFO_VERSION_ONE = 1
ZINFO_VERSION_TWO = 2
ZINFO_VERSION_CURRENT = ZINFO_VERSION_TWO
TAR_ZINFO_VERSION = 2

ALGORITHM_GZIP = "gzip"
ALGORITHM_UNCOMPRESSED = "uncompressed"
ALGORITHM_UNKNOWN = "unknown"  # containerd's name for Docker's plain-tar media type; upstream treats it as tar
ALGORITHM_ZSTD = "zstd"

# Where a v1 blob's unserialised checkpoint 0 sat: right after a bare 10-byte gzip header.
_V1_FIRST_IN = 10

_HEADER = struct.Struct("<iq")
_RECORD_HEAD = struct.Struct("<qqB")
_ZERO_WINDOW = bytes(WINDOW_SIZE)
_fb: Any = _generated  # flatc output is untyped


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """Inflate state at a deflate block boundary.

    ``compressed_offset`` is upstream's ``in`` (first whole byte after the boundary), ``uncompressed_offset``
    its ``out``; ``bits`` (0..7) of the byte before ``compressed_offset`` still belong to the next block;
    ``window`` is the 32 KiB of uncompressed data preceding ``uncompressed_offset``.
    """

    compressed_offset: int
    uncompressed_offset: int
    bits: int
    window: bytes


class GzipZinfo:
    """Checkpoint table of a gzip layer, backed by its serialised blob (windows are sliced on demand)."""

    __slots__ = ("_bits", "_blob", "_ins", "_outs", "_records_start", "_span_size", "_version")

    def __init__(
        self,
        blob: bytes,
        version: int,
        span_size: int,
        ins: Sequence[int],
        outs: Sequence[int],
        bits: Sequence[int],
    ) -> None:
        """Internal: use from_blob() or from_checkpoints()."""
        self._blob = blob
        self._version = version
        self._span_size = span_size
        self._ins = tuple(ins)
        self._outs = tuple(outs)
        self._bits = tuple(bits)
        # A v1 blob's first stored record is checkpoint 1.
        self._records_start = BLOB_HEADER_SIZE - (CHECKPOINT_RECORD_SIZE if version == ZINFO_VERSION_ONE else 0)

    @classmethod
    def from_blob(cls, blob: bytes | bytearray | memoryview) -> GzipZinfo:
        """Parse a gzip zinfo blob, inferring v1/v2 from its length as upstream does."""
        data = bytes(blob)
        if not data:
            raise FormatError("gzip zinfo: empty checkpoints blob")
        if len(data) < BLOB_HEADER_SIZE:
            raise FormatError(f"gzip zinfo: {len(data)}-byte blob is shorter than its {BLOB_HEADER_SIZE}-byte header")
        count, span_size = _HEADER.unpack_from(data)
        claimed = BLOB_HEADER_SIZE + CHECKPOINT_RECORD_SIZE * count
        if count >= 0 and claimed == len(data):
            version, stored = ZINFO_VERSION_TWO, count
        elif count >= 1 and claimed - CHECKPOINT_RECORD_SIZE == len(data):
            version, stored = ZINFO_VERSION_ONE, count - 1
        else:
            raise FormatError(
                f"gzip zinfo: blob of {len(data)} bytes does not hold the {count} checkpoints its header claims"
            )
        ins: list[int] = []
        outs: list[int] = []
        bits: list[int] = []
        if version == ZINFO_VERSION_ONE:
            ins.append(_V1_FIRST_IN)
            outs.append(0)
            bits.append(0)
        pos = BLOB_HEADER_SIZE
        for _ in range(stored):
            cin, cout, cbits = _RECORD_HEAD.unpack_from(data, pos)
            ins.append(cin)
            outs.append(cout)
            bits.append(cbits)
            pos += CHECKPOINT_RECORD_SIZE
        return cls(data, version, span_size, ins, outs, bits)

    @classmethod
    def from_checkpoints(
        cls, span_size: int, checkpoints: Iterable[Checkpoint], version: int = ZINFO_VERSION_CURRENT
    ) -> GzipZinfo:
        """Build a table (and its blob) from checkpoints; version 1 leaves checkpoint 0 out of the blob."""
        points = list(checkpoints)
        if version not in (ZINFO_VERSION_ONE, ZINFO_VERSION_TWO):
            raise InvalidArgument(f"gzip zinfo: unknown version {version}: want 1 or 2")
        if version == ZINFO_VERSION_ONE and (not points or points[0] != Checkpoint(_V1_FIRST_IN, 0, 0, _ZERO_WINDOW)):
            raise InvalidArgument("gzip zinfo v1: checkpoint 0 must be in=10, out=0, bits=0 with a zero window")
        parts = [_HEADER.pack(len(points), span_size)]
        for cp in points[1:] if version == ZINFO_VERSION_ONE else points:
            if len(cp.window) != WINDOW_SIZE:
                raise InvalidArgument(f"gzip zinfo: checkpoint window is {len(cp.window)} bytes, want {WINDOW_SIZE}")
            if not 0 <= cp.bits <= 7:
                raise InvalidArgument(f"gzip zinfo: checkpoint bits {cp.bits} out of range 0..7")
            parts.append(_RECORD_HEAD.pack(cp.compressed_offset, cp.uncompressed_offset, cp.bits))
            parts.append(cp.window)
        return cls(
            b"".join(parts),
            version,
            span_size,
            [cp.compressed_offset for cp in points],
            [cp.uncompressed_offset for cp in points],
            [cp.bits for cp in points],
        )

    def to_blob(self) -> bytes:
        """The serialised blob, in the version it was loaded or built as."""
        return self._blob

    @property
    def span_size(self) -> int:
        return self._span_size

    @property
    def version(self) -> int:
        return self._version

    @property
    def max_span_id(self) -> int:
        return len(self._ins) - 1

    def __len__(self) -> int:
        return len(self._ins)

    def __repr__(self) -> str:
        return f"GzipZinfo(version={self._version}, span_size={self._span_size}, checkpoints={len(self._ins)})"

    @property
    def compressed_offsets(self) -> tuple[int, ...]:
        """Every checkpoint's ``in``, in order."""
        return self._ins

    @property
    def uncompressed_offsets(self) -> tuple[int, ...]:
        """Every checkpoint's ``out``, in order."""
        return self._outs

    def checkpoint(self, i: int) -> Checkpoint:
        self._check_span(i)
        return Checkpoint(self._ins[i], self._outs[i], self._bits[i], self.window(i))

    def bits(self, i: int) -> int:
        self._check_span(i)
        return self._bits[i]

    def window(self, i: int) -> bytes:
        """The 32 KiB dictionary of checkpoint ``i``."""
        self._check_span(i)
        if self._version == ZINFO_VERSION_ONE and i == 0:
            return _ZERO_WINDOW
        start = self._records_start + i * CHECKPOINT_RECORD_SIZE + _RECORD_HEAD.size
        return self._blob[start : start + WINDOW_SIZE]

    def start_compressed_offset(self, i: int) -> int:
        """First compressed byte of span ``i``: the partial byte shared with the previous block, if any."""
        self._check_span(i)
        return self._ins[i] - (1 if self._bits[i] else 0)

    def end_compressed_offset(self, i: int, compressed_archive_size: int) -> int:
        """Exclusive end of span ``i`` in the layer blob; the last span runs to the end of the blob."""
        self._check_span(i)
        return compressed_archive_size if i == len(self._ins) - 1 else self._ins[i + 1]

    def start_uncompressed_offset(self, i: int) -> int:
        self._check_span(i)
        return self._outs[i]

    def end_uncompressed_offset(self, i: int, uncompressed_archive_size: int) -> int:
        self._check_span(i)
        return uncompressed_archive_size if i == len(self._outs) - 1 else self._outs[i + 1]

    def span_of(self, uncompressed_offset: int) -> int:
        """The span holding ``uncompressed_offset``: the largest i with out_i <= offset (0 if none)."""
        if not self._outs:
            raise FormatError("gzip zinfo: no checkpoints, so no span holds any offset")
        return max(0, bisect_right(self._outs, uncompressed_offset) - 1)

    def _check_span(self, i: int) -> None:
        if not 0 <= i < len(self._ins):
            raise InvalidArgument(f"span id {i} out of range 0..{len(self._ins) - 1}")


class TarZinfo:
    """Span table of an uncompressed tar layer: fixed-size spans, compressed offsets == uncompressed offsets."""

    __slots__ = ("_size", "_span_size", "_version")

    def __init__(self, span_size: int, size: int, version: int = TAR_ZINFO_VERSION) -> None:
        if span_size <= 0:
            raise FormatError(f"tar zinfo: span size {span_size} must be positive")
        if size < 0:
            raise FormatError(f"tar zinfo: layer size {size} must not be negative")
        self._span_size = span_size
        self._size = size
        self._version = version

    @classmethod
    def from_blob(cls, blob: bytes | bytearray | memoryview) -> TarZinfo:
        data = bytes(blob)
        if not data:
            raise FormatError("tar zinfo: empty checkpoints blob")
        try:
            table = _fb.TarZinfo.GetRootAs(data, 0)
            version, span_size, size = table.Version(), table.SpanSize(), table.Size()
        except (struct.error, IndexError, ValueError) as exc:
            raise FormatError(f"tar zinfo: cannot unmarshal {len(data)}-byte flatbuffer: {exc}") from exc
        return cls(span_size, size, version)

    def to_blob(self) -> bytes:
        """FlatBuffer bytes, built in upstream's call order (default-valued scalars are omitted)."""
        builder = flatbuffers.Builder(0)
        _fb.TarZinfoStart(builder)
        _fb.TarZinfoAddVersion(builder, self._version)
        _fb.TarZinfoAddSpanSize(builder, self._span_size)
        _fb.TarZinfoAddSize(builder, self._size)
        builder.Finish(_fb.TarZinfoEnd(builder))
        return bytes(builder.Output())

    @property
    def span_size(self) -> int:
        return self._span_size

    @property
    def size(self) -> int:
        """Size of the layer blob in bytes."""
        return self._size

    @property
    def version(self) -> int:
        return self._version

    @property
    def max_span_id(self) -> int:
        """Upstream's rule: size // span, minus one when span divides size (so -1 for an empty layer)."""
        last, rest = divmod(self._size, self._span_size)
        return last - 1 if rest == 0 else last

    def __len__(self) -> int:
        return self.max_span_id + 1

    def __repr__(self) -> str:
        return f"TarZinfo(version={self._version}, span_size={self._span_size}, size={self._size})"

    def start_compressed_offset(self, i: int) -> int:
        self._check_span(i)
        return i * self._span_size

    def end_compressed_offset(self, i: int, compressed_archive_size: int) -> int:
        self._check_span(i)
        return compressed_archive_size if i == self.max_span_id else (i + 1) * self._span_size

    def start_uncompressed_offset(self, i: int) -> int:
        return self.start_compressed_offset(i)

    def end_uncompressed_offset(self, i: int, uncompressed_archive_size: int) -> int:
        return self.end_compressed_offset(i, uncompressed_archive_size)

    def span_of(self, uncompressed_offset: int) -> int:
        return uncompressed_offset // self._span_size

    def _check_span(self, i: int) -> None:
        if not 0 <= i <= self.max_span_id:
            raise InvalidArgument(f"span id {i} out of range 0..{self.max_span_id}")


Zinfo = GzipZinfo | TarZinfo


def without_windows(blob: bytes | bytearray | memoryview) -> bytes:
    """A gzip zinfo blob with every checkpoint's window zeroed: the same table and span arithmetic, a
    fraction of the size once compressed, but inflating any span but the first needs the real windows back."""
    GzipZinfo.from_blob(blob)  # the same checks (and FormatError) as any other use of the blob
    data = bytearray(blob)
    head = _RECORD_HEAD.size
    for pos in range(BLOB_HEADER_SIZE, len(data), CHECKPOINT_RECORD_SIZE):
        data[pos + head : pos + CHECKPOINT_RECORD_SIZE] = _ZERO_WINDOW
    return bytes(data)


def zinfo_from_blob(algorithm: str, blob: bytes | bytearray | memoryview) -> GzipZinfo | TarZinfo:
    """Parse a zTOC's checkpoints bytes according to its compression algorithm (lower-case name)."""
    if algorithm == ALGORITHM_GZIP:
        return GzipZinfo.from_blob(blob)
    if algorithm in (ALGORITHM_UNCOMPRESSED, ALGORITHM_UNKNOWN):
        return TarZinfo.from_blob(blob)
    if algorithm == ALGORITHM_ZSTD:
        raise FormatError("not implemented: zstd")
    raise FormatError(f"unexpected compression algorithm {algorithm!r}: want gzip or uncompressed")

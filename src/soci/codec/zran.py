"""Random access into gzip layers (zran): build the checkpoint table in one streaming pass, inflate one span.

Checkpoint placement reproduces upstream SOCI's ``gzip_zinfo.c`` (a zran.c derivative) exactly, because the
zinfo blob and the span digests end up in the zTOC and must be byte-identical to what upstream builds:

* inflate with automatic header detection, stopping at every deflate block boundary (``Z_BLOCK``);
* record a checkpoint at a boundary that is not after a member's last block when no output has been produced
  yet, or when more than ``span_size`` bytes were produced since the previous checkpoint (strictly more);
* concatenated gzip members are decoded one after another with running totals.

Uncompressed (plain tar) layers get fixed-size spans instead (``TarCheckpointer``).
"""

from __future__ import annotations

import ctypes
import hashlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

from soci.codec._zlib import (
    DT_BITS_MASK,
    DT_BLOCK_BOUNDARY,
    DT_LAST_BLOCK,
    WBITS_AUTO,
    WBITS_RAW,
    Z_BLOCK,
    Z_BUF_ERROR,
    Z_MEM_ERROR,
    Z_NO_FLUSH,
    Z_OK,
    Z_STREAM_END,
    Stream,
    available_backends,
    backend_name,
    get_backend,
)
from soci.errors import DataLoss, FormatError, InvalidArgument
from soci.formats.zinfo import (
    ALGORITHM_GZIP,
    ALGORITHM_UNCOMPRESSED,
    ALGORITHM_UNKNOWN,
    ALGORITHM_ZSTD,
    WINDOW_SIZE,
    ZINFO_VERSION_CURRENT,
    GzipZinfo,
    TarZinfo,
)

__all__ = [
    "BlockBoundary",
    "Checkpointer",
    "GzipCheckpointer",
    "IndexResult",
    "TarCheckpointer",
    "available_backends",
    "backend_name",
    "block_boundaries",
    "build_index",
    "extract",
    "inflate_at",
    "inflate_span",
    "inflate_span_into",
    "new_checkpointer",
]

READ_CHUNK_SIZE = 1 << 20
# Fresh output accumulated before it is handed to the caller; the 32 KiB window is kept in front of it.
_OUTPUT_CAPACITY = 4 << 20
_DISCARD_SIZE = 256 << 10
# avail_in / avail_out are 32-bit: feed the library at most this much per call.
_MAX_AVAIL = 1 << 30
_TRAILER_SIZE = 8  # gzip CRC32 + ISIZE

ZinfoT = TypeVar("ZinfoT", GzipZinfo, TarZinfo)


@dataclass(frozen=True, slots=True)
class IndexResult(Generic[ZinfoT]):
    """Outcome of one checkpoint pass over a layer."""

    zinfo: ZinfoT
    span_digests: list[str]  # "sha256:<hex>" of each span's compressed bytes
    compressed_size: int  # bytes fed (the layer blob's size)
    uncompressed_size: int  # bytes produced by decompression (all of them, including tar padding)


class Checkpointer(Protocol):
    """What a layer indexer needs: feed compressed bytes, read decompressed ones, then collect the table."""

    def feed(self, data: bytes | bytearray | memoryview) -> Iterator[memoryview]: ...

    def finish(self) -> IndexResult[Any]: ...


def _input_address(data: bytes | bytearray | memoryview) -> tuple[memoryview, int, object]:
    """A byte view of ``data``, the address of its first byte, and the object that keeps that address valid."""
    if isinstance(data, bytes):
        # c_char_p points into the bytes object itself; no copy.
        return memoryview(data), ctypes.cast(ctypes.c_char_p(data), ctypes.c_void_p).value or 0, data
    view = memoryview(data)
    if not view.c_contiguous:
        raise InvalidArgument("compressed input must be a contiguous buffer")
    if view.format != "B" or view.ndim != 1:
        view = view.cast("B")
    if view.readonly:
        return _input_address(view.tobytes())
    if not len(view):
        return view, 0, view
    array = (ctypes.c_char * len(view)).from_buffer(view)
    return view, ctypes.addressof(array), array


class GzipCheckpointer:
    """Streaming checkpoint pass over a gzip layer; memory stays bounded whatever the layer size.

    Call ``feed()`` with consecutive pieces of the layer and exhaust each returned iterator (it yields the
    decompressed output; every memoryview is valid only until the next step), then ``finish()``.
    Span digests are computed in the same pass.
    """

    def __init__(self, span_size: int, *, backend: str | None = None) -> None:
        if span_size < 0:
            raise InvalidArgument(f"span size {span_size} must not be negative")
        self._span_size = span_size
        self._stream = Stream(get_backend(backend), WBITS_AUTO)
        capacity = WINDOW_SIZE + _OUTPUT_CAPACITY
        # The first WINDOW_SIZE bytes hold the output preceding the current fill: zeros at the start of the
        # layer, which is exactly upstream's zero-padded window for early checkpoints.
        self._out = bytearray(capacity)
        self._out_view = memoryview(self._out)
        self._out_c = (ctypes.c_char * capacity).from_buffer(self._out)
        self._out_addr = ctypes.addressof(self._out_c)
        self._capacity = capacity
        self._out_pos = WINDOW_SIZE
        self._yielded = WINDOW_SIZE
        self._total_in = 0
        self._total_out = 0
        self._last_out = 0
        self._records: list[bytes] = []
        self._ins: list[int] = []
        self._outs: list[int] = []
        self._bits: list[int] = []
        self._digests: list[str] = []
        self._hasher: Any = None  # hashlib object of the span being read; None before checkpoint 0
        self._last_byte = 0  # last compressed byte consumed by an earlier feed()
        self._member_ended = False
        self._pending_feeds = 0
        self._failed: str | None = None
        self._finished = False

    @property
    def backend(self) -> str:
        return self._stream.backend.name

    def feed(self, data: bytes | bytearray | memoryview) -> Iterator[memoryview]:
        """Consume the next piece of the layer; the returned iterator must be exhausted before the next call."""
        self._check_usable()
        self._pending_feeds += 1
        return self._feed(data)

    def _feed(self, data: bytes | bytearray | memoryview) -> Iterator[memoryview]:
        view, addr, keepalive = _input_address(data)
        size = len(view)
        pos = 0
        strm = self._stream.s
        ptr = self._stream.ptr
        inflate = self._stream.backend.inflate
        out_addr = self._out_addr
        capacity = self._capacity
        stuck = False
        try:
            while True:
                if self._member_ended:
                    if pos >= size:
                        break
                    # Another gzip member follows: parse its header and continue with the running totals.
                    self._stream.backend.reset2(ptr, WBITS_AUTO)
                    self._member_ended = False
                if self._out_pos == capacity:
                    if self._yielded < capacity:
                        yield self._out_view[self._yielded : capacity]
                    ctypes.memmove(out_addr, out_addr + capacity - WINDOW_SIZE, WINDOW_SIZE)
                    self._out_pos = self._yielded = WINDOW_SIZE
                avail_in = min(size - pos, _MAX_AVAIL)
                avail_out = capacity - self._out_pos
                strm.next_in = addr + pos
                strm.avail_in = avail_in
                strm.next_out = out_addr + self._out_pos
                strm.avail_out = avail_out
                ret = inflate(ptr, Z_BLOCK)
                used = avail_in - strm.avail_in
                made = avail_out - strm.avail_out
                if used:
                    if self._hasher is not None:
                        self._hasher.update(view[pos : pos + used])
                    pos += used
                    self._total_in += used
                self._out_pos += made
                self._total_out += made
                if ret == Z_STREAM_END:
                    self._member_ended = True
                    continue
                if ret != Z_OK and ret != Z_BUF_ERROR:
                    self._fail(ret)
                data_type = strm.data_type
                if (
                    data_type & DT_BLOCK_BOUNDARY
                    and not data_type & DT_LAST_BLOCK
                    and (self._total_out == 0 or self._total_out - self._last_out > self._span_size)
                ):
                    self._add_checkpoint(data_type & DT_BITS_MASK, view[pos - 1] if pos else self._last_byte)
                if ret == Z_BUF_ERROR:
                    # No progress: the library needs more input than this piece holds.
                    if pos >= size:
                        break
                    if stuck:
                        self._fail(ret)
                    stuck = True
                else:
                    stuck = False
            if size:
                self._last_byte = view[size - 1]
            if self._yielded < self._out_pos:
                start, self._yielded = self._yielded, self._out_pos
                yield self._out_view[start : self._out_pos]
            self._pending_feeds -= 1
        finally:
            del keepalive

    def _add_checkpoint(self, bits: int, previous_byte: int) -> None:
        window = self._out_view[self._out_pos - WINDOW_SIZE : self._out_pos]
        self._records.append(_record(self._total_in, self._total_out, bits, window))
        self._ins.append(self._total_in)
        self._outs.append(self._total_out)
        self._bits.append(bits)
        self._last_out = self._total_out
        if self._hasher is not None:
            self._digests.append("sha256:" + self._hasher.hexdigest())
        self._hasher = hashlib.sha256()
        if bits:
            # The partial byte before the boundary starts this span and also ends the previous one.
            self._hasher.update(bytes((previous_byte,)))

    def _fail(self, ret: int) -> None:
        if ret == Z_MEM_ERROR:
            self._failed = "out of memory"
            raise MemoryError(f"gzip: out of memory at compressed offset {self._total_in}")
        self._failed = f"gzip: invalid data at compressed offset {self._total_in}: {self._stream.message(ret)}"
        raise FormatError(self._failed)

    def _check_usable(self) -> None:
        if self._failed is not None:
            raise InvalidArgument(f"checkpointer already failed ({self._failed})")
        if self._finished:
            raise InvalidArgument("checkpointer already finished")

    def finish(self) -> IndexResult[GzipZinfo]:
        """Check the stream ended cleanly and return the checkpoint table, span digests and sizes."""
        self._check_usable()
        if self._pending_feeds:
            raise InvalidArgument("feed() iterator was not exhausted; the layer was not fully read")
        if not self._member_ended or not self._ins:
            self._failed = f"gzip: unexpected end of data at compressed offset {self._total_in}"
            raise FormatError(self._failed)
        self._finished = True
        self._stream.close()
        self._digests.append("sha256:" + self._hasher.hexdigest())
        header = len(self._ins).to_bytes(4, "little", signed=True) + self._span_size.to_bytes(8, "little", signed=True)
        blob = header + b"".join(self._records)
        zinfo = GzipZinfo(blob, ZINFO_VERSION_CURRENT, self._span_size, self._ins, self._outs, self._bits)
        return IndexResult(zinfo, list(self._digests), self._total_in, self._total_out)


def _record(compressed_offset: int, uncompressed_offset: int, bits: int, window: memoryview) -> bytes:
    return b"".join(
        (
            compressed_offset.to_bytes(8, "little", signed=True),
            uncompressed_offset.to_bytes(8, "little", signed=True),
            bytes((bits,)),
            window,
        )
    )


class TarCheckpointer:
    """Checkpoint pass over an uncompressed tar layer: output is the input, spans have a fixed size."""

    def __init__(self, span_size: int) -> None:
        if span_size <= 0:
            raise InvalidArgument(f"span size {span_size} must be positive for uncompressed layers")
        self._span_size = span_size
        self._size = 0
        self._hasher: Any = None
        self._digests: list[str] = []
        self._pending_feeds = 0
        self._finished = False

    def feed(self, data: bytes | bytearray | memoryview) -> Iterator[memoryview]:
        if self._finished:
            raise InvalidArgument("checkpointer already finished")
        self._pending_feeds += 1
        return self._feed(data)

    def _feed(self, data: bytes | bytearray | memoryview) -> Iterator[memoryview]:
        view = memoryview(data)
        if view.format != "B" or view.ndim != 1:
            view = view.cast("B")
        pos = 0
        while pos < len(view):
            offset_in_span = self._size % self._span_size
            if offset_in_span == 0:
                if self._hasher is not None:
                    self._digests.append("sha256:" + self._hasher.hexdigest())
                self._hasher = hashlib.sha256()
            take = min(len(view) - pos, self._span_size - offset_in_span)
            self._hasher.update(view[pos : pos + take])
            pos += take
            self._size += take
        if len(view):
            yield view
        self._pending_feeds -= 1

    def finish(self) -> IndexResult[TarZinfo]:
        if self._finished:
            raise InvalidArgument("checkpointer already finished")
        if self._pending_feeds:
            raise InvalidArgument("feed() iterator was not exhausted; the layer was not fully read")
        self._finished = True
        if self._hasher is not None:
            self._digests.append("sha256:" + self._hasher.hexdigest())
        return IndexResult(TarZinfo(self._span_size, self._size), list(self._digests), self._size, self._size)


def new_checkpointer(algorithm: str, span_size: int, *, backend: str | None = None) -> Checkpointer:
    """A checkpointer for a layer compressed with ``algorithm`` (upstream's lower-case names)."""
    if algorithm == ALGORITHM_GZIP:
        return GzipCheckpointer(span_size, backend=backend)
    if algorithm in (ALGORITHM_UNCOMPRESSED, ALGORITHM_UNKNOWN):
        return TarCheckpointer(span_size)
    if algorithm == ALGORITHM_ZSTD:
        raise FormatError("not implemented: zstd")
    raise FormatError(f"unexpected compression algorithm {algorithm!r}: want gzip or uncompressed")


class _Readable(Protocol):
    def read(self, size: int = ..., /) -> bytes: ...


def build_index(fileobj: _Readable, span_size: int, algorithm: str, *, backend: str | None = None) -> IndexResult[Any]:
    """Run a checkpoint pass over a whole layer read from ``fileobj`` in 1 MiB chunks."""
    checkpointer = new_checkpointer(algorithm, span_size, backend=backend)
    while chunk := fileobj.read(READ_CHUNK_SIZE):
        for _ in checkpointer.feed(chunk):
            pass
    return checkpointer.finish()


class _SpanInflater:
    """Raw inflate resumed at a checkpoint, over compressed bytes held in memory."""

    def __init__(
        self,
        base: int,
        bits: int,
        window: bytes | bytearray | memoryview,
        compressed: bytes | bytearray | memoryview,
        backend: str | None,
    ):
        """``compressed`` starts at layer offset ``base``: the checkpoint's partial byte when ``bits``."""
        self._base = base
        self._view, self._addr, self._keepalive = _input_address(compressed)
        self._size = len(self._view)
        self._pos = 0
        self._raw = True  # still in the member where the checkpoint is: no gzip framing
        self._member_ended = False
        self.at_end = False
        self._stream = Stream(get_backend(backend), WBITS_RAW)
        if len(window) != WINDOW_SIZE or not 0 <= bits < 8:
            raise InvalidArgument(f"checkpoint at {base}: want a {WINDOW_SIZE}-byte window and 0-7 bits")
        if bits:
            if not self._size:
                raise FormatError(f"gzip: no compressed data at checkpoint {base}")
            # The checkpoint sits inside this byte: its top `bits` bits are the start of the next block.
            self._stream.backend.prime(self._stream.ptr, bits, self._view[0] >> (8 - bits))
            self._pos = 1
        self._stream.backend.set_dictionary(self._stream.ptr, bytes(window), WINDOW_SIZE)

    @classmethod
    def at_span(
        cls, zinfo: GzipZinfo, span_id: int, compressed: bytes | bytearray | memoryview, backend: str | None
    ) -> _SpanInflater:
        return cls(zinfo.start_compressed_offset(span_id), zinfo.bits(span_id), zinfo.window(span_id), compressed,
                   backend)  # fmt: skip

    def close(self) -> None:
        self._stream.close()

    def read_into(self, out_addr: int, length: int) -> int:
        """Inflate up to ``length`` bytes to ``out_addr``; fewer only when the last member ends the data."""
        strm = self._stream.s
        ptr = self._stream.ptr
        inflate = self._stream.backend.inflate
        done = 0
        while done < length:
            if self._member_ended:
                if self._raw:
                    # Raw mode stopped at the end of the deflate data; the gzip trailer is still ahead.
                    self._pos = min(self._pos + _TRAILER_SIZE, self._size)
                    self._raw = False
                if self._pos >= self._size:
                    self.at_end = True
                    break
                self._stream.backend.reset2(ptr, WBITS_AUTO)
                self._member_ended = False
            avail_in = min(self._size - self._pos, _MAX_AVAIL)
            avail_out = min(length - done, _MAX_AVAIL)
            strm.next_in = self._addr + self._pos
            strm.avail_in = avail_in
            strm.next_out = out_addr + done
            strm.avail_out = avail_out
            ret = inflate(ptr, Z_NO_FLUSH)
            self._pos += avail_in - strm.avail_in
            made = avail_out - strm.avail_out
            done += made
            if ret == Z_STREAM_END:
                self._member_ended = True
            elif ret == Z_BUF_ERROR:
                raise FormatError(f"gzip: unexpected end of data at compressed offset {self._base + self._pos}")
            elif ret == Z_MEM_ERROR:
                raise MemoryError(f"gzip: out of memory at compressed offset {self._base + self._pos}")
            elif ret != Z_OK:
                raise FormatError(
                    f"gzip: invalid data at compressed offset {self._base + self._pos}: {self._stream.message(ret)}"
                )
        return done

    def skip(self, count: int) -> bool:
        """Discard ``count`` output bytes; False if the data ended first."""
        scratch = (ctypes.c_char * min(count, _DISCARD_SIZE))()
        addr = ctypes.addressof(scratch)
        while count > 0:
            step = min(count, _DISCARD_SIZE)
            if self.read_into(addr, step) < step:
                return False
            count -= step
        return True


def inflate_span_into(
    zinfo: GzipZinfo,
    span_id: int,
    compressed: bytes | bytearray | memoryview,
    out: bytearray | memoryview,
    *,
    skip: int = 0,
    backend: str | None = None,
) -> int:
    """Inflate into ``out`` (writable) starting ``skip`` bytes after checkpoint ``span_id``.

    ``compressed`` holds the layer from ``zinfo.start_compressed_offset(span_id)`` on, at least up to the end
    of the last span the output reaches. Returns the number of bytes written: ``len(out)``, or fewer only
    if the gzip data ends cleanly before (a truncated stream raises FormatError).
    """
    if skip < 0:
        raise InvalidArgument(f"skip {skip} must not be negative")
    target = memoryview(out)
    if target.readonly:
        raise InvalidArgument("output buffer is read-only")
    if target.format != "B" or target.ndim != 1:
        target = target.cast("B")
    inflater = _SpanInflater.at_span(zinfo, span_id, compressed, backend)
    try:
        if skip and not inflater.skip(skip):
            return 0
        if not len(target):
            return 0
        out_c = (ctypes.c_char * len(target)).from_buffer(target)
        try:
            return inflater.read_into(ctypes.addressof(out_c), len(target))
        finally:
            del out_c
    finally:
        inflater.close()


def inflate_span(
    zinfo: GzipZinfo,
    span_id: int,
    compressed: bytes | bytearray | memoryview,
    *,
    skip: int = 0,
    length: int | None = None,
    backend: str | None = None,
) -> bytes:
    """Uncompressed bytes starting ``skip`` bytes after checkpoint ``span_id`` (see inflate_span_into).

    ``length=None`` means "to the end of this span": up to the next checkpoint, or for the last span up to
    the end of the gzip data (which can exceed the zTOC's uncompressed_archive_size: tar padding is not
    counted there). Output is shorter than ``length`` only if the gzip data ends first.
    """
    if length is None:
        if span_id < zinfo.max_span_id:
            length = zinfo.start_uncompressed_offset(span_id + 1) - zinfo.start_uncompressed_offset(span_id) - skip
            if length < 0:
                raise InvalidArgument(f"skip {skip} goes past the end of span {span_id}")
        else:
            return _inflate_to_end(zinfo, span_id, compressed, skip, backend)
    if length < 0:
        raise InvalidArgument(f"length {length} must not be negative")
    out = bytearray(length)
    made = inflate_span_into(zinfo, span_id, compressed, out, skip=skip, backend=backend)
    del out[made:]
    return bytes(out)


@dataclass(frozen=True, slots=True)
class BlockBoundary:
    """A deflate block boundary: a place raw inflate can resume from, as a checkpoint does."""

    compressed_offset: int
    """Layer offset of the first whole byte after the boundary (the partial byte before it when ``bits``)."""
    uncompressed_offset: int
    bits: int
    """Bits of byte ``compressed_offset - 1`` that belong to the next block."""
    end: bool = False
    """The end of the deflate data of the checkpoint's gzip member (no block follows)."""

    @property
    def first_byte(self) -> int:
        """The first compressed byte inflating from here needs."""
        return self.compressed_offset - (1 if self.bits else 0)


def block_boundaries(
    zinfo: GzipZinfo, span_id: int, compressed: bytes | bytearray | memoryview, *, backend: str | None = None
) -> tuple[bytearray, list[BlockBoundary]]:
    """Inflate ``compressed`` (the layer from span ``span_id``'s checkpoint on) stopping at every block boundary.

    Returns the output preceded by the checkpoint's 32 KiB window (so ``out[u - start : u - start + WINDOW_SIZE]``
    is the window at uncompressed offset ``u`` when ``start`` is the span's uncompressed start), and every
    boundary from the checkpoint on, in order, until the data or the checkpoint's gzip member ends (record time).
    """
    base = zinfo.start_compressed_offset(span_id)
    inflater = _SpanInflater.at_span(zinfo, span_id, compressed, backend)
    ustart = zinfo.start_uncompressed_offset(span_id)
    out = bytearray(zinfo.window(span_id))
    bits = zinfo.bits(span_id)
    found = [BlockBoundary(base + (1 if bits else 0), ustart, bits)]  # the checkpoint itself
    chunk = ctypes.create_string_buffer(_DISCARD_SIZE)
    addr = ctypes.addressof(chunk)
    strm = inflater._stream.s
    ptr = inflater._stream.ptr
    inflate = inflater._stream.backend.inflate
    try:
        while inflater._pos < inflater._size:
            avail_in = min(inflater._size - inflater._pos, _MAX_AVAIL)
            strm.next_in = inflater._addr + inflater._pos
            strm.avail_in = avail_in
            strm.next_out = addr
            strm.avail_out = _DISCARD_SIZE
            ret = inflate(ptr, Z_BLOCK)
            inflater._pos += avail_in - strm.avail_in
            made = _DISCARD_SIZE - strm.avail_out
            out += ctypes.string_at(addr, made)
            position = ustart + len(out) - WINDOW_SIZE
            if ret == Z_STREAM_END:
                found.append(BlockBoundary(base + inflater._pos, position, 0, end=True))
                break
            if ret == Z_BUF_ERROR and not made:
                break  # the data ends inside a block
            if ret not in (Z_OK, Z_BUF_ERROR):
                raise FormatError(f"gzip: invalid data at compressed offset {base + inflater._pos}: "
                                  f"{inflater._stream.message(ret)}")  # fmt: skip
            data_type = strm.data_type
            if data_type & DT_BLOCK_BOUNDARY and not data_type & DT_LAST_BLOCK:
                boundary = BlockBoundary(base + inflater._pos, position, data_type & DT_BITS_MASK)
                if found[-1] != boundary:
                    found.append(boundary)
    finally:
        inflater.close()
    return out, found


def inflate_at(
    compressed: bytes | bytearray | memoryview,
    *,
    base: int,
    bits: int,
    window: bytes | bytearray | memoryview,
    length: int,
    backend: str | None = None,
) -> bytearray:
    """``length`` bytes inflated from a block boundary given as a checkpoint (``bits`` and the 32 KiB
    ``window``), ``compressed`` starting at its first byte (layer offset ``base``).

    Raises:
        FormatError: the data is not valid deflate from there, or ends before ``length`` bytes.
    """
    out = bytearray(length)
    if not length:
        return out
    inflater = _SpanInflater(base, bits, window, compressed, backend)
    try:
        out_c = (ctypes.c_char * length).from_buffer(out)
        try:
            made = inflater.read_into(ctypes.addressof(out_c), length)
        finally:
            del out_c
    finally:
        inflater.close()
    if made != length:
        raise FormatError(f"gzip: data from checkpoint {base} ended after {made} of {length} bytes")
    return out


def _inflate_to_end(
    zinfo: GzipZinfo, span_id: int, compressed: bytes | bytearray | memoryview, skip: int, backend: str | None
) -> bytes:
    if skip < 0:
        raise InvalidArgument(f"skip {skip} must not be negative")
    inflater = _SpanInflater.at_span(zinfo, span_id, compressed, backend)
    try:
        if skip and not inflater.skip(skip):
            return b""
        pieces: list[bytes] = []
        chunk = ctypes.create_string_buffer(_OUTPUT_CAPACITY)
        addr = ctypes.addressof(chunk)
        while not inflater.at_end:
            made = inflater.read_into(addr, _OUTPUT_CAPACITY)
            pieces.append(ctypes.string_at(addr, made))
        return b"".join(pieces)
    finally:
        inflater.close()


def extract(
    zinfo: GzipZinfo | TarZinfo,
    compressed_archive_size: int,
    uncompressed_archive_size: int,
    read_compressed: Callable[[int, int], bytes | bytearray | memoryview],
    uncompressed_offset: int,
    length: int,
    *,
    backend: str | None = None,
) -> bytes:
    """The uncompressed bytes ``[uncompressed_offset, +length)`` of a layer.

    ``read_compressed(offset, size)`` must return exactly ``size`` bytes of the layer blob; it is called once,
    for the compressed range of every span the request touches.
    """
    if length < 0 or uncompressed_offset < 0 or uncompressed_offset + length > uncompressed_archive_size:
        raise InvalidArgument(
            f"range [{uncompressed_offset}, +{length}) is outside the layer's {uncompressed_archive_size} bytes"
        )
    if length == 0:
        return b""
    first = zinfo.span_of(uncompressed_offset)
    last = zinfo.span_of(uncompressed_offset + length - 1)
    start = zinfo.start_compressed_offset(first)
    end = zinfo.end_compressed_offset(last, compressed_archive_size)
    data = read_compressed(start, end - start)
    if len(data) != end - start:
        raise DataLoss(f"short read: got {len(data)} bytes of compressed range [{start}, {end})")
    skip = uncompressed_offset - zinfo.start_uncompressed_offset(first)
    if isinstance(zinfo, TarZinfo):
        return bytes(memoryview(data)[skip : skip + length])
    result = inflate_span(zinfo, first, data, skip=skip, length=length, backend=backend)
    if len(result) != length:
        raise FormatError(
            f"gzip: data ended after {len(result)} of {length} bytes read at uncompressed offset {uncompressed_offset}"
        )
    return result

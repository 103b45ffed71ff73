"""Whole-stream gzip decompression for full-layer work (unpacking, diff-id checks); no random access.

Uses ISA-L (``isal``), about 2.3x faster than CPython's zlib, and falls back to zlib when it is missing.
Concatenated gzip members (pigz, mgzip) are decoded one after another, as Go's gzip reader does.
"""

from __future__ import annotations

import zlib
from typing import Any

from soci.errors import FormatError, InvalidArgument

try:
    from isal import isal_zlib as _isal_zlib

    _ENGINE: Any = _isal_zlib
    ENGINE_NAME = "isal"
except ImportError:  # pragma: no cover - isal is a declared dependency
    _ENGINE = zlib
    ENGINE_NAME = "zlib"

_GZIP_WBITS = 31  # gzip header and trailer, 32 KiB window
_ERRORS: tuple[type[BaseException], ...] = (zlib.error, _ENGINE.error)


class StreamInflater:
    """Feed a gzip layer piece by piece; each ``feed()`` returns the bytes decompressed from that piece."""

    def __init__(self) -> None:
        self._obj: Any = _ENGINE.decompressobj(_GZIP_WBITS)
        self._member_ended = False
        self._compressed = 0  # bytes consumed by finished members plus the current one
        self._member_start = 0  # compressed offset of the current member
        self.uncompressed_size = 0
        self._finished = False

    @property
    def compressed_size(self) -> int:
        return self._compressed

    def feed(self, data: bytes | bytearray | memoryview) -> bytes:
        if self._finished:
            raise InvalidArgument("inflater already finished")
        pieces: list[bytes] = []
        pending = bytes(data)
        self._compressed += len(pending)
        while pending:
            if self._member_ended:
                # Bytes after a member's trailer must be another member.
                self._member_start = self._compressed - len(pending)
                self._obj = _ENGINE.decompressobj(_GZIP_WBITS)
                self._member_ended = False
            try:
                out = self._obj.decompress(pending)
            except _ERRORS as exc:
                where = f"in the member starting at compressed offset {self._member_start}"
                raise FormatError(f"gzip: invalid data {where}: {exc}") from exc
            pieces.append(out)
            if not self._obj.eof:
                break
            self._member_ended = True
            pending = self._obj.unused_data
        result = b"".join(pieces)
        self.uncompressed_size += len(result)
        return result

    def finish(self) -> bytes:
        """Check the last member ended cleanly; returns any bytes still held back (normally none)."""
        if self._finished:
            raise InvalidArgument("inflater already finished")
        self._finished = True
        if not self._member_ended:
            try:
                tail = self._obj.flush()
            except _ERRORS as exc:
                raise FormatError(f"gzip: invalid data at the end of the stream: {exc}") from exc
            if not self._obj.eof:
                raise FormatError(f"gzip: unexpected end of data at compressed offset {self._compressed}")
            self.uncompressed_size += len(tail)
            return bytes(tail)
        return b""

"""Build one layer's zTOC in a single streaming pass: checkpoints, span digests and TOC from the same bytes."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import BinaryIO

from soci.codec.zran import GzipCheckpointer, TarCheckpointer
from soci.errors import DataLoss, FormatError
from soci.formats.tar import TocBuilder
from soci.formats.ztoc import ALGORITHM_GZIP, ALGORITHM_UNCOMPRESSED, BUILD_TOOL_IDENTIFIER, Ztoc

READ_CHUNK = 1 << 20


class ZtocStreamBuilder:
    """Feed a layer blob's bytes in order; ``finish`` returns its zTOC.

    The layer is never held in memory: the checkpointer inflates each chunk, the TOC builder reads tar headers
    from the output, and the compressed bytes are hashed so the caller can check the layer digest.
    """

    def __init__(
        self, *, span_size: int, algorithm: str, build_tool: str = BUILD_TOOL_IDENTIFIER, strict: bool = True
    ) -> None:
        if span_size < 0:
            raise FormatError(f"span size must not be negative, got {span_size}")
        if algorithm == ALGORITHM_GZIP:
            self._checkpointer: GzipCheckpointer | TarCheckpointer = GzipCheckpointer(span_size)
        elif algorithm == ALGORITHM_UNCOMPRESSED:
            if span_size == 0:
                raise FormatError("span size must be positive for uncompressed layers")
            self._checkpointer = TarCheckpointer(span_size)
        else:
            raise FormatError(f"unsupported compression algorithm {algorithm!r}")
        self._algorithm = algorithm
        self._build_tool = build_tool
        self._toc = TocBuilder(strict=strict)
        self._hasher = hashlib.sha256()
        self.compressed_bytes = 0

    def feed(self, data: bytes | memoryview) -> None:
        self._hasher.update(data)
        self.compressed_bytes += len(data)
        for out in self._checkpointer.feed(data):
            self._toc.feed(out)

    @property
    def digest(self) -> str:
        """Digest of the compressed bytes fed so far."""
        return "sha256:" + self._hasher.hexdigest()

    def finish(self) -> Ztoc:
        index = self._checkpointer.finish()
        toc = self._toc.finish()
        return Ztoc(
            compressed_archive_size=index.compressed_size,
            uncompressed_archive_size=toc.uncompressed_archive_size,
            entries=tuple(toc.entries),
            compression_algorithm=self._algorithm,
            max_span_id=len(index.span_digests) - 1,
            span_digests=tuple(index.span_digests),
            checkpoints=index.zinfo.to_blob(),
            build_tool_identifier=self._build_tool,
        )


def build_ztoc(
    fileobj: BinaryIO,
    *,
    span_size: int,
    algorithm: str,
    build_tool: str = BUILD_TOOL_IDENTIFIER,
    expected_digest: str | None = None,
    expected_size: int | None = None,
    progress: Callable[[int], None] | None = None,
    strict: bool = True,
) -> Ztoc:
    """The zTOC of the layer in ``fileobj``, checked against ``expected_digest`` and ``expected_size`` if given.

    ``strict=False`` also indexes what upstream indexes although it cannot serve it right (PAX sparse files);
    it exists to compare bytes with upstream, not for production builds.
    """
    builder = ZtocStreamBuilder(span_size=span_size, algorithm=algorithm, build_tool=build_tool, strict=strict)
    while chunk := fileobj.read(READ_CHUNK):
        builder.feed(chunk)
        if progress is not None:
            progress(len(chunk))
    if expected_size is not None and builder.compressed_bytes != expected_size:
        raise DataLoss(f"layer is {builder.compressed_bytes} bytes, its descriptor says {expected_size}")
    if expected_digest is not None and builder.digest != expected_digest:
        raise DataLoss(f"layer content hashes to {builder.digest}, its descriptor says {expected_digest}")
    return builder.finish()

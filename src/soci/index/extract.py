"""Read a file of a layer through its zTOC: only the spans it covers, each checked against its digest."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from pathlib import PurePosixPath

from soci.codec.zran import extract
from soci.errors import NotFound, SpanDigestMismatch
from soci.formats.zinfo import Zinfo, zinfo_from_blob
from soci.formats.ztoc import TYPE_HARDLINK, TYPE_SYMLINK, FileMetadata, Ztoc
from soci.index.build import clean_path


def find_entry(ztoc: Ztoc, name: str) -> FileMetadata:
    """The entry for ``name``, following hard and symbolic links by TOC name as upstream's ExtractFile does."""
    by_name = {clean_path(e.name.decode("utf-8", "surrogateescape")): e for e in ztoc.entries}
    wanted = clean_path(name)
    seen: set[str] = set()
    while True:
        entry = by_name.get(wanted)
        if entry is None:
            raise NotFound(f"file {name!r} not found in zTOC")
        if entry.type not in (TYPE_HARDLINK, TYPE_SYMLINK) or not entry.linkname:
            return entry
        if wanted in seen:
            raise NotFound(f"file {name!r}: link loop")
        seen.add(wanted)
        target = entry.linkname.decode("utf-8", "surrogateescape")
        if entry.type == TYPE_SYMLINK and not target.startswith("/"):
            target = str(PurePosixPath(wanted).parent / target)
        wanted = clean_path(target)


def read_verified(ztoc: Ztoc, read_compressed: Callable[[int, int], bytes], offset: int, length: int) -> bytes:
    """``length`` uncompressed bytes at ``offset``; the compressed bytes of every span used are digest-checked."""
    if length <= 0:
        return b""
    zinfo = zinfo_from_blob(ztoc.compression_algorithm, ztoc.checkpoints)
    first, last = zinfo.span_of(offset), zinfo.span_of(offset + length - 1)
    start = zinfo.start_compressed_offset(first)
    end = zinfo.end_compressed_offset(last, ztoc.compressed_archive_size)
    data = read_compressed(start, end - start)
    view = memoryview(data)
    check_span_digests(zinfo, ztoc.span_digests, ztoc.compressed_archive_size, view, first, last)

    def from_buffer(at: int, size: int) -> bytes:
        return bytes(view[at - start : at - start + size])

    return extract(zinfo, ztoc.compressed_archive_size, ztoc.uncompressed_archive_size, from_buffer, offset, length)


def check_span_digests(
    zinfo: Zinfo, span_digests: Sequence[str], compressed_size: int, data: bytes | memoryview, first: int, last: int
) -> None:
    """Check spans ``first..last`` of ``data`` (the compressed bytes from span ``first``'s start) against the zTOC.

    Raises:
        SpanDigestMismatch: a span's bytes do not have its digest.
    """
    view = memoryview(data)
    start = zinfo.start_compressed_offset(first)
    for span in range(first, last + 1):
        lo = zinfo.start_compressed_offset(span) - start
        hi = zinfo.end_compressed_offset(span, compressed_size) - start
        actual = "sha256:" + hashlib.sha256(view[lo:hi]).hexdigest()
        if actual != span_digests[span]:
            raise SpanDigestMismatch(span, span_digests[span], actual)

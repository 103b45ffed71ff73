"""zTOC data model: the table of contents of one layer plus its compression checkpoints.

Field names and meanings follow upstream SOCI's ``ztoc.fbs`` (see docs/architecture.md). Strings that come
from a tar header (names, link targets, user and group names, PAX records) are ``bytes``: tar names need not
be UTF-8 and upstream stores them as raw Go strings.
"""

from __future__ import annotations

from dataclasses import dataclass

ZTOC_VERSION = "0.9"
BUILD_TOOL_IDENTIFIER = "AWS SOCI CLI v0.2"

# Values of FileMetadata.type, as upstream writes them.
TYPE_REG = "reg"
TYPE_DIR = "dir"
TYPE_SYMLINK = "symlink"
TYPE_HARDLINK = "hardlink"
TYPE_CHAR = "char"
TYPE_BLOCK = "block"
TYPE_FIFO = "fifo"
ENTRY_TYPES = (TYPE_REG, TYPE_DIR, TYPE_SYMLINK, TYPE_HARDLINK, TYPE_CHAR, TYPE_BLOCK, TYPE_FIFO)

# Values of Ztoc.compression_algorithm.
ALGORITHM_GZIP = "gzip"
ALGORITHM_UNCOMPRESSED = "uncompressed"

TAR_BLOCK_SIZE = 512


@dataclass(frozen=True, slots=True)
class FileMetadata:
    """One tar entry, exactly as upstream's TOC records it."""

    name: bytes
    type: str
    uncompressed_offset: int  # offset of the entry's data in the uncompressed tar stream
    uncompressed_size: int
    linkname: bytes = b""
    mode: int = 0  # raw tar header mode
    uid: int = 0
    gid: int = 0
    uname: bytes = b""
    gname: bytes = b""
    mod_time: str = ""  # Go time.MarshalText form (RFC 3339, nanoseconds trimmed); "" if unrepresentable
    devmajor: int = 0
    devminor: int = 0
    # Every PAX record of the entry (upstream's misnamed "xattrs" field), sorted by key (bytewise).
    pax_records: tuple[tuple[bytes, bytes], ...] = ()

    def xattrs(self) -> dict[bytes, bytes]:
        """Extended attributes as exposed at run time: ``SCHILY.xattr.*`` PAX records, prefix stripped."""
        prefix = b"SCHILY.xattr."
        return {k[len(prefix) :]: v for k, v in self.pax_records if k.startswith(prefix)}


@dataclass(frozen=True, slots=True)
class Ztoc:
    """A whole zTOC: TOC plus compression info."""

    compressed_archive_size: int
    uncompressed_archive_size: int
    entries: tuple[FileMetadata, ...]
    compression_algorithm: str  # ALGORITHM_GZIP or ALGORITHM_UNCOMPRESSED
    max_span_id: int
    span_digests: tuple[str, ...]  # "sha256:<hex>" per span
    checkpoints: bytes  # gzip zinfo blob, or a TarZinfo flatbuffer for uncompressed layers
    version: str = ZTOC_VERSION
    build_tool_identifier: str = BUILD_TOOL_IDENTIFIER

    def tar_header_offsets(self) -> list[int]:
        """Derived header offset of each entry (entries in offset order), as upstream recomputes them."""
        offsets: list[int] = []
        prev_end = 0
        for i, e in enumerate(self.entries):
            offsets.append(0 if i == 0 else prev_end)
            prev_end = _round_up(e.uncompressed_offset + e.uncompressed_size, TAR_BLOCK_SIZE)
        return offsets


def _round_up(n: int, to: int) -> int:
    return (n + to - 1) // to * to

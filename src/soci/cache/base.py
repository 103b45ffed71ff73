"""What the span manager needs from a span cache: keyed byte blobs, invisible until committed."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from soci.errors import InvalidArgument

_KEY_RE = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}")


def check_key(key: str) -> str:
    """Keys become file names: letters, digits, ``._-``, not starting with a dot, at most 128 characters."""
    if not _KEY_RE.fullmatch(key):
        raise InvalidArgument(f"span cache key {key!r} is not a plain file name")
    return key


@dataclass(frozen=True, slots=True)
class CacheStatistics:
    entries: int
    bytes: int
    hits: int
    misses: int
    commits: int
    evictions: int


class CacheWriter(Protocol):
    """Collects one entry; nothing is visible to readers before ``commit``."""

    def write(self, data: bytes | bytearray | memoryview) -> None: ...

    def commit(self) -> None: ...

    def abort(self) -> None: ...


class SpanCache(Protocol):
    """A key -> bytes store. Implementations are safe to call from several threads."""

    def get(self, key: str) -> bytes | None:
        """The whole entry, or None when absent."""
        ...

    def read(self, key: str, offset: int, length: int) -> bytes | None:
        """``length`` bytes at ``offset`` of the entry (fewer at its end); None when absent."""
        ...

    def contains(self, key: str) -> bool: ...

    def advise(self, keys: Sequence[str]) -> None:
        """Hint that these entries will be read soon (start loading them from disk); may do nothing."""
        ...

    def writer(self, key: str) -> CacheWriter: ...

    def put(self, key: str, data: bytes | bytearray | memoryview) -> None:
        """Write and commit one entry."""
        ...

    def remove(self, key: str) -> None: ...

    def statistics(self) -> CacheStatistics: ...

    def close(self) -> None: ...

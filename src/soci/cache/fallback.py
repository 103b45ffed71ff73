"""``FallbackSpanCache``: a directory cache that degrades to memory when its directory fails.

A full (ENOSPC), read-only (EROFS) or inaccessible (EACCES) cache directory must not fail a mount or a read:
the span bytes are verified either way and can always be fetched again. On the first ``OSError`` from the
directory, this cache logs one warning (once per ``FallbackNotice``, i.e. once per daemon) naming the
directory and the error, and from then on keeps new entries in memory. Entries already on disk stay readable
as long as the directory answers; a read the directory fails is a miss (the span is fetched again).
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

from soci.cache.base import CacheStatistics, check_key
from soci.cache.directory import DirectorySpanCache
from soci.cache.memory import MemorySpanCache
from soci.errors import InvalidArgument

log = logging.getLogger(__name__)


class FallbackNotice:
    """Logs the first degradation as a warning and later ones (other layers' directories) at debug level."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.count = 0

    def degraded(self, directory: Path, exc: OSError) -> None:
        with self._lock:
            self.count += 1
            first = self.count == 1
        level = logging.WARNING if first else logging.DEBUG
        log.log(level, "span cache directory %s cannot be used (%s: %s); keeping spans in memory instead",
                directory, type(exc).__name__, exc.strerror or exc)  # fmt: skip


class _BufferedWriter:
    """Entries are spans (bounded by the zTOC), so collecting one before ``put`` costs at most a span."""

    def __init__(self, cache: FallbackSpanCache, key: str) -> None:
        self._cache = cache
        self._key = key
        self._parts: list[bytes] | None = []

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self._parts is None:
            raise InvalidArgument(f"span cache entry {self._key}: write after commit or abort")
        self._parts.append(bytes(data))

    def commit(self) -> None:
        parts, self._parts = self._parts, None
        if parts is None:
            raise InvalidArgument(f"span cache entry {self._key}: commit after commit or abort")
        self._cache.put(self._key, b"".join(parts))

    def abort(self) -> None:
        self._parts = None


class FallbackSpanCache:
    """Args: directory: named in the warning; open_directory: makes the directory cache (may raise OSError);
    memory: where entries go once the directory has failed; notice: shared by all layers of a daemon."""

    def __init__(
        self,
        directory: Path,
        open_directory: Callable[[], DirectorySpanCache],
        memory: MemorySpanCache,
        notice: FallbackNotice,
    ) -> None:
        self.directory = Path(directory)
        self._memory = memory
        self._notice = notice
        self._disk: DirectorySpanCache | None = None
        self.degraded = False
        try:
            self._disk = open_directory()
        except OSError as exc:
            self._degrade(exc)

    def _degrade(self, exc: OSError) -> None:
        if not self.degraded:
            self.degraded = True
            self._notice.degraded(self.directory, exc)

    def _from_disk(self, read: Callable[[DirectorySpanCache], bytes | None]) -> bytes | None:
        if self._disk is None:
            return None
        try:
            return read(self._disk)
        except OSError as exc:
            self._degrade(exc)
            return None

    def get(self, key: str) -> bytes | None:
        if self.degraded:
            data = self._memory.get(check_key(key))
            if data is not None:
                return data
        return self._from_disk(lambda disk: disk.get(key))

    def read(self, key: str, offset: int, length: int) -> bytes | None:
        if self.degraded:
            data = self._memory.read(check_key(key), offset, length)
            if data is not None:
                return data
        return self._from_disk(lambda disk: disk.read(key, offset, length))

    def contains(self, key: str) -> bool:
        if self.degraded and self._memory.contains(check_key(key)):
            return True
        if self._disk is None:
            return False
        try:
            return self._disk.contains(key)
        except OSError as exc:
            self._degrade(exc)
            return False

    def advise(self, keys: Sequence[str]) -> None:
        if self._disk is not None:
            with contextlib.suppress(OSError):
                self._disk.advise(keys)

    def writer(self, key: str) -> _BufferedWriter:
        return _BufferedWriter(self, check_key(key))

    def put(self, key: str, data: bytes | bytearray | memoryview) -> None:
        if not self.degraded and self._disk is not None:
            try:
                self._disk.put(key, data)
                return
            except OSError as exc:
                self._degrade(exc)
        self._memory.put(key, data)

    def remove(self, key: str) -> None:
        self._memory.remove(check_key(key))
        if self._disk is not None:
            with contextlib.suppress(OSError):
                self._disk.remove(key)

    def statistics(self) -> CacheStatistics:
        parts = [self._memory.statistics()] + ([self._disk.statistics()] if self._disk is not None else [])
        return CacheStatistics(*(sum(getattr(p, f) for p in parts) for f in CacheStatistics.__slots__))

    def close(self) -> None:
        self._memory.close()
        if self._disk is not None:
            self._disk.close()

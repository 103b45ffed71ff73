"""``MemorySpanCache``: an LRU of whole entries in memory (upstream's ``filesystem_cache_type = "memory"``)."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence

from soci.cache.base import CacheStatistics, check_key
from soci.errors import InvalidArgument


class _MemoryWriter:
    def __init__(self, cache: MemorySpanCache, key: str) -> None:
        self._cache = cache
        self._key = key
        self._buf: bytearray | None = bytearray()

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self._buf is None:
            raise InvalidArgument(f"span cache entry {self._key}: write after commit or abort")
        self._buf += data

    def commit(self) -> None:
        if self._buf is None:
            raise InvalidArgument(f"span cache entry {self._key}: commit after commit or abort")
        data, self._buf = bytes(self._buf), None
        self._cache._store(self._key, data)

    def abort(self) -> None:
        self._buf = None


class MemorySpanCache:
    """Keeps at most ``max_entries`` entries (and ``max_bytes`` bytes when given), least recently used out first."""

    def __init__(self, max_entries: int = 10, max_bytes: int | None = None) -> None:
        if max_entries <= 0:
            raise InvalidArgument(f"memory span cache: max_entries {max_entries} must be positive")
        self._max_entries = max_entries
        self._max_bytes = max_bytes
        self._entries: OrderedDict[str, bytes] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self._hits = self._misses = self._commits = self._evictions = 0

    def get(self, key: str) -> bytes | None:
        with self._lock:
            data = self._entries.get(key)
            if data is None:
                self._misses += 1
                return None
            self._entries.move_to_end(key)
            self._hits += 1
            return data

    def read(self, key: str, offset: int, length: int) -> bytes | None:
        data = self.get(key)
        return None if data is None else data[offset : offset + length]

    def contains(self, key: str) -> bool:
        with self._lock:
            return key in self._entries

    def advise(self, keys: Sequence[str]) -> None:
        return None

    def writer(self, key: str) -> _MemoryWriter:
        return _MemoryWriter(self, check_key(key))

    def put(self, key: str, data: bytes | bytearray | memoryview) -> None:
        self._store(check_key(key), bytes(data))

    def _store(self, key: str, data: bytes) -> None:
        with self._lock:
            old = self._entries.pop(key, None)
            if old is not None:
                self._bytes -= len(old)
            self._entries[key] = data
            self._bytes += len(data)
            self._commits += 1
            while len(self._entries) > self._max_entries or (
                self._max_bytes is not None and self._bytes > self._max_bytes and len(self._entries) > 1
            ):
                _, evicted = self._entries.popitem(last=False)
                self._bytes -= len(evicted)
                self._evictions += 1

    def remove(self, key: str) -> None:
        with self._lock:
            old = self._entries.pop(key, None)
            if old is not None:
                self._bytes -= len(old)

    def statistics(self) -> CacheStatistics:
        with self._lock:
            return CacheStatistics(
                len(self._entries), self._bytes, self._hits, self._misses, self._commits, self._evictions
            )

    def close(self) -> None:
        with self._lock:
            self._entries.clear()
            self._bytes = 0

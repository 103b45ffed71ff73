"""MemorySpanCache: LRU order, byte budget, writer semantics."""

from __future__ import annotations

import pytest

from soci.cache import MemorySpanCache
from soci.errors import InvalidArgument


def test_least_recently_used_goes_first() -> None:
    cache = MemorySpanCache(max_entries=2)
    cache.put("a", b"1")
    cache.put("b", b"2")
    assert cache.get("a") == b"1"  # a is now the most recent
    cache.put("c", b"3")
    assert cache.get("b") is None
    assert cache.get("a") == b"1"
    assert cache.get("c") == b"3"
    stats = cache.statistics()
    assert (stats.entries, stats.evictions, stats.commits) == (2, 1, 3)


def test_byte_budget() -> None:
    cache = MemorySpanCache(max_entries=100, max_bytes=10)
    cache.put("a", b"x" * 6)
    cache.put("b", b"y" * 6)
    assert not cache.contains("a")
    assert cache.read("b", 2, 2) == b"yy"
    assert cache.statistics().bytes == 6


def test_writer_invisible_until_commit() -> None:
    cache = MemorySpanCache()
    w = cache.writer("k")
    w.write(b"ab")
    assert cache.get("k") is None
    w.commit()
    assert cache.get("k") == b"ab"
    with pytest.raises(InvalidArgument):
        w.write(b"c")

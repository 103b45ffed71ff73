"""CacheBudget: one LRU size limit over all span cache directories of a root, kept across restarts."""

from __future__ import annotations

import os
from pathlib import Path

from soci.cache import DirectorySpanCache
from soci.cache.budget import CacheBudget


def disk_bytes(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())


def test_limit_is_shared_and_least_recently_used_go_first(tmp_path: Path) -> None:
    budget = CacheBudget(tmp_path, 4000)
    a = DirectorySpanCache(tmp_path / "a", budget=budget)
    b = DirectorySpanCache(tmp_path / "b", budget=budget)
    a.put("u0", b"0" * 1000)
    b.put("u0", b"1" * 1000)
    a.put("u1", b"2" * 1000)
    b.put("u1", b"3" * 1000)
    assert a.read("u0", 0, 1) == b"0"  # now the most recently used
    a.put("u2", b"4" * 1000)  # over the limit: b/u0 is the least recently used
    assert b.get("u0") is None
    assert a.get("u0") == b"0" * 1000
    assert budget.total_bytes == disk_bytes(tmp_path) == 4000
    assert b.statistics().evictions == 1 and b.statistics().entries == 1


def test_an_entry_held_open_by_a_reader_is_skipped(tmp_path: Path) -> None:
    budget = CacheBudget(tmp_path, 2000)
    cache = DirectorySpanCache(tmp_path / "a", budget=budget)
    cache.put("u0", b"a" * 1000)
    cache.put("u1", b"b" * 1000)
    handle = cache._acquire("u0")  # a reader inside pread
    assert handle is not None
    cache.put("u2", b"c" * 1000)
    assert cache.contains("u0") and not cache.contains("u1")
    assert os.pread(handle.fd, 1, 0) == b"a"
    cache._release(handle)


def test_restart_counts_what_is_on_disk_and_trims_oldest(tmp_path: Path) -> None:
    cache = DirectorySpanCache(tmp_path / "a")
    for i in range(5):
        cache.put(f"u{i}", bytes([i]) * 1000)
        os.utime(tmp_path / "a" / f"u{i}", (1000 + i, 1000 + i))
    cache.close()
    budget = CacheBudget(tmp_path, 3000)  # a lower limit than the last run had
    assert budget.total_bytes == 3000
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["u2", "u3", "u4"]
    reopened = DirectorySpanCache(tmp_path / "a", budget=budget)
    reopened.put("u5", b"5" * 1000)
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["u3", "u4", "u5"]
    assert budget.total_bytes == disk_bytes(tmp_path)

"""DirectorySpanCache: atomic commit, ranged reads, crash leftovers, descriptor LRU under threads."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from soci.cache import DirectorySpanCache
from soci.errors import InvalidArgument


def test_nothing_visible_before_commit(tmp_path: Path) -> None:
    cache = DirectorySpanCache(tmp_path / "c")
    writer = cache.writer("u7")
    writer.write(b"hello ")
    writer.write(memoryview(b"world"))
    assert cache.get("u7") is None
    assert not cache.contains("u7")
    assert [p.name for p in (tmp_path / "c").iterdir() if not p.name.startswith(".tmp-")] == []
    writer.commit()
    assert cache.get("u7") == b"hello world"
    assert cache.read("u7", 6, 100) == b"world"
    assert cache.contains("u7")
    assert cache.statistics().entries == 1
    assert cache.statistics().bytes == 11


def test_abort_leaves_nothing(tmp_path: Path) -> None:
    cache = DirectorySpanCache(tmp_path)
    writer = cache.writer("k")
    writer.write(b"x" * 100)
    writer.abort()
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(InvalidArgument):
        writer.commit()


def test_crash_leftovers_removed_and_entries_survive_reopen(tmp_path: Path) -> None:
    cache = DirectorySpanCache(tmp_path)
    cache.put("u1", b"abc")
    cache.writer("u2").write(b"partial")  # never committed, as after a crash
    cache.close()
    reopened = DirectorySpanCache(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["u1"]
    assert reopened.get("u1") == b"abc"
    assert reopened.statistics().entries == 1


def test_replacing_an_entry_is_seen_by_later_reads(tmp_path: Path) -> None:
    cache = DirectorySpanCache(tmp_path, max_open_files=1)
    cache.put("a", b"old-data")
    assert cache.read("a", 0, 3) == b"old"  # descriptor now cached
    cache.put("a", b"new-data")
    assert cache.read("a", 0, 3) == b"new"
    cache.remove("a")
    assert cache.read("a", 0, 3) is None
    assert cache.get("a") is None


@pytest.mark.parametrize("key", ["", ".hidden", "a/b", "../x", "x" * 200])
def test_keys_must_be_plain_names(tmp_path: Path, key: str) -> None:
    cache = DirectorySpanCache(tmp_path)
    with pytest.raises(InvalidArgument):
        cache.put(key, b"")


def test_parallel_reads_with_descriptor_eviction_never_mix_files(tmp_path: Path) -> None:
    cache = DirectorySpanCache(tmp_path, max_open_files=2)
    contents = {f"s{i}": bytes([i]) * 4096 for i in range(16)}
    for key, data in contents.items():
        cache.put(key, data)
    errors: list[str] = []

    def reader(seed: int) -> None:
        for n in range(400):
            key = f"s{(seed * 7 + n) % 16}"
            got = cache.read(key, n % 4000, 64)
            if got != contents[key][n % 4000 : n % 4000 + 64]:
                errors.append(key)

    threads = [threading.Thread(target=reader, args=(t,)) for t in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    cache.close()
    # every descriptor closed: the process holds none on the cache directory any more
    held = [os.readlink(f"/proc/self/fd/{fd}") for fd in os.listdir("/proc/self/fd") if _is_link(fd)]
    assert not [p for p in held if p.startswith(str(tmp_path))]


def _is_link(fd: str) -> bool:
    try:
        os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return False
    return True

"""``DirectorySpanCache``: one file per entry under a directory; commit is an atomic rename.

A writer fills a hidden temporary file next to the final one and renames it into place on commit, so
readers (and a later process reusing the directory) only ever see complete entries. Temporary files
left behind by a crash are removed when the directory is opened. Reads use ``pread`` through a small
LRU of open descriptors (upstream's ``max_cache_fds``). With a ``CacheBudget`` (shared by all layers'
caches under one root) entries count toward one size limit and the least recently used are evicted.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import threading
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path

from soci.cache.base import CacheStatistics, check_key
from soci.cache.budget import CacheBudget
from soci.errors import InvalidArgument

_TMP_PREFIX = ".tmp-"


class _Handle:
    __slots__ = ("fd", "retired", "users")

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.users = 0
        self.retired = False


class _FileWriter:
    def __init__(self, cache: DirectorySpanCache, key: str) -> None:
        self._cache = cache
        self._key = key
        self._tmp = cache.directory / f"{_TMP_PREFIX}{key}-{secrets.token_hex(6)}"
        self._fd: int | None = os.open(self._tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        self._size = 0

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self._fd is None:
            raise InvalidArgument(f"span cache entry {self._key}: write after commit or abort")
        view = memoryview(data)
        while view:
            written = os.write(self._fd, view)
            view = view[written:]
            self._size += written

    def commit(self) -> None:
        fd, self._fd = self._fd, None
        if fd is None:
            raise InvalidArgument(f"span cache entry {self._key}: commit after commit or abort")
        try:
            if self._cache.fsync:
                os.fsync(fd)
        finally:
            os.close(fd)
        try:
            self._cache._committed(self._key, self._tmp, self._size)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._tmp)
            raise

    def abort(self) -> None:
        fd, self._fd = self._fd, None
        if fd is None:
            return
        os.close(fd)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._tmp)


class DirectorySpanCache:
    """Entries are files ``<directory>/<key>``.

    Args:
        directory: created (mode 0700) if missing.
        max_open_files: descriptors kept open for reads.
        fsync: flush each entry to disk before it becomes visible.
        budget: the size limit this directory shares with its siblings (``directory`` must be a child of
            ``budget.root``); None: unlimited.
    """

    def __init__(
        self, directory: Path, *, max_open_files: int = 10, fsync: bool = False, budget: CacheBudget | None = None
    ) -> None:
        if max_open_files <= 0:
            raise InvalidArgument(f"directory span cache: max_open_files {max_open_files} must be positive")
        self.directory = Path(directory)
        self.fsync = fsync
        self._max_open_files = max_open_files
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._lock = threading.Lock()
        self._fds: OrderedDict[str, _Handle] = OrderedDict()
        self._sizes: dict[str, int] = {}
        self._hits = self._misses = self._commits = self._evictions = 0
        for entry in os.scandir(self.directory):
            if entry.name.startswith(_TMP_PREFIX):
                with contextlib.suppress(OSError):  # a read-only directory still serves its entries
                    os.unlink(entry.path)
            elif entry.is_file(follow_symlinks=False):
                self._sizes[entry.name] = entry.stat(follow_symlinks=False).st_size
        self._budget = budget
        if budget is not None:
            if self.directory.parent != budget.root:
                raise InvalidArgument(f"span cache {self.directory} is not directly under {budget.root}")
            budget.attach(self.directory.name, self, dict(self._sizes))

    def _acquire(self, key: str) -> _Handle | None:
        """A pinned open descriptor for ``key``; None when there is no such entry. Release with _release."""
        with self._lock:
            handle = self._fds.get(check_key(key))
            if handle is not None:
                self._fds.move_to_end(key)
                handle.users += 1
                return handle
        try:
            fd = os.open(self.directory / key, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return None
        with self._lock:
            handle = self._fds.get(key)
            if handle is not None:
                os.close(fd)
            else:
                handle = self._fds[key] = _Handle(fd)
                while len(self._fds) > self._max_open_files:
                    _, old = self._fds.popitem(last=False)
                    self._retire(old)
            handle.users += 1
            return handle

    def _release(self, handle: _Handle) -> None:
        with self._lock:
            handle.users -= 1
            if handle.retired and not handle.users:
                os.close(handle.fd)

    @staticmethod
    def _retire(handle: _Handle) -> None:
        """Close once unused (caller holds the lock): a reader may still be inside pread on it."""
        handle.retired = True
        if not handle.users:
            os.close(handle.fd)

    def get(self, key: str) -> bytes | None:
        path = self.directory / check_key(key)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            self._count(hit=False)
            return None
        self._count(hit=True, key=key)
        return data

    def read(self, key: str, offset: int, length: int) -> bytes | None:
        if offset < 0 or length < 0:
            raise InvalidArgument(f"span cache entry {key}: invalid range offset={offset} length={length}")
        handle = self._acquire(key)
        if handle is None:
            self._count(hit=False)
            return None
        try:
            data = os.pread(handle.fd, length, offset)
        finally:
            self._release(handle)
        self._count(hit=True, key=key)
        return data

    def contains(self, key: str) -> bool:
        with self._lock:
            if check_key(key) in self._sizes:
                return True
        return (self.directory / key).is_file()

    def advise(self, keys: Sequence[str]) -> None:
        """Start the kernel reading these files into the page cache (``POSIX_FADV_WILLNEED``)."""
        for key in keys:
            try:
                fd = os.open(self.directory / check_key(key), os.O_RDONLY | os.O_CLOEXEC)
            except FileNotFoundError:
                continue
            try:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_WILLNEED)
            finally:
                os.close(fd)

    def writer(self, key: str) -> _FileWriter:
        return _FileWriter(self, check_key(key))

    def put(self, key: str, data: bytes | bytearray | memoryview) -> None:
        writer = self.writer(key)
        try:
            writer.write(data)
        except BaseException:
            writer.abort()
            raise
        writer.commit()

    def _committed(self, key: str, tmp: Path, size: int) -> None:
        os.replace(tmp, self.directory / key)
        with self._lock:
            self._sizes[key] = size
            self._commits += 1
            handle = self._fds.pop(key, None)  # a descriptor of a replaced file would read the old content
            if handle is not None:
                self._retire(handle)
        if self._budget is not None:
            self._budget.added(self.directory.name, key, size)

    def remove(self, key: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.directory / check_key(key))
        with self._lock:
            if self._sizes.pop(key, None) is not None:
                self._evictions += 1
            handle = self._fds.pop(key, None)
            if handle is not None:
                self._retire(handle)
        if self._budget is not None:
            self._budget.removed(self.directory.name, key)

    def _count(self, *, hit: bool, key: str = "") -> None:
        with self._lock:
            if hit:
                self._hits += 1
            else:
                self._misses += 1
        if hit and self._budget is not None:
            self._budget.used(self.directory.name, key)

    def _evict(self, key: str) -> bool:
        """Delete ``key`` for the budget (which holds its own lock); False while a reader holds it open."""
        with self._lock:
            handle = self._fds.get(key)
            if handle is not None:
                if handle.users:
                    return False
                del self._fds[key]
                self._retire(handle)
            with contextlib.suppress(OSError):  # read-only: the entry is forgotten, the budget goes on
                os.unlink(self.directory / key)
            if self._sizes.pop(key, None) is not None:
                self._evictions += 1
            return True

    def statistics(self) -> CacheStatistics:
        with self._lock:
            return CacheStatistics(
                len(self._sizes), sum(self._sizes.values()), self._hits, self._misses, self._commits, self._evictions
            )

    def close(self) -> None:
        with self._lock:
            handles, self._fds = list(self._fds.values()), OrderedDict()
            for handle in handles:
                self._retire(handle)
        if self._budget is not None:
            self._budget.detach(self.directory.name, self)

"""``CacheBudget``: one size limit for every span cache directory under a common root (the daemon's spancache).

Each layer has its own ``DirectorySpanCache`` (``<root>/<zTOC digest hex>/``), but disk is shared, so the
limit is kept by one accountant that knows every entry file under the root, in least recently used order.
When a commit takes the total over the limit, the least recently used entries are deleted until it is under
again; an entry whose descriptor a reader holds is skipped (deleting it would not free the space until the
reader closes it). An evicted span is simply fetched again, verified as always. On start the accountant
counts what earlier runs left on disk (file modification time as the recency) and trims it to the limit.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Protocol

from soci.errors import InvalidArgument

log = logging.getLogger(__name__)

DEFAULT_MAX_SIZE_BYTES = 10 << 30
FILESYSTEM_FRACTION = 0.5
"""The limit never exceeds this share of the cache filesystem's size: a full disk stops the whole node."""

_Entry = tuple[str, str]  # (directory name under the root, key)


class _Evictable(Protocol):
    def _evict(self, key: str) -> bool: ...


class CacheBudget:
    """Args: root: the directory whose subdirectories are span caches; max_size_bytes: the limit (> 0)."""

    def __init__(self, root: Path, max_size_bytes: int) -> None:
        if max_size_bytes <= 0:
            raise InvalidArgument(f"span cache size limit {max_size_bytes} must be positive")
        self.root = Path(root)
        self.max_size_bytes = max_size_bytes
        self._lock = threading.Lock()
        self._entries: OrderedDict[_Entry, int] = OrderedDict()
        self._total = 0
        self._caches: dict[str, _Evictable] = {}
        self.evictions = 0
        self._scan()
        with self._lock:
            self._trim()

    def _scan(self) -> None:
        found: list[tuple[float, _Entry, int]] = []
        try:
            directories = list(os.scandir(self.root))
        except OSError:  # missing or unreadable: nothing to count (the caches degrade to memory)
            return
        for directory in directories:
            if not directory.is_dir(follow_symlinks=False):
                continue
            with contextlib.suppress(OSError):
                for entry in os.scandir(directory.path):
                    if entry.name.startswith(".") or not entry.is_file(follow_symlinks=False):
                        continue  # temporary files are removed when their cache is opened
                    st = entry.stat(follow_symlinks=False)
                    found.append((st.st_mtime, (directory.name, entry.name), st.st_size))
        for _, name, size in sorted(found):
            self._entries[name] = size
            self._total += size

    @property
    def total_bytes(self) -> int:
        with self._lock:
            return self._total

    def attach(self, name: str, cache: _Evictable, sizes: dict[str, int]) -> None:
        """``cache`` serves ``<root>/<name>``; ``sizes``: the entries it found there."""
        with self._lock:
            self._caches[name] = cache
            for key, size in sizes.items():
                if (name, key) not in self._entries:
                    self._entries[(name, key)] = size
                    self._total += size
            self._trim()

    def detach(self, name: str, cache: _Evictable) -> None:
        with self._lock:
            if self._caches.get(name) is cache:
                del self._caches[name]

    def added(self, name: str, key: str, size: int) -> None:
        """A committed entry (replacing any earlier one of that key): count it and keep to the limit."""
        with self._lock:
            self._total += size - self._entries.pop((name, key), 0)
            self._entries[(name, key)] = size
            self._trim()

    def used(self, name: str, key: str) -> None:
        with self._lock:
            if (name, key) in self._entries:
                self._entries.move_to_end((name, key))

    def removed(self, name: str, key: str) -> None:
        with self._lock:
            self._total -= self._entries.pop((name, key), 0)

    def forget(self, name: str) -> None:
        """``<root>/<name>`` was deleted as a whole."""
        with self._lock:
            for entry in [e for e in self._entries if e[0] == name]:
                self._total -= self._entries.pop(entry)

    def _trim(self) -> None:
        """Evict least recently used entries until under the limit (caller holds the lock)."""
        if self._total <= self.max_size_bytes:
            return
        for entry in list(self._entries):
            if self._total <= self.max_size_bytes:
                break
            name, key = entry
            cache = self._caches.get(name)
            if cache is not None:
                if not cache._evict(key):
                    continue  # a reader holds it open
            else:
                with contextlib.suppress(OSError):  # read-only: forgotten all the same
                    os.unlink(self.root / name / key)
            self._total -= self._entries.pop(entry)
            self.evictions += 1
        if self._total > self.max_size_bytes:
            log.debug("span cache %s: %d bytes in use, over the %d-byte limit while readers hold entries open",
                      self.root, self._total, self.max_size_bytes)  # fmt: skip


def effective_limit(root: Path, configured: int) -> int:
    """``configured`` (0: the default), capped at ``FILESYSTEM_FRACTION`` of the filesystem holding ``root``."""
    limit = configured if configured > 0 else DEFAULT_MAX_SIZE_BYTES
    probe = Path(root)
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    try:
        st = os.statvfs(probe)
    except OSError:
        return limit
    cap = int(st.f_blocks * st.f_frsize * FILESYSTEM_FRACTION)
    if 0 < cap < limit:
        log.info("span cache limit %d bytes capped at %d (%.0f%% of the filesystem holding %s)",
                 limit, cap, FILESYSTEM_FRACTION * 100, probe)  # fmt: skip
        return cap
    return limit

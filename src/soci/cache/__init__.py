"""Span caches: keyed byte blobs that become visible only when committed.

``DirectorySpanCache`` keeps one file per entry (the default, under ``<root>/soci/spancache/``);
``MemorySpanCache`` is an in-memory LRU (``filesystem_cache_type = "memory"``).
"""

from soci.cache.base import CacheStatistics as CacheStatistics
from soci.cache.base import CacheWriter as CacheWriter
from soci.cache.base import SpanCache as SpanCache
from soci.cache.base import check_key as check_key
from soci.cache.directory import DirectorySpanCache as DirectorySpanCache
from soci.cache.fallback import FallbackNotice as FallbackNotice
from soci.cache.fallback import FallbackSpanCache as FallbackSpanCache
from soci.cache.memory import MemorySpanCache as MemorySpanCache

__all__ = [
    "CacheStatistics", "CacheWriter", "DirectorySpanCache", "FallbackNotice", "FallbackSpanCache", "MemorySpanCache",
    "SpanCache", "check_key",
]  # fmt: skip

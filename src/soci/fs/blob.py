"""``BlobReader``: what the read path needs from a remote layer blob (``soci.registry.RemoteBlob`` fits)."""

from __future__ import annotations

from typing import Protocol


class BlobReader(Protocol):
    @property
    def size(self) -> int: ...

    async def read_at(self, offset: int, length: int) -> bytes:
        """Bytes ``[offset, offset + length)`` (fewer only where the blob ends); Unavailable on failure."""
        ...

    async def refresh(self) -> None: ...

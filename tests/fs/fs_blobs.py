"""In-memory BlobReaders for span manager tests: counting, corrupting, failing, slow."""

from __future__ import annotations

import asyncio

from soci.errors import Unavailable


class MemoryBlob:
    """A blob in memory that records every ``read_at`` and can misbehave on demand."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.reads: list[tuple[int, int]] = []
        self.corrupt_next = 0  # flip a bit in the next N answers
        self.fail_next = 0  # raise Unavailable for the next N calls
        self.delay_sec = 0.0

    @property
    def size(self) -> int:
        return len(self.data)

    async def read_at(self, offset: int, length: int) -> bytes:
        self.reads.append((offset, length))
        if self.delay_sec:
            await asyncio.sleep(self.delay_sec)
        else:
            await asyncio.sleep(0)  # let concurrent readers pile up, as a network round trip would
        if self.fail_next:
            self.fail_next -= 1
            raise Unavailable("injected registry failure")
        out = self.data[offset : offset + length]
        if self.corrupt_next and out:
            self.corrupt_next -= 1
            out = bytes([out[0] ^ 0x40]) + out[1:]
        return out

    async def refresh(self) -> None:
        return None

"""Let the synchronous index builder (worker threads) read blobs that an asyncio client streams.

The producer coroutine runs on the caller's event loop and hands bytes over in about 1 MiB pieces through a
bounded queue, so download and inflate overlap and memory stays bounded.
"""

from __future__ import annotations

import asyncio
import io
import queue
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from concurrent.futures import Future
from contextlib import aclosing
from typing import Any, BinaryIO, cast

_QUEUE_CHUNKS = 8
_HANDOFF_BYTES = 1 << 20
_END = object()


class _StreamReader(io.RawIOBase):
    """The sync end of a blob stream that a coroutine on the event loop fills."""

    def __init__(self, chunks: queue.Queue[Any], producer: Future[None]) -> None:
        self._chunks = chunks
        self._producer = producer
        self._pending = memoryview(b"")
        self._done = False

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        while not self._pending and not self._done:
            item = self._chunks.get()
            if item is _END:
                self._done = True
            elif isinstance(item, BaseException):
                self._done = True
                raise item
            else:
                self._pending = memoryview(item)
        n = min(len(buffer), len(self._pending))
        buffer[:n] = self._pending[:n]
        self._pending = self._pending[n:]
        return n

    def close(self) -> None:
        if not self._producer.done():
            self._producer.cancel()
        while True:  # unblock a producer waiting on a full queue
            try:
                self._chunks.get_nowait()
            except queue.Empty:
                break
        super().close()


def open_stream(loop: asyncio.AbstractEventLoop, stream: Callable[[], AsyncIterator[bytes]]) -> BinaryIO:
    """A file object reading what ``stream()`` (an async generator, started on ``loop``) yields."""
    chunks: queue.Queue[Any] = queue.Queue(maxsize=_QUEUE_CHUNKS)

    async def produce() -> None:
        try:
            pending: list[bytes] = []
            size = 0
            async with aclosing(cast(AsyncGenerator[bytes, None], stream())) as source:
                async for chunk in source:
                    # one thread hop per socket chunk costs more than the copy into 1 MiB pieces
                    pending.append(chunk)
                    size += len(chunk)
                    if size >= _HANDOFF_BYTES:
                        await asyncio.to_thread(chunks.put, b"".join(pending))
                        pending, size = [], 0
            if pending:
                await asyncio.to_thread(chunks.put, b"".join(pending))
            await asyncio.to_thread(chunks.put, _END)
        except asyncio.CancelledError:
            raise
        except BaseException as exc:
            await asyncio.to_thread(chunks.put, exc)

    producer = asyncio.run_coroutine_threadsafe(produce(), loop)
    return io.BufferedReader(_StreamReader(chunks, producer), buffer_size=1 << 20)


def run_on(loop: asyncio.AbstractEventLoop, coro: Any) -> Any:
    """Run ``coro`` on ``loop`` from a worker thread and wait for its result."""
    return asyncio.run_coroutine_threadsafe(coro, loop).result()

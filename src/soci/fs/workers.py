"""A layer's CPU-bound work (its zTOC's parse into a tree, its EROFS image) in worker processes.

The daemon's Python has one GIL: a parse or an image of 7,000-22,000 entries takes 0.1-0.7 s, and done in a
thread it delays every other layer's mount and the requests the daemon serves meanwhile. Worker processes run
them on the machine's other cores, and the results come back pickled (about 20 ms for 22,000 entries: the tree
is arrays and bytes). The workers are spawned, not forked (the daemon has threads: gRPC's, libfuse's), when the
daemon starts, so the first layer does not wait for an interpreter to start.

A worker that dies (killed, out of memory) is logged and replaced; the call that lost it runs in a thread of
the daemon instead, so the mount goes on. Errors raised by the work itself (a hostile zTOC) come back as raised.
Workers die with the daemon, even with ``kill -9`` (the kernel's parent-death signal): a crash leaves none.
"""

from __future__ import annotations

import asyncio
import ctypes
import importlib
import logging
import multiprocessing
import os
import signal
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")
_PR_SET_PDEATHSIG = 1  # linux/prctl.h


def _die_with(parent: int) -> None:
    """In a worker, at its start: be killed when the daemon dies (``kill -9`` too), or exit if it already has."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
    if os.getppid() != parent:
        os._exit(0)


def _ready() -> bool:
    # imported here, in the worker, so that its first real call does not pay for these imports
    for module in ("soci.fs.erofs", "soci.fs.ztoc_reader"):
        importlib.import_module(module)
    return True


class CpuWorkers:
    """``count`` worker processes for picklable CPU-bound calls; ``count`` 0: every call runs in a thread."""

    def __init__(self, count: int) -> None:
        self.count = max(0, count)
        self._pool: ProcessPoolExecutor | None = None

    def start(self) -> None:
        """Spawn the workers now (each imports the layer code once) instead of at the first call."""
        if self.count and self._pool is None:
            # the workers are spawned by the thread that calls this (the event loop's), which lives as long as the
            # daemon: the kernel's parent-death signal follows that thread
            self._pool = ProcessPoolExecutor(
                self.count,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_die_with,
                initargs=(os.getpid(),),
            )
            for _ in range(self.count):  # one task per worker: the pool spawns a process for each one waiting
                self._pool.submit(_ready)

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        if not self.count:
            return await asyncio.to_thread(fn, *args)
        self.start()
        assert self._pool is not None
        pool = self._pool
        try:
            return await asyncio.get_running_loop().run_in_executor(pool, fn, *args)
        except BrokenProcessPool as exc:
            log.warning("a layer worker process died (%s); starting new ones, this call runs in a thread", exc)
            if self._pool is pool:
                self._pool = None
                pool.shutdown(wait=False, cancel_futures=True)
            return await asyncio.to_thread(fn, *args)

    async def aclose(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            await asyncio.to_thread(pool.shutdown, wait=True, cancel_futures=True)

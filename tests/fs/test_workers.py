"""CpuWorkers: a layer's parse and EROFS image in worker processes, with their results and errors as in-process."""

from __future__ import annotations

import functools
import io
import logging
import os
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest

from soci.errors import FormatError
from soci.formats.ztoc_codec import marshal_ztoc
from soci.fs import erofs
from soci.fs.workers import CpuWorkers
from soci.fs.ztoc_reader import load_ztoc
from soci.index.ztoc_builder import build_ztoc
from soci.testing.images import gzip_layer


def _ztoc() -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for i in range(50):
            data = b"%d\n" % i * 1000
            info = tarfile.TarInfo(f"dir-{i % 5}/file-{i}")
            info.size, info.mtime = len(data), 1_700_000_000
            tar.addfile(info, io.BytesIO(data))
    return marshal_ztoc(build_ztoc(io.BytesIO(gzip_layer(buffer.getvalue()).blob), span_size=1 << 16, algorithm="gzip"))


def _die_outside(parent: int) -> int:
    """Kills the worker process it runs in; in the parent's own thread it returns the parent's pid."""
    if os.getpid() != parent:
        os._exit(3)
    return parent


async def test_a_zToC_is_parsed_and_its_image_written_in_another_process_as_in_this_one() -> None:
    z = _ztoc()
    workers = CpuWorkers(2)
    workers.start()
    try:
        assert await workers.run(os.getpid) != os.getpid()
        info, tree = await workers.run(load_ztoc, z)
        local_info, local_tree = load_ztoc(z)
        assert info == local_info
        assert [tree.path(i) for i in range(1, tree.inode_count + 1)] == [
            local_tree.path(i) for i in range(1, local_tree.inode_count + 1)
        ]
        write = functools.partial(erofs.image_for_tree, opaque_xattr=b"user.overlay.opaque", xattrs=False)
        image = await workers.run(write, tree, info.uncompressed_archive_size)
        assert image == write(local_tree, info.uncompressed_archive_size)
        with pytest.raises(FormatError):  # the work's own error comes back as raised
            await workers.run(load_ztoc, b"\x00" * 64)
    finally:
        await workers.aclose()


async def test_a_worker_that_dies_is_replaced_and_its_call_runs_in_a_thread(caplog: pytest.LogCaptureFixture) -> None:
    workers = CpuWorkers(1)
    try:
        with caplog.at_level(logging.WARNING, logger="soci.fs.workers"):
            assert await workers.run(_die_outside, os.getpid()) == os.getpid()
        assert "a layer worker process died" in caplog.text
        assert await workers.run(os.getpid) != os.getpid()  # a new worker
    finally:
        await workers.aclose()


async def test_no_workers_means_the_daemons_threads() -> None:
    workers = CpuWorkers(0)
    workers.start()
    assert await workers.run(os.getpid) == os.getpid()
    await workers.aclose()


_DAEMON = """
import asyncio, os
from soci.fs.workers import CpuWorkers
async def main():
    workers = CpuWorkers(2)
    workers.start()
    print(await workers.run(os.getpid), flush=True)
    await asyncio.sleep(600)
asyncio.run(main())
"""


def _children(pid: int) -> list[int]:
    return [int(c) for f in Path(f"/proc/{pid}/task").glob("*/children") for c in f.read_text().split()]


def _alive(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return "\nState:\tZ" not in status  # a zombie has died


def test_the_workers_die_with_a_daemon_killed_with_sigkill() -> None:
    daemon = subprocess.Popen([sys.executable, "-c", _DAEMON], stdout=subprocess.PIPE, text=True)
    try:
        assert daemon.stdout is not None
        worker = int(daemon.stdout.readline())
        workers = [pid for pid in _children(daemon.pid) if "spawn_main" in Path(f"/proc/{pid}/cmdline").read_text()]
        assert worker in workers and len(workers) == 2
    finally:
        daemon.kill()
        daemon.wait()
    deadline = time.monotonic() + 30
    while any(_alive(pid) for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(_alive(pid) for pid in workers), "worker processes outlived their daemon"

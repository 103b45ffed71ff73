"""Recording: the daemon's read log, and a window of it turned into a load order document.

With ``[load_order] record = true`` the daemon appends one JSON line per FUSE read to
``<root>/soci/load-order/reads.jsonl``: ``[monotonic_ns, layer digest, path, offset, length]``.
``CLOCK_MONOTONIC`` is shared by every process on the machine, so ``soci load-order record`` notes the
clock and the file size when the workload starts, and keeps the lines of its window and its image's
layers. The log is emptied when it passes ``max_bytes`` (a window across that point loses its head).
Reads reach FUSE only when the kernel has not cached the pages, so the recorder drops the page cache
first.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Final

from soci.errors import FailedPrecondition
from soci.formats.load_order import LoadOrder, Read, build_load_order
from soci.fs.layer import Layer
from soci.fs.tree import LayerTree

log = logging.getLogger(__name__)

READ_LOG: Final = Path("soci") / "load-order" / "reads.jsonl"
"""Under the daemon root."""
MAX_LOG_BYTES: Final = 256 << 20
_CHECK_EVERY_NS: Final = 1_000_000_000


class ReadLog:
    """Daemon side: appends every read of the layers it is attached to."""

    def __init__(self, path: Path, *, max_bytes: int = MAX_LOG_BYTES) -> None:
        self.path = path
        self._max_bytes = max_bytes
        path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = self._open()
        self._next_check = 0

    def _open(self) -> int:
        return os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)

    def attach(self, layer: Layer) -> None:
        digest, tree = layer.digest, layer.tree

        def on_read(ino: int, offset: int, length: int) -> None:
            self.write(digest, tree, ino, offset, length)

        layer.reader.on_read = on_read

    def write(self, digest: str, tree: LayerTree, ino: int, offset: int, length: int) -> None:
        now = time.monotonic_ns()
        try:
            path = tree.path(ino).decode()
        except UnicodeDecodeError:
            return  # documents are JSON text: a file whose name is not UTF-8 cannot be listed
        line = json.dumps([now, digest, path, offset, length], ensure_ascii=False) + "\n"
        try:
            if now >= self._next_check:
                self._next_check = now + _CHECK_EVERY_NS
                self._check()
            os.write(self._fd, line.encode())
        except OSError as exc:  # recording is best effort: never fail a read
            log.warning("load order read log %s: %s", self.path, exc)

    def _check(self) -> None:
        st = os.fstat(self._fd)
        if st.st_nlink == 0:  # removed: start a new one
            os.close(self._fd)
            self._fd = self._open()
        elif st.st_size > self._max_bytes:
            os.ftruncate(self._fd, 0)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


class LogWindow:
    """Client side: the reads logged from now until ``close`` (use as a context manager)."""

    def __init__(self, path: Path) -> None:
        if not path.exists():
            raise FailedPrecondition(
                f"{path} does not exist: the snapshotter is not recording reads (set [load_order] record = true)"
            )
        self.path = path
        self.start_offset = path.stat().st_size
        self.start_ns = time.monotonic_ns()
        self.end_ns = 0

    def stop(self) -> None:
        self.end_ns = time.monotonic_ns()

    def reads(self, layers: Sequence[str]) -> Iterator[Read]:
        """Reads of ``layers`` in the window, times relative to its start."""
        wanted = set(layers)
        end_ns = self.end_ns or time.monotonic_ns()
        with self.path.open("rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size < self.start_offset:
                log.warning("read log %s was emptied during the recording; its first reads are lost", self.path)
            else:
                f.seek(self.start_offset)
            for line in f:
                try:
                    when, layer, path, offset, length = json.loads(line)
                except ValueError:
                    continue  # a line being written
                if layer in wanted and self.start_ns <= when <= end_ns:
                    yield Read(when - self.start_ns, layer, path, offset, length)


def collect(
    window: LogWindow,
    name: str,
    layers: Sequence[str],
    *,
    annotations: Mapping[str, str] | None = None,
) -> LoadOrder:
    """The document for the reads of ``layers`` (the image's, bottom first) during ``window``."""
    return build_load_order(name, window.reads(layers), layers=layers, annotations=annotations)

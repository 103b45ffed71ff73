"""``LazyMount``: the one pyfuse3 mount of a process, holding a directory per layer.

pyfuse3 supports one filesystem per process, so every layer lives under one mount: ``<mnt>/<name>/`` is
a layer root, usable as an overlayfs lowerdir, and ``<mnt>/.soci-snapshotter/<layer digest>.json`` its
state. Layers are added and removed while mounted. pyfuse3 runs in asyncio mode on the caller's loop,
next to aiohttp.

Mount options: read-only, ``allow_other``, ``default_permissions`` (the kernel checks modes), ``suid`` and
``dev`` (images carry setuid binaries and device nodes), and the mount's ``read_ahead_kb`` raised to
1 MiB so sequential reads arrive in 1 MiB requests. Regular files are opened
with ``keep_cache``: their page cache survives close and reopen.

Unmounting never leaves a dead mount: ``aclose`` stops the request loop and unmounts, and
``clean_stale_mounts`` removes mounts a crashed process left behind (``Transport endpoint is not
connected``) before a new mount starts.
"""

from __future__ import annotations

import asyncio
import errno
import functools
import logging
import os
import re
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path

import pyfuse3
import pyfuse3.asyncio

from soci.errors import FailedPrecondition, InvalidArgument, Unavailable
from soci.fs.layer import Layer
from soci.fs.ops import LayerTable, Operations
from soci.fs.options import FuseOptions
from soci.fs.session import (
    FdKeeper,
    SessionRecord,
    adopted_init,
    connection_alive,
    mount_fuse,
    notify_resend,
    read_record,
    remove_record,
    session_name,
    write_record,
)

log = logging.getLogger(__name__)

READ_AHEAD_KB = 1024
INIT_BUFFER = 1 << 17
"""A read from /dev/fuse needs room for the largest request (the kernel refuses less than 8 KiB)."""
FSNAME = "soci"
_active: LazyMount | None = None


class LazyMount:
    """A FUSE mount at ``mountpoint`` serving lazily loaded layers.

    Use as ``async with LazyMount(path) as mount: mount.add_layer("name", layer)``.
    """

    def __init__(
        self,
        mountpoint: Path,
        fuse: FuseOptions | None = None,
        *,
        max_tasks: int = 32,
        keeper: FdKeeper | None = None,
    ) -> None:
        self.mountpoint = Path(mountpoint)
        self.table = LayerTable()
        self.operations = Operations(self.table, fuse)
        self.keeper = keeper
        """Where the session's descriptor outlives this process (None: the session ends with it)."""
        self.adopted = False
        """The session was taken over from a previous process, not mounted by this one."""
        self._max_tasks = max_tasks
        self._main: asyncio.Task[None] | None = None

    async def __aenter__(self) -> LazyMount:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    @property
    def mounted(self) -> bool:
        return self._main is not None

    async def start(self) -> None:
        """Mount, or adopt the session a previous process left with ``keeper``.

        libfuse is given one end of a socket pair as its device (``/dev/fd/N``) and the INIT request on
        it: the kernel's own for a new mount, the recorded one for an adopted session. While libfuse
        answers INIT, ``_switch`` puts the real ``/dev/fuse`` descriptor in place under the same number,
        so the reply goes to the kernel (new mount) or is dropped by it (adopted: it knows no such
        request), and every later request comes straight from the kernel.
        """
        global _active
        if _active is not None:
            raise FailedPrecondition(f"this process already serves a FUSE mount at {_active.mountpoint}")
        adopted = await asyncio.to_thread(self._adoptable) if self.keeper is not None else None
        if adopted is None:
            fd, init = await asyncio.to_thread(self._mount)
        else:
            fd, record = adopted
            init = adopted_init(record.init)
            self.adopted = True
            self.operations.expect_layers()
        device_end, libfuse_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
        session_fd = libfuse_end.detach()  # becomes /dev/fuse in _switch; libfuse closes it
        self.operations.on_init = functools.partial(self._switch, fd, session_fd)
        pyfuse3.asyncio.enable()
        # no max_read option: pyfuse3's init handler cannot announce it, and libfuse refuses a mismatch;
        # the kernel's limit is max_pages (1 MiB with libfuse 3.14), reached through read_ahead_kb
        options = {f"fsname={FSNAME}", "ro", "allow_other", "default_permissions", "suid", "dev"}
        try:
            pyfuse3.init(self.operations, f"/dev/fd/{session_fd}", options)
        except RuntimeError as exc:
            os.close(fd)
            os.close(session_fd)
            device_end.close()
            raise Unavailable(f"cannot mount FUSE at {self.mountpoint}: {exc}") from exc
        _active = self
        with device_end:
            device_end.send(init)
            self._main = asyncio.get_running_loop().create_task(self._serve(), name="soci-fuse")
            # the kernel resets the readahead window when it gets the INIT reply: raise it only after that
            for _ in range(1000):
                if self.operations.initialized or self._main.done():
                    break
                await asyncio.sleep(0.005)
            await asyncio.sleep(0.005)  # the worker that answered INIT has written the reply by now
        if not self.operations.initialized:
            log.error("libfuse did not answer the INIT request at %s", self.mountpoint)
        if not self.adopted:
            set_read_ahead(self.mountpoint, READ_AHEAD_KB)
        log.info("FUSE %s at %s", "session adopted" if self.adopted else "mounted", self.mountpoint)

    def _mount(self) -> tuple[int, bytes]:
        """A new mount: its ``/dev/fuse`` descriptor and the kernel's INIT request (recorded for adopters)."""
        # first: a crashed run's dead mount makes every path operation on the directory, mkdir too,
        # fail with ENOTCONN
        clean_stale_mounts([self.mountpoint])
        if self.keeper is not None:
            self.keeper.drop(session_name(self.mountpoint))
            remove_record(self.mountpoint)
        self.mountpoint.mkdir(parents=True, exist_ok=True)
        fd = mount_fuse(self.mountpoint, FSNAME, "allow_other,default_permissions")
        try:
            init = os.read(fd, INIT_BUFFER)
            if self.keeper is not None:
                devices = [device for point, _, device in _mountinfo() if point == self._target]
                write_record(self.mountpoint, SessionRecord(devices[-1], init))
                self.keeper.put(session_name(self.mountpoint), fd)
        except BaseException:
            os.close(fd)
            _force_unmount(self.mountpoint)
            raise
        return fd, init

    @property
    def _target(self) -> Path:
        return Path(os.path.abspath(self.mountpoint))

    def _adoptable(self) -> tuple[int, SessionRecord] | None:
        """The kept descriptor of the session still mounted here, if there is one."""
        assert self.keeper is not None
        record = read_record(self.mountpoint)
        devices = [device for point, _, device in _mountinfo() if point == self._target]
        if record is None or not devices or devices[-1] != record.device:
            return None
        fd = self.keeper.take(session_name(self.mountpoint))
        if fd is None:
            return None
        if not connection_alive(fd):
            os.close(fd)
            return None
        return fd, record

    def _switch(self, fd: int, session_fd: int) -> None:
        """Runs while libfuse answers INIT (see ``start``): from now on libfuse talks to the kernel."""
        os.dup2(fd, session_fd, inheritable=False)
        os.close(fd)
        if self.adopted:
            notify_resend(session_fd)

    def layers_restored(self) -> None:
        """Every layer an adopted session served before is back (or never will be): stop holding their
        requests back."""
        self.operations.layers_restored()

    async def _serve(self) -> None:
        try:
            await pyfuse3.main(min_tasks=4, max_tasks=self._max_tasks)
        except asyncio.CancelledError:
            raise
        except BaseException:
            log.exception("FUSE request loop at %s failed", self.mountpoint)
            raise

    def add_layer(self, name: str, layer: Layer, *, slot: int | None = None) -> Path:
        """Expose ``layer`` as ``<mountpoint>/<name>`` and return that path (``slot``: see ``LayerTable.add``)."""
        check_layer_name(name)
        self.table.add(os.fsencode(name), layer, slot)
        return self.mountpoint / name

    def remove_layer(self, name: str) -> Layer:
        """Take ``<mountpoint>/<name>`` away (unmount any overlay using it first); returns the layer."""
        # no kernel invalidation needed: entries of the mount root are never cached (timeout 0)
        return self.table.remove(os.fsencode(name)).layer

    def layers(self) -> dict[str, Layer]:
        return {os.fsdecode(name): e.layer for name, e in self.table.by_name.items()}

    async def aclose(self, *, keep: bool = False) -> None:
        """Stop serving and unmount; with ``keep`` (and a keeper) leave the mount and its session for the
        next process, which adopts them.

        The session is destroyed only once every pyfuse3 worker task has ended: a worker that wakes up
        after ``pyfuse3.close`` dereferences the freed session and crashes the process.
        """
        global _active
        main, self._main = self._main, None
        if main is None:
            return
        keep = keep and self.keeper is not None
        try:
            await _terminate()
        except Exception as exc:
            log.warning("cannot stop the FUSE request loop at %s cleanly: %s", self.mountpoint, exc)
        finished = await _wait(main, 10)
        if not finished and keep:
            # handlers still wait (for the registry): the next process gets their requests again
            # (FUSE_NOTIFY_RESEND); this one is about to exit
            log.warning("FUSE request loop at %s did not stop; leaving it to the next process", self.mountpoint)
            return
        if not finished:
            # workers stuck in handlers: cut the kernel connection so their reads fail, then wait again
            log.warning("FUSE request loop at %s did not stop; unmounting under it", self.mountpoint)
            await asyncio.to_thread(_force_unmount, self.mountpoint)
            finished = await _wait(main, 10)
        if not finished:
            # no pyfuse3.close: a worker still runs and would touch a freed session; this process cannot
            # mount again, but nothing stays mounted
            log.error("FUSE request loop at %s is stuck; leaving its session allocated", self.mountpoint)
            return
        try:
            # libfuse did not mount (its device was /dev/fd/N), so it unmounts nothing either
            pyfuse3.close(unmount=False)
        finally:
            _active = None
            if not keep:
                await asyncio.to_thread(self._unmount)
        if keep:
            log.info("FUSE session at %s left to the next process", self.mountpoint)
        else:
            log.info("FUSE unmounted from %s", self.mountpoint)

    def _unmount(self) -> None:
        if self.keeper is not None:
            self.keeper.drop(session_name(self.mountpoint))
            remove_record(self.mountpoint)
        if is_mount_point(self.mountpoint):
            _force_unmount(self.mountpoint)


async def _terminate() -> None:
    """``pyfuse3.terminate`` without the asyncio shim's races.

    The shim wakes a worker waiting for the FUSE fd both from the fd's reader callback and from
    ``terminate``; whichever comes second raises InvalidStateError (from ``terminate`` it aborts the
    shutdown). Removing the reader callbacks of the fds being waited for leaves ``terminate`` as the only
    waker; a wait that was already woken makes it fail once, and then that worker has to run before trying
    again.
    """
    loop = asyncio.get_running_loop()
    waiting = pyfuse3.asyncio._read_futures
    for _ in range(1000):
        for fd, futures in list(waiting.items()):
            if not futures:
                # the shim leaves empty entries behind (a defaultdict); the number may be a socket's by now
                del waiting[fd]
                continue
            loop.remove_reader(fd)
        try:
            pyfuse3.terminate()
            return
        except asyncio.InvalidStateError:
            await asyncio.sleep(0)
    raise Unavailable("cannot stop the FUSE request loop")


async def _wait(task: asyncio.Task[None], timeout_sec: float) -> bool:
    """True once ``task`` finished (however), False if it still runs after ``timeout_sec``."""
    done, _ = await asyncio.wait([task], timeout=timeout_sec)
    if task in done and not task.cancelled() and task.exception() is not None:
        log.warning("FUSE request loop ended with %s", task.exception())
    return task in done


def _force_unmount(mountpoint: Path) -> None:
    try:
        unmount(mountpoint, fuse=True)
    except Unavailable as exc:
        log.warning("%s", exc)


def check_layer_name(name: str) -> str:
    """Layer directories sit in the mount root: one visible path component."""
    if not name or "/" in name or name.startswith(".") or "\0" in name or len(os.fsencode(name)) > 255:
        raise InvalidArgument(f"layer name {name!r} must be one path component not starting with a dot")
    return name


def set_read_ahead(mountpoint: Path, kilobytes: int) -> None:
    """Raise the mount's readahead window (the kernel then sends up to ``max_read`` per request).

    The device number comes from mountinfo: ``stat`` on the mount point would ask this very process,
    whose loop is busy here.
    """
    target = Path(os.path.abspath(mountpoint))
    devices = [device for point, _, device in _mountinfo() if point == target]
    if not devices:
        log.debug("cannot set read_ahead_kb: %s is not mounted", target)
        return
    path = Path(f"/sys/class/bdi/{devices[-1]}/read_ahead_kb")
    try:
        path.write_text(f"{kilobytes}\n")
    except OSError as exc:
        log.debug("cannot set %s: %s", path, exc)


def mounts() -> list[tuple[Path, str]]:
    """(mount point, filesystem type) of every mount of this mount namespace, in mount order."""
    return [(point, kind) for point, kind, _ in _mountinfo()]


def _mountinfo() -> list[tuple[Path, str, str]]:
    """(mount point, filesystem type, "major:minor") from /proc/self/mountinfo."""
    found = []
    with open("/proc/self/mountinfo", "rb") as f:
        for line in f:
            fields = line.split()
            separator = fields.index(b"-")
            point = re.sub(rb"\\([0-7]{3})", lambda m: bytes([int(m[1], 8)]), fields[4])
            found.append((Path(os.fsdecode(point)), fields[separator + 1].decode(), fields[2].decode()))
    return found


def is_mount_point(path: Path) -> bool:
    target = Path(os.path.abspath(path))
    return any(point == target for point, _ in mounts())


def unmount(path: Path, *, fuse: bool | None = None) -> None:
    """Unmount ``path`` (lazily when busy or dead); FUSE mounts go through ``fusermount3 -u`` when available."""
    target = os.path.abspath(path)
    if fuse is None:
        fuse = any(str(p) == target and t.startswith("fuse") for p, t in mounts())
    commands: list[list[str]] = []
    if fuse and shutil.which("fusermount3"):
        commands.append(["fusermount3", "-u", "-z", target])
    commands += [["umount", target], ["umount", "-l", target]]
    errors = []
    for command in commands:
        result = subprocess.run(command, capture_output=True, text=True, check=False)
        if result.returncode == 0:
            return
        errors.append(result.stderr.strip())
    raise Unavailable(f"cannot unmount {target}: {'; '.join(errors)}")


def clean_stale_mounts(paths: Iterable[Path]) -> list[Path]:
    """Unmount whatever is mounted at or below ``paths`` (deepest first): leftovers of a crashed run."""
    roots = [Path(os.path.abspath(p)) for p in paths]
    stale = [
        (point, kind) for point, kind in mounts()
        if any(point == root or root in point.parents for root in roots)
    ]  # fmt: skip
    done = []
    for point, kind in sorted(stale, key=lambda item: len(item[0].parts), reverse=True):
        log.warning("removing stale %s mount at %s", kind, point)
        try:
            unmount(point, fuse=kind.startswith("fuse"))
            done.append(point)
        except Unavailable as exc:
            log.warning("%s", exc)
    return done


DEAD_PROBE_TIMEOUT_SEC = 5.0
_DEAD_ERRNOS = (errno.ENOTCONN, errno.ECONNABORTED)
# statvfs always asks the FUSE server (no attribute cache answers it): a dead connection fails at once
_PROBE = "import os, sys\ntry:\n    os.statvfs(sys.argv[1])\nexcept OSError as e:\n    sys.exit(e.errno)\n"


def is_dead_fuse_mount(point: Path) -> bool:
    """True when ``point`` is a FUSE mount whose server is gone (ENOTCONN).

    The probe runs in a child process: on a mount whose connection is held but not served, the call would
    block, and only a killed process gets out of that wait. Such a mount counts as alive.
    """
    try:
        result = subprocess.run(
            [sys.executable, "-I", "-S", "-c", _PROBE, str(point)], capture_output=True, timeout=DEAD_PROBE_TIMEOUT_SEC
        )
    except subprocess.TimeoutExpired:
        return False
    return result.returncode in _DEAD_ERRNOS


def clean_dead_mounts(root: Path) -> list[Path]:
    """Detach the dead FUSE mounts at or below ``root`` (deepest first), leaving live mounts alone.

    After a crash of the process serving them, the FUSE mount and every bind of it fail each path
    operation with ENOTCONN, so this runs before anything else touches ``root``.
    """
    target = Path(os.path.abspath(root))
    found = [
        (point, device) for point, kind, device in _mountinfo()
        if kind.startswith("fuse") and (point == target or target in point.parents)
    ]  # fmt: skip
    # a session kept for adoption is alive but unserved: a probe would only wait for its timeout; if it
    # cannot be adopted after all, LazyMount and the snapshotter's restore replace it and its binds
    kept = {record.device for point, _ in found if (record := read_record(point)) is not None}
    done = []
    for point in sorted({p for p, device in found if device not in kept}, key=lambda p: len(p.parts), reverse=True):
        if not is_dead_fuse_mount(point):
            continue
        log.warning("detaching dead FUSE mount at %s", point)
        while any(p == point for p, _ in mounts()):  # stacked mounts: each one is dead
            if not _detach(point):
                break
        done.append(point)
    return done


def _detach(point: Path) -> bool:
    try:
        unmount(point, fuse=True)
    except Unavailable as exc:
        log.warning("%s", exc)
        return False
    return True

"""The FUSE operations of the one mount: a root holding one directory per layer, plus the state directory.

Inode numbers: 1 is the mount root, 2 the hidden state directory ``.soci-snapshotter``, 3 the hidden archive
directory ``.soci-archives``. Layer number ``n`` (never reused while mounted) owns inodes ``n << 32 | i``:
``i >= 1`` is the layer's own inode ``i`` (1 is its root), ``i == 0`` its state file ``<layer digest>.json`` in
the state directory, and ``i == 2**32 - 1`` its uncompressed tar ``.soci-archives/<layer name>``, the data
device of the layer's EROFS image (``soci.fs.erofs``). Layer contents
never change, so their kernel cache lifetimes come from ``[fuse]``; the root and the state directory
change and are never cached.

Handlers are thin: they decode the inode, ask the layer's tree or reader, and build pyfuse3 replies. Every
handler goes through ``fuse_errors``, the one table from error classes to errno (pyfuse3 only answers
FUSEError; anything else would leave the kernel without a reply).
"""

from __future__ import annotations

import asyncio
import errno
import functools
import logging
import os
import stat
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import pyfuse3

from soci.errors import (
    AlreadyExists,
    DataLoss,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    SociError,
    Unauthenticated,
    Unavailable,
)
from soci.fs import metrics as fm
from soci.fs.layer import Layer
from soci.fs.options import FuseOptions
from soci.fs.tree import BLOCK_SIZE, DIRECTORY_SIZE, ROOT_INODE

log = logging.getLogger(__name__)

STATE_DIR_NAME = b".soci-snapshotter"
STATE_DIR_INODE = 2
ARCHIVE_DIR_NAME = b".soci-archives"
ARCHIVE_DIR_INODE = 3
LAYER_SHIFT = 32
_LOCAL_MASK = (1 << LAYER_SHIFT) - 1
ARCHIVE_LOCAL = _LOCAL_MASK
"""The local inode number of a layer's uncompressed tar (never a tree inode: trees have fewer than 2**32 - 1)."""
_HIDDEN_DIRS = (ROOT_INODE, STATE_DIR_INODE, ARCHIVE_DIR_INODE)
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_TRUNC

_F = TypeVar("_F", bound=Callable[..., Awaitable[Any]])

ERRNO_BY_CLASS: tuple[tuple[type[BaseException], int], ...] = (
    (NotFound, errno.ENOENT),
    (AlreadyExists, errno.EEXIST),
    (InvalidArgument, errno.EINVAL),
    (FailedPrecondition, errno.EIO),
    (Unavailable, errno.EIO),
    (DataLoss, errno.EIO),
    (Unauthenticated, errno.EACCES),
    (PermissionDenied, errno.EACCES),
)
_logged_unexpected: set[tuple[str, type[BaseException]]] = set()


def errno_for(exc: BaseException) -> int:
    for cls, number in ERRNO_BY_CLASS:
        if isinstance(exc, cls):
            return number
    return errno.EIO


def fuse_errors(func: _F) -> _F:
    """Map exceptions to FUSEError (``ERRNO_BY_CLASS``); unexpected ones are logged with a traceback once."""

    @functools.wraps(func)
    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return await func(*args, **kwargs)
        except pyfuse3.FUSEError:
            raise
        except SociError as exc:
            code = errno_for(exc)
            # ENOENT and friends are everyday answers; an EIO means a workload saw a failure: say so at warning
            log.log(logging.WARNING if code == errno.EIO else logging.DEBUG, "%s failed: %s", func.__name__, exc)
            if code == errno.EIO:
                _count_failure(args[0] if args else None, func.__name__)
            raise pyfuse3.FUSEError(code) from None
        except Exception as exc:
            _count_failure(args[0] if args else None, func.__name__)
            key = (func.__name__, type(exc))
            if key not in _logged_unexpected:
                _logged_unexpected.add(key)
                log.exception("unexpected error in FUSE %s", func.__name__)
            raise pyfuse3.FUSEError(errno.EIO) from None

    return wrapper  # type: ignore[return-value]


def _count_failure(operations: object, handler: str) -> None:
    metrics = getattr(operations, "metrics", None)
    if metrics is not None:
        metrics.count(fm.FUSE_FAILURE_BY_HANDLER.get(handler, fm.OP_FUSE_UNKNOWN_FAILURE))


@dataclass(slots=True)
class MountedLayer:
    slot: int
    name: bytes
    layer: Layer


class LayerTable:
    """Which layer directory is where; slots grow and are never reused while mounted."""

    def __init__(self) -> None:
        self.by_slot: dict[int, MountedLayer] = {}
        self.by_name: dict[bytes, MountedLayer] = {}
        self._next_slot = 1

    def add(self, name: bytes, layer: Layer, slot: int | None = None) -> MountedLayer:
        """Put ``layer`` at ``name``; ``slot`` fixes its inode numbers (a session adopted after a restart
        must keep the ones the kernel already knows), else the next unused one."""
        if name in self.by_name:
            raise AlreadyExists(f"a layer is already mounted as {name.decode(errors='replace')!r}")
        if slot is None:
            slot = self._next_slot
        elif not 0 < slot < 1 << (64 - LAYER_SHIFT) or slot in self.by_slot:
            raise InvalidArgument(f"layer slot {slot} is out of range or taken")
        entry = MountedLayer(slot, name, layer)
        self._next_slot = max(self._next_slot, slot + 1)
        self.by_slot[entry.slot] = entry
        self.by_name[name] = entry
        return entry

    def remove(self, name: bytes) -> MountedLayer:
        entry = self.by_name.pop(name, None)
        if entry is None:
            raise NotFound(f"no layer is mounted as {name.decode(errors='replace')!r}")
        del self.by_slot[entry.slot]
        return entry

    def state_files(self) -> dict[bytes, MountedLayer]:
        """``<digest>.json`` -> the first mounted layer with that digest."""
        files: dict[bytes, MountedLayer] = {}
        for slot in sorted(self.by_slot):
            entry = self.by_slot[slot]
            files.setdefault(entry.layer.digest.encode() + b".json", entry)
        return files


class Operations(pyfuse3.Operations):
    """pyfuse3 handlers over a ``LayerTable``."""

    def __init__(self, table: LayerTable, fuse: FuseOptions | None = None) -> None:
        super().__init__()
        self.table = table
        self.fuse = fuse or FuseOptions()
        self._started_ns = time.time_ns()
        self.initialized = False
        self.on_init: Callable[[], None] | None = None
        """Called while INIT is answered, before the reply is written (``LazyMount`` switches fds there)."""
        self.adopted = asyncio.Event()
        self.adopted.set()
        self.metrics: fm.FsMetrics = fm.NullFsMetrics()

    def init(self) -> None:
        """The INIT request is being answered (before the reply is written)."""
        if self.on_init is not None:
            self.on_init()
        self.initialized = True

    def expect_layers(self) -> None:
        """A session adopted from a previous process: requests for layers not back in the table yet wait
        (until ``layers_restored``) instead of failing with ENOENT."""
        self.adopted.clear()

    def layers_restored(self) -> None:
        self.adopted.set()

    async def _arrival(self, inode: int) -> None:
        if not self.adopted.is_set() and inode >> LAYER_SHIFT and inode >> LAYER_SHIFT not in self.table.by_slot:
            await self.adopted.wait()

    # ---- inode helpers ---------------------------------------------------------------------------------------

    def _layer(self, inode: int) -> tuple[MountedLayer, int]:
        entry = self.table.by_slot.get(inode >> LAYER_SHIFT)
        local = inode & _LOCAL_MASK
        if entry is None or (local and local != ARCHIVE_LOCAL and not entry.layer.tree.valid(local)):
            raise pyfuse3.FUSEError(errno.ENOENT)
        return entry, local

    def _synthetic_attrs(self, inode: int, mode: int, size: int = 0, nlink: int = 1) -> pyfuse3.EntryAttributes:
        attrs = pyfuse3.EntryAttributes()
        attrs.st_ino = inode
        attrs.st_mode = mode
        attrs.st_nlink = nlink
        attrs.st_size = size
        attrs.st_blksize = BLOCK_SIZE
        attrs.st_uid = attrs.st_gid = 0
        attrs.st_atime_ns = attrs.st_mtime_ns = attrs.st_ctime_ns = self._started_ns
        attrs.entry_timeout = attrs.attr_timeout = 0
        return attrs

    def _attrs(self, inode: int) -> pyfuse3.EntryAttributes:
        if inode == ROOT_INODE:
            return self._synthetic_attrs(inode, stat.S_IFDIR | 0o755, DIRECTORY_SIZE, 4 + len(self.table.by_slot))
        if inode in (STATE_DIR_INODE, ARCHIVE_DIR_INODE):
            return self._synthetic_attrs(inode, stat.S_IFDIR | 0o500, DIRECTORY_SIZE, 2)
        entry, local = self._layer(inode)
        if local == 0:
            return self._synthetic_attrs(inode, stat.S_IFREG | 0o400, len(entry.layer.state_json()))
        if local == ARCHIVE_LOCAL:
            attrs = self._synthetic_attrs(inode, stat.S_IFREG | 0o400, entry.layer.spans.uncompressed_size)
            attrs.attr_timeout = self.fuse.attr_timeout  # the archive never changes
            return attrs
        a = entry.layer.tree.attributes(local)
        attrs = pyfuse3.EntryAttributes()
        attrs.st_ino = inode
        attrs.st_mode = a.mode
        attrs.st_nlink = a.nlink
        attrs.st_uid = a.uid
        attrs.st_gid = a.gid
        attrs.st_rdev = os.makedev(a.rdev_major, a.rdev_minor)
        attrs.st_size = DIRECTORY_SIZE if stat.S_ISDIR(a.mode) else a.size
        attrs.st_blksize = BLOCK_SIZE
        attrs.st_blocks = a.blocks
        attrs.st_atime_ns = attrs.st_mtime_ns = attrs.st_ctime_ns = a.mtime_ns
        attrs.entry_timeout = self.fuse.entry_timeout
        attrs.attr_timeout = self.fuse.attr_timeout
        return attrs

    # ---- metadata --------------------------------------------------------------------------------------------

    @fuse_errors
    async def lookup(self, parent_inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        self._log("lookup", parent_inode, name)
        await self._arrival(parent_inode)
        inode = self._child(parent_inode, name)
        if not inode:
            if parent_inode >> LAYER_SHIFT:
                # a negative entry inside an immutable layer may be cached
                attrs = pyfuse3.EntryAttributes()
                attrs.st_ino = 0
                attrs.entry_timeout = self.fuse.negative_timeout
                return attrs
            raise pyfuse3.FUSEError(errno.ENOENT)
        attrs = self._attrs(inode)
        if parent_inode in _HIDDEN_DIRS:
            attrs.entry_timeout = 0  # layers come and go
        return attrs

    def _child(self, parent: int, name: bytes) -> int:
        if parent == ROOT_INODE:
            if name == STATE_DIR_NAME:
                return STATE_DIR_INODE
            if name == ARCHIVE_DIR_NAME:
                return ARCHIVE_DIR_INODE
            entry = self.table.by_name.get(name)
            return (entry.slot << LAYER_SHIFT) | ROOT_INODE if entry else 0
        if parent == STATE_DIR_INODE:
            entry = self.table.state_files().get(name)
            return entry.slot << LAYER_SHIFT if entry else 0
        if parent == ARCHIVE_DIR_INODE:
            entry = self.table.by_name.get(name)
            return (entry.slot << LAYER_SHIFT) | ARCHIVE_LOCAL if entry else 0
        mounted, local = self._layer(parent)
        tree = mounted.layer.tree
        if not local or local == ARCHIVE_LOCAL or not tree.is_dir(local):
            raise pyfuse3.FUSEError(errno.ENOTDIR)
        child = tree.lookup(local, name)
        return (mounted.slot << LAYER_SHIFT) | child if child else 0

    @fuse_errors
    async def getattr(self, inode: int, ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        self._log("getattr", inode)
        await self._arrival(inode)
        return self._attrs(inode)

    @fuse_errors
    async def readlink(self, inode: int, ctx: pyfuse3.RequestContext) -> bytes:
        self._log("readlink", inode)
        await self._arrival(inode)
        entry, local = self._layer(inode)
        tree = entry.layer.tree
        if not local or local == ARCHIVE_LOCAL or not stat.S_ISLNK(tree.mode(local)):
            raise pyfuse3.FUSEError(errno.EINVAL)
        return tree.link_target(local)

    async def forget(self, inode_list: Sequence[tuple[int, int]]) -> None:
        return None  # inodes live as long as their layer

    @fuse_errors
    async def statfs(self, ctx: pyfuse3.RequestContext) -> pyfuse3.StatvfsData:
        data = pyfuse3.StatvfsData()
        layers = [e.layer for e in self.table.by_slot.values()]
        data.f_bsize = data.f_frsize = BLOCK_SIZE
        data.f_blocks = sum(layer.spans.uncompressed_size for layer in layers) // BLOCK_SIZE
        data.f_bfree = data.f_bavail = 0
        data.f_files = 2 + sum(layer.tree.inode_count + 1 for layer in layers)
        data.f_ffree = data.f_favail = 0
        data.f_namemax = 255
        return data

    # ---- xattrs ------------------------------------------------------------------------------------------------

    @fuse_errors
    async def getxattr(self, inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> bytes:
        self._log("getxattr", inode, name)
        await self._arrival(inode)
        for key, value in self._xattrs(inode):
            if key == name:
                return value
        raise pyfuse3.FUSEError(pyfuse3.ENOATTR)

    @fuse_errors
    async def listxattr(self, inode: int, ctx: pyfuse3.RequestContext) -> list[bytes]:
        self._log("listxattr", inode)
        await self._arrival(inode)
        return [key for key, _ in self._xattrs(inode)]

    def _xattrs(self, inode: int) -> list[tuple[bytes, bytes]]:
        if inode in _HIDDEN_DIRS:
            return []
        entry, local = self._layer(inode)
        if not local or local == ARCHIVE_LOCAL:
            return []
        layer = entry.layer
        found = [] if layer.disable_xattrs else layer.tree.xattrs(local)
        if layer.tree.is_opaque(local):
            found = [(k, v) for k, v in found if k != layer.opaque_xattr] + [(layer.opaque_xattr, b"y")]
        return found

    # ---- directories -----------------------------------------------------------------------------------------

    @fuse_errors
    async def opendir(self, inode: int, ctx: pyfuse3.RequestContext) -> int:
        self._log("opendir", inode)
        await self._arrival(inode)
        if inode not in _HIDDEN_DIRS:
            entry, local = self._layer(inode)
            if not local or local == ARCHIVE_LOCAL or not entry.layer.tree.is_dir(local):
                raise pyfuse3.FUSEError(errno.ENOTDIR)
        return inode

    @fuse_errors
    async def readdir(self, fh: int, start_id: int, token: pyfuse3.ReaddirToken) -> None:
        self._log("readdir", fh, start_id)
        await self._arrival(fh)
        if fh == ROOT_INODE:
            # positions are layer slots, which never repeat, so a listing resumes correctly across changes
            for slot in sorted(s for s in self.table.by_slot if s > start_id):
                entry = self.table.by_slot[slot]
                attrs = self._attrs((slot << LAYER_SHIFT) | ROOT_INODE)
                attrs.entry_timeout = 0
                if not pyfuse3.readdir_reply(token, entry.name, attrs, slot):
                    return
            return
        if fh == STATE_DIR_INODE:
            for name, entry in sorted(self.table.state_files().items(), key=lambda item: item[1].slot):
                if entry.slot <= start_id:
                    continue
                attrs = self._attrs(entry.slot << LAYER_SHIFT)
                if not pyfuse3.readdir_reply(token, name, attrs, entry.slot):
                    return
            return
        if fh == ARCHIVE_DIR_INODE:
            for slot in sorted(s for s in self.table.by_slot if s > start_id):
                attrs = self._attrs((slot << LAYER_SHIFT) | ARCHIVE_LOCAL)
                if not pyfuse3.readdir_reply(token, self.table.by_slot[slot].name, attrs, slot):
                    return
            return
        mounted, local = self._layer(fh)
        base = mounted.slot << LAYER_SHIFT
        start = time.monotonic()
        try:
            for position, name, child in mounted.layer.tree.children(local, start_id):
                if not pyfuse3.readdir_reply(token, name, self._attrs(base | child), position):
                    return
        finally:
            self.metrics.observe(fm.OP_NODE_READDIR, mounted.layer.digest, time.monotonic() - start)

    async def releasedir(self, fh: int) -> None:
        return None

    # ---- files -----------------------------------------------------------------------------------------------

    @fuse_errors
    async def open(self, inode: int, flags: int, ctx: pyfuse3.RequestContext) -> pyfuse3.FileInfo:
        self._log("open", inode, flags)
        await self._arrival(inode)
        if flags & _WRITE_FLAGS:
            raise pyfuse3.FUSEError(errno.EROFS)
        if inode in _HIDDEN_DIRS:
            raise pyfuse3.FUSEError(errno.EISDIR)
        entry, local = self._layer(inode)
        if local == ARCHIVE_LOCAL:
            # no page cache here: the EROFS mount over it caches each file's pages itself, and reads then
            # arrive as the files' own (readahead included), not as readahead across the archive
            return pyfuse3.FileInfo(fh=inode, direct_io=True)
        if local and not entry.layer.tree.is_regular(local):
            raise pyfuse3.FUSEError(errno.EISDIR if entry.layer.tree.is_dir(local) else errno.EINVAL)
        # the handle is the inode: nothing to remember, so a daemon adopting this session after a
        # restart serves the files the kernel already has open
        if not local:
            return pyfuse3.FileInfo(fh=inode, direct_io=True)  # the state file changes as spans arrive
        return pyfuse3.FileInfo(fh=inode, keep_cache=True)

    @fuse_errors
    async def read(self, fh: int, off: int, size: int) -> bytes:
        self._log("read", fh, off, size)
        await self._arrival(fh)
        if fh in _HIDDEN_DIRS:
            raise pyfuse3.FUSEError(errno.EISDIR)
        entry, local = self._layer(fh)
        layer = entry.layer
        if not local:
            return layer.state_json()[off : off + size]
        start = time.monotonic()
        requests = layer.spans.requests
        try:
            if local == ARCHIVE_LOCAL:
                data = await layer.reader.read_archive(off, size)
            else:
                data = await layer.reader.read(local, off, size)
        except SociError as exc:
            layer.record_error(exc)
            what = "the archive" if local == ARCHIVE_LOCAL else layer.tree.path(local).decode(errors="replace")
            log.warning("read of %s in layer %s failed: %s", what, layer.digest, exc)
            raise
        # a concurrent read of the same layer may send the request counted here: close enough for a rate
        if layer.spans.requests != requests:
            self.metrics.count(fm.OP_SYNCHRONOUS_READ_REGISTRY_FETCH_COUNT, layer.digest)
        self.metrics.count(fm.OP_SYNCHRONOUS_READ_COUNT, layer.digest)
        self.metrics.add_bytes(fm.OP_SYNCHRONOUS_BYTES_SERVED, layer.digest, len(data))
        self.metrics.observe(fm.OP_SYNCHRONOUS_READ, layer.digest, time.monotonic() - start)
        return data

    async def release(self, fh: int) -> None:
        return None

    def _log(self, op: str, *args: object) -> None:
        if self.fuse.log_fuse_operations:
            log.debug("fuse %s %s", op, args)

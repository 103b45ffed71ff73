"""``Snapshotter``: containerd's snapshot semantics on overlayfs, plus SOCI's remote snapshots.

Vocabulary (containerd's): ``key`` names an active or view snapshot, ``name`` a committed one, and
``parent`` the committed snapshot a new one is based on.

Layout under ``root``: ``metadata.db`` and ``snapshots/<id>/{fs,work}``; ``fs`` is the upper directory
(or, for a remote snapshot, the lazy filesystem's mountpoint) and ``work`` the overlay workdir.
Every change goes to the database first and to the filesystem second: a crash can leave unused
directories (removed by ``cleanup`` and at start) but never a database entry without its directory.

A Prepare carrying ``containerd.io/snapshot.ref`` asks for a registry layer (the remote-snapshot
protocol). The decision tree (upstream's):

1. remote: mount the layer lazily (skipped for layers under ``min_layer_size``); on success commit
   it under the target name and answer ALREADY_EXISTS (log key ``remote-snapshot-prepared``);
2. the image has no SOCI index (``NoIndexError``): return the mounts, containerd unpacks the layer
   itself (``defer-snapshot-runtime``);
3. the layer has no zTOC (``NoZtocError``) or the mount failed otherwise: download and unpack the
   layer here, commit, answer ALREADY_EXISTS (``local-snapshot-prepared``);
4. that failed too: defer to containerd.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from soci import system
from soci.containerd.filters import map_field, parse_filters
from soci.errors import AlreadyExists, InvalidArgument, NoIndexError, NotFound, NoZtocError, SociError, Unavailable
from soci.snapshotter import labels as lb
from soci.snapshotter import metrics as m
from soci.snapshotter.keyed_locks import KeyedLocks
from soci.snapshotter.metastore import Info, Kind, Snapshot, SqliteMetaStore, Usage
from soci.snapshotter.mounts import Mount, snapshot_mounts
from soci.snapshotter.remote import RemoteFS

log = logging.getLogger(__name__)

LOG_REMOTE = "remote-snapshot-prepared"
LOG_LOCAL = "local-snapshot-prepared"
LOG_DEFER = "defer-snapshot-runtime"


class LocalLayers(Protocol):
    """Downloads and unpacks a whole layer into a directory (``local.LocalUnpacker``)."""

    async def unpack(self, source: lb.LayerSource, dest: Path) -> object: ...


@dataclass(frozen=True, slots=True)
class SnapshotterOptions:
    min_layer_size: int = 0
    """Layers smaller than this (``soci.size`` label) skip the remote attempt (``[snapshotter]``)."""
    allow_invalid_mounts_on_restart: bool = False
    """Start even if a remote snapshot cannot be mounted again; it is retried when used."""
    userxattr: bool | None = None
    """Add ``userxattr`` to overlay mounts; None detects it."""
    restore_retry_min_sec: float = 0.5
    restore_retry_max_sec: float = 30.0
    """Backoff bounds for remote snapshots whose registry was unavailable at start (``restore``)."""


class Snapshotter:
    """Snapshots under ``root``; remote layers through ``remote``, local ones through ``local``."""

    def __init__(
        self,
        root: Path,
        metastore: SqliteMetaStore,
        remote: RemoteFS,
        *,
        local: LocalLayers | None = None,
        options: SnapshotterOptions | None = None,
        metrics: m.MetricsSink | None = None,
    ) -> None:
        self.root = root
        self.snapshots_dir = root / "snapshots"
        self.snapshots_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(root, 0o700)
        self._ms = metastore
        self._remote = remote
        self._local = local
        self.options = options or SnapshotterOptions()
        self._userxattr = self.options.userxattr if self.options.userxattr is not None else system.needs_userxattr()
        self.opaque_xattr = "user.overlay.opaque" if self._userxattr else "trusted.overlay.opaque"
        self._metrics = metrics or m.NullMetrics()
        self._target_locks = KeyedLocks()
        self._remote_locks = KeyedLocks()
        self._restorer: asyncio.Task[None] | None = None

    # ---- paths ----------------------------------------------------------------------------------------

    def upper_path(self, snapshot_id: str) -> Path:
        return self.snapshots_dir / snapshot_id / "fs"

    def work_path(self, snapshot_id: str) -> Path:
        return self.snapshots_dir / snapshot_id / "work"

    # ---- reads ----------------------------------------------------------------------------------------

    async def stat(self, key: str) -> Info:
        with self._ms.transaction(writable=False) as tx:
            _, info, _ = tx.get_info(key)
        return info

    async def usage(self, key: str) -> Usage:
        with self._ms.transaction(writable=False) as tx:
            snapshot_id, info, usage = tx.get_info(key)
        if info.kind is Kind.ACTIVE:
            size, inodes = await asyncio.to_thread(system.disk_usage, self.upper_path(snapshot_id))
            usage = Usage(size, inodes)
        return usage

    async def walk(self, filters: Sequence[str] = ()) -> list[Info]:
        """Every snapshot matching any of ``filters`` (containerd filter syntax)."""
        selection = parse_filters(filters)
        with self._ms.transaction(writable=False) as tx:
            infos = [info for _, info in tx.walk()]
        return [info for info in infos if selection.matches(_fields_of(info))]

    async def mounts(self, key: str) -> list[Mount]:
        with self._ms.transaction(writable=False) as tx:
            snapshot = tx.get_snapshot(key)
            parent = tx.get_info(key)[1].parent
        return await self._mounts(snapshot, parent)

    # ---- writes ---------------------------------------------------------------------------------------

    async def update(self, name: str, labels: Mapping[str, str], fieldpaths: Sequence[str] = ()) -> Info:
        lb.check_labels(labels)
        with self._ms.transaction(writable=True) as tx:
            return tx.update_info(name, labels, fieldpaths)

    async def view(self, key: str, parent: str = "", labels: Mapping[str, str] | None = None) -> list[Mount]:
        snapshot = await self._create(Kind.VIEW, key, parent, dict(labels or {}))
        return await self._mounts(snapshot, parent)

    async def prepare(
        self, key: str, parent: str = "", labels: Mapping[str, str] | None = None, *, namespace: str = ""
    ) -> list[Mount]:
        """Create active snapshot ``key`` on ``parent``; see the module docstring for layer Prepares.

        Raises:
            AlreadyExists: ``key`` exists, or (remote-snapshot protocol) the target layer snapshot is ready.
        """
        wanted = dict(labels or {})
        lb.check_labels(wanted)
        target = wanted.get(lb.TARGET_SNAPSHOT_REF, "")
        if not target:
            snapshot = await self._create(Kind.ACTIVE, key, parent, wanted)
            return await self._mounts(snapshot, parent)
        # one layer Prepare per target at a time: the second one then finds the first one's result
        async with self._target_locks.hold(target):
            return await self._prepare_layer(key, parent, wanted, target, namespace)

    async def commit(self, name: str, key: str, labels: Mapping[str, str] | None = None) -> None:
        """Commit active ``key`` as ``name`` (its upper directory becomes read-only content)."""
        lb.check_labels(labels or {})
        with self._ms.transaction(writable=False) as tx:
            snapshot_id, _, _ = tx.get_info(key)
        usage = Usage()
        if lb.REMOTE not in (labels or {}):
            size, inodes = await asyncio.to_thread(system.disk_usage, self.upper_path(snapshot_id))
            usage = Usage(size, inodes)
        with self._ms.transaction(writable=True) as tx:
            tx.commit_active(key, name, usage, labels)

    async def remove(self, key: str) -> None:
        """Remove ``key`` (and its directory, unmounting a remote layer first)."""
        with self._ms.transaction(writable=True) as tx:
            tx.remove(key)
            removals = self._orphan_dirs(tx.ids())
        for directory in removals:
            await self._remove_dir(directory)

    async def cleanup(self) -> None:
        """Remove directories no snapshot owns (left by crashes or failed removals)."""
        with self._ms.transaction(writable=False) as tx:
            removals = self._orphan_dirs(tx.ids())
        for directory in removals:
            await self._remove_dir(directory)

    # ---- lifecycle ------------------------------------------------------------------------------------

    async def restore(self) -> None:
        """Bring the mounts back in line with the database after a restart (or crash).

        Orphan directories go; any mount left on a non-remote snapshot goes; every committed remote
        snapshot is checked and, if its mount is missing or dead, mounted again (all at once: each may
        wait up to ``mount_timeout_sec`` for its registry). A remote snapshot that fails with
        ``Unavailable`` (its registry is down or unreachable) does not keep the daemon down: it is mounted
        again in the background, with capped exponential backoff, or by the first request that uses it.

        Raises:
            Unavailable: a remote snapshot could not be mounted again for another reason and
                ``allow_invalid_mounts_on_restart`` is off (upstream refuses to start then).
        """
        await self.cleanup()
        with self._ms.transaction(writable=False) as tx:
            snapshots = list(tx.walk())
        remote = [(i, info) for i, info in snapshots if _is_remote(info)]
        for snapshot_id, info in snapshots:
            upper = self.upper_path(snapshot_id)
            if not _is_remote(info) and system.mountpoints_under(upper):
                log.info("removing stale mount on snapshot %s", info.name)
                await asyncio.to_thread(system.unmount_all, upper)
        results = await asyncio.gather(*(self._ensure_remote(i, info) for i, info in remote), return_exceptions=True)
        deferred = []
        for (snapshot_id, info), result in zip(remote, results, strict=True):
            if isinstance(result, BaseException) and not isinstance(result, SociError):
                raise result
            if result is None:
                continue
            if isinstance(result, Unavailable):
                log.warning("remote snapshot %s is restored in the background: %s", info.name, result)
                deferred.append((snapshot_id, info))
            elif self.options.allow_invalid_mounts_on_restart:
                log.warning("remote snapshot %s left unmounted; it is retried when used: %s", info.name, result)
            else:
                raise Unavailable(f"cannot restore remote snapshot {info.name}: {result}") from result
        if deferred:
            self._restorer = asyncio.get_running_loop().create_task(self._restore_later(deferred), name="restore")

    async def _restore_later(self, pending: list[tuple[str, Info]]) -> None:
        """Mount ``pending`` remote snapshots again until each one works (or is gone from the database)."""
        delay = self.options.restore_retry_min_sec
        while pending:
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.options.restore_retry_max_sec)
            with self._ms.transaction(writable=False) as tx:
                alive = set(tx.ids())
            still = []
            for snapshot_id, info in pending:
                if snapshot_id not in alive:
                    continue
                try:
                    await self._ensure_remote(snapshot_id, info)
                except SociError as exc:
                    log.debug("remote snapshot %s still unavailable: %s", info.name, exc)
                    still.append((snapshot_id, info))
                else:
                    log.info("remote snapshot %s restored", info.name)
            pending = still

    async def aclose(self, *, unmount: bool) -> None:
        """Stop; with ``unmount`` (SIGINT) every remote layer is unmounted, else mounts stay for a restart."""
        restorer, self._restorer = self._restorer, None
        if restorer is not None:
            restorer.cancel()
            await asyncio.gather(restorer, return_exceptions=True)
        if unmount:
            with self._ms.transaction(writable=False) as tx:
                snapshots = list(tx.walk())
            for snapshot_id, info in snapshots:
                if _is_remote(info):
                    upper = self.upper_path(snapshot_id)
                    try:
                        await self._remote.unmount(upper)
                    except (SociError, OSError) as exc:
                        log.warning("unmounting %s failed: %s", upper, exc)
                    await asyncio.to_thread(system.unmount_all, upper)
        self._ms.close()

    # ---- internals ------------------------------------------------------------------------------------

    async def _create(self, kind: Kind, key: str, parent: str, labels: Mapping[str, str]) -> Snapshot:
        """Database row and directory for a new snapshot (its ``fs`` owned like the parent's ``fs``)."""
        lb.check_labels(labels)
        owner: tuple[int, int] | None = None
        if parent:
            with self._ms.transaction(writable=False) as tx:
                try:
                    parent_id = tx.get_info(parent)[0]
                except NotFound:
                    raise NotFound(f"parent snapshot {parent} does not exist") from None
            # in a thread: the parent may be a lazily loaded layer served by this very event loop
            st = await asyncio.to_thread(os.stat, self.upper_path(parent_id))
            owner = (st.st_uid, st.st_gid)
        return self._create_now(kind, key, parent, labels, owner)

    def _create_now(
        self, kind: Kind, key: str, parent: str, labels: Mapping[str, str], owner: tuple[int, int] | None
    ) -> Snapshot:
        # no await in here: the row and the directory appear together for every other coroutine
        temp = Path(tempfile.mkdtemp(dir=self.snapshots_dir, prefix="new-"))
        try:
            (temp / "fs").mkdir(mode=0o755)
            os.chmod(temp / "fs", 0o755)
            if kind is Kind.ACTIVE:
                (temp / "work").mkdir(mode=0o711)
            if owner is not None:
                os.lchown(temp / "fs", *owner)
            with self._ms.transaction(writable=True) as tx:
                snapshot = tx.create_snapshot(kind, key, parent, labels)
                os.rename(temp, self.snapshots_dir / snapshot.id)
            return snapshot
        except BaseException:
            shutil.rmtree(temp, ignore_errors=True)
            raise

    async def _mounts(self, snapshot: Snapshot, check_key: str) -> list[Mount]:
        if check_key:
            await self._check_available(check_key)
        return snapshot_mounts(
            snapshot.kind,
            self.upper_path(snapshot.id),
            self.work_path(snapshot.id),
            [self.upper_path(p) for p in snapshot.parent_ids],
            userxattr=self._userxattr,
        )

    async def _check_available(self, key: str) -> None:
        """Every remote layer in the chain of ``key`` must be mounted and healthy (remounted if not)."""
        with self._ms.transaction(writable=False) as tx:
            chain = tx.chain(key)
        remote = [(i, info) for i, info in chain if _is_remote(info)]
        if not remote:
            return
        results = await asyncio.gather(*(self._ensure_remote(i, info) for i, info in remote), return_exceptions=True)
        for (_, info), result in zip(remote, results, strict=True):
            if isinstance(result, BaseException):
                raise Unavailable(f"layer {info.name} is unavailable: {result}") from result

    async def _ensure_remote(self, snapshot_id: str, info: Info) -> None:
        upper = self.upper_path(snapshot_id)
        source = lb.layer_source(info.labels)
        async with self._remote_locks.hold(snapshot_id):
            if system.is_mountpoint(upper):
                try:
                    await self._remote.check(upper, source)
                    return
                except (SociError, OSError) as exc:
                    log.warning("remote snapshot %s failed its check, mounting it again: %s", info.name, exc)
            await self._clear_mountpoint(upper)
            await self._remote.mount(upper, source)
            log.info("remote snapshot %s mounted again", info.name)

    async def _clear_mountpoint(self, upper: Path) -> None:
        try:
            await self._remote.unmount(upper)
        except (SociError, OSError) as exc:
            log.debug("unmount of %s by the remote filesystem failed: %s", upper, exc)
        await asyncio.to_thread(system.unmount_all, upper)
        upper.mkdir(mode=0o755, exist_ok=True)
        await asyncio.to_thread(system.empty_dir, upper)

    async def _prepare_layer(
        self, key: str, parent: str, labels: dict[str, str], target: str, namespace: str
    ) -> list[Mount]:
        existing = self._committed(target)
        if existing is not None and existing.parent == parent:
            raise AlreadyExists(f"target snapshot {target!r}: already exists")
        snapshot = await self._create(Kind.ACTIVE, key, parent, labels)
        try:
            return await self._prepare_created(snapshot, key, parent, labels, target, namespace)
        except AlreadyExists:
            raise  # the layer is ready: ``key`` was committed (or dropped as redundant)
        except BaseException:
            # a failed Prepare must not leave an active row behind: containerd never learns of ``key``
            await self._drop_active(key)
            raise

    async def _drop_active(self, key: str) -> None:
        with self._ms.transaction(writable=False) as tx:
            try:
                snapshot_id, info, _ = tx.get_info(key)
            except NotFound:
                return
        if info.kind is not Kind.ACTIVE:
            return
        try:
            await self._clear_mountpoint(self.upper_path(snapshot_id))
        except Exception as exc:  # the directory goes with cleanup() if it cannot go now
            log.warning("clearing %s after a failed Prepare failed: %s", key, _reason(exc))
        await self.remove(key)
        log.info("removed active snapshot %s after its Prepare failed", key)

    async def _prepare_created(
        self, snapshot: Snapshot, key: str, parent: str, labels: dict[str, str], target: str, namespace: str
    ) -> list[Mount]:
        upper = self.upper_path(snapshot.id)
        fields = {"key": key, "parent": parent, "target": target}
        if namespace:
            labels[lb.TARGET_NAMESPACE] = namespace
        try:
            source = lb.layer_source(labels)
        except InvalidArgument as exc:
            # without a usable layer description neither lazy nor local unpacking can work
            log.warning("%s; %s", exc, "deferring to container runtime", extra={**fields, LOG_DEFER: "true"})
            self._metrics.pull_mode(labels.get(lb.CRI_LAYER_DIGEST, ""), m.MODE_DEFER)
            return await self._mounts(snapshot, parent)
        layer = source.layer_digest
        fields["layer"] = layer

        defer = False
        if self._skip_remote(source):
            log.info("layer smaller than min_layer_size, skipping remote snapshot", extra=fields)
        else:
            try:
                await self._remote.mount(upper, source)
            except NoIndexError as exc:
                defer = True
                log.warning("failed to prepare remote snapshot: %s", exc, extra={**fields, LOG_REMOTE: "false"})
                await self._clear_mountpoint(upper)
            except Exception as exc:
                # any failure of the remote path (a known class, or a bug met by hostile input) falls back, as
                # upstream does; the warning and the metric keep it from passing unnoticed
                log.warning(
                    "failed to prepare remote snapshot, falling back: %s",
                    _reason(exc),
                    extra={**fields, LOG_REMOTE: "false"},
                )
                if not isinstance(exc, NoZtocError):
                    self._metrics.count(m.OP_FUSE_MOUNT_FAILURE, layer)
                    self._metrics.count(m.OP_REMOTE_FALLBACK, layer)
                await self._clear_mountpoint(upper)
            else:
                committed = dict(labels, **{lb.REMOTE: lb.REMOTE_VALUE, lb.HAS_SOCI_INDEX_DIGEST: "true"})
                await self._commit_layer(target, key, committed, remote=True)
                log.info("remote snapshot successfully prepared", extra={**fields, LOG_REMOTE: "true"})
                self._metrics.pull_mode(layer, m.MODE_REMOTE)
                raise AlreadyExists(f"target snapshot {target!r}: already exists")

        mounts = await self._mounts(snapshot, parent)
        if defer or self._local is None:
            log.warning("deferring to container runtime", extra={**fields, LOG_DEFER: "true"})
            self._metrics.pull_mode(layer, m.MODE_DEFER)
            return mounts

        start = time.monotonic()
        try:
            await self._local.unpack(source, upper)
        except Exception as exc:
            log.warning(
                "failed to prepare local snapshot: %s; deferring to container runtime",
                _reason(exc),
                extra={**fields, LOG_LOCAL: "false", LOG_DEFER: "true"},
            )
            self._metrics.count(m.OP_LOCAL_MOUNT_FAILURE, layer)
            self._metrics.pull_mode(layer, m.MODE_DEFER)
            await asyncio.to_thread(system.empty_dir, upper)
            return mounts
        self._metrics.observe(m.OP_LOCAL_UNPACK, layer, time.monotonic() - start)
        await self._commit_layer(target, key, dict(labels), remote=False)
        log.info("local snapshot successfully prepared", extra={**fields, LOG_LOCAL: "true"})
        self._metrics.pull_mode(layer, m.MODE_LOCAL)
        raise AlreadyExists(f"target snapshot {target!r}: already exists")

    async def _commit_layer(self, target: str, key: str, labels: dict[str, str], *, remote: bool) -> None:
        try:
            await self.commit(target, key, labels)
        except AlreadyExists:
            # another Prepare committed the same layer first: ours is redundant
            log.info("target snapshot %s was committed concurrently; dropping %s", target, key)
            with self._ms.transaction(writable=False) as tx:
                upper = self.upper_path(tx.get_info(key)[0])
            if remote:
                await self._clear_mountpoint(upper)
            await self.remove(key)

    def _committed(self, name: str) -> Info | None:
        with self._ms.transaction(writable=False) as tx:
            try:
                _, info, _ = tx.get_info(name)
            except SociError:
                return None
        return info if info.kind is Kind.COMMITTED else None

    def _skip_remote(self, source: lb.LayerSource) -> bool:
        minimum = self.options.min_layer_size
        return minimum > 0 and source.layer_size is not None and source.layer_size < minimum

    def _orphan_dirs(self, ids: Mapping[str, str]) -> list[Path]:
        return sorted(d for d in self.snapshots_dir.iterdir() if d.name not in ids)

    async def _remove_dir(self, directory: Path) -> None:
        try:
            upper = directory / "fs"
            if system.mountpoints_under(upper):
                try:
                    await self._remote.unmount(upper, discard=True)  # the snapshot is gone: so may its spans
                except (SociError, OSError) as exc:
                    log.debug("unmount of %s by the remote filesystem failed: %s", upper, exc)
            await asyncio.to_thread(system.remove_tree, directory)
        except OSError as exc:
            # the database no longer knows this directory; cleanup() tries again later
            log.warning("failed to remove directory %s: %s", directory, exc)


def _reason(exc: BaseException) -> str:
    """One line: the message of a project error, the class too for anything else (a bug to report)."""
    text = " ".join(str(exc).split())
    return text if isinstance(exc, SociError) else f"{type(exc).__name__}: {text}"


def _is_remote(info: Info) -> bool:
    return info.kind is Kind.COMMITTED and lb.REMOTE in info.labels


def _fields_of(info: Info) -> Callable[[Sequence[str]], str | None]:
    return lambda path: _field(info, path)


def _field(info: Info, path: Sequence[str]) -> str | None:
    """containerd's snapshot filter adaptor: kind, name, parent, labels.<key>."""
    if not path:
        return None
    head = path[0]
    if head == "kind" and len(path) == 1:
        return {Kind.ACTIVE: "active", Kind.VIEW: "view", Kind.COMMITTED: "committed"}.get(info.kind, "")
    if head == "name" and len(path) == 1:
        return info.name
    if head == "parent" and len(path) == 1:
        return info.parent
    if head == "labels":
        return map_field(path[1:], info.labels)
    return None

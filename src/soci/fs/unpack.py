"""Apply an OCI layer tar to an empty directory that will serve as an overlayfs layer.

OCI whiteouts become overlayfs ones: ``.wh.<name>`` → a 0/0 character device ``<name>``;
``.wh..wh..opq`` → the ``overlay.opaque`` xattr on its directory. Entries keep owner, mode (set after
chown, which clears set-id bits), xattrs from ``SCHILY.xattr.*`` PAX records and times (directories
last, since creating children changes them). Paths never leave the root: ``..`` is refused and
symlinks met on the way are resolved inside the root. The uncompressed stream is hashed, so callers
can check the layer's diff ID.

Synchronous: run it in a worker thread.
"""

from __future__ import annotations

import asyncio
import errno
import hashlib
import io
import logging
import os
import posixpath
import secrets
import shutil
import stat
import tarfile
import tempfile
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, BinaryIO

from soci.codec.inflate import StreamInflater
from soci.errors import FormatError, InvalidArgument, UnsupportedEntry
from soci.formats.oci import layer_compression

log = logging.getLogger(__name__)

WHITEOUT_PREFIX = ".wh."
OPAQUE_WHITEOUT = ".wh..wh..opq"
_MAX_SYMLINK_HOPS = 40
_CHUNK = 1 << 20


@dataclass(frozen=True, slots=True)
class ApplyResult:
    diff_id: str
    """sha256 of the whole uncompressed stream."""
    uncompressed_size: int
    entries: int


class _HashingReader(io.RawIOBase):
    """Uncompressed bytes of a layer blob, hashed as they are read."""

    def __init__(self, blob: BinaryIO, compression: str) -> None:
        self._blob = blob
        self._inflater = StreamInflater() if compression == "gzip" else None
        self._buffer = b""
        self._eof = False
        self.hasher = hashlib.sha256()
        self.size = 0

    def readable(self) -> bool:
        return True

    def _fill(self) -> None:
        while not self._buffer and not self._eof:
            chunk = self._blob.read(_CHUNK)
            if not chunk:
                self._eof = True
                if self._inflater is not None:
                    self._buffer = self._inflater.finish()
            elif self._inflater is not None:
                self._buffer = self._inflater.feed(chunk)
            else:
                self._buffer = chunk
        if self._buffer:
            self.hasher.update(self._buffer)
            self.size += len(self._buffer)

    def readinto(self, target: bytearray | memoryview) -> int:  # type: ignore[override]
        if not self._buffer:
            self._fill()
        count = min(len(target), len(self._buffer))
        target[:count] = self._buffer[:count]
        self._buffer = self._buffer[count:]
        return count

    def drain(self) -> None:
        while self.readinto(bytearray(_CHUNK)):
            pass


def compression_of(media_type: str) -> str:
    """``gzip`` or ``uncompressed``; UnsupportedEntry for zstd and unknown layer types."""
    try:
        kind = layer_compression(media_type)
    except FormatError as exc:
        raise UnsupportedEntry(f"layer media type {media_type!r} cannot be unpacked here") from exc
    if kind == "gzip":
        return "gzip"
    if kind == "":
        return "uncompressed"
    if kind == "unknown":
        return "detect"  # Docker's plain "diff.tar" type: containerd sniffs the bytes
    raise UnsupportedEntry(f"layer media type {media_type!r} ({kind}) cannot be unpacked here")


def apply_layer_file(blob_path: Path, media_type: str, root: Path, *, opaque_xattr: str) -> ApplyResult:
    """Unpack the layer blob at ``blob_path`` into ``root`` (which must exist)."""
    compression = compression_of(media_type)
    with blob_path.open("rb") as blob:
        if compression == "detect":
            compression = "gzip" if blob.read(2) == b"\x1f\x8b" else "uncompressed"
            blob.seek(0)
        return apply_layer(blob, compression, root, opaque_xattr=opaque_xattr)


def apply_layer(blob: BinaryIO, compression: str, root: Path, *, opaque_xattr: str) -> ApplyResult:
    reader = _HashingReader(blob, compression)
    applier = _Applier(root, opaque_xattr)
    try:
        with tarfile.open(fileobj=io.BufferedReader(reader, _CHUNK), mode="r|") as tar:
            for member in tar:
                applier.apply(member, tar.extractfile)
    except tarfile.TarError as exc:
        raise FormatError(f"layer tar: {exc}") from exc
    reader.drain()  # the diff ID covers the end-of-archive blocks and any padding too
    applier.finish()
    return ApplyResult("sha256:" + reader.hasher.hexdigest(), reader.size, applier.entries)


class _Applier:
    def __init__(self, root: Path, opaque_xattr: str) -> None:
        self.root = root
        self.opaque_xattr = opaque_xattr
        self.entries = 0
        self._dir_times: list[tuple[Path, int]] = []
        self._is_root = os.geteuid() == 0

    def apply(self, member: tarfile.TarInfo, extract: Callable[[tarfile.TarInfo], IO[bytes] | None]) -> None:
        self.entries += 1
        name = _clean(member.name)
        if name == "":
            if member.isdir():
                self._metadata(self.root, member)
                self._dir_times.append((self.root, _mtime_ns(member)))
            return
        parent_rel, base = posixpath.split(name)
        parent = self._resolve_dir(parent_rel)
        if base == OPAQUE_WHITEOUT:
            os.setxattr(parent, self.opaque_xattr, b"y")
            return
        if base.startswith(WHITEOUT_PREFIX):
            target = parent / base[len(WHITEOUT_PREFIX) :]
            _remove(target)
            os.mknod(target, stat.S_IFCHR | 0o000, os.makedev(0, 0))
            return
        path = parent / base
        if member.isdir():
            if not (path.is_dir() and not path.is_symlink()):
                _remove(path)
                path.mkdir(mode=0o700)
            self._metadata(path, member)
            self._dir_times.append((path, _mtime_ns(member)))
            return
        _remove(path)
        if member.isreg():
            source = extract(member)
            assert source is not None
            with open(path, "wb") as out:
                shutil.copyfileobj(source, out, _CHUNK)
        elif member.issym():
            os.symlink(member.linkname, path)
        elif member.islnk():
            target = self.root / _clean(member.linkname)
            if not _clean(member.linkname) or not os.path.lexists(target):
                raise FormatError(f"layer tar: hard link {member.name!r} points at missing {member.linkname!r}")
            os.link(target, path, follow_symlinks=False)
            return  # a hard link shares the target's inode and metadata
        elif member.ischr() or member.isblk():
            kind = stat.S_IFCHR if member.ischr() else stat.S_IFBLK
            os.mknod(path, kind | (member.mode & 0o7777), os.makedev(member.devmajor, member.devminor))
        elif member.isfifo():
            os.mkfifo(path, member.mode & 0o7777)
        else:
            raise UnsupportedEntry(f"layer tar: entry {member.name!r} has unsupported type {member.type!r}")
        self._metadata(path, member)
        os.utime(path, ns=(_mtime_ns(member), _mtime_ns(member)), follow_symlinks=False)

    def _metadata(self, path: Path, member: tarfile.TarInfo) -> None:
        try:
            os.lchown(path, member.uid, member.gid)
        except PermissionError:
            if self._is_root:
                raise
        if not member.issym():
            os.chmod(path, member.mode & 0o7777)
        for key, value in member.pax_headers.items():
            if key.startswith("SCHILY.xattr."):
                attribute = key[len("SCHILY.xattr.") :]
                try:
                    os.setxattr(path, attribute, value.encode("utf-8", "surrogateescape"), follow_symlinks=False)
                except OSError as exc:
                    if exc.errno not in (errno.ENOTSUP, errno.EPERM):
                        raise
                    log.debug("xattr %s on %s not set: %s", attribute, path, exc)

    def _resolve_dir(self, rel: str, hops: int = 0) -> Path:
        """The directory ``rel`` inside the root, created (0755) where missing; symlinks stay inside."""
        current = self.root
        parts = [p for p in rel.split("/") if p]
        while parts:
            part = parts.pop(0)
            candidate = current / part
            try:
                st = os.lstat(candidate)
            except FileNotFoundError:
                candidate.mkdir(mode=0o755)
                current = candidate
                continue
            if stat.S_ISDIR(st.st_mode):
                current = candidate
            elif stat.S_ISLNK(st.st_mode):
                hops += 1
                if hops > _MAX_SYMLINK_HOPS:
                    raise FormatError(f"layer tar: too many symlinks resolving {rel!r}")
                link = os.readlink(candidate)
                base = "" if link.startswith("/") else str(current.relative_to(self.root))
                resolved = _scoped(posixpath.join(base, link))
                parts = [p for p in resolved.split("/") if p] + parts
                current = self.root
            else:
                _remove(candidate)
                candidate.mkdir(mode=0o755)
                current = candidate
        return current

    def finish(self) -> None:
        for path, mtime in reversed(self._dir_times):
            os.utime(path, ns=(mtime, mtime), follow_symlinks=False)


def _clean(name: str) -> str:
    """A tar entry name relative to the root ('' for the root itself); refuses names escaping it."""
    relative = posixpath.normpath(name.lstrip("/"))
    if relative == ".." or relative.startswith("../"):
        raise InvalidArgument(f"layer tar: entry {name!r} points outside the layer")
    return "" if relative == "." else relative


def _scoped(path: str) -> str:
    """``path`` resolved lexically with the root as a floor (how a symlink inside the layer resolves)."""
    return posixpath.normpath("/" + path).lstrip("/")


def _mtime_ns(member: tarfile.TarInfo) -> int:
    return int(float(member.mtime) * 1_000_000_000)


def _remove(path: Path) -> None:
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if stat.S_ISDIR(st.st_mode):
        shutil.rmtree(path)
    else:
        os.unlink(path)


async def unpack_layer(
    chunks: AsyncIterator[bytes], media_type: str, target: Path, *, opaque_xattr: str = "trusted.overlay.opaque"
) -> bool:
    """Unpack a layer stream into ``target``, which appears only once complete. False if it already existed.

    ``chunks`` must raise before its last chunk if the blob does not match its digest (as
    ``RegistryClient.open_blob_stream`` does); nothing is left behind then.
    """
    if target.is_dir():
        return False
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, staged_name = tempfile.mkstemp(dir=target.parent, prefix=f".blob-{target.name}-")
    staged = Path(staged_name)
    tmp = target.parent / f".tmp-{target.name}-{secrets.token_hex(4)}"
    try:
        with os.fdopen(fd, "wb") as out:
            async for chunk in chunks:
                await asyncio.to_thread(out.write, chunk)
        tmp.mkdir()
        await asyncio.to_thread(apply_layer_file, staged, media_type, tmp, opaque_xattr=opaque_xattr)
        os.rename(tmp, target)
    except BaseException:
        await asyncio.to_thread(shutil.rmtree, tmp, True)
        raise
    finally:
        staged.unlink(missing_ok=True)
    log.info("unpacked layer into %s", target)
    return True

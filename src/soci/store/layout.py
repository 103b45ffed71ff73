"""Read and write OCI image layouts, as directories or as tar archives (``oci-dir`` / ``oci-archive``).

An archive is read in place through the offsets of its members, never extracted, and only the paths an OCI
layout may contain are accepted, so no member name can reach outside the layout.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import shutil
import tarfile
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from soci.errors import FormatError, NotFound
from soci.formats.digest import digest_hex, parse_digest
from soci.store.content import OCI_LAYOUT_CONTENT, OCI_LAYOUT_FILE, ContentStore, check_layout_marker

_BLOB_PATH = re.compile(r"^(?:\./)?blobs/sha256/([0-9a-f]{64})$")
_TOP_FILES = {OCI_LAYOUT_FILE, "index.json"}


class _Window(io.RawIOBase):
    """A read-only view of ``size`` bytes of a file starting at ``offset``."""

    def __init__(self, path: Path, offset: int, size: int) -> None:
        self._f = open(path, "rb")  # noqa: SIM115 - closed by close()
        self._offset = offset
        self._size = size
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def tell(self) -> int:
        return self._pos

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        n = min(len(buffer), self._size - self._pos)
        if n <= 0:
            return 0
        self._f.seek(self._offset + self._pos)
        got = self._f.readinto(memoryview(buffer)[:n])
        self._pos += got
        return got

    def close(self) -> None:
        self._f.close()
        super().close()


class OciLayout:
    """An OCI image layout to read from: a directory or a tar archive of one."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._members: dict[str, tuple[int, int]] = {}
        if self.path.is_dir():
            check_layout_marker(self.path)
            self._content: ContentStore | None = ContentStore(self.path)
            self.is_archive = False
        elif self.path.is_file():
            self._content = None
            self.is_archive = True
            self._index_archive()
        else:
            raise NotFound(f"OCI layout {self.path} does not exist")

    def _index_archive(self) -> None:
        try:
            with tarfile.open(self.path, "r:") as tar:
                for member in tar:
                    name = member.name[2:] if member.name.startswith("./") else member.name
                    if member.isdir():
                        continue
                    if not member.isfile():
                        raise FormatError(f"{self.path}: archive member {member.name!r} is not a regular file")
                    if name in _TOP_FILES or _BLOB_PATH.match(name):
                        self._members[name] = (member.offset_data, member.size)
                    elif not name.startswith("blobs/"):
                        continue  # other files (e.g. a Docker manifest.json) are not part of the layout
                    else:
                        raise FormatError(f"{self.path}: unexpected archive member {member.name!r}")
        except tarfile.TarError as exc:
            raise FormatError(f"{self.path}: not a valid OCI archive: {exc}") from exc
        if OCI_LAYOUT_FILE not in self._members or "index.json" not in self._members:
            raise FormatError(f"{self.path}: not an OCI archive (oci-layout or index.json missing)")

    def read_file(self, name: str) -> bytes:
        if self._content is not None:
            try:
                return (self.path / name).read_bytes()
            except FileNotFoundError:
                raise NotFound(f"{self.path}: {name} is missing") from None
        with self._open_member(name) as f:
            return f.read()

    def _open_member(self, name: str) -> BinaryIO:
        try:
            offset, size = self._members[name]
        except KeyError:
            raise NotFound(f"{self.path}: {name} is missing") from None
        return io.BufferedReader(_Window(self.path, offset, size), buffer_size=1 << 20)

    def index_json(self) -> bytes:
        return self.read_file("index.json")

    def has_blob(self, digest: str) -> bool:
        if self._content is not None:
            return self._content.has_blob(digest)
        return f"blobs/sha256/{digest_hex(digest)}" in self._members

    def blob_size(self, digest: str) -> int:
        if self._content is not None:
            return self._content.blob_size(digest)
        try:
            return self._members[f"blobs/sha256/{digest_hex(digest)}"][1]
        except KeyError:
            raise NotFound(f"blob {digest} not found in {self.path}") from None

    def open_blob(self, digest: str) -> BinaryIO:
        if self._content is not None:
            return self._content.open_blob(digest)
        return self._open_member(f"blobs/sha256/{digest_hex(parse_digest(digest))}")

    def read_blob(self, digest: str) -> bytes:
        if self._content is not None:
            return self._content.read_blob(digest)
        with self.open_blob(digest) as f:
            data = f.read()
        from soci.formats.digest import verify_digest

        verify_digest(data, digest, f"blob {digest} in {self.path}")
        return data

    def blob_digests(self) -> Iterator[str]:
        if self._content is not None:
            yield from self._content.blob_digests()
            return
        for name in sorted(self._members):
            m = _BLOB_PATH.match(name)
            if m:
                yield "sha256:" + m.group(1)


def write_layout(
    dest: Path,
    *,
    source: OciLayout,
    new_blobs: dict[str, bytes],
    index_json: bytes,
    archive: bool,
) -> None:
    """Write ``source``'s blobs plus ``new_blobs`` and ``index_json`` as a new layout at ``dest``, atomically."""
    dest = Path(dest)
    empty_dir = not archive and dest.is_dir() and not any(dest.iterdir())
    if dest.exists() and not empty_dir:
        raise FormatError(f"destination {dest} already exists")
    dest.parent.mkdir(parents=True, exist_ok=True)
    if archive:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)
        os.close(fd)
        try:
            with tarfile.open(tmp_name, "w", format=tarfile.PAX_FORMAT) as tar:
                _add_bytes(tar, OCI_LAYOUT_FILE, OCI_LAYOUT_CONTENT)
                _add_bytes(tar, "index.json", index_json)
                written = set()
                for digest in source.blob_digests():
                    with source.open_blob(digest) as f:
                        info = tarfile.TarInfo(f"blobs/sha256/{digest_hex(digest)}")
                        info.size = source.blob_size(digest)
                        info.mode = 0o644
                        tar.addfile(info, f)
                    written.add(digest)
                for digest, data in new_blobs.items():
                    if digest not in written:
                        _add_bytes(tar, f"blobs/sha256/{digest_hex(digest)}", data)
            with open(tmp_name, "rb") as f:
                os.fsync(f.fileno())
            os.replace(tmp_name, dest)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp_name)
            raise
        return
    tmp_dir = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    try:
        out = ContentStore(tmp_dir)
        out.ensure_layout()
        for digest in source.blob_digests():
            _copy_blob(source, digest, out.path(digest))
        for digest, data in new_blobs.items():
            out.write_blob(data, digest)
        (tmp_dir / "index.json").write_bytes(index_json)
        if dest.exists():
            dest.rmdir()
        os.replace(tmp_dir, dest)
    except BaseException:
        shutil.rmtree(tmp_dir, ignore_errors=True)
        raise


def _copy_blob(source: OciLayout, digest: str, target: Path) -> None:
    """Hard-link a blob from a layout directory when possible (blobs are immutable), else copy it."""
    if not source.is_archive:
        try:
            os.link(source.path / "blobs" / "sha256" / digest_hex(digest), target)
            return
        except OSError:
            pass
    with source.open_blob(digest) as src, open(target, "wb") as dst:
        shutil.copyfileobj(src, dst, 1 << 20)


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = 0o644
    tar.addfile(info, io.BytesIO(data))

"""Content-addressed blobs in OCI image-layout form (``<dir>/blobs/sha256/<hex>``).

Every write goes to a temporary file in the same directory, is hashed while written, fsynced, and renamed
into place only when the digest is right, so a crash never leaves a half-written blob under its name.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import BinaryIO

from soci.errors import DataLoss, FormatError, NotFound
from soci.formats.digest import digest_hex, is_digest, parse_digest

OCI_LAYOUT_FILE = "oci-layout"
OCI_LAYOUT_CONTENT = b'{"imageLayoutVersion":"1.0.0"}'
_COPY_CHUNK = 1 << 20


def atomic_write(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Write ``data`` to ``path`` so readers see either the old file or the whole new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


class ContentStore:
    """Blobs of one OCI image layout directory."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def ensure_layout(self) -> None:
        (self.root / "blobs" / "sha256").mkdir(parents=True, exist_ok=True)
        layout = self.root / OCI_LAYOUT_FILE
        if not layout.exists():
            atomic_write(layout, OCI_LAYOUT_CONTENT)

    def path(self, digest: str) -> Path:
        return self.root / "blobs" / "sha256" / digest_hex(digest)

    def has_blob(self, digest: str) -> bool:
        return self.path(digest).is_file()

    def blob_size(self, digest: str) -> int:
        try:
            return self.path(digest).stat().st_size
        except FileNotFoundError:
            raise NotFound(f"blob {digest} not found in {self.root}") from None

    def read_blob(self, digest: str, *, verify: bool = True) -> bytes:
        try:
            data = self.path(digest).read_bytes()
        except FileNotFoundError:
            raise NotFound(f"blob {digest} not found in {self.root}") from None
        if verify:
            actual = "sha256:" + hashlib.sha256(data).hexdigest()
            if actual != digest:
                raise DataLoss(f"blob {digest} in {self.root} is corrupt: content hashes to {actual}")
        return data

    def open_blob(self, digest: str) -> BinaryIO:
        try:
            return open(self.path(digest), "rb")
        except FileNotFoundError:
            raise NotFound(f"blob {digest} not found in {self.root}") from None

    def write_blob(self, data: bytes, expected_digest: str | None = None) -> str:
        """Store ``data``; return its digest. With ``expected_digest``, refuse content that does not match."""
        return self.write_chunks([data], expected_digest)

    def write_stream(self, src: BinaryIO, expected_digest: str | None = None) -> str:
        return self.write_chunks(iter(lambda: src.read(_COPY_CHUNK), b""), expected_digest)

    def write_chunks(self, chunks: Iterable[bytes], expected_digest: str | None = None) -> str:
        if expected_digest is not None:
            parse_digest(expected_digest)
            if self.has_blob(expected_digest):
                for _ in chunks:  # drain producers that expect to be consumed
                    pass
                return expected_digest
        self.ensure_layout()
        blob_dir = self.root / "blobs" / "sha256"
        fd, tmp = tempfile.mkstemp(prefix=".ingest-", dir=blob_dir)
        hasher = hashlib.sha256()
        try:
            with os.fdopen(fd, "wb") as f:
                for chunk in chunks:
                    hasher.update(chunk)
                    f.write(chunk)
                f.flush()
                os.fsync(f.fileno())
            digest = "sha256:" + hasher.hexdigest()
            if expected_digest is not None and digest != expected_digest:
                raise DataLoss(f"content hashes to {digest}, expected {expected_digest}")
            os.chmod(tmp, 0o644)
            os.replace(tmp, self.path(digest))
            return digest
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise

    def delete_blob(self, digest: str) -> bool:
        try:
            self.path(digest).unlink()
            return True
        except FileNotFoundError:
            return False

    def blob_digests(self) -> Iterator[str]:
        blob_dir = self.root / "blobs" / "sha256"
        if not blob_dir.is_dir():
            return
        for entry in sorted(blob_dir.iterdir()):
            candidate = "sha256:" + entry.name
            if entry.is_file() and is_digest(candidate):
                yield candidate


def read_index_json(layout_dir: Path) -> bytes:
    path = Path(layout_dir) / "index.json"
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise NotFound(f"{layout_dir} is not an OCI image layout: index.json is missing") from None


def check_layout_marker(layout_dir: Path) -> None:
    path = Path(layout_dir) / OCI_LAYOUT_FILE
    try:
        marker = json.loads(path.read_bytes())
    except FileNotFoundError:
        raise NotFound(f"{layout_dir} is not an OCI image layout: oci-layout is missing") from None
    except ValueError as exc:
        raise FormatError(f"{path}: invalid JSON") from exc
    if not isinstance(marker, dict) or "imageLayoutVersion" not in marker:
        raise FormatError(f"{path}: imageLayoutVersion missing")

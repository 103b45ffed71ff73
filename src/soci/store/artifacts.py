"""The artifacts database: which SOCI indexes, zTOCs and prefetch artifacts exist locally and what they belong to.

Upstream keeps this in a bbolt file (artifacts.db); we keep the same records in SQLite so that every change is
one transaction. Rows are written only after their blob is in the content store, and removed before it.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from soci.errors import NotFound

ARTIFACT_INDEX = "soci_index"
ARTIFACT_LAYER = "soci_layer"
ARTIFACT_PREFETCH = "soci_prefetch"

DB_FILE = "artifacts.sqlite"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS artifacts (
    digest        TEXT PRIMARY KEY,
    type          TEXT NOT NULL,
    size          INTEGER NOT NULL,
    location      TEXT NOT NULL DEFAULT '',
    oci_digest    TEXT NOT NULL DEFAULT '',
    image_digest  TEXT NOT NULL DEFAULT '',
    platform      TEXT NOT NULL DEFAULT '',
    media_type    TEXT NOT NULL DEFAULT '',
    artifact_type TEXT NOT NULL DEFAULT '',
    span_size     INTEGER NOT NULL DEFAULT 0,
    image_ref     TEXT NOT NULL DEFAULT '',
    created_at    REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS artifacts_by_oci ON artifacts (oci_digest, type);
"""


@dataclass(frozen=True, slots=True)
class ArtifactEntry:
    """One artifact. ``oci_digest`` is the original layer digest (zTOC, prefetch) or image manifest (index)."""

    digest: str
    type: str
    size: int
    location: str = ""
    oci_digest: str = ""
    image_digest: str = ""
    platform: str = ""
    media_type: str = ""
    artifact_type: str = ""
    span_size: int = 0
    image_ref: str = ""
    created_at: float = 0.0


_COLUMNS = (
    "digest", "type", "size", "location", "oci_digest", "image_digest", "platform",
    "media_type", "artifact_type", "span_size", "image_ref", "created_at",
)  # fmt: skip


class ArtifactsDB:
    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # One connection shared by the index builder's worker threads: every use holds this lock.
        self._lock = threading.RLock()
        self._conn = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=FULL")
        self._conn.executescript(_SCHEMA)

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> ArtifactsDB:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    def put(self, entry: ArtifactEntry) -> None:
        with self.transaction() as tx:
            self._put(tx, entry)

    def put_many(self, entries: list[ArtifactEntry]) -> None:
        with self.transaction() as tx:
            for entry in entries:
                self._put(tx, entry)

    @staticmethod
    def _put(tx: sqlite3.Connection, entry: ArtifactEntry) -> None:
        values = [getattr(entry, c) for c in _COLUMNS]
        if not entry.created_at:
            values[_COLUMNS.index("created_at")] = time.time()
        tx.execute(
            f"INSERT OR REPLACE INTO artifacts ({', '.join(_COLUMNS)}) VALUES ({', '.join('?' * len(_COLUMNS))})",
            values,
        )

    def get(self, digest: str) -> ArtifactEntry:
        with self._lock:
            row = self._conn.execute(
                f"SELECT {', '.join(_COLUMNS)} FROM artifacts WHERE digest = ?", (digest,)
            ).fetchone()
        if row is None:
            raise NotFound(f"artifact {digest} not found in {self.path}")
        return ArtifactEntry(*row)

    def find(self, **where: str | int) -> list[ArtifactEntry]:
        """Entries whose columns equal the given values, newest first."""
        for key in where:
            if key not in _COLUMNS:
                raise ValueError(f"unknown artifact column {key!r}")
        clause = " AND ".join(f"{k} = ?" for k in where) or "1"
        with self._lock:
            rows = self._conn.execute(
                f"SELECT {', '.join(_COLUMNS)} FROM artifacts WHERE {clause} ORDER BY created_at DESC, digest",
                tuple(where.values()),
            ).fetchall()
        return [ArtifactEntry(*row) for row in rows]

    def find_ztoc(self, layer_digest: str, span_size: int) -> ArtifactEntry | None:
        found = self.find(type=ARTIFACT_LAYER, oci_digest=layer_digest, span_size=span_size)
        return found[0] if found else None

    def update(self, digest: str, **values: str | int) -> None:
        for key in values:
            if key not in _COLUMNS or key == "digest":
                raise ValueError(f"cannot update artifact column {key!r}")
        with self.transaction() as tx:
            cur = tx.execute(
                f"UPDATE artifacts SET {', '.join(f'{k} = ?' for k in values)} WHERE digest = ?",
                (*values.values(), digest),
            )
            if cur.rowcount == 0:
                raise NotFound(f"artifact {digest} not found in {self.path}")

    def remove(self, digest: str) -> bool:
        with self.transaction() as tx:
            return tx.execute("DELETE FROM artifacts WHERE digest = ?", (digest,)).rowcount > 0

    def all(self) -> list[ArtifactEntry]:
        return self.find()

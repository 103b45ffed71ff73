"""``SqliteMetaStore``: snapshot names, kinds, parents, labels and usage; nothing about directories.

Semantics follow containerd's snapshot storage: keys are unique across kinds; only active and view
snapshots are created; a parent must be committed; committing an active snapshot keeps its id (so its
directory) under a new name and *replaces* its labels; a snapshot with children cannot be removed;
label updates with an empty value delete the label. Ids are never reused, so a directory named by
an id can never be mistaken for a newer snapshot's.

Every read and write happens inside ``with store.transaction(writable=...) as tx``: read-only
transactions always roll back, writable ones commit only when the block succeeds.
"""

from __future__ import annotations

import enum
import json
import sqlite3
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from soci.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound

_SCHEMA = """
CREATE TABLE IF NOT EXISTS snapshots (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    key TEXT NOT NULL UNIQUE,
    kind INTEGER NOT NULL,
    parent_id INTEGER REFERENCES snapshots(id),
    created_ns INTEGER NOT NULL,
    updated_ns INTEGER NOT NULL,
    labels TEXT NOT NULL DEFAULT '{}',
    size INTEGER NOT NULL DEFAULT 0,
    inodes INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS snapshots_parent ON snapshots(parent_id);
"""


class Kind(enum.IntEnum):
    """Snapshot kinds, numbered as in containerd's API."""

    UNKNOWN = 0
    VIEW = 1
    ACTIVE = 2
    COMMITTED = 3


@dataclass(frozen=True, slots=True)
class Info:
    name: str
    kind: Kind
    parent: str = ""
    labels: Mapping[str, str] = field(default_factory=dict)
    created_ns: int = 0
    updated_ns: int = 0


@dataclass(frozen=True, slots=True)
class Usage:
    size: int = 0
    inodes: int = 0


@dataclass(frozen=True, slots=True)
class Snapshot:
    """An active or view snapshot as the snapshotter needs it to build mounts."""

    id: str
    kind: Kind
    parent_ids: tuple[str, ...] = ()
    """Ids of the parent chain, nearest parent first."""


def _now_ns() -> int:
    return time.time_ns()


class Transaction:
    """Operations on the store; obtained from ``SqliteMetaStore.transaction``."""

    def __init__(self, db: sqlite3.Connection, writable: bool) -> None:
        self._db = db
        self.writable = writable

    def _require_writable(self) -> None:
        if not self.writable:
            raise FailedPrecondition("write in a read-only metadata transaction")

    def _row(self, key: str) -> sqlite3.Row:
        row: sqlite3.Row | None = self._db.execute("SELECT * FROM snapshots WHERE key = ?", (key,)).fetchone()
        if row is None:
            raise NotFound(f"snapshot {key} does not exist")
        return row

    def _info(self, row: sqlite3.Row) -> Info:
        parent = ""
        if row["parent_id"] is not None:
            prow = self._db.execute("SELECT key FROM snapshots WHERE id = ?", (row["parent_id"],)).fetchone()
            parent = prow["key"] if prow else ""
        return Info(
            name=row["key"],
            kind=Kind(row["kind"]),
            parent=parent,
            labels=json.loads(row["labels"]),
            created_ns=row["created_ns"],
            updated_ns=row["updated_ns"],
        )

    def _parent_ids(self, parent_id: int | None) -> tuple[str, ...]:
        ids: list[str] = []
        while parent_id is not None:
            ids.append(str(parent_id))
            row = self._db.execute("SELECT parent_id FROM snapshots WHERE id = ?", (parent_id,)).fetchone()
            parent_id = row["parent_id"] if row else None
        return tuple(ids)

    # ---- reads -----------------------------------------------------------------------------------------

    def get_info(self, key: str) -> tuple[str, Info, Usage]:
        """``(id, info, usage)`` of any snapshot."""
        row = self._row(key)
        return str(row["id"]), self._info(row), Usage(row["size"], row["inodes"])

    def get_snapshot(self, key: str) -> Snapshot:
        """An active or view snapshot with its parent chain (committed ones have no mounts)."""
        row = self._row(key)
        kind = Kind(row["kind"])
        if kind not in (Kind.ACTIVE, Kind.VIEW):
            raise FailedPrecondition(f"snapshot {key} is not active or view")
        return Snapshot(str(row["id"]), kind, self._parent_ids(row["parent_id"]))

    def walk(self) -> Iterator[tuple[str, Info]]:
        """Every snapshot as ``(id, info)``, oldest first."""
        rows = self._db.execute("SELECT * FROM snapshots ORDER BY id").fetchall()
        for row in rows:
            yield str(row["id"]), self._info(row)

    def ids(self) -> dict[str, str]:
        """id → key of every snapshot."""
        return {str(r["id"]): r["key"] for r in self._db.execute("SELECT id, key FROM snapshots")}

    def chain(self, key: str) -> list[tuple[str, Info]]:
        """The snapshot named ``key`` and all its ancestors, nearest first."""
        out: list[tuple[str, Info]] = []
        row: sqlite3.Row | None = self._row(key)
        while row is not None:
            out.append((str(row["id"]), self._info(row)))
            parent_id = row["parent_id"]
            row = None
            if parent_id is not None:
                row = self._db.execute("SELECT * FROM snapshots WHERE id = ?", (parent_id,)).fetchone()
        return out

    # ---- writes ----------------------------------------------------------------------------------------

    def create_snapshot(
        self, kind: Kind, key: str, parent: str = "", labels: Mapping[str, str] | None = None
    ) -> Snapshot:
        self._require_writable()
        if kind not in (Kind.ACTIVE, Kind.VIEW):
            raise InvalidArgument(f"snapshot type {kind.name.lower()} invalid; only active or view can be created")
        if not key:
            raise InvalidArgument("snapshot key must not be empty")
        if self._db.execute("SELECT 1 FROM snapshots WHERE key = ?", (key,)).fetchone():
            raise AlreadyExists(f"snapshot {key} already exists")
        parent_id: int | None = None
        if parent:
            prow = self._db.execute("SELECT id, kind FROM snapshots WHERE key = ?", (parent,)).fetchone()
            if prow is None:
                raise NotFound(f"parent snapshot {parent} does not exist")
            if Kind(prow["kind"]) is not Kind.COMMITTED:
                raise FailedPrecondition(f"parent {parent} is not a committed snapshot")
            parent_id = prow["id"]
        now = _now_ns()
        cursor = self._db.execute(
            "INSERT INTO snapshots (key, kind, parent_id, created_ns, updated_ns, labels) VALUES (?, ?, ?, ?, ?, ?)",
            (key, int(kind), parent_id, now, now, _labels_json(labels)),
        )
        return Snapshot(str(cursor.lastrowid), kind, self._parent_ids(parent_id))

    def commit_active(self, key: str, name: str, usage: Usage, labels: Mapping[str, str] | None = None) -> str:
        """Turn active ``key`` into committed ``name`` (same id); returns the id."""
        self._require_writable()
        if not name:
            raise InvalidArgument("committed snapshot name must not be empty")
        if self._db.execute("SELECT 1 FROM snapshots WHERE key = ?", (name,)).fetchone():
            raise AlreadyExists(f"snapshot {name} already exists")
        row = self._row(key)
        if Kind(row["kind"]) is not Kind.ACTIVE:
            raise FailedPrecondition(f"snapshot {key} is not active")
        now = _now_ns()
        self._db.execute(
            "UPDATE snapshots SET key = ?, kind = ?, created_ns = ?, updated_ns = ?, labels = ?, size = ?, inodes = ?"
            " WHERE id = ?",
            (name, int(Kind.COMMITTED), now, now, _labels_json(labels), usage.size, usage.inodes, row["id"]),
        )
        return str(row["id"])

    def remove(self, key: str) -> tuple[str, Kind]:
        self._require_writable()
        row = self._row(key)
        if self._db.execute("SELECT 1 FROM snapshots WHERE parent_id = ? LIMIT 1", (row["id"],)).fetchone():
            raise FailedPrecondition(f"cannot remove snapshot {key}: it has children")
        self._db.execute("DELETE FROM snapshots WHERE id = ?", (row["id"],))
        return str(row["id"]), Kind(row["kind"])

    def update_info(self, name: str, labels: Mapping[str, str], fieldpaths: Sequence[str] = ()) -> Info:
        """Update the mutable fields (labels) of ``name``: all of them, or those in ``fieldpaths``
        (``labels`` or ``labels.<key>``)."""
        self._require_writable()
        row = self._row(name)
        current: dict[str, str] = json.loads(row["labels"])
        if not fieldpaths:
            updated = dict(labels)
        else:
            updated = dict(current)
            for path in fieldpaths:
                if path.startswith("labels."):
                    label = path[len("labels.") :]
                    updated[label] = labels.get(label, "")
                elif path == "labels":
                    updated = dict(labels)
                else:
                    raise InvalidArgument(f"cannot update field {path!r} of snapshot {name}")
        self._db.execute(
            "UPDATE snapshots SET labels = ?, updated_ns = ? WHERE id = ?",
            (_labels_json(updated), _now_ns(), row["id"]),
        )
        return self._info(self._row(name))


class SqliteMetaStore:
    """The metadata database at ``path`` (created with its parent directory if missing)."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode = WAL")
        self._db.execute("PRAGMA synchronous = FULL")
        self._db.execute("PRAGMA foreign_keys = ON")
        self._db.executescript(_SCHEMA)
        self._in_transaction = False

    @contextmanager
    def transaction(self, *, writable: bool) -> Iterator[Transaction]:
        if self._in_transaction:
            # transactions do not nest; a nested one would silently join the outer one
            raise FailedPrecondition("metadata transaction already open")
        self._in_transaction = True
        self._db.execute("BEGIN IMMEDIATE" if writable else "BEGIN")
        try:
            yield Transaction(self._db, writable)
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        else:
            self._db.execute("COMMIT" if writable else "ROLLBACK")
        finally:
            self._in_transaction = False

    def close(self) -> None:
        self._db.close()


def _labels_json(labels: Mapping[str, str] | None) -> str:
    # an empty value means "no label", as in containerd's storage
    return json.dumps({k: v for k, v in (labels or {}).items() if v}, sort_keys=True)

"""SqliteMetaStore against containerd's storage semantics."""

from __future__ import annotations

from pathlib import Path

import pytest

from soci.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound
from soci.snapshotter.metastore import Kind, SqliteMetaStore, Usage


@pytest.fixture
def store(tmp_path: Path) -> SqliteMetaStore:
    return SqliteMetaStore(tmp_path / "meta" / "metadata.db")


def test_create_commit_chain(store: SqliteMetaStore) -> None:
    with store.transaction(writable=True) as tx:
        base = tx.create_snapshot(Kind.ACTIVE, "k1", labels={"a": "1"})
        committed_id = tx.commit_active("k1", "c1", Usage(10, 2), {"b": "2"})
        child = tx.create_snapshot(Kind.VIEW, "v1", "c1")
    assert committed_id == base.id
    assert child.parent_ids == (base.id,)
    with store.transaction(writable=False) as tx:
        snapshot_id, info, usage = tx.get_info("c1")
        assert (snapshot_id, info.kind, usage) == (base.id, Kind.COMMITTED, Usage(10, 2))
        # containerd replaces (does not inherit) labels on commit
        assert dict(info.labels) == {"b": "2"}
        assert tx.get_info("v1")[1].parent == "c1"
        assert [i.name for _, i in tx.chain("v1")] == ["v1", "c1"]
        with pytest.raises(NotFound):
            tx.get_info("k1")


def test_errors_have_containerd_classes(store: SqliteMetaStore) -> None:
    with store.transaction(writable=True) as tx:
        tx.create_snapshot(Kind.ACTIVE, "k1")
        with pytest.raises(AlreadyExists):
            tx.create_snapshot(Kind.ACTIVE, "k1")
        with pytest.raises(NotFound):
            tx.create_snapshot(Kind.ACTIVE, "k2", "missing")
        with pytest.raises(FailedPrecondition):
            tx.create_snapshot(Kind.ACTIVE, "k2", "k1")  # parent must be committed
        with pytest.raises(InvalidArgument):
            tx.create_snapshot(Kind.COMMITTED, "k3")
        tx.commit_active("k1", "c1", Usage())
        tx.create_snapshot(Kind.ACTIVE, "k2", "c1")
        with pytest.raises(FailedPrecondition):
            tx.remove("c1")  # has a child
        with pytest.raises(FailedPrecondition):
            tx.commit_active("c1", "c2", Usage())  # not active
        with pytest.raises(AlreadyExists):
            tx.commit_active("k2", "c1", Usage())
        with pytest.raises(FailedPrecondition):
            tx.get_snapshot("c1")  # committed snapshots have no mounts
    with store.transaction(writable=False) as tx, pytest.raises(FailedPrecondition):
        tx.create_snapshot(Kind.ACTIVE, "k9")


def test_failed_transaction_rolls_back(store: SqliteMetaStore) -> None:
    with pytest.raises(RuntimeError), store.transaction(writable=True) as tx:
        tx.create_snapshot(Kind.ACTIVE, "k1")
        raise RuntimeError("boom")
    with store.transaction(writable=False) as tx:
        assert tx.ids() == {}


def test_ids_are_never_reused(store: SqliteMetaStore) -> None:
    with store.transaction(writable=True) as tx:
        first = tx.create_snapshot(Kind.ACTIVE, "k1").id
        tx.remove("k1")
        second = tx.create_snapshot(Kind.ACTIVE, "k1").id
    assert first != second


def test_update_labels_by_field_path(store: SqliteMetaStore) -> None:
    with store.transaction(writable=True) as tx:
        tx.create_snapshot(Kind.ACTIVE, "k1", labels={"keep": "1", "drop": "2"})
        info = tx.update_info("k1", {"new": "3", "drop": ""}, ["labels.new", "labels.drop"])
        assert dict(info.labels) == {"keep": "1", "new": "3"}
        info = tx.update_info("k1", {"only": "x"}, ["labels"])
        assert dict(info.labels) == {"only": "x"}
        info = tx.update_info("k1", {"all": "y"})
        assert dict(info.labels) == {"all": "y"}
        with pytest.raises(InvalidArgument):
            tx.update_info("k1", {}, ["kind"])


def test_store_survives_reopen(tmp_path: Path) -> None:
    path = tmp_path / "metadata.db"
    store = SqliteMetaStore(path)
    with store.transaction(writable=True) as tx:
        tx.create_snapshot(Kind.ACTIVE, "k1", labels={"x": "y"})
    store.close()
    reopened = SqliteMetaStore(path)
    with reopened.transaction(writable=False) as tx:
        assert dict(tx.get_info("k1")[1].labels) == {"x": "y"}

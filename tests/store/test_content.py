from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest

from soci.errors import DataLoss, FormatError, NotFound
from soci.formats.digest import sha256_digest
from soci.store import ArtifactEntry, ArtifactsDB, ContentStore
from soci.store.layout import OciLayout


def test_write_read_verify(tmp_path: Path) -> None:
    store = ContentStore(tmp_path)
    digest = store.write_blob(b"hello")
    assert digest == sha256_digest(b"hello")
    assert store.read_blob(digest) == b"hello"
    assert store.blob_size(digest) == 5
    assert list(store.blob_digests()) == [digest]
    store.path(digest).write_bytes(b"HELLO")
    with pytest.raises(DataLoss, match="corrupt"):
        store.read_blob(digest)


def test_wrong_expected_digest_leaves_nothing_behind(tmp_path: Path) -> None:
    store = ContentStore(tmp_path)
    with pytest.raises(DataLoss):
        store.write_blob(b"data", sha256_digest(b"other"))
    assert list((tmp_path / "blobs" / "sha256").iterdir()) == []


def test_interrupted_stream_leaves_nothing_behind(tmp_path: Path) -> None:
    store = ContentStore(tmp_path)

    def chunks():  # type: ignore[no-untyped-def]
        yield b"part"
        raise RuntimeError("producer died")

    with pytest.raises(RuntimeError):
        store.write_chunks(chunks())
    assert list((tmp_path / "blobs" / "sha256").iterdir()) == []


def test_missing_blob_is_not_found(tmp_path: Path) -> None:
    with pytest.raises(NotFound):
        ContentStore(tmp_path).read_blob(sha256_digest(b"x"))


def test_artifacts_db_round_trip(tmp_path: Path) -> None:
    with ArtifactsDB(tmp_path / "a.sqlite") as db:
        db.put(ArtifactEntry(digest="sha256:1", type="soci_layer", size=3, oci_digest="sha256:L", span_size=65536))
        db.put(ArtifactEntry(digest="sha256:2", type="soci_layer", size=4, oci_digest="sha256:L", span_size=4096))
        assert db.find_ztoc("sha256:L", 65536) is not None
        assert db.find_ztoc("sha256:L", 65536).digest == "sha256:1"  # type: ignore[union-attr]
        assert db.find_ztoc("sha256:L", 1) is None
        db.update("sha256:1", image_ref="x")
        assert db.get("sha256:1").image_ref == "x"
        assert db.remove("sha256:1")
        with pytest.raises(NotFound):
            db.get("sha256:1")
        with pytest.raises(NotFound):
            db.update("sha256:1", image_ref="y")


def test_failed_transaction_rolls_back(tmp_path: Path) -> None:
    with ArtifactsDB(tmp_path / "a.sqlite") as db:
        with pytest.raises(RuntimeError), db.transaction() as tx:
            tx.execute("INSERT INTO artifacts (digest, type, size, created_at) VALUES ('d', 't', 1, 0)")
            raise RuntimeError("boom")
        assert db.all() == []


def _archive(tmp_path: Path, members: dict[str, bytes]) -> Path:
    path = tmp_path / "image.tar"
    with tarfile.open(path, "w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def test_archive_layout_reads_blobs_in_place(tmp_path: Path) -> None:
    blob = b"layer bytes" * 1000
    digest = sha256_digest(blob)
    path = _archive(
        tmp_path,
        {"oci-layout": b'{"imageLayoutVersion":"1.0.0"}', "index.json": b"{}", f"blobs/sha256/{digest[7:]}": blob},
    )
    layout = OciLayout(path)
    assert layout.is_archive and layout.has_blob(digest)
    assert layout.read_blob(digest) == blob
    with layout.open_blob(digest) as f:
        f.seek(5)
        assert f.read(6) == blob[5:11]


@pytest.mark.parametrize("bad", ["blobs/sha256/../../etc/passwd", "blobs/md5/abc"])
def test_archive_layout_rejects_escaping_members(tmp_path: Path, bad: str) -> None:
    path = _archive(tmp_path, {"oci-layout": b"{}", "index.json": b"{}", bad: b"x"})
    with pytest.raises(FormatError, match="unexpected archive member"):
        OciLayout(path)

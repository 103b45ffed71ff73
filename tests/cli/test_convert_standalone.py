"""`soci convert --standalone` on synthetic OCI layouts, checked through the CLI a user would run."""

from __future__ import annotations

import io
import json
import subprocess
import tarfile
from pathlib import Path

import pytest
from click.testing import CliRunner

from soci.cli.main import cli
from soci.formats import soci_index as si
from soci.formats.oci import MEDIA_TYPE_OCI_INDEX, MEDIA_TYPE_OCI_MANIFEST, Index, Manifest
from soci.store.layout import OciLayout
from soci.testing.images import Layer, gzip_layer, random_tree_tar, write_oci_layout


def soci(root: Path, *args: str) -> str:
    result = CliRunner().invoke(cli, ["--root", str(root), *args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


@pytest.fixture
def layout(tmp_path: Path) -> tuple[Path, list[Layer]]:
    layers = [
        gzip_layer(random_tree_tar(1, files=150), level=6),
        gzip_layer(random_tree_tar(2, files=5, max_size=2000), level=1),  # small: below min-layer-size
        gzip_layer(random_tree_tar(3, files=120), level=9),
    ]
    path = tmp_path / "src"
    write_oci_layout(path, layers)
    return path, layers


def _regular_files(tar_bytes: bytes) -> dict[str, bytes]:
    out = {}
    with tarfile.open(fileobj=io.BytesIO(tar_bytes)) as tar:
        for m in tar:
            if m.isfile():
                f = tar.extractfile(m)
                assert f is not None
                out[m.name] = f.read()
    return out


def test_convert_oci_dir_and_get_every_file(tmp_path: Path, layout: tuple[Path, list[Layer]]) -> None:
    src, layers = layout
    root, dest = tmp_path / "root", tmp_path / "dest"
    min_size = str(max(len(layers[1].blob) + 1, 4096))
    out = soci(root, "convert", "--standalone", "--format", "oci-dir", "--span-size", "65536",
               "--min-layer-size", min_size, str(src), str(dest))  # fmt: skip
    assert f"ztoc skipped - layer {layers[1].descriptor().digest}" in out

    top = Index.unmarshal((dest / "index.json").read_bytes())
    assert top.manifests is not None and len(top.manifests) == 1
    assert top.manifests[0].media_type == MEDIA_TYPE_OCI_INDEX
    out_layout = OciLayout(dest)
    image_index = Index.unmarshal(out_layout.read_blob(top.manifests[0].digest))
    assert image_index.manifests is not None
    image_desc, soci_desc = image_index.manifests
    assert soci_desc.artifact_type == si.ARTIFACT_TYPE_V2
    assert soci_desc.platform is not None and soci_desc.platform.architecture == "amd64"
    assert (soci_desc.annotations or {})[si.ANNOTATION_IMAGE_MANIFEST_DIGEST] == image_desc.digest
    manifest = Manifest.unmarshal(out_layout.read_blob(image_desc.digest))
    assert manifest.media_type == MEDIA_TYPE_OCI_MANIFEST
    assert (manifest.annotations or {})[si.ANNOTATION_INDEX_DIGEST] == soci_desc.digest
    assert manifest.layers == tuple(layer.descriptor() for layer in layers)  # layers untouched

    index = si.parse_index(out_layout.read_blob(soci_desc.digest))
    assert index.digest == soci_desc.digest  # canonical Go encoding
    assert [z.annotations[si.ANNOTATION_LAYER_DIGEST] for z in index.ztocs() if z.annotations] == [
        layers[0].descriptor().digest,
        layers[2].descriptor().digest,
    ]

    assert index.digest in soci(root, "index", "list", "-q")
    for layer, ztoc in ((layers[0], index.ztocs()[0]), (layers[2], index.ztocs()[1])):
        files = _regular_files(layer.tar)
        assert files
        for name, content in files.items():
            got = CliRunner().invoke(
                cli, ["--root", str(root), "ztoc", "get-file", "--oci-layout", str(dest), ztoc.digest, name]
            )
            assert got.exit_code == 0, got.output
            assert got.stdout_bytes == content, name
        info = json.loads(soci(root, "ztoc", "info", ztoc.digest))
        with tarfile.open(fileobj=io.BytesIO(layer.tar)) as tar:
            assert info["num_files"] == len(tar.getmembers())
        assert info["span_size"] == 65536


def test_convert_archive_accepted_by_skopeo(tmp_path: Path, layout: tuple[Path, list[Layer]]) -> None:
    src, _ = layout
    dest = tmp_path / "dest.tar"
    soci(tmp_path / "root", "convert", "--standalone", "--min-layer-size", "0", str(src), str(dest))
    inspected = subprocess.run(
        ["skopeo", "inspect", f"oci-archive:{dest}"], check=True, capture_output=True, text=True
    ).stdout
    assert json.loads(inspected)["Architecture"] == "amd64"


def test_reuse_and_force(tmp_path: Path, layout: tuple[Path, list[Layer]]) -> None:
    src, _ = layout
    root = tmp_path / "root"
    soci(root, "convert", "--standalone", "--format", "oci-dir", "--min-layer-size", "0", str(src), str(tmp_path / "a"))
    again = soci(root, "convert", "--standalone", "--format", "oci-dir", "--min-layer-size", "0", str(src),
                 str(tmp_path / "b"))  # fmt: skip
    assert again.count("(already exists)") == 3
    forced = soci(root, "convert", "--standalone", "--format", "oci-dir", "--min-layer-size", "0", "--force",
                  str(src), str(tmp_path / "c"))  # fmt: skip
    assert "(already exists)" not in forced


def test_corrupt_layer_fails_cleanly_and_writes_nothing(tmp_path: Path, layout: tuple[Path, list[Layer]]) -> None:
    src, layers = layout
    blob_path = src / "blobs" / "sha256" / layers[0].descriptor().digest[7:]
    data = bytearray(blob_path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    blob_path.write_bytes(bytes(data))
    dest = tmp_path / "dest"
    result = CliRunner().invoke(
        cli, ["--root", str(tmp_path / "root"), "convert", "--standalone", "--format", "oci-dir",
              "--min-layer-size", "0", str(src), str(dest)],
    )  # fmt: skip
    assert result.exit_code == 1
    assert layers[0].descriptor().digest in result.output
    assert len(result.output.strip().splitlines()[-1]) < 300
    assert not dest.exists()


def test_missing_source_is_one_line_error(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["--root", str(tmp_path), "convert", "--standalone", "/nonexistent", "x"])
    assert result.exit_code == 1
    assert "does not exist" in result.output

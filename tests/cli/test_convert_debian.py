"""The foundation's done-when, on a real two-layer image built from Debian packages (debootstrap + python3).

`soci convert --standalone` produces a layout that skopeo and umoci accept, and its SOCI index reproduces every
regular file of every indexed layer byte for byte (a sample through the `soci ztoc get-file` command itself).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from soci.cli.main import cli
from soci.formats import soci_index as si
from soci.formats.oci import Index, Manifest
from soci.formats.ztoc_codec import unmarshal_ztoc
from soci.index.extract import read_verified
from soci.store import LocalStore
from soci.store.layout import OciLayout

REPO = Path(__file__).resolve().parents[2]
pytestmark = [
    pytest.mark.slow,
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("debootstrap"), reason="needs root and debootstrap"),
]


@pytest.fixture(scope="module")
def debian_image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("debian") / "image"
    subprocess.run(["bash", str(REPO / "scripts" / "build-debian-image.sh"), str(out)], check=True,
                   stdout=subprocess.DEVNULL)  # fmt: skip
    return out


@pytest.fixture(scope="module")
def converted(debian_image: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    work = tmp_path_factory.mktemp("converted")
    root, dest = work / "root", work / "image-soci"
    result = CliRunner().invoke(
        cli, ["--root", str(root), "convert", "--standalone", "--format", "oci-dir", "--min-layer-size", "0",
              str(debian_image), str(dest)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    return root, dest


def _soci_index(dest: Path) -> tuple[Manifest, si.SociIndex]:
    layout = OciLayout(dest)
    top = Index.unmarshal(layout.index_json())
    assert top.manifests is not None
    image_index = Index.unmarshal(layout.read_blob(top.manifests[0].digest))
    assert image_index.manifests is not None
    image = next(d for d in image_index.manifests if not d.artifact_type)
    soci = next(d for d in image_index.manifests if d.artifact_type == si.ARTIFACT_TYPE_V2)
    return Manifest.unmarshal(layout.read_blob(image.digest)), si.parse_index(layout.read_blob(soci.digest))


def test_skopeo_and_umoci_accept_the_result(converted: tuple[Path, Path], tmp_path: Path) -> None:
    _, dest = converted
    raw = subprocess.run(["skopeo", "inspect", "--raw", f"oci:{dest}"], check=True, capture_output=True).stdout
    assert json.loads(raw)["mediaType"] == "application/vnd.oci.image.index.v1+json"
    inspected = json.loads(subprocess.run(["skopeo", "inspect", f"oci:{dest}"], check=True,
                                          capture_output=True).stdout)  # fmt: skip
    assert inspected["Architecture"] == "amd64" and len(inspected["Layers"]) == 2
    # umoci wants a tagged manifest: copy the SOCI-enabled image's amd64 manifest to a tag with skopeo, then
    # let umoci unpack it and check the result.
    tagged = tmp_path / "tagged"
    subprocess.run(["skopeo", "copy", "--quiet", f"oci:{dest}", f"oci:{tagged}:soci"], check=True)
    subprocess.run(["umoci", "stat", "--image", f"{tagged}:soci"], check=True, capture_output=True)
    subprocess.run(["umoci", "unpack", "--image", f"{tagged}:soci", str(tmp_path / "bundle")], check=True,
                   capture_output=True)  # fmt: skip
    assert (tmp_path / "bundle" / "rootfs" / "usr" / "bin" / "python3").exists()


def _regular_files(layer: Path) -> Iterator[tuple[str, bytes]]:
    with tarfile.open(layer, "r:*") as tar:
        for member in tar:
            if member.isfile():
                f = tar.extractfile(member)
                assert f is not None
                yield member.name, f.read()


def test_every_regular_file_is_reproduced(converted: tuple[Path, Path]) -> None:
    root, dest = converted
    manifest, index = _soci_index(dest)
    assert manifest.layers is not None and len(index.ztocs()) == 2
    checked = 0
    with LocalStore(root) as store:
        for layer in manifest.layers:
            ztoc_desc = index.ztoc_for_layer(layer.digest)
            assert ztoc_desc is not None
            ztoc = unmarshal_ztoc(store.content.read_blob(ztoc_desc.digest))
            by_offset = {e.uncompressed_offset: e for e in ztoc.entries if e.type == "reg"}
            blob = dest / "blobs" / "sha256" / layer.digest[7:]
            with open(blob, "rb") as f:

                def read(offset: int, length: int, f=f) -> bytes:  # type: ignore[no-untyped-def]
                    f.seek(offset)
                    return f.read(length)

                with tarfile.open(blob, "r:*") as tar:
                    for member in tar:
                        if not member.isfile():
                            continue
                        entry = by_offset[member.offset_data]
                        expected = tar.extractfile(member).read()  # type: ignore[union-attr]
                        got = read_verified(ztoc, read, entry.uncompressed_offset, entry.uncompressed_size)
                        assert hashlib.sha256(got).digest() == hashlib.sha256(expected).digest(), member.name
                        checked += 1
    assert checked > 5000

    # and through the command a user runs, on a sample of files from the python layer
    python_ztoc = index.ztoc_for_layer(manifest.layers[1].digest)
    assert python_ztoc is not None
    for name, content in list(_regular_files(dest / "blobs/sha256" / manifest.layers[1].digest[7:]))[::97]:
        out = CliRunner().invoke(
            cli, ["--root", str(root), "ztoc", "get-file", "--oci-layout", str(dest), python_ztoc.digest, name]
        )
        assert out.exit_code == 0, out.output
        assert out.stdout_bytes == content, name

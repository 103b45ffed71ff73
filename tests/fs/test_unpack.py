"""Layer tars applied as overlayfs layers: whiteouts, links, metadata, path safety, diff IDs."""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import stat
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest

from soci.errors import FormatError, InvalidArgument, UnsupportedEntry
from soci.fs.unpack import apply_layer, apply_layer_file, compression_of

pytestmark = [pytest.mark.root, pytest.mark.skipif(os.geteuid() != 0, reason="needs root")]
OPAQUE = "trusted.overlay.opaque"


def _tar(build: Callable[[tarfile.TarFile], None]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        build(tar)
    return buffer.getvalue()


def _add(tar: tarfile.TarFile, name: str, kind: bytes = tarfile.REGTYPE, data: bytes = b"", **attrs: object) -> None:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.mode = 0o755 if kind == tarfile.DIRTYPE else 0o644
    info.mtime = 1_600_000_000
    for key, value in attrs.items():
        setattr(info, key, value)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data) if kind == tarfile.REGTYPE else None)


def _apply(data: bytes, root: Path, compression: str = "uncompressed") -> str:
    root.mkdir(exist_ok=True)
    return apply_layer(io.BytesIO(data), compression, root, opaque_xattr=OPAQUE).diff_id


def test_whiteouts_become_overlay_whiteouts(tmp_path: Path) -> None:
    def build(tar: tarfile.TarFile) -> None:
        _add(tar, "dir", tarfile.DIRTYPE)
        _add(tar, "dir/.wh.gone")
        _add(tar, "opaque/.wh..wh..opq")
        _add(tar, "opaque/kept", data=b"k")

    _apply(_tar(build), tmp_path / "root")
    whiteout = os.lstat(tmp_path / "root/dir/gone")
    assert stat.S_ISCHR(whiteout.st_mode) and whiteout.st_rdev == os.makedev(0, 0)
    assert os.getxattr(tmp_path / "root/opaque", OPAQUE) == b"y"
    assert (tmp_path / "root/opaque/kept").read_bytes() == b"k"
    assert not (tmp_path / "root/dir/.wh.gone").exists()


def test_links_devices_owners_modes_xattrs_and_times(tmp_path: Path) -> None:
    def build(tar: tarfile.TarFile) -> None:
        _add(tar, "./", tarfile.DIRTYPE, mode=0o711)
        _add(tar, "bin/tool", data=b"#!/bin/sh\n", mode=0o4755, uid=1000, gid=1000)
        _add(tar, "bin/hard", tarfile.LNKTYPE, linkname="bin/tool")
        _add(tar, "bin/soft", tarfile.SYMTYPE, linkname="tool")
        _add(tar, "dev/null", tarfile.CHRTYPE, devmajor=1, devminor=3, mode=0o666)
        _add(tar, "run/fifo", tarfile.FIFOTYPE, mode=0o600)
        info = tarfile.TarInfo("etc/labelled")
        info.pax_headers = {"SCHILY.xattr.user.color": "blue"}
        info.mtime = 1_600_000_123
        tar.addfile(info, io.BytesIO(b""))

    root = tmp_path / "root"
    _apply(_tar(build), root)
    tool = os.lstat(root / "bin/tool")
    assert stat.S_IMODE(tool.st_mode) == 0o4755  # set-uid survives the chown before it
    assert (tool.st_uid, tool.st_gid) == (1000, 1000)
    assert os.lstat(root / "bin/hard").st_ino == tool.st_ino
    assert os.readlink(root / "bin/soft") == "tool"
    assert os.lstat(root / "dev/null").st_rdev == os.makedev(1, 3)
    assert stat.S_ISFIFO(os.lstat(root / "run/fifo").st_mode)
    assert os.getxattr(root / "etc/labelled", "user.color") == b"blue"
    assert os.lstat(root / "etc/labelled").st_mtime == 1_600_000_123
    assert stat.S_IMODE(os.lstat(root).st_mode) == 0o711
    assert (root / "bin").is_dir() and stat.S_IMODE(os.lstat(root / "bin").st_mode) == 0o755  # implied parent


def test_symlinked_parents_resolve_inside_the_root(tmp_path: Path) -> None:
    def build(tar: tarfile.TarFile) -> None:
        _add(tar, "escape", tarfile.SYMTYPE, linkname="../../../../outside")
        _add(tar, "escape/file", data=b"stays in the root")
        _add(tar, "abs", tarfile.SYMTYPE, linkname="/target")
        _add(tar, "abs/file", data=b"absolute links are rooted too")

    root = tmp_path / "root"
    _apply(_tar(build), root)
    assert (root / "outside/file").read_bytes() == b"stays in the root"
    assert (root / "target/file").read_bytes() == b"absolute links are rooted too"
    assert not (tmp_path / "outside").exists()


@pytest.mark.parametrize("name", ["../evil", "a/../../evil"])
def test_entries_outside_the_root_are_refused(tmp_path: Path, name: str) -> None:
    with pytest.raises(InvalidArgument, match="outside"):
        _apply(_tar(lambda tar: _add(tar, name, data=b"x")), tmp_path / "root")


def test_hard_link_to_a_missing_file_is_a_format_error(tmp_path: Path) -> None:
    with pytest.raises(FormatError, match="missing"):
        _apply(_tar(lambda tar: _add(tar, "link", tarfile.LNKTYPE, linkname="nowhere")), tmp_path / "root")


def test_later_entries_replace_earlier_ones(tmp_path: Path) -> None:
    def build(tar: tarfile.TarFile) -> None:
        _add(tar, "x", data=b"file first")
        _add(tar, "x", tarfile.DIRTYPE)
        _add(tar, "x/inside", data=b"then a directory")

    _apply(_tar(build), tmp_path / "root")
    assert (tmp_path / "root/x/inside").read_bytes() == b"then a directory"


def test_diff_id_covers_the_whole_uncompressed_stream(tmp_path: Path) -> None:
    data = _tar(lambda tar: _add(tar, "f", data=b"content")) + b"\0" * 1024  # extra zero padding
    blob = gzip.compress(data)
    path = tmp_path / "layer.tar.gz"
    path.write_bytes(blob)
    (tmp_path / "root").mkdir()
    media_type = "application/vnd.oci.image.layer.v1.tar+gzip"
    result = apply_layer_file(path, media_type, tmp_path / "root", opaque_xattr=OPAQUE)
    assert result.diff_id == "sha256:" + hashlib.sha256(data).hexdigest()
    assert result.uncompressed_size == len(data)
    # Docker's "diff.tar" type is sniffed: gzip bytes are inflated all the same
    (tmp_path / "root2").mkdir()
    sniffed = apply_layer_file(
        path, "application/vnd.docker.image.rootfs.diff.tar", tmp_path / "root2", opaque_xattr=OPAQUE
    )
    assert sniffed.diff_id == result.diff_id


def test_zstd_layers_are_unsupported_here() -> None:
    with pytest.raises(UnsupportedEntry):
        compression_of("application/vnd.oci.image.layer.v1.tar+zstd")
    with pytest.raises(UnsupportedEntry):
        compression_of("application/vnd.example.not-a-layer")
    assert compression_of("application/vnd.oci.image.layer.v1.tar") == "uncompressed"

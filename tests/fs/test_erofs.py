"""EROFS images of layer trees, mounted by the kernel over the uncompressed tar, equal ``tar -x`` of the layer.

The image comes from the zTOC's tree (as the lazy filesystem builds it); its file data are chunk references
into the tar. Here the tar is a plain file (the daemon serves it from the lazy filesystem); every path is
compared as for the FUSE tree, alone and stacked under overlayfs. The kernel is the checker: Debian 12's
fsck.erofs (1.5) rejects 512-byte blocks ("blksize 512 isn't supported on this platform").
"""

from __future__ import annotations

import gzip
import os
import shutil
import stat
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from fs_compare import described_paths, differences, extract, hard_link_groups, overlay_described, snapshot
from fs_layers import TarWriter, build_from_blob, build_layer, every_entry_type_tar, upper_layer_tar

from soci import system
from soci.errors import FormatError
from soci.formats import erofs
from soci.formats.ztoc import FileMetadata
from soci.fs.erofs import image_for_tree, kernel_supports_file_backed, mount_image, write_image
from soci.fs.tree import build_tree

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="mounting needs root"),
    pytest.mark.skipif(os.geteuid() == 0 and not kernel_supports_file_backed(), reason="no file-backed EROFS"),
]


@contextmanager
def mounted(entries: list[FileMetadata], tar_path: Path, work: Path) -> Iterator[Path]:
    work.mkdir(parents=True, exist_ok=True)
    image = work / "layer.erofs"
    write_image(image, image_for_tree(build_tree(entries), tar_path.stat().st_size))
    target = work / "mnt"
    target.mkdir()
    mount_image(image, tar_path, target)
    try:
        yield target
    finally:
        system.unmount(target)


@contextmanager
def overlay(lowers: list[Path], target: Path) -> Iterator[Path]:
    target.mkdir(parents=True)
    options = "lowerdir=" + ":".join(str(p) for p in lowers)
    subprocess.run(["mount", "-t", "overlay", "overlay", "-o", options, str(target)], check=True)
    try:
        yield target
    finally:
        subprocess.run(["umount", str(target)], check=True)


def test_every_entry_type_equals_tar_x(tmp_path: Path) -> None:
    layer = build_layer(every_entry_type_tar())
    tar_path = tmp_path / "layer.tar"
    tar_path.write_bytes(layer.tar)
    extract(tar_path, tmp_path / "expected")
    described = described_paths(tar_path)
    expected = snapshot(tmp_path / "expected", described=described)
    with mounted(list(layer.ztoc.entries), tar_path, tmp_path / "erofs") as root:
        actual = snapshot(root, described=described)
        assert len(actual) > 20
        assert differences(expected, actual) == []
        assert hard_link_groups(root) == hard_link_groups(tmp_path / "expected")


def test_overlay_of_erofs_layers_equals_overlay_of_unpacked_layers(tmp_path: Path) -> None:
    tars = []
    images = []
    for name, tar in (("lower", every_entry_type_tar()), ("upper", upper_layer_tar())):
        layer = build_layer(tar)
        path = tmp_path / f"{name}.tar"
        path.write_bytes(layer.tar)
        tars.append(path)
        images.append(layer)
        extract(path, tmp_path / "unpacked" / name)
    described = overlay_described(tars)
    with overlay([tmp_path / "unpacked" / "upper", tmp_path / "unpacked" / "lower"], tmp_path / "expected") as e:
        expected = snapshot(e, described=described)
        expected_links = hard_link_groups(e)
    with (
        mounted(list(images[0].ztoc.entries), tars[0], tmp_path / "lower") as lower,
        mounted(list(images[1].ztoc.entries), tars[1], tmp_path / "upper") as upper,
        overlay([upper, lower], tmp_path / "merged") as merged,
    ):
        actual = snapshot(merged, described=described)
        assert differences(expected, actual) == []
        assert hard_link_groups(merged) == expected_links
    assert "usr/bin/su" not in actual and "etc/shadow" not in actual  # the upper layer did its job


def test_large_directories_long_names_and_big_files(tmp_path: Path) -> None:
    w = TarWriter()
    w.dir("many")
    for i in range(3000):  # hundreds of 512-byte directory blocks, looked up by bisection
        w.file(f"many/{'n' * (i % 200)}-{i:05d}", f"{i}\n".encode())
    w.file("many/" + "x" * 255, b"longest name")
    w.file("big.bin", os.urandom(3 << 20))
    w.symlink("long-link", "t" * 4000)
    tar_path = tmp_path / "layer.tar"
    tar_path.write_bytes(w.finish())
    layer = build_layer(tar_path.read_bytes())
    extract(tar_path, tmp_path / "expected")
    described = described_paths(tar_path)
    with mounted(list(layer.ztoc.entries), tar_path, tmp_path / "erofs") as root:
        assert (
            differences(snapshot(tmp_path / "expected", described=described), snapshot(root, described=described)) == []
        )
        assert (root / "many" / "-01800").read_bytes() == b"1800\n"  # found by lookup, not only by readdir
        assert not (root / "many" / "missing").exists()


def test_unsupported_inputs_are_format_errors() -> None:
    tree = build_tree([])
    with pytest.raises(FormatError, match="no EROFS name prefix"):
        erofs.build_image(_OneEntry(erofs.Entry(stat.S_IFDIR | 0o755, xattrs=[(b"odd.name", b"v")])), 0)
    with pytest.raises(FormatError, match="512-byte aligned"):
        erofs.build_image(_Files(erofs.Entry(stat.S_IFREG | 0o644, size=10, data_offset=100)), 4096)
    with pytest.raises(FormatError, match="archive"):
        erofs.build_image(_Files(erofs.Entry(stat.S_IFREG | 0o644, size=10, data_offset=4096)), 4096)
    assert image_for_tree(tree, 0)[erofs.SUPERBLOCK_OFFSET : erofs.SUPERBLOCK_OFFSET + 4] == b"\xe2\xe1\xf5\xe0"


class _OneEntry:
    root = 1

    def __init__(self, entry: erofs.Entry) -> None:
        self._entry = entry

    def entry(self, ino: int) -> erofs.Entry:
        return self._entry

    def children(self, ino: int) -> list[tuple[bytes, int]]:
        return []


class _Files(_OneEntry):
    """A root directory holding one file (inode 2)."""

    def entry(self, ino: int) -> erofs.Entry:
        return erofs.Entry(stat.S_IFDIR | 0o755, nlink=2) if ino == 1 else self._entry

    def children(self, ino: int) -> list[tuple[bytes, int]]:
        return [(b"f", 2)] if ino == 1 else []


@pytest.mark.slow
def test_debian_rootfs_and_python_layers_equal_tar_x(tmp_path: Path, debian_layers: list[Path]) -> None:
    for i, blob_path in enumerate(debian_layers):
        built = build_from_blob(blob_path)
        tar_path = tmp_path / f"layer{i}.tar"
        with gzip.open(blob_path) as source, tar_path.open("wb") as out:
            shutil.copyfileobj(source, out, 1 << 20)
        extract(blob_path, tmp_path / f"expected{i}")
        described = described_paths(blob_path)
        with mounted(list(built.ztoc.entries), tar_path, tmp_path / f"erofs{i}") as root:
            actual = snapshot(root, described=described)
            assert len(actual) > 100
            assert differences(snapshot(tmp_path / f"expected{i}", described=described), actual) == [], i
            assert hard_link_groups(root) == hard_link_groups(tmp_path / f"expected{i}")

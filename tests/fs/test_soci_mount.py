"""``soci mount`` end to end: a SOCI-enabled image from a real registry, one layer lazy and one unpacked.

The command runs as its own process; the merged tree must equal an overlay of the ``tar -x``'d layers;
SIGTERM and SIGINT unmount everything; after a SIGKILL the next run removes the dead mounts.
"""

from __future__ import annotations

import gzip
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from fs_compare import Node, differences, extract, hard_link_groups, overlay_described, snapshot
from fs_layers import TarWriter, every_entry_type_tar
from fs_serve import needs_fuse_and_registry
from fs_soci_mount import SociMount

from soci.fs.mount import clean_stale_mounts, mounts
from soci.testing.images import Layer, write_oci_layout
from soci.testing.registry_server import RegistryServer

pytestmark = needs_fuse_and_registry(300, pytest.mark.slow)

# `soci mount` is registered in soci.cli.main by the lead; until then the test adds it itself


def upper_tar() -> bytes:
    w = TarWriter()
    w.dir("etc")
    w.file("etc/extra", b"from the unpacked layer\n")
    w.file("etc/.wh.shadow", b"")
    w.dir("opaque")
    w.file("opaque/.wh..wh..opq", b"")
    w.symlink("etc/link", "extra")
    return w.finish()


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RegistryServer, str, list[Path]]]:
    """A SOCI-enabled image: the big lower layer gets a zTOC, the small upper one does not."""
    work = tmp_path_factory.mktemp("image")
    tars = [every_entry_type_tar(), upper_tar()]
    tar_paths = []
    for i, data in enumerate(tars):
        tar_paths.append(work / f"{i}.tar")
        tar_paths[-1].write_bytes(data)
    write_oci_layout(work / "oci", [Layer(gzip.compress(t, mtime=0), t) for t in tars])
    with RegistryServer() as registry:
        src, dst = f"{registry.host}/test/img:src", f"{registry.host}/test/img:soci"
        subprocess.run(["skopeo", "copy", "--dest-tls-verify=false", f"oci:{work / 'oci'}:latest", f"docker://{src}"],
                       check=True, capture_output=True)  # fmt: skip
        soci = [str(Path(sys.executable).parent / "soci")]
        subprocess.run([*soci, "--root", str(work / "build-root"), "convert", "--remote", "--plain-http",
                        "--min-layer-size", "200000", "--span-size", "65536", src, dst],
                       check=True, capture_output=True)  # fmt: skip
        yield registry, dst, tar_paths


def ours(root: Path, target: Path) -> list[Path]:
    return [p for p, _ in mounts() if p == target or root in p.parents]


def expected_tree(tar_paths: list[Path], work: Path) -> tuple[dict[str, Node], set[frozenset[str]]]:
    lowers = []
    for i, tar_path in enumerate(tar_paths):
        lowers.append(work / f"unpacked{i}")
        extract(tar_path, lowers[-1])
    merged = work / "expected"
    merged.mkdir()
    lowerdir = ":".join(str(p) for p in reversed(lowers))
    subprocess.run(["mount", "-t", "overlay", "overlay", "-o", f"ro,lowerdir={lowerdir}", str(merged)], check=True)
    try:
        return snapshot(merged, described=overlay_described(tar_paths)), hard_link_groups(merged)
    finally:
        subprocess.run(["umount", str(merged)], check=True)


def test_mount_equals_unpacked_overlay_and_unmounts_on_sigterm(
    image: tuple[RegistryServer, str, list[Path]], tmp_path: Path
) -> None:
    _, ref, tar_paths = image
    target, root = tmp_path / "dir", tmp_path / "root"
    process = SociMount(["--root", str(root), ref, str(target)])
    try:
        process.wait_ready()
        expected, links = expected_tree(tar_paths, tmp_path)
        actual = snapshot(target, described=overlay_described(tar_paths))
        assert differences(expected, actual) == []
        assert hard_link_groups(target) == links
        assert (target / "etc" / "extra").read_bytes() == b"from the unpacked layer\n"
        assert len(ours(root, target)) == 2  # the overlay and the FUSE mount
        assert process.stop(signal.SIGTERM) == 0
        assert ours(root, target) == []
        assert list((root / "soci" / "unpacked").iterdir())  # the layer without zTOC was unpacked
    finally:
        if process.process.poll() is None:
            process.process.kill()
            process.process.wait()
        clean_stale_mounts([target, root])


def test_a_killed_mount_is_cleaned_up_by_the_next_run(
    image: tuple[RegistryServer, str, list[Path]], tmp_path: Path
) -> None:
    _, ref, _ = image
    target, root = tmp_path / "dir", tmp_path / "root"
    try:
        first = SociMount(["--root", str(root), ref, str(target)])
        first.wait_ready()
        assert (target / "etc" / "hostname").read_bytes() == b"lazy\n"
        first.stop(signal.SIGKILL)
        assert len(ours(root, target)) == 2  # dead mounts left behind
        with pytest.raises(OSError):
            os.listdir(target / "etc")
        second = SociMount(["--root", str(root), ref, str(target)])
        second.wait_ready()
        assert (target / "etc" / "hostname").read_bytes() == b"lazy\n"
        assert (target / "data" / "text.txt").stat().st_size == 900_000
        assert second.stop(signal.SIGINT) == 0
        assert ours(root, target) == []
    finally:
        clean_stale_mounts([target, root])

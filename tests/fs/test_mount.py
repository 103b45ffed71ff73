"""The lazily mounted tree equals ``tar -x`` of the same layer, alone and stacked under overlayfs.

Real docker-registry, real FUSE, real overlayfs. Every path is compared: type, mode, owner, size, mtime
(ns), link target, device numbers, xattrs, link count, content sha256, and which names share an inode.
"""

from __future__ import annotations

import asyncio
import dataclasses
import errno
import json
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from fs_blobs import MemoryBlob
from fs_compare import (
    described_paths,
    differences,
    extract,
    hard_link_groups,
    overlay_described,
    snapshot,
)
from fs_layers import (
    BuiltLayer,
    build_from_blob,
    build_layer,
    every_entry_type_tar,
    upper_layer_tar,
)
from fs_serve import layer_request, needs_fuse_and_registry, overlay, serve

from soci.fs.layer import LayerRequest, LayerResolver
from soci.fs.mount import LazyMount
from soci.testing.registry_server import RegistryServer

pytestmark = needs_fuse_and_registry(300)


def push(registry: RegistryServer, repo: str, *layers: BuiltLayer) -> None:
    for layer in layers:
        registry.push_blob(repo, layer.blob)


async def test_every_entry_type_equals_tar_x(registry: RegistryServer, repo: str, tmp_path: Path) -> None:
    layer = build_layer(every_entry_type_tar())
    push(registry, repo, layer)
    tar_path = tmp_path / "layer.tar"
    tar_path.write_bytes(layer.tar)
    expected_root = tmp_path / "expected"
    extract(tar_path, expected_root)
    described = described_paths(tar_path)
    expected = snapshot(expected_root, described=described)
    async with serve(registry.host, repo, [layer], tmp_path / "root") as served:
        root = served.paths["layer0"]
        actual = await asyncio.to_thread(snapshot, root, described=described)
        assert differences(expected, actual) == []
        assert await asyncio.to_thread(hard_link_groups, root) == hard_link_groups(expected_root)
        # every span was needed and each was fetched once
        stats = served.layers["layer0"].statistics()
        assert stats.requests <= stats.spans
        state_file = served.mount.mountpoint / ".soci-snapshotter" / f"{layer.digest}.json"
        state = json.loads(await asyncio.to_thread(state_file.read_bytes))
        assert state == {"digest": layer.digest, "size": len(layer.blob), "fetchedSize": len(layer.blob),
                         "fetchedPercent": 100}  # fmt: skip


async def test_overlay_of_lazy_layers_equals_overlay_of_unpacked_layers(
    registry: RegistryServer, repo: str, tmp_path: Path
) -> None:
    lower, upper = build_layer(every_entry_type_tar()), build_layer(upper_layer_tar())
    push(registry, repo, lower, upper)
    tars = []
    for name, built in (("lower", lower), ("upper", upper)):
        path = tmp_path / f"{name}.tar"
        path.write_bytes(built.tar)
        tars.append(path)
        extract(path, tmp_path / "unpacked" / name)
    described = overlay_described(tars)
    expected_dir = tmp_path / "expected"
    async with overlay([tmp_path / "unpacked" / "upper", tmp_path / "unpacked" / "lower"], expected_dir):
        expected = snapshot(expected_dir, described=described)
        expected_links = hard_link_groups(expected_dir)
    assert "usr/bin/su" not in expected and "etc/shadow" not in expected  # the upper layer did its job
    async with serve(registry.host, repo, [lower, upper], tmp_path / "root", names=["lower", "upper"]) as served:
        merged = tmp_path / "merged"
        lowers = [served.paths["upper"], served.paths["lower"]]
        async with overlay(lowers, merged):
            actual = await asyncio.to_thread(snapshot, merged, described=described)
            assert differences(expected, actual) == []
            assert await asyncio.to_thread(hard_link_groups, merged) == expected_links


async def test_layers_come_and_go_while_mounted(registry: RegistryServer, repo: str, tmp_path: Path) -> None:
    first, second = build_layer(every_entry_type_tar()), build_layer(upper_layer_tar())
    push(registry, repo, first, second)
    async with serve(registry.host, repo, [first], tmp_path / "root", names=["a"]) as served:
        mnt = served.mount.mountpoint
        blob = await served.layers["a"].reader.read(served.layers["a"].tree.resolve(b"etc/hostname"), 0, 100)
        assert blob == b"lazy\n"
        layer_b = await served.resolver.acquire(await layer_request(served.client, repo, second))
        served.mount.add_layer("b", layer_b)
        assert sorted(await asyncio.to_thread(os.listdir, mnt)) == ["a", "b"]
        assert (await asyncio.to_thread((mnt / "b" / "etc" / "hostname").read_bytes)) == b"upper\n"
        states = sorted(await asyncio.to_thread(os.listdir, mnt / ".soci-snapshotter"))
        assert states == sorted([f"{first.digest}.json", f"{second.digest}.json"])
        served.mount.remove_layer("b")
        await served.resolver.release(layer_b)
        assert await asyncio.to_thread(os.listdir, mnt) == ["a"]
        with pytest.raises(FileNotFoundError):
            await asyncio.to_thread(os.stat, mnt / "b")
        statfs = await asyncio.to_thread(os.statvfs, mnt / "a")
        assert statfs.f_blocks > 0 and statfs.f_files > 0
        with pytest.raises(OSError) as info:
            await asyncio.to_thread(open, mnt / "a" / "etc" / "hostname", "r+b")
        assert info.value.errno == errno.EROFS


@pytest.mark.slow
async def test_debian_rootfs_and_python_layers_equal_tar_x(
    registry: RegistryServer, repo: str, tmp_path: Path, debian_layers: list[Path]
) -> None:
    built = [await asyncio.to_thread(build_from_blob, path) for path in debian_layers]
    for layer in built:
        await asyncio.to_thread(registry.push_blob, repo, layer.blob)
    names = [f"layer{i}" for i in range(len(built))]
    unpacked = [tmp_path / "unpacked" / name for name in names]
    for blob_path, target in zip(debian_layers, unpacked, strict=True):
        await asyncio.to_thread(extract, blob_path, target)
    described = [await asyncio.to_thread(described_paths, p) for p in debian_layers]
    async with serve(registry.host, repo, built, tmp_path / "root", names=names) as served:
        for name, target, paths in zip(names, unpacked, described, strict=True):
            expected = await asyncio.to_thread(snapshot, target, described=paths)
            actual = await asyncio.to_thread(snapshot, served.paths[name], described=paths)
            assert len(actual) > 100
            assert differences(expected, actual) == [], name
            assert await asyncio.to_thread(hard_link_groups, served.paths[name]) == hard_link_groups(target)
        stacked = overlay_described(debian_layers)
        async with overlay(list(reversed(unpacked)), tmp_path / "expected") as expected_dir:
            expected = await asyncio.to_thread(snapshot, expected_dir, described=stacked)
        lazy_lowers = [served.paths[name] for name in reversed(names)]
        async with overlay(lazy_lowers, tmp_path / "merged") as merged:
            actual = await asyncio.to_thread(snapshot, merged, described=stacked)
        assert differences(expected, actual) == []
        assert "usr/bin/python3" in actual  # from the upper layer


async def test_xattr_options_and_lseek(tmp_path: Path) -> None:
    """Per layer: disable-xattrs hides SCHILY xattrs, userxattr names the opaque marker; SEEK_DATA/HOLE work."""
    built = build_layer(every_entry_type_tar())
    plain_request = LayerRequest(built.digest, built.ztoc_digest, built.ztoc_bytes, MemoryBlob(built.blob))
    other_request = dataclasses.replace(plain_request, disable_xattrs=True, userxattr=True)
    with ThreadPoolExecutor(2) as executor:
        resolver = LayerResolver(tmp_path / "root", executor=executor)
        plain = await resolver.acquire(plain_request)
        # the same layer with other presentation options, from another resolver (one would share the first)
        other_resolver = LayerResolver(tmp_path / "root2", executor=executor)
        other = await other_resolver.acquire(other_request)
        async with LazyMount(tmp_path / "mnt") as mount:
            a = mount.add_layer("plain", plain)
            b = mount.add_layer("other", other)
            assert sorted(await asyncio.to_thread(os.listxattr, a / "xattr" / "file")) == [
                "trusted.note", "user.color", "user.empty"]  # fmt: skip
            assert await asyncio.to_thread(os.listxattr, b / "xattr" / "file") == []
            assert await asyncio.to_thread(os.listxattr, a / "opaque") == ["trusted.overlay.opaque"]
            assert await asyncio.to_thread(os.getxattr, b / "opaque", "user.overlay.opaque") == b"y"
            with pytest.raises(OSError) as info:
                await asyncio.to_thread(os.getxattr, b / "opaque", "trusted.overlay.opaque")
            assert info.value.errno == errno.ENODATA

            def seeks(path: Path) -> tuple[int, int, int]:
                fd = os.open(path, os.O_RDONLY)
                try:
                    return os.lseek(fd, 0, os.SEEK_DATA), os.lseek(fd, 0, os.SEEK_HOLE), os.lseek(fd, 0, os.SEEK_END)
                finally:
                    os.close(fd)

            size = 900_000
            assert await asyncio.to_thread(seeks, a / "data" / "text.txt") == (0, size, size)
            for name in list(mount.layers()):
                mount.remove_layer(name)
        await resolver.aclose()
        await other_resolver.aclose()

"""Layer metadata from EROFS against the FUSE tree, with an extracted copy on local disk as the baseline.

    sudo .venv/bin/python bench/bench_erofs.py [--entries 50000] [--file-mb 64] [--work /tmp/soci-bench-erofs]

Both contenders serve the same layer from the same lazy filesystem (docker-registry on loopback, verified
spans): the FUSE tree answers every request in this process; EROFS (``soci.fs.erofs``) answers metadata in the
kernel and reads file data from the layer's tar on the FUSE mount. Each measurement starts cold (new mount,
page cache dropped) and runs in a child process, so the reader never competes with the server for the GIL:

1. metadata: ``lstat`` of every entry, then ``open``/``close`` of every file, then reading every (small) file,
   in a ``--entries``-entry layer, against the extracted copy (which is what overlayfs on local disk reads).
2. sequential: ``dd`` of one ``--file-mb`` file from an empty span cache (registry fetch, inflate, verify), then
   warm (best of 3, page cache full) against the extracted file warm.
3. the EROFS image: build time and size for the big layer.
EROFS runs twice in 1.: ``erofs-pinned`` as the daemon mounts it (the image's pages locked in memory, so a
dropped page cache drops only the extracted copy's and the data's), and ``erofs`` with the image on local disk.
Ratios are contender / extracted copy (time), and EROFS / FUSE tree. Needs root.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from bench_fs import REPO, BuiltBlob, MiB, Served, build, dd, drop_caches, make_big_file_layer, make_many_entries_layer

from soci import system
from soci.fs import erofs
from soci.fs.layer import Layer
from soci.fs.ops import ARCHIVE_DIR_NAME
from soci.testing.registry_server import RegistryServer

_WALKER = r"""
import json, os, sys, time
root = sys.argv[1]
paths, files = [], []
start = time.perf_counter()
stack = [root]
while stack:
    d = stack.pop()
    with os.scandir(d) as it:
        for e in it:
            paths.append(e.path)
            if e.is_dir(follow_symlinks=False):
                stack.append(e.path)
            elif e.is_file(follow_symlinks=False):
                files.append(e.path)
walk = time.perf_counter() - start
start = time.perf_counter()
for p in paths:
    os.lstat(p)
stat_sec = time.perf_counter() - start
start = time.perf_counter()
for p in files:
    os.close(os.open(p, os.O_RDONLY))
open_sec = time.perf_counter() - start
start = time.perf_counter()
size = 0
for p in files:
    fd = os.open(p, os.O_RDONLY)
    size += len(os.read(fd, 1 << 20))
    os.close(fd)
read_sec = time.perf_counter() - start
print(json.dumps({"entries": len(paths), "walk": walk, "stat": stat_sec, "open": open_sec, "read": read_sec,
                  "bytes": size}))
"""


async def walk(root: Path) -> dict[str, float]:
    drop_caches()
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", _WALKER, str(root), stdout=asyncio.subprocess.PIPE
    )
    out, _ = await process.communicate()
    if process.returncode != 0:
        raise RuntimeError(f"walking {root} failed")
    result: dict[str, float] = json.loads(out)
    return result


async def mounted(
    served: Served, name: str, built: BuiltBlob, kind: str, target: Path
) -> tuple[Path, Layer, system.LockedPages | None]:
    """The layer served as ``kind``: "fuse" (the FUSE tree), "erofs" (the image read from the disk when cold)
    or "erofs-pinned" (its pages locked in memory, as the daemon mounts it)."""
    path, layer = await served.add(name, built)
    if kind == "fuse":
        return path, layer, None
    image = await asyncio.to_thread(erofs.image_for_tree, layer.tree, layer.spans.uncompressed_size)
    image_path = target.parent / f"{name}.erofs"
    target.mkdir(parents=True, exist_ok=True)
    await asyncio.to_thread(erofs.write_image, image_path, image)
    device = served.mount.mountpoint / ARCHIVE_DIR_NAME.decode() / name
    await asyncio.to_thread(erofs.mount_image, image_path, device, target)
    return target, layer, system.LockedPages(image_path) if kind == "erofs-pinned" else None


async def contender(host: str, work: Path, built: BuiltBlob, kind: str, executor: ThreadPoolExecutor,
                    measure: str) -> dict[str, float]:  # fmt: skip
    root = work / f"root-{kind}-{measure}"
    subprocess.run(["rm", "-rf", str(root)], check=True)
    async with Served(host, root, executor) as served:
        path, _, pinned = await mounted(served, "layer", built, kind, root / "erofs-mnt")
        try:
            if measure == "walk":
                return await walk(path)
            drop_caches()
            cold = await dd(path / "data" / "big.bin")
            return {"dd": cold, "warm": min([await dd(path / "data" / "big.bin") for _ in range(3)])}
        finally:
            if kind != "fuse":
                await asyncio.to_thread(system.unmount, path)
            if pinned is not None:
                pinned.close()


async def main_async(args: argparse.Namespace) -> dict[str, float]:
    work: Path = args.work
    work.mkdir(parents=True, exist_ok=True)
    if not erofs.kernel_supports_file_backed():
        raise SystemExit("this kernel cannot mount EROFS file-backed")
    many_blob = make_many_entries_layer(work, args.entries, seed=7)
    extracted = work / f"extracted-{args.entries}"
    if not extracted.exists():
        extracted.mkdir()
        subprocess.run(["tar", "-xzf", str(many_blob), "-C", str(extracted)], check=True)
    big_blob, big_extracted = make_big_file_layer(work, args.file_mb * MiB)
    many, big = build(many_blob, 1 << 22), build(big_blob, 1 << 22)
    out: dict[str, float] = {}
    with RegistryServer() as registry, ThreadPoolExecutor(4) as executor:
        for built in (many, big):
            registry.push_blob(REPO, built.blob_path.read_bytes())
        base = await walk(extracted)
        for kind in ("fuse", "erofs", "erofs-pinned"):
            got = await contender(registry.host, work, many, kind, executor, "walk")
            assert got["entries"] == base["entries"], (kind, got, base)
            for op in ("stat", "open", "read"):
                out[f"{kind}_{op}_sec"] = got[op]
                out[f"{kind}_{op}_vs_extracted"] = got[op] / base[op]
        for op in ("stat", "open", "read"):
            out[f"extracted_{op}_sec"] = base[op]
            out[f"erofs_vs_fuse_{op}"] = out[f"erofs_{op}_sec"] / out[f"fuse_{op}_sec"]
            out[f"erofs-pinned_vs_fuse_{op}"] = out[f"erofs-pinned_{op}_sec"] / out[f"fuse_{op}_sec"]
        await dd(big_extracted)
        warm_extracted = min([await dd(big_extracted) for _ in range(3)])
        for kind in ("fuse", "erofs"):
            got = await contender(registry.host, work, big, kind, executor, "dd")
            out[f"{kind}_cold_dd_MBps"] = args.file_mb * MiB / got["dd"] / 1e6
            out[f"{kind}_warm_dd_vs_extracted"] = warm_extracted / got["warm"]
        out["erofs_vs_fuse_cold_dd"] = out["erofs_cold_dd_MBps"] / out["fuse_cold_dd_MBps"]
        async with Served(registry.host, work / "root-image", executor) as served:
            _, layer = await served.add("layer", many)
            start = time.perf_counter()
            image = erofs.image_for_tree(layer.tree, layer.spans.uncompressed_size)
            out["image_build_sec"] = time.perf_counter() - start
            out["image_bytes_per_entry"] = len(image) / layer.tree.inode_count
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--entries", type=int, default=50_000)
    parser.add_argument("--file-mb", type=int, default=64)
    parser.add_argument("--work", type=Path, default=Path("/tmp/soci-bench-erofs"))
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("needs root (FUSE, EROFS mounts, drop_caches)")
    results = asyncio.run(main_async(args))
    for key, value in results.items():
        print(f"{key:32s} {value:12.3f}")
    print(json.dumps({"bench": "erofs", "host_cpus": os.cpu_count(), "results": results}))


if __name__ == "__main__":
    main()

"""Lazy filesystem: read throughput through the FUSE mount against baselines measured in the same run.

    sudo .venv/bin/python bench/bench_fs.py [--file-mb 200] [--work /tmp/soci-bench-fs] [--rounds 2]

Sections (docker-registry on loopback, registry blobs read by HTTP range requests):

1. cold: sequential read of one big file through a fresh mount (empty span cache) vs fetching the same
   compressed blob and inflating it with Python's zlib in one process. Target >= 0.7x.
2. cached: the span cache is warm, the page cache dropped (``echo 3 > /proc/sys/vm/drop_caches``), a new
   mount reads the file vs reading an extracted copy of it after dropping the page cache. Target >= 0.5x.
3. warm: the same read again with the page cache warm vs the extracted copy warm. Target within 10%.
4. small files: compressed bytes fetched to read 100 random small files vs the span-granularity bound
   (the compressed size of every span holding a byte of those files or their tar headers).
5. metadata: time to open a 50,000-entry layer; RSS of a process serving 10 layers of 20,000 entries.

Needs root (FUSE, drop_caches). Reads go through ``dd`` in a child process, so the reader never competes
with the filesystem for the GIL. Each timing is the best of ``--rounds``.
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import io
import json
import os
import random
import subprocess
import sys
import tarfile
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from soci.formats.ztoc_codec import marshal_ztoc
from soci.fs.layer import Layer, LayerRequest, LayerResolver
from soci.fs.mount import LazyMount, clean_stale_mounts
from soci.fs.options import BackgroundFetchOptions, FsOptions, FuseOptions
from soci.index.ztoc_builder import build_ztoc
from soci.registry import RegistryClient, RemoteBlob
from soci.testing.registry_server import RegistryServer

MiB = 1 << 20
REPO = "bench/fs"
_SYMBOLS = bytes(range(97, 113)) * 16  # 256 -> 16 letters: 4 bits of entropy per byte, gzip ratio about 2


@dataclass
class BuiltBlob:
    blob_path: Path
    ztoc_bytes: bytes
    digest: str
    ztoc_digest: str
    size: int


def sha256_file(path: Path) -> str:
    import hashlib

    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(MiB):
            h.update(chunk)
    return "sha256:" + h.hexdigest()


def build(blob_path: Path, span_size: int) -> BuiltBlob:
    with blob_path.open("rb") as f:
        ztoc = build_ztoc(f, span_size=span_size, algorithm="gzip")
    data = marshal_ztoc(ztoc)
    import hashlib

    return BuiltBlob(blob_path, data, sha256_file(blob_path), "sha256:" + hashlib.sha256(data).hexdigest(),
                     blob_path.stat().st_size)  # fmt: skip


class _Generated(io.RawIOBase):
    """``size`` bytes of compressible pseudo-random data, made in C-speed 1 MiB pieces."""

    def __init__(self, size: int, seed: int) -> None:
        self._left = size
        self._rng = random.Random(seed)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        n = min(len(buffer), self._left, MiB)
        if n <= 0:
            return 0
        piece = self._rng.randbytes(n)
        if self._rng.random() < 0.5:
            piece = piece.translate(_SYMBOLS)
        buffer[:n] = piece
        self._left -= n
        return n


def make_big_file_layer(work: Path, size: int) -> tuple[Path, Path]:
    """A gzip layer holding one ``size``-byte file, and an extracted copy of that file."""
    blob = work / f"big-{size}.tar.gz"
    extracted = work / "extracted" / "big.bin"
    if not blob.exists():
        tmp = blob.with_suffix(".tmp")
        with tmp.open("wb") as raw:
            gz = subprocess.Popen(["pigz", "-6", "-c"], stdin=subprocess.PIPE, stdout=raw)
            assert gz.stdin is not None
            with tarfile.open(fileobj=gz.stdin, mode="w|", format=tarfile.PAX_FORMAT) as tar:
                info = tarfile.TarInfo("data/big.bin")
                info.size = size
                tar.addfile(info, io.BufferedReader(_Generated(size, 1), MiB))
            gz.stdin.close()
            gz.wait()
        tmp.rename(blob)
    if not extracted.exists():
        extracted.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(["tar", "-xzf", str(blob), "-C", str(extracted.parent), "--strip-components=1"], check=True)
    return blob, extracted


def make_small_files_layer(work: Path, count: int = 8000, seed: int = 3) -> tuple[Path, list[str]]:
    blob = work / f"small-{count}.tar.gz"
    names = [f"files/d{i % 50:02d}/f{i:05d}.txt" for i in range(count)]
    if not blob.exists():
        rng = random.Random(seed)
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
            for name in names:
                data = rng.randbytes(rng.randrange(1000, 16000)).translate(_SYMBOLS)
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
        blob.write_bytes(gzip.compress(buf.getvalue(), 6, mtime=0))
    return blob, names


def make_many_entries_layer(work: Path, entries: int, seed: int) -> Path:
    blob = work / f"entries-{entries}-{seed}.tar.gz"
    if not blob.exists():
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
            for d in range(entries // 100):
                info = tarfile.TarInfo(f"usr/share/pkg{seed}/dir{d:04d}")
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
                for f in range(99):
                    info = tarfile.TarInfo(f"usr/share/pkg{seed}/dir{d:04d}/file-{f:02d}.py")
                    data = b"# %d\n" % f
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
        blob.write_bytes(gzip.compress(buf.getvalue(), 1, mtime=0))
    return blob


def drop_caches() -> None:
    os.sync()
    Path("/proc/sys/vm/drop_caches").write_text("3\n")


async def dd(path: Path) -> float:
    """Seconds to read ``path`` sequentially in 1 MiB requests, in a child process (dd's own timing, which
    leaves out process start-up but includes opening the file)."""
    process = await asyncio.create_subprocess_exec(
        "dd", f"if={path}", "of=/dev/null", "bs=1M", stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    _, err = await process.communicate()
    text = err.decode().strip()
    if process.returncode != 0:
        raise RuntimeError(f"dd {path} failed: {text}")
    # "209715200 bytes (210 MB, 200 MiB) copied, 0.0270299 s, 7.8 GB/s"
    return float(text.splitlines()[-1].split(" copied, ", 1)[1].split(" s,", 1)[0])


class Served:
    """One LazyMount with layers from the registry, for one measurement."""

    def __init__(self, host: str, root: Path, executor: ThreadPoolExecutor) -> None:
        self.client = RegistryClient(host, plain_http=True)
        options = FsOptions(fuse=FuseOptions(3600, 3600, 3600), background_fetch=BackgroundFetchOptions(disable=True))
        self.resolver = LayerResolver(root, options, executor=executor)
        self.mount = LazyMount(root / "mnt", options.fuse)
        self.layers: list[Layer] = []

    async def __aenter__(self) -> Served:
        await self.mount.start()
        return self

    async def add(self, name: str, built: BuiltBlob) -> tuple[Path, Layer]:
        blob = RemoteBlob(self.client, REPO, built.digest, built.size)
        layer = await self.resolver.acquire(
            LayerRequest(built.digest, built.ztoc_digest, built.ztoc_bytes, blob, layer_size=built.size)
        )
        self.layers.append(layer)
        return self.mount.add_layer(name, layer), layer

    async def __aexit__(self, *exc: object) -> None:
        for name in list(self.mount.layers()):
            self.mount.remove_layer(name)
        for layer in self.layers:
            await self.resolver.release(layer)
        await self.mount.aclose()
        await self.resolver.aclose()
        await self.client.aclose()


async def fetch_and_inflate(host: str, digest: str) -> tuple[float, int]:
    """Baseline: GET the whole blob and inflate it with stdlib zlib, in this process."""
    async with RegistryClient(host, plain_http=True) as client:
        start = time.perf_counter()
        inflater = zlib.decompressobj(31)
        produced = 0
        async for chunk in client.open_blob_stream(REPO, digest):
            produced += len(inflater.decompress(chunk))
        produced += len(inflater.flush())
        return time.perf_counter() - start, produced


async def section_big_file(host: str, work: Path, big: BuiltBlob, extracted: Path, rounds: int,
                           executor: ThreadPoolExecutor) -> dict[str, float]:  # fmt: skip
    size = extracted.stat().st_size
    out: dict[str, float] = {}
    base_times, cold_times, open_times = [], [], []
    for r in range(rounds):
        drop_caches()
        base_times.append((await fetch_and_inflate(host, big.digest))[0])
        root = work / f"root-cold-{r}"
        subprocess.run(["rm", "-rf", str(root)], check=True)
        drop_caches()
        async with Served(host, root, executor) as served:
            start = time.perf_counter()
            path, _ = await served.add("big", big)
            open_times.append(time.perf_counter() - start)
            cold_times.append(await dd(path / "data" / "big.bin"))
    out["cold_mount_MBps"] = size / min(cold_times) / 1e6
    out["cold_baseline_fetch_zlib_MBps"] = size / min(base_times) / 1e6
    out["cold_ratio"] = min(base_times) / min(cold_times)
    out["layer_open_sec"] = min(open_times)

    root = work / f"root-cold-{rounds - 1}"  # its span cache is complete
    cached_times, extracted_times, warm_times, warm_extracted_times = [], [], [], []
    for _ in range(rounds):
        async with Served(host, root, executor) as served:
            path, layer = await served.add("big", big)
            drop_caches()
            cached_times.append(await dd(path / "data" / "big.bin"))
            assert layer.statistics().requests == 0, "the cached read went to the registry"
            warm_times.append(await dd(path / "data" / "big.bin"))
        drop_caches()
        extracted_times.append(await dd(extracted))
        warm_extracted_times.append(await dd(extracted))
    out["cached_mount_MBps"] = size / min(cached_times) / 1e6
    out["cached_baseline_extracted_MBps"] = size / min(extracted_times) / 1e6
    out["cached_ratio"] = min(extracted_times) / min(cached_times)
    out["warm_mount_MBps"] = size / min(warm_times) / 1e6
    out["warm_baseline_extracted_MBps"] = size / min(warm_extracted_times) / 1e6
    out["warm_ratio"] = min(warm_extracted_times) / min(warm_times)
    return out


async def section_small_files(host: str, work: Path, small: BuiltBlob, names: list[str],
                              executor: ThreadPoolExecutor) -> dict[str, float]:  # fmt: skip
    picked = random.Random(5).sample(names, 100)
    root = work / "root-small"
    subprocess.run(["rm", "-rf", str(root)], check=True)
    async with Served(host, root, executor) as served:
        path, layer = await served.add("small", small)
        for name in picked:
            process = await asyncio.create_subprocess_exec("cat", str(path / name), stdout=asyncio.subprocess.DEVNULL)
            await process.wait()
        await layer.spans.wait_idle()
        tree, spans = layer.tree, layer.spans
        touched: set[int] = set()
        for name in picked:
            ino = tree.resolve(name.encode())
            offset, size = tree.data_range(ino)
            first = spans.span_of(tree.header_offset(ino))
            touched.update(range(first, spans.span_of(offset + max(size, 1) - 1) + 1))
        bound = sum(spans.compressed_range(i)[1] - spans.compressed_range(i)[0] for i in touched)
        fetched = layer.statistics().requested_bytes
        return {
            "small_files_spans_touched": len(touched),
            "small_files_spans_total": spans.span_count,
            "small_files_fetched_bytes": fetched,
            "small_files_bound_bytes": bound,
            "small_files_fetched_over_bound": fetched / bound,
            "small_files_fetched_over_blob": fetched / small.size,
        }


class _FileBlob:
    def __init__(self, path: Path) -> None:
        self._fd = os.open(path, os.O_RDONLY)
        self._size = os.fstat(self._fd).st_size

    @property
    def size(self) -> int:
        return self._size

    async def read_at(self, offset: int, length: int) -> bytes:
        return os.pread(self._fd, length, offset)

    async def refresh(self) -> None:
        return None


def metadata_child(work: Path, paths: list[str], big_path: str) -> None:
    """Runs in a fresh process: open a 50k-entry layer, then serve 10 layers; report times and RSS."""

    async def run() -> dict[str, float]:
        with ThreadPoolExecutor(2) as executor:
            options = FsOptions(background_fetch=BackgroundFetchOptions(disable=True))
            resolver = LayerResolver(work / "root-meta", options, executor=executor)
            out: dict[str, float] = {}
            builts = [json.loads(Path(p).read_text()) for p in [big_path, *paths]]

            def request(b: dict[str, str]) -> LayerRequest:
                ztoc = Path(b["ztoc"]).read_bytes()
                return LayerRequest(b["digest"], b["ztoc_digest"], ztoc, _FileBlob(Path(b["blob"])))

            rss_start = _rss_mb()
            start = time.perf_counter()
            big_layer = await resolver.acquire(request(builts[0]))
            out["open_50k_entries_sec"] = time.perf_counter() - start
            out["open_50k_entries_inodes"] = big_layer.tree.inode_count
            await resolver.release(big_layer)
            async with LazyMount(work / "mnt-meta") as mount:
                total = 0
                for i, b in enumerate(builts[1:]):
                    layer = await resolver.acquire(request(b))
                    total += layer.tree.inode_count
                    mount.add_layer(f"l{i}", layer)
                out["ten_layers_inodes"] = total
                out["ten_layers_rss_mb"] = _rss_mb()
                out["ten_layers_rss_growth_mb"] = out["ten_layers_rss_mb"] - rss_start
                out["process_peak_rss_mb"] = _hwm_mb()
                for name in list(mount.layers()):
                    mount.remove_layer(name)
            await resolver.aclose()
            return out

    print(json.dumps(asyncio.run(run())))


def _rss_mb() -> float:
    return _status_kb("VmRSS") / 1024


def _hwm_mb() -> float:
    return _status_kb("VmHWM") / 1024


def _status_kb(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


def section_metadata(work: Path) -> dict[str, float]:
    descriptions = []
    for seed, entries in [(100, 50_000)] + [(s, 20_000) for s in range(10)]:
        blob = make_many_entries_layer(work, entries, seed)
        info = blob.with_suffix(".json")
        if not info.exists():
            built = build(blob, 4 * MiB)
            ztoc_path = blob.with_suffix(".ztoc")
            ztoc_path.write_bytes(built.ztoc_bytes)
            info.write_text(json.dumps({"blob": str(blob), "ztoc": str(ztoc_path), "digest": built.digest,
                                        "ztoc_digest": built.ztoc_digest}))  # fmt: skip
        descriptions.append(str(info))
    clean_stale_mounts([work / "mnt-meta"])
    here, rest = str(Path(__file__).parent), json.dumps(descriptions[1:])
    code = (
        f"import sys, json; from pathlib import Path; sys.path.insert(0, {here!r}); import bench_fs; "
        f"bench_fs.metadata_child(Path({str(work)!r}), json.loads({rest!r}), {descriptions[0]!r})"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


async def main_async(args: argparse.Namespace) -> dict[str, float]:
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    clean_stale_mounts([work])
    results: dict[str, float] = {}
    print("preparing layers ...", file=sys.stderr)
    big_blob, extracted = make_big_file_layer(work, args.file_mb * MiB)
    big = build(big_blob, 4 * MiB)
    small_blob, names = make_small_files_layer(work)
    small = build(small_blob, 1 * MiB)
    with RegistryServer() as registry, ThreadPoolExecutor(max(2, os.cpu_count() or 2)) as executor:
        for built in (big, small):
            registry.push_blob(REPO, built.blob_path.read_bytes())
        print("big file: cold / cached / warm reads ...", file=sys.stderr)
        results.update(await section_big_file(registry.host, work, big, extracted, args.rounds, executor))
        print("small files ...", file=sys.stderr)
        results.update(await section_small_files(registry.host, work, small, names, executor))
    print("metadata ...", file=sys.stderr)
    results.update(await asyncio.to_thread(section_metadata, work))
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--file-mb", type=int, default=200)
    parser.add_argument("--work", default="/tmp/soci-bench-fs")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("bench_fs needs root (FUSE, drop_caches)")
    results = asyncio.run(main_async(args))
    targets = {"cold_ratio": ">= 0.7", "cached_ratio": ">= 0.5", "warm_ratio": ">= 0.9"}
    for key, value in results.items():
        note = f"   target {targets[key]}" if key in targets else ""
        print(f"{key:36s} {value:14.3f}{note}")
    print(json.dumps({"bench": "fs", "host_cpus": os.cpu_count(), "results": results}))


if __name__ == "__main__":
    main()

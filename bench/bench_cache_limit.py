"""The span cache size limit under a workload reading twice the limit, against an unlimited cache, same run.

Target (issue 12): the spancache directory stays within 1.1x the limit at every sampled moment, every byte
read is correct (sha256 against the source), and read throughput is reported against the unlimited cache.

    .venv/bin/python bench/bench_cache_limit.py [--limit-mib 16] [--span-kib 1024] [--passes 2]

The layer (random data, twice the limit, gzip) is read in-process through LayerResolver from an in-memory blob,
so the numbers are the cache's cost (writes, evictions, refetch + verify + inflate of evicted spans), not the
network's.
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import hashlib
import io
import random
import shutil
import sys
import tarfile
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from soci.formats.ztoc_codec import marshal_ztoc
from soci.fs.layer import SPANCACHE_DIR, LayerRequest, LayerResolver
from soci.fs.options import DirectoryCacheOptions, FsOptions
from soci.index.ztoc_builder import build_ztoc
from soci.testing.files import file_bytes_under

FILE_SIZE = 4 << 20
CHUNK = 128 << 10


class Blob:
    def __init__(self, data: bytes) -> None:
        self.data = data

    @property
    def size(self) -> int:
        return len(self.data)

    async def read_at(self, offset: int, length: int) -> bytes:
        return self.data[offset : offset + length]

    async def refresh(self) -> None:
        return None


def make_layer(total: int, span: int) -> tuple[bytes, bytes, dict[str, str]]:
    rng = random.Random(1)
    buf = io.BytesIO()
    digests = {}
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for i in range(max(1, total // FILE_SIZE)):
            data = rng.randbytes(FILE_SIZE)
            info = tarfile.TarInfo(f"f{i}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
            digests[info.name] = hashlib.sha256(data).hexdigest()
    blob = gzip.compress(buf.getvalue(), compresslevel=1, mtime=0)
    ztoc = marshal_ztoc(build_ztoc(io.BytesIO(blob), span_size=span, algorithm="gzip"))
    return blob, ztoc, digests


async def run(root: Path, limit: int, blob: bytes, ztoc: bytes, digests: dict[str, str],
              passes: int) -> tuple[float, int, int]:  # fmt: skip
    """Seconds for ``passes`` full reads, peak directory bytes (sampled), evictions."""
    spancache = root / SPANCACHE_DIR
    peak = 0
    stop = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not stop.is_set():
            peak = max(peak, file_bytes_under(spancache))
            time.sleep(0.002)

    sampler = threading.Thread(target=sample, daemon=True)
    with ThreadPoolExecutor(2) as executor:
        resolver = LayerResolver(root, FsOptions(directory_cache=DirectoryCacheOptions(max_size_bytes=limit)),
                                 executor=executor)  # fmt: skip
        layer_digest = "sha256:" + hashlib.sha256(blob).hexdigest()
        ztoc_digest = "sha256:" + hashlib.sha256(ztoc).hexdigest()
        sampler.start()
        start = time.perf_counter()
        try:
            for _ in range(passes):
                layer = await resolver.acquire(LayerRequest(layer_digest, ztoc_digest, ztoc, Blob(blob)))
                for name, want in digests.items():
                    ino = layer.tree.resolve(name.encode())
                    h = hashlib.sha256()
                    for off in range(0, FILE_SIZE, CHUNK):
                        h.update(await layer.reader.read(ino, off, CHUNK))
                    if h.hexdigest() != want:
                        raise SystemExit(f"FAIL: {name} read back wrong bytes")
                await layer.spans.wait_idle()
                await resolver.release(layer)
            elapsed = time.perf_counter() - start
        finally:
            stop.set()
            sampler.join()
        evictions = resolver.budget.evictions if resolver.budget else 0
        await resolver.aclose()
    return elapsed, max(peak, file_bytes_under(spancache)), evictions


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit-mib", type=int, default=16)
    parser.add_argument("--span-kib", type=int, default=1024)
    parser.add_argument("--passes", type=int, default=2)
    args = parser.parse_args()
    limit = args.limit_mib << 20
    blob, ztoc, digests = make_layer(2 * limit, args.span_kib << 10)
    read_bytes = len(digests) * FILE_SIZE * args.passes
    results = {}
    for label, configured in (("unlimited", 1 << 50), ("limited", limit)):
        root = Path(tempfile.mkdtemp(prefix="bench-cache-limit-"))
        try:
            results[label] = asyncio.run(run(root, configured, blob, ztoc, digests, args.passes))
        finally:
            shutil.rmtree(root, ignore_errors=True)
    base_s, base_peak, _ = results["unlimited"]
    s, peak, evictions = results["limited"]
    print(f"layer: {len(digests) * FILE_SIZE >> 20} MiB uncompressed ({len(blob) >> 20} MiB gzip), "
          f"span {args.span_kib} KiB, {args.passes} passes, every byte sha256-checked")  # fmt: skip
    print(f"unlimited: {read_bytes / base_s / 1e6:7.1f} MB/s, peak disk {base_peak / 2**20:6.1f} MiB")
    print(f"limited:   {read_bytes / s / 1e6:7.1f} MB/s, peak disk {peak / 2**20:6.1f} MiB, "
          f"limit {limit >> 20} MiB, {evictions} evictions")  # fmt: skip
    ratio = peak / limit
    print(f"peak disk / limit: {ratio:.3f} (target <= 1.1); throughput limited / unlimited: {base_s / s:.2f}")
    return 0 if ratio <= 1.1 else 1


if __name__ == "__main__":
    sys.exit(main())

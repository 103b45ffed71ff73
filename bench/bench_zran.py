"""Benchmark the gzip checkpoint pass and span extraction against plain zlib, on one generated layer.

Usage: bench/bench_zran.py [--cache DIR] [--quick] [--span BYTES] [--reads N] [--repeat N]

The layer is a tar of /usr/share then /usr/lib (regular files, directories, symlinks; sorted; cut at a size
limit), compressed once with ``gzip -6 -n`` and cached in DIR (default /tmp/soci-bench-zran). Each full pass runs
in a fresh child process so its peak RSS is its own. Throughput is uncompressed MB/s; ratios are against
``zlib.decompressobj(31)`` measured in the same run. Numbers from a shared machine are noisy: compare ratios.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import resource
import statistics
import subprocess
import sys
import tarfile
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from soci.codec import zran
from soci.codec.inflate import ENGINE_NAME, StreamInflater
from soci.formats.zinfo import GzipZinfo

CHUNK = 1 << 20
FULL_LIMIT = 880_000_000
QUICK_LIMIT = 120_000_000


def make_layer(cache: Path, limit: int) -> tuple[Path, Path]:
    """The cached tar and its gzip; built on first use."""
    cache.mkdir(parents=True, exist_ok=True)
    tar_path = cache / f"layer-{limit}.tar"
    gz_path = cache / f"layer-{limit}.tar.gz"
    if gz_path.exists() and tar_path.exists():
        return tar_path, gz_path
    print(f"building {tar_path} (up to {limit / 1e6:.0f} MB) ...", flush=True)
    total = 0
    with tarfile.open(tar_path, "w", format=tarfile.PAX_FORMAT) as tar:
        for top in ("/usr/share", "/usr/lib"):
            for root, dirs, files in os.walk(top):
                dirs.sort()
                for name in sorted(files):
                    path = os.path.join(root, name)
                    try:
                        info = tar.gettarinfo(path)
                        if info.isreg():
                            with open(path, "rb") as f:
                                tar.addfile(info, f)
                        elif info.issym():
                            tar.addfile(info)
                        else:
                            continue
                    except OSError:
                        continue
                    total += info.size + 512
                    if total >= limit:
                        break
                if total >= limit:
                    break
            if total >= limit:
                break
    print(f"compressing with gzip -6 -n ({tar_path.stat().st_size / 1e6:.0f} MB) ...", flush=True)
    tmp = gz_path.with_suffix(".tmp")
    with open(tar_path, "rb") as src, open(tmp, "wb") as dst:
        subprocess.run(["gzip", "-6", "-n", "-c"], stdin=src, stdout=dst, check=True)
    tmp.rename(gz_path)
    return tar_path, gz_path


def child(mode: str, layer: Path, span: int, backend: str, blob_out: str) -> None:
    """One full pass over the layer; prints a JSON line with timing and peak RSS."""
    uncompressed = 0
    start = time.perf_counter()
    with open(layer, "rb", buffering=0) as f:
        if mode == "zlib":
            obj = zlib.decompressobj(31)
            while chunk := f.read(CHUNK):
                uncompressed += len(obj.decompress(chunk))
            uncompressed += len(obj.flush())
        elif mode == "isal":
            inflater = StreamInflater()
            while chunk := f.read(CHUNK):
                uncompressed += len(inflater.feed(chunk))
            uncompressed += len(inflater.finish())
        else:
            checkpointer = zran.GzipCheckpointer(span, backend=backend)
            while chunk := f.read(CHUNK):
                for view in checkpointer.feed(chunk):
                    uncompressed += len(view)
            result = checkpointer.finish()
            Path(blob_out).write_bytes(result.zinfo.to_blob())
    seconds = time.perf_counter() - start
    maxrss_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"seconds": seconds, "uncompressed": uncompressed, "maxrss_kib": maxrss_kib}))


def run_child(mode: str, layer: Path, span: int, backend: str, blob_out: Path, repeat: int) -> dict[str, float]:
    """Best of ``repeat`` fresh-process runs."""
    best: dict[str, float] | None = None
    for _ in range(repeat):
        cmd = [sys.executable, __file__, "--child", mode, "--layer", str(layer), "--span", str(span)]
        cmd += ["--backend", backend, "--blob-out", str(blob_out)]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
        run = json.loads(out.strip().splitlines()[-1])
        if best is None or run["seconds"] < best["seconds"]:
            best = run
    assert best is not None
    return best


def extraction_latency(
    zinfo: GzipZinfo, gz_path: Path, tar_path: Path, reads: int, backend: str
) -> tuple[float, float, float, float]:
    """Random 1 MiB reads: median and max ms (each verified against the tar), reads/s on 1 and on 2 threads."""
    gz_size = gz_path.stat().st_size
    tar_size = tar_path.stat().st_size
    rng = random.Random(42)
    offsets = [rng.randrange(0, tar_size - CHUNK) for _ in range(reads)]
    gz_fd = os.open(gz_path, os.O_RDONLY)
    tar_fd = os.open(tar_path, os.O_RDONLY)
    try:

        def read(offset: int, size: int) -> bytes:
            return os.pread(gz_fd, size, offset)

        def one(offset: int) -> bytes:
            return zran.extract(zinfo, gz_size, tar_size, read, offset, CHUNK, backend=backend)

        latencies = []
        for offset in offsets:
            t0 = time.perf_counter()
            data = one(offset)
            latencies.append(time.perf_counter() - t0)
            if data != os.pread(tar_fd, CHUNK, offset):
                raise SystemExit(f"extraction mismatch at uncompressed offset {offset} on {backend}")
        rates = []
        for threads in (1, 2):
            t0 = time.perf_counter()
            with ThreadPoolExecutor(threads) as pool:
                list(pool.map(one, offsets))
            rates.append(len(offsets) / (time.perf_counter() - t0))
    finally:
        os.close(gz_fd)
        os.close(tar_fd)
    return statistics.median(latencies) * 1e3, max(latencies) * 1e3, rates[0], rates[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cache", type=Path, default=Path("/tmp/soci-bench-zran"))
    parser.add_argument(
        "--quick", action="store_true", help=f"{QUICK_LIMIT / 1e6:.0f} MB layer instead of {FULL_LIMIT / 1e6:.0f} MB"
    )
    parser.add_argument("--span", type=int, default=4 << 20)
    parser.add_argument("--reads", type=int, default=30)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--layer", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--backend", default="", help=argparse.SUPPRESS)
    parser.add_argument("--blob-out", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.layer, args.span, args.backend, args.blob_out)
        return

    tar_path, gz_path = make_layer(args.cache, QUICK_LIMIT if args.quick else FULL_LIMIT)
    gz_size = gz_path.stat().st_size
    print(f"layer: {gz_path} {gz_size / 1e6:.1f} MB gzip, {tar_path.stat().st_size / 1e6:.1f} MB tar; span {args.span}")
    versions = f"python {sys.version.split()[0]}, zlib {zlib.ZLIB_RUNTIME_VERSION}"
    print(f"{versions}, cpus {os.cpu_count()}, best of {args.repeat}")
    print()

    rows: list[tuple[str, dict[str, float]]] = []
    blobs: dict[str, Path] = {}
    rows.append(("zlib.decompressobj(31) [baseline]", run_child("zlib", gz_path, args.span, "", Path(), args.repeat)))
    for backend in zran.available_backends():
        blobs[backend] = args.cache / f"zinfo-{backend}-{args.span}.bin"
        run = run_child("checkpoint", gz_path, args.span, backend, blobs[backend], args.repeat)
        rows.append((f"GzipCheckpointer {backend}", run))
    rows.append((f"StreamInflater ({ENGINE_NAME})", run_child("isal", gz_path, args.span, "", Path(), args.repeat)))

    base = rows[0][1]["seconds"]
    print(f"{'full pass':40} {'seconds':>8} {'MB/s':>8} {'x zlib':>7} {'peak RSS MiB':>13}")
    for name, run in rows:
        mbps = run["uncompressed"] / run["seconds"] / 1e6
        print(
            f"{name:40} {run['seconds']:8.2f} {mbps:8.0f} {base / run['seconds']:7.2f} {run['maxrss_kib'] / 1024:13.0f}"
        )

    digests = {b: hashlib.sha256(p.read_bytes()).hexdigest() for b, p in blobs.items()}
    zinfo = GzipZinfo.from_blob(next(iter(blobs.values())).read_bytes())
    same = len(set(digests.values())) == 1
    print(
        f"\nzinfo: {len(zinfo)} checkpoints, {sum(zinfo.bits(i) != 0 for i in range(len(zinfo)))} with bits; "
        f"blob sha256 {next(iter(digests.values()))[:16]}..., identical across backends: {same}"
    )

    heading = f"{'random 1 MiB extract (verified)':40} {'median ms':>10} {'max ms':>8}"
    print(f"\n{heading} {'reads/s 1 thr':>14} {'reads/s 2 thr':>14}")
    for backend in zran.available_backends():
        median, worst, rate1, rate2 = extraction_latency(zinfo, gz_path, tar_path, args.reads, backend)
        print(f"{backend:40} {median:10.1f} {worst:8.1f} {rate1:14.0f} {rate2:14.0f}")
    if not same:
        raise SystemExit("backends produced different zinfo blobs")


if __name__ == "__main__":
    main()

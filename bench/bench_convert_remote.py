"""`soci convert --remote` against merely downloading the same layers, registry on loopback, same run.

Target (issue: registry): convert wall time <= 1.2x the download time of the same layers with the same client
(the index build overlaps the download). Also prints 64 KiB range-read throughput with 8 in flight.

    .venv/bin/python bench/bench_convert_remote.py [--cache DIR] [--runs 3]

Layers come from bench/bench_index_build.py's cache (made there if missing): a ~330 MB gzip of real files and a
~256 MB incompressible one.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_index_build import make_big_layer, make_real_layer

from soci.codec.inflate import StreamInflater
from soci.formats.digest import sha256_digest
from soci.formats.oci import (
    MEDIA_TYPE_OCI_CONFIG,
    MEDIA_TYPE_OCI_LAYER_GZIP,
    MEDIA_TYPE_OCI_MANIFEST,
    Descriptor,
    Manifest,
)
from soci.registry import RegistryClient
from soci.testing.registry_server import RegistryServer

REPO = Path(__file__).resolve().parent.parent


def file_digest(path: Path) -> str:
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return "sha256:" + h.hexdigest()


def diff_id(path: Path) -> str:
    import hashlib

    h = hashlib.sha256()
    inflater = StreamInflater()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(inflater.feed(chunk))
    h.update(inflater.finish())
    return "sha256:" + h.hexdigest()


async def push_image(client: RegistryClient, repo: str, layers: list[Path]) -> list[Descriptor]:
    descs = []
    for path in layers:
        digest = file_digest(path)
        await client.push_blob(repo, digest, path, path.stat().st_size)
        descs.append(Descriptor(MEDIA_TYPE_OCI_LAYER_GZIP, digest, path.stat().st_size))
    config = json.dumps(
        {"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": [diff_id(p) for p in layers]}}
    ).encode()
    config_digest = sha256_digest(config)
    await client.push_blob(repo, config_digest, config, len(config))
    manifest = Manifest(
        config=Descriptor(MEDIA_TYPE_OCI_CONFIG, config_digest, len(config)),
        layers=tuple(descs),
        media_type=MEDIA_TYPE_OCI_MANIFEST,
    )
    await client.put_manifest(repo, "v1", manifest.marshal(), MEDIA_TYPE_OCI_MANIFEST)
    return descs


async def download(client: RegistryClient, repo: str, layers: list[Descriptor]) -> float:
    limit = asyncio.Semaphore(os.cpu_count() or 1)  # the same layer parallelism the index builder uses

    async def one(d: Descriptor) -> None:
        async with limit:
            async for _ in client.open_blob_stream(repo, d.digest, d.size):
                pass

    start = time.perf_counter()
    await asyncio.gather(*(one(d) for d in layers))
    return time.perf_counter() - start


def measure(
    registry: RegistryServer, descs: list[Descriptor], downloads: list[float], converts: list[float], runs: int
) -> None:
    for run in range(runs):

        async def fetch() -> float:
            async with RegistryClient(registry.host, plain_http=True) as client:
                return await download(client, "bench/app", descs)

        downloads.append(asyncio.run(fetch()))
        with tempfile.TemporaryDirectory() as root:
            start = time.perf_counter()
            subprocess.run(
                [str(REPO / ".venv" / "bin" / "soci"), "--root", root, "convert", "--remote", "--plain-http",
                 "--quiet", f"{registry.host}/bench/app:v1", f"{registry.host}/bench/app:soci-{run}"],
                check=True,
            )  # fmt: skip
            converts.append(time.perf_counter() - start)
        print(f"  run {run}: download {downloads[-1]:.2f} s, convert --remote {converts[-1]:.2f} s")


async def range_reads(client: RegistryClient, repo: str, layer: Descriptor, count: int = 2000) -> float:
    sem = asyncio.Semaphore(8)
    step = max(1, (layer.size - (64 << 10)) // count)

    async def one(i: int) -> None:
        async with sem:
            await client.read_blob_range(repo, layer.digest, i * step, 64 << 10)

    start = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(count)))
    return count / (time.perf_counter() - start)


class Shaper:
    """tc htb on lo limiting traffic from one port (the registry's); removes what it added on exit."""

    def __init__(self, port: int, rate_mbit: int) -> None:
        self.port, self.rate = port, rate_mbit

    def __enter__(self) -> Shaper:
        def tc(*a: str) -> None:
            subprocess.run(["tc", *a], check=True, capture_output=True)

        tc("qdisc", "add", "dev", "lo", "root", "handle", "1:", "htb", "default", "99")
        tc("class", "add", "dev", "lo", "parent", "1:", "classid", "1:99", "htb", "rate", "40gbit")
        tc("class", "add", "dev", "lo", "parent", "1:", "classid", "1:10", "htb", "rate", f"{self.rate}mbit",
           "ceil", f"{self.rate}mbit", "burst", "64k")  # fmt: skip
        tc("filter", "add", "dev", "lo", "parent", "1:", "protocol", "ip", "prio", "1", "u32", "match", "ip",
           "sport", str(self.port), "0xffff", "flowid", "1:10")  # fmt: skip
        return self

    def __exit__(self, *exc: object) -> None:
        subprocess.run(["tc", "qdisc", "del", "dev", "lo", "root"], check=False, capture_output=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cache", type=Path, default=REPO / ".work" / "bench")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--rate-mbit", type=int, default=0, help="also shape the registry port to this rate (tc htb)")
    args = ap.parse_args()
    args.cache.mkdir(parents=True, exist_ok=True)
    real, big = args.cache / "real-300mb.tar.gz", args.cache / "random-256mb.tar.gz"
    make_real_layer(real, 300)
    make_big_layer(big, 256)
    layers = [real, big]
    total = sum(p.stat().st_size for p in layers)
    print(f"image: {len(layers)} layers, {total / 1e6:.0f} MB compressed")
    with RegistryServer() as registry:

        async def setup() -> list[Descriptor]:
            async with RegistryClient(registry.host, plain_http=True) as client:
                return await push_image(client, "bench/app", layers)

        descs = asyncio.run(setup())
        shaping = Shaper(registry.port, args.rate_mbit) if args.rate_mbit else contextlib.nullcontext()
        if args.rate_mbit:
            print(f"registry port {registry.port} shaped to {args.rate_mbit} Mbit/s")
        downloads: list[float] = []
        converts: list[float] = []
        with shaping:
            measure(registry, descs, downloads, converts, args.runs)

        async def ranges() -> float:
            async with RegistryClient(registry.host, plain_http=True) as client:
                return await range_reads(client, "bench/app", descs[0])

        rps = asyncio.run(ranges())
    d, c = statistics.median(downloads), statistics.median(converts)
    print(f"median download {d:.2f} s ({total / 1e6 / d:.0f} MB/s), convert --remote {c:.2f} s: "
          f"ratio {c / d:.2f}x (target <= 1.2x)")  # fmt: skip
    print(f"64 KiB range reads, 8 in flight: {rps:.0f} req/s (target >= 2000; docker-registry bound, see note)")


if __name__ == "__main__":
    main()

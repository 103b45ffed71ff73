"""Registry client throughput against a loopback docker-registry, with baselines measured in the same run.

    .venv/bin/python bench/bench_registry.py [--blob-mib 64] [--small-requests 2000]

Prints: 64 KiB range GETs per second with 8 in flight (RegistryClient vs bare aiohttp), 4 MiB range MB/s,
and whole-blob download MB/s (RegistryClient.get_blob, which also hashes, vs curl -o /dev/null).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import random
import subprocess
import time
from collections.abc import Awaitable, Callable

import aiohttp

from soci.registry import RegistryClient, resolve_hosts
from soci.testing.registry_server import RegistryServer, sha256_digest

KIB = 1024
MIB = 1024 * KIB


async def run_concurrently(count: int, in_flight: int, make: Callable[[int], Awaitable[int]]) -> tuple[float, int]:
    """Run ``make(i)`` for i < count with ``in_flight`` workers; (seconds, total bytes)."""
    queue = list(range(count))
    total = 0

    async def worker() -> None:
        nonlocal total
        while queue:
            total += await make(queue.pop())

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(in_flight)))
    return time.perf_counter() - start, total


async def bench(blob_mib: int, small_requests: int) -> None:
    data = os.urandom(blob_mib * MIB)
    digest = sha256_digest(data)
    repo = "bench/blob"
    rng = random.Random(1)
    with RegistryServer() as registry:
        registry.push_blob(repo, data)
        url = f"{registry.url}/v2/{repo}/blobs/{digest}"
        hosts = resolve_hosts(registry.host, plain_http=True)
        async with (
            RegistryClient(registry.host, hosts=hosts) as client,
            aiohttp.ClientSession(read_bufsize=1 << 20) as session,
        ):
            small_offsets = [rng.randrange(0, len(data) - 64 * KIB) for _ in range(small_requests)]
            large_offsets = [rng.randrange(0, len(data) - 4 * MIB) for _ in range(48)]

            async def client_range(offset: int, length: int) -> int:
                chunk = await client.read_blob_range(repo, digest, offset, length)
                assert len(chunk) == length
                return len(chunk)

            async def bare_range(offset: int, length: int) -> int:
                headers = {"Range": f"bytes={offset}-{offset + length - 1}"}
                async with session.get(url, headers=headers) as response:
                    body = await response.read()
                assert response.status == 206 and len(body) == length
                return len(body)

            await client_range(0, 1)  # warm connections and the page cache
            await bare_range(0, 1)
            results: dict[str, float] = {}
            fetchers: dict[str, Callable[[int, int], Awaitable[int]]] = {"client": client_range, "aiohttp": bare_range}
            for name, fetch in fetchers.items():

                def small(i: int, fetch: Callable[[int, int], Awaitable[int]] = fetch) -> Awaitable[int]:
                    return fetch(small_offsets[i], 64 * KIB)

                def large(i: int, fetch: Callable[[int, int], Awaitable[int]] = fetch) -> Awaitable[int]:
                    return fetch(large_offsets[i], 4 * MIB)

                seconds, _ = await run_concurrently(small_requests, 8, small)
                results[f"small_{name}"] = small_requests / seconds
                seconds, total = await run_concurrently(len(large_offsets), 4, large)
                results[f"large_{name}"] = total / seconds / 1e6

            best_client = 0.0
            for _ in range(3):
                start = time.perf_counter()
                assert await client.get_blob(repo, digest) == data
                best_client = max(best_client, len(data) / (time.perf_counter() - start) / 1e6)
        best_curl = 0.0
        for _ in range(3):
            start = time.perf_counter()
            subprocess.run(["curl", "-sf", "-o", "/dev/null", url], check=True)
            best_curl = max(best_curl, len(data) / (time.perf_counter() - start) / 1e6)

    print(f"machine: {platform.node()} {platform.machine()} cores={os.cpu_count()} python={platform.python_version()}")
    print(f"blob: {blob_mib} MiB on loopback docker-registry")
    print(
        f"64 KiB ranges, 8 in flight: client {results['small_client']:.0f} req/s, bare aiohttp "
        f"{results['small_aiohttp']:.0f} req/s, ratio {results['small_client'] / results['small_aiohttp']:.2f} "
        f"(target >= 2000 req/s)"
    )
    print(
        f"4 MiB ranges, 4 in flight: client {results['large_client']:.0f} MB/s, bare aiohttp "
        f"{results['large_aiohttp']:.0f} MB/s, ratio {results['large_client'] / results['large_aiohttp']:.2f}"
    )
    print(
        f"whole blob (best of 3): client get_blob incl. sha256 {best_client:.0f} MB/s, curl {best_curl:.0f} MB/s, "
        f"ratio {best_client / best_curl:.2f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--blob-mib", type=int, default=64)
    parser.add_argument("--small-requests", type=int, default=2000)
    args = parser.parse_args()
    asyncio.run(bench(args.blob_mib, args.small_requests))


if __name__ == "__main__":
    main()

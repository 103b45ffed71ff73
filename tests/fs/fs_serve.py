"""Serve built layers from a real registry through a real FUSE mount, in the test's event loop.

File access from the test must not block that loop (it also serves the FUSE requests): use
``asyncio.to_thread`` for anything that touches the mount.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import subprocess
from collections.abc import AsyncIterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from fs_layers import BuiltLayer

from soci.fs.layer import Layer, LayerRequest, LayerResolver
from soci.fs.mount import LazyMount, is_mount_point, unmount
from soci.fs.options import FsOptions
from soci.registry import RegistryClient, RemoteBlob, TransportOptions
from soci.testing.registry_server import registry_available

FAST_RETRIES = TransportOptions(max_retries=2, min_wait_msec=10, max_wait_msec=50, response_header_timeout_msec=10_000)


def fuse_usable() -> bool:
    return os.geteuid() == 0 and Path("/dev/fuse").exists() and shutil.which("fusermount3") is not None


@dataclass
class Served:
    mount: LazyMount
    resolver: LayerResolver
    client: RegistryClient
    paths: dict[str, Path] = field(default_factory=dict)
    layers: dict[str, Layer] = field(default_factory=dict)


def needs_fuse_and_registry(timeout_sec: int, *more: pytest.MarkDecorator) -> list[pytest.MarkDecorator]:
    """The ``pytestmark`` of a test module that serves layers through FUSE from a docker-registry."""
    return [
        pytest.mark.root,
        pytest.mark.fuse,
        pytest.mark.registry,
        *more,
        pytest.mark.timeout(timeout_sec),
        pytest.mark.skipif(
            not (fuse_usable() and registry_available()), reason="needs root, /dev/fuse, docker-registry"
        ),
    ]


async def layer_request(client: RegistryClient, repo: str, built: BuiltLayer) -> LayerRequest:
    blob = await RemoteBlob.open(client, repo, built.digest, len(built.blob))
    return LayerRequest(built.digest, built.ztoc_digest, built.ztoc_bytes, blob)


@contextlib.asynccontextmanager
async def overlay(lowers: Sequence[Path], target: Path) -> AsyncIterator[Path]:
    """A read-only overlay of ``lowers`` (topmost first) at ``target``.

    Mounting makes the kernel look into FUSE lower dirs, which this loop serves: run it in a thread.
    """
    target.mkdir(parents=True, exist_ok=True)
    lowerdir = ":".join(str(p) for p in lowers)
    command = ["mount", "-t", "overlay", "overlay", "-o", f"ro,lowerdir={lowerdir}", str(target)]
    await asyncio.to_thread(subprocess.run, command, check=True)
    try:
        yield target
    finally:
        if is_mount_point(target):
            await asyncio.to_thread(unmount, target)


@contextlib.asynccontextmanager
async def serve(
    host: str,
    repo: str,
    layers: Sequence[BuiltLayer],
    root: Path,
    *,
    names: Sequence[str] | None = None,
    options: FsOptions | None = None,
    transport: TransportOptions | None = None,
) -> AsyncIterator[Served]:
    """Mount ``layers`` (already pushed to ``repo`` at ``host``) under ``root/mnt/<name>``."""
    options = options or FsOptions()
    names = list(names or [f"layer{i}" for i in range(len(layers))])
    executor = ThreadPoolExecutor(2)
    client = RegistryClient(host, plain_http=True, transport_options=transport or FAST_RETRIES)
    resolver = LayerResolver(root, options, executor=executor)
    try:
        async with LazyMount(root / "mnt", options.fuse) as mount:
            served = Served(mount, resolver, client)
            try:
                for name, built in zip(names, layers, strict=True):
                    layer = await resolver.acquire(await layer_request(client, repo, built))
                    served.layers[name] = layer
                    served.paths[name] = mount.add_layer(name, layer)
                yield served
            finally:
                for name, layer in served.layers.items():
                    with contextlib.suppress(Exception):
                        mount.remove_layer(name)
                    await resolver.release(layer)
    finally:
        await resolver.aclose()
        await client.aclose()
        executor.shutdown(wait=True)

"""``soci mount REF DIR``: mount an image lazily, read-only, until interrupted.

The image's SOCI index is found as the snapshotter finds it (explicit digest, then the v2 annotation,
then v1 referrers with ``--soci-v1``). Layers with a zTOC are served lazily by one FUSE mount under
``<root>/soci/mnt/``; layers without one are downloaded, digest-checked and unpacked under
``<root>/soci/unpacked/``. All of them are stacked read-only with overlayfs at DIR. SIGINT or SIGTERM
unmounts the overlay, then FUSE. Mounts a crashed earlier run left at DIR or at its FUSE directory are
removed first.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import signal
import subprocess
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import click

from soci.cli._common import GlobalOptions, errors_to_exit, pass_options
from soci.cli._registry_flags import RegistryFlags, flags, registry_flags
from soci.errors import DataLoss, FailedPrecondition, InvalidArgument, NotFound
from soci.formats import soci_index as si
from soci.formats.digest import digest_hex, sha256_digest
from soci.formats.oci import Descriptor, Index, Manifest
from soci.formats.platforms import default_platform, format_platform, matches_strict, parse_platform
from soci.fs.background import BackgroundFetcher
from soci.fs.layer import Layer, LayerRequest, LayerResolver
from soci.fs.mount import LazyMount, clean_stale_mounts, is_mount_point, unmount
from soci.fs.options import BackgroundFetchOptions, FsOptions, PrefetchOptions
from soci.fs.unpack import unpack_layer
from soci.index.discover import discover_index, fetch_index
from soci.registry import RegistryClient, RemoteBlob, parse_reference
from soci.registry.client import OCI_INDEX
from soci.store import ContentStore

log = logging.getLogger(__name__)

DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"


@click.command("mount")
@registry_flags
@click.option(
    "--root",
    "root_override",
    type=click.Path(path_type=Path, file_okay=False),
    help="state directory (span cache, FUSE mount, unpacked layers); default: the global --root",
)
@click.option("--soci-index-digest", default="", help="use this SOCI index instead of discovering one")
@click.option("--soci-v1", is_flag=True, help="also look for a SOCI v1 index through the referrers API")
@click.option("--platform", "-p", "platform_spec", default="", help="platform to mount (default: this machine's)")
@click.option(
    "--prefetch/--no-prefetch",
    default=True,
    show_default=True,
    help="load the spans listed in the index's prefetch artifacts before mounting",
)
@click.option(
    "--background-fetch/--no-background-fetch",
    default=False,
    show_default=True,
    help="fetch the rest of every layer slowly in the background",
)
@click.argument("ref")
@click.argument("directory", type=click.Path(path_type=Path, file_okay=False))
@pass_options
def mount(
    opts: GlobalOptions,
    plain_http: bool,
    skip_verify: bool,
    user: str | None,
    hosts_dir: Path | None,
    root_override: Path | None,
    soci_index_digest: str,
    soci_v1: bool,
    platform_spec: str,
    prefetch: bool,
    background_fetch: bool,
    ref: str,
    directory: Path,
) -> None:
    """Mount image REF lazily at DIRECTORY (read-only) until SIGINT or SIGTERM."""
    if os.geteuid() != 0:
        raise click.ClickException("mount needs root (FUSE with allow_other, overlayfs)")
    request = MountRequest(
        ref=ref,
        directory=Path(os.path.abspath(directory)),
        root=Path(os.path.abspath(root_override or opts.root)),
        registry=flags(plain_http, skip_verify, user, hosts_dir),
        index_digest=soci_index_digest,
        soci_v1=soci_v1,
        platform=platform_spec,
        options=FsOptions(
            prefetch=PrefetchOptions(enable=prefetch),
            background_fetch=BackgroundFetchOptions(disable=not background_fetch),
        ),
    )
    with errors_to_exit():
        asyncio.run(run_mount(request))


@dataclass
class MountRequest:
    ref: str
    directory: Path
    root: Path
    registry: RegistryFlags
    index_digest: str = ""
    soci_v1: bool = False
    platform: str = ""
    options: FsOptions = field(default_factory=FsOptions)
    ready: asyncio.Event | None = None
    """Set once DIR is mounted (for callers running this in their own loop)."""
    stop: asyncio.Event | None = None
    """Set to unmount (default: SIGINT/SIGTERM)."""


async def run_mount(request: MountRequest) -> None:
    """Mount, wait for a signal (or ``request.stop``), unmount."""
    root, target = request.root, request.directory
    key = hashlib.sha256(os.fsencode(target)).hexdigest()[:16]
    fuse_dir = root / "soci" / "mnt" / key
    pid_file = root / "soci" / "mnt" / f"{key}.pid"
    _claim(pid_file, target)
    stop = request.stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    if request.stop is None:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
    try:
        # an overlay left at DIR sits on the FUSE mount: remove it first
        await asyncio.to_thread(clean_stale_mounts, [target])
        await asyncio.to_thread(clean_stale_mounts, [fuse_dir])
        target.mkdir(parents=True, exist_ok=True)
        async with _mounted_image(request, fuse_dir) as lowers:
            await asyncio.to_thread(_mount_stack, lowers, target)
            try:
                click.echo(f"mounted {request.ref} at {target} ({len(lowers)} layers)", err=True)
                if request.ready is not None:
                    request.ready.set()
                await stop.wait()
            finally:
                if is_mount_point(target):
                    await asyncio.to_thread(unmount, target)
        click.echo(f"unmounted {target}", err=True)
    finally:
        if request.stop is None:
            for signum in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(signum)
        with contextlib.suppress(FileNotFoundError):
            pid_file.unlink()


def _claim(pid_file: Path, target: Path) -> None:
    """Refuse a DIR another live ``soci mount`` serves; a dead one's leftovers are cleaned by the caller."""
    pid_file.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        other = int(pid_file.read_text().strip() or 0)
    except (FileNotFoundError, ValueError):
        other = 0
    if other and other != os.getpid():
        try:
            os.kill(other, 0)
        except ProcessLookupError:
            pass
        else:
            raise FailedPrecondition(f"{target} is already served by soci mount process {other}")
    pid_file.write_text(f"{os.getpid()}\n")


@contextlib.asynccontextmanager
async def _mounted_image(request: MountRequest, fuse_dir: Path) -> AsyncIterator[list[Path]]:
    """Every layer of the image as a directory, bottom layer first."""
    ref = parse_reference(request.ref)
    client = request.registry.client(ref.domain)
    store = ContentStore(request.root / "content")
    store.ensure_layout()
    executor = ThreadPoolExecutor(max(2, os.cpu_count() or 2), thread_name_prefix="soci-fs")
    background = BackgroundFetcher(request.options.background_fetch)
    resolver = LayerResolver(request.root, request.options, executor=executor, background=background)
    held: list[Layer] = []
    try:
        manifest_digest, manifest = await _image_manifest(client, ref.path, ref.object, request.platform)
        discovery = await discover_index(client, ref.path, manifest_digest, explicit_digest=request.index_digest,
                                         v1_enabled=request.soci_v1, manifest=manifest)  # fmt: skip
        index = await fetch_index(client, ref.path, discovery.index_digest)
        log.info("SOCI index %s (%s)", index.digest, discovery.found_by)
        async with LazyMount(fuse_dir, request.options.fuse) as fuse:
            background.start()
            try:
                lowers: list[Path] = []
                for position, layer_desc in enumerate(manifest.layers or ()):
                    lowers.append(await _layer_dir(client, ref.path, store, index, layer_desc, position, resolver,
                                                   fuse, held, request))  # fmt: skip
                yield lowers
            finally:
                for name in list(fuse.layers()):
                    fuse.remove_layer(name)
                for layer in held:
                    await resolver.release(layer)
                await background.aclose()
    finally:
        await resolver.aclose()
        await client.aclose()
        executor.shutdown(wait=True)


async def _image_manifest(client: RegistryClient, repo: str, reference: str, platform: str) -> tuple[str, Manifest]:
    """The image manifest (digest, decoded) for this platform, through an image index if there is one."""
    data, media_type, digest = await client.get_manifest(repo, reference)
    if media_type in (OCI_INDEX, DOCKER_MANIFEST_LIST):
        want = parse_platform(platform) if platform else default_platform()
        listed = Index.unmarshal(data, f"image index {digest}").manifests or ()
        match = next(
            (d for d in listed if not d.artifact_type and d.platform is not None and matches_strict(want, d.platform)),
            None,
        )
        if match is None:
            raise NotFound(f"image {repo}:{reference} has no manifest for platform {format_platform(want)}")
        data, _, digest = await client.get_manifest(repo, match.digest)
    return digest, Manifest.unmarshal(data, f"image manifest {digest}")


async def _layer_dir(
    client: RegistryClient,
    repo: str,
    store: ContentStore,
    index: si.SociIndex,
    layer_desc: Descriptor,
    position: int,
    resolver: LayerResolver,
    fuse: LazyMount,
    held: list[Layer],
    request: MountRequest,
) -> Path:
    ztoc_desc = index.ztoc_for_layer(layer_desc.digest)
    if ztoc_desc is None:
        log.info("skipping mounting layer %s lazily: no ztoc for layer; unpacking it", layer_desc.digest)
        target = request.root / "soci" / "unpacked" / digest_hex(layer_desc.digest)
        stream = client.open_blob_stream(repo, layer_desc.digest, layer_desc.size)
        async with contextlib.aclosing(stream):
            await unpack_layer(stream, layer_desc.media_type, target)
        return target
    ztoc = await _cached_blob(client, repo, store, ztoc_desc.digest)
    annotations = ztoc_desc.annotations or {}
    prefetch: tuple[si.PrefetchSpan, ...] = ()
    if request.options.prefetch.enable:
        for desc in index.prefetches():
            if (desc.annotations or {}).get(si.ANNOTATION_LAYER_DIGEST) == layer_desc.digest:
                prefetch += tuple(si.parse_prefetch(await _cached_blob(client, repo, store, desc.digest)))
    blob = RemoteBlob(client, repo, layer_desc.digest, layer_desc.size)
    layer = await resolver.acquire(
        LayerRequest(
            layer_digest=layer_desc.digest,
            ztoc_digest=ztoc_desc.digest,
            ztoc=ztoc,
            blob=blob,
            layer_size=layer_desc.size,
            disable_xattrs=_parse_bool(annotations.get(si.ANNOTATION_DISABLE_XATTRS, "")),
            prefetch=prefetch,
            image_ref=request.ref,
        )
    )
    held.append(layer)
    return fuse.add_layer(f"{position:03d}-{digest_hex(layer_desc.digest)[:12]}", layer)


async def _cached_blob(client: RegistryClient, repo: str, store: ContentStore, digest: str) -> bytes:
    """A small blob (zTOC, prefetch artifact) from the local store, else from the registry (then stored)."""
    if store.has_blob(digest):
        try:
            return store.read_blob(digest)
        except DataLoss:
            log.warning("local copy of %s is corrupt; fetching it again", digest)
    data = await client.get_blob(repo, digest)
    if sha256_digest(data) != digest:
        raise DataLoss(f"blob {digest} from {repo} does not match its digest")
    store.write_blob(data, digest)
    return data


def _parse_bool(text: str) -> bool:
    """Go's strconv.ParseBool; anything it rejects counts as false."""
    return text in ("1", "t", "T", "TRUE", "true", "True")


def _mount_stack(lowers: list[Path], target: Path) -> None:
    """Read-only overlayfs of ``lowers`` (bottom first) at ``target``; one layer is bind-mounted read-only."""
    if not lowers:
        raise InvalidArgument("image has no layers")
    if len(lowers) == 1:
        _run(["mount", "--bind", str(lowers[0]), str(target)])
        _run(["mount", "-o", "remount,bind,ro", str(target)])
        return
    lowerdir = ":".join(str(p) for p in reversed(lowers))
    _run(["mount", "-t", "overlay", "overlay", "-o", f"ro,lowerdir={lowerdir}", str(target)])


def _run(command: list[str]) -> None:
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise FailedPrecondition(f"{' '.join(command[:3])} failed: {result.stderr.strip()}")

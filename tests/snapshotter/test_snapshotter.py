"""The Prepare decision tree in-process: real registry, real SOCI discovery, real mounts and unpacking.

Mounters: the tmpfs test mounter of the e2e tests (a real mount holding the whole layer), one that
always fails, one that never finishes.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import subprocess
import tarfile
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from e2e_mounter import UnpackingMounter
from snapshotter_stack import needs_root

from soci import system
from soci.cli.main import cli
from soci.errors import AlreadyExists, NotFound, Unavailable
from soci.formats.digest import sha256_digest
from soci.fs import erofs
from soci.registry import RegistryClient, TransportOptions, parse_reference
from soci.snapshotter import labels as lb
from soci.snapshotter import metrics as m
from soci.snapshotter.fuse_mounter import FuseLayerMounter
from soci.snapshotter.local import LocalUnpacker
from soci.snapshotter.metastore import Kind, SqliteMetaStore
from soci.snapshotter.remote import LayerMounter, RemoteLayer, SociRemoteFS
from soci.snapshotter.resolver import RegistryResolver
from soci.snapshotter.snapshotter import Snapshotter, SnapshotterOptions
from soci.testing.fault_proxy import Fault, FaultProxy
from soci.testing.images import Layer, gzip_layer, random_tree_tar, write_oci_layout
from soci.testing.registry_server import RegistryServer, registry_available

pytestmark = [
    *needs_root,
    pytest.mark.registry,
    pytest.mark.skipif(not registry_available(), reason="docker-registry is not installed"),
]


@dataclass
class RecordingMetrics:
    modes: list[tuple[str, str]] = field(default_factory=list)
    counts: list[str] = field(default_factory=list)
    observed: list[str] = field(default_factory=list)
    observed_layers: list[tuple[str, str]] = field(default_factory=list)

    def observe(self, operation: str, layer: str, seconds: float) -> None:
        self.observed.append(operation)
        self.observed_layers.append((operation, layer))

    def count(self, operation: str, layer: str = "") -> None:
        self.counts.append(operation)

    def pull_mode(self, layer: str, mode: str) -> None:
        self.modes.append((layer, mode))


class FailingMounter:
    async def mount(self, mountpoint: Path, layer: RemoteLayer) -> None:
        raise Unavailable("this mounter always fails")

    async def check(self, mountpoint: Path) -> None:
        raise Unavailable("never mounted")

    async def unmount(self, mountpoint: Path, *, discard: bool = False) -> None:
        return None


class BuggyMounter(FailingMounter):
    """Fails as a bug met by hostile input would: not with a project error."""

    async def mount(self, mountpoint: Path, layer: RemoteLayer) -> None:
        raise IndexError("index out of range")


class HangingMounter(FailingMounter):
    async def mount(self, mountpoint: Path, layer: RemoteLayer) -> None:
        await asyncio.sleep(3600)


@dataclass(frozen=True)
class Image:
    ref: str
    manifest_digest: str
    layers: list[Layer]

    def labels(self, position: int, **extra: str) -> dict[str, str]:
        diff_ids = [sha256_digest(layer.tar) for layer in self.layers]
        chain = diff_ids[0]
        for diff_id in diff_ids[1 : position + 1]:
            chain = sha256_digest(f"{chain} {diff_id}".encode())
        layer = self.layers[position].descriptor()
        return {
            lb.TARGET_SNAPSHOT_REF: chain,
            lb.CRI_IMAGE_REF: self.ref,
            lb.CRI_MANIFEST_DIGEST: self.manifest_digest,
            lb.CRI_LAYER_DIGEST: layer.digest,
            lb.TARGET_SIZE: str(layer.size),
            **extra,
        }


@pytest.fixture(scope="module")
def registry() -> Iterator[RegistryServer]:
    with RegistryServer() as server:
        yield server


def _get_manifest(ref: str) -> tuple[str, bytes]:
    """``(digest, bytes)`` of the manifest or index ``ref`` names."""
    reference = parse_reference(ref)

    async def get() -> tuple[str, bytes]:
        async with RegistryClient(reference.domain, plain_http=True) as client:
            data, _, digest = await client.get_manifest(reference.path, reference.object)
            return digest, data

    return asyncio.run(get())


def _push(registry: RegistryServer, workdir: Path, name: str, seeds: tuple[int, ...]) -> Image:
    layers = [gzip_layer(random_tree_tar(seed, files=60)) for seed in seeds]
    layout = workdir / f"layout-{name}"
    write_oci_layout(layout, layers)
    ref = f"{registry.host}/unit/{name}:v1"
    subprocess.run(
        ["skopeo", "copy", "--quiet", "--dest-tls-verify=false", f"oci:{layout}:latest", f"docker://{ref}"],
        check=True,
    )
    return Image(ref, _get_manifest(ref)[0], layers)


def _convert(registry: RegistryServer, workdir: Path, image: Image, min_layer_size: int = 0) -> Image:
    dst = image.ref.replace(":v1", ":v1-soci")
    result = CliRunner().invoke(
        cli,
        ["--root", str(workdir / "soci"), "convert", "--remote", "--plain-http",
         "--min-layer-size", str(min_layer_size), image.ref, dst],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    index = json.loads(_get_manifest(dst)[1])
    manifest = next(d for d in index["manifests"] if not d.get("artifactType"))
    return Image(dst, manifest["digest"], image.layers)


@pytest.fixture(scope="module")
def images(registry: RegistryServer, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Image]:
    workdir = tmp_path_factory.mktemp("images")
    plain = _push(registry, workdir, "plain", (1, 2))
    sparse_src = _push(registry, workdir, "sparse", (3, 4))
    sizes = sorted(layer.descriptor().size for layer in sparse_src.layers)
    return {
        "plain": plain,
        "indexed": _convert(registry, workdir, _push(registry, workdir, "indexed", (5, 6))),
        "sparse": _convert(registry, workdir, sparse_src, min_layer_size=sizes[-1]),  # only the big one indexed
    }


@dataclass
class Harness:
    snapshotter: Snapshotter
    metrics: RecordingMetrics
    resolver: RegistryResolver
    remote: SociRemoteFS


Make = Callable[..., Awaitable[Harness]]


@pytest.fixture
async def make(tmp_path: Path) -> AsyncIterator[Make]:
    made: list[Harness] = []

    async def build(
        mounter: LayerMounter | None = None,
        *,
        mount_timeout_sec: float = 30.0,
        min_layer_size: int = 0,
        restore_retry_sec: float = 0.5,
    ) -> Harness:
        root = tmp_path / "root"
        resolver = RegistryResolver(transport_options=TransportOptions(max_retries=1, min_wait_msec=5))
        metrics = RecordingMetrics()
        remote = SociRemoteFS(
            resolver, mounter or UnpackingMounter(), mount_timeout_sec=mount_timeout_sec, metrics=metrics
        )
        local = LocalUnpacker(resolver, tmp_path / "unpack", opaque_xattr="trusted.overlay.opaque")
        snapshotter = Snapshotter(
            root / "snapshotter",
            SqliteMetaStore(root / "snapshotter" / "metadata.db"),
            remote,
            local=local,
            options=SnapshotterOptions(
                min_layer_size=min_layer_size, restore_retry_min_sec=restore_retry_sec, restore_retry_max_sec=1.0
            ),
            metrics=metrics,
        )
        harness = Harness(snapshotter, metrics, resolver, remote)
        made.append(harness)
        return harness

    yield build
    for harness in made:
        await harness.remote.aclose()
        await harness.snapshotter.aclose(unmount=True)
        await harness.resolver.aclose()


def _names(upper: Path) -> set[str]:
    return {str(p.relative_to(upper)) for p in upper.rglob("*")}


def _tar_names(layer: Layer) -> set[str]:
    """Entry names of the layer, plus the parent directories the tar only implies."""
    with tarfile.open(fileobj=io.BytesIO(layer.tar)) as tar:
        names = {m.name.rstrip("/") for m in tar.getmembers()}
    return names | {str(parent) for name in names for parent in Path(name).parents if str(parent) != "."}


async def test_indexed_layer_becomes_a_remote_snapshot(make: Make, images: dict[str, Image]) -> None:
    harness: Harness = await make()
    sn, image = harness.snapshotter, images["indexed"]
    labels = image.labels(0)
    with pytest.raises(AlreadyExists):
        await sn.prepare("ns/1/extract-a", "", labels, namespace="ns")
    info = await sn.stat(labels[lb.TARGET_SNAPSHOT_REF])
    assert info.kind is Kind.COMMITTED
    assert info.labels[lb.REMOTE] == lb.REMOTE_VALUE and info.labels[lb.TARGET_NAMESPACE] == "ns"
    with pytest.raises(Exception, match="does not exist"):
        await sn.stat("ns/1/extract-a")  # the active key became the committed snapshot
    # what containerd asks next: the committed snapshot by label and parent
    found = await sn.walk([f'labels."{lb.TARGET_SNAPSHOT_REF}"=={labels[lb.TARGET_SNAPSHOT_REF]},parent==""'])
    assert [i.name for i in found] == [labels[lb.TARGET_SNAPSHOT_REF]]
    mounted = system.mountpoints_under(sn.snapshots_dir)
    assert len(mounted) == 1 and _names(mounted[0]) == _tar_names(image.layers[0])
    assert harness.metrics.modes == [(labels[lb.CRI_LAYER_DIGEST], m.MODE_REMOTE)]
    assert m.OP_MOUNT in harness.metrics.observed and m.OP_SOCI_INDEX_FETCH in harness.metrics.observed

    # a second Prepare for the same layer finds it at once
    with pytest.raises(AlreadyExists):
        await sn.prepare("ns/2/extract-b", "", labels)
    await sn.remove(labels[lb.TARGET_SNAPSHOT_REF])
    assert system.mountpoints_under(sn.snapshots_dir) == []
    assert list(sn.snapshots_dir.iterdir()) == []


async def test_the_image_manifest_is_fetched_once_for_the_mount_and_the_index_lookup(
    make: Make, images: dict[str, Image], registry: RegistryServer
) -> None:
    harness: Harness = await make()
    image = images["indexed"]
    labels = image.labels(0)
    manifest = labels[lb.CRI_MANIFEST_DIGEST]
    before = registry.completed_gets("manifests", manifest)
    with pytest.raises(AlreadyExists):
        await harness.snapshotter.prepare("k-once", "", labels)
    assert registry.completed_gets("manifests", manifest) - before == 1


class KeepingMounter(UnpackingMounter):
    """Mounts as the e2e mounter does and keeps what each mount was given."""

    def __init__(self) -> None:
        super().__init__()
        self.layers: list[RemoteLayer] = []

    async def mount(self, mountpoint: Path, layer: RemoteLayer) -> None:
        self.layers.append(layer)
        await super().mount(mountpoint, layer)


async def test_upper_layers_ztocs_are_fetched_while_a_lower_layer_mounts(make: Make, images: dict[str, Image]) -> None:
    mounter = KeepingMounter()
    harness: Harness = await make(mounter=mounter)
    sn, image = harness.snapshotter, images["indexed"]
    lower, upper = (layer.descriptor().digest for layer in image.layers)
    with pytest.raises(AlreadyExists):
        await sn.prepare("k0", "", image.labels(0))
    fetch_of = harness.metrics.observed_layers.count
    for _ in range(200):  # the upper zTOC arrives in the background
        if fetch_of((m.OP_ZTOC_FETCH, upper)):
            break
        await asyncio.sleep(0.02)
    assert fetch_of((m.OP_ZTOC_FETCH, lower)) == 1 and fetch_of((m.OP_ZTOC_FETCH, upper)) == 1
    with pytest.raises(AlreadyExists):
        await sn.prepare("k1", image.labels(0)[lb.TARGET_SNAPSHOT_REF], image.labels(1))
    assert fetch_of((m.OP_ZTOC_FETCH, upper)) == 1, "the upper layer's mount fetched its zTOC a second time"
    assert len(system.mountpoints_under(sn.snapshots_dir)) == 2
    # the upper layer's gzip header came with its zTOC, so its mount need not wait a round trip for it
    blob = image.layers[1].blob
    assert [layer.gzip_header for layer in mounter.layers] == [None, blob[: len(mounter.layers[1].gzip_header or b"")]]
    assert mounter.layers[1].gzip_header and mounter.layers[1].gzip_header[:2] == b"\x1f\x8b"


async def test_the_first_layers_ztoc_is_fetched_before_the_uppers_start(
    make: Make, images: dict[str, Image], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every later Prepare waits behind the first layer's mount, so its zTOC does not share the link."""
    harness: Harness = await make()
    image = images["indexed"]
    events: list[tuple[str, str]] = []
    get_blob = RegistryClient.get_blob

    async def logged(self: RegistryClient, repo: str, digest: str, size: int | None = None) -> bytes:
        events.append(("start", digest))
        try:
            return await get_blob(self, repo, digest, size)
        finally:
            events.append(("end", digest))

    monkeypatch.setattr(RegistryClient, "get_blob", logged)
    with pytest.raises(AlreadyExists):
        await harness.snapshotter.prepare("k0", "", image.labels(0))
    for _ in range(200):
        if len(events) >= 4:
            break
        await asyncio.sleep(0.02)
    # the SOCI index, then the lower layer's zTOC, then (after it has arrived) the upper's
    assert [kind for kind, _ in events[-4:]] == ["start", "end", "start", "end"], events
    assert events[-4][1] == events[-3][1] != events[-2][1] == events[-1][1]


@pytest.mark.skipif(not erofs.kernel_supports_file_backed(), reason="this kernel has no file-backed EROFS")
async def test_a_fresh_daemons_first_erofs_image_is_written_while_its_fuse_mount_starts(
    make: Make, images: dict[str, Image], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    mounter = FuseLayerMounter(tmp_path / "fuse-root")
    harness: Harness = await make(mounter=mounter)
    labels = images["indexed"].labels(0)
    written = threading.Event()
    image_for_tree = erofs.image_for_tree

    def noted(*args: Any, **kwargs: Any) -> bytes:
        written.set()
        return image_for_tree(*args, **kwargs)

    start = mounter._lazy.start
    seen_at_start: list[bool] = []

    async def start_once_the_image_is_under_way() -> None:
        for _ in range(500):  # a mount that writes its image only after this returns never gets here in time
            if written.is_set():
                break
            await asyncio.sleep(0.01)
        seen_at_start.append(written.is_set())
        await start()

    monkeypatch.setattr(erofs, "image_for_tree", noted)
    monkeypatch.setattr(mounter._lazy, "start", start_once_the_image_is_under_way)
    try:
        with pytest.raises(AlreadyExists):
            await harness.snapshotter.prepare("k0", "", labels)
        assert seen_at_start == [True]
        info = await harness.snapshotter.stat(labels[lb.TARGET_SNAPSHOT_REF])
        assert info.labels[lb.REMOTE] == lb.REMOTE_VALUE
    finally:
        await harness.snapshotter.remove(labels[lb.TARGET_SNAPSHOT_REF])
        await mounter.aclose()


async def test_a_fresh_daemon_mounts_fuse_before_its_first_pull(
    make: Make, images: dict[str, Image], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    mounter = FuseLayerMounter(tmp_path / "fuse-root")
    harness: Harness = await make(mounter=mounter)
    mountpoint = tmp_path / "fuse-root" / "soci" / "fuse"
    labels = images["indexed"].labels(0)
    try:
        await mounter.restored()
        for _ in range(1000):
            if system.is_mountpoint(mountpoint):
                break
            await asyncio.sleep(0.01)
        assert system.is_mountpoint(mountpoint)

        async def started_twice() -> None:
            raise AssertionError("the first pull started FUSE again")

        monkeypatch.setattr(mounter._lazy, "start", started_twice)
        with pytest.raises(AlreadyExists):
            await harness.snapshotter.prepare("k0", "", labels)
        await harness.snapshotter.remove(labels[lb.TARGET_SNAPSHOT_REF])
    finally:
        await mounter.aclose()
    assert not system.is_mountpoint(mountpoint)  # nothing was served any more: the idle mount does not outlive it


async def test_a_fuse_start_that_fails_at_daemon_start_is_tried_again_by_the_first_pull(
    make: Make,
    images: dict[str, Image],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    mounter = FuseLayerMounter(tmp_path / "fuse-root")
    harness: Harness = await make(mounter=mounter)
    labels = images["indexed"].labels(0)
    start = mounter._lazy.start
    calls: list[int] = []

    async def fails_once() -> None:
        calls.append(1)
        if len(calls) == 1:
            raise Unavailable("no /dev/fuse yet")
        await start()

    monkeypatch.setattr(mounter._lazy, "start", fails_once)
    try:
        await mounter.restored()
        assert mounter._warming is not None
        await mounter._warming
        assert "FUSE not mounted at start (the first lazy mount tries again): no /dev/fuse yet" in caplog.text
        with pytest.raises(AlreadyExists):
            await harness.snapshotter.prepare("k0", "", labels)
        assert len(calls) == 2
        info = await harness.snapshotter.stat(labels[lb.TARGET_SNAPSHOT_REF])
        assert info.labels[lb.REMOTE] == lb.REMOTE_VALUE
        await harness.snapshotter.remove(labels[lb.TARGET_SNAPSHOT_REF])
    finally:
        await mounter.aclose()


async def test_layer_without_ztoc_is_unpacked_locally(make: Make, images: dict[str, Image]) -> None:
    harness: Harness = await make()
    sn, image = harness.snapshotter, images["sparse"]
    small = min(range(2), key=lambda i: image.layers[i].descriptor().size)
    labels = image.labels(small)
    if small == 1:
        with pytest.raises(AlreadyExists):
            await sn.prepare("k0", "", image.labels(0))
    parent = image.labels(0)[lb.TARGET_SNAPSHOT_REF] if small == 1 else ""
    with pytest.raises(AlreadyExists):
        await sn.prepare("k-small", parent, labels)
    info = await sn.stat(labels[lb.TARGET_SNAPSHOT_REF])
    assert lb.REMOTE not in info.labels and info.kind is Kind.COMMITTED
    assert (labels[lb.CRI_LAYER_DIGEST], m.MODE_LOCAL) in harness.metrics.modes
    assert (await sn.usage(labels[lb.TARGET_SNAPSHOT_REF])).size > 0
    with sn._ms.transaction(writable=False) as tx:  # the unpacked files are the layer's files
        upper = sn.upper_path(tx.get_info(labels[lb.TARGET_SNAPSHOT_REF])[0])
    assert _names(upper) == _tar_names(image.layers[small])


async def test_image_without_index_is_deferred(make: Make, images: dict[str, Image]) -> None:
    harness: Harness = await make()
    sn, image = harness.snapshotter, images["plain"]
    labels = image.labels(0)
    mounts = await sn.prepare("k-plain", "", labels)
    assert [(mt.type, mt.options) for mt in mounts] == [("bind", ("rw", "rbind"))]
    assert (await sn.stat("k-plain")).kind is Kind.ACTIVE
    assert harness.metrics.modes == [(labels[lb.CRI_LAYER_DIGEST], m.MODE_DEFER)]
    assert harness.metrics.counts == []  # deferring is not a failure
    assert not any(Path(mounts[0].source).iterdir())  # containerd gets an empty directory


async def test_failed_remote_mount_falls_back_to_local(make: Make, images: dict[str, Image]) -> None:
    harness: Harness = await make(FailingMounter())
    labels = images["indexed"].labels(0)
    with pytest.raises(AlreadyExists):
        await harness.snapshotter.prepare("k-fail", "", labels)
    assert harness.metrics.counts == [m.OP_FUSE_MOUNT_FAILURE, m.OP_REMOTE_FALLBACK]
    assert harness.metrics.modes == [(labels[lb.CRI_LAYER_DIGEST], m.MODE_LOCAL)]


async def test_unexpected_remote_error_falls_back_with_one_warning(
    make: Make, images: dict[str, Image], caplog: pytest.LogCaptureFixture
) -> None:
    harness: Harness = await make(BuggyMounter())
    labels = images["indexed"].labels(0)
    with pytest.raises(AlreadyExists):
        await harness.snapshotter.prepare("k-bug", "", labels)
    assert harness.metrics.counts == [m.OP_FUSE_MOUNT_FAILURE, m.OP_REMOTE_FALLBACK]
    assert harness.metrics.modes == [(labels[lb.CRI_LAYER_DIGEST], m.MODE_LOCAL)]
    warnings = [r.getMessage() for r in caplog.records if "falling back" in r.getMessage()]
    assert warnings == ["failed to prepare remote snapshot, falling back: IndexError: index out of range"]
    # the layer is committed under its target name; the active key is gone
    assert (await harness.snapshotter.stat(labels[lb.TARGET_SNAPSHOT_REF])).kind is Kind.COMMITTED
    with pytest.raises(NotFound):
        await harness.snapshotter.stat("k-bug")


async def test_cancelled_prepare_leaves_no_active_row(make: Make, images: dict[str, Image]) -> None:
    harness: Harness = await make(HangingMounter(), mount_timeout_sec=600)
    sn = harness.snapshotter
    task = asyncio.ensure_future(sn.prepare("k-cancel", "", images["indexed"].labels(0)))
    while not any(info.name == "k-cancel" for info in await sn.walk()):
        await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert [info.name for info in await sn.walk()] == []
    assert [p.name for p in sn.snapshots_dir.iterdir()] == []


async def test_mount_timeout_falls_back_to_local(make: Make, images: dict[str, Image]) -> None:
    harness: Harness = await make(HangingMounter(), mount_timeout_sec=0.5)
    labels = images["indexed"].labels(0)
    with pytest.raises(AlreadyExists):
        await harness.snapshotter.prepare("k-hang", "", labels)
    assert harness.metrics.modes == [(labels[lb.CRI_LAYER_DIGEST], m.MODE_LOCAL)]


async def test_min_layer_size_skips_the_remote_attempt(make: Make, images: dict[str, Image]) -> None:
    image = images["indexed"]
    harness: Harness = await make(FailingMounter(), min_layer_size=1 << 40)
    with pytest.raises(AlreadyExists):
        await harness.snapshotter.prepare("k-small", "", image.labels(0))
    assert harness.metrics.counts == []  # the failing mounter was never asked
    assert harness.metrics.modes[-1][1] == m.MODE_LOCAL


async def test_concurrent_prepares_of_one_layer_mount_it_once(make: Make, images: dict[str, Image]) -> None:
    harness: Harness = await make()
    labels = images["indexed"].labels(0)
    results = await asyncio.gather(
        *(harness.snapshotter.prepare(f"k-{i}", "", labels) for i in range(3)), return_exceptions=True
    )
    assert all(isinstance(r, AlreadyExists) for r in results), results
    assert len(system.mountpoints_under(harness.snapshotter.snapshots_dir)) == 1
    assert [i.name for i in await harness.snapshotter.walk()] == [labels[lb.TARGET_SNAPSHOT_REF]]


async def test_lost_mount_is_restored_on_use_and_at_start(make: Make, images: dict[str, Image]) -> None:
    harness: Harness = await make()
    sn, image = harness.snapshotter, images["indexed"]
    base = image.labels(0)
    with pytest.raises(AlreadyExists):
        await sn.prepare("k-base", "", base)
    (mounted,) = system.mountpoints_under(sn.snapshots_dir)
    system.unmount_all(mounted)
    # a container on top: Prepare checks the remote parent and mounts it again
    mounts = await sn.prepare("container", base[lb.TARGET_SNAPSHOT_REF])
    assert system.is_mountpoint(mounted)
    assert mounts[0].type == "overlay" and f"lowerdir={mounted}" in mounts[0].options
    system.unmount_all(mounted)
    await sn.restore()
    assert system.is_mountpoint(mounted)
    assert os.listdir(mounted)


async def test_registry_outage_at_restart_defers_remote_snapshots(
    make: Make, images: dict[str, Image], registry: RegistryServer
) -> None:
    async with FaultProxy(f"http://{registry.host}") as proxy:
        harness: Harness = await make(restore_retry_sec=0.05)
        sn, image = harness.snapshotter, images["indexed"]
        base = image.labels(0)
        base[lb.CRI_IMAGE_REF] = image.ref.replace(registry.host, proxy.host)
        with pytest.raises(AlreadyExists):
            await sn.prepare("k-base", "", base)
        (mounted,) = system.mountpoints_under(sn.snapshots_dir)
        system.unmount_all(mounted)  # as after a crash
        outage = Fault("status", match="/v2/", times=10**6, status=503)
        proxy.add(outage)
        await sn.restore()  # does not raise: the layer waits for its registry
        assert not system.is_mountpoint(mounted)
        refused = len(proxy.seen)
        async with asyncio.timeout(60):
            while len(proxy.seen) < refused + 2:  # retried in the background while the registry is down
                await asyncio.sleep(0.02)
            assert not system.is_mountpoint(mounted)
            outage.times = 0  # the registry answers again
            # the test mounter mounts its tmpfs first and fills it after: wait for the whole layer, not the mount
            while not (system.is_mountpoint(mounted) and _names(mounted) == _tar_names(image.layers[0])):
                await asyncio.sleep(0.02)
        assert _names(mounted) == _tar_names(image.layers[0])

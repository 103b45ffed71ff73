"""The lazy pull (``soci image rpull``): an image record in containerd whose layers the snapshotter mounts.

1. Resolve the reference in the registry and pick the platform's manifest (SOCI index entries of a
   SOCI-enabled image are skipped); fetch its config.
2. Under a lease, store the index/manifest/config (not the layers) in containerd's content store,
   with the GC labels containerd itself writes (``gc.ref.content.m.<i>``, ``config``, ``l.<i>``).
3. For each layer, bottom up: Prepare ``extract-<rand> <chainID>`` on the snapshotter with the
   remote-snapshot labels. ALREADY_EXISTS means the snapshotter produced the layer (lazily, or by
   unpacking it itself). Returned mounts mean it deferred (no SOCI index): the layer blob is then copied
   into containerd's content store and unpacked through containerd's Diff service, as ``ctr pull`` would.
4. Label the config ``containerd.io/gc.ref.snapshot.<snapshotter>`` = top chain ID, so removing the image
   lets containerd's GC remove the snapshots; create or update the image record; drop the lease.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final

from soci.errors import AlreadyExists, DataLoss, FormatError, NotFound
from soci.formats.digest import parse_digest, sha256_digest
from soci.formats.gojson import unmarshal_object
from soci.formats.labels import (
    CRI_IMAGE_LAYERS,
    CRI_IMAGE_REF,
    CRI_LAYER_DIGEST,
    CRI_MANIFEST_DIGEST,
    DISTRIBUTION_SOURCE_PREFIX,
    GC_REF_CONTENT_PREFIX,
    GC_REF_SNAPSHOT_PREFIX,
    LOAD_ORDER,
    MAX_LABEL_BYTES,
    REMOTE,
    TARGET_IMAGE_LAYERS_SIZE,
    TARGET_SIZE,
    TARGET_SNAPSHOT_REF,
    TARGET_SOCI_INDEX_DIGEST,
    UNCOMPRESSED,
)
from soci.formats.oci import INDEX_MEDIA_TYPES, Descriptor, Index, Manifest, Platform
from soci.formats.platforms import default_platform, format_platform, matches_strict
from soci.registry import Reference, RegistryClient

if TYPE_CHECKING:  # the gRPC stack is imported while the registry answers (soci.cli.image)
    from soci.containerd.client import ContainerdClient

log = logging.getLogger(__name__)

MODE_LAZY: Final = "lazy"
MODE_SNAPSHOTTER_UNPACKED: Final = "unpacked by snapshotter"
MODE_PULLED: Final = "pulled and unpacked"
MODE_EXISTS: Final = "already present"


@dataclass(frozen=True, slots=True)
class LayerResult:
    index: int
    digest: str
    size: int
    chain_id: str
    mode: str
    seconds: float


@dataclass
class PullResult:
    name: str
    target: Descriptor
    manifest_digest: str
    config_digest: str
    chain_id: str
    layers: list[LayerResult] = field(default_factory=list)


ProgressCallback = Callable[[LayerResult, int], None]
"""Called after each layer with its result and the number of layers."""


@dataclass(frozen=True)
class RemoteImage:
    """What a pull learns from the registry alone (step 1), before containerd is involved."""

    root: Descriptor
    blobs: dict[str, bytes]
    """The root and the platform's manifest, by digest, as served."""
    manifest_descriptor: Descriptor
    manifest: Manifest
    config: bytes
    diff_ids: list[str]


def chain_ids(diff_ids: Sequence[str]) -> list[str]:
    """containerd's identity.ChainIDs: ``chain[0] = diff[0]``, ``chain[i] = sha256(chain[i-1] + " " + diff[i])``."""
    chains: list[str] = []
    for diff_id in diff_ids:
        chains.append(diff_id if not chains else sha256_digest(f"{chains[-1]} {diff_id}".encode()))
    return chains


def _fit_list(values: Sequence[str], key: str) -> str:
    """Comma-join as many leading values as fit in one label (containerd's 4096-byte limit)."""
    out: list[str] = []
    for value in values:
        candidate = ",".join([*out, value])
        if len(key) + len(candidate) > MAX_LABEL_BYTES:
            break
        out.append(value)
    return ",".join(out)


def layer_labels(
    ref: Reference,
    manifest_digest: str,
    layers: Sequence[Descriptor],
    position: int,
    chain_id: str,
    index_digest: str = "",
    load_order: str = "",
) -> dict[str, str]:
    """The labels a layer Prepare carries (CRI's and upstream SOCI's, as nerdctl sends them)."""
    layer = layers[position]
    rest = layers[position:]
    digests = _fit_list([d.digest for d in rest], CRI_IMAGE_LAYERS)
    count = len(digests.split(",")) if digests else 0
    labels = {
        TARGET_SNAPSHOT_REF: chain_id,
        CRI_IMAGE_REF: str(ref),
        CRI_LAYER_DIGEST: layer.digest,
        CRI_MANIFEST_DIGEST: manifest_digest,
        CRI_IMAGE_LAYERS: digests,
        TARGET_SIZE: str(layer.size),
        TARGET_IMAGE_LAYERS_SIZE: ",".join(str(d.size) for d in rest[:count]),
    }
    if index_digest:
        labels[TARGET_SOCI_INDEX_DIGEST] = index_digest
    if load_order:
        labels[LOAD_ORDER] = load_order
    return labels


def _distribution_label(ref: Reference) -> dict[str, str]:
    return {f"{DISTRIBUTION_SOURCE_PREFIX}{ref.domain}": ref.path}


async def resolve_image(
    registry: RegistryClient, ref: Reference, platform: Platform
) -> tuple[Descriptor, dict[str, bytes], Descriptor, Manifest]:
    """``(root descriptor, blobs by digest, manifest descriptor, manifest)`` for ``platform``."""
    data, media_type, digest = await registry.get_manifest(ref.path, ref.object)
    root = Descriptor(media_type, digest, len(data))
    blobs = {digest: data}
    if media_type in INDEX_MEDIA_TYPES:
        index = Index.unmarshal(data, f"image index {digest}")
        candidates = [
            d
            for d in index.manifests or ()
            if not d.artifact_type and (d.platform is None or matches_strict(platform, d.platform))
        ]
        if not candidates:
            raise NotFound(f"image {ref} has no manifest for platform {format_platform(platform)}")
        chosen = candidates[0]
        data, media_type, digest = await registry.get_manifest(ref.path, chosen.digest)
        blobs[digest] = data
        manifest_descriptor = Descriptor(media_type, digest, len(data), platform=chosen.platform)
    else:
        manifest_descriptor = root
    manifest = Manifest.unmarshal(data, f"image manifest {digest}")
    if not manifest.layers:
        raise FormatError(f"image manifest {digest} has no layers")
    return root, blobs, manifest_descriptor, manifest


def _diff_ids(config: bytes, digest: str, layers: int) -> list[str]:
    document = unmarshal_object(config, f"image config {digest}")
    rootfs = document.get("rootfs")
    diff_ids = rootfs.get("diff_ids") if isinstance(rootfs, dict) else None
    if not isinstance(diff_ids, list) or len(diff_ids) != layers:
        raise FormatError(f"image config {digest}: rootfs.diff_ids does not list one digest per layer")
    return [parse_digest(d) for d in diff_ids]


async def fetch_image(registry: RegistryClient, ref: Reference, platform: Platform | None = None) -> RemoteImage:
    """Step 1: the platform's manifest (``platform`` defaults to this machine's) and its config."""
    root, blobs, manifest_descriptor, manifest = await resolve_image(registry, ref, platform or default_platform())
    config_descriptor = manifest.config
    config = await registry.get_blob(ref.path, config_descriptor.digest, config_descriptor.size)
    diff_ids = _diff_ids(config, config_descriptor.digest, len(manifest.layers or ()))
    return RemoteImage(root, blobs, manifest_descriptor, manifest, config, diff_ids)


async def rpull(
    containerd: ContainerdClient,
    registry: RegistryClient,
    ref: Reference,
    *,
    image: RemoteImage | None = None,
    snapshotter: str = "soci",
    platform: Platform | None = None,
    index_digest: str = "",
    progress: ProgressCallback | None = None,
    load_order: str = "",
) -> PullResult:
    """Pull ``ref`` into containerd for ``snapshotter``, leaving the layers to it (see the module docstring).
    ``image``: step 1 already done by the caller (``platform`` is then not used)."""
    if image is None:
        image = await fetch_image(registry, ref, platform)
    root, blobs, manifest_descriptor, manifest = image.root, image.blobs, image.manifest_descriptor, image.manifest
    config_descriptor, config, diff_ids = manifest.config, image.config, image.diff_ids
    layers = list(manifest.layers or ())
    chains = chain_ids(diff_ids)
    source = _distribution_label(ref)
    result = PullResult(str(ref), root, manifest_descriptor.digest, config_descriptor.digest, chains[-1])

    async with containerd.lease():
        await containerd.write_content(config_descriptor.digest, config_descriptor.size, [config], source)
        manifest_labels = {f"{GC_REF_CONTENT_PREFIX}config": config_descriptor.digest}
        manifest_labels.update({f"{GC_REF_CONTENT_PREFIX}l.{i}": d.digest for i, d in enumerate(layers)})
        await containerd.write_content(
            manifest_descriptor.digest,
            manifest_descriptor.size,
            [blobs[manifest_descriptor.digest]],
            {**manifest_labels, **source},
        )
        if root.digest != manifest_descriptor.digest:
            index_labels = {f"{GC_REF_CONTENT_PREFIX}m.0": manifest_descriptor.digest, **source}
            await containerd.write_content(root.digest, root.size, [blobs[root.digest]], index_labels)

        for position, layer in enumerate(layers):
            start = time.monotonic()
            parent = chains[position - 1] if position else ""
            mode = await _pull_layer(
                containerd,
                registry,
                ref,
                snapshotter,
                manifest_descriptor.digest,
                layers,
                position,
                chains[position],
                parent,
                diff_ids[position],
                index_digest,
                load_order,
            )
            layer_result = LayerResult(
                position, layer.digest, layer.size, chains[position], mode, time.monotonic() - start
            )
            result.layers.append(layer_result)
            if progress is not None:
                progress(layer_result, len(layers))

        await containerd.update_content_labels(
            config_descriptor.digest, {f"{GC_REF_SNAPSHOT_PREFIX}{snapshotter}": chains[-1]}
        )
        await containerd.put_image(result.name, root.media_type, root.digest, root.size)
    return result


async def _pull_layer(
    containerd: ContainerdClient,
    registry: RegistryClient,
    ref: Reference,
    snapshotter: str,
    manifest_digest: str,
    layers: Sequence[Descriptor],
    position: int,
    chain_id: str,
    parent: str,
    diff_id: str,
    index_digest: str,
    load_order: str = "",
) -> str:
    if await containerd.stat_snapshot(snapshotter, chain_id) is not None:
        return MODE_EXISTS
    layer = layers[position]
    labels = layer_labels(ref, manifest_digest, layers, position, chain_id, index_digest, load_order)
    key = f"extract-{secrets.token_hex(8)} {chain_id}"
    try:
        mounts = await containerd.prepare_snapshot(snapshotter, key, parent, labels)
    except AlreadyExists:
        info = await containerd.stat_snapshot(snapshotter, chain_id)
        if info is not None and REMOTE in info.labels:
            return MODE_LAZY
        return MODE_SNAPSHOTTER_UNPACKED
    # The snapshotter deferred: fetch and unpack the layer the way containerd's own pull does.
    try:
        await containerd.write_content(
            layer.digest,
            layer.size,
            registry.open_blob_stream(ref.path, layer.digest, layer.size),
            _distribution_label(ref),
        )
        applied = await containerd.apply_layer(layer.media_type, layer.digest, layer.size, mounts)
        if applied != diff_id:
            raise DataLoss(f"layer {layer.digest}: unpacked content {applied} does not match diff ID {diff_id}")
        await containerd.update_content_labels(layer.digest, {UNCOMPRESSED: diff_id})
        try:
            await containerd.commit_snapshot(snapshotter, chain_id, key, {TARGET_SNAPSHOT_REF: chain_id})
        except AlreadyExists:
            await containerd.remove_snapshot(snapshotter, key)  # committed concurrently by another pull
    except BaseException:
        try:
            await containerd.remove_snapshot(snapshotter, key)
        except NotFound:
            pass
        except Exception as exc:  # the original error matters more; GC removes the leftover
            log.warning("removing snapshot %s after a failed unpack: %s", key, exc)
        raise
    return MODE_PULLED

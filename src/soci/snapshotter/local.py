"""Local snapshots: the snapshotter downloads a whole layer and unpacks it itself.

Used for layers the SOCI index has no zTOC for (and when a remote mount fails). The blob is streamed
to a temporary file (digest-verified on the way), then unpacked in a worker thread; the result must
hash to the layer's diff ID from the image config.
"""

from __future__ import annotations

import asyncio
import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from soci.errors import DataLoss, NotFound
from soci.formats import gojson
from soci.formats.digest import is_digest
from soci.formats.oci import Descriptor, Manifest
from soci.fs.unpack import ApplyResult, apply_layer_file
from soci.registry import RegistryClient, parse_reference
from soci.snapshotter.labels import LayerSource
from soci.snapshotter.resolver import RegistryResolver

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class _LayerInfo:
    descriptor: Descriptor
    diff_id: str
    """Expected sha256 of the uncompressed layer; empty if the config does not say."""


class LocalUnpacker:
    """Fetch-and-unpack for one layer at a time.

    Args:
        resolver: registry clients per domain.
        workdir: where blobs are staged while they download (same filesystem as the snapshots is best).
        opaque_xattr: ``trusted.overlay.opaque`` (or ``user.overlay.opaque`` with userxattr).
    """

    def __init__(self, resolver: RegistryResolver, workdir: Path, *, opaque_xattr: str) -> None:
        self._resolver = resolver
        self._workdir = workdir
        self._opaque_xattr = opaque_xattr
        self._layers: dict[tuple[str, str], _LayerInfo] = {}

    async def unpack(self, source: LayerSource, dest: Path) -> ApplyResult:
        """Unpack ``source``'s layer into the empty directory ``dest``.

        Raises:
            NotFound: the manifest, config or blob is gone.
            DataLoss: the blob or its uncompressed content does not match its digests.
            UnsupportedEntry: the layer's compression cannot be unpacked here (zstd).
        """
        reference = parse_reference(source.image_ref)
        client = self._resolver.client_for(source.image_ref)
        info = await self._layer_info(client, reference.path, source)
        self._workdir.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(dir=self._workdir, prefix="layer-")
        staged = Path(name)
        try:
            with os.fdopen(fd, "wb") as out:
                chunks = client.open_blob_stream(reference.path, info.descriptor.digest, info.descriptor.size)
                async for chunk in chunks:
                    await asyncio.to_thread(out.write, chunk)
            result = await asyncio.to_thread(
                apply_layer_file, staged, info.descriptor.media_type, dest, opaque_xattr=self._opaque_xattr
            )
        finally:
            staged.unlink(missing_ok=True)
        if info.diff_id and result.diff_id != info.diff_id:
            raise DataLoss(
                f"layer {source.layer_digest}: uncompressed digest {result.diff_id} "
                f"does not match diff ID {info.diff_id}"
            )
        return result

    async def _layer_info(self, client: RegistryClient, repo: str, source: LayerSource) -> _LayerInfo:
        key = (source.manifest_digest, source.layer_digest)
        cached = self._layers.get(key)
        if cached is not None:
            return cached
        data, _, _ = await client.get_manifest(repo, source.manifest_digest)
        manifest = Manifest.unmarshal(data, f"image manifest {source.manifest_digest}")
        layers = list(manifest.layers or ())
        position = next((i for i, d in enumerate(layers) if d.digest == source.layer_digest), None)
        if position is None:
            raise NotFound(f"layer {source.layer_digest} is not in image manifest {source.manifest_digest}")
        config = await client.get_blob(repo, manifest.config.digest, manifest.config.size)
        diff_ids = _diff_ids(config, manifest.config.digest)
        diff_id = diff_ids[position] if len(diff_ids) == len(layers) else ""
        info = _LayerInfo(layers[position], diff_id)
        self._layers[key] = info
        return info


def _diff_ids(config: bytes, digest: str) -> list[str]:
    document = gojson.loads(config, f"image config {digest}")
    rootfs = document.get("rootfs") if isinstance(document, dict) else None
    diff_ids = rootfs.get("diff_ids") if isinstance(rootfs, dict) else None
    if not isinstance(diff_ids, list) or not all(isinstance(d, str) and is_digest(d) for d in diff_ids):
        log.warning("image config %s has no usable rootfs.diff_ids; layers are not checked against them", digest)
        return []
    return diff_ids

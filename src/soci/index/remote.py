"""Build SOCI artifacts for images that live in a registry, without containerd and without a local copy.

The index builder is synchronous and runs in worker threads; ``RegistrySource`` lets it read registry blobs
through the asyncio registry client running on the caller's event loop. Each layer is streamed once into the
one-pass zTOC builder; nothing but the SOCI artifacts is stored locally.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import BinaryIO

from soci.errors import NotFound
from soci.formats import soci_index as si
from soci.formats.oci import (
    INDEX_MEDIA_TYPES,
    MANIFEST_MEDIA_TYPES,
    MEDIA_TYPE_OCI_MANIFEST,
    Descriptor,
    Index,
    Manifest,
    Platform,
)
from soci.index.bridge import open_stream, run_on
from soci.index.build import BuildOptions, Reporter
from soci.index.convert import ConvertResult, convert_image
from soci.index.create import CreatedIndex, create_indexes
from soci.registry import RegistryClient
from soci.registry.reference import Reference
from soci.store import LocalStore


class RegistrySource:
    """Blobs and manifests of one repository, readable from worker threads."""

    def __init__(
        self,
        client: RegistryClient,
        repo: str,
        loop: asyncio.AbstractEventLoop,
        manifests: dict[str, bytes],
    ) -> None:
        self.client = client
        self.repo = repo
        self.loop = loop
        self.manifests = manifests

    def has_blob(self, digest: str) -> bool:
        return digest in self.manifests or bool(run_on(self.loop, self.client.blob_exists(self.repo, digest)))

    def read_blob(self, digest: str) -> bytes:
        if digest in self.manifests:
            return self.manifests[digest]
        return bytes(run_on(self.loop, self.client.get_blob(self.repo, digest)))

    def open_blob(self, digest: str) -> BinaryIO:
        return open_stream(self.loop, lambda: self.client.open_blob_stream(self.repo, digest))


async def fetch_image(client: RegistryClient, ref: Reference) -> tuple[Descriptor, dict[str, bytes]]:
    """The image ``ref`` names and every manifest it lists (by digest), fetched concurrently."""
    data, media_type, digest = await client.get_manifest(ref.path, ref.object)
    manifests = {digest: data}
    if media_type in INDEX_MEDIA_TYPES:
        listed = Index.unmarshal(data, f"image index {ref}").manifests or ()
        children = [d for d in listed if d.media_type in MANIFEST_MEDIA_TYPES]
        fetched = await asyncio.gather(*(client.get_manifest(ref.path, d.digest) for d in children))
        for child_data, _, child_digest in fetched:
            manifests[child_digest] = child_data
    return Descriptor(media_type, digest, len(data)), manifests


async def create_remote(
    client: RegistryClient,
    ref: Reference,
    store: LocalStore,
    options: BuildOptions,
    *,
    platforms: Sequence[Platform] = (),
    all_platforms: bool = False,
    reporter: Reporter | None = None,
) -> list[CreatedIndex]:
    """``soci create --remote``: v1 indexes (with ``subject``) for a registry image, into the local store."""
    target, manifests = await fetch_image(client, ref)
    source = RegistrySource(client, ref.path, asyncio.get_running_loop(), manifests)
    return await asyncio.to_thread(
        create_indexes, store, source, target, options, platforms=platforms, all_platforms=all_platforms,
        reporter=reporter, image_ref=str(ref),
    )  # fmt: skip


async def convert_remote(
    src_client: RegistryClient,
    src: Reference,
    dst_client: RegistryClient,
    dst: Reference,
    store: LocalStore,
    options: BuildOptions,
    *,
    platforms: Sequence[Platform] = (),
    all_platforms: bool = False,
    reporter: Reporter | None = None,
    max_concurrent_uploads: int = 3,
) -> ConvertResult:
    """``soci convert --remote``: a SOCI-enabled (v2) copy of ``src`` pushed as ``dst``."""
    target, manifests = await fetch_image(src_client, src)
    source = RegistrySource(src_client, src.path, asyncio.get_running_loop(), manifests)
    result = await asyncio.to_thread(
        convert_image,
        store,
        source,
        target,
        options=options,
        platforms=platforms,
        all_platforms=all_platforms,
        reporter=reporter,
        image_ref=str(dst),
    )
    await push_image(src_client, src, dst_client, dst, result, manifests, max_concurrent_uploads)
    return result


async def push_image(
    src_client: RegistryClient,
    src: Reference,
    dst_client: RegistryClient,
    dst: Reference,
    result: ConvertResult,
    source_manifests: dict[str, bytes],
    max_concurrent_uploads: int,
) -> None:
    """Push a converted image: blobs first (layers mounted when the registry is shared), then manifests."""
    same_registry = src_client.domain == dst_client.domain
    limit = asyncio.Semaphore(max(1, max_concurrent_uploads))
    new = result.new_blobs
    top = Index.unmarshal(new[result.index_descriptor.digest], "converted image index")
    image_manifests: list[tuple[Descriptor, bytes]] = []
    soci_indexes: list[tuple[Descriptor, bytes]] = []
    for desc in top.manifests or ():
        data = new.get(desc.digest) or source_manifests.get(desc.digest)
        if data is None:
            raise NotFound(f"manifest {desc.digest} of the converted image is neither new nor in {src}")
        (soci_indexes if desc.artifact_type == si.ARTIFACT_TYPE_V2 else image_manifests).append((desc, data))

    async def copy_blob(desc: Descriptor) -> None:
        async with limit:
            if desc.digest in new:
                await dst_client.push_blob(dst.path, desc.digest, new[desc.digest], desc.size)
                return

            await dst_client.push_blob(
                dst.path,
                desc.digest,
                src_client.open_blob_stream(src.path, desc.digest, desc.size),
                desc.size,
                mount_from=src.path if same_registry else None,
            )

    blobs: dict[str, Descriptor] = {}
    for _, data in image_manifests + soci_indexes:
        manifest = Manifest.unmarshal(data)
        for d in (manifest.config, *(manifest.layers or ())):
            blobs.setdefault(d.digest, d)
    await asyncio.gather(*(copy_blob(d) for d in blobs.values()))
    for desc, data in soci_indexes + image_manifests:
        await dst_client.put_manifest(dst.path, desc.digest, data, desc.media_type or MEDIA_TYPE_OCI_MANIFEST)
    top_data = new[result.index_descriptor.digest]
    await dst_client.put_manifest(dst.path, dst.object, top_data, result.index_descriptor.media_type)


async def push_index(
    client: RegistryClient,
    ref: Reference,
    store: LocalStore,
    index_digest: str,
    *,
    existing_index: str = "warn",
    max_concurrent_uploads: int = 3,
    reporter: Reporter | None = None,
) -> bool:
    """``soci push``: a v1 index with its zTOCs and config, blobs before the manifest; False if skipped.

    The registry's referrers API indexes the ``subject`` by itself; where it is missing, the client-maintained
    ``sha256-<hex>`` fallback index gets the new index added.
    """
    index = si.parse_index(store.content.read_blob(index_digest), f"SOCI index {index_digest}")
    if index.digest != index_digest:
        raise NotFound(f"SOCI index {index_digest} in the local store is not in canonical form")
    subject = index.manifest.subject
    if index.version != "v1" or subject is None:
        raise NotFound(f"SOCI index {index_digest} is a v2 index; v2 indexes are pushed with their image by convert")
    if existing_index != "allow":
        existing = await client.referrers(ref.path, subject.digest, si.ARTIFACT_TYPE_V1)
        others = [d for d in existing if d.get("digest") != index_digest]
        if others:
            msg = f"image {subject.digest} already has SOCI index(es) {', '.join(str(d.get('digest')) for d in others)}"
            if existing_index == "skip":
                if reporter is not None:
                    reporter.message(f"{msg}; skipping")
                return False
            if reporter is not None:
                reporter.message(f"warning: {msg}; pushing anyway")
    limit = asyncio.Semaphore(max(1, max_concurrent_uploads))

    async def push(desc: Descriptor) -> None:
        async with limit:
            await client.push_blob(ref.path, desc.digest, store.content.path(desc.digest), desc.size)

    await asyncio.gather(*(push(d) for d in (index.manifest.config, *(index.manifest.layers or ()))))
    await client.put_manifest(ref.path, index.digest, index.data, MEDIA_TYPE_OCI_MANIFEST)
    if not await client.referrers_api_supported(ref.path, subject.digest):
        await client.add_referrer(
            ref.path,
            subject.digest,
            {
                "mediaType": MEDIA_TYPE_OCI_MANIFEST,
                "digest": index.digest,
                "size": len(index.data),
                "artifactType": si.ARTIFACT_TYPE_V1,
                "annotations": dict(index.manifest.annotations or {}),
            },
        )
    if reporter is not None:
        reporter.message(f"pushed SOCI index {index.digest} for {ref.name}@{subject.digest}")
    return True

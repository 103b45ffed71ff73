"""SOCI builds on images in containerd's content store: ``soci create REF`` and ``soci convert SRC DST``.

The image (pulled with ``ctr``, nerdctl or CRI) is read through containerd's content API; SOCI artifacts go
to the local SOCI store under ``--root``, and ``convert`` also writes the new manifests, image index and SOCI
artifacts into containerd's content store, with the garbage-collection labels upstream sets, and records the
converted image under DST so that ``ctr push`` or ``nerdctl push`` can publish it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import BinaryIO

from soci.containerd.client import ContainerdClient
from soci.errors import NotFound
from soci.formats import soci_index as si
from soci.formats.labels import GC_REF_CONTENT_PREFIX
from soci.formats.oci import INDEX_MEDIA_TYPES, Descriptor, Index, Manifest, Platform
from soci.index.bridge import open_stream, run_on
from soci.index.build import BuildOptions, Reporter
from soci.index.convert import ConvertResult, convert_image
from soci.index.create import CreatedIndex, create_indexes
from soci.store import LocalStore


class ContainerdSource:
    """Blobs of containerd's content store, readable from worker threads."""

    def __init__(self, client: ContainerdClient, loop: asyncio.AbstractEventLoop) -> None:
        self.client = client
        self.loop = loop

    def has_blob(self, digest: str) -> bool:
        return run_on(self.loop, self.client.content_info(digest)) is not None

    def read_blob(self, digest: str) -> bytes:
        return bytes(run_on(self.loop, self.client.read_content(digest)))

    def open_blob(self, digest: str) -> BinaryIO:
        return open_stream(self.loop, lambda: self.client.read_content_stream(digest))


async def image_target(client: ContainerdClient, name: str) -> Descriptor:
    image = await client.get_image(name)
    if image is None:
        raise NotFound(f"image {name!r} not found in containerd namespace {client.namespace!r}")
    return Descriptor(image.target.media_type, image.target.digest, image.target.size)


async def create_in_containerd(
    client: ContainerdClient,
    name: str,
    store: LocalStore,
    options: BuildOptions,
    *,
    platforms: Sequence[Platform] = (),
    all_platforms: bool = False,
    reporter: Reporter | None = None,
) -> list[CreatedIndex]:
    """``soci create REF``: v1 indexes of an image containerd has, into the local SOCI store."""
    target = await image_target(client, name)
    source = ContainerdSource(client, asyncio.get_running_loop())
    return await asyncio.to_thread(
        create_indexes, store, source, target, options, platforms=platforms, all_platforms=all_platforms,
        reporter=reporter, image_ref=name,
    )  # fmt: skip


def gc_labels(data: bytes, media_type: str) -> dict[str, str]:
    """The ``containerd.io/gc.ref.content.*`` labels upstream puts on what convert writes."""
    if media_type in INDEX_MEDIA_TYPES:
        index = Index.unmarshal(data)
        return {f"{GC_REF_CONTENT_PREFIX}m.{i}": d.digest for i, d in enumerate(index.manifests or ())}
    manifest = Manifest.unmarshal(data)
    labels = {f"{GC_REF_CONTENT_PREFIX}config": manifest.config.digest}
    prefix = "ztoc" if manifest.config.media_type in (si.ARTIFACT_TYPE_V1, si.ARTIFACT_TYPE_V2) else "l"
    labels.update({f"{GC_REF_CONTENT_PREFIX}{prefix}.{i}": d.digest for i, d in enumerate(manifest.layers or ())})
    return labels


async def convert_in_containerd(
    client: ContainerdClient,
    src: str,
    dst: str,
    store: LocalStore,
    options: BuildOptions,
    *,
    platforms: Sequence[Platform] = (),
    all_platforms: bool = False,
    reporter: Reporter | None = None,
) -> ConvertResult:
    """``soci convert SRC DST``: a SOCI-enabled (v2) image DST in containerd, sharing SRC's layers."""
    target = await image_target(client, src)
    source = ContainerdSource(client, asyncio.get_running_loop())
    result = await asyncio.to_thread(
        convert_image, store, source, target, options=options, platforms=platforms, all_platforms=all_platforms,
        reporter=reporter, image_ref=dst,
    )  # fmt: skip
    top = result.index_descriptor
    listed = Index.unmarshal(result.new_blobs[top.digest]).manifests or ()
    media_types = {top.digest: top.media_type, **{d.digest: d.media_type for d in listed}}
    async with client.lease():
        for digest, data in result.new_blobs.items():
            media_type = media_types.get(digest, "")  # zTOCs, configs and prefetch artifacts are plain blobs
            labels = gc_labels(data, media_type) if media_type else {}
            await client.write_content(digest, len(data), [data], labels)
        await client.put_image(dst, top.media_type, top.digest, top.size)
    return result

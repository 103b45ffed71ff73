"""Load order documents in a registry: an OCI artifact manifest per document, ``subject`` = the image manifest.

The manifest's ``artifactType`` is ``ARTIFACT_TYPE_LOAD_ORDER``, its config the empty descriptor, its first
layer the document, its second (when the document has any) the layers' zTOC metadata, which a mount needs before
the rest (``formats.load_order.split_ztoc_metadata``); layers of other media types after the document are
ignored, so that later additions do not break this reader. It carries the workload name as an annotation, so the
referrers list (API, or the ``sha256-<hex>`` tag fallback) answers "which documents does this image have"
without fetching any. The image, its SOCI index and their digests are never touched. Pushing a name replaces
the image's previous document of that name.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from soci.errors import FormatError, NotFound, SociError
from soci.formats import load_order as lo
from soci.formats.digest import sha256_digest
from soci.formats.oci import MEDIA_TYPE_OCI_EMPTY, MEDIA_TYPE_OCI_MANIFEST, Descriptor, Manifest
from soci.formats.soci_index import EMPTY_CONFIG, EMPTY_CONFIG_DIGEST
from soci.registry import RegistryClient

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class StoredLoadOrder:
    """One document's artifact as the referrers list describes it."""

    name: str
    manifest_digest: str
    size: int
    annotations: dict[str, str]


@dataclass(frozen=True, slots=True)
class LoadOrderArtifact:
    """A document's artifact manifest, read: where its document and its zTOC metadata are."""

    name: str
    manifest_digest: str
    document: Descriptor
    ztoc_metadata: Descriptor | None
    """None: the document carries its metadata inline, or has none."""


def artifact_manifest(document: bytes, name: str, subject: Descriptor, ztoc_metadata: bytes = b"") -> Manifest:
    layers = [Descriptor(lo.MEDIA_TYPE_LOAD_ORDER, sha256_digest(document), len(document))]
    if ztoc_metadata:
        layers.append(Descriptor(lo.MEDIA_TYPE_ZTOC_METADATA, sha256_digest(ztoc_metadata), len(ztoc_metadata)))
    return Manifest(
        schema_version=2,
        media_type=MEDIA_TYPE_OCI_MANIFEST,
        artifact_type=lo.ARTIFACT_TYPE_LOAD_ORDER,
        config=Descriptor(MEDIA_TYPE_OCI_EMPTY, EMPTY_CONFIG_DIGEST, len(EMPTY_CONFIG)),
        layers=tuple(layers),
        subject=Descriptor(subject.media_type, subject.digest, subject.size),
        annotations={lo.ANNOTATION_NAME: name},
    )


async def list_load_orders(
    client: RegistryClient, repo: str, subject_digest: str, name: str = ""
) -> list[StoredLoadOrder]:
    found = []
    for d in await client.referrers(repo, subject_digest, lo.ARTIFACT_TYPE_LOAD_ORDER):
        annotations = {str(k): str(v) for k, v in (d.get("annotations") or {}).items()}
        stored = StoredLoadOrder(
            annotations.get(lo.ANNOTATION_NAME, ""), str(d.get("digest")), int(d.get("size", 0)), annotations
        )
        if not name or stored.name == name:
            found.append(stored)
    return found


async def push_load_order(client: RegistryClient, repo: str, subject: Descriptor, document: lo.LoadOrder) -> str:
    """Push ``document`` for the image manifest ``subject``; returns the artifact manifest's digest."""
    bare, metadata = lo.split_ztoc_metadata(document)
    data = lo.marshal(bare)
    previous = await list_load_orders(client, repo, subject.digest, document.name)
    manifest = artifact_manifest(data, document.name, subject, metadata)
    await client.push_blob(repo, EMPTY_CONFIG_DIGEST, EMPTY_CONFIG, len(EMPTY_CONFIG))
    for layer, blob in zip(manifest.layers or (), (data, metadata), strict=False):
        await client.push_blob(repo, layer.digest, blob, len(blob))
    body = manifest.marshal()
    digest = await client.put_manifest(repo, sha256_digest(body), body, MEDIA_TYPE_OCI_MANIFEST)
    if not await client.referrers_api_supported(repo, subject.digest):
        entry: dict[str, Any] = {
            "mediaType": MEDIA_TYPE_OCI_MANIFEST,
            "digest": digest,
            "size": len(body),
            "artifactType": lo.ARTIFACT_TYPE_LOAD_ORDER,
            "annotations": dict(manifest.annotations or {}),
        }
        await client.add_referrer(repo, subject.digest, entry)
    for old in previous:
        if old.manifest_digest != digest:
            await _remove(client, repo, subject.digest, old.manifest_digest)
    return digest


async def fetch_load_order(client: RegistryClient, repo: str, subject_digest: str, name: str) -> lo.LoadOrder:
    """The image's document called ``name``, with its zTOC metadata (inline, as a document file has it).

    Raises:
        NotFound: the image has none of that name.
        FormatError: the artifact or the document is malformed, too large, or named otherwise.
    """
    artifact = await find_load_order(client, repo, subject_digest, name)
    metadata = await fetch_ztoc_metadata(client, repo, artifact)
    return await fetch_document(client, repo, artifact, metadata)


async def find_load_order(client: RegistryClient, repo: str, subject_digest: str, name: str) -> LoadOrderArtifact:
    """The artifact of the image's document called ``name`` (its manifest fetched and checked).

    Raises:
        NotFound: the image has none of that name.
        FormatError: the artifact manifest is malformed, or its document too large.
    """
    found = await list_load_orders(client, repo, subject_digest, name)
    if not found:
        raise NotFound(f"image {subject_digest} has no load order named {name!r}")
    stored = found[-1]
    data, _, _ = await client.get_manifest(repo, stored.manifest_digest, accept=(MEDIA_TYPE_OCI_MANIFEST,))
    manifest = Manifest.unmarshal(data, f"load order artifact {stored.manifest_digest}")
    layers = manifest.layers or ()
    kinds = [layer.media_type for layer in layers]
    if (
        not kinds
        or kinds[0] != lo.MEDIA_TYPE_LOAD_ORDER
        or kinds.count(lo.MEDIA_TYPE_LOAD_ORDER) > 1
        or kinds.count(lo.MEDIA_TYPE_ZTOC_METADATA) > 1
    ):
        raise FormatError(f"load order artifact {stored.manifest_digest} must have one {lo.MEDIA_TYPE_LOAD_ORDER} "
                          f"layer first, and at most one {lo.MEDIA_TYPE_ZTOC_METADATA} layer")  # fmt: skip
    metadata = next((layer for layer in layers if layer.media_type == lo.MEDIA_TYPE_ZTOC_METADATA), None)
    for layer in (layers[0], metadata):
        if layer is not None and layer.size > lo.MAX_DOCUMENT_BYTES:
            raise FormatError(f"load order {name!r}: layer {layer.digest} is {layer.size} bytes, over the limit of "
                              f"{lo.MAX_DOCUMENT_BYTES}")  # fmt: skip
    return LoadOrderArtifact(name, stored.manifest_digest, layers[0], metadata)


async def fetch_ztoc_metadata(client: RegistryClient, repo: str, artifact: LoadOrderArtifact) -> dict[str, bytes]:
    """zTOC digest -> compressed zTOC metadata from the artifact's metadata layer; empty when it has none (its
    document may still carry metadata inline)."""
    desc = artifact.ztoc_metadata
    if desc is None:
        return {}
    data = await client.get_blob(repo, desc.digest, desc.size)
    return lo.parse_ztoc_metadata(data, f"load order {artifact.name!r}: zTOC metadata")


async def fetch_document(
    client: RegistryClient, repo: str, artifact: LoadOrderArtifact, ztoc_metadata: Mapping[str, bytes]
) -> lo.LoadOrder:
    """The artifact's document, with ``ztoc_metadata`` (``fetch_ztoc_metadata``'s) put into its layers."""
    desc = artifact.document
    data = await client.get_blob(repo, desc.digest, desc.size)
    what = f"load order {artifact.name!r}"
    # a document with fetch points is megabytes of JSON and base64 (0.1 s to check and decode): off the event
    # loop, which meanwhile answers the pull's next Prepare
    document = await asyncio.to_thread(lo.parse, data, what)
    if document.name != artifact.name:
        raise FormatError(
            f"load order artifact {artifact.manifest_digest} is called {artifact.name!r} but holds {document.name!r}"
        )
    return lo.join_ztoc_metadata(document, ztoc_metadata, what)


async def remove_load_orders(client: RegistryClient, repo: str, subject_digest: str, name: str) -> list[str]:
    """Remove the image's documents called ``name``; returns the artifact digests removed."""
    removed = []
    for stored in await list_load_orders(client, repo, subject_digest, name):
        await _remove(client, repo, subject_digest, stored.manifest_digest)
        removed.append(stored.manifest_digest)
    return removed


async def _remove(client: RegistryClient, repo: str, subject_digest: str, digest: str) -> None:
    if not await client.referrers_api_supported(repo, subject_digest):
        await client.remove_referrer(repo, subject_digest, digest)
    try:
        await client.delete_manifest(repo, digest)
    except SociError as exc:  # registries may forbid deletes; the document is no longer listed either way
        log.warning("could not delete load order artifact %s: %s", digest, exc)

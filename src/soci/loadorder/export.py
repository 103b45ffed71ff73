"""A load order document as upstream SOCI prefetch artifacts (one per layer: span ranges for its zTOC),
for users of upstream's snapshotter; the order and sub-file precision are lost, the spans are the same."""

from __future__ import annotations

from dataclasses import replace

from soci.formats.digest import sha256_digest
from soci.formats.load_order import LayerLoadOrder, LoadOrder
from soci.formats.oci import MEDIA_TYPE_OCI_MANIFEST
from soci.formats.soci_index import PrefetchSpan, marshal_prefetch, merge_span_ranges, prefetch_descriptor
from soci.formats.zinfo import zinfo_from_blob
from soci.fs.ztoc_reader import load_ztoc
from soci.index.discover import discover_index, fetch_index
from soci.loadorder.replay import plan_spans
from soci.registry import RegistryClient


def prefetch_spans(entry: LayerLoadOrder, ztoc: bytes) -> list[PrefetchSpan]:
    """Upstream prefetch ranges (sorted, merged) covering the layer's segments under ``ztoc``."""
    info, tree = load_ztoc(ztoc)
    zinfo = zinfo_from_blob(info.compression_algorithm, info.checkpoints)
    plan = plan_spans(tree, zinfo.span_of, entry.segments)
    return merge_span_ranges(plan.runs)


async def push_prefetch_index(
    client: RegistryClient, repo: str, manifest_digest: str, document: LoadOrder, *, index_digest: str = ""
) -> tuple[str, dict[str, list[PrefetchSpan]]]:
    """Push a copy of the image's SOCI index with the document's spans as prefetch artifacts, by digest only
    (no subject, no tag: the image and its own index are untouched); returns its digest and the spans per
    layer. Pull with that digest (``rpull --soci-index-digest``) and ``[prefetch] enable = true`` to use it."""
    found = await discover_index(client, repo, manifest_digest, explicit_digest=index_digest, v1_enabled=True)
    index = await fetch_index(client, repo, found.index_digest)
    blobs = list(index.ztocs())
    spans: dict[str, list[PrefetchSpan]] = {}
    for entry in document.layers:
        ztoc = index.ztoc_for_layer(entry.digest)
        if ztoc is None or not entry.segments:
            continue
        ranges = prefetch_spans(entry, await client.get_blob(repo, ztoc.digest, ztoc.size))
        if not ranges:
            continue
        data = marshal_prefetch(ranges)
        digest = sha256_digest(data)
        await client.push_blob(repo, digest, data, len(data))
        blobs.append(prefetch_descriptor(digest, len(data), entry.digest))
        spans[entry.digest] = ranges
    manifest = replace(index.manifest, layers=tuple(blobs), subject=None)
    body = manifest.marshal()
    return await client.put_manifest(repo, sha256_digest(body), body, MEDIA_TYPE_OCI_MANIFEST), spans

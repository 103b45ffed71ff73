"""Fetch points for a document (record time): per run of recorded segments, the deflate block boundaries around
it, so a replay can fetch the bytes the run needs instead of the whole spans holding it.

Everything is computed from spans verified against the layer's zTOC: each run's spans are fetched in one range
request, checked against their span digests, and inflated once while every block boundary is noted. The last
boundary at or before the run's start becomes the fetch point's checkpoint (its 32 KiB window is the output
just before it); the first boundary at or after the run's end closes the range. The blob bytes in between and
their output are hashed into the fetch point, and the replay checks both before any byte is served.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace

from soci.codec.zran import BlockBoundary, block_boundaries
from soci.errors import FormatError
from soci.formats.load_order import (
    MAX_DOCUMENT_BYTES,
    MAX_FETCH_POINT_BYTES,
    FetchPoint,
    LayerLoadOrder,
    LoadOrder,
    Segment,
    encode_ztoc_metadata,
    marshal,
)
from soci.formats.oci import Manifest
from soci.formats.zinfo import WINDOW_SIZE, GzipZinfo, zinfo_from_blob
from soci.fs.tree import LayerTree
from soci.fs.ztoc_reader import load_ztoc, ztoc_without_windows
from soci.index.discover import discover_index, fetch_index
from soci.index.extract import check_span_digests
from soci.loadorder.replay import segment_ranges
from soci.registry import RegistryClient

log = logging.getLogger(__name__)

MERGE_GAP = 64 << 10
"""Runs closer than this (uncompressed) share one fetch point: the bytes between cost less than a second window
and request."""

LEAD = 128 << 10
"""Each segment's point starts this far (uncompressed, within its file) before the first byte recorded. A replayed
start does not fault in exactly the pages its recording did: the kernel reads around a faulting page of a mapped
file, from half its readahead window before it, and which pages fault depends on what is cached by then. On the
big workload, 7 reads at replay began 7 to 109 KiB before a point and each loaded a whole span (11 MB, one after
another at the end of the start); this lead covers them all for 3.1 MB more in points (48.3 -> 51.4 MB, with 279
instead of 311 points, since more runs merge)."""

ReadAt = Callable[[int, int], Awaitable[bytes]]
"""``(offset, length) -> exactly length bytes`` of the layer blob."""


def runs_of(
    tree: LayerTree, segments: Sequence[Segment], *, gap: int = MERGE_GAP, lead: int = LEAD
) -> list[tuple[int, int, int]]:
    """``(start, end, first time_ms)`` uncompressed ranges the segments need (tar headers included), each
    starting ``lead`` bytes earlier in its file, merged where they are less than ``gap`` apart; sorted by offset."""
    ranges: list[tuple[int, int, int]] = []
    for segment in segments:
        ahead = min(lead, segment.offset)
        padded = replace(segment, offset=segment.offset - ahead, length=segment.length + ahead)
        for start, end in segment_ranges(tree, padded) or ():
            ranges.append((start, end, segment.time_ms))
    ranges.sort()
    runs: list[list[int]] = []
    for start, end, when in ranges:
        if runs and start <= runs[-1][1] + gap:
            runs[-1][1] = max(runs[-1][1], end)
            runs[-1][2] = min(runs[-1][2], when)
        else:
            runs.append([start, end, when])
    return [(a, b, t) for a, b, t in runs]


async def layer_fetch_points(
    tree: LayerTree,
    zinfo: GzipZinfo,
    span_digests: Sequence[str],
    compressed_size: int,
    segments: Sequence[Segment],
    read_at: ReadAt,
    *,
    lead: int = LEAD,
) -> tuple[FetchPoint, ...]:
    """The fetch points of one gzip layer's segments (each from ``lead`` bytes before it), in first-access order.

    Raises:
        SpanDigestMismatch: a span read from the blob does not match the zTOC.
    """
    points: list[FetchPoint] = []
    loaded: tuple[int, int, bytes, bytearray, list[BlockBoundary]] | None = None
    for start, end, when in runs_of(tree, segments, lead=lead):
        first, last = zinfo.span_of(start), zinfo.span_of(end - 1)
        if loaded is None or loaded[:2] != (first, last):
            cstart = zinfo.start_compressed_offset(first)
            data = await read_at(cstart, zinfo.end_compressed_offset(last, compressed_size) - cstart)
            check_span_digests(zinfo, span_digests, compressed_size, data, first, last)
            out, bounds = await asyncio.to_thread(block_boundaries, zinfo, first, data)
            loaded = (first, last, data, out, bounds)
        point = _point(zinfo, loaded[0], loaded[2], loaded[3], loaded[4], start, end, when)
        if point is not None:
            points.append(point)
    points.sort(key=lambda p: (p.time_ms, p.uncompressed_offset))
    return tuple(points)


def _point(zinfo: GzipZinfo, span: int, data: bytes, out: bytearray, bounds: list[BlockBoundary], start: int,
           end: int, when: int) -> FetchPoint | None:  # fmt: skip
    before = [b for b in bounds if b.uncompressed_offset <= start and not b.end]
    after = [b for b in bounds if b.uncompressed_offset >= end]
    if not before or not after:
        return None  # the data ends first (another gzip member follows): whole spans serve this run
    b0, b1 = before[-1], after[0]
    if b1.uncompressed_offset - b0.uncompressed_offset > MAX_FETCH_POINT_BYTES:
        return None
    ubase = zinfo.start_uncompressed_offset(span) - WINDOW_SIZE  # out[0] is this uncompressed offset
    cbase = zinfo.start_compressed_offset(span)
    window = bytes(out[b0.uncompressed_offset - ubase - WINDOW_SIZE : b0.uncompressed_offset - ubase])
    compressed = memoryview(data)[b0.first_byte - cbase : b1.compressed_offset - cbase]
    uncompressed = memoryview(out)[b0.uncompressed_offset - ubase : b1.uncompressed_offset - ubase]
    return FetchPoint(
        b0.compressed_offset, b0.bits, b0.uncompressed_offset, window, b1.compressed_offset, b1.uncompressed_offset,
        "sha256:" + hashlib.sha256(compressed).hexdigest(), "sha256:" + hashlib.sha256(uncompressed).hexdigest(), when,
    )  # fmt: skip


async def add_fetch_points(
    client: RegistryClient,
    repo: str,
    manifest_digest: str,
    manifest: Manifest,
    document: LoadOrder,
    *,
    index_digest: str = "",
    ztoc_metadata: bool = True,
) -> LoadOrder:
    """``document`` with fetch points for every gzip layer the image's SOCI index has a zTOC for (``manifest``:
    the image manifest ``manifest_digest``, which the caller has resolved).

    ``ztoc_metadata``: also give every layer with a zTOC (an entry without segments for a layer the workload did
    not read) its zTOC without windows, so the daemon mounts it without waiting for the zTOC. Metadata that
    would take the document over its size limit is left out, the largest first.
    """
    found = await discover_index(
        client, repo, manifest_digest, explicit_digest=index_digest, v1_enabled=True, manifest=manifest
    )
    index = await fetch_index(client, repo, found.index_digest)
    entries = list(document.layers)
    if ztoc_metadata:
        listed = {entry.digest for entry in entries}
        image_layers = [d.digest for d in manifest.layers or ()]
        position = {digest: i for i, digest in enumerate(image_layers)}
        entries += [LayerLoadOrder(d, ()) for d in image_layers if d not in listed and index.ztoc_for_layer(d)]
        entries.sort(key=lambda entry: position.get(entry.digest, len(position)))
    layers: list[LayerLoadOrder] = []
    for entry in entries:
        ztoc = index.ztoc_for_layer(entry.digest)
        if ztoc is None or not (entry.segments or ztoc_metadata):
            layers.append(entry)
            continue
        ztoc_bytes = await client.get_blob(repo, ztoc.digest, ztoc.size)
        if ztoc_metadata:
            if entry.ztoc and entry.ztoc != ztoc.digest:  # span hints of another zTOC: the segments stand alone
                entry = replace(entry, segments=tuple(replace(s, spans=None) for s in entry.segments))
            windowless = await asyncio.to_thread(ztoc_without_windows, ztoc_bytes)
            packed = await asyncio.to_thread(encode_ztoc_metadata, windowless)
            entry = replace(entry, ztoc=ztoc.digest, ztoc_metadata=packed)
            log.info("layer %s: zTOC metadata %d bytes for a %d-byte zTOC", entry.digest, len(packed), len(ztoc_bytes))
        if not entry.segments:
            layers.append(entry)
            continue
        info, tree = load_ztoc(ztoc_bytes)
        zinfo = zinfo_from_blob(info.compression_algorithm, info.checkpoints)
        if not isinstance(zinfo, GzipZinfo):
            layers.append(entry)  # an uncompressed layer: spans are already exact byte ranges
            continue

        async def read_at(offset: int, length: int, digest: str = entry.digest) -> bytes:
            return await client.read_blob_range(repo, digest, offset, length)

        points = await layer_fetch_points(tree, zinfo, info.span_digests, info.compressed_archive_size,
                                          entry.segments, read_at)  # fmt: skip
        log.info("layer %s: %d fetch points for %d segments", entry.digest, len(points), len(entry.segments))
        layers.append(replace(entry, fetch_points=points))
    return _within_size_limit(replace(document, layers=tuple(layers)))


def _within_size_limit(document: LoadOrder) -> LoadOrder:
    """``document`` without the largest zTOC metadata until it fits ``MAX_DOCUMENT_BYTES`` (points stay)."""
    while True:
        try:
            marshal(document)
            return document
        except FormatError:
            sizes = [(len(entry.ztoc_metadata), i) for i, entry in enumerate(document.layers) if entry.ztoc_metadata]
            if not sizes:
                raise
            _, i = max(sizes)
            dropped = document.layers[i]
            log.warning("layer %s: zTOC metadata (%d bytes) left out: the document would be over %d bytes",
                        dropped.digest, len(dropped.ztoc_metadata), MAX_DOCUMENT_BYTES)  # fmt: skip
            layers = list(document.layers)
            layers[i] = replace(dropped, ztoc_metadata=b"")
            document = replace(document, layers=tuple(layers))

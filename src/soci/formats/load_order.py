"""Load order documents (LOD): which file bytes a workload reads first, per layer, in first-access order.

This project's own artifact (not an upstream SOCI format; soci-format.md §8 describes the idea). One
document per workload, stored next to the image as an OCI artifact whose subject is the image manifest.

Shape (version "1"; keys sorted, no whitespace, UTF-8 — the canonical bytes ``marshal`` writes)::

    {"annotations": {"<key>": "<value>", ...},
     "layers": [{"digest": "sha256:<layer>",
                 "segments": [{"length": L, "offset": O, "path": "usr/lib/x.so", "spans": [S, E], "time_ms": T}, ...],
                 "ztoc": "sha256:<zTOC the span hints refer to>",
                 "fetch_points": [{"bits": B, "compressed_end": CE, "compressed_offset": C, "digest": "sha256:..",
                                   "time_ms": T, "uncompressed_digest": "sha256:..", "uncompressed_end": UE,
                                   "uncompressed_offset": U, "window": "<base64 of the zlib-compressed 32 KiB>"},
                                  ...],
                 "ztoc_metadata": "<base64 of the zlib-compressed zTOC, its checkpoint windows zeroed>"}, ...],
     "mediaType": "application/vnd.soci-py.load-order.v1+json",
     "name": "<workload>",
     "version": "1"}

A segment is a byte range of a regular file, as the layer's tar holds it (``path`` cleaned, relative, no
``.``/``..``). Segments are the truth: ``spans`` (inclusive span range) and ``ztoc`` are optional hints valid
only for that zTOC, so a document survives a zTOC rebuilt with another span size. ``time_ms`` is the first
access relative to the start of recording, in milliseconds; it is informative only and left out of
``identity_bytes`` (two recordings of a deterministic workload give the same identity bytes).

``fetch_points`` (optional, per layer) let a replay fetch only the bytes a run of segments needs instead of
whole spans: each is a deflate block boundary before the run, given as a checkpoint (compressed offset,
``bits``, 32 KiB window), with the sha256 of the blob bytes from there to the block boundary after the run
(``digest``) and of what they inflate to (``uncompressed_digest``). They are computed at record time from
spans verified against the zTOC, and describe the layer blob itself, so they hold for any zTOC of the layer.

``ztoc_metadata`` (optional, per layer, only with ``ztoc``) is that zTOC with the 32 KiB window of every
checkpoint zeroed, zlib-compressed: everything a mount needs (the table of contents, span table, span digests)
at a few percent of the zTOC's bytes, so a layer can be mounted, and its fetch points served, before its zTOC is
fetched. Only inflating a whole span needs the windows; the daemon then fetches the zTOC itself (verified
against the SOCI index) and checks that it equals this, windows aside.

In a registry the metadata travels beside the document, not in it (``split_ztoc_metadata``): the artifact's
second layer (``MEDIA_TYPE_ZTOC_METADATA``) holds every layer's ``ztoc_metadata`` as binary records, so that a
mount waits for that blob alone, not for the megabytes of fetch point windows, and without base64's third more.
A document file, and what ``soci load-order show`` prints, keep it inline; a document with it inline in the
registry (as pushed before the split) is read as it is.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import struct
import zlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Final

from soci.errors import FormatError
from soci.formats import gojson
from soci.formats.digest import is_digest
from soci.formats.zinfo import WINDOW_SIZE

MEDIA_TYPE_LOAD_ORDER: Final = "application/vnd.soci-py.load-order.v1+json"
MEDIA_TYPE_ZTOC_METADATA: Final = "application/vnd.soci-py.load-order.ztoc-metadata.v1"
"""The artifact's optional second layer: the document's zTOC metadata (``marshal_ztoc_metadata``)."""
ARTIFACT_TYPE_LOAD_ORDER: Final = MEDIA_TYPE_LOAD_ORDER
"""``artifactType`` of the manifest that carries a document (what referrers are filtered by)."""
VERSION: Final = "1"

ANNOTATION_NAME: Final = "io.github.soci-py.load-order.name"
"""The workload name, on the artifact manifest and in the document's annotations."""
ANNOTATION_RECORDED_BY: Final = "io.github.soci-py.load-order.recorded-by"
ANNOTATION_COMMAND: Final = "io.github.soci-py.load-order.command"
ANNOTATION_IMAGE: Final = "io.github.soci-py.load-order.image"
ANNOTATION_TRUNCATED: Final = "io.github.soci-py.load-order.truncated"

MAX_DOCUMENT_BYTES: Final = 16 << 20
"""Room for fetch points (a compressed 32 KiB window each); a document without them stays far smaller."""
MAX_FETCH_POINT_BYTES: Final = 64 << 20
"""Largest uncompressed range of one fetch point (the daemon holds it in memory while it is checked)."""
MAX_ZTOC_METADATA_BYTES: Final = 256 << 20
"""Largest zTOC a document's ``ztoc_metadata`` may inflate to (a bomb stops here)."""
MAX_SEGMENTS: Final = 50_000
MAX_NAME_LENGTH: Final = 128
ALIGNMENT: Final = 4096
"""Recorded reads are widened to page boundaries before merging, so kernel read sizes do not matter."""

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_MAX_OFFSET = 1 << 62


@dataclass(frozen=True, slots=True)
class Segment:
    path: str
    offset: int
    length: int
    time_ms: int = 0
    spans: tuple[int, int] | None = None

    @property
    def end(self) -> int:
        return self.offset + self.length


@dataclass(frozen=True, slots=True)
class FetchPoint:
    """Blob bytes ``[first_byte, compressed_end)`` inflate, from this checkpoint, to the uncompressed bytes
    ``[uncompressed_offset, uncompressed_end)`` of the layer; both ends are deflate block boundaries."""

    compressed_offset: int
    """The first whole byte after the starting boundary (as a zinfo checkpoint's ``in``)."""
    bits: int
    """Bits of byte ``compressed_offset - 1`` that belong to the first block."""
    uncompressed_offset: int
    window: bytes
    """The 32 KiB of uncompressed data before ``uncompressed_offset`` (zeros before the layer start)."""
    compressed_end: int
    uncompressed_end: int
    digest: str
    """sha256 of the blob bytes ``[first_byte, compressed_end)``."""
    uncompressed_digest: str
    """sha256 of the uncompressed bytes ``[uncompressed_offset, uncompressed_end)``."""
    time_ms: int = 0

    @property
    def first_byte(self) -> int:
        return self.compressed_offset - (1 if self.bits else 0)


@dataclass(frozen=True, slots=True)
class LayerLoadOrder:
    digest: str
    segments: tuple[Segment, ...]
    ztoc: str = ""
    fetch_points: tuple[FetchPoint, ...] = ()
    ztoc_metadata: bytes = field(default=b"", repr=False)
    """zlib-compressed: the zTOC named by ``ztoc`` with its windows zeroed (``decode_ztoc_metadata``)."""


@dataclass(frozen=True, slots=True)
class LoadOrder:
    name: str
    layers: tuple[LayerLoadOrder, ...]
    annotations: Mapping[str, str] = field(default_factory=dict)

    def layer(self, digest: str) -> LayerLoadOrder | None:
        return next((entry for entry in self.layers if entry.digest == digest), None)

    @property
    def segment_count(self) -> int:
        return sum(len(entry.segments) for entry in self.layers)


@dataclass(frozen=True, slots=True)
class Read:
    """One recorded read: ``time_ns`` since the recording started."""

    time_ns: int
    layer: str
    path: str
    offset: int
    length: int


def check_name(name: str) -> str:
    if not isinstance(name, str) or len(name) > MAX_NAME_LENGTH or not _NAME.fullmatch(name):
        raise FormatError(
            f"load order name {name!r} is invalid: use 1-{MAX_NAME_LENGTH} of A-Z a-z 0-9 . _ -, "
            "starting with a letter or digit"
        )
    return name


def check_path(path: str, what: str = "path") -> str:
    parts = path.split("/") if isinstance(path, str) and path else []
    if not parts or "\0" in path or any(p in ("", ".", "..") for p in parts):
        raise FormatError(f"{what} {path!r} is not a clean relative path")
    return path


# ---- building from recorded reads ----------------------------------------------------------------------


def build_load_order(
    name: str,
    reads: Iterable[Read],
    *,
    layers: Sequence[str] = (),
    annotations: Mapping[str, str] | None = None,
    max_segments: int = MAX_SEGMENTS,
) -> LoadOrder:
    """The document for ``reads``: per layer and file, reads widened to ``ALIGNMENT`` and merged where they
    overlap or touch; each merged segment keeps its first access time, and segments are listed in that order
    (ties by path, offset). Past ``max_segments`` the latest segments are dropped (annotated as truncated).

    ``layers`` orders the layers (bottom first, as in the image); layers not in it follow, by digest.
    """
    check_name(name)
    merged: dict[str, dict[str, list[list[int]]]] = {}  # layer -> path -> [[start, end, first_ns], ...]
    for r in reads:
        if r.length <= 0:
            continue
        start = r.offset - r.offset % ALIGNMENT
        end = -(-(r.offset + r.length) // ALIGNMENT) * ALIGNMENT
        ranges = merged.setdefault(r.layer, {}).setdefault(r.path, [])
        first = r.time_ns
        keep = []
        for item in ranges:
            if item[0] <= end and start <= item[1]:
                start, end, first = min(start, item[0]), max(end, item[1]), min(first, item[2])
            else:
                keep.append(item)
        keep.append([start, end, first])
        ranges[:] = keep
    flat = [
        (first, layer, path, start, end)
        for layer, files in merged.items()
        for path, ranges in files.items()
        for start, end, first in ranges
    ]
    flat.sort(key=lambda item: (item[0], item[1], item[2], item[3]))
    notes = dict(annotations or {})
    notes[ANNOTATION_NAME] = name
    if len(flat) > max_segments:
        notes[ANNOTATION_TRUNCATED] = str(len(flat) - max_segments)
        flat = flat[:max_segments]
    origin = flat[0][0] if flat else 0
    by_layer: dict[str, list[Segment]] = {}
    for first, layer, path, start, end in flat:
        by_layer.setdefault(layer, []).append(Segment(path, start, end - start, (first - origin) // 1_000_000))
    position = {digest: i for i, digest in enumerate(layers)}
    ordered = sorted(by_layer, key=lambda d: (position.get(d, len(position)), d))
    return LoadOrder(name, tuple(LayerLoadOrder(d, tuple(by_layer[d])) for d in ordered), notes)


def without_times(document: LoadOrder) -> LoadOrder:
    return replace(
        document,
        layers=tuple(
            replace(
                entry,
                segments=tuple(replace(s, time_ms=0) for s in entry.segments),
                fetch_points=tuple(replace(p, time_ms=0) for p in entry.fetch_points),
            )
            for entry in document.layers
        ),
    )


def encode_window(window: bytes) -> str:
    return base64.b64encode(zlib.compress(window, 9)).decode()


def decode_window(text: str, where: str) -> bytes:
    """The 32 KiB window from its text form; FormatError naming ``where`` for anything else."""
    try:
        window, whole = _inflate_bounded(base64.b64decode(text.encode("ascii"), validate=True), WINDOW_SIZE)
    except (UnicodeEncodeError, binascii.Error, zlib.error) as exc:
        raise FormatError(f"{where}: window is not base64 of zlib data: {exc}") from None
    if len(window) != WINDOW_SIZE or not whole:
        raise FormatError(f"{where}: window is not {WINDOW_SIZE} bytes")
    return window


def _inflate_bounded(packed: bytes, limit: int) -> tuple[bytes, bool]:
    """``(at most limit + 1 bytes of packed inflated, whether that was all of it and nothing follows)``: a bomb
    cannot grow past the limit; zlib.error for what is not zlib data."""
    inflater = zlib.decompressobj()
    data = inflater.decompress(packed, limit + 1)
    return data, inflater.eof and not inflater.unused_data


def encode_ztoc_metadata(windowless_ztoc: bytes) -> bytes:
    return zlib.compress(windowless_ztoc, 9)


def decode_ztoc_metadata(packed: bytes, where: str = "ztoc_metadata") -> bytes:
    """The windowless zTOC from its compressed form; FormatError naming ``where`` for anything else."""
    try:
        data, whole = _inflate_bounded(packed, MAX_ZTOC_METADATA_BYTES)
    except zlib.error as exc:
        raise FormatError(f"{where}: not zlib data: {exc}") from None
    if len(data) > MAX_ZTOC_METADATA_BYTES:
        raise FormatError(f"{where}: inflates to more than {MAX_ZTOC_METADATA_BYTES} bytes")
    if not whole:
        raise FormatError(f"{where}: truncated, or followed by other bytes")
    return data


# ---- zTOC metadata beside the document -------------------------------------------------------------------

_METADATA_MAGIC: Final = b"soci-py ztoc metadata 1\n"
_METADATA_RECORD = struct.Struct("<HI")  # digest length, metadata length; then the digest and the metadata


def split_ztoc_metadata(document: LoadOrder) -> tuple[LoadOrder, bytes]:
    """``(document without ztoc_metadata, its metadata as marshal_ztoc_metadata's bytes)``; ``b""`` when there
    is none."""
    metadata = ztoc_metadata_of(document)
    if not metadata:
        return document, b""
    bare = replace(document, layers=tuple(replace(entry, ztoc_metadata=b"") for entry in document.layers))
    return bare, marshal_ztoc_metadata(metadata)


def ztoc_metadata_of(document: LoadOrder) -> dict[str, bytes]:
    """zTOC digest -> compressed metadata, of the layers that carry it inline."""
    return {entry.ztoc: entry.ztoc_metadata for entry in document.layers if entry.ztoc and entry.ztoc_metadata}


def join_ztoc_metadata(document: LoadOrder, metadata: Mapping[str, bytes], what: str = "load order") -> LoadOrder:
    """``document`` with each layer's ``ztoc_metadata`` taken from ``metadata`` (zTOC digest -> compressed
    metadata), which must name only zTOCs of the document's layers that carry none inline."""
    if not metadata:
        return document
    named = {entry.ztoc for entry in document.layers if entry.ztoc and not entry.ztoc_metadata}
    stray = sorted(set(metadata) - named)
    if stray:
        raise FormatError(f"{what}: zTOC metadata for {stray[0]}, which no layer of the document names without "
                          "metadata of its own")  # fmt: skip
    layers = tuple(
        replace(entry, ztoc_metadata=metadata[entry.ztoc]) if entry.ztoc in metadata else entry
        for entry in document.layers
    )
    return replace(document, layers=layers)


def marshal_ztoc_metadata(metadata: Mapping[str, bytes]) -> bytes:
    """A magic line, then per zTOC (sorted by digest): u16 digest length, u32 metadata length (little endian),
    the digest, the compressed metadata."""
    parts = [_METADATA_MAGIC]
    for digest in sorted(metadata):
        name, packed = digest.encode("ascii"), metadata[digest]
        parts += [_METADATA_RECORD.pack(len(name), len(packed)), name, packed]
    return b"".join(parts)


def parse_ztoc_metadata(data: bytes, what: str = "zTOC metadata") -> dict[str, bytes]:
    """zTOC digest -> compressed metadata, from ``marshal_ztoc_metadata``'s bytes.

    Raises:
        FormatError: too large, no magic, a record truncated or empty, a digest malformed or repeated.
    """
    if len(data) > MAX_DOCUMENT_BYTES:
        raise FormatError(f"{what} is {len(data)} bytes, over the limit of {MAX_DOCUMENT_BYTES}")
    if not data.startswith(_METADATA_MAGIC):
        raise FormatError(f"{what}: not zTOC metadata (bad magic)")
    found: dict[str, bytes] = {}
    pos = len(_METADATA_MAGIC)
    while pos < len(data):
        if pos + _METADATA_RECORD.size > len(data):
            raise FormatError(f"{what}: record at byte {pos} is truncated")
        name_length, length = _METADATA_RECORD.unpack_from(data, pos)
        pos += _METADATA_RECORD.size
        end = pos + name_length + length
        if end > len(data) or not length:
            raise FormatError(f"{what}: record at byte {pos - _METADATA_RECORD.size} is truncated or empty")
        digest = data[pos : pos + name_length].decode("ascii", "replace")
        if not is_digest(digest):
            raise FormatError(f"{what}: {digest!r} is not a sha256 digest")
        if digest in found:
            raise FormatError(f"{what}: zTOC {digest} is listed twice")
        found[digest] = data[pos + name_length : end]
        pos = end
    return found


# ---- bytes ---------------------------------------------------------------------------------------------


def marshal(document: LoadOrder) -> bytes:
    """Canonical bytes (sorted keys, no whitespace); FormatError when over ``MAX_DOCUMENT_BYTES``."""
    layers = []
    for entry in document.layers:
        segments = []
        for s in entry.segments:
            item: dict[str, Any] = {"path": s.path, "offset": s.offset, "length": s.length, "time_ms": s.time_ms}
            if s.spans is not None:
                item["spans"] = list(s.spans)
            segments.append(item)
        layer: dict[str, Any] = {"digest": entry.digest, "segments": segments}
        if entry.ztoc:
            layer["ztoc"] = entry.ztoc
        if entry.fetch_points:
            layer["fetch_points"] = [_fetch_point_object(p) for p in entry.fetch_points]
        if entry.ztoc_metadata:
            layer["ztoc_metadata"] = base64.b64encode(entry.ztoc_metadata).decode()
        layers.append(layer)
    obj = {
        "version": VERSION,
        "mediaType": MEDIA_TYPE_LOAD_ORDER,
        "name": document.name,
        "annotations": dict(document.annotations),
        "layers": layers,
    }
    data = json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    if len(data) > MAX_DOCUMENT_BYTES:
        raise FormatError(f"load order document {document.name!r} is {len(data)} bytes, over the limit of "
                          f"{MAX_DOCUMENT_BYTES}")  # fmt: skip
    return data


def _fetch_point_object(p: FetchPoint) -> dict[str, Any]:
    return {
        "compressed_offset": p.compressed_offset,
        "bits": p.bits,
        "uncompressed_offset": p.uncompressed_offset,
        "window": encode_window(p.window),
        "compressed_end": p.compressed_end,
        "uncompressed_end": p.uncompressed_end,
        "digest": p.digest,
        "uncompressed_digest": p.uncompressed_digest,
        "time_ms": p.time_ms,
    }


def identity_bytes(document: LoadOrder) -> bytes:
    """``marshal`` without the access times: equal for two recordings of the same deterministic workload."""
    return marshal(without_times(document))


def parse(data: bytes, what: str = "load order document") -> LoadOrder:
    """Decode and validate a document.

    Raises:
        FormatError: too large, not JSON, unknown version or media type, or a field is malformed
            (the message names it).
    """
    if len(data) > MAX_DOCUMENT_BYTES:
        raise FormatError(f"{what} is {len(data)} bytes, over the limit of {MAX_DOCUMENT_BYTES}")
    obj = gojson.loads(data, what)
    if not isinstance(obj, dict):
        raise FormatError(f"{what} is not a JSON object")
    if obj.get("version") != VERSION:
        raise FormatError(f"{what}: unsupported version {obj.get('version')!r}, want {VERSION!r}")
    if obj.get("mediaType", MEDIA_TYPE_LOAD_ORDER) != MEDIA_TYPE_LOAD_ORDER:
        raise FormatError(f"{what}: media type {obj.get('mediaType')!r} is not {MEDIA_TYPE_LOAD_ORDER!r}")
    try:
        name = check_name(obj.get("name"))  # type: ignore[arg-type]
    except FormatError as exc:
        raise FormatError(f"{what}: {exc}") from None
    annotations = obj.get("annotations", {})
    if not isinstance(annotations, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in annotations.items()
    ):
        raise FormatError(f"{what}: annotations must map strings to strings")
    raw_layers = obj.get("layers")
    if not isinstance(raw_layers, list):
        raise FormatError(f"{what}: layers must be an array")
    layers: list[LayerLoadOrder] = []
    seen: set[str] = set()
    count = 0
    for i, raw in enumerate(raw_layers):
        entry = _layer(raw, f"{what}: layers[{i}]")
        if entry.digest in seen:
            raise FormatError(f"{what}: layer {entry.digest} is listed twice")
        seen.add(entry.digest)
        count += len(entry.segments)
        if count > MAX_SEGMENTS:
            raise FormatError(f"{what}: more than {MAX_SEGMENTS} segments")
        layers.append(entry)
    return LoadOrder(name, tuple(layers), annotations)


def _layer(raw: Any, where: str) -> LayerLoadOrder:
    if not isinstance(raw, dict):
        raise FormatError(f"{where} is not an object")
    digest = raw.get("digest")
    if not isinstance(digest, str) or not is_digest(digest):
        raise FormatError(f"{where}: digest {digest!r} is not a sha256 digest")
    ztoc = raw.get("ztoc", "")
    if ztoc and (not isinstance(ztoc, str) or not is_digest(ztoc)):
        raise FormatError(f"{where}: ztoc {ztoc!r} is not a sha256 digest")
    segments = raw.get("segments")
    if not isinstance(segments, list):
        raise FormatError(f"{where}: segments must be an array")
    points = raw.get("fetch_points", [])
    if not isinstance(points, list) or len(points) > MAX_SEGMENTS:
        raise FormatError(f"{where}: fetch_points must be an array of at most {MAX_SEGMENTS}")
    metadata = raw.get("ztoc_metadata", "")
    if not isinstance(metadata, str):
        raise FormatError(f"{where}: ztoc_metadata must be a string")
    if metadata and not ztoc:
        raise FormatError(f"{where}: ztoc_metadata needs the ztoc it was made from")
    try:
        packed = base64.b64decode(metadata.encode("ascii"), validate=True)
    except (UnicodeEncodeError, binascii.Error) as exc:
        raise FormatError(f"{where}: ztoc_metadata is not base64: {exc}") from None
    return LayerLoadOrder(
        digest,
        tuple(_segment(s, f"{where}.segments[{j}]") for j, s in enumerate(segments)),
        ztoc,
        tuple(_fetch_point(p, f"{where}.fetch_points[{j}]") for j, p in enumerate(points)),
        packed,
    )


def _fetch_point(raw: Any, where: str) -> FetchPoint:
    if not isinstance(raw, dict):
        raise FormatError(f"{where} is not an object")
    c, ce, u, ue, bits, time_ms = (
        _integer(raw.get(k, 0 if k == "time_ms" else None), f"{where}.{k}")
        for k in ("compressed_offset", "compressed_end", "uncompressed_offset", "uncompressed_end", "bits", "time_ms")
    )
    if bits > 7 or (bits and c == 0):
        raise FormatError(f"{where}.bits must be 0-7, with a byte before compressed_offset")
    if ce <= c - (1 if bits else 0) or ue <= u or ue - u > MAX_FETCH_POINT_BYTES:
        raise FormatError(f"{where}: the ranges must not be empty, and at most {MAX_FETCH_POINT_BYTES} bytes "
                          "uncompressed")  # fmt: skip
    digests: list[str] = []
    for key in ("digest", "uncompressed_digest"):
        value = raw.get(key)
        if not isinstance(value, str) or not is_digest(value):
            raise FormatError(f"{where}.{key} {value!r} is not a sha256 digest")
        digests.append(value)
    window = raw.get("window")
    if not isinstance(window, str):
        raise FormatError(f"{where}.window must be a string")
    return FetchPoint(c, bits, u, decode_window(window, where), ce, ue, digests[0], digests[1], time_ms)


def _segment(raw: Any, where: str) -> Segment:
    if not isinstance(raw, dict):
        raise FormatError(f"{where} is not an object")
    path = raw.get("path")
    if not isinstance(path, str):
        raise FormatError(f"{where}: path must be a string")
    check_path(path, f"{where}: path")
    offset, length, time_ms = (_integer(raw.get(k, 0 if k == "time_ms" else None), f"{where}.{k}")
                               for k in ("offset", "length", "time_ms"))  # fmt: skip
    if length <= 0 or offset + length > _MAX_OFFSET:
        raise FormatError(f"{where}: length must be positive and the segment within {_MAX_OFFSET} bytes")
    spans = raw.get("spans")
    hint: tuple[int, int] | None = None
    if spans is not None:
        if not isinstance(spans, list) or len(spans) != 2:
            raise FormatError(f"{where}.spans must be [first, last]")
        first, last = (_integer(v, f"{where}.spans") for v in spans)
        if last < first:
            raise FormatError(f"{where}.spans ends before it starts")
        hint = (first, last)
    return Segment(path, offset, length, time_ms, hint)


def _integer(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0 or value > _MAX_OFFSET:
        raise FormatError(f"{where} must be a non-negative integer, not {value!r}")
    return value


def check_layers(document: LoadOrder, image_layers: Sequence[str], what: str = "load order") -> None:
    """FormatError unless every layer the document names is one of ``image_layers`` (the image's)."""
    known = set(image_layers)
    for entry in document.layers:
        if entry.digest not in known:
            raise FormatError(f"{what} {document.name!r} names layer {entry.digest}, which the image does not have")

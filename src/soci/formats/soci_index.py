"""SOCI index manifests (v1 and v2) and prefetch artifacts: upstream's literals and exact JSON shapes."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from soci.errors import FormatError
from soci.formats import gojson
from soci.formats.digest import sha256_digest
from soci.formats.oci import MEDIA_TYPE_OCI_MANIFEST, Descriptor, Manifest

ARTIFACT_TYPE_V1 = "application/vnd.amazon.soci.index.v1+json"
ARTIFACT_TYPE_V2 = "application/vnd.amazon.soci.index.v2+json"
MEDIA_TYPE_ZTOC = "application/octet-stream"
MEDIA_TYPE_PREFETCH = "application/vnd.amazon.soci.prefetch.v1+json"
PREFETCH_VERSION = "1.0"

EMPTY_CONFIG = b"{}"
EMPTY_CONFIG_DIGEST = "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"

ANNOTATION_LAYER_MEDIA_TYPE = "com.amazon.soci.image-layer-mediaType"
ANNOTATION_LAYER_DIGEST = "com.amazon.soci.image-layer-digest"
ANNOTATION_SPAN_SIZE = "com.amazon.soci.span-size"
ANNOTATION_DISABLE_XATTRS = "com.amazon.soci.disable-xattrs"
ANNOTATION_BUILD_TOOL = "com.amazon.soci.build-tool-identifier"
ANNOTATION_INDEX_DIGEST = "com.amazon.soci.index-digest"
ANNOTATION_IMAGE_MANIFEST_DIGEST = "com.amazon.soci.image-manifest-digest"

BUILD_TOOL_IDENTIFIER = "AWS SOCI CLI v0.2"
DEFAULT_SPAN_SIZE = 1 << 22
DEFAULT_MIN_LAYER_SIZE = 10 << 20
OPTIMIZATION_XATTR = "xattr"
OPTIMIZATIONS = (OPTIMIZATION_XATTR,)


def config_descriptor(artifact_type: str) -> Descriptor:
    return Descriptor(media_type=artifact_type, digest=EMPTY_CONFIG_DIGEST, size=len(EMPTY_CONFIG))


def ztoc_descriptor(
    ztoc_digest: str, ztoc_size: int, layer: Descriptor, span_size: int, *, disable_xattrs: bool
) -> Descriptor:
    annotations = {
        ANNOTATION_LAYER_MEDIA_TYPE: layer.media_type,
        ANNOTATION_LAYER_DIGEST: layer.digest,
        ANNOTATION_SPAN_SIZE: str(span_size),
    }
    if disable_xattrs:
        annotations[ANNOTATION_DISABLE_XATTRS] = "true"
    return Descriptor(media_type=MEDIA_TYPE_ZTOC, digest=ztoc_digest, size=ztoc_size, annotations=annotations)


def prefetch_descriptor(digest: str, size: int, layer_digest: str) -> Descriptor:
    return Descriptor(
        media_type=MEDIA_TYPE_PREFETCH, digest=digest, size=size, annotations={ANNOTATION_LAYER_DIGEST: layer_digest}
    )


def build_index_manifest(
    blobs: Sequence[Descriptor],
    *,
    artifact_type: str,
    subject: Descriptor | None,
    build_tool: str = BUILD_TOOL_IDENTIFIER,
) -> Manifest:
    """The SOCI index manifest upstream writes: v1 carries ``subject``, v2 never does."""
    if artifact_type not in (ARTIFACT_TYPE_V1, ARTIFACT_TYPE_V2):
        raise FormatError(f"unknown SOCI index artifact type {artifact_type!r}")
    if artifact_type == ARTIFACT_TYPE_V2:
        subject = None
    elif subject is not None:
        subject = Descriptor(media_type=subject.media_type, digest=subject.digest, size=subject.size)
    return Manifest(
        schema_version=2,
        media_type=MEDIA_TYPE_OCI_MANIFEST,
        config=config_descriptor(artifact_type),
        layers=tuple(blobs),
        subject=subject,
        annotations={ANNOTATION_BUILD_TOOL: build_tool},
    )


@dataclass(frozen=True, slots=True)
class SociIndex:
    """A decoded SOCI index and the canonical bytes upstream's encoder gives it."""

    manifest: Manifest
    data: bytes
    digest: str

    @property
    def artifact_type(self) -> str:
        return self.manifest.config.media_type

    @property
    def version(self) -> str:
        return "v2" if self.artifact_type == ARTIFACT_TYPE_V2 else "v1"

    def ztocs(self) -> list[Descriptor]:
        return [d for d in self.manifest.layers or () if d.media_type != MEDIA_TYPE_PREFETCH]

    def prefetches(self) -> list[Descriptor]:
        return [d for d in self.manifest.layers or () if d.media_type == MEDIA_TYPE_PREFETCH]

    def ztoc_for_layer(self, layer_digest: str) -> Descriptor | None:
        for d in self.ztocs():
            if (d.annotations or {}).get(ANNOTATION_LAYER_DIGEST) == layer_digest:
                return d
        return None


def index_from_manifest(manifest: Manifest) -> SociIndex:
    data = manifest.marshal()
    return SociIndex(manifest=manifest, data=data, digest=sha256_digest(data))


def parse_index(data: bytes, what: str = "SOCI index") -> SociIndex:
    """Decode an index as upstream does (config media type must be v1 or v2) and re-encode it canonically.

    The digest is of the canonical re-encoding; callers that fetched by digest compare it with what they asked
    for, because upstream stores the re-encoding under the fetched digest and rejects any difference.
    """
    manifest = Manifest.unmarshal(data, what)
    if manifest.config.media_type not in (ARTIFACT_TYPE_V1, ARTIFACT_TYPE_V2):
        raise FormatError(f"{what}: unknown index version (config media type {manifest.config.media_type!r})")
    return index_from_manifest(manifest)


@dataclass(frozen=True, slots=True)
class PrefetchSpan:
    start_span: int
    end_span: int
    priority: int = 0


def marshal_prefetch(spans: Sequence[PrefetchSpan]) -> bytes:
    items = []
    for s in spans:
        item: dict[str, int] = {"start_span": s.start_span, "end_span": s.end_span}
        if s.priority:
            item["priority"] = s.priority
        items.append(item)
    return gojson.marshal({"version": PREFETCH_VERSION, "prefetch_spans": items})


def parse_prefetch(data: bytes, what: str = "prefetch artifact") -> list[PrefetchSpan]:
    obj = gojson.unmarshal_object(data, what)
    if gojson.field(obj, "version") != PREFETCH_VERSION:
        raise FormatError(f"{what}: unsupported version {gojson.field(obj, 'version')!r}, want {PREFETCH_VERSION!r}")
    raw = gojson.field(obj, "prefetch_spans")
    if not isinstance(raw, list) or not raw:
        raise FormatError(f"{what}: prefetch_spans must be a non-empty array")
    spans = []
    for i, item in enumerate(raw):
        if not isinstance(item, dict):
            raise FormatError(f"{what}: prefetch_spans[{i}] is not an object")
        values = [gojson.field(item, k) or 0 for k in ("start_span", "end_span", "priority")]
        if any(isinstance(v, bool) or not isinstance(v, int) or v < 0 for v in values):
            raise FormatError(f"{what}: prefetch_spans[{i}] has a non-integer or negative value")
        if values[1] < values[0]:
            raise FormatError(f"{what}: prefetch_spans[{i}] ends before it starts")
        spans.append(PrefetchSpan(values[0], values[1], values[2]))
    return spans


def merge_span_ranges(ranges: Sequence[tuple[int, int]]) -> list[PrefetchSpan]:
    """Sort inclusive span ranges and merge those that overlap or touch, as upstream's builder does."""
    merged: list[list[int]] = []
    for start, end in sorted(ranges):
        if merged and start <= merged[-1][1] + 1:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    return [PrefetchSpan(s, e) for s, e in merged]

"""Build a SOCI index for one image manifest: a zTOC per large layer, optional prefetch artifacts, the index.

Follows upstream's IndexBuilder: layers are indexed in parallel, small and zstd layers are skipped with
upstream's messages, zTOCs are reused by (layer digest, span size) unless forced, and every artifact is in
the content store before its row is written to the artifacts database.
"""

from __future__ import annotations

import os
import posixpath
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import BinaryIO, Protocol

from soci.errors import FailedPrecondition, FormatError, SociError
from soci.formats import soci_index as si
from soci.formats.oci import Descriptor, Manifest, Platform, is_layer_media_type, layer_compression
from soci.formats.platforms import format_platform
from soci.formats.zinfo import zinfo_from_blob
from soci.formats.ztoc import ALGORITHM_GZIP, ALGORITHM_UNCOMPRESSED, Ztoc
from soci.formats.ztoc_codec import marshal_ztoc, unmarshal_ztoc
from soci.index.ztoc_builder import build_ztoc
from soci.store import ARTIFACT_INDEX, ARTIFACT_LAYER, ARTIFACT_PREFETCH, ArtifactEntry, LocalStore


class EmptyIndexError(FailedPrecondition):
    """No layer of the image got a zTOC."""


class BlobSource(Protocol):
    """Where layer blobs come from (an OCI layout, a registry stream, containerd's content store)."""

    def open_blob(self, digest: str) -> BinaryIO: ...


class Reporter(Protocol):
    """Receives upstream's per-layer messages and progress."""

    def message(self, text: str) -> None: ...

    def layer_started(self, layer: Descriptor) -> Callable[[int], None] | None: ...

    def layer_finished(self, layer: Descriptor) -> None: ...


class SilentReporter:
    def message(self, text: str) -> None:
        pass

    def layer_started(self, layer: Descriptor) -> Callable[[int], None] | None:
        return None

    def layer_finished(self, layer: Descriptor) -> None:
        pass


@dataclass(frozen=True)
class BuildOptions:
    span_size: int = si.DEFAULT_SPAN_SIZE
    min_layer_size: int = si.DEFAULT_MIN_LAYER_SIZE
    optimizations: Sequence[str] = ()
    force: bool = False
    prefetch_files: Sequence[str] = ()
    build_tool: str = si.BUILD_TOOL_IDENTIFIER
    parallelism: int = field(default_factory=lambda: os.cpu_count() or 1)

    def __post_init__(self) -> None:
        if self.span_size < 0:
            raise FormatError(f"span size must not be negative, got {self.span_size}")
        if self.min_layer_size < 0:
            raise FormatError(f"min layer size must not be negative, got {self.min_layer_size}")
        for opt in self.optimizations:
            if opt not in si.OPTIMIZATIONS:
                raise FormatError(f"unknown optimization {opt!r}; supported: {', '.join(si.OPTIMIZATIONS)}")


@dataclass
class LayerResult:
    layer: Descriptor
    ztoc: Ztoc | None = None
    descriptor: Descriptor | None = None
    skipped: str = ""
    reused: bool = False


def ztoc_algorithm(layer: Descriptor) -> str | None:
    """The zTOC compression for a layer media type, or None for layers upstream skips (zstd)."""
    compression = layer_compression(layer.media_type)
    if compression == "gzip":
        return ALGORITHM_GZIP
    if compression in ("", "unknown"):
        return ALGORITHM_UNCOMPRESSED
    return None


def _needs_xattrs(ztoc: Ztoc) -> bool:
    for e in ztoc.entries:
        if e.name.endswith(b".wh..wh..opq"):
            return True
        if any(k.startswith(b"SCHILY.xattr.") for k, _ in e.pax_records):
            return True
    return False


def clean_path(path: str) -> str:
    """Go's path.Clean("/" + p) with the leading slash removed, as upstream normalises TOC lookups."""
    return posixpath.normpath("/" + path).lstrip("/")


def with_context(exc: SociError, context: str) -> SociError:
    """The same kind of error with ``context`` (which layer, which image) in front of its message."""
    try:
        return type(exc)(f"{context}: {exc}")
    except TypeError:
        return SociError(f"{context}: {exc}")


class IndexBuilder:
    def __init__(
        self, store: LocalStore, source: BlobSource, options: BuildOptions, reporter: Reporter | None = None
    ) -> None:
        self.store = store
        self.source = source
        self.options = options
        self.reporter: Reporter = reporter or SilentReporter()

    def build(
        self,
        manifest_desc: Descriptor,
        manifest: Manifest,
        *,
        artifact_type: str,
        platform: Platform,
        image_ref: str = "",
    ) -> si.SociIndex:
        """Build, store and record the SOCI index of ``manifest``; raise EmptyIndexError when no layer qualifies."""
        layers = [d for d in manifest.layers or () if d.media_type != si.MEDIA_TYPE_PREFETCH]
        for layer in layers:
            if not is_layer_media_type(layer.media_type):
                raise FormatError(f"layer {layer.digest}: not a layer mediaType: {layer.media_type!r}")
        workers = max(1, min(self.options.parallelism, len(layers) or 1))
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="ztoc") as pool:
            results = list(pool.map(self._build_layer, layers))
        indexed = [r for r in results if r.descriptor is not None]
        prefetch = self._build_prefetch(indexed)
        blobs = [r.descriptor for r in indexed if r.descriptor is not None] + prefetch
        if not blobs:
            raise EmptyIndexError("no ztocs created, all layers either skipped or produced errors")
        index = si.index_from_manifest(
            si.build_index_manifest(
                blobs,
                artifact_type=artifact_type,
                subject=manifest_desc if artifact_type == si.ARTIFACT_TYPE_V1 else None,
                build_tool=self.options.build_tool,
            )
        )
        content = self.store.content
        content.write_blob(si.EMPTY_CONFIG, si.EMPTY_CONFIG_DIGEST)
        content.write_blob(index.data, index.digest)
        self.store.artifacts.put(
            ArtifactEntry(
                digest=index.digest,
                type=ARTIFACT_INDEX,
                size=len(index.data),
                location=manifest_desc.digest,
                oci_digest=manifest_desc.digest,
                platform=format_platform(platform),
                media_type=index.manifest.media_type,
                artifact_type=artifact_type,
                image_ref=image_ref,
            )
        )
        return index

    def _build_layer(self, layer: Descriptor) -> LayerResult:
        opts = self.options
        if layer.size < opts.min_layer_size:
            msg = (
                f"ztoc skipped - layer {layer.digest} ({layer.media_type}) size {layer.size} "
                f"is less than min-layer-size {opts.min_layer_size}"
            )
            self.reporter.message(msg)
            return LayerResult(layer, skipped=msg)
        algorithm = ztoc_algorithm(layer)
        if algorithm is None:
            msg = (
                f"ztoc skipped - layer {layer.digest} ({layer.media_type}) is compressed in an unsupported format. "
                f'expect: [tar, gzip, unknown] but got "{layer_compression(layer.media_type)}"'
            )
            self.reporter.message(msg)
            return LayerResult(layer, skipped=msg)
        reused = None if opts.force else self._reuse(layer, algorithm)
        if reused is not None:
            ztoc, digest, size = reused
            self.reporter.message(f"layer {layer.digest} -> ztoc {digest} (already exists)")
            return LayerResult(layer, ztoc, self._descriptor(digest, size, layer, ztoc), reused=True)
        progress = self.reporter.layer_started(layer)
        try:
            with self.source.open_blob(layer.digest) as f:
                ztoc = build_ztoc(
                    f,
                    span_size=opts.span_size,
                    algorithm=algorithm,
                    build_tool=opts.build_tool,
                    expected_digest=layer.digest,
                    expected_size=layer.size,
                    progress=progress,
                )
        except SociError as exc:
            raise with_context(exc, f"layer {layer.digest}") from exc
        finally:
            self.reporter.layer_finished(layer)
        data = marshal_ztoc(ztoc)
        digest = self.store.content.write_blob(data)
        self.store.artifacts.put(
            ArtifactEntry(
                digest=digest,
                type=ARTIFACT_LAYER,
                size=len(data),
                location=layer.digest,
                oci_digest=layer.digest,
                media_type=si.MEDIA_TYPE_ZTOC,
                span_size=opts.span_size,
            )
        )
        self.reporter.message(f"layer {layer.digest} -> ztoc {digest}")
        return LayerResult(layer, ztoc, self._descriptor(digest, len(data), layer, ztoc))

    def _reuse(self, layer: Descriptor, algorithm: str) -> tuple[Ztoc, str, int] | None:
        entry = self.store.artifacts.find_ztoc(layer.digest, self.options.span_size)
        if entry is None or not self.store.content.has_blob(entry.digest):
            return None
        ztoc = unmarshal_ztoc(self.store.content.read_blob(entry.digest))
        if ztoc.compression_algorithm != algorithm:
            return None
        return ztoc, entry.digest, entry.size

    def _descriptor(self, digest: str, size: int, layer: Descriptor, ztoc: Ztoc) -> Descriptor:
        disable = si.OPTIMIZATION_XATTR in self.options.optimizations and not _needs_xattrs(ztoc)
        return si.ztoc_descriptor(digest, size, layer, self.options.span_size, disable_xattrs=disable)

    def _build_prefetch(self, indexed: list[LayerResult]) -> list[Descriptor]:
        paths = [p.strip() for p in self.options.prefetch_files]
        paths = [p for p in paths if p]
        if not paths:
            return []
        ranges: dict[str, list[tuple[int, int]]] = {}
        for path in paths:
            wanted = clean_path(path).encode("utf-8", "surrogateescape")
            for result in reversed(indexed):
                assert result.ztoc is not None
                entry = next((e for e in result.ztoc.entries if e.name == wanted), None)
                if entry is None:
                    continue
                zinfo = zinfo_from_blob(result.ztoc.compression_algorithm, result.ztoc.checkpoints)
                start = zinfo.span_of(entry.uncompressed_offset)
                end = zinfo.span_of(entry.uncompressed_offset + entry.uncompressed_size)
                ranges.setdefault(result.layer.digest, []).append((start, max(start, end)))
                break
            else:
                self.reporter.message(f"warning: prefetch file {path!r} not found in any indexed layer")
        out: list[Descriptor] = []
        for result in indexed:
            layer_ranges = ranges.get(result.layer.digest)
            if not layer_ranges:
                continue
            data = si.marshal_prefetch(si.merge_span_ranges(layer_ranges))
            digest = self.store.content.write_blob(data)
            self.store.artifacts.put(
                ArtifactEntry(
                    digest=digest,
                    type=ARTIFACT_PREFETCH,
                    size=len(data),
                    location=result.layer.digest,
                    oci_digest=result.layer.digest,
                    media_type=si.MEDIA_TYPE_PREFETCH,
                )
            )
            out.append(si.prefetch_descriptor(digest, len(data), result.layer.digest))
        return out

"""``soci convert``: make a SOCI-enabled image (SOCI index manifest v2) from an image.

For each selected platform a v2 SOCI index is built; every image manifest that exists is rewritten as an OCI
manifest carrying ``com.amazon.soci.index-digest`` when its platform got an index; the SOCI indexes are added
to an OCI image index next to the manifests they serve. Layers are never touched, so the new image shares
them with the original.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import BinaryIO, Protocol

from soci.errors import FormatError, InvalidArgument, NotFound
from soci.formats import gojson
from soci.formats import soci_index as si
from soci.formats.digest import sha256_digest
from soci.formats.oci import (
    INDEX_MEDIA_TYPES,
    MANIFEST_MEDIA_TYPES,
    MEDIA_TYPE_OCI_CONFIG,
    MEDIA_TYPE_OCI_INDEX,
    MEDIA_TYPE_OCI_MANIFEST,
    Descriptor,
    Index,
    Manifest,
    Platform,
)
from soci.formats.platforms import default_platform, format_platform, matches_strict, normalize
from soci.index.build import BuildOptions, EmptyIndexError, IndexBuilder, Reporter
from soci.store import LocalStore


class ImageSource(Protocol):
    """The blobs of the image being converted."""

    def has_blob(self, digest: str) -> bool: ...

    def read_blob(self, digest: str) -> bytes: ...

    def open_blob(self, digest: str) -> BinaryIO: ...


@dataclass
class ConvertResult:
    """The new image: its OCI index and every blob that must be written next to the original ones."""

    index_descriptor: Descriptor
    new_blobs: dict[str, bytes] = field(default_factory=dict)
    soci_indexes: list[tuple[Platform, si.SociIndex]] = field(default_factory=list)


def config_platform(source: ImageSource, manifest: Manifest) -> Platform:
    """The platform an image's config declares."""
    raw = source.read_blob(manifest.config.digest)
    cfg = gojson.loads(raw, f"image config {manifest.config.digest}")
    if not isinstance(cfg, dict):
        raise FormatError(f"image config {manifest.config.digest}: expected a JSON object")
    return Platform(
        architecture=str(cfg.get("architecture", "")),
        os=str(cfg.get("os", "")),
        os_version=str(cfg.get("os.version", "")),
        variant=str(cfg.get("variant", "")),
    )


def _platform_or_default(desc: Descriptor) -> Platform:
    return desc.platform if desc.platform is not None else default_platform()


def convert_image(
    store: LocalStore,
    source: ImageSource,
    target: Descriptor,
    *,
    options: BuildOptions,
    platforms: Sequence[Platform] = (),
    all_platforms: bool = False,
    reporter: Reporter | None = None,
    image_ref: str = "",
    extra_blobs: dict[str, bytes] | None = None,
) -> ConvertResult:
    """Convert the image ``target`` (a manifest or an index) found in ``source``."""
    new_blobs: dict[str, bytes] = dict(extra_blobs or {})

    def read(digest: str) -> bytes:
        return new_blobs[digest] if digest in new_blobs else source.read_blob(digest)

    def exists(digest: str) -> bool:
        return digest in new_blobs or source.has_blob(digest)

    if target.media_type in INDEX_MEDIA_TYPES:
        oci_index = Index.unmarshal(read(target.digest), f"image index {target.digest}")
        if oci_index.media_type and oci_index.media_type not in INDEX_MEDIA_TYPES:
            raise FormatError(f"image index {target.digest}: unexpected media type {oci_index.media_type!r}")
        oci_index = replace(oci_index, media_type=MEDIA_TYPE_OCI_INDEX)
    elif target.media_type in MANIFEST_MEDIA_TYPES:
        manifest = Manifest.unmarshal(read(target.digest), f"image manifest {target.digest}")
        if target.platform is None:
            target = replace(target, platform=normalize(config_platform(source, manifest)))
        oci_index = Index(schema_version=2, media_type=MEDIA_TYPE_OCI_INDEX, manifests=(target,))
    else:
        raise FormatError(f"image {target.digest}: unsupported media type {target.media_type!r}")

    manifests = list(oci_index.manifests or ())
    image_manifests = [d for d in manifests if d.media_type in MANIFEST_MEDIA_TYPES and d.artifact_type == ""]
    if all_platforms:
        wanted = [d for d in image_manifests if exists(d.digest)]
    else:
        want_platforms = list(platforms) or (
            [_platform_or_default(image_manifests[0])]
            if len(manifests) == 1 and image_manifests
            else [default_platform()]
        )
        wanted = []
        for p in want_platforms:
            match = next(
                (d for d in image_manifests if matches_strict(p, _platform_or_default(d)) and exists(d.digest)), None
            )
            if match is None:
                raise NotFound(f"image has no manifest for platform {format_platform(p)}")
            if match not in wanted:
                wanted.append(match)

    builder = IndexBuilder(store, source, options, reporter)
    built: dict[str, tuple[Platform, si.SociIndex]] = {}
    for desc in wanted:
        manifest = Manifest.unmarshal(read(desc.digest), f"image manifest {desc.digest}")
        plat = _platform_or_default(desc)
        try:
            index = builder.build(desc, manifest, artifact_type=si.ARTIFACT_TYPE_V2, platform=plat, image_ref=image_ref)
        except EmptyIndexError:
            if reporter is not None:
                reporter.message(f"no SOCI index for platform {format_platform(plat)}: no layer qualified")
            continue
        built[desc.digest] = (plat, index)
    if not built:
        raise EmptyIndexError("no ztocs created, all layers either skipped or produced errors")

    result = ConvertResult(index_descriptor=target)
    for _, index in built.values():
        new_blobs[index.digest] = index.data
        for blob in index.manifest.layers or ():
            new_blobs[blob.digest] = store.content.read_blob(blob.digest)
        new_blobs[si.EMPTY_CONFIG_DIGEST] = si.EMPTY_CONFIG

    rewritten: list[Descriptor] = []
    soci_descs: list[Descriptor] = []
    for desc in manifests:
        if desc.media_type not in MANIFEST_MEDIA_TYPES or desc.artifact_type or not exists(desc.digest):
            rewritten.append(desc)
            continue
        manifest = Manifest.unmarshal(read(desc.digest), f"image manifest {desc.digest}")
        annotations = dict(manifest.annotations or {})
        entry = built.get(desc.digest)
        if entry is not None:
            annotations[si.ANNOTATION_INDEX_DIGEST] = entry[1].digest
        new_manifest = replace(
            manifest,
            media_type=MEDIA_TYPE_OCI_MANIFEST,
            config=replace(manifest.config, media_type=MEDIA_TYPE_OCI_CONFIG),
            annotations=annotations or None,
        )
        data = new_manifest.marshal()
        digest = sha256_digest(data)
        new_blobs[digest] = data
        rewritten.append(
            replace(
                desc, media_type=MEDIA_TYPE_OCI_MANIFEST, digest=digest, size=len(data), annotations=annotations or None
            )
        )
        if entry is not None:
            plat, index = entry
            soci_descs.append(
                Descriptor(
                    media_type=MEDIA_TYPE_OCI_MANIFEST,
                    digest=index.digest,
                    size=len(index.data),
                    annotations={si.ANNOTATION_IMAGE_MANIFEST_DIGEST: digest},
                    platform=plat,
                    artifact_type=si.ARTIFACT_TYPE_V2,
                )
            )
            store.artifacts.update(index.digest, oci_digest=digest)
            result.soci_indexes.append((plat, index))

    for soci_desc in soci_descs:
        assert soci_desc.platform is not None
        rewritten = [
            d
            for d in rewritten
            if not (
                d.artifact_type == si.ARTIFACT_TYPE_V2
                and d.platform is not None
                and matches_strict(normalize(soci_desc.platform), d.platform)
            )
        ]
        rewritten.append(soci_desc)

    new_index = replace(oci_index, manifests=tuple(rewritten))
    index_data = new_index.marshal()
    index_digest = sha256_digest(index_data)
    new_blobs[index_digest] = index_data
    for _, index in result.soci_indexes:
        store.artifacts.update(index.digest, image_digest=index_digest)
    result.index_descriptor = Descriptor(media_type=MEDIA_TYPE_OCI_INDEX, digest=index_digest, size=len(index_data))
    result.new_blobs = new_blobs
    return result


def resolve_layout_target(index_json: bytes, source: ImageSource, where: str) -> tuple[Descriptor, dict[str, bytes]]:
    """The image an OCI layout's index.json names, as upstream's standalone mode reads it.

    One manifest: that manifest. One nested index, or a flat list of several descriptors: that list, with the
    children whose blobs are missing dropped; when any were dropped the list is written anew as an image index
    blob, returned in the extra-blobs map.
    """
    top = Index.unmarshal(index_json, f"{where}/index.json")
    descs = list(top.manifests or ())
    if not descs:
        raise InvalidArgument(f"{where}: index.json lists no image")
    nested: Descriptor | None = None
    listing = top
    if len(descs) == 1:
        if not source.has_blob(descs[0].digest):
            raise NotFound(f"{where}: blob {descs[0].digest} named by index.json is missing")
        if descs[0].media_type in MANIFEST_MEDIA_TYPES:
            return descs[0], {}
        if descs[0].media_type not in INDEX_MEDIA_TYPES:
            raise FormatError(f"{where}: unsupported media type {descs[0].media_type!r} in index.json")
        nested = descs[0]
        listing = Index.unmarshal(source.read_blob(nested.digest), f"{where}: image index {nested.digest}")
    children = list(listing.manifests or ())
    present = tuple(d for d in children if source.has_blob(d.digest))
    if not present:
        raise NotFound(f"{where}: none of the manifests the image lists exist in the layout")
    if nested is not None and len(present) == len(children):
        return nested, {}
    data = replace(listing, manifests=present).marshal()
    digest = sha256_digest(data)
    return Descriptor(media_type=MEDIA_TYPE_OCI_INDEX, digest=digest, size=len(data)), {digest: data}


def layout_index_json(target: Descriptor) -> bytes:
    """A fresh index.json naming only ``target``."""
    return Index(schema_version=2, media_type=MEDIA_TYPE_OCI_INDEX, manifests=(target,)).marshal()

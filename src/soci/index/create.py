"""``soci create``: SOCI index manifests v1 (with ``subject``) for an image, into the local store."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from soci.errors import NotFound
from soci.formats import soci_index as si
from soci.formats.oci import MANIFEST_MEDIA_TYPES, Descriptor, Index, Manifest, Platform
from soci.formats.platforms import default_platform, format_platform, matches_strict
from soci.index.build import BuildOptions, IndexBuilder, Reporter
from soci.index.convert import ImageSource, config_platform
from soci.store import LocalStore


@dataclass
class CreatedIndex:
    platform: Platform
    manifest: Descriptor
    index: si.SociIndex


def select_manifests(
    source: ImageSource, target: Descriptor, platforms: Sequence[Platform], all_platforms: bool
) -> list[tuple[Descriptor, Manifest, Platform]]:
    """The image manifests to index, with the platform each is for (upstream's platform rules)."""
    if target.media_type in MANIFEST_MEDIA_TYPES:
        manifest = Manifest.unmarshal(source.read_blob(target.digest), f"image manifest {target.digest}")
        plat = config_platform(source, manifest)
        if platforms and not any(matches_strict(p, plat) for p in platforms):
            raise NotFound(f"image is for {format_platform(plat)}, not {', '.join(map(format_platform, platforms))}")
        return [(target, manifest, plat)]
    index = Index.unmarshal(source.read_blob(target.digest), f"image index {target.digest}")
    candidates = [d for d in index.manifests or () if d.media_type in MANIFEST_MEDIA_TYPES and not d.artifact_type]
    chosen: list[Descriptor] = []
    if all_platforms:
        chosen = candidates
    else:
        for p in platforms or [default_platform()]:
            match = next((d for d in candidates if d.platform is not None and matches_strict(p, d.platform)), None)
            if match is None:
                raise NotFound(f"image has no manifest for platform {format_platform(p)}")
            chosen.append(match)
    out = []
    for d in chosen:
        manifest = Manifest.unmarshal(source.read_blob(d.digest), f"image manifest {d.digest}")
        out.append((d, manifest, d.platform or default_platform()))
    return out


def create_indexes(
    store: LocalStore,
    source: ImageSource,
    target: Descriptor,
    options: BuildOptions,
    *,
    platforms: Sequence[Platform] = (),
    all_platforms: bool = False,
    reporter: Reporter | None = None,
    image_ref: str = "",
) -> list[CreatedIndex]:
    """Build and store one v1 index per selected platform of the image ``target`` names."""
    builder = IndexBuilder(store, source, options, reporter)
    out = []
    for desc, manifest, plat in select_manifests(source, target, platforms, all_platforms):
        subject = Descriptor(desc.media_type, desc.digest, desc.size)
        index = builder.build(subject, manifest, artifact_type=si.ARTIFACT_TYPE_V1, platform=plat, image_ref=image_ref)
        out.append(CreatedIndex(plat, subject, index))
    return out

"""Find the SOCI index of an image manifest, in upstream's order and with its switches.

1. an explicit index digest (a label or flag) — used even when both pull modes are off;
2. SOCI v2 (default on): the ``com.amazon.soci.index-digest`` annotation of the image manifest;
3. SOCI v1 (default off): the referrers of the image manifest (API, or the ``sha256-<hex>`` tag fallback),
   first descriptor of the v1 artifact type.
The result says which path found the index, or why none was found.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable
from dataclasses import dataclass

from soci.errors import DataLoss, NoIndexError
from soci.formats import soci_index as si
from soci.formats.oci import Manifest
from soci.registry import RegistryClient

log = logging.getLogger(__name__)

FOUND_EXPLICIT = "explicit"
FOUND_V2_ANNOTATION = "soci_v2"
FOUND_V1_REFERRERS = "soci_v1"


@dataclass(frozen=True, slots=True)
class Discovery:
    index_digest: str
    found_by: str  # FOUND_EXPLICIT, FOUND_V2_ANNOTATION or FOUND_V1_REFERRERS


async def discover_index(
    client: RegistryClient,
    repo: str,
    manifest_digest: str,
    *,
    explicit_digest: str = "",
    v2_enabled: bool = True,
    v1_enabled: bool = False,
    manifest: Manifest | Awaitable[Manifest] | None = None,
) -> Discovery:
    """The index to use for ``manifest_digest``; NoIndexError (with the reason) when there is none.

    ``manifest``: the image manifest the caller holds, or is fetching anyway (a task, awaited only when its v2
    annotation is looked at); without it the manifest is fetched here.
    """
    if explicit_digest:
        log.info("using provided soci index digest", extra={"digest": explicit_digest})
        return Discovery(explicit_digest, FOUND_EXPLICIT)
    if not v1_enabled and not v2_enabled:
        raise NoIndexError("all lazy pull modes are disabled")
    if v2_enabled:
        log.debug("checking for soci v2 index annotation", extra={"manifest": manifest_digest})
        if manifest is None:
            data, _, _ = await client.get_manifest(repo, manifest_digest)
            image = Manifest.unmarshal(data, f"image manifest {manifest_digest}")
        elif isinstance(manifest, Manifest):
            image = manifest
        else:
            image = await manifest
        digest = (image.annotations or {}).get(si.ANNOTATION_INDEX_DIGEST, "")
        if digest:
            log.info("using soci v2 index annotation", extra={"digest": digest})
            return Discovery(digest, FOUND_V2_ANNOTATION)
    else:
        log.debug("soci v2 is disabled")
    if not v1_enabled:
        log.debug("soci v1 is disabled")
        raise NoIndexError(f"image manifest {manifest_digest} has no SOCI v2 index annotation (v1 is disabled)")
    referrers = await client.referrers(repo, manifest_digest, si.ARTIFACT_TYPE_V1)
    if not referrers:
        raise NoIndexError(f"image manifest {manifest_digest} has no SOCI index (no v2 annotation, no v1 referrer)")
    digest = str(referrers[0].get("digest", ""))
    log.info("using soci v1 index via referrers API", extra={"digest": digest})
    return Discovery(digest, FOUND_V1_REFERRERS)


async def fetch_index(client: RegistryClient, repo: str, digest: str) -> si.SociIndex:
    """Fetch an index manifest and check that it is in upstream's canonical encoding (else it cannot be cached)."""
    data, _, _ = await client.get_manifest(repo, digest)
    index = si.parse_index(data, f"SOCI index {digest}")
    if index.digest != digest:
        raise DataLoss(f"SOCI index {digest} is not in canonical Go JSON encoding; upstream would reject it too")
    return index

"""``soci rebuild-db``: make the artifacts database agree with the blobs in the content store."""

from __future__ import annotations

import click

from soci.cli._common import GlobalOptions, errors_to_exit, pass_options
from soci.errors import SociError
from soci.formats import soci_index as si
from soci.store import ARTIFACT_INDEX, ARTIFACT_LAYER, ARTIFACT_PREFETCH, ArtifactEntry


@click.command("rebuild-db")
@pass_options
def rebuild_db(g: GlobalOptions) -> None:
    """Drop entries whose blob is gone and rediscover indexes (with their zTOCs) from the content store."""
    with errors_to_exit(), g.open_store() as store:
        for entry in store.artifacts.all():
            if not store.content.has_blob(entry.digest):
                store.artifacts.remove(entry.digest)
        known = {e.digest for e in store.artifacts.all()}
        found: list[ArtifactEntry] = []
        for digest in store.content.blob_digests():
            if digest in known or store.content.blob_size(digest) < 10:
                continue
            try:
                index = si.parse_index(store.content.read_blob(digest))
            except SociError:
                continue
            if index.digest != digest:
                continue  # not in upstream's canonical encoding, so not an index we or upstream wrote
            subject = index.manifest.subject
            found.append(
                ArtifactEntry(
                    digest=digest,
                    type=ARTIFACT_INDEX,
                    size=len(index.data),
                    location=subject.digest if subject else "",
                    oci_digest=subject.digest if subject else "",
                    media_type=index.manifest.media_type,
                    artifact_type=index.artifact_type,
                )
            )
            for blob in index.manifest.layers or ():
                if blob.digest in known or not store.content.has_blob(blob.digest):
                    continue
                ann = blob.annotations or {}
                is_prefetch = blob.media_type == si.MEDIA_TYPE_PREFETCH
                found.append(
                    ArtifactEntry(
                        digest=blob.digest,
                        type=ARTIFACT_PREFETCH if is_prefetch else ARTIFACT_LAYER,
                        size=blob.size,
                        location=ann.get(si.ANNOTATION_LAYER_DIGEST, ""),
                        oci_digest=ann.get(si.ANNOTATION_LAYER_DIGEST, ""),
                        media_type=blob.media_type,
                        span_size=int(ann.get(si.ANNOTATION_SPAN_SIZE, "0") or 0),
                    )
                )
                known.add(blob.digest)
        store.artifacts.put_many(found)

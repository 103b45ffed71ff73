"""Local content: an OCI-layout blob store plus the artifacts database, under one root directory."""

from soci.store.artifacts import (
    ARTIFACT_INDEX as ARTIFACT_INDEX,
)
from soci.store.artifacts import (
    ARTIFACT_LAYER as ARTIFACT_LAYER,
)
from soci.store.artifacts import (
    ARTIFACT_PREFETCH as ARTIFACT_PREFETCH,
)
from soci.store.artifacts import ArtifactEntry as ArtifactEntry
from soci.store.artifacts import ArtifactsDB as ArtifactsDB
from soci.store.content import ContentStore as ContentStore
from soci.store.content import atomic_write as atomic_write
from soci.store.local import LocalStore as LocalStore

"""containerd label keys shared by the pull client, the snapshotter and convert (upstream's literals).

Defined once here; ``soci.snapshotter.labels`` parses the snapshot ones, ``soci.containerd`` writes them.
"""

from __future__ import annotations

from typing import Final

# --- snapshot labels set by pull clients (CRI, nerdctl, ``soci image rpull``) -----------------------------
TARGET_SNAPSHOT_REF: Final = "containerd.io/snapshot.ref"
"""Name the layer's committed snapshot must get (its chain ID); marks a layer-unpack Prepare."""
CRI_IMAGE_REF: Final = "containerd.io/snapshot/cri.image-ref"
CRI_LAYER_DIGEST: Final = "containerd.io/snapshot/cri.layer-digest"
CRI_MANIFEST_DIGEST: Final = "containerd.io/snapshot/cri.manifest-digest"
CRI_IMAGE_LAYERS: Final = "containerd.io/snapshot/cri.image-layers"
"""Comma-separated digests of the image's layers (neighbours of this one)."""
TARGET_SIZE: Final = "containerd.io/snapshot/remote/soci.size"
TARGET_IMAGE_LAYERS_SIZE: Final = "containerd.io/snapshot/remote/image.layers.size"
TARGET_SOCI_INDEX_DIGEST: Final = "containerd.io/snapshot/remote/soci.index.digest"
LOAD_ORDER: Final = "containerd.io/snapshot/soci-py.load-order"
"""Name of the load order document to replay for this image (ours; ``none`` turns replay off)."""
UID_MAPPING: Final = "containerd.io/snapshot/uidmapping"
GID_MAPPING: Final = "containerd.io/snapshot/gidmapping"

# --- snapshot labels set by the snapshotter ------------------------------------------------------------
REMOTE: Final = "containerd.io/snapshot/remote"
REMOTE_VALUE: Final = "remote snapshot"
TARGET_NAMESPACE: Final = "containerd.io/snapshot/remote/namespace"
HAS_SOCI_INDEX_DIGEST: Final = "containerd.io/snapshot/remote/has.soci.index.digest"

# --- containerd's own ----------------------------------------------------------------------------------
GC_ROOT: Final = "containerd.io/gc.root"
GC_REF_SNAPSHOT_PREFIX: Final = "containerd.io/gc.ref.snapshot."
GC_REF_CONTENT_PREFIX: Final = "containerd.io/gc.ref.content."
UNCOMPRESSED: Final = "containerd.io/uncompressed"
DISTRIBUTION_SOURCE_PREFIX: Final = "containerd.io/distribution.source."

INHERITED_PREFIX: Final = "containerd.io/snapshot/"
"""containerd forwards only labels with this prefix (and TARGET_SNAPSHOT_REF) to a proxy snapshotter."""

MAX_LABEL_BYTES: Final = 4096
"""containerd's limit on len(key) + len(value) of one label."""

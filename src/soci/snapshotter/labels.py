"""Snapshot labels read and written by the snapshotter (upstream's literals), and ``LayerSource``.

containerd passes labels with the ``containerd.io/snapshot/`` prefix (and ``containerd.io/snapshot.ref``)
through to a proxy snapshotter. Pull clients (CRI, nerdctl, ``soci image rpull``) use them to say which
registry layer a Prepare is unpacking; this module parses them in one place.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from soci.errors import InvalidArgument
from soci.formats.digest import is_digest
from soci.formats.labels import (
    CRI_IMAGE_LAYERS,
    CRI_IMAGE_REF,
    CRI_LAYER_DIGEST,
    CRI_MANIFEST_DIGEST,
    GC_REF_CONTENT_PREFIX,
    GC_REF_SNAPSHOT_PREFIX,
    GC_ROOT,
    GID_MAPPING,
    HAS_SOCI_INDEX_DIGEST,
    INHERITED_PREFIX,
    LOAD_ORDER,
    MAX_LABEL_BYTES,
    REMOTE,
    REMOTE_VALUE,
    TARGET_IMAGE_LAYERS_SIZE,
    TARGET_NAMESPACE,
    TARGET_SIZE,
    TARGET_SNAPSHOT_REF,
    TARGET_SOCI_INDEX_DIGEST,
    UID_MAPPING,
)


@dataclass(frozen=True, slots=True)
class LayerSource:
    """Which registry layer a remote snapshot shows, as told by Prepare's labels."""

    image_ref: str
    manifest_digest: str
    layer_digest: str
    layer_size: int | None = None
    """Compressed size from ``soci.size``; None when the client did not say."""
    layers: tuple[str, ...] = ()
    """Digests of every layer of the image, bottom first (may be empty)."""
    layer_sizes: tuple[int, ...] = ()
    """Sizes matching ``layers`` (empty when not given or inconsistent)."""
    index_digest: str = ""
    """SOCI index chosen explicitly by the client; empty means "discover it"."""
    load_order: str = ""
    """Load order document chosen by the client (``LOAD_ORDER``); empty: the daemon's rules decide."""
    namespace: str = ""


def is_layer_prepare(labels: Mapping[str, str]) -> bool:
    """Whether a Prepare asks for a layer to be unpacked (remote-snapshot protocol)."""
    return bool(labels.get(TARGET_SNAPSHOT_REF))


def layer_source(labels: Mapping[str, str]) -> LayerSource:
    """The layer a Prepare's labels describe.

    Raises:
        InvalidArgument: a required label is missing or a label is malformed (the message names it).
    """
    image_ref = _required(labels, CRI_IMAGE_REF)
    manifest_digest = _digest(labels, CRI_MANIFEST_DIGEST, required=True)
    layer_digest = _digest(labels, CRI_LAYER_DIGEST, required=True)
    index_digest = _digest(labels, TARGET_SOCI_INDEX_DIGEST, required=False)
    size_text = labels.get(TARGET_SIZE, "")
    layer_size = _size(size_text, TARGET_SIZE) if size_text else None
    layers: tuple[str, ...] = ()
    if labels.get(CRI_IMAGE_LAYERS):
        layers = tuple(d.strip() for d in labels[CRI_IMAGE_LAYERS].split(",") if d.strip())
        for d in layers:
            if not is_digest(d):
                raise InvalidArgument(f"label {CRI_IMAGE_LAYERS}: {d!r} is not a sha256 digest")
    sizes: tuple[int, ...] = ()
    if labels.get(TARGET_IMAGE_LAYERS_SIZE):
        sizes = tuple(_size(s.strip(), TARGET_IMAGE_LAYERS_SIZE) for s in labels[TARGET_IMAGE_LAYERS_SIZE].split(","))
        if len(sizes) != len(layers):
            # upstream ignores sizes that do not line up with the digests (the list may be truncated)
            sizes = ()
    return LayerSource(
        image_ref=image_ref,
        manifest_digest=manifest_digest,
        layer_digest=layer_digest,
        layer_size=layer_size,
        layers=layers,
        layer_sizes=sizes,
        index_digest=index_digest,
        load_order=labels.get(LOAD_ORDER, ""),
        namespace=labels.get(TARGET_NAMESPACE, ""),
    )


def inherited(labels: Mapping[str, str]) -> dict[str, str]:
    """The labels containerd would pass through to a proxy snapshotter."""
    return {k: v for k, v in labels.items() if k.startswith(INHERITED_PREFIX) or k == TARGET_SNAPSHOT_REF}


def check_labels(labels: Mapping[str, str]) -> None:
    """Raise InvalidArgument for a label containerd itself would refuse (empty key, too long)."""
    for key, value in labels.items():
        if not key:
            raise InvalidArgument("label key must not be empty")
        if len(key.encode()) + len(value.encode()) > MAX_LABEL_BYTES:
            raise InvalidArgument(f"label {key!r}: key and value exceed {MAX_LABEL_BYTES} bytes")


def _required(labels: Mapping[str, str], key: str) -> str:
    value = labels.get(key, "")
    if not value:
        raise InvalidArgument(f"label {key} is required for a remote snapshot")
    return value


def _digest(labels: Mapping[str, str], key: str, *, required: bool) -> str:
    value = labels.get(key, "")
    if not value:
        if required:
            raise InvalidArgument(f"label {key} is required for a remote snapshot")
        return ""
    if not is_digest(value):
        raise InvalidArgument(f"label {key}: {value!r} is not a sha256 digest")
    return value


def _size(text: str, key: str) -> int:
    if not text.isdigit():
        raise InvalidArgument(f"label {key}: {text!r} is not a non-negative integer")
    return int(text)


__all__ = [
    "CRI_IMAGE_LAYERS",
    "CRI_IMAGE_REF",
    "CRI_LAYER_DIGEST",
    "CRI_MANIFEST_DIGEST",
    "GC_REF_CONTENT_PREFIX",
    "GC_REF_SNAPSHOT_PREFIX",
    "GC_ROOT",
    "GID_MAPPING",
    "HAS_SOCI_INDEX_DIGEST",
    "INHERITED_PREFIX",
    "LOAD_ORDER",
    "MAX_LABEL_BYTES",
    "REMOTE",
    "REMOTE_VALUE",
    "TARGET_IMAGE_LAYERS_SIZE",
    "TARGET_NAMESPACE",
    "TARGET_SIZE",
    "TARGET_SNAPSHOT_REF",
    "TARGET_SOCI_INDEX_DIGEST",
    "UID_MAPPING",
    "LayerSource",
]

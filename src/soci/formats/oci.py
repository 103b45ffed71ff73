"""OCI image-spec v1.1 shapes (descriptor, platform, manifest, index) with Go-identical JSON.

Decoding follows Go's ``encoding/json`` into image-spec's structs: unknown fields are dropped, field names
match case-insensitively, and re-encoding gives the canonical bytes upstream would produce.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from soci.errors import FormatError
from soci.formats import gojson
from soci.formats.gojson import GoMap

MEDIA_TYPE_OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MEDIA_TYPE_OCI_INDEX = "application/vnd.oci.image.index.v1+json"
MEDIA_TYPE_OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
MEDIA_TYPE_OCI_EMPTY = "application/vnd.oci.empty.v1+json"
MEDIA_TYPE_OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
MEDIA_TYPE_OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
MEDIA_TYPE_OCI_LAYER_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"
MEDIA_TYPE_OCI_LAYER_NONDIST_GZIP = "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
MEDIA_TYPE_DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
MEDIA_TYPE_DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
MEDIA_TYPE_DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
MEDIA_TYPE_DOCKER_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"
MEDIA_TYPE_DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar"
MEDIA_TYPE_DOCKER_FOREIGN_LAYER_GZIP = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"

MANIFEST_MEDIA_TYPES = (MEDIA_TYPE_OCI_MANIFEST, MEDIA_TYPE_DOCKER_MANIFEST)
INDEX_MEDIA_TYPES = (MEDIA_TYPE_OCI_INDEX, MEDIA_TYPE_DOCKER_MANIFEST_LIST)

ANNOTATION_REF_NAME = "org.opencontainers.image.ref.name"


@dataclass(frozen=True, slots=True)
class Platform:
    architecture: str
    os: str
    os_version: str = ""
    os_features: tuple[str, ...] = ()
    variant: str = ""

    def to_go(self) -> dict[str, Any]:
        out: dict[str, Any] = {"architecture": self.architecture, "os": self.os}
        if self.os_version:
            out["os.version"] = self.os_version
        if self.os_features:
            out["os.features"] = list(self.os_features)
        if self.variant:
            out["variant"] = self.variant
        return out

    @classmethod
    def from_go(cls, obj: Any, what: str) -> Platform:
        obj = _require_object(obj, what)
        features = gojson.field(obj, "os.features") or ()
        return cls(
            architecture=_str(gojson.field(obj, "architecture"), what),
            os=_str(gojson.field(obj, "os"), what),
            os_version=_str(gojson.field(obj, "os.version"), what),
            os_features=tuple(_str(f, what) for f in _list(features, what)),
            variant=_str(gojson.field(obj, "variant"), what),
        )


@dataclass(frozen=True, slots=True)
class Descriptor:
    media_type: str
    digest: str
    size: int
    urls: tuple[str, ...] = ()
    annotations: Mapping[str, str] | None = None
    data: bytes | None = None
    platform: Platform | None = None
    artifact_type: str = ""

    def to_go(self) -> dict[str, Any]:
        out: dict[str, Any] = {"mediaType": self.media_type, "digest": self.digest, "size": self.size}
        if self.urls:
            out["urls"] = list(self.urls)
        if self.annotations:
            out["annotations"] = GoMap(self.annotations)
        if self.data:
            out["data"] = base64.b64encode(self.data).decode("ascii")
        if self.platform is not None:
            out["platform"] = self.platform.to_go()
        if self.artifact_type:
            out["artifactType"] = self.artifact_type
        return out

    @classmethod
    def from_go(cls, obj: Any, what: str) -> Descriptor:
        obj = _require_object(obj, what)
        data_b64 = gojson.field(obj, "data")
        data: bytes | None = None
        if data_b64 is not None:
            try:
                data = base64.b64decode(_str(data_b64, what), validate=True)
            except (binascii.Error, ValueError) as exc:
                raise FormatError(f"{what}: invalid base64 in descriptor data") from exc
        platform = gojson.field(obj, "platform")
        return cls(
            media_type=_str(gojson.field(obj, "mediaType"), what),
            digest=_str(gojson.field(obj, "digest"), what),
            size=_int(gojson.field(obj, "size"), what),
            urls=tuple(_str(u, what) for u in _list(gojson.field(obj, "urls") or (), what)),
            annotations=_annotations(gojson.field(obj, "annotations"), what),
            data=data,
            platform=None if platform is None else Platform.from_go(platform, what),
            artifact_type=_str(gojson.field(obj, "artifactType"), what),
        )

    def with_annotations(self, annotations: Mapping[str, str] | None) -> Descriptor:
        return replace(self, annotations=dict(annotations) if annotations else None)


@dataclass(frozen=True, slots=True)
class Manifest:
    config: Descriptor
    layers: tuple[Descriptor, ...] | None
    schema_version: int = 2
    media_type: str = ""
    artifact_type: str = ""
    subject: Descriptor | None = None
    annotations: Mapping[str, str] | None = None

    def to_go(self) -> dict[str, Any]:
        out: dict[str, Any] = {"schemaVersion": self.schema_version}
        if self.media_type:
            out["mediaType"] = self.media_type
        if self.artifact_type:
            out["artifactType"] = self.artifact_type
        out["config"] = self.config.to_go()
        out["layers"] = None if self.layers is None else [d.to_go() for d in self.layers]
        if self.subject is not None:
            out["subject"] = self.subject.to_go()
        if self.annotations:
            out["annotations"] = GoMap(self.annotations)
        return out

    def marshal(self) -> bytes:
        return gojson.marshal(self.to_go())

    @classmethod
    def from_go(cls, obj: Any, what: str) -> Manifest:
        obj = _require_object(obj, what)
        config = gojson.field(obj, "config")
        layers = gojson.field(obj, "layers")
        subject = gojson.field(obj, "subject")
        return cls(
            schema_version=_int(gojson.field(obj, "schemaVersion"), what),
            media_type=_str(gojson.field(obj, "mediaType"), what),
            artifact_type=_str(gojson.field(obj, "artifactType"), what),
            config=Descriptor.from_go(config if config is not None else {}, f"{what} config"),
            layers=None
            if layers is None
            else tuple(Descriptor.from_go(d, f"{what} layer {i}") for i, d in enumerate(_list(layers, what))),
            subject=None if subject is None else Descriptor.from_go(subject, f"{what} subject"),
            annotations=_annotations(gojson.field(obj, "annotations"), what),
        )

    @classmethod
    def unmarshal(cls, data: bytes, what: str = "manifest") -> Manifest:
        return cls.from_go(gojson.unmarshal_object(data, what), what)


@dataclass(frozen=True, slots=True)
class Index:
    manifests: tuple[Descriptor, ...] | None
    schema_version: int = 2
    media_type: str = ""
    artifact_type: str = ""
    subject: Descriptor | None = None
    annotations: Mapping[str, str] | None = None

    def to_go(self) -> dict[str, Any]:
        out: dict[str, Any] = {"schemaVersion": self.schema_version}
        if self.media_type:
            out["mediaType"] = self.media_type
        if self.artifact_type:
            out["artifactType"] = self.artifact_type
        out["manifests"] = None if self.manifests is None else [d.to_go() for d in self.manifests]
        if self.subject is not None:
            out["subject"] = self.subject.to_go()
        if self.annotations:
            out["annotations"] = GoMap(self.annotations)
        return out

    def marshal(self) -> bytes:
        return gojson.marshal(self.to_go())

    @classmethod
    def from_go(cls, obj: Any, what: str) -> Index:
        obj = _require_object(obj, what)
        manifests = gojson.field(obj, "manifests")
        subject = gojson.field(obj, "subject")
        return cls(
            schema_version=_int(gojson.field(obj, "schemaVersion"), what),
            media_type=_str(gojson.field(obj, "mediaType"), what),
            artifact_type=_str(gojson.field(obj, "artifactType"), what),
            manifests=None
            if manifests is None
            else tuple(Descriptor.from_go(d, f"{what} manifest {i}") for i, d in enumerate(_list(manifests, what))),
            subject=None if subject is None else Descriptor.from_go(subject, f"{what} subject"),
            annotations=_annotations(gojson.field(obj, "annotations"), what),
        )

    @classmethod
    def unmarshal(cls, data: bytes, what: str = "image index") -> Index:
        return cls.from_go(gojson.unmarshal_object(data, what), what)


def is_layer_media_type(media_type: str) -> bool:
    """containerd's images.IsLayerType: OCI layer types and Docker rootfs diff types."""
    if media_type.startswith("application/vnd.oci.image.layer."):
        return True
    return media_type in (MEDIA_TYPE_DOCKER_LAYER, MEDIA_TYPE_DOCKER_LAYER_GZIP, MEDIA_TYPE_DOCKER_FOREIGN_LAYER_GZIP)


def layer_compression(media_type: str) -> str:
    """containerd's images.DiffCompression: "gzip", "zstd", "" (plain tar), "unknown", or raise FormatError."""
    if media_type in (MEDIA_TYPE_DOCKER_LAYER_GZIP, MEDIA_TYPE_DOCKER_FOREIGN_LAYER_GZIP):
        return "gzip"
    if media_type == MEDIA_TYPE_DOCKER_LAYER:
        return "unknown"
    if media_type.startswith("application/vnd.oci.image.layer."):
        suffix = media_type.split("+", 1)[1] if "+" in media_type else ""
        if suffix in ("", "gzip", "zstd"):
            return suffix
        raise FormatError(f"unrecognised layer compression in media type {media_type!r}")
    raise FormatError(f"not a layer media type: {media_type!r}")


def _require_object(obj: Any, what: str) -> dict[str, Any]:
    if not isinstance(obj, dict):
        raise FormatError(f"{what}: expected a JSON object")
    return obj


def _str(value: Any, what: str) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise FormatError(f"{what}: expected a string, got {value!r}")
    return value


def _int(value: Any, what: str) -> int:
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int):
        raise FormatError(f"{what}: expected an integer, got {value!r}")
    return value


def _list(value: Any, what: str) -> list[Any]:
    if not isinstance(value, list | tuple):
        raise FormatError(f"{what}: expected a JSON array, got {value!r}")
    return list(value)


def _annotations(value: Any, what: str) -> dict[str, str] | None:
    if value is None:
        return None
    obj = _require_object(value, f"{what} annotations")
    return {str(k): _str(v, f"{what} annotation {k!r}") for k, v in obj.items()}

from __future__ import annotations

import pytest

from soci.errors import FormatError
from soci.formats.oci import (
    MEDIA_TYPE_OCI_INDEX,
    Descriptor,
    Index,
    Manifest,
    Platform,
    is_layer_media_type,
    layer_compression,
)
from soci.formats.platforms import format_platform, matches_strict, parse_platform

UMOCI_MANIFEST = (
    b'{"schemaVersion":2,"config":{"mediaType":"application/vnd.oci.image.config.v1+json",'
    b'"digest":"sha256:' + b"1" * 64 + b'","size":10},"layers":[{"mediaType":'
    b'"application/vnd.oci.image.layer.v1.tar+gzip","digest":"sha256:' + b"2" * 64 + b'","size":5}]}'
)


def test_manifest_round_trip_is_go_canonical() -> None:
    m = Manifest.unmarshal(UMOCI_MANIFEST)
    assert m.marshal() == UMOCI_MANIFEST  # umoci leaves out mediaType; so does Go's omitempty


def test_unknown_fields_dropped_and_order_canonicalised() -> None:
    data = (
        b'{"layers":[],"extra":1,"config":{"size":2,"digest":"sha256:' + b"3" * 64 + b'","mediaType":"x",'
        b'"annotations":{"b":"1","a":"2"}},"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json"}'
    )
    assert Manifest.unmarshal(data).marshal() == (
        b'{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"x",'
        b'"digest":"sha256:' + b"3" * 64 + b'","size":2,"annotations":{"a":"2","b":"1"}},"layers":[]}'
    )


def test_descriptor_field_order_with_every_field() -> None:
    d = Descriptor(
        media_type="m",
        digest="sha256:" + "4" * 64,
        size=7,
        urls=("u",),
        annotations={"k": "v"},
        data=b"hi",
        platform=Platform(architecture="arm64", os="linux", variant="v8", os_features=("f",), os_version="1"),
        artifact_type="t",
    )
    index = Index(schema_version=2, media_type=MEDIA_TYPE_OCI_INDEX, manifests=(d,))
    assert index.marshal() == (
        b'{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{"mediaType":"m",'
        b'"digest":"sha256:' + b"4" * 64 + b'","size":7,"urls":["u"],"annotations":{"k":"v"},"data":"aGk=",'
        b'"platform":{"architecture":"arm64","os":"linux","os.version":"1","os.features":["f"],"variant":"v8"},'
        b'"artifactType":"t"}]}'
    )
    assert Index.unmarshal(index.marshal()) == index


@pytest.mark.parametrize(
    "data", [b"", b"[]", b"{", b'{"config":{"size":"x"}}', b'{"layers":{}}', b'{"config":{"data":"!!"}}']
)
def test_malformed_manifests_raise_format_error(data: bytes) -> None:
    with pytest.raises(FormatError):
        Manifest.unmarshal(data)


def test_layer_media_types() -> None:
    assert layer_compression("application/vnd.oci.image.layer.v1.tar+gzip") == "gzip"
    assert layer_compression("application/vnd.oci.image.layer.v1.tar") == ""
    assert layer_compression("application/vnd.oci.image.layer.v1.tar+zstd") == "zstd"
    assert layer_compression("application/vnd.docker.image.rootfs.diff.tar.gzip") == "gzip"
    assert layer_compression("application/vnd.docker.image.rootfs.diff.tar") == "unknown"
    with pytest.raises(FormatError):
        layer_compression("application/vnd.oci.image.layer.v1.tar+lz4")
    assert not is_layer_media_type("application/vnd.amazon.soci.prefetch.v1+json")


def test_platforms() -> None:
    assert format_platform(parse_platform("linux/x86_64")) == "linux/amd64"
    assert format_platform(parse_platform("linux/arm64/v8")) == "linux/arm64"
    assert format_platform(parse_platform("linux/arm")) == "linux/arm/v7"
    assert matches_strict(parse_platform("linux/amd64"), Platform(architecture="amd64", os="linux"))
    assert not matches_strict(parse_platform("linux/arm64"), Platform(architecture="amd64", os="linux"))
    with pytest.raises(Exception, match="invalid platform"):
        parse_platform("linux//amd64")

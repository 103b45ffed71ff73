from __future__ import annotations

import hashlib

import pytest

from soci.errors import FormatError
from soci.formats import soci_index as si
from soci.formats.oci import Descriptor

LAYER = Descriptor("application/vnd.oci.image.layer.v1.tar+gzip", "sha256:" + "a" * 64, 123)
IMAGE = Descriptor("application/vnd.oci.image.manifest.v1+json", "sha256:" + "b" * 64, 456,
                   annotations={"x": "y"})  # fmt: skip
ZTOC = "sha256:" + "c" * 64


def test_empty_config_digest_is_sha256_of_braces() -> None:
    assert "sha256:" + hashlib.sha256(si.EMPTY_CONFIG).hexdigest() == si.EMPTY_CONFIG_DIGEST


def test_v1_index_manifest_bytes() -> None:
    ztoc = si.ztoc_descriptor(ZTOC, 99, LAYER, 4194304, disable_xattrs=True)
    index = si.index_from_manifest(si.build_index_manifest([ztoc], artifact_type=si.ARTIFACT_TYPE_V1, subject=IMAGE))
    assert index.data == (
        b'{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json",'
        b'"config":{"mediaType":"application/vnd.amazon.soci.index.v1+json",'
        b'"digest":"sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a","size":2},'
        b'"layers":[{"mediaType":"application/octet-stream","digest":"sha256:' + b"c" * 64 + b'","size":99,'
        b'"annotations":{"com.amazon.soci.disable-xattrs":"true",'
        b'"com.amazon.soci.image-layer-digest":"sha256:' + b"a" * 64 + b'",'
        b'"com.amazon.soci.image-layer-mediaType":"application/vnd.oci.image.layer.v1.tar+gzip",'
        b'"com.amazon.soci.span-size":"4194304"}}],'
        b'"subject":{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:' + b"b" * 64 + b'",'
        b'"size":456},'
        b'"annotations":{"com.amazon.soci.build-tool-identifier":"AWS SOCI CLI v0.2"}}'
    )
    assert index.digest == "sha256:" + hashlib.sha256(index.data).hexdigest()
    parsed = si.parse_index(index.data)
    assert parsed == index and parsed.version == "v1"
    assert parsed.ztoc_for_layer(LAYER.digest) == ztoc


def test_v2_index_has_no_subject() -> None:
    ztoc = si.ztoc_descriptor(ZTOC, 99, LAYER, 65536, disable_xattrs=False)
    index = si.index_from_manifest(si.build_index_manifest([ztoc], artifact_type=si.ARTIFACT_TYPE_V2, subject=IMAGE))
    assert b'"subject"' not in index.data
    assert b'"com.amazon.soci.disable-xattrs"' not in index.data
    assert si.parse_index(index.data).version == "v2"


def test_parse_index_rejects_unknown_version() -> None:
    data = b'{"schemaVersion":2,"config":{"mediaType":"application/json","digest":"x","size":2},"layers":[]}'
    with pytest.raises(FormatError, match="unknown index version"):
        si.parse_index(data)


def test_non_canonical_index_gets_different_digest() -> None:
    ztoc = si.ztoc_descriptor(ZTOC, 99, LAYER, 65536, disable_xattrs=False)
    index = si.index_from_manifest(si.build_index_manifest([ztoc], artifact_type=si.ARTIFACT_TYPE_V1, subject=IMAGE))
    pretty = index.data.replace(b",", b", ")
    reparsed = si.parse_index(pretty)
    assert reparsed.data == index.data
    assert reparsed.digest != "sha256:" + hashlib.sha256(pretty).hexdigest()


def test_prefetch_round_trip_and_merge() -> None:
    spans = si.merge_span_ranges([(5, 6), (0, 1), (2, 3), (9, 9), (6, 7)])
    assert [(s.start_span, s.end_span) for s in spans] == [(0, 3), (5, 7), (9, 9)]
    data = si.marshal_prefetch(spans)
    assert data == (b'{"version":"1.0","prefetch_spans":[{"start_span":0,"end_span":3},'
                    b'{"start_span":5,"end_span":7},{"start_span":9,"end_span":9}]}')  # fmt: skip
    assert si.parse_prefetch(data) == spans


@pytest.mark.parametrize(
    "data",
    [
        b'{"version":"2.0","prefetch_spans":[{"start_span":0,"end_span":0}]}',
        b'{"version":"1.0","prefetch_spans":[]}',
        b'{"version":"1.0","prefetch_spans":[{"start_span":3,"end_span":1}]}',
        b'{"version":"1.0","prefetch_spans":[{"start_span":-1,"end_span":1}]}',
        b"not json",
    ],
)
def test_bad_prefetch_rejected(data: bytes) -> None:
    with pytest.raises(FormatError):
        si.parse_prefetch(data)

"""Load order documents: building from reads, canonical bytes, validation."""

from __future__ import annotations

import itertools
import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from soci.errors import FormatError
from soci.formats import load_order as lo

L1 = "sha256:" + "1" * 64
L2 = "sha256:" + "2" * 64


def _reads(shift_ns: int = 0) -> list[lo.Read]:
    return [
        lo.Read(shift_ns + 5_000_000, L2, "usr/bin/python3", 0, 131072),
        lo.Read(shift_ns + 6_000_000, L1, "etc/ld.so.cache", 0, 1000),
        lo.Read(shift_ns + 7_000_000, L2, "usr/bin/python3", 131072, 65536),  # touches the first: merged
        lo.Read(shift_ns + 8_000_000, L2, "usr/lib/big.bin", 1 << 20, 100),  # sub-file
        lo.Read(shift_ns + 9_000_000, L2, "usr/lib/big.bin", 0, 4096),
    ]


def test_build_merges_aligns_and_orders_by_first_access() -> None:
    doc = lo.build_load_order("py", _reads(), layers=[L1, L2])
    assert [e.digest for e in doc.layers] == [L1, L2]
    assert doc.layers[0].segments == (lo.Segment("etc/ld.so.cache", 0, 4096, 1),)
    assert doc.layers[1].segments == (
        lo.Segment("usr/bin/python3", 0, 196608, 0),
        lo.Segment("usr/lib/big.bin", 1 << 20, 4096, 3),
        lo.Segment("usr/lib/big.bin", 0, 4096, 4),
    )
    assert doc.annotations[lo.ANNOTATION_NAME] == "py"


def test_identity_bytes_ignore_times_and_round_trip() -> None:
    a = lo.build_load_order("py", _reads(), layers=[L1, L2])
    b = lo.build_load_order("py", [lo.Read(r.time_ns * 3 + 17, r.layer, r.path, r.offset, r.length) for r in _reads()],
                            layers=[L1, L2])  # fmt: skip
    assert lo.marshal(a) != lo.marshal(b)
    assert lo.identity_bytes(a) == lo.identity_bytes(b)
    assert lo.parse(lo.marshal(a)) == a
    text = lo.marshal(a).decode()
    assert text == json.dumps(json.loads(text), sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def test_cap_drops_latest_segments_and_says_so() -> None:
    reads = [lo.Read(i, L1, f"f{i}", 0, 1) for i in range(10)]
    doc = lo.build_load_order("w", reads, max_segments=4)
    assert [s.path for s in doc.layers[0].segments] == ["f0", "f1", "f2", "f3"]
    assert doc.annotations[lo.ANNOTATION_TRUNCATED] == "6"


def _doc(**changes: Any) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "version": "1",
        "mediaType": lo.MEDIA_TYPE_LOAD_ORDER,
        "name": "w",
        "annotations": {},
        "layers": [{"digest": L1, "segments": [{"path": "a/b", "offset": 0, "length": 4096, "time_ms": 0}]}],
    }
    obj.update(changes)
    return obj


def _segment(**changes: Any) -> dict[str, Any]:
    return _doc(layers=[{"digest": L1, "segments": [{"path": "a/b", "offset": 0, "length": 1, **changes}]}])


@pytest.mark.parametrize(
    ("obj", "message"),
    [
        (_doc(version="2"), "unsupported version"),
        (_doc(mediaType="application/json"), "media type"),
        (_doc(name="../x"), "name"),
        (_doc(layers={}), "layers must be an array"),
        (_doc(layers=[{"digest": "sha256:12", "segments": []}]), "not a sha256 digest"),
        (_doc(layers=[{"digest": L1, "segments": []}, {"digest": L1, "segments": []}]), "listed twice"),
        (_segment(path="/etc/passwd"), "clean relative path"),
        (_segment(path="a/../b"), "clean relative path"),
        (_segment(length=0), "length must be positive"),
        (_segment(offset=-1), "non-negative integer"),
        (_segment(offset=True), "non-negative integer"),
        (_segment(spans=[3, 1]), "ends before it starts"),
        (_doc(annotations={"a": 1}), "annotations"),
    ],
)
def test_malformed_documents_are_rejected_with_a_named_field(obj: dict[str, Any], message: str) -> None:
    with pytest.raises(FormatError, match=message):
        lo.parse(json.dumps(obj).encode())


def test_not_json_and_oversized() -> None:
    with pytest.raises(FormatError, match="invalid JSON"):
        lo.parse(b"{")
    with pytest.raises(FormatError, match="over the limit"):
        lo.parse(b" " * (lo.MAX_DOCUMENT_BYTES + 1))
    too_many = _doc(layers=[{"digest": L1, "segments": [{"path": "a", "offset": i, "length": 1}
                                                         for i in range(lo.MAX_SEGMENTS + 1)]}])  # fmt: skip
    with pytest.raises(FormatError, match=r"segments|over the limit"):
        lo.parse(json.dumps(too_many).encode())


def test_check_layers_rejects_a_document_for_another_image() -> None:
    doc = lo.parse(json.dumps(_doc()).encode())
    lo.check_layers(doc, [L2, L1])
    with pytest.raises(FormatError, match="does not have"):
        lo.check_layers(doc, [L2])


@given(st.lists(st.tuples(st.integers(0, 1 << 20), st.integers(1, 1 << 16)), min_size=1, max_size=40))
def test_merged_segments_cover_every_read_and_never_overlap(ranges: list[tuple[int, int]]) -> None:
    reads = [lo.Read(i, L1, "f", off, n) for i, (off, n) in enumerate(ranges)]
    segments = sorted(lo.build_load_order("w", reads).layers[0].segments, key=lambda s: s.offset)
    for a, b in itertools.pairwise(segments):
        assert a.end < b.offset
    for off, n in ranges:
        assert any(s.offset <= off and off + n <= s.end for s in segments)
    assert all(s.offset % lo.ALIGNMENT == 0 and s.length % lo.ALIGNMENT == 0 for s in segments)


def test_ztoc_metadata_round_trips_and_needs_its_ztoc() -> None:
    packed = lo.encode_ztoc_metadata(b"ztoc bytes" * 100)
    document = lo.LoadOrder("w", (lo.LayerLoadOrder(L1, (), "sha256:" + "3" * 64, (), packed),))
    parsed = lo.parse(lo.marshal(document))
    assert parsed == document
    assert lo.decode_ztoc_metadata(parsed.layers[0].ztoc_metadata) == b"ztoc bytes" * 100
    obj = json.loads(lo.marshal(document))
    del obj["layers"][0]["ztoc"]
    with pytest.raises(FormatError, match=r"layers\[0\]: ztoc_metadata needs the ztoc"):
        lo.parse(json.dumps(obj).encode())
    obj["layers"][0]["ztoc"] = "sha256:" + "3" * 64
    obj["layers"][0]["ztoc_metadata"] = "not base64!"
    with pytest.raises(FormatError, match=r"layers\[0\]: ztoc_metadata is not base64"):
        lo.parse(json.dumps(obj).encode())
    obj["layers"][0]["ztoc_metadata"] = 7
    with pytest.raises(FormatError, match=r"layers\[0\]: ztoc_metadata must be a string"):
        lo.parse(json.dumps(obj).encode())


def test_ztoc_metadata_that_is_not_zlib_or_too_large_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(FormatError, match="zm: not zlib data"):
        lo.decode_ztoc_metadata(b"plain", "zm")
    with pytest.raises(FormatError, match="zm: truncated"):
        lo.decode_ztoc_metadata(lo.encode_ztoc_metadata(b"x" * 1000)[:-3], "zm")
    with pytest.raises(FormatError, match="zm: truncated, or followed"):
        lo.decode_ztoc_metadata(lo.encode_ztoc_metadata(b"x") + b"tail", "zm")
    monkeypatch.setattr(lo, "MAX_ZTOC_METADATA_BYTES", 1 << 20)
    bomb = lo.encode_ztoc_metadata(bytes(64 << 20))  # 64 KiB that inflate to 64 MiB
    with pytest.raises(FormatError, match="zm: inflates to more than 1048576 bytes"):
        lo.decode_ztoc_metadata(bomb, "zm")
    assert lo.decode_ztoc_metadata(lo.encode_ztoc_metadata(bytes(1 << 20)), "zm") == bytes(1 << 20)


def test_ztoc_metadata_is_split_off_into_its_own_blob_and_joined_back() -> None:
    z1, z2 = "sha256:" + "3" * 64, "sha256:" + "4" * 64
    m1, m2 = lo.encode_ztoc_metadata(b"first" * 50), lo.encode_ztoc_metadata(b"second" * 50)
    segment = lo.Segment("a", 0, 4096)
    document = lo.LoadOrder(
        "w", (lo.LayerLoadOrder(L1, (segment,), z1, (), m1), lo.LayerLoadOrder("sha256:" + "5" * 64, (), z2, (), m2))
    )
    bare, blob = lo.split_ztoc_metadata(document)
    assert [entry.ztoc_metadata for entry in bare.layers] == [b"", b""]
    assert [entry.ztoc for entry in bare.layers] == [z1, z2]  # the layers still name their zTOCs
    assert b"ztoc_metadata" not in lo.marshal(bare)
    assert lo.parse_ztoc_metadata(blob) == {z1: m1, z2: m2}
    assert lo.join_ztoc_metadata(lo.parse(lo.marshal(bare)), lo.parse_ztoc_metadata(blob)) == document
    assert lo.split_ztoc_metadata(bare) == (bare, b"")  # nothing to split
    with pytest.raises(FormatError, match=f"w: zTOC metadata for {z1}, which no layer"):
        lo.join_ztoc_metadata(document, {z1: m1}, "w")  # the document has its own already
    with pytest.raises(FormatError, match="which no layer"):
        lo.join_ztoc_metadata(bare, {"sha256:" + "9" * 64: m1})


@pytest.mark.parametrize(
    ("mangle", "message"),
    [
        (lambda b: b"x" + b, "bad magic"),
        (lambda b: b[:-3], "truncated or empty"),
        (lambda b: b[: len(b"soci-py ztoc metadata 1\n") + 3], "record at byte 24 is truncated"),
        (lambda b: b.replace(b"sha256:" + b"3" * 64, b"sha256:" + b"Z" * 64), "is not a sha256 digest"),
        (lambda b: b + b[len(b"soci-py ztoc metadata 1\n") :], "is listed twice"),
    ],
)
def test_malformed_ztoc_metadata_blobs_are_rejected(mangle: Any, message: str) -> None:
    blob = lo.marshal_ztoc_metadata({"sha256:" + "3" * 64: lo.encode_ztoc_metadata(b"z" * 100)})
    with pytest.raises(FormatError, match=f"zm: .*{message}"):
        lo.parse_ztoc_metadata(mangle(blob), "zm")

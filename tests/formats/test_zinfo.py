"""Checkpoint tables (soci.formats.zinfo): blob layout, version inference, span arithmetic, TarZinfo flatbuffer."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from soci.errors import FormatError, InvalidArgument
from soci.formats.zinfo import (
    CHECKPOINT_RECORD_SIZE,
    WINDOW_SIZE,
    Checkpoint,
    GzipZinfo,
    TarZinfo,
    without_windows,
    zinfo_from_blob,
)

ZERO_WINDOW = bytes(WINDOW_SIZE)


def header(count: int, span: int) -> bytes:
    return struct.pack("<iq", count, span)


def record(cin: int, cout: int, bits: int, window: bytes) -> bytes:
    return struct.pack("<qqB", cin, cout, bits) + window


@st.composite
def checkpoint_lists(draw: st.DrawFn) -> list[Checkpoint]:
    """Increasing checkpoints whose windows differ (a byte pattern per checkpoint)."""
    count = draw(st.integers(1, 6))
    ins = sorted(draw(st.lists(st.integers(10, 2**40), min_size=count, max_size=count, unique=True)))
    outs = sorted(draw(st.lists(st.integers(1, 2**42), min_size=count - 1, max_size=count - 1, unique=True)))
    points = []
    for i, (cin, cout) in enumerate(zip(ins, [0, *outs], strict=True)):
        bits = 0 if i == 0 else draw(st.integers(0, 7))
        points.append(Checkpoint(cin, cout, bits, bytes([i + 1]) * 7 + bytes(WINDOW_SIZE - 7)))
    return points


def test_record_layout_is_in_out_bits_window_little_endian() -> None:
    window = bytes(range(256)) * (WINDOW_SIZE // 256)
    points = [Checkpoint(10, 0, 0, ZERO_WINDOW), Checkpoint(0x0102030405, 0x060708090A, 5, window)]
    blob = GzipZinfo.from_checkpoints(65536, points).to_blob()
    expected = header(2, 65536) + record(10, 0, 0, ZERO_WINDOW) + record(0x0102030405, 0x060708090A, 5, window)
    assert blob == expected
    assert blob[12 + CHECKPOINT_RECORD_SIZE : 12 + CHECKPOINT_RECORD_SIZE + 8] == bytes.fromhex("0504030201000000")


@settings(max_examples=60, deadline=None)
@given(points=checkpoint_lists(), span=st.integers(0, 2**40))
def test_v2_round_trip(points: list[Checkpoint], span: int) -> None:
    built = GzipZinfo.from_checkpoints(span, points)
    parsed = GzipZinfo.from_blob(built.to_blob())
    assert parsed.version == 2 and parsed.span_size == span and len(parsed) == len(points)
    assert [parsed.checkpoint(i) for i in range(len(parsed))] == points
    assert parsed.to_blob() == built.to_blob()
    assert len(parsed.to_blob()) == 12 + CHECKPOINT_RECORD_SIZE * len(points)


@settings(max_examples=40, deadline=None)
@given(points=checkpoint_lists(), span=st.integers(0, 2**40))
def test_v1_round_trip_keeps_checkpoint_zero_out_of_the_blob(points: list[Checkpoint], span: int) -> None:
    points[0] = Checkpoint(10, 0, 0, ZERO_WINDOW)
    v1 = GzipZinfo.from_checkpoints(span, points, version=1)
    blob = v1.to_blob()
    assert len(blob) == 12 + CHECKPOINT_RECORD_SIZE * (len(points) - 1)
    assert blob[:4] == len(points).to_bytes(4, "little")  # the count still includes checkpoint 0
    parsed = GzipZinfo.from_blob(blob)
    assert parsed.version == 1
    assert [parsed.checkpoint(i) for i in range(len(parsed))] == points
    assert parsed.to_blob() == blob
    # same table as v2 has one more record
    v2 = GzipZinfo.from_checkpoints(span, points).to_blob()
    assert v2[12 + CHECKPOINT_RECORD_SIZE :] == blob[12:]


def test_twelve_byte_edge_cases_from_upstream_tests() -> None:
    empty_v2 = GzipZinfo.from_blob(bytes.fromhex("00000000" + "0000000000000000"))
    assert (empty_v2.version, len(empty_v2), empty_v2.max_span_id) == (2, 0, -1)
    one_v1 = GzipZinfo.from_blob(bytes.fromhex("01000000" + "0000000000000000"))
    assert (one_v1.version, len(one_v1)) == (1, 1)
    assert one_v1.checkpoint(0) == Checkpoint(10, 0, 0, ZERO_WINDOW)
    assert one_v1.to_blob() == bytes.fromhex("01000000" + "0000000000000000")
    with pytest.raises(FormatError, match="255 checkpoints"):
        GzipZinfo.from_blob(bytes.fromhex("FF000000" + "0000000000000000"))


@pytest.mark.parametrize(
    "blob",
    [
        b"",
        b"\x00" * 11,
        header(0, 0) + b"\x00",
        header(1, 0),  # v1 would be fine only with exactly zero stored records...
        header(2, 0) + record(10, 0, 0, ZERO_WINDOW)[:-1],
        header(3, 0) + record(10, 0, 0, ZERO_WINDOW),
        header(-1, 0),
        header(-1, 0) + record(10, 0, 0, ZERO_WINDOW),
    ],
)
def test_bad_blobs_are_rejected(blob: bytes) -> None:
    if blob == header(1, 0):
        # ...which is exactly this blob: accepted as v1 with its synthesized checkpoint.
        assert GzipZinfo.from_blob(blob).version == 1
        return
    with pytest.raises(FormatError, match="gzip zinfo"):
        GzipZinfo.from_blob(blob)


def test_from_checkpoints_validates_its_input() -> None:
    with pytest.raises(InvalidArgument, match="window"):
        GzipZinfo.from_checkpoints(1, [Checkpoint(10, 0, 0, b"short")])
    with pytest.raises(InvalidArgument, match="bits"):
        GzipZinfo.from_checkpoints(1, [Checkpoint(10, 0, 8, ZERO_WINDOW)])
    with pytest.raises(InvalidArgument, match="checkpoint 0"):
        GzipZinfo.from_checkpoints(1, [Checkpoint(18, 0, 0, ZERO_WINDOW)], version=1)
    with pytest.raises(InvalidArgument, match="version"):
        GzipZinfo.from_checkpoints(1, [], version=3)


def linear_span_of(outs: list[int], offset: int) -> int:
    """Upstream's scan: advance while the next checkpoint starts at or before the offset."""
    i = 0
    while i + 1 < len(outs) and outs[i + 1] <= offset:
        i += 1
    return i


@settings(max_examples=80, deadline=None)
@given(points=checkpoint_lists(), offsets=st.lists(st.integers(-5, 2**43), max_size=20), sizes=st.integers(0, 2**20))
def test_span_arithmetic(points: list[Checkpoint], offsets: list[int], sizes: int) -> None:
    zinfo = GzipZinfo.from_checkpoints(1 << 20, points)
    outs = [p.uncompressed_offset for p in points]
    compressed_size = points[-1].compressed_offset + sizes
    uncompressed_size = outs[-1] + sizes
    for offset in offsets + outs + [o - 1 for o in outs]:
        span = zinfo.span_of(offset)
        assert span == linear_span_of(outs, offset)
        if offset >= 0:
            assert zinfo.start_uncompressed_offset(span) <= offset
            assert offset < zinfo.end_uncompressed_offset(span, uncompressed_size) or span == zinfo.max_span_id
    for i, p in enumerate(points):
        assert zinfo.start_compressed_offset(i) == p.compressed_offset - (1 if p.bits else 0)
        last = i == len(points) - 1
        assert zinfo.end_compressed_offset(i, compressed_size) == (
            compressed_size if last else points[i + 1].compressed_offset
        )
        assert zinfo.end_uncompressed_offset(i, uncompressed_size) == (uncompressed_size if last else outs[i + 1])
    for bad in (-1, len(points)):
        with pytest.raises(InvalidArgument, match="span id"):
            zinfo.start_compressed_offset(bad)


def test_span_of_without_checkpoints_is_an_error() -> None:
    with pytest.raises(FormatError):
        GzipZinfo.from_blob(header(0, 0)).span_of(0)


# Bytes produced by Go's github.com/google/flatbuffers v25.12.19 builder with upstream's call order
# (NewBuilder(0); StartObject(3); PrependInt32Slot(0, version, 0); PrependInt64Slot(1, span, 0);
# PrependInt64Slot(2, size, 0); Finish(EndObject())), run once on this machine.
GO_TAR_ZINFO = [
    (
        2,
        4194304,
        12345,
        "140000000000000000000a001c0018000c0004000a000000393000000000000000004000000000000000000002000000",
    ),
    (2, 65536, 0, "0c00000008001400100004000800000000000100000000000000000002000000"),
    (2, 1, 1 << 40, "140000000000000000000a001c0018000c0004000a000000000000000001000001000000000000000000000002000000"),
    (0, 4194304, 1, "140000000000000000000a00140000000c0004000a00000001000000000000000000400000000000"),
]


@pytest.mark.parametrize(("version", "span", "size", "hexbytes"), GO_TAR_ZINFO)
def test_tar_zinfo_bytes_match_go_flatbuffers(version: int, span: int, size: int, hexbytes: str) -> None:
    built = TarZinfo(span, size, version)
    assert built.to_blob().hex() == hexbytes
    parsed = TarZinfo.from_blob(bytes.fromhex(hexbytes))
    assert (parsed.version, parsed.span_size, parsed.size) == (version, span, size)


def vtable_fields(blob: bytes) -> dict[int, int]:
    """Field id -> offset within the table, read straight from the flatbuffer's vtable."""
    table = struct.unpack_from("<I", blob, 0)[0]
    vtable = table - struct.unpack_from("<i", blob, table)[0]
    vt_size = struct.unpack_from("<H", blob, vtable)[0]
    slots = [struct.unpack_from("<H", blob, vtable + 4 + 2 * i)[0] for i in range((vt_size - 4) // 2)]
    return {i: off for i, off in enumerate(slots) if off}


@settings(max_examples=60, deadline=None)
@given(span=st.integers(1, 2**62), size=st.integers(0, 2**62))
def test_tar_zinfo_round_trip_and_default_omission(span: int, size: int) -> None:
    blob = TarZinfo(span, size).to_blob()
    parsed = TarZinfo.from_blob(blob)
    assert (parsed.version, parsed.span_size, parsed.size) == (2, span, size)
    fields = vtable_fields(blob)
    assert set(fields) == {0, 1} | ({2} if size else set())
    table = struct.unpack_from("<I", blob, 0)[0]
    assert struct.unpack_from("<i", blob, table + fields[0])[0] == 2
    assert struct.unpack_from("<q", blob, table + fields[1])[0] == span


@settings(max_examples=100, deadline=None)
@given(span=st.integers(1, 5_000), size=st.integers(0, 200_000))
def test_tar_zinfo_spans(span: int, size: int) -> None:
    size %= span * 500 + 1  # keep the walk below short
    zinfo = TarZinfo(span, size)
    expected_spans = -(-size // span)  # ceil
    assert zinfo.max_span_id == expected_spans - 1 and len(zinfo) == expected_spans
    covered = 0
    for i in range(len(zinfo)):
        assert zinfo.start_compressed_offset(i) == zinfo.start_uncompressed_offset(i) == covered
        end = zinfo.end_compressed_offset(i, size)
        assert end == zinfo.end_uncompressed_offset(i, size)
        assert 0 < end - covered <= span
        assert zinfo.span_of(covered) == zinfo.span_of(end - 1) == i
        covered = end
    assert covered == size


def test_tar_zinfo_span_zero_is_a_format_error() -> None:
    with pytest.raises(FormatError, match="span size 0"):
        TarZinfo.from_blob(bytes.fromhex("0c00000000000600080004000600000002000000"))  # Go: version 2, span 0, size 0
    with pytest.raises(FormatError):
        TarZinfo(0, 10)
    with pytest.raises(FormatError):
        TarZinfo(10, -1)


@pytest.mark.parametrize("blob", [b"", b"\x01", b"\xff\xff\xff\x7f" + bytes(8)])
def test_tar_zinfo_garbage_is_a_format_error(blob: bytes) -> None:
    with pytest.raises(FormatError, match="tar zinfo"):
        TarZinfo.from_blob(blob)


def test_dispatch_by_algorithm() -> None:
    gzip_blob = GzipZinfo.from_checkpoints(5, [Checkpoint(10, 0, 0, ZERO_WINDOW)]).to_blob()
    tar_blob = TarZinfo(5, 12).to_blob()
    assert isinstance(zinfo_from_blob("gzip", gzip_blob), GzipZinfo)
    assert isinstance(zinfo_from_blob("uncompressed", tar_blob), TarZinfo)
    assert isinstance(zinfo_from_blob("unknown", tar_blob), TarZinfo)
    with pytest.raises(FormatError, match=r"^not implemented: zstd$"):
        zinfo_from_blob("zstd", tar_blob)
    with pytest.raises(FormatError, match="unexpected compression algorithm"):
        zinfo_from_blob("GZIP", gzip_blob)


@settings(max_examples=30, deadline=None)
@given(points=checkpoint_lists(), span=st.integers(0, 2**40), version=st.sampled_from([1, 2]))
def test_without_windows_keeps_the_table_and_zeroes_only_the_windows(
    points: list[Checkpoint], span: int, version: int
) -> None:
    points[0] = Checkpoint(10, 0, 0, ZERO_WINDOW)
    blob = GzipZinfo.from_checkpoints(span, points, version=version).to_blob()
    stripped = without_windows(blob)
    assert len(stripped) == len(blob)
    parsed = GzipZinfo.from_blob(stripped)
    assert parsed.version == version and parsed.span_size == span
    assert [parsed.checkpoint(i) for i in range(len(parsed))] == [
        Checkpoint(p.compressed_offset, p.uncompressed_offset, p.bits, ZERO_WINDOW) for p in points
    ]
    assert without_windows(stripped) == stripped


def test_without_windows_rejects_what_from_blob_rejects() -> None:
    with pytest.raises(FormatError, match="does not hold"):
        without_windows(header(2, 65536) + b"\0" * 5)

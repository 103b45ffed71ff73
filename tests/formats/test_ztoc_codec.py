"""zTOC codec: upstream's bytes, the flatbuffers runtime driven call by call, the flatc-generated readers,
round trips, the call-order rules of soci-format.md §1.3, and malformed buffers."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import struct
from pathlib import Path
from typing import Any

import flatbuffers
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from soci.errors import FormatError
from soci.formats._fbs.ztoc.Ztoc import Ztoc as FbZtoc
from soci.formats.gotime import format_go_time
from soci.formats.ztoc import ENTRY_TYPES, FileMetadata, Ztoc
from soci.formats.ztoc_codec import marshal_ztoc, unmarshal_ztoc
from soci.testing.ztoc_reference import marshal_with_builder

INT64 = st.integers(min_value=-(2**63), max_value=2**63 - 1)
UINT32 = st.integers(min_value=0, max_value=2**32 - 1)
DIGEST = st.binary(min_size=32, max_size=32).map(lambda b: "sha256:" + b.hex())
MOD_TIME = st.one_of(
    st.builds(lambda s, n: format_go_time(s, n, None), st.integers(-(2**35), 2**35), st.integers(0, 10**9 - 1)),
    st.text(max_size=30),
)


@st.composite
def entries(draw: st.DrawFn) -> tuple[FileMetadata, ...]:
    """Entries in offset order whose offsets leave room for headers, as a real TOC has."""
    out = []
    next_header = 0
    for _ in range(draw(st.integers(0, 12))):
        offset = next_header + 512 * draw(st.integers(1, 4))
        size = draw(st.one_of(st.integers(0, 2000), st.integers(0, 2**40)))
        records = draw(st.dictionaries(st.binary(min_size=1, max_size=30), st.binary(max_size=30), max_size=4))
        out.append(
            FileMetadata(
                name=draw(st.binary(max_size=120)),
                type=draw(st.sampled_from(ENTRY_TYPES)),
                uncompressed_offset=offset,
                uncompressed_size=size,
                linkname=draw(st.binary(max_size=60)),
                mode=draw(st.one_of(st.sampled_from([0, 0o644, 0o755, 0o100644]), INT64)),
                uid=draw(st.one_of(st.just(0), UINT32)),
                gid=draw(st.one_of(st.just(0), UINT32)),
                uname=draw(st.binary(max_size=20)),
                gname=draw(st.binary(max_size=20)),
                mod_time=draw(MOD_TIME),
                devmajor=draw(st.one_of(st.just(0), INT64)),
                devminor=draw(st.one_of(st.just(0), INT64)),
                pax_records=tuple(sorted(records.items())),
            )
        )
        end = offset + size
        next_header = end + (-end % 512)
    return tuple(out)


@st.composite
def ztocs(draw: st.DrawFn) -> Ztoc:
    digests = draw(st.lists(DIGEST, max_size=6))
    return Ztoc(
        compressed_archive_size=draw(st.one_of(st.just(0), INT64)),
        uncompressed_archive_size=draw(st.one_of(st.just(0), INT64)),
        entries=draw(entries()),
        compression_algorithm=draw(st.sampled_from(["gzip", "uncompressed"])),
        max_span_id=draw(st.one_of(st.just(len(digests) - 1), st.integers(-(2**31), 2**31 - 1))),
        span_digests=tuple(digests),
        checkpoints=draw(st.binary(max_size=3000)),
        version=draw(st.sampled_from(["0.9", "", "1.0"])),
        build_tool_identifier=draw(st.one_of(st.just("AWS SOCI CLI v0.2"), st.text(max_size=20))),
    )


def sample_ztoc(algorithm: str = "gzip", /, **entry_fields: Any) -> Ztoc:
    entry = FileMetadata(name=b"a", type="reg", uncompressed_offset=512, uncompressed_size=3, mode=0o644)
    entry = dataclasses.replace(entry, **entry_fields)
    return Ztoc(
        compressed_archive_size=100,
        uncompressed_archive_size=2048,
        entries=(entry,),
        compression_algorithm=algorithm,
        max_span_id=0,
        span_digests=("sha256:" + "ab" * 32,),
        checkpoints=b"\x00" * 12,
    )


def fb_root(data: bytes, offset: int = 0) -> Any:
    """The zTOC through the flatc-generated (untyped) reader."""
    return FbZtoc.GetRootAs(data, offset)  # type: ignore[no-untyped-call]


# ---------------------------------------------------------------------------------------------------------
# upstream's bytes

# Produced by upstream SOCI's ztoc.Marshal (awslabs/soci-snapshotter v0.16.1, flatbuffers v25.12.19, Go 1.26)
# from the two values built in test_upstream_vectors; kept here as literal bytes.
UPSTREAM_EMPTY_GZIP = bytes.fromhex(
    "140000001000140010000c000000000008000400100000001c000000340000003c000000500000000c000c000000000008000400"
    "0c0000000c00000004000000000000000000000000000600080004000600000004000000000000001100000041575320534f4349"
    "20434c492076302e3200000003000000302e3900"
)
UPSTREAM_THREE_ENTRIES = bytes.fromhex(
    "18000000000000001000280024002000100008001c00040010000000300000000028000000000000d20400000000000000000000"
    "e0000000680300007c0300000c001400070010000c0008000c00000000000002b000000008000000010000000200000054000000"
    "04000000470000007368613235363a66666666666666666666666666666666666666666666666666666666666666666666666666"
    "66666666666666666666666666666666666666666666666666666600470000007368613235363a30303030303030303030303030"
    "30303030303030303030303030303030303030303030303030303030303030303030303030303030303030303030303030303000"
    "030000000102030000000600080004000600000004000000030000002c000000d0000000f00100002000340030002c0024000000"
    "200014000000000010000c0008000000000004002000000030000000300000004800000050000000ed0100000000000000000000"
    "4c0000000002000000000000480000004c0000000000000014000000323032342d30312d30325430333a30343a30355a00000000"
    "04000000726f6f740000000004000000726f6f740000000000000000000000000300000064697200040000006574632f00000000"
    "200048004400400034002c0028001c001800140010000c0008000000000004002000000044000000ac000000c8000000cc000000"
    "e8030000e8030000a40100000000000000000000bc0000000500000000000000000600000000000000000000ac000000b0000000"
    "020000003c00000004000000d4ffffff08000000180000000c000000313730343134343834352e3500000000050000006d74696d"
    "6500000008000c000800040008000000080000000c000000010000003100000013000000534348494c592e78617474722e757365"
    "722e61001b000000323032342d30312d30325430333a30343a30352e352b30353a33300001000000670000000100000075000000"
    "00000000000000000300000072656700090000006574632f686f7374730000002000480044004000380000003400280000000000"
    "240020001c0010000800040020000000440000000300000000000000010000000000000000000000300000003400000038000000"
    "b6010000000000000000000030000000000a0000000000002c000000340000000000000000000000000000000000000000000000"
    "00000000000000000000000000000000040000006368617200000000080000006465762f6e756c6c000000001100000041575320"
    "534f434920434c492076302e3200000003000000302e3900"
)


def test_upstream_vectors() -> None:
    empty = Ztoc(
        compressed_archive_size=0,
        uncompressed_archive_size=0,
        entries=(),
        compression_algorithm="gzip",
        max_span_id=0,
        span_digests=(),
        checkpoints=b"",
    )
    three = Ztoc(
        compressed_archive_size=1234,
        uncompressed_archive_size=10240,
        compression_algorithm="uncompressed",
        max_span_id=1,
        span_digests=("sha256:" + "0" * 64, "sha256:" + "f" * 64),
        checkpoints=b"\x01\x02\x03",
        entries=(
            FileMetadata(
                name=b"etc/",
                type="dir",
                uncompressed_offset=512,
                uncompressed_size=0,
                mode=0o755,
                uname=b"root",
                gname=b"root",
                mod_time="2024-01-02T03:04:05Z",
            ),
            FileMetadata(
                name=b"etc/hosts",
                type="reg",
                uncompressed_offset=1536,
                uncompressed_size=5,
                mode=0o644,
                uid=1000,
                gid=1000,
                uname=b"u",
                gname=b"g",
                mod_time="2024-01-02T03:04:05.5+05:30",
                pax_records=((b"SCHILY.xattr.user.a", b"1"), (b"mtime", b"1704144845.5")),
            ),
            FileMetadata(
                name=b"dev/null",
                type="char",
                uncompressed_offset=2560,
                uncompressed_size=0,
                mode=0o666,
                devmajor=1,
                devminor=3,
                mod_time="",
            ),
        ),
    )
    assert marshal_ztoc(empty) == UPSTREAM_EMPTY_GZIP
    assert marshal_ztoc(three) == UPSTREAM_THREE_ENTRIES
    assert unmarshal_ztoc(UPSTREAM_EMPTY_GZIP) == empty
    assert unmarshal_ztoc(UPSTREAM_THREE_ENTRIES) == three


GOLDEN = Path(__file__).resolve().parents[1] / "data" / "golden"


def upstream_ztoc_blobs() -> list[Path]:
    """zTOCs that upstream's CLI wrote into the interop golden layouts (if that data is present)."""
    blobs = []
    for manifest in sorted(GOLDEN.glob("**/index-manifest.json")):
        for layer in json.loads(manifest.read_text()).get("layers", []):
            path = manifest.parent / layer["digest"].split(":", 1)[1]
            if layer["mediaType"] == "application/octet-stream" and path.exists():
                blobs.append(path)
    return blobs


@pytest.mark.parametrize("blob", upstream_ztoc_blobs(), ids=lambda p: p.parent.parent.name + "/" + p.name[:12])
def test_upstream_cli_ztocs_round_trip_byte_for_byte(blob: Path) -> None:
    data = blob.read_bytes()
    z = unmarshal_ztoc(data)
    assert z.entries and z.span_digests
    assert marshal_ztoc(z) == data


# ---------------------------------------------------------------------------------------------------------
# the flatbuffers runtime, driven call by call as upstream drives Go's builder


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(z=ztocs())
def test_same_bytes_as_the_flatbuffers_runtime(z: Ztoc) -> None:
    assert marshal_ztoc(z) == marshal_with_builder(z)


def test_empty_algorithm_string_writes_the_default() -> None:
    z = sample_ztoc("")
    assert marshal_ztoc(z) == marshal_with_builder(z) == marshal_ztoc(sample_ztoc("gzip"))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(z=ztocs())
def test_round_trip(z: Ztoc) -> None:
    assert unmarshal_ztoc(marshal_ztoc(z)) == z


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(z=ztocs())
def test_generated_readers_see_the_same_values(z: Ztoc) -> None:
    root = fb_root(marshal_ztoc(z), 0)
    assert (root.Version() or b"").decode() == z.version
    assert (root.BuildToolIdentifier() or b"").decode() == z.build_tool_identifier
    assert (root.CompressedArchiveSize(), root.UncompressedArchiveSize()) == (
        z.compressed_archive_size,
        z.uncompressed_archive_size,
    )
    toc = root.Toc()
    assert toc.MetadataLength() == len(z.entries)
    for i, e in enumerate(z.entries):
        fm = toc.Metadata(i)
        assert (fm.Name() or b"", (fm.Type() or b"").decode(), fm.Linkname() or b"") == (e.name, e.type, e.linkname)
        assert (fm.UncompressedOffset(), fm.UncompressedSize(), fm.Mode()) == (
            e.uncompressed_offset,
            e.uncompressed_size,
            e.mode,
        )
        assert (fm.Uid(), fm.Gid(), fm.Uname() or b"", fm.Gname() or b"") == (e.uid, e.gid, e.uname, e.gname)
        assert (fm.ModTime() or b"").decode() == e.mod_time
        assert (fm.Devmajor(), fm.Devminor()) == (e.devmajor, e.devminor)
        assert (
            tuple((fm.Xattrs(j).Key() or b"", fm.Xattrs(j).Value() or b"") for j in range(fm.XattrsLength()))
            == e.pax_records
        )
    info = root.CompressionInfo()
    assert info.CompressionAlgorithm() == {"gzip": 1, "uncompressed": 2}[z.compression_algorithm]
    assert info.MaxSpanId() == z.max_span_id
    assert tuple(info.SpanDigests(j).decode() for j in range(info.SpanDigestsLength())) == z.span_digests
    assert bytes(info.Checkpoints(j) for j in range(info.CheckpointsLength())) == z.checkpoints


# ---------------------------------------------------------------------------------------------------------
# call-order rules, checked on the bytes


def _field_offset(table: object, field_id: int) -> int:
    return int(table._tab.Offset(4 + 2 * field_id))  # type: ignore[attr-defined]


def _entry(data: bytes, index: int = 0) -> Any:
    return fb_root(data).Toc().Metadata(index)


def _info(data: bytes) -> Any:
    return fb_root(data, 0).CompressionInfo()


def test_default_scalars_are_absent_from_the_vtable() -> None:
    zero = _entry(marshal_ztoc(sample_ztoc(uid=0, gid=0, mode=0, devmajor=0)))
    set_ = _entry(marshal_ztoc(sample_ztoc(uid=5, gid=6, mode=0o644, devmajor=1)))
    for field_id in (5, 6, 7, 11):  # mode, uid, gid, devmajor
        assert _field_offset(zero, field_id) == 0
        assert _field_offset(set_, field_id) != 0
    # strings are always created, even empty, so their slots are always present
    for field_id in (0, 1, 4, 8, 9, 10):
        assert _field_offset(zero, field_id) != 0


def test_compression_algorithm_slot() -> None:
    gzip_info = _info(marshal_ztoc(sample_ztoc("gzip")))
    plain_info = _info(marshal_ztoc(sample_ztoc("uncompressed")))
    assert _field_offset(gzip_info, 0) == 0
    assert _field_offset(plain_info, 0) != 0
    assert plain_info.CompressionAlgorithm() == 2


def test_empty_xattrs_vector_is_always_written() -> None:
    entry = _entry(marshal_ztoc(sample_ztoc(pax_records=())))
    assert _field_offset(entry, 13) != 0
    assert entry.XattrsLength() == 0


def test_ztoc_fields_are_prepended_in_upstream_order() -> None:
    # Prepending puts later-added slots at lower offsets: version, tool, toc, sizes, compression info.
    root = fb_root(marshal_ztoc(sample_ztoc()), 0)
    version, tool, csize, usize, toc, info = (_field_offset(root, i) for i in range(6))
    assert version > tool > toc > csize > usize > info


def test_file_metadata_fields_are_prepended_in_upstream_order() -> None:
    entry = _entry(marshal_ztoc(sample_ztoc(uid=1, gid=2, devmajor=3, devminor=4, uncompressed_size=5)))
    offsets = [_field_offset(entry, i) for i in range(14)]
    assert offsets == sorted(offsets, reverse=True)


def test_entries_are_written_last_to_first() -> None:
    z = dataclasses.replace(
        sample_ztoc(),
        entries=tuple(
            FileMetadata(name=b"f%d" % i, type="reg", uncompressed_offset=512 * (2 * i + 1), uncompressed_size=1)
            for i in range(4)
        ),
    )
    toc = fb_root(marshal_ztoc(z), 0).Toc()
    positions = [toc.Metadata(i)._tab.Pos for i in range(4)]
    assert positions == sorted(positions)  # the first entry was built last, so it sits lowest


# ---------------------------------------------------------------------------------------------------------
# unmarshal behaviour


def test_entries_are_sorted_by_offset_stably() -> None:
    a = FileMetadata(name=b"a", type="reg", uncompressed_offset=2048, uncompressed_size=0)
    b = FileMetadata(name=b"b", type="dir", uncompressed_offset=512, uncompressed_size=0)
    c = FileMetadata(name=b"c", type="dir", uncompressed_offset=2048, uncompressed_size=0)
    z = dataclasses.replace(sample_ztoc(), entries=(a, b, c))
    assert [e.name for e in unmarshal_ztoc(marshal_ztoc(z)).entries] == [b"b", b"a", b"c"]


def test_overlapping_entries_are_an_invalid_toc() -> None:
    first = FileMetadata(name=b"a", type="reg", uncompressed_offset=512, uncompressed_size=1000)
    second = FileMetadata(name=b"b", type="reg", uncompressed_offset=1024, uncompressed_size=1)
    z = dataclasses.replace(sample_ztoc(), entries=(first, second))
    with pytest.raises(FormatError, match="invalid toc entry b'b'"):
        unmarshal_ztoc(marshal_ztoc(z))


def test_unparsable_span_digests_become_empty() -> None:
    z = dataclasses.replace(sample_ztoc(), span_digests=("sha256:" + "ab" * 32, "md5:abc", "", "sha256:ABC"))
    assert unmarshal_ztoc(marshal_ztoc(z)).span_digests == ("sha256:" + "ab" * 32, "", "", "")


def test_duplicate_or_unsorted_pax_records_read_like_a_go_map() -> None:
    z = sample_ztoc(pax_records=((b"b", b"1"), (b"a", b"2"), (b"b", b"3")))
    # marshal already writes one value per key in key order; upstream's map keeps the last value
    assert unmarshal_ztoc(marshal_ztoc(z)).entries[0].pax_records == ((b"a", b"2"), (b"b", b"3"))


def test_non_utf8_strings_survive() -> None:
    z = dataclasses.replace(sample_ztoc(mod_time="\udcff-bad"), build_tool_identifier="tool\udce9")
    data = marshal_ztoc(z)
    assert b"\xff-bad" in data and b"tool\xe9" in data
    assert marshal_ztoc(unmarshal_ztoc(data)) == data


def test_unknown_algorithm_enum_is_rejected() -> None:
    data = bytearray(marshal_ztoc(sample_ztoc("uncompressed")))
    info = _info(bytes(data))
    data[info._tab.Pos + _field_offset(info, 0)] = 7
    with pytest.raises(FormatError, match="unknown compression algorithm 7"):
        unmarshal_ztoc(bytes(data))


def test_missing_toc_is_rejected() -> None:
    b = flatbuffers.Builder(0)
    b.StartObject(6)
    b.Finish(b.EndObject())
    with pytest.raises(FormatError, match="missing toc"):
        unmarshal_ztoc(bytes(b.Output()))


def test_huge_vector_length_is_rejected_without_allocating() -> None:
    data = bytearray(marshal_ztoc(sample_ztoc()))
    toc = fb_root(bytes(data), 0).Toc()
    vector = toc._tab.Vector(_field_offset(toc, 0)) - 4
    data[vector : vector + 4] = struct.pack("<I", 0xFFFFFFF0)
    with pytest.raises(FormatError, match="runs past the end"):
        unmarshal_ztoc(bytes(data))


def test_every_truncation_is_a_format_error() -> None:
    z = sample_ztoc(pax_records=((b"k", b"v"),))
    data = marshal_ztoc(z)
    for length in range(len(data)):
        try:
            got = unmarshal_ztoc(data[:length])
        except FormatError as exc:
            assert str(exc).startswith("cannot unmarshal ztoc")
        else:
            # only the last string's NUL terminator and padding can go: readers never look at them (nor does Go)
            assert data[length:] == bytes(len(data) - length)
            assert got == z


@settings(max_examples=400, deadline=None)
@given(data=st.binary(max_size=400))
def test_random_bytes_only_ever_raise_format_error(data: bytes) -> None:
    with contextlib.suppress(FormatError):
        unmarshal_ztoc(data)


VALID = marshal_ztoc(
    Ztoc(
        compressed_archive_size=10,
        uncompressed_archive_size=4096,
        compression_algorithm="uncompressed",
        max_span_id=1,
        span_digests=("sha256:" + "cd" * 32,) * 2,
        checkpoints=b"\x01" * 20,
        entries=(
            FileMetadata(
                name=b"a",
                type="reg",
                uncompressed_offset=512,
                uncompressed_size=3,
                mode=0o644,
                uid=1,
                pax_records=((b"x", b"y"),),
            ),
            FileMetadata(name=b"b/", type="dir", uncompressed_offset=1536, uncompressed_size=0),
        ),
    )
)


@settings(max_examples=600, deadline=None)
@given(edits=st.lists(st.tuples(st.integers(0, len(VALID) - 1), st.integers(0, 255)), min_size=1, max_size=6))
def test_corrupted_ztocs_only_ever_raise_format_error(edits: list[tuple[int, int]]) -> None:
    data = bytearray(VALID)
    for position, value in edits:
        data[position] = value
    try:
        z = unmarshal_ztoc(bytes(data))
    except FormatError:
        return
    assert isinstance(z, Ztoc)


# ---------------------------------------------------------------------------------------------------------
# marshal errors


@pytest.mark.parametrize("algorithm", ["zstd", "GZIP", "Gzip", "unknown"])
def test_unknown_algorithm_strings_cannot_be_marshalled(algorithm: str) -> None:
    with pytest.raises(FormatError, match="unknown compression algorithm"):
        marshal_ztoc(sample_ztoc(algorithm))


@pytest.mark.parametrize("field", ["mode", "uncompressed_size", "devmajor"])
def test_out_of_range_integers_cannot_be_marshalled(field: str) -> None:
    with pytest.raises(FormatError, match="cannot marshal ztoc"):
        marshal_ztoc(sample_ztoc(**{field: 2**63}))


def test_uid_and_gid_wrap_like_go_uint32() -> None:
    z = sample_ztoc(uid=2**32 + 7, gid=-1)
    entry = unmarshal_ztoc(marshal_ztoc(z)).entries[0]
    assert (entry.uid, entry.gid) == (7, 2**32 - 1)

"""Whole-stream gzip inflate (soci.codec.inflate)."""

from __future__ import annotations

import gzip
import random
import zlib

import pytest
from gzip_samples import PIECE_KINDS, chunks, gzip_member, random_tar
from hypothesis import given, settings
from hypothesis import strategies as st

from soci.codec.inflate import ENGINE_NAME, StreamInflater
from soci.errors import FormatError, InvalidArgument


def inflate_all(gz: bytes, sizes: list[int]) -> tuple[bytes, StreamInflater]:
    inflater = StreamInflater()
    out = b"".join(inflater.feed(piece) for piece in chunks(gz, sizes))
    return out + inflater.finish(), inflater


def test_uses_isal() -> None:
    assert ENGINE_NAME == "isal"


@settings(deadline=None, max_examples=30)
@given(
    seed=st.integers(0, 2**32),
    members=st.lists(
        st.tuples(
            st.lists(st.tuples(st.sampled_from(PIECE_KINDS), st.integers(0, 40_000)), max_size=4), st.integers(0, 9)
        ),
        min_size=1,
        max_size=4,
    ),
    sizes=st.lists(st.integers(1, 30_000), min_size=1, max_size=3),
    header=st.booleans(),
)
def test_members_and_chunking(
    seed: int, members: list[tuple[list[tuple[str, int]], int]], sizes: list[int], header: bool
) -> None:
    payloads = [random_tar(seed + i, pieces) for i, (pieces, _) in enumerate(members)]
    gz = b"".join(
        gzip_member(p, level=level, fname=b"f" if header else None, fhcrc=header).data
        for p, (_, level) in zip(payloads, members, strict=True)
    )
    out, inflater = inflate_all(gz, sizes)
    assert out == b"".join(payloads)
    assert inflater.uncompressed_size == len(out)
    assert inflater.compressed_size == len(gz)


def test_empty_member() -> None:
    assert inflate_all(gzip.compress(b"", mtime=0), [5])[0] == b""


def test_truncation_and_garbage_raise() -> None:
    data = random.Random(1).randbytes(50_000) + bytes(100_000)
    gz = gzip.compress(data, mtime=0)
    for cut in (0, 5, 10, len(gz) // 2, len(gz) - 1):
        with pytest.raises(FormatError, match="gzip: "):
            inflate_all(gz[:cut], [4096])
    with pytest.raises(FormatError, match="invalid data"):
        inflate_all(gz + b"\x00" * 20, [len(gz) + 20])
    bad = bytearray(gz)
    bad[-6] ^= 1  # CRC
    with pytest.raises(FormatError, match="invalid data"):
        inflate_all(bytes(bad), [1 << 20])


def test_zlib_streams_are_not_accepted() -> None:
    with pytest.raises(FormatError):
        inflate_all(zlib.compress(b"zlib, not gzip"), [100])


def test_finish_twice() -> None:
    inflater = StreamInflater()
    inflater.feed(gzip.compress(b"x"))
    inflater.finish()
    with pytest.raises(InvalidArgument):
        inflater.finish()
    with pytest.raises(InvalidArgument):
        inflater.feed(b"")


def test_header_with_crc_split_across_feeds() -> None:
    # isal on its own rejects this stream when the FHCRC header arrives in pieces.
    payload = random_tar(2, [("text", 20_000)])
    member = gzip_member(payload, fname=b"layer.tar", fcomment=b"c", fextra=b"xy", fhcrc=True)
    assert inflate_all(member.data * 2, [1, 2, 3])[0] == payload * 2


def test_unterminated_header_is_bounded() -> None:
    inflater = StreamInflater()
    with pytest.raises(FormatError, match="exceeds"):
        inflater.feed(b"\x1f\x8b\x08\x08" + bytes(6) + b"n" * (2 << 20))

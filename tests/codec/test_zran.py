"""Checkpoint pass and span extraction (soci.codec.zran) on every available zlib backend."""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import random
import shutil
import subprocess
import sys
import tracemalloc
import zlib
from concurrent.futures import ThreadPoolExecutor

import pytest
from gzip_samples import PIECE_KINDS, chunks, gzip_member, random_tar, real_files_tar
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from soci.codec import zran
from soci.codec._zlib import BACKEND_ENV, get_backend
from soci.errors import DataLoss, FormatError, InvalidArgument
from soci.formats.zinfo import WINDOW_SIZE, GzipZinfo, TarZinfo

BACKENDS = zran.available_backends()
HYPOTHESIS = settings(deadline=None, max_examples=25, suppress_health_check=[HealthCheck.too_slow])

pieces_strategy = st.lists(
    st.tuples(st.sampled_from(PIECE_KINDS), st.integers(min_value=0, max_value=60_000)), min_size=0, max_size=8
)


def run_pass(
    gz: bytes, span: int, backend: str, chunk_sizes: list[int] | None = None
) -> tuple[zran.IndexResult[GzipZinfo], bytes]:
    cp = zran.GzipCheckpointer(span, backend=backend)
    out = bytearray()
    for piece in chunks(gz, chunk_sizes or [1 << 20]):
        for view in cp.feed(piece):
            out += view
    return cp.finish(), bytes(out)


def points(zinfo: GzipZinfo) -> list[tuple[int, int, int]]:
    return [(zinfo.compressed_offsets[i], zinfo.uncompressed_offsets[i], zinfo.bits(i)) for i in range(len(zinfo))]


def verify_index(
    gz: bytes,
    data: bytes,
    span: int,
    backend: str,
    *,
    header_size: int | None = None,
    chunk_sizes: list[int] | None = None,
) -> zran.IndexResult[GzipZinfo]:
    """Every invariant a checkpoint table must satisfy, checked against the original bytes."""
    result, output = run_pass(gz, span, backend, chunk_sizes)
    zinfo = result.zinfo
    assert output == data
    assert (result.compressed_size, result.uncompressed_size) == (len(gz), len(data))
    assert zinfo.span_size == span and zinfo.version == 2
    assert len(result.span_digests) == len(zinfo) >= 1

    first = zinfo.checkpoint(0)
    assert (first.uncompressed_offset, first.bits, first.window) == (0, 0, bytes(WINDOW_SIZE))
    if header_size is not None:
        assert first.compressed_offset == header_size

    padded = bytes(WINDOW_SIZE) + data
    outs = zinfo.uncompressed_offsets
    for i in range(len(zinfo)):
        cp = zinfo.checkpoint(i)
        assert 0 <= cp.bits <= 7
        assert cp.window == padded[cp.uncompressed_offset : cp.uncompressed_offset + WINDOW_SIZE]
        if i:
            # upstream's rule: a new checkpoint only once strictly more than span bytes were produced
            assert cp.uncompressed_offset == 0 or cp.uncompressed_offset - outs[i - 1] > span
            assert cp.compressed_offset > zinfo.compressed_offsets[i - 1]

        start = zinfo.start_compressed_offset(i)
        end = zinfo.end_compressed_offset(i, len(gz))
        assert start == cp.compressed_offset - (1 if cp.bits else 0)
        assert result.span_digests[i] == "sha256:" + hashlib.sha256(gz[start:end]).hexdigest()

        u_start = zinfo.start_uncompressed_offset(i)
        u_end = zinfo.end_uncompressed_offset(i, len(data))
        assert (
            zran.inflate_span(zinfo, i, gz[start:end], length=u_end - u_start, backend=backend) == data[u_start:u_end]
        )
        # length=None: to the next checkpoint, or to the end of the gzip data for the last span
        assert zran.inflate_span(zinfo, i, gz[start:end], backend=backend) == data[u_start:u_end]

    assert GzipZinfo.from_blob(zinfo.to_blob()).to_blob() == zinfo.to_blob()
    assert len(zinfo.to_blob()) == 12 + len(zinfo) * (17 + WINDOW_SIZE)
    return result


def greedy(candidates: list[tuple[int, int, int]], span: int) -> list[tuple[int, int, int]]:
    """Upstream's placement rule applied to a list of block boundaries (in, out, bits)."""
    chosen: list[tuple[int, int, int]] = []
    last = 0
    for point in candidates:
        if point[1] == 0 or point[1] - last > span:
            chosen.append(point)
            last = point[1]
    return chosen


def check_extract(
    result: zran.IndexResult[GzipZinfo], gz: bytes, data: bytes, rng: random.Random, backend: str
) -> None:
    calls: list[tuple[int, int]] = []

    def read(offset: int, size: int) -> bytes:
        calls.append((offset, size))
        return gz[offset : offset + size]

    for _ in range(12):
        offset = rng.randrange(len(data) + 1)
        length = rng.randrange(len(data) - offset + 1)
        calls.clear()
        got = zran.extract(result.zinfo, len(gz), len(data), read, offset, length, backend=backend)
        assert got == data[offset : offset + length]
        assert len(calls) == (1 if length else 0)


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def test_both_backends_are_loaded_on_this_machine() -> None:
    # The environment ships the zlib-ng wheel and system libz; losing either silently would hide regressions.
    assert BACKENDS == ["zlib-ng", "libz"]


@HYPOTHESIS
@given(
    seed=st.integers(0, 2**32),
    pieces=pieces_strategy,
    level=st.integers(0, 9),
    strategy=st.sampled_from([zlib.Z_DEFAULT_STRATEGY, zlib.Z_FILTERED, zlib.Z_HUFFMAN_ONLY, zlib.Z_RLE, zlib.Z_FIXED]),
    span=st.sampled_from([0, 1, 1000, 32768, 65536, 200_000, 5 << 20]),
    chunk_sizes=st.lists(st.integers(1, 70_000), min_size=1, max_size=4),
)
def test_random_tars_every_span_inflates_to_the_original(
    seed: int, pieces: list[tuple[str, int]], level: int, strategy: int, span: int, chunk_sizes: list[int]
) -> None:
    data = random_tar(seed, pieces)
    member = gzip_member(data, level=level, strategy=strategy)
    results = [
        verify_index(member.data, data, span, b, header_size=member.header_size, chunk_sizes=chunk_sizes)
        for b in BACKENDS
    ]
    for other in results[1:]:
        assert other.zinfo.to_blob() == results[0].zinfo.to_blob()
        assert other.span_digests == results[0].span_digests
    check_extract(results[0], member.data, data, random.Random(seed), BACKENDS[-1])


@HYPOTHESIS
@given(
    seed=st.integers(0, 2**32),
    pieces=pieces_strategy,
    level=st.integers(1, 9),
    flush_at=st.lists(st.tuples(st.integers(0, 400_000), st.sampled_from([zlib.Z_SYNC_FLUSH, zlib.Z_FULL_FLUSH]))),
    span=st.sampled_from([1, 4096, 65536, 150_000]),
)
def test_placement_is_the_greedy_rule_over_all_block_boundaries(
    seed: int, pieces: list[tuple[str, int]], level: int, flush_at: list[tuple[int, int]], span: int
) -> None:
    # span 0 records every boundary that follows new output; any other span must pick from those greedily.
    data = random_tar(seed, pieces)
    gz = gzip_member(data, level=level, flushes=tuple(flush_at)).data
    for b in BACKENDS:
        every, _ = run_pass(gz, 0, b)
        chosen, _ = run_pass(gz, span, b)
        expected = greedy(points(every.zinfo), span)
        assert points(chosen.zinfo) == expected
        by_point = {p: every.zinfo.window(i) for i, p in enumerate(points(every.zinfo))}
        assert [chosen.zinfo.window(i) for i in range(len(chosen.zinfo))] == [by_point[p] for p in expected]


@HYPOTHESIS
@given(seed=st.integers(0, 2**32), pieces=pieces_strategy, cuts=st.lists(st.integers(1, 7), min_size=1, max_size=3))
def test_result_does_not_depend_on_how_input_is_chunked(
    seed: int, pieces: list[tuple[str, int]], cuts: list[int]
) -> None:
    data = random_tar(seed, pieces)
    gz = gzip.compress(data, compresslevel=6, mtime=0)
    for b in BACKENDS:
        whole, _ = run_pass(gz, 20_000, b)
        tiny, out = run_pass(gz, 20_000, b, chunk_sizes=[c * 997 for c in cuts] + [1, 2, 3])
        assert out == data
        assert tiny.zinfo.to_blob() == whole.zinfo.to_blob()
        assert tiny.span_digests == whole.span_digests


@pytest.mark.parametrize("level", range(1, 10))
def test_real_files_at_every_level(backend: str, level: int) -> None:
    data = real_files_tar(600_000)
    gz = gzip.compress(data, compresslevel=level, mtime=0)
    result = verify_index(gz, data, 65536, backend, header_size=10)
    assert len(result.zinfo) > 3
    check_extract(result, gz, data, random.Random(level), backend)


def test_worked_example_shape(backend: str) -> None:
    # The spec's verification run: Python gzip level 9, mtime 0, ~1.27 MB tar, span 65536.
    data = real_files_tar(1_250_000)
    assert 1_200_000 < len(data) < 1_400_000
    gz = gzip.compress(data, compresslevel=9, mtime=0)
    result = verify_index(gz, data, 65536, backend, header_size=10)
    zinfo = result.zinfo
    assert zinfo.checkpoint(0).compressed_offset == 10
    assert len(zinfo.to_blob()) == 12 + 32785 * len(zinfo)
    assert zinfo.to_blob()[:12] == len(zinfo).to_bytes(4, "little") + (65536).to_bytes(8, "little")
    assert zinfo.to_blob()[12:29] == (10).to_bytes(8, "little") + bytes(9)
    assert any(zinfo.bits(i) for i in range(len(zinfo)))  # partial-byte checkpoints occur in real streams
    gaps = [b - a for a, b in zip(zinfo.uncompressed_offsets, zinfo.uncompressed_offsets[1:], strict=False)]
    assert all(gap > 65536 for gap in gaps)


@pytest.mark.parametrize(
    "header",
    [
        {"fname": b"layer.tar"},
        {"fextra": b"SOCIxx" + bytes(300)},
        {"fcomment": b"a comment " * 50},
        {"fname": b"n", "fextra": b"", "fcomment": b"", "fhcrc": True},
        {"fname": b"x" * 5000, "fextra": b"\xff" * 65535, "fcomment": b"c", "fhcrc": True},
    ],
)
def test_long_gzip_headers_move_checkpoint_zero(backend: str, header: dict[str, object]) -> None:
    data = random_tar(7, [("text", 300_000), ("random", 70_000), ("zeros", 100_000)])
    member = gzip_member(data, level=6, **header)  # type: ignore[arg-type]
    assert member.header_size > 10
    result = verify_index(member.data, data, 65536, backend, header_size=member.header_size)
    assert result.zinfo.start_compressed_offset(0) == member.header_size


def test_header_crc_is_verified(backend: str) -> None:
    member = gzip_member(b"payload" * 100, fname=b"n", fhcrc=True)
    bad = bytearray(member.data)
    bad[member.header_size - 1] ^= 0xFF
    with pytest.raises(FormatError, match="invalid data at compressed offset"):
        run_pass(bytes(bad), 65536, backend)


@pytest.mark.parametrize("payload", [b"", b"x", b"ab" * 3, bytes(WINDOW_SIZE - 1), bytes(WINDOW_SIZE + 1)])
def test_tiny_and_empty_payloads(backend: str, payload: bytes) -> None:
    gz = gzip.compress(payload, mtime=0)
    result = verify_index(gz, payload, 0, backend, header_size=10)
    assert (
        result.span_digests[-1]
        == "sha256:" + hashlib.sha256(gz[result.zinfo.start_compressed_offset(len(result.zinfo) - 1) :]).hexdigest()
    )
    if not payload:
        assert len(result.zinfo) == 1


def test_member_boundary_can_hold_a_checkpoint(backend: str) -> None:
    # Each member is a single final block, so the only boundaries after the first header are member starts.
    first = gzip_member(b"a" * 400_000, level=9)
    second = gzip_member(b"b" * 400_000, level=9)
    third = gzip_member(b"c" * 10, level=9)
    gz = first.data + second.data + third.data
    data = b"a" * 400_000 + b"b" * 400_000 + b"c" * 10
    result = verify_index(gz, data, 65536, backend, header_size=10)
    assert points(result.zinfo) == [
        (10, 0, 0),
        (len(first.data) + second.header_size, 400_000, 0),
        (len(first.data) + len(second.data) + third.header_size, 800_000, 0),
    ]
    # Below the span, member starts are skipped like any other boundary.
    assert points(run_pass(gz, 500_000, backend)[0].zinfo) == [
        (10, 0, 0),
        (len(first.data) + len(second.data) + 10, 800_000, 0),
    ]


@HYPOTHESIS
@given(
    seed=st.integers(0, 2**32),
    members=st.lists(st.tuples(pieces_strategy, st.integers(1, 9)), min_size=2, max_size=5),
    span=st.sampled_from([0, 5000, 65536, 300_000]),
)
def test_concatenated_members(seed: int, members: list[tuple[list[tuple[str, int]], int]], span: int) -> None:
    payloads = [random_tar(seed + i, pieces) for i, (pieces, _) in enumerate(members)]
    gz = b"".join(
        gzip.compress(p, compresslevel=level, mtime=0) for p, (_, level) in zip(payloads, members, strict=True)
    )
    data = b"".join(payloads)
    results = [verify_index(gz, data, span, b, header_size=10, chunk_sizes=[4096, 100_000]) for b in BACKENDS]
    assert results[0].zinfo.to_blob() == results[-1].zinfo.to_blob()
    check_extract(results[0], gz, data, random.Random(seed), BACKENDS[0])


@pytest.mark.skipif(shutil.which("pigz") is None, reason="pigz not installed")
@pytest.mark.parametrize("args", [["-p", "2", "-b", "32"], ["-p", "2", "-b", "64", "-i"], ["-11"]])
def test_pigz_streams(backend: str, args: list[str]) -> None:
    data = real_files_tar(700_000) + random_tar(3, [("random", 100_000), ("zeros", 200_000)])
    gz = subprocess.run(["pigz", "-c", "-n", *args], input=data, capture_output=True, check=True).stdout
    result = verify_index(gz, data, 32768, backend, header_size=10)
    check_extract(result, gz, data, random.Random(1), backend)
    # pigz chunks by 2 of the same data concatenated as separate members
    half = len(data) // 2
    multi = b"".join(
        subprocess.run(["pigz", "-c", *args], input=part, capture_output=True, check=True).stdout
        for part in (data[:half], data[half:])
    )
    verify_index(multi, data, 32768, backend)


def test_truncated_streams_raise(backend: str) -> None:
    data = random_tar(11, [("text", 200_000), ("random", 50_000)])
    gz = gzip.compress(data, mtime=0)
    for cut in [0, 1, 9, 10, 11, len(gz) // 3, len(gz) - 9, len(gz) - 8, len(gz) - 1]:
        with pytest.raises(FormatError, match=r"^gzip: (unexpected end of data|invalid data) at compressed offset \d+"):
            run_pass(gz[:cut], 65536, backend)


@HYPOTHESIS
@given(seed=st.integers(0, 2**32), position=st.floats(0, 1, exclude_max=True), flip=st.integers(1, 255))
def test_corrupt_streams_raise(seed: int, position: float, flip: int) -> None:
    data = random_tar(seed, [("text", 50_000), ("random", 5_000), ("pattern", 20_000)])
    gz = bytearray(gzip.compress(data, mtime=0))
    # anything from the compression method byte on is checked: deflate data by decoding, the rest by CRC/length
    index = 10 + int(position * (len(gz) - 10))
    gz[index] ^= flip
    for b in BACKENDS:
        with pytest.raises(FormatError, match=r"^gzip: "):
            run_pass(bytes(gz), 10_000, b)


def test_trailing_garbage_is_a_new_member_and_fails(backend: str) -> None:
    gz = gzip.compress(b"data" * 1000, mtime=0)
    with pytest.raises(FormatError, match="invalid data at compressed offset"):
        run_pass(gz + bytes(512), 65536, backend)


def test_unexhausted_feed_and_misuse() -> None:
    gz = gzip.compress(os.urandom(10_000), mtime=0)
    cp = zran.GzipCheckpointer(1000)
    cp.feed(gz)  # never iterated: nothing consumed
    with pytest.raises(InvalidArgument, match="not exhausted"):
        cp.finish()
    with pytest.raises(InvalidArgument):
        zran.GzipCheckpointer(-1)
    bad = zran.GzipCheckpointer(1000)
    with pytest.raises(FormatError):
        list(bad.feed(b"not gzip at all"))
    with pytest.raises(InvalidArgument, match="already failed"):
        bad.finish()


def test_memory_stays_bounded_while_streaming(backend: str) -> None:
    size = 96 << 20
    comp = zlib.compressobj(1, zlib.DEFLATED, 31)
    gz = b"".join(comp.compress(bytes(1 << 20)) for _ in range(size >> 20)) + comp.flush()
    tracemalloc.start()
    try:
        cp = zran.GzipCheckpointer(4 << 20, backend=backend)
        produced = 0
        for piece in chunks(gz, [64 << 10]):
            for view in cp.feed(piece):
                produced += len(view)
        result = cp.finish()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert produced == result.uncompressed_size == size
    # output buffer + one window per checkpoint; never the layer itself
    assert peak < 8 * (1 << 20) + len(result.zinfo) * 2 * WINDOW_SIZE


def test_build_index_from_a_file_matches_streaming(backend: str) -> None:
    data = random_tar(5, [("text", 900_000), ("random", 300_000), ("zeros", 1_500_000)])
    gz = gzip.compress(data, compresslevel=4, mtime=0)
    result = zran.build_index(io.BytesIO(gz), 100_000, "gzip", backend=backend)
    streamed, _ = run_pass(gz, 100_000, backend, chunk_sizes=[12345])
    assert result.zinfo.to_blob() == streamed.zinfo.to_blob()
    assert result.span_digests == streamed.span_digests
    with pytest.raises(FormatError, match="not implemented: zstd"):
        zran.build_index(io.BytesIO(gz), 100_000, "zstd")


def test_extraction_in_threads() -> None:
    data = real_files_tar(1_000_000)
    gz = gzip.compress(data, mtime=0)
    zinfo = run_pass(gz, 32768, BACKENDS[0])[0].zinfo

    def span(i: int) -> bytes:
        start, end = zinfo.start_compressed_offset(i), zinfo.end_compressed_offset(i, len(gz))
        return zran.inflate_span(zinfo, i, memoryview(gz)[start:end], backend=BACKENDS[i % len(BACKENDS)])

    with ThreadPoolExecutor(4) as pool:
        assert b"".join(pool.map(span, range(len(zinfo)))) == data


def test_inflate_span_options(backend: str) -> None:
    data = random_tar(9, [("text", 400_000), ("random", 40_000), ("pattern", 300_000)])
    gz = gzip.compress(data, mtime=0)
    zinfo = run_pass(gz, 50_000, backend)[0].zinfo
    i = 2
    start = zinfo.start_compressed_offset(i)
    out0 = zinfo.start_uncompressed_offset(i)
    rest = gz[start:]
    # skip + length may run past the span into the following ones
    assert (
        zran.inflate_span(zinfo, i, rest, skip=1234, length=300_000, backend=backend)
        == data[out0 + 1234 : out0 + 301_234]
    )
    # asking for more than exists returns what there is when the stream ends cleanly
    assert zran.inflate_span(zinfo, i, rest, length=len(data), backend=backend) == data[out0:]
    assert zran.inflate_span(zinfo, i, rest, skip=len(data), length=10, backend=backend) == b""
    out = bytearray(5000)
    assert zran.inflate_span_into(zinfo, i, bytearray(rest), memoryview(out)[1000:], skip=77, backend=backend) == 4000
    assert out[1000:] == data[out0 + 77 : out0 + 4077] and out[:1000] == bytes(1000)
    end = zinfo.end_compressed_offset(i, len(gz))
    with pytest.raises(FormatError, match="unexpected end of data"):
        zran.inflate_span(zinfo, i, gz[start : start + (end - start) // 2], backend=backend)
    with pytest.raises(FormatError, match="invalid data"):
        zran.inflate_span(zinfo, 0, b"\xff" * 100, length=10, backend=backend)
    with pytest.raises(InvalidArgument):
        zran.inflate_span(zinfo, len(zinfo), rest, backend=backend)
    with pytest.raises(InvalidArgument):
        zran.inflate_span(zinfo, i, rest, skip=-1, length=1, backend=backend)


def test_extract_rejects_ranges_outside_the_layer_and_short_reads() -> None:
    data = b"0123456789" * 10_000
    gz = gzip.compress(data, mtime=0)
    zinfo = run_pass(gz, 1000, BACKENDS[0])[0].zinfo
    with pytest.raises(InvalidArgument):
        zran.extract(zinfo, len(gz), len(data), lambda o, n: gz[o : o + n], len(data) - 5, 6)
    with pytest.raises(InvalidArgument):
        zran.extract(zinfo, len(gz), len(data), lambda o, n: gz[o : o + n], -1, 2)
    with pytest.raises(DataLoss, match="short read"):
        zran.extract(zinfo, len(gz), len(data), lambda o, n: gz[o : o + n - 1], 5, 10)


@HYPOTHESIS
@given(
    seed=st.integers(0, 2**32),
    size=st.integers(0, 300_000),
    span=st.integers(1, 100_000),
    chunk_sizes=st.lists(st.integers(1, 50_000), min_size=1, max_size=3),
)
def test_tar_checkpointer(seed: int, size: int, span: int, chunk_sizes: list[int]) -> None:
    data = random.Random(seed).randbytes(size)
    cp = zran.TarCheckpointer(span)
    out = bytearray()
    for piece in chunks(data, chunk_sizes):
        for view in cp.feed(piece):
            out += view
    result = cp.finish()
    assert out == data
    zinfo = result.zinfo
    assert isinstance(zinfo, TarZinfo) and (zinfo.span_size, zinfo.size) == (span, size)
    assert len(result.span_digests) == zinfo.max_span_id + 1 == -(-size // span)
    for i in range(len(zinfo)):
        start, end = zinfo.start_compressed_offset(i), zinfo.end_compressed_offset(i, size)
        assert result.span_digests[i] == "sha256:" + hashlib.sha256(data[start:end]).hexdigest()
    rng = random.Random(seed)
    for _ in range(5):
        offset = rng.randrange(size + 1)
        length = rng.randrange(size - offset + 1)
        assert (
            zran.extract(zinfo, size, size, lambda o, n: data[o : o + n], offset, length)
            == data[offset : offset + length]
        )
    assert TarZinfo.from_blob(zinfo.to_blob()).to_blob() == zinfo.to_blob()


def test_tar_checkpointer_rejects_span_zero() -> None:
    with pytest.raises(InvalidArgument):
        zran.TarCheckpointer(0)
    assert isinstance(zran.new_checkpointer("unknown", 10), zran.TarCheckpointer)
    with pytest.raises(FormatError):
        zran.new_checkpointer("brotli", 10)


def test_backend_selection(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in BACKENDS:
        monkeypatch.setenv(BACKEND_ENV, name)
        assert zran.backend_name() == name
        assert zran.GzipCheckpointer(10).backend == name
    monkeypatch.setenv(BACKEND_ENV, "zlib-classic")
    with pytest.raises(InvalidArgument, match="unknown zlib backend"):
        zran.backend_name()
    monkeypatch.delenv(BACKEND_ENV)
    assert zran.backend_name() == BACKENDS[0]
    assert get_backend("libz").name == "libz"


def test_forcing_a_missing_backend_fails_and_default_falls_back() -> None:
    # Hide the zlib_ng package from a fresh interpreter, as if the wheel were not installed.
    script = (
        "import sys; sys.modules['zlib_ng'] = None\n"
        "from soci.codec import _zlib\n"
        "print(_zlib.available_backends(), _zlib.backend_name())\n"
        "import os; os.environ['SOCI_ZLIB_BACKEND'] = 'zlib-ng'\n"
        "try:\n    _zlib.backend_name()\nexcept _zlib.Unavailable as exc:\n    print('Unavailable:', exc)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != BACKEND_ENV}
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, check=True)
    lines = proc.stdout.splitlines()
    assert lines[0] == "['libz'] libz"
    assert lines[1].startswith("Unavailable: zlib backend zlib-ng is unavailable")

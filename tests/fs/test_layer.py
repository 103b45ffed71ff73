"""LayerResolver: integrity checks at open, sharing, prefetch, state file, span cache location."""

from __future__ import annotations

import asyncio
import dataclasses
import gzip
import hashlib
import json
import struct
import time
import zlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from fs_blobs import MemoryBlob
from fs_layers import BuiltLayer, build_layer, build_plain_layer, every_entry_type_tar

from soci.errors import DataLoss, FormatError
from soci.formats.digest import digest_hex
from soci.formats.soci_index import PrefetchSpan
from soci.formats.zinfo import GzipZinfo
from soci.formats.ztoc_codec import marshal_ztoc
from soci.fs import layer as layer_module
from soci.fs.background import BackgroundFetcher
from soci.fs.layer import LayerRequest, LayerResolver, check_gzip_header
from soci.fs.options import FsOptions, PrefetchOptions
from soci.fs.spans import SpanState
from soci.fs.ztoc_reader import load_ztoc

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def layer() -> BuiltLayer:
    return build_layer(every_entry_type_tar())


@pytest.fixture(scope="module")
def executor() -> Iterator[ThreadPoolExecutor]:
    with ThreadPoolExecutor(2) as pool:
        yield pool


def request(layer: BuiltLayer, blob: MemoryBlob | None = None, **kw: object) -> LayerRequest:
    return LayerRequest(layer.digest, layer.ztoc_digest, layer.ztoc_bytes, blob or MemoryBlob(layer.blob), **kw)  # type: ignore[arg-type]


async def test_open_share_and_close(layer: BuiltLayer, tmp_path: Path, executor: ThreadPoolExecutor) -> None:
    background = BackgroundFetcher()
    resolver = LayerResolver(tmp_path, executor=executor, background=background)
    first = await resolver.acquire(request(layer))
    second = await resolver.acquire(request(layer))
    assert first is second
    assert background.statistics().queued_layers == 1
    ino = first.tree.resolve(b"etc/hostname")
    assert await first.reader.read(ino, 0, 100) == b"lazy\n"
    await first.spans.wait_idle()
    cache_dir = tmp_path / "soci" / "spancache" / digest_hex(layer.ztoc_digest)
    assert sorted(p.name for p in cache_dir.iterdir())[:2] == ["gzip-header", "u0"]
    await resolver.release(first)
    assert await first.reader.read(ino, 0, 100) == b"lazy\n"  # still open: one holder left
    await resolver.release(second)
    assert background.statistics().queued_layers == 0
    with pytest.raises(Exception, match="closed"):
        await first.reader.read(first.tree.resolve(b"owners/future"), 0, 100)  # in a span never fetched
    await resolver.aclose()


async def test_state_json(layer: BuiltLayer, tmp_path: Path, executor: ThreadPoolExecutor) -> None:
    resolver = LayerResolver(tmp_path, executor=executor)
    opened = await resolver.acquire(request(layer))
    state = json.loads(opened.state_json())
    header = opened.spans.compressed_range(0)[0]
    assert state == {"digest": layer.digest, "size": len(layer.blob), "fetchedSize": header,
                     "fetchedPercent": header / len(layer.blob) * 100}  # fmt: skip
    opened.record_error(DataLoss("bad span"))
    assert list(json.loads(opened.state_json())) == ["error", "digest", "size", "fetchedSize", "fetchedPercent"]
    await resolver.aclose()


async def test_blob_size_must_match(layer: BuiltLayer, tmp_path: Path, executor: ThreadPoolExecutor) -> None:
    resolver = LayerResolver(tmp_path, executor=executor)
    with pytest.raises(FormatError, match="blob is"):
        await resolver.acquire(request(layer, MemoryBlob(layer.blob + b"x")))
    with pytest.raises(DataLoss, match="descriptor says"):
        await resolver.acquire(request(layer, layer_size=len(layer.blob) + 1))


async def test_bytes_before_the_first_span_must_be_a_gzip_header(
    layer: BuiltLayer, tmp_path: Path, executor: ThreadPoolExecutor
) -> None:
    resolver = LayerResolver(tmp_path, executor=executor)
    broken = bytearray(layer.blob)
    broken[0] ^= 0xFF
    with pytest.raises(FormatError, match="gzip header"):
        await resolver.acquire(request(layer, MemoryBlob(bytes(broken))))


async def test_the_gzip_header_is_fetched_while_the_toc_is_parsed(
    layer: BuiltLayer, tmp_path: Path, executor: ThreadPoolExecutor, monkeypatch: pytest.MonkeyPatch
) -> None:
    blob = MemoryBlob(layer.blob)
    overlapped: list[bool] = []

    def load_waiting_for_the_header(data: bytes) -> object:
        # the header's request is under way before the parse ends (one round trip less per layer)
        deadline = time.monotonic() + 10
        while not blob.reads and time.monotonic() < deadline:
            time.sleep(0.001)
        overlapped.append(bool(blob.reads))
        return load_ztoc(data)

    monkeypatch.setattr(layer_module, "load_ztoc", load_waiting_for_the_header)
    opened = await LayerResolver(tmp_path, executor=executor).acquire(request(layer, blob))
    assert overlapped == [True]
    assert blob.reads[0][0] == 0  # the gzip header
    await opened.aclose()


async def test_a_gzip_header_fetched_ahead_is_checked_and_needs_no_request(
    layer: BuiltLayer, tmp_path: Path, executor: ThreadPoolExecutor
) -> None:
    length = GzipZinfo.from_blob(layer.ztoc.checkpoints).start_compressed_offset(0)
    blob = MemoryBlob(layer.blob)
    opened = await LayerResolver(tmp_path / "given", executor=executor).acquire(
        request(layer, blob, gzip_header=layer.blob[:length])
    )
    assert blob.reads == []
    await opened.aclose()
    # corrupted on the way (or a short answer): fetched again, and the layer opens as always
    for given in (b"\x00" * length, layer.blob[: length - 1]):
        blob = MemoryBlob(layer.blob)
        opened = await LayerResolver(tmp_path / f"bad-{len(given)}", executor=executor).acquire(
            request(layer, blob, gzip_header=given)
        )
        assert blob.reads[:1] == [(0, length)]
        await opened.aclose()


async def test_wrong_max_span_id_is_rejected(layer: BuiltLayer, tmp_path: Path, executor: ThreadPoolExecutor) -> None:
    z = dataclasses.replace(layer.ztoc, max_span_id=layer.ztoc.max_span_id + 1)
    data = marshal_ztoc(z)
    bad = LayerRequest(layer.digest, "sha256:" + hashlib.sha256(data).hexdigest(), data, MemoryBlob(layer.blob))
    with pytest.raises(FormatError, match="max span id"):
        await LayerResolver(tmp_path, executor=executor).acquire(bad)


async def test_prefetch_loads_listed_spans_before_ready(
    layer: BuiltLayer, tmp_path: Path, executor: ThreadPoolExecutor
) -> None:
    options = FsOptions(prefetch=PrefetchOptions(enable=True, max_concurrency=1))
    resolver = LayerResolver(tmp_path, options, executor=executor)
    opened = await resolver.acquire(request(layer, prefetch=(PrefetchSpan(1, 2), PrefetchSpan(5, 5))))
    await opened.spans.wait_idle()
    states = [opened.spans.state(i) for i in range(opened.spans.span_count)]
    wanted = {1, 2, 5}
    assert [s is SpanState.UNCOMPRESSED for s in states] == [i in wanted for i in range(len(states))]
    await resolver.aclose()


async def test_prefetch_failures_are_ignored(layer: BuiltLayer, tmp_path: Path, executor: ThreadPoolExecutor) -> None:
    options = FsOptions(prefetch=PrefetchOptions(enable=True))
    # a range past the last span is skipped
    opened = await LayerResolver(tmp_path / "a", options, executor=executor).acquire(
        request(layer, prefetch=(PrefetchSpan(1, 1), PrefetchSpan(100, 200)))
    )
    assert opened.spans.state(1) is SpanState.UNCOMPRESSED
    # the gzip header read succeeds, every span fetch fails: the layer still opens, nothing loaded
    blob = MemoryBlob(layer.blob)
    original = blob.read_at

    async def failing_spans(offset: int, length: int) -> bytes:
        if offset:
            blob.fail_next = 1
        return await original(offset, length)

    blob.read_at = failing_spans  # type: ignore[method-assign]
    failed = await LayerResolver(tmp_path / "b", options, executor=executor).acquire(
        request(layer, blob, prefetch=(PrefetchSpan(1, 3),))
    )
    assert all(failed.spans.state(i) is SpanState.UNREQUESTED for i in range(failed.spans.span_count))
    assert len(blob.reads) > 1


async def test_uncompressed_layers_need_no_gzip_header(tmp_path: Path, executor: ThreadPoolExecutor) -> None:
    plain = build_plain_layer(every_entry_type_tar())
    opened = await LayerResolver(tmp_path, executor=executor).acquire(request(plain))
    assert await opened.reader.read(opened.tree.resolve(b"etc/hostname"), 0, 10) == b"lazy\n"


def _header(flags: int, rest: bytes) -> bytes:
    return b"\x1f\x8b\x08" + bytes([flags]) + b"\0\0\0\0\0\xff" + rest


@pytest.mark.parametrize(
    "header",
    [
        _header(0, b""),
        _header(0x08, b"name.tar\0"),
        _header(0x04 | 0x10, struct.pack("<H", 3) + b"abc" + b"comment\0"),
        gzip.compress(b"", mtime=0)[:10],
    ],
)
def test_valid_gzip_headers(header: bytes) -> None:
    check_gzip_header(header)


def test_header_crc() -> None:
    base = _header(0x02, b"")
    good = base + struct.pack("<H", zlib.crc32(base) & 0xFFFF)
    check_gzip_header(good)
    with pytest.raises(FormatError, match="checksum"):
        check_gzip_header(good[:-1] + bytes([good[-1] ^ 1]))


@pytest.mark.parametrize(
    "header",
    [b"", b"\x1f\x8b\x08", b"\x1f\x8c" + bytes(8), _header(0x08, b"no terminator"), _header(0x04, b"\x05\x00ab")],
)
def test_invalid_gzip_headers(header: bytes) -> None:
    with pytest.raises(FormatError):
        check_gzip_header(header)


async def test_slow_prefetch_does_not_keep_the_layer_from_opening(
    layer: BuiltLayer, tmp_path: Path, executor: ThreadPoolExecutor
) -> None:
    blob = MemoryBlob(layer.blob)
    original = blob.read_at

    async def slow_spans(offset: int, length: int) -> bytes:
        if offset:
            await asyncio.sleep(30)
        return await original(offset, length)

    blob.read_at = slow_spans  # type: ignore[method-assign]
    options = FsOptions(prefetch=PrefetchOptions(enable=True), mount_timeout_sec=1)
    resolver = LayerResolver(tmp_path, options, executor=executor)
    opened = await resolver.acquire(request(layer, blob, prefetch=(PrefetchSpan(1, 2),)))
    assert opened.spans.state(1) is not SpanState.UNCOMPRESSED
    await opened.spans.aclose(grace_sec=0)  # do not wait for the slow fetches
    await resolver.aclose()

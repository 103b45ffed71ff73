"""Fetch points: replay fetches only the block-bounded ranges a document names, checks them against its digests,
serves exactly the layer's bytes, and falls back to whole verified spans for anything that does not check out."""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import io
import json
import random
import tarfile
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path

import pytest
from lo_layers import CountingBlob

from soci.errors import DataLoss, FormatError, Unavailable
from soci.formats import load_order as lo
from soci.formats.load_order import FetchPoint, Segment
from soci.formats.zinfo import WINDOW_SIZE, GzipZinfo, zinfo_from_blob
from soci.formats.ztoc_codec import marshal_ztoc
from soci.fs.layer import Layer, LayerRequest, LayerResolver
from soci.fs.spans import SpanState, piece_key
from soci.fs.ztoc_reader import load_ztoc, ztoc_without_windows
from soci.index.ztoc_builder import build_ztoc
from soci.loadorder.fetchpoints import LEAD, _within_size_limit, layer_fetch_points
from soci.loadorder.replay import plan_spans, replay

pytestmark = pytest.mark.timeout(60)

SPAN_SIZE = 1 << 20
WORDS = [w.encode() for w in ("alpha", "beta", "gamma", "delta", "epsilon", "zeta", "theta", "sigma", "omega\n")]


def _text(rng: random.Random, size: int) -> bytes:
    out = bytearray()
    while len(out) < size:
        out += b" ".join(rng.choice(WORDS) for _ in range(12)) + b"%d\n" % rng.randrange(10**6)
    return bytes(out[:size])


class _Layer:
    def __init__(self, files: int = 14, size: int = 300_000, seed: int = 9) -> None:
        rng = random.Random(seed)
        buf = io.BytesIO()
        self.files: dict[str, bytes] = {}
        with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
            for i in range(files):
                name = f"lib/part-{i:02d}.txt"
                data = _text(rng, size + i * 1000)
                info = tarfile.TarInfo(name)
                info.size = len(data)
                info.mtime = 1_700_000_000
                tar.addfile(info, io.BytesIO(data))
                self.files[name] = data
        self.blob = gzip.compress(buf.getvalue(), mtime=0)
        self.digest = "sha256:" + hashlib.sha256(self.blob).hexdigest()
        self.ztoc = marshal_ztoc(build_ztoc(io.BytesIO(self.blob), span_size=SPAN_SIZE, algorithm="gzip"))

    def request(self) -> tuple[LayerRequest, CountingBlob]:
        blob = CountingBlob(self.blob)
        return LayerRequest(self.digest, "sha256:" + hashlib.sha256(self.ztoc).hexdigest(), self.ztoc, blob), blob

    async def fetch_points(self, segments: list[Segment], lead: int = LEAD) -> tuple[FetchPoint, ...]:
        info, tree = load_ztoc(self.ztoc)
        zinfo = zinfo_from_blob(info.compression_algorithm, info.checkpoints)
        assert isinstance(zinfo, GzipZinfo)
        blob = CountingBlob(self.blob)
        return await layer_fetch_points(tree, zinfo, info.span_digests, info.compressed_archive_size, segments,
                                        blob.read_at, lead=lead)  # fmt: skip


@pytest.fixture(scope="module")
def layer() -> _Layer:
    return _Layer()


@pytest.fixture(scope="module")
def executor() -> Iterator[ThreadPoolExecutor]:
    with ThreadPoolExecutor(2) as pool:
        yield pool


def _segments(layer: _Layer) -> list[Segment]:
    names = list(layer.files)
    # heads of a few files, the middle of one, one file whole; in a non-monotonic access order
    return [
        Segment(names[5], 0, 8192, time_ms=0),
        Segment(names[1], 0, 4096, time_ms=3),
        Segment(names[9], 65536, 20480, time_ms=5),
        Segment(names[12], 0, len(layer.files[names[12]]), time_ms=9),
    ]


@asynccontextmanager
async def _opened(
    layer: _Layer, root: Path, executor: ThreadPoolExecutor, metadata_of: _ZtocSource | None = None
) -> AsyncIterator[tuple[Layer, CountingBlob]]:
    """The layer opened through a resolver (and released after), with the blob that counts its reads; with
    ``metadata_of``, opened from its zTOC metadata, the zTOC coming from ``metadata_of`` when first needed."""
    request, blob = layer.request()
    if metadata_of is not None:
        request = replace(request, ztoc=ztoc_without_windows(layer.ztoc), full_ztoc=metadata_of)
    resolver = LayerResolver(root, executor=executor)
    opened = await resolver.acquire(request)
    try:
        yield opened, blob
    finally:
        await resolver.release(opened)


async def _read_all(opened: Layer, layer: _Layer, segments: list[Segment]) -> None:
    for segment in segments:
        ino = opened.tree.resolve(segment.path.encode())
        got = await opened.reader.read(ino, segment.offset, segment.length)
        assert got == layer.files[segment.path][segment.offset : segment.end]


async def test_replay_fetches_only_the_points_and_serves_exact_bytes(
    layer: _Layer, tmp_path: Path, executor: ThreadPoolExecutor
) -> None:
    segments = _segments(layer)
    points = await layer.fetch_points(segments)
    assert 1 <= len(points) <= len(segments)
    assert [p.time_ms for p in points] == sorted(p.time_ms for p in points)
    async with _opened(layer, tmp_path, executor) as (opened, blob):
        span_plan = plan_spans(opened.tree, opened.spans.span_of, segments)
        span_bytes = sum(opened.spans.compressed_range(last)[1] - opened.spans.compressed_range(first)[0]
                         for first, last in span_plan.runs)  # fmt: skip
        before = len(blob.reads)
        result = await replay(opened, segments, name="points", fetch_points=points)
        assert (result.fetch_points, result.spans, result.failed_runs) == (len(points), 0, 0)
        replayed = sum(length for _, length in blob.reads[before:])
        assert replayed == sum(p.compressed_end - p.first_byte for p in points)
        assert replayed < span_bytes / 2
        stats = opened.spans.statistics()
        assert (stats.fetch_points, stats.fetch_point_failures) == (len(points), 0)
        settled = len(blob.reads)
        await _read_all(opened, layer, segments)
        assert blob.reads[settled:] == [], [(p.uncompressed_offset, p.uncompressed_end) for p in points]
        # a file the document does not name is served through verified spans as before
        other = list(layer.files)[3]
        assert await opened.reader.read(opened.tree.resolve(other.encode()), 0, 1000) == layer.files[other][:1000]
        assert len(blob.reads) > settled


def _spans_of(opened: Layer, name: str) -> tuple[int, int]:
    """The spans of a file's tar header and of its data's last byte."""
    ino = opened.tree.resolve(name.encode())
    data_offset, size = opened.tree.data_range(ino)
    return opened.spans.span_of(opened.tree.header_offset(ino)), opened.spans.span_of(data_offset + size - 1)


async def test_a_miss_fetches_the_next_span_too_unless_a_document_plans_the_layer(
    layer: _Layer, tmp_path: Path, executor: ThreadPoolExecutor
) -> None:
    """Plain lazy loading fetches the span after a miss (the next files of the tar are often read next); a layer
    with a document does not, as the document says what is read and every whole span there is a byte too many."""
    points = await layer.fetch_points(_segments(layer))
    named = {s.path for s in _segments(layer)}
    for planned in (False, True):
        async with _opened(layer, tmp_path / f"planned-{planned}", executor) as (opened, blob):
            if planned:
                opened.spans.plan_points(points)
            spans = opened.spans
            # a file the document does not name, whose header and data are in one span that is not the last
            name = next(n for n in layer.files if n not in named and len(set(_spans_of(opened, n))) == 1)
            span = _spans_of(opened, name)[0]
            assert span + 1 < spans.span_count
            ino = opened.tree.resolve(name.encode())
            assert await opened.reader.read(ino, 100, 10) == layer.files[name][100:110]
            await spans.wait_idle()
            fetched = [(spans.state(i) is SpanState.UNCOMPRESSED) for i in range(spans.span_count)]
            assert fetched[span] and fetched[span + 1] != planned, (planned, fetched, blob.reads)
            assert sum(fetched) == (1 if planned else 2)


async def test_a_read_ahead_of_the_replay_fetches_its_point_not_the_spans(
    layer: _Layer, tmp_path: Path, executor: ThreadPoolExecutor
) -> None:
    """The workload can outrun its replay: a read inside a point the replay has not fetched yet takes that point."""
    segments = _segments(layer)
    points = await layer.fetch_points(segments)
    async with _opened(layer, tmp_path, executor) as (opened, blob):
        opened.spans.plan_points(points)  # as a replay does before its first request
        before = len(blob.reads)
        await _read_all(opened, layer, segments)
        fetched = sorted(blob.reads[before:])
        assert fetched == sorted((p.first_byte, p.compressed_end - p.first_byte) for p in points)
        await opened.spans.wait_idle()
        assert opened.spans.statistics().fetch_points == len(points)
        result = await replay(opened, segments, name="late", fetch_points=points)
        assert (result.fetch_points, result.failed_runs) == (len(points), 0)
        assert sorted(blob.reads[before:]) == fetched  # the replay found every point loaded


async def _neighbouring_points(layer: _Layer) -> tuple[str, int, FetchPoint, FetchPoint]:
    """Two points of one file that meet at a block boundary, with the file's name and data offset in the tar."""
    name = list(layer.files)[4]
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(layer.blob))) as tar:
        data_offset = tar.getmember(name).offset_data
    (head,) = await layer.fetch_points([Segment(name, 0, 8192)], lead=0)
    boundary = head.uncompressed_end - data_offset
    assert 8192 < boundary < len(layer.files[name]) - 8192, "the layer's first block ends outside the file"
    # the segment's run and its tar header's run: the header's point is at the file's start
    tail = max(await layer.fetch_points([Segment(name, boundary, 4096)], lead=0), key=lambda p: p.uncompressed_offset)
    assert tail.uncompressed_offset == head.uncompressed_end  # the next run starts in the block after the first
    return name, boundary, head, tail


async def test_a_read_across_neighbouring_points_is_served_from_both(
    layer: _Layer, tmp_path: Path, executor: ThreadPoolExecutor
) -> None:
    """Runs of one file can yield points that meet at a block boundary; a read across it (the kernel's readahead
    reads beyond what was recorded) is served from the two points, not from the whole spans under them."""
    name, boundary, head, tail = await _neighbouring_points(layer)
    expected = layer.files[name][boundary - 100 : boundary + 100]
    async with _opened(layer, tmp_path, executor) as (opened, blob):
        ino = opened.tree.resolve(name.encode())
        segments = [Segment(name, 0, 8192), Segment(name, boundary, 4096)]
        result = await replay(opened, segments, name="neighbours", fetch_points=[head, tail])
        assert (result.fetch_points, result.spans) == (2, 0)
        await opened.spans.wait_idle()
        settled = len(blob.reads)
        assert await opened.reader.read(ino, boundary - 100, 200) == expected
        assert blob.reads[settled:] == []
    async with _opened(layer, tmp_path / "planned", executor) as (opened, blob):
        opened.spans.plan_points([head, tail])  # the replay has fetched neither yet
        before = len(blob.reads)
        assert await opened.reader.read(opened.tree.resolve(name.encode()), boundary - 100, 200) == expected
        assert sorted(blob.reads[before:]) == sorted((p.first_byte, p.compressed_end - p.first_byte)
                                                     for p in (head, tail))  # fmt: skip


async def test_a_point_starts_a_lead_before_its_segment_within_the_file(
    layer: _Layer, tmp_path: Path, executor: ThreadPoolExecutor
) -> None:
    """The kernel reads around a faulting page, so a replayed start reads somewhat before what its recording read:
    the point begins ``LEAD`` bytes earlier in the file, and a read there takes the point, not whole spans."""
    name = list(layer.files)[9]
    offset = 200_000
    assert LEAD < offset < len(layer.files[name]) - 8192
    segment = Segment(name, offset, 4096)
    exact = max(await layer.fetch_points([segment], lead=0), key=lambda p: p.uncompressed_offset)
    led = max(await layer.fetch_points([segment]), key=lambda p: p.uncompressed_offset)
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(layer.blob))) as tar:
        data_offset = tar.getmember(name).offset_data
    assert led.uncompressed_offset <= data_offset + offset - LEAD < exact.uncompressed_offset
    async with _opened(layer, tmp_path, executor) as (opened, blob):
        await replay(opened, [segment], name="lead", fetch_points=[led])
        await opened.spans.wait_idle()
        settled = len(blob.reads)
        early = offset - LEAD
        ino = opened.tree.resolve(name.encode())
        assert await opened.reader.read(ino, early, 8192) == layer.files[name][early : early + 8192]
        assert blob.reads[settled:] == []


async def test_points_evicted_from_the_cache_are_served_by_spans(
    layer: _Layer, tmp_path: Path, executor: ThreadPoolExecutor
) -> None:
    """The span cache may drop a point's bytes (its size bound): readers then get the exact bytes from verified
    spans, and the point is forgotten."""
    segments = _segments(layer)
    points = await layer.fetch_points(segments)
    async with _opened(layer, tmp_path, executor) as (opened, blob):
        await replay(opened, segments, name="evicted", fetch_points=points)
        await opened.spans.wait_idle()
        for p in points:
            opened.cache.remove(piece_key(p.uncompressed_offset, p.uncompressed_end))
        settled = len(blob.reads)
        await asyncio.gather(_read_all(opened, layer, segments), _read_all(opened, layer, segments))
        assert len(blob.reads) > settled  # from the spans now
        assert opened.spans._pieces == []


def _tamper(point: FetchPoint, what: str) -> FetchPoint:
    if what == "digest":
        return replace(point, digest="sha256:" + hashlib.sha256(b"other").hexdigest())
    if what == "uncompressed_digest":
        return replace(point, uncompressed_digest="sha256:" + hashlib.sha256(b"other").hexdigest())
    if what == "window":
        return replace(point, window=random.Random(1).randbytes(WINDOW_SIZE))
    if what == "bits":
        return replace(point, bits=(point.bits + 3) % 8 or 1, compressed_offset=max(point.compressed_offset, 1))
    raise AssertionError(what)


@pytest.mark.parametrize("what", ["digest", "uncompressed_digest", "window", "bits"])
async def test_tampered_points_fall_back_to_verified_spans(
    layer: _Layer, what: str, tmp_path: Path, executor: ThreadPoolExecutor
) -> None:
    segments = _segments(layer)
    points = [p for p in await layer.fetch_points(segments) if p.uncompressed_offset >= WINDOW_SIZE]
    assert points
    tampered = [_tamper(p, what) for p in points]
    async with _opened(layer, tmp_path, executor) as (opened, _):
        await replay(opened, segments, name="tampered", fetch_points=tampered)
        await opened.spans.wait_idle()
        stats = opened.spans.statistics()
        assert (stats.fetch_points, stats.fetch_point_failures) == (0, len(tampered))
        await _read_all(opened, layer, segments)  # never a wrong byte: the spans serve them, verified


async def test_readers_during_a_replay_get_exact_bytes(
    layer: _Layer, tmp_path: Path, executor: ThreadPoolExecutor
) -> None:
    """Reads racing the replay wait for the point in flight (or load spans): the bytes are right either way."""

    segments = _segments(layer)
    points = await layer.fetch_points(segments)
    async with _opened(layer, tmp_path, executor) as (opened, _):
        await asyncio.gather(replay(opened, segments, name="race", fetch_points=points),
                             _read_all(opened, layer, segments))  # fmt: skip
        await _read_all(opened, layer, segments)


async def test_document_round_trip_and_old_documents(layer: _Layer) -> None:
    segments = _segments(layer)
    points = await layer.fetch_points(segments)
    document = lo.LoadOrder("app", (lo.LayerLoadOrder(layer.digest, tuple(segments), fetch_points=points),))
    data = lo.marshal(document)
    assert lo.parse(data) == document
    assert all(p.time_ms == 0 for p in lo.parse(lo.identity_bytes(document)).layers[0].fetch_points)
    old = lo.marshal(lo.LoadOrder("app", (lo.LayerLoadOrder(layer.digest, tuple(segments)),)))
    assert b"fetch_points" not in old and lo.parse(old).layers[0].fetch_points == ()


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("window", "bm90IHpsaWI=", "window is not base64 of zlib data"),
        ("window", lo.encode_window(b"x" * 100), "window is not 32768 bytes"),
        ("bits", 8, "bits must be 0-7"),
        ("digest", "md5:00", "is not a sha256 digest"),
        ("uncompressed_end", 0, "ranges must not be empty"),
    ],
)
async def test_malformed_points_are_rejected_naming_the_field(
    layer: _Layer, field: str, value: object, message: str
) -> None:

    points = await layer.fetch_points(_segments(layer))
    document = lo.LoadOrder("app", (lo.LayerLoadOrder(layer.digest, (Segment("a", 0, 1),), fetch_points=points),))
    obj = json.loads(lo.marshal(document))
    obj["layers"][0]["fetch_points"][0][field] = value
    with pytest.raises(lo.FormatError, match=message):
        lo.parse(json.dumps(obj).encode())


class _ZtocSource:
    """The zTOC as the daemon fetches it for a layer mounted from metadata: counted, and failing on demand."""

    def __init__(self, ztoc: bytes, failures: int = 0) -> None:
        self.ztoc = ztoc
        self.calls = 0
        self.failures = failures

    async def __call__(self) -> bytes:
        self.calls += 1
        await asyncio.sleep(0)
        if self.calls <= self.failures:
            raise Unavailable("registry down")
        return self.ztoc


def _unplanned(layer: _Layer, opened: Layer) -> tuple[str, int]:
    """A file the document does not name, whose data lies past the first span (inflating it needs a window)."""
    named = {s.path for s in _segments(layer)}
    for name in layer.files:
        ino = opened.tree.resolve(name.encode())
        if name not in named and opened.spans.span_of(opened.tree.header_offset(ino)) > 0:
            return name, ino
    raise AssertionError("no such file")


async def test_a_layer_mounted_from_ztoc_metadata_serves_its_points_without_the_ztoc(
    layer: _Layer, tmp_path: Path, executor: ThreadPoolExecutor
) -> None:
    """The metadata is the zTOC but for its windows: the tree and the fetch points need nothing else, and the zTOC
    is fetched once, when a span must first be inflated; every byte served is the layer's."""
    metadata = lo.encode_ztoc_metadata(ztoc_without_windows(layer.ztoc))
    assert len(metadata) < len(layer.ztoc) / 4, (len(metadata), len(layer.ztoc))
    segments = _segments(layer)
    points = await layer.fetch_points(segments)
    source = _ZtocSource(layer.ztoc)
    async with _opened(layer, tmp_path, executor, source) as (opened, blob):
        assert not opened.spans.has_windows
        result = await replay(opened, segments, name="metadata", fetch_points=points)
        assert (result.fetch_points, result.spans, result.failed_runs) == (len(points), 0, 0)
        await _read_all(opened, layer, segments)
        assert source.calls == 0
        name, ino = _unplanned(layer, opened)
        got = await asyncio.gather(*(opened.reader.read(ino, 0, 5000) for _ in range(3)))
        assert got == [layer.files[name][:5000]] * 3
        assert source.calls == 1 and opened.spans.has_windows
        for other in layer.files:  # the rest of the layer, through spans inflated with the real windows
            size = len(layer.files[other])
            assert await opened.reader.read(opened.tree.resolve(other.encode()), 0, size) == layer.files[other]
        assert source.calls == 1 and blob.reads


async def test_a_failed_ztoc_fetch_fails_that_read_and_the_next_read_tries_again(
    layer: _Layer, tmp_path: Path, executor: ThreadPoolExecutor
) -> None:
    source = _ZtocSource(layer.ztoc, failures=1)
    async with _opened(layer, tmp_path, executor, source) as (opened, _):
        name, ino = _unplanned(layer, opened)
        with pytest.raises(Unavailable, match="registry down"):
            await opened.reader.read(ino, 0, 100)
        assert await opened.reader.read(ino, 0, 100) == layer.files[name][:100]
        assert source.calls == 2 and not opened.error


async def test_a_ztoc_that_is_not_the_metadata_fails_reads_that_need_it(
    layer: _Layer, tmp_path: Path, executor: ThreadPoolExecutor
) -> None:
    """A document whose metadata does not match the index's zTOC (stale, or edited): nothing is inflated with
    windows from a zTOC that describes another layout; the reads that need them fail, and the layer says why."""
    other = _Layer(files=14, size=300_001, seed=10).ztoc
    source = _ZtocSource(other)
    async with _opened(layer, tmp_path, executor, source) as (opened, _):
        _, ino = _unplanned(layer, opened)
        for _ in range(2):
            with pytest.raises(DataLoss, match="is not the zTOC the load order document's metadata was made from"):
                await opened.reader.read(ino, 0, 100)
        assert source.calls == 1  # not fetched again: it is the document that is wrong
        assert "metadata was made from" in json.loads(opened.state_json())["error"]


def test_metadata_past_the_size_limit_is_left_out_largest_first(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = random.Random(5)
    big, small = rng.randbytes(3000), rng.randbytes(1000)  # incompressible: base64 makes them 4000 and 1336
    segment = Segment("etc/a", 0, 4096, time_ms=1)
    document = lo.LoadOrder("w", (
        lo.LayerLoadOrder("sha256:" + "1" * 64, (segment,), "sha256:" + "a" * 64, (), big),
        lo.LayerLoadOrder("sha256:" + "2" * 64, (), "sha256:" + "b" * 64, (), small),
    ))  # fmt: skip
    bare = replace(document, layers=tuple(replace(e, ztoc_metadata=b"") for e in document.layers))
    assert _within_size_limit(document) == document  # fits: unchanged
    monkeypatch.setattr(lo, "MAX_DOCUMENT_BYTES", len(lo.marshal(document)) - 1)
    fitted = _within_size_limit(document)
    assert [e.ztoc_metadata for e in fitted.layers] == [b"", small]  # the largest went, the segments stayed
    assert fitted.layers[0].segments == (segment,)
    monkeypatch.setattr(lo, "MAX_DOCUMENT_BYTES", len(lo.marshal(bare)) - 1)
    with pytest.raises(FormatError, match="over"):  # too large even without metadata: an error, not a cut
        _within_size_limit(document)

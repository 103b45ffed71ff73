"""Every size a zTOC gives is cross-checked when the layer is opened: a lying zTOC (re-encoded, valid digests)
is rejected with a FormatError naming the problem, before any read can allocate for it."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import random
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from fs_blobs import MemoryBlob
from fs_layers import BuiltLayer, TarWriter, build_layer, build_plain_layer

from soci.errors import FormatError
from soci.formats.ztoc import Ztoc
from soci.formats.ztoc_codec import marshal_ztoc
from soci.fs.layer import LayerRequest, LayerResolver
from soci.fs.ztoc_reader import load_ztoc
from soci.index.ztoc_builder import build_ztoc

pytestmark = pytest.mark.timeout(60)


def tar_bytes() -> bytes:
    rng = random.Random(3)
    w = TarWriter()
    w.file("a", rng.randbytes(200_000))
    w.file("b", b"z" * 300_000)  # compressible: its span's ratio is high but real
    w.file("c", rng.randbytes(100_000))
    return w.finish()


@pytest.fixture(scope="module")
def gzip_layer() -> BuiltLayer:
    return build_layer(tar_bytes())


@pytest.fixture(scope="module")
def plain_layer() -> BuiltLayer:
    return build_plain_layer(tar_bytes())


@pytest.fixture(scope="module")
def executor() -> Iterator[ThreadPoolExecutor]:
    with ThreadPoolExecutor(2) as pool:
        yield pool


async def open_with(layer: BuiltLayer, ztoc: Ztoc, root: Path, executor: ThreadPoolExecutor) -> None:
    data = marshal_ztoc(ztoc)
    request = LayerRequest(layer.digest, "sha256:" + hashlib.sha256(data).hexdigest(), data, MemoryBlob(layer.blob))
    resolver = LayerResolver(root, executor=executor)
    try:
        opened = await resolver.acquire(request)
        await resolver.release(opened)
    finally:
        await resolver.aclose()


async def test_genuine_layers_open(gzip_layer: BuiltLayer, plain_layer: BuiltLayer, tmp_path: Path,
                                   executor: ThreadPoolExecutor) -> None:  # fmt: skip
    await open_with(gzip_layer, gzip_layer.ztoc, tmp_path, executor)
    await open_with(plain_layer, plain_layer.ztoc, tmp_path, executor)


async def test_a_highly_compressible_layer_opens(tmp_path: Path, executor: ThreadPoolExecutor) -> None:
    w = TarWriter()
    w.file("zeros", bytes(8 << 20))  # ~1000:1, as far as deflate goes
    layer = build_layer(w.finish(), span_size=1 << 20)
    await open_with(layer, layer.ztoc, tmp_path, executor)


async def test_a_much_larger_uncompressed_size_is_rejected(gzip_layer: BuiltLayer, tmp_path: Path,
                                                           executor: ThreadPoolExecutor) -> None:  # fmt: skip
    z = gzip_layer.ztoc
    lying = dataclasses.replace(z, uncompressed_archive_size=z.uncompressed_archive_size * 1000)
    with pytest.raises(FormatError, match=r"archive size \d+ is not believable"):
        await open_with(gzip_layer, lying, tmp_path, executor)


async def test_a_slightly_larger_size_fails_the_read(gzip_layer: BuiltLayer, tmp_path: Path,
                                                     executor: ThreadPoolExecutor) -> None:  # fmt: skip
    """Within the bound, the lie shows when the span inflates short: the read fails, it is never padded."""
    z = gzip_layer.ztoc
    lying = dataclasses.replace(z, uncompressed_archive_size=z.uncompressed_archive_size * 2)
    data = marshal_ztoc(lying)
    request = LayerRequest(gzip_layer.digest, "sha256:" + hashlib.sha256(data).hexdigest(), data,
                           MemoryBlob(gzip_layer.blob))  # fmt: skip
    resolver = LayerResolver(tmp_path, executor=executor)
    layer = await resolver.acquire(request)
    try:
        with pytest.raises(FormatError, match="inflated to"):
            await layer.spans.read(0, lying.uncompressed_archive_size)
    finally:
        await resolver.aclose()


async def test_plain_layer_cannot_claim_more_than_the_blob(plain_layer: BuiltLayer, tmp_path: Path,
                                                           executor: ThreadPoolExecutor) -> None:  # fmt: skip
    z = plain_layer.ztoc
    lying = dataclasses.replace(z, uncompressed_archive_size=z.compressed_archive_size + 512)
    with pytest.raises(FormatError, match="uncompressed layer"):
        await open_with(plain_layer, lying, tmp_path, executor)


@pytest.mark.parametrize("field,value", [("uncompressed_size", 10 << 30), ("uncompressed_offset", -1)])
def test_an_entry_beyond_the_archive_is_rejected(gzip_layer: BuiltLayer, field: str, value: int) -> None:
    z = gzip_layer.ztoc
    entries = list(z.entries)
    i = next(n for n, e in enumerate(entries) if e.name.endswith(b"c"))
    entries[i] = dataclasses.replace(entries[i], **{field: value})
    with pytest.raises(FormatError, match=r"zTOC entry '.*c': data at .* is not inside the \d+-byte archive"):
        load_ztoc(marshal_ztoc(dataclasses.replace(z, entries=tuple(entries))))


def test_an_archive_size_cutting_off_the_last_file_is_rejected(gzip_layer: BuiltLayer) -> None:
    z = gzip_layer.ztoc
    last = max(z.entries, key=lambda e: e.uncompressed_offset + e.uncompressed_size)
    short = dataclasses.replace(z, uncompressed_archive_size=last.uncompressed_offset + last.uncompressed_size - 1)
    with pytest.raises(FormatError, match="is not inside"):
        load_ztoc(marshal_ztoc(short))


def test_builder_output_passes() -> None:
    data = tar_bytes()
    load_ztoc(marshal_ztoc(build_ztoc(io.BytesIO(data), span_size=65536, algorithm="uncompressed")))

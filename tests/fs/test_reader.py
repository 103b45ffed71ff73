"""FileReader: first-read tar header verification against a zTOC that lies."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
from fs_blobs import MemoryBlob
from fs_layers import BuiltLayer, TarWriter, build_layer, every_entry_type_tar

from soci.cache import MemorySpanCache
from soci.errors import DataLoss
from soci.formats.zinfo import zinfo_from_blob
from soci.formats.ztoc import Ztoc
from soci.fs.reader import FileReader
from soci.fs.spans import SpanManager
from soci.fs.tree import build_tree

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def layer() -> BuiltLayer:
    return build_layer(every_entry_type_tar())


@pytest.fixture(scope="module")
def executor() -> Iterator[ThreadPoolExecutor]:
    with ThreadPoolExecutor(2) as pool:
        yield pool


def reader_for(layer: BuiltLayer, ztoc: Ztoc, executor: ThreadPoolExecutor, verify: bool = True) -> FileReader:
    spans = SpanManager(
        zinfo_from_blob(ztoc.compression_algorithm, ztoc.checkpoints), ztoc.span_digests,
        compressed_size=ztoc.compressed_archive_size, uncompressed_size=ztoc.uncompressed_archive_size,
        blob=MemoryBlob(layer.blob), cache=MemorySpanCache(100), executor=executor,
    )  # fmt: skip
    return FileReader(build_tree(ztoc.entries), spans, verify=verify)


def tampered(ztoc: Ztoc, name: bytes, **changes: object) -> Ztoc:
    entries = tuple(dataclasses.replace(e, **changes) if e.name == name else e for e in ztoc.entries)  # type: ignore[arg-type]
    return dataclasses.replace(ztoc, entries=entries)


async def test_honest_ztoc_reads_every_file(layer: BuiltLayer, executor: ThreadPoolExecutor) -> None:
    reader = reader_for(layer, layer.ztoc, executor)
    tree = build_tree(layer.ztoc.entries)
    for e in layer.ztoc.entries:
        ino = tree.resolve(e.name)
        if e.type == "reg" and not e.name.rsplit(b"/", 1)[-1].startswith(b".wh."):
            assert (
                await reader.read(ino, 0, e.uncompressed_size + 10)
                == layer.tar[e.uncompressed_offset : e.uncompressed_offset + e.uncompressed_size]
            )


@pytest.mark.parametrize(
    ("field", "value"),
    [("mode", 0o600), ("uid", 99), ("gid", 98), ("mod_time", "2020-01-01T00:00:00Z"),
     ("pax_records", ((b"SCHILY.xattr.user.x", b"y"),)), ("devmajor", 5), ("linkname", b"other")],
)  # fmt: skip
async def test_header_fields_must_match(layer: BuiltLayer, executor: ThreadPoolExecutor, field: str,
                                        value: object) -> None:  # fmt: skip
    name = b"etc/hostname"
    reader = reader_for(layer, tampered(layer.ztoc, name, **{field: value}), executor)
    ino = reader._tree.resolve(name)
    with pytest.raises(DataLoss, match="does not match the zTOC"):
        await reader.read(ino, 0, 10)
    # without verification the same read is served
    unverified = reader_for(layer, tampered(layer.ztoc, name, **{field: value}), executor, verify=False)
    assert await unverified.read(ino, 0, 10) == b"lazy\n"


async def test_a_file_pointed_at_other_bytes_is_refused(layer: BuiltLayer, executor: ThreadPoolExecutor) -> None:
    entries = list(layer.ztoc.entries)
    i = next(k for k, e in enumerate(entries) if e.name == b"etc/empty")
    # claim etc/empty has the 5 data bytes of etc/hostname, which come right before its header
    prev = entries[i - 1]
    entries[i] = dataclasses.replace(entries[i], uncompressed_offset=prev.uncompressed_offset, uncompressed_size=5)
    entries[i - 1] = dataclasses.replace(prev, uncompressed_offset=prev.uncompressed_offset - 512,
                                         uncompressed_size=0)  # fmt: skip
    z = dataclasses.replace(layer.ztoc, entries=tuple(entries))
    reader = reader_for(layer, z, executor)
    ino = reader._tree.resolve(b"etc/empty")
    with pytest.raises(DataLoss):
        await reader.read(ino, 0, 5)


async def test_absolute_and_climbing_names_verify_and_stay_inside(executor: ThreadPoolExecutor) -> None:
    w = TarWriter()
    w.file("/abs/file", b"absolute\n")
    w.file("./dot/file", b"dot\n")
    w.file("a/../../../up", b"climbing\n")
    layer = build_layer(w.finish())
    reader = reader_for(layer, layer.ztoc, executor)
    tree = reader._tree
    assert sorted(n for _, n, _ in tree.children(tree.resolve(b""))) == [b"abs", b"dot", b"up"]
    for path, content in ((b"abs/file", b"absolute\n"), (b"dot/file", b"dot\n"), (b"up", b"climbing\n")):
        assert await reader.read(tree.resolve(path), 0, 100) == content


async def test_archive_reads_are_the_tar_and_name_the_files_they_cover(
    layer: BuiltLayer, executor: ThreadPoolExecutor
) -> None:
    """The EROFS data device: any range of the uncompressed tar, each file inside reported once per read."""
    reader = reader_for(layer, layer.ztoc, executor)
    tree = reader._tree
    reads: list[tuple[int, int, int]] = []
    reader.on_read = lambda ino, offset, length: reads.append((ino, offset, length))
    size = layer.ztoc.uncompressed_archive_size  # the zTOC's archive ends before tarfile's record padding
    assert await reader.read_archive(0, size + 4096) == layer.tar[:size]
    files = {tree.resolve(e.name) for e in layer.ztoc.entries if e.type == "reg" and e.uncompressed_size}
    assert {ino for ino, _, _ in reads} == files
    for ino, offset, length in reads:
        assert (offset, length) == (0, tree.data_range(ino)[1])  # the whole file, from its start
    # a range inside one file is reported as that part of it
    big = max(files, key=lambda i: tree.data_range(i)[1])
    start, _ = tree.data_range(big)
    reads.clear()
    assert await reader.read_archive(start + 100, 50) == layer.tar[start + 100 : start + 150]
    assert reads == [(big, 100, 50)]
    assert await reader.read_archive(size, 10) == b""


async def test_archive_reads_check_the_tar_headers(layer: BuiltLayer, executor: ThreadPoolExecutor) -> None:
    name = b"etc/hostname"
    reader = reader_for(layer, tampered(layer.ztoc, name, mode=0o600), executor)
    start, _ = reader._tree.data_range(reader._tree.resolve(name))
    with pytest.raises(DataLoss, match="does not match the zTOC"):
        await reader.read_archive(start, 5)

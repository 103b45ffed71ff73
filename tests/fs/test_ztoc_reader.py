"""load_ztoc reads the flatbuffer directly; it must agree with unmarshal_ztoc + build_tree everywhere."""

from __future__ import annotations

import contextlib
import dataclasses
import random

import pytest
from fs_layers import TarWriter, build_layer, build_plain_layer, every_entry_type_tar

from soci.errors import FormatError
from soci.formats.zinfo import without_windows
from soci.formats.ztoc import FileMetadata
from soci.formats.ztoc_codec import marshal_ztoc, unmarshal_ztoc
from soci.fs.tree import LayerTree, build_tree
from soci.fs.ztoc_reader import ZtocInfo, load_ztoc, ztoc_without_windows


def _same_tree(a: LayerTree, b: LayerTree) -> None:
    assert a.inode_count == b.inode_count
    for ino in range(1, a.inode_count + 1):
        assert a.attributes(ino) == b.attributes(ino)
        assert a.path(ino) == b.path(ino)
        assert a.link_target(ino) == b.link_target(ino)
        assert a.xattrs(ino) == b.xattrs(ino)
        assert list(a.children(ino)) == list(b.children(ino))
        assert (a.data_range(ino), a.header_offset(ino)) == (b.data_range(ino), b.header_offset(ino))
        assert (a.is_opaque(ino), a.is_whiteout(ino)) == (b.is_opaque(ino), b.is_whiteout(ino))


def test_agrees_with_unmarshal_on_every_entry_type() -> None:
    layer = build_layer(every_entry_type_tar())
    info, tree = load_ztoc(layer.ztoc_bytes)
    z = unmarshal_ztoc(layer.ztoc_bytes)
    assert info == ZtocInfo.of(z)
    _same_tree(tree, build_tree(z.entries))


def test_entries_out_of_offset_order_are_sorted() -> None:
    w = TarWriter()
    for i in range(20):
        w.file(f"d{i % 3}/f{i}", bytes([i]) * (i * 100))
    z = build_layer(w.finish()).ztoc
    shuffled = list(z.entries)
    random.Random(3).shuffle(shuffled)
    data = marshal_ztoc(dataclasses.replace(z, entries=tuple(shuffled)))
    _, tree = load_ztoc(data)
    _same_tree(tree, build_tree(z.entries))


def test_overlapping_entries_rejected_like_unmarshal() -> None:
    z = build_layer(every_entry_type_tar()).ztoc
    bad = list(z.entries)
    bad[5] = FileMetadata(bad[5].name, bad[5].type, bad[4].uncompressed_offset + 1, 0)
    data = marshal_ztoc(dataclasses.replace(z, entries=tuple(bad)))
    with pytest.raises(FormatError):
        unmarshal_ztoc(data)
    with pytest.raises(FormatError):
        load_ztoc(data)


@pytest.mark.parametrize("cut", [0, 3, 17, 1000, -5])
def test_truncated_buffers_are_format_errors(cut: int) -> None:
    data = build_layer(every_entry_type_tar()).ztoc_bytes
    with pytest.raises(FormatError):
        load_ztoc(data[:cut])


def test_random_corruption_never_escapes_as_another_error() -> None:
    data = bytearray(build_layer(every_entry_type_tar()).ztoc_bytes)
    rng = random.Random(7)
    for _ in range(200):
        mutated = bytearray(data)
        for _ in range(4):
            mutated[rng.randrange(len(mutated) // 4)] ^= 1 << rng.randrange(8)  # tables sit near the front
        with contextlib.suppress(FormatError):  # anything else escaping fails the test
            load_ztoc(bytes(mutated))


def test_without_windows_is_the_same_ztoc_but_for_its_windows() -> None:
    layer = build_layer(every_entry_type_tar(), span_size=1 << 10)
    stripped = ztoc_without_windows(layer.ztoc_bytes)
    assert len(stripped) == len(layer.ztoc_bytes) and stripped != layer.ztoc_bytes
    info, tree = load_ztoc(layer.ztoc_bytes)
    stripped_info, stripped_tree = load_ztoc(stripped)
    assert dataclasses.replace(stripped_info, checkpoints=info.checkpoints) == info
    assert stripped_info.checkpoints == without_windows(info.checkpoints)
    _same_tree(tree, stripped_tree)
    # only the window bytes differ
    changed = [i for i, (a, b) in enumerate(zip(stripped, layer.ztoc_bytes, strict=True)) if a != b]
    start = layer.ztoc_bytes.index(info.checkpoints)
    assert all(start + 12 <= i < start + len(info.checkpoints) for i in changed)
    assert ztoc_without_windows(stripped) == stripped
    plain = build_plain_layer(every_entry_type_tar(), span_size=1 << 10)
    assert ztoc_without_windows(plain.ztoc_bytes) == plain.ztoc_bytes  # no windows to strip
    with pytest.raises(FormatError):
        ztoc_without_windows(layer.ztoc_bytes[:100])

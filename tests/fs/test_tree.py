"""LayerTree: the overlayfs view of a zTOC (names, parents, hard links, whiteouts, opaque dirs, modes)."""

from __future__ import annotations

import stat

import pytest
from fs_layers import MTIME, TarWriter, build_layer, every_entry_type_tar

from soci.errors import FormatError
from soci.formats.ztoc import FileMetadata
from soci.fs.tree import ROOT_INODE, LayerTree, build_tree, clean_name


@pytest.fixture(scope="module")
def tree() -> LayerTree:
    return build_tree(build_layer(every_entry_type_tar()).ztoc.entries)


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        (b"./a/b/", b"a/b"),
        (b"a//b/./c", b"a/b/c"),
        (b"/abs/x", b"abs/x"),
        (b"../../etc/passwd", b"etc/passwd"),
        (b"a/../../b", b"b"),
        (b"./", b""),
        (b"..", b""),
        (b".hidden/x", b".hidden/x"),
        (b"a/.b/../c", b"a/c"),
        (b"plain", b"plain"),
    ],
)
def test_clean_name_never_climbs_out(raw: bytes, clean: bytes) -> None:
    assert clean_name(raw) == clean


def test_lookup_and_children_are_sorted(tree: LayerTree) -> None:
    names = [name for _, name, _ in tree.children(ROOT_INODE)]
    assert names == sorted(names)
    assert b"data" in names and b"etc" in names
    etc = tree.lookup(ROOT_INODE, b"etc")
    assert tree.is_dir(etc)
    assert tree.lookup(etc, b"hostname") == tree.resolve(b"etc/hostname")
    assert tree.lookup(etc, b"missing") == 0
    # resuming a listing from a position gives the rest
    listing = list(tree.children(ROOT_INODE))
    assert list(tree.children(ROOT_INODE, listing[2][0])) == listing[3:]


def test_modes_owners_and_times(tree: LayerTree) -> None:
    su = tree.attributes(tree.resolve(b"usr/bin/su"))
    assert su.mode == stat.S_IFREG | 0o4755
    wall = tree.attributes(tree.resolve(b"usr/bin/wall"))
    assert wall.mode == stat.S_IFREG | 0o2755 and wall.gid == 5
    assert tree.attributes(tree.resolve(b"tmp")).mode == stat.S_IFDIR | 0o1777
    host = tree.attributes(tree.resolve(b"etc/hostname"))
    assert host.mtime_ns == MTIME * 10**9 + 123456789
    assert host.size == 5 and host.blocks == 1
    big = tree.attributes(tree.resolve(b"owners/big-ids"))
    assert (big.uid, big.gid, big.mtime_ns) == (2_000_000_000, 65534, 0)
    root = tree.attributes(ROOT_INODE)
    assert root.mtime_ns == (MTIME - 10) * 10**9  # from the "./" entry


def test_devices_fifos_symlinks(tree: LayerTree) -> None:
    null = tree.attributes(tree.resolve(b"dev/null"))
    assert stat.S_ISCHR(null.mode) and (null.rdev_major, null.rdev_minor) == (1, 3)
    sda = tree.attributes(tree.resolve(b"dev/sda"))
    assert stat.S_ISBLK(sda.mode) and (sda.rdev_major, sda.rdev_minor) == (8, 0)
    assert stat.S_ISFIFO(tree.mode(tree.resolve(b"dev/initctl")))
    rel = tree.resolve(b"links/rel")
    assert stat.S_ISLNK(tree.mode(rel))
    assert tree.link_target(rel) == b"a"
    assert tree.attributes(rel).size == 1
    assert tree.link_target(tree.resolve(b"links/dangling")) == b"../nowhere/at/all"


def test_hard_links_share_one_inode(tree: LayerTree) -> None:
    inodes = {tree.resolve(b"links/" + n) for n in (b"a", b"b", b"c", b"other-dir-name")}
    assert len(inodes) == 1
    ino = inodes.pop()
    assert tree.attributes(ino).nlink == 4
    assert tree.path(ino) == b"links/a"


def test_whiteouts_and_opaque_dirs(tree: LayerTree) -> None:
    gone = tree.resolve(b"removed/gone")
    assert tree.is_whiteout(gone)
    attrs = tree.attributes(gone)
    assert attrs.mode == stat.S_IFCHR and (attrs.rdev_major, attrs.rdev_minor) == (0, 0)
    assert tree.is_whiteout(tree.resolve(b"old-top-level"))
    assert tree.resolve(b"removed/.wh.gone") == 0
    opaque = tree.resolve(b"opaque")
    assert tree.is_opaque(opaque)
    assert [n for _, n, _ in tree.children(opaque)] == [b"kept"]
    assert not tree.is_opaque(tree.resolve(b"etc"))


def test_repeated_directory_entry_overwrites_attributes(tree: LayerTree) -> None:
    repeat = tree.resolve(b"repeat")
    attrs = tree.attributes(repeat)
    assert (attrs.mode, attrs.uid, attrs.mtime_ns) == (stat.S_IFDIR | 0o711, 4, (MTIME + 99) * 10**9)
    assert tree.resolve(b"repeat/inside")


def test_xattrs(tree: LayerTree) -> None:
    ino = tree.resolve(b"xattr/file")
    assert tree.xattrs(ino) == [(b"trusted.note", b"t"), (b"user.color", b"blue"), (b"user.empty", b"")]
    assert tree.xattr(ino, b"user.color") == b"blue"
    assert tree.xattrs(tree.resolve(b"etc/hostname")) == []


def test_directory_link_counts(tree: LayerTree) -> None:
    etc = tree.resolve(b"etc")
    assert tree.attributes(etc).nlink == 2
    subdirs = sum(1 for _, _, c in tree.children(ROOT_INODE) if tree.is_dir(c))
    assert tree.attributes(ROOT_INODE).nlink == 2 + subdirs


def _entry(name: bytes, kind: str, offset: int, **kw: object) -> FileMetadata:
    return FileMetadata(name=name, type=kind, uncompressed_offset=offset, uncompressed_size=0, **kw)  # type: ignore[arg-type]


def test_missing_parents_are_synthesised() -> None:
    tree = build_tree([_entry(b"a/b/c/file", "reg", 512, mode=0o600, uid=9)])
    for path in (b"a", b"a/b", b"a/b/c"):
        attrs = tree.attributes(tree.resolve(path))
        assert (attrs.mode, attrs.uid, attrs.mtime_ns) == (stat.S_IFDIR | 0o755, 0, 0)
    assert tree.attributes(tree.resolve(b"a/b/c/file")).uid == 9


def test_escaping_names_stay_inside() -> None:
    tree = build_tree([_entry(b"../../../etc/passwd", "reg", 512), _entry(b"/abs", "reg", 1024)])
    assert tree.resolve(b"etc/passwd") and tree.resolve(b"abs")
    assert [n for _, n, _ in tree.children(ROOT_INODE)] == [b"abs", b"etc"]


def test_later_entry_replaces_earlier_name() -> None:
    tree = build_tree([
        _entry(b"x", "reg", 512, mode=0o600),
        _entry(b"y", "hardlink", 1024, linkname=b"x"),
        _entry(b"x", "symlink", 1536, linkname=b"target"),
    ])  # fmt: skip
    assert stat.S_ISLNK(tree.mode(tree.resolve(b"x")))
    y = tree.resolve(b"y")
    assert stat.S_ISREG(tree.mode(y)) and tree.attributes(y).nlink == 1


def test_whiteout_never_hides_a_real_entry() -> None:
    tree = build_tree([_entry(b"d/x", "reg", 512), _entry(b"d/.wh.x", "reg", 1024), _entry(b"d/.wh.y", "reg", 1536),
                       _entry(b"d/y", "reg", 2048)])  # fmt: skip
    assert not tree.is_whiteout(tree.resolve(b"d/x"))
    assert not tree.is_whiteout(tree.resolve(b"d/y"))
    assert [n for _, n, _ in tree.children(tree.resolve(b"d"))] == [b"x", b"y"]


def test_hard_link_without_target_fails() -> None:
    with pytest.raises(FormatError, match="cannot get link destination"):
        build_tree([_entry(b"b", "hardlink", 512, linkname=b"a")])


def test_entries_overlapping_headers_are_rejected() -> None:
    with pytest.raises(FormatError, match="invalid toc entry"):
        build_tree([
            FileMetadata(b"a", "reg", uncompressed_offset=512, uncompressed_size=2000),
            FileMetadata(b"b", "reg", uncompressed_offset=1024, uncompressed_size=0),
        ])  # fmt: skip


def test_header_offsets_follow_the_previous_entry() -> None:
    w = TarWriter()
    w.file("one", b"1" * 700)
    w.file("two", b"2")
    layer = build_layer(w.finish())
    tree = build_tree(layer.ztoc.entries)
    one, two = tree.resolve(b"one"), tree.resolve(b"two")
    assert tree.header_offset(one) == 0
    assert tree.header_offset(two) == tree.data_range(one)[0] + 1024  # 700 bytes padded to 1024
    assert layer.tar[tree.data_range(two)[0]] == ord("2")

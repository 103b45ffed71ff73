"""Regenerate the golden vectors in tests/data/golden/ from upstream SOCI's own Go code.

Run from the repository root:  interop/build.sh && .venv/bin/python interop/make_vectors.py

Every input (tar layers, gzip streams, OCI image layouts) is generated here deterministically; the outputs
(zTOC bytes, SOCI index manifests, converted layouts) come from upstream's Go packages and CLI, built by
interop/build.sh from the Go module proxy. See interop/README.md.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import random
import shutil
import struct
import subprocess
import sys
import tarfile
import tempfile
import zlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
BIN = HERE / ".cache" / "bin"
DEFAULT_OUT = REPO / "tests" / "data" / "golden"

DEFAULT_SPAN = 1 << 22
SMALL_SPAN = 65536
MTIME = 1700000000  # fixed timestamp for every generated entry and file

# Upstream renders mod_time in the local zone and reads SOURCE_DATE_EPOCH in its CLI; pin both.
TOOL_ENV = {**os.environ, "TZ": "UTC", "SOURCE_DATE_EPOCH": str(MTIME)}


# ---------------------------------------------------------------------------------------------------------
# deterministic content


def text_data(seed: int, size: int) -> bytes:
    """Compressible pseudo-text: deflate produces ordinary dynamic-Huffman blocks (non-zero bit offsets)."""
    rng = random.Random(seed)
    words = [bytes(rng.choice(b"abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(2, 9))) for _ in range(400)]
    out = bytearray()
    while len(out) < size:
        out += rng.choice(words)
        out += b"\n" if rng.random() < 0.08 else b" "
    return bytes(out[:size])


def random_data(seed: int, size: int) -> bytes:
    """Incompressible bytes: deflate falls back to stored blocks."""
    return random.Random(seed).randbytes(size)


# ---------------------------------------------------------------------------------------------------------
# tar building


def entry(
    name: str,
    kind: bytes = tarfile.REGTYPE,
    data: bytes = b"",
    *,
    mode: int = 0o644,
    linkname: str = "",
    uid: int = 0,
    gid: int = 0,
    uname: str = "root",
    gname: str = "root",
    mtime: float = MTIME,
    devmajor: int = 0,
    devminor: int = 0,
    pax: dict[str, str] | None = None,
) -> tuple[tarfile.TarInfo, bytes]:
    ti = tarfile.TarInfo(name)
    ti.type = kind
    ti.size = len(data) if kind in (tarfile.REGTYPE, tarfile.AREGTYPE) else 0
    ti.mode = mode
    ti.linkname = linkname
    ti.uid, ti.gid, ti.uname, ti.gname = uid, gid, uname, gname
    ti.mtime = mtime
    ti.devmajor, ti.devminor = devmajor, devminor
    if pax:
        ti.pax_headers = dict(pax)
    return ti, data


def build_tar(
    entries: Iterable[tuple[tarfile.TarInfo, bytes]],
    fmt: int = tarfile.GNU_FORMAT,
    *,
    global_pax: dict[str, str] | None = None,
) -> bytes:
    buf = io.BytesIO()
    kwargs: dict[str, Any] = {"format": fmt}
    if global_pax is not None:
        kwargs["pax_headers"] = global_pax
    with tarfile.open(fileobj=buf, mode="w", **kwargs) as tf:
        for ti, data in entries:
            tf.addfile(ti, io.BytesIO(data) if ti.size else None)
    return buf.getvalue()


def member_offsets(tar: bytes) -> dict[str, int]:
    """Header offset of each member's own (last) header block, by name."""
    out: dict[str, int] = {}
    with tarfile.open(fileobj=io.BytesIO(tar), mode="r:") as tf:
        for m in tf.getmembers():
            out[m.name] = m.offset_data - tarfile.BLOCKSIZE
    return out


def patch_header(tar: bytes, header_offset: int, field_offset: int, value: bytes) -> bytes:
    """Overwrite one raw header field and fix the checksum (for header shapes tarfile will not write)."""
    b = bytearray(tar)
    b[header_offset + field_offset : header_offset + field_offset + len(value)] = value
    hdr = b[header_offset : header_offset + 512]
    hdr[148:156] = b" " * 8
    b[header_offset + 148 : header_offset + 156] = b"%06o\0 " % sum(hdr)
    return bytes(b)


def gnu_tar(root: Path, *extra: str) -> bytes:
    """GNU tar over ``root`` with everything that varies between runs pinned."""
    cmd = [
        "tar", "-c", "-f", "-", "-C", str(root), "--sort=name", f"--mtime=@{MTIME}",
        "--owner=root:0", "--group=root:0", *extra, ".",
    ]  # fmt: skip
    return subprocess.run(cmd, check=True, capture_output=True, env=TOOL_ENV).stdout


# ---------------------------------------------------------------------------------------------------------
# gzip building


def gzip_member(
    data: bytes,
    level: int = 6,
    *,
    fname: bytes | None = None,
    comment: bytes | None = None,
    extra: bytes | None = None,
    header_crc: bool = False,
    mtime: int = 0,
    mem_level: int = 8,
) -> bytes:
    """One gzip member written by hand, so header flags (FEXTRA, FNAME, FCOMMENT, FHCRC) can be chosen."""
    flags = (extra is not None) << 2 | (fname is not None) << 3 | (comment is not None) << 4 | header_crc << 1
    xfl = 2 if level == 9 else 4 if level == 1 else 0
    hdr = bytearray(b"\x1f\x8b\x08" + bytes([flags]) + struct.pack("<I", mtime) + bytes([xfl, 255]))
    if extra is not None:
        hdr += struct.pack("<H", len(extra)) + extra
    if fname is not None:
        hdr += fname + b"\0"
    if comment is not None:
        hdr += comment + b"\0"
    if header_crc:
        hdr += struct.pack("<H", zlib.crc32(hdr) & 0xFFFF)
    co = zlib.compressobj(level, zlib.DEFLATED, -15, mem_level)  # low mem_level = many small blocks
    body = co.compress(data) + co.flush()
    return bytes(hdr) + body + struct.pack("<II", zlib.crc32(data), len(data) & 0xFFFFFFFF)


def pigz(data: bytes, *args: str) -> bytes:
    return subprocess.run(["pigz", "-c", "-n", "-T", *args], input=data, check=True, capture_output=True).stdout


# ---------------------------------------------------------------------------------------------------------
# zTOC cases


@dataclass
class ZtocCase:
    name: str
    description: str
    make: Callable[[Path], bytes]
    algorithm: str = "gzip"
    spans: Sequence[int] = (SMALL_SPAN,)


def all_types_tar(_: Path) -> bytes:
    entries = [
        entry("dir/", tarfile.DIRTYPE, mode=0o755),
        entry("dir/file.txt", data=text_data(1, 3000), uid=1000, gid=1000, uname="user", gname="users"),
        entry("dir/empty", data=b""),
        entry("dir/link-to-file", tarfile.SYMTYPE, linkname="file.txt", mode=0o777),
        entry("dir/hard", tarfile.LNKTYPE, linkname="dir/file.txt"),
        entry("dev/", tarfile.DIRTYPE, mode=0o755),
        entry("dev/null", tarfile.CHRTYPE, mode=0o666, devmajor=1, devminor=3),
        entry("dev/sda", tarfile.BLKTYPE, mode=0o660, devmajor=8, devminor=0, gid=6, gname="disk"),
        entry("dev/fifo", tarfile.FIFOTYPE, mode=0o600),
        entry("dir/.wh.deleted", data=b""),
        entry("opaque/", tarfile.DIRTYPE, mode=0o755),
        entry("opaque/.wh..wh..opq", data=b""),
        entry("setuid", data=b"#!/bin/sh\n", mode=0o4755),
        entry("sticky/", tarfile.DIRTYPE, mode=0o1777),
        entry("legacy-regular", tarfile.AREGTYPE, data=b"V7 style\n"),
        entry("mode-with-type-bits", data=b"x"),
        entry("./dot-slash", data=b"relative\n"),
        entry("dir/./dot-inside/../x", data=b"not clean but inside\n"),
        entry("dir/file-again.txt", data=text_data(2, 700)),
    ]
    tar = build_tar(entries, tarfile.USTAR_FORMAT)
    # Some writers put the file type into the mode field (0o100644); upstream keeps the raw value.
    return patch_header(tar, member_offsets(tar)["mode-with-type-bits"], 100, b"0100644\0")


def unclean_names_tar(_: Path) -> bytes:
    """Names that leave the layer root; upstream indexes them verbatim and cleans them only at mount time."""
    entries = [
        entry("/absolute", data=b"absolute\n"),
        entry("../escape", data=b"dot-dot\n"),
        entry("a/../../b", data=b"dot-dot inside\n"),
        entry("ok", tarfile.SYMTYPE, linkname="/etc/passwd"),
        entry("hard-abs", tarfile.LNKTYPE, linkname="/absolute"),
    ]
    return build_tar(entries, tarfile.USTAR_FORMAT)


def pax_tar(_: Path) -> bytes:
    long_dir = "/".join(f"segment-{i:02d}" for i in range(12))
    entries = [
        entry("xattrs", data=b"has xattrs\n", pax={
            "SCHILY.xattr.user.comment": "hello",
            "SCHILY.xattr.security.capability": "\x01\x00\x00\x02\udcff\x00",
            "SCHILY.xattr.trusted.overlay.opaque": "y",
            "LIBARCHIVE.xattr.user.other": "aGVsbG8=",
        }),
        entry(f"{long_dir}/a-file-whose-path-is-longer-than-one-hundred-bytes.txt", data=b"long path\n"),
        entry("long-link", tarfile.SYMTYPE, linkname=f"{long_dir}/target-of-a-long-symlink"),
        entry("subsecond", data=b"", pax={"mtime": "1700000000.5"}),
        entry("nanosecond", data=b"", pax={"mtime": "1700000000.123456789"}),
        entry("before-epoch", data=b"", pax={"mtime": "-1.25"}),
        entry("big-ids", data=b"", uid=3_000_000, gid=4_000_000),
        entry("ünïcödé-näme", data=b"utf-8\n", uname="üser", gname="gröup"),
        entry("atime-ctime", data=b"", pax={"atime": "1700000001.1", "ctime": "1700000002.2"}),
        entry("unknown-record", data=text_data(3, 2000), pax={"comment": "an unknown record is kept as well"}),
    ]  # fmt: skip
    return build_tar(entries, tarfile.PAX_FORMAT)


def gnu_long_tar(_: Path) -> bytes:
    long_name = "gnu/" + "n" * 150 + "/file"
    long_target = "t" * 200
    entries = [
        entry("gnu/", tarfile.DIRTYPE, mode=0o755),
        entry(long_name, data=b"long name\n"),
        entry("gnu/long-symlink", tarfile.SYMTYPE, linkname=long_target),
        entry("gnu/long-hardlink" + "h" * 100, tarfile.LNKTYPE, linkname=long_name),
        entry("gnu/base256-uid", data=b"", uid=10_000_000, gid=2**21 + 5),
        entry("gnu/before-1970", data=b"", mtime=-1),
        entry("gnu/year-10000", data=b"", mtime=253402300800),  # Go cannot render it: mod_time is ""
        entry("gnu/after", data=b"after odd times\n"),
    ]
    return build_tar(entries, tarfile.GNU_FORMAT)


def ustar_prefix_tar(_: Path) -> bytes:
    prefix = "p" * 60 + "/" + "q" * 60
    entries = [
        entry(f"{prefix}/", tarfile.DIRTYPE, mode=0o755),
        entry(f"{prefix}/{'f' * 90}", data=b"split into prefix and name\n"),
        entry(f"{prefix}/short", data=b"short\n"),
    ]
    return build_tar(entries, tarfile.USTAR_FORMAT)


def spans_tar(_: Path) -> bytes:
    """~200 KiB of files of mixed compressibility, several of them crossing 64 KiB span boundaries."""
    entries = [entry("data/", tarfile.DIRTYPE, mode=0o755)]
    for i, size in enumerate([30_000, 70_000, 3_000, 50_000, 512, 0, 40_000, 1, 9_000]):
        make = random_data if i % 3 == 1 else text_data
        entries.append(entry(f"data/f{i:02d}", data=make(100 + i, size)))
    return build_tar(entries)


def many_blocks_tar(_: Path) -> bytes:
    return build_tar([entry("t", data=text_data(250, 1600)), entry("r", data=random_data(251, 500))])


def small_mixed_tar(_: Path) -> bytes:
    entries = [entry("m/", tarfile.DIRTYPE, mode=0o755)]
    for i, size in enumerate([12_000, 30_000, 9_000, 20_000]):
        make = random_data if i == 2 else text_data
        entries.append(entry(f"m/f{i}", data=make(200 + i, size)))
    return build_tar(entries)


def gnutar_tree(root: Path, *, xattrs: bool) -> None:
    (root / "usr/share/doc/pkg").mkdir(parents=True)
    (root / "etc").mkdir()
    (root / "var/empty").mkdir(parents=True)
    (root / "usr/share/doc/pkg/README").write_bytes(text_data(300, 20_000))
    (root / "usr/share/doc/pkg/blob.bin").write_bytes(random_data(301, 30_000))
    (root / "etc/config").write_bytes(b"key=value\n")
    deep = root / "usr/share" / ("d" * 80) / ("e" * 80)
    deep.mkdir(parents=True)
    (deep / ("f" * 120)).write_bytes(b"deep\n")
    os.symlink("../../etc/config", root / "usr/share/config-link")
    os.link(root / "etc/config", root / "etc/config.hardlink")
    if xattrs:
        os.setxattr(root / "etc/config", "user.origin", b"make_vectors")
    for p in sorted(root.rglob("*"), reverse=True):
        os.utime(p, (MTIME, MTIME), follow_symlinks=False)


def gnutar_gnu(work: Path) -> bytes:
    root = work / "tree"
    gnutar_tree(root, xattrs=False)
    return gnu_tar(root, "--format=gnu")


def gnutar_posix(work: Path) -> bytes:
    root = work / "tree"
    gnutar_tree(root, xattrs=True)
    return gnu_tar(
        root, "--format=posix", "--xattrs", "--xattrs-include=user.*",
        "--pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime",
    )  # fmt: skip


def gnutar_sparse(work: Path, fmt: str) -> bytes:
    root = work / "sparse"
    root.mkdir()
    with open(root / "holes", "wb") as f:
        f.write(b"head")
        f.seek(200_000)
        f.write(b"tail")
    os.utime(root / "holes", (MTIME, MTIME))
    os.utime(root, (MTIME, MTIME))
    extra = ["--pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime"] if fmt == "posix" else []
    tar = gnu_tar(root, f"--format={fmt}", "--sparse", *extra)
    # GNU tar puts its PID into the placeholder name of a PAX sparse file; pin it
    for off in range(0, len(tar), 512):
        if tar[off : off + 16] == b"./GNUSparseFile.":
            tar = patch_header(tar, off, 0, b"./GNUSparseFile.0/holes".ljust(100, b"\0"))
    return tar


def tiny_tar(_: Path) -> bytes:
    return build_tar([entry("only-file", data=b"just one entry\n")])


EMPTY_TAR = b"\0" * 1024


def with_gzip(make: Callable[[Path], bytes], **kw: Any) -> Callable[[Path], bytes]:
    return lambda work: gzip_member(make(work), **kw)


def multi_member(work: Path) -> bytes:
    tar = spans_tar(work)
    # cut points: inside a header, at a block boundary, and an empty member in between
    cuts = [0, 700, 65536, 65536, 150_000, len(tar)]
    levels = [6, 9, 1, 6, 0]
    return b"".join(gzip_member(tar[a:b], lv) for a, b, lv in zip(cuts, cuts[1:], levels, strict=False))


def gzip_then_garbage(work: Path) -> bytes:
    return gzip_member(tiny_tar(work)) + b"\0" * 16


def pax_global_header(_: Path) -> bytes:
    return build_tar([entry("file", data=b"x\n")], tarfile.PAX_FORMAT, global_pax={"comment": "global"})


def no_eof_marker(work: Path) -> bytes:
    tar = tiny_tar(work)
    with tarfile.open(fileobj=io.BytesIO(tar)) as tf:
        end = max(m.offset_data + -(-m.size // 512) * 512 for m in tf.getmembers())
    return tar[:end]


def one_zero_block(work: Path) -> bytes:
    return no_eof_marker(work) + b"\0" * 512


def uncompressed_aligned(work: Path) -> bytes:
    tar = small_mixed_tar(work)
    return tar + b"\0" * (-len(tar) % SMALL_SPAN)  # zero padding after the end marker is legal


ZTOC_CASES: list[ZtocCase] = [
    ZtocCase("all-types", "every entry type, whiteouts, empty files, V7 typeflag, raw mode with type bits (USTAR)",
             with_gzip(all_types_tar), spans=(SMALL_SPAN, DEFAULT_SPAN)),
    ZtocCase("unclean-names", "absolute and .. names (upstream stores them verbatim)", with_gzip(unclean_names_tar)),
    ZtocCase("pax", "PAX: xattrs (binary value), LIBARCHIVE records, long path/linkpath, sub-second and "
             "pre-1970 mtime, big ids, UTF-8 names", with_gzip(pax_tar, level=9)),
    ZtocCase("gnu-long", "GNU long names and long links, base-256 ids, mtime -1 and year 10000",
             with_gzip(gnu_long_tar)),
    ZtocCase("ustar-prefix", "USTAR prefix/name split", with_gzip(ustar_prefix_tar)),
    ZtocCase("spans-level9", "files crossing span boundaries, gzip -9", with_gzip(spans_tar, level=9),
             spans=(SMALL_SPAN, 100_000, DEFAULT_SPAN)),
    ZtocCase("spans-level1", "same tar, gzip -1", with_gzip(spans_tar, level=1), spans=(SMALL_SPAN,)),
    ZtocCase("spans-level0", "same tar, stored blocks only (gzip level 0)", with_gzip(spans_tar, level=0),
             spans=(SMALL_SPAN,)),
    ZtocCase("span-zero", "span size 0: a checkpoint at every deflate block boundary (tiny blocks, memLevel 1)",
             with_gzip(many_blocks_tar, level=6, mem_level=1), spans=(0, SMALL_SPAN)),
    ZtocCase("gzip-header-fields", "gzip header with FEXTRA, FNAME, FCOMMENT and FHCRC: checkpoint 0 is not at 10",
             with_gzip(small_mixed_tar, fname=b"layer.tar", comment=b"made by make_vectors",
                       extra=b"AB\x04\x00soci", header_crc=True, mtime=MTIME), spans=(SMALL_SPAN, 0)),
    ZtocCase("multi-member", "five gzip members (one empty, one split inside a tar header), mixed levels",
             multi_member, spans=(SMALL_SPAN, 0, DEFAULT_SPAN)),
    ZtocCase("pigz", "pigz -9 with 32 KiB blocks: one member, sync-flush block structure",
             lambda w: pigz(spans_tar(w), "-9", "-b", "32", "-p", "2"), spans=(SMALL_SPAN, DEFAULT_SPAN)),
    ZtocCase("pigz-independent", "pigz -i (independent blocks)",
             lambda w: pigz(spans_tar(w), "-6", "-i", "-b", "64", "-p", "2"), spans=(SMALL_SPAN,)),
    ZtocCase("gnutar-gnu", "GNU tar --format=gnu: ./ names, ././@LongLink, 10 KiB record padding",
             with_gzip(gnutar_gnu), spans=(SMALL_SPAN, DEFAULT_SPAN)),
    ZtocCase("gnutar-posix", "GNU tar --format=posix with user xattrs", with_gzip(gnutar_posix)),
    ZtocCase("gnutar-sparse-gnu", "GNU tar --format=gnu --sparse (typeflag S)",
             with_gzip(lambda w: gnutar_sparse(w, "gnu"))),
    ZtocCase("gnutar-sparse-posix", "GNU tar --format=posix --sparse (PAX GNU.sparse records)",
             with_gzip(lambda w: gnutar_sparse(w, "posix"))),
    ZtocCase("tiny", "a single entry", with_gzip(tiny_tar), spans=(DEFAULT_SPAN,)),
    ZtocCase("empty-tar", "empty tar: just the two zero blocks", with_gzip(lambda _: EMPTY_TAR),
             spans=(DEFAULT_SPAN,)),
    ZtocCase("no-eof-marker", "tar that ends right after the last entry's data", with_gzip(no_eof_marker),
             spans=(DEFAULT_SPAN,)),
    ZtocCase("one-zero-block", "tar that ends with a single zero block", with_gzip(one_zero_block),
             spans=(DEFAULT_SPAN,)),
    ZtocCase("trailing-garbage", "zero bytes after the gzip member", gzip_then_garbage, spans=(DEFAULT_SPAN,)),
    ZtocCase("pax-global-header", "PAX global header (typeflag g): upstream rejects the layer",
             with_gzip(pax_global_header), spans=(DEFAULT_SPAN,)),
    ZtocCase("uncompressed", "plain tar layer", spans_tar, algorithm="uncompressed",
             spans=(SMALL_SPAN, DEFAULT_SPAN)),
    ZtocCase("uncompressed-aligned", "plain tar whose size is an exact multiple of the span size",
             uncompressed_aligned, algorithm="uncompressed", spans=(SMALL_SPAN,)),
    ZtocCase("uncompressed-gnutar", "plain GNU tar with record padding", gnutar_gnu, algorithm="uncompressed",
             spans=(SMALL_SPAN,)),
    ZtocCase("uncompressed-empty", "plain empty tar", lambda _: EMPTY_TAR, algorithm="uncompressed",
             spans=(DEFAULT_SPAN,)),
]  # fmt: skip


# ---------------------------------------------------------------------------------------------------------
# running upstream


def run_tool(args: Sequence[str | int | Path], *, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(a) for a in args], capture_output=True, text=True, env=TOOL_ENV, check=check)


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def write_json(path: Path, obj: Any) -> None:
    path.write_text(json.dumps(obj, indent=2, ensure_ascii=False) + "\n")


def make_ztoc_case(case: ZtocCase, out: Path, work: Path) -> None:
    layer = case.make(work)
    case_dir = out / "ztoc" / case.name
    case_dir.mkdir(parents=True)
    layer_name = "layer.tar.gz" if case.algorithm == "gzip" else "layer.tar"
    (case_dir / layer_name).write_bytes(layer)
    builds: list[dict[str, Any]] = []
    for span in case.spans:
        ztoc_name = f"ztoc-{span}.bin"
        res = run_tool(
            [BIN / "soci-golden", "ztoc", "--span-size", span, "--algorithm", case.algorithm,
             "--out", case_dir / ztoc_name, case_dir / layer_name],
            check=False,
        )  # fmt: skip
        if res.returncode != 0:
            builds.append({"span_size": span, "error": res.stderr.strip().removeprefix("soci-golden: ")})
            continue
        builds.append({"span_size": span, "ztoc": ztoc_name, "upstream": json.loads(res.stdout)})
    write_json(case_dir / "meta.json", {
        "description": case.description,
        "layer": layer_name,
        "layer_digest": sha256(layer),
        "layer_size": len(layer),
        "algorithm": case.algorithm,
        "builds": builds,
    })  # fmt: skip
    status = ", ".join(f"{b['span_size']}: {'error' if 'error' in b else b['upstream']['max_span_id'] + 1}"
                       for b in builds)  # fmt: skip
    print(f"ztoc/{case.name}: {len(layer)} bytes; spans per span size: {status}")


# ---------------------------------------------------------------------------------------------------------
# OCI image layouts for convert / create

MT_OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MT_OCI_INDEX = "application/vnd.oci.image.index.v1+json"
MT_OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
MT_OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
MT_OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
MT_DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
MT_DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
MT_DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
MT_DOCKER_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"
MT_DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar"


def compact(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


@dataclass
class Layout:
    """An OCI image layout under construction."""

    root: Path
    blobs: dict[str, bytes] = field(default_factory=dict)

    def add(self, data: bytes) -> dict[str, Any]:
        d = sha256(data)
        self.blobs[d] = data
        return {"digest": d, "size": len(data)}

    def write(self, index: dict[str, Any]) -> None:
        (self.root / "blobs" / "sha256").mkdir(parents=True)
        (self.root / "oci-layout").write_bytes(b'{"imageLayoutVersion":"1.0.0"}')
        for d, data in self.blobs.items():
            (self.root / "blobs" / "sha256" / d.removeprefix("sha256:")).write_bytes(data)
        (self.root / "index.json").write_bytes(compact(index))


def layer_tar(prefix: str, seed: int, sizes: Sequence[int], *, xattr: bool = False) -> bytes:
    entries = [entry(f"{prefix}/", tarfile.DIRTYPE, mode=0o755)]
    for i, size in enumerate(sizes):
        make = random_data if i % 2 else text_data
        pax = {"SCHILY.xattr.user.k": "v"} if xattr and i == 0 else None
        entries.append(entry(f"{prefix}/file{i}", data=make(seed + i, size), pax=pax))
    return build_tar(entries, tarfile.PAX_FORMAT if xattr else tarfile.GNU_FORMAT)


def image(
    layout: Layout, layers: Sequence[tuple[str, bytes, bytes]], *, arch: str, variant: str = "", docker: bool = False
) -> dict[str, Any]:
    """Add config, layers and a manifest; ``layers`` are (media type, blob, tar). Returns the manifest descriptor."""
    platform: dict[str, Any] = {"architecture": arch, "os": "linux"}
    if variant:
        platform["variant"] = variant
    config = {
        **platform,
        "config": {"Env": ["PATH=/usr/bin"], "Cmd": ["/bin/sh"]},
        "rootfs": {"type": "layers", "diff_ids": [sha256(tar) for _, _, tar in layers]},
        "history": [{"created_by": "make_vectors.py"}],
    }
    manifest = {
        "schemaVersion": 2,
        "mediaType": MT_DOCKER_MANIFEST if docker else MT_OCI_MANIFEST,
        "config": {"mediaType": MT_DOCKER_CONFIG if docker else MT_OCI_CONFIG, **layout.add(compact(config))},
        "layers": [{"mediaType": mt, **layout.add(blob)} for mt, blob, _ in layers],
    }
    if not docker:
        manifest["annotations"] = {"org.opencontainers.image.title": "golden"}
    desc = {"mediaType": manifest["mediaType"], **layout.add(compact(manifest))}
    return {**desc, "platform": platform}


def layers_set(seed: int, *, docker: bool = False, xattr: bool = False) -> list[tuple[str, bytes, bytes]]:
    big = layer_tar(f"l{seed}a", seed, [60_000, 40_000, 30_000], xattr=xattr)
    plain = layer_tar(f"l{seed}b", seed + 10, [20_000, 5_000])
    tiny = layer_tar(f"l{seed}c", seed + 20, [100])
    gz_mt, tar_mt = (MT_DOCKER_LAYER_GZIP, MT_DOCKER_LAYER) if docker else (MT_OCI_LAYER_GZIP, MT_OCI_LAYER)
    return [(gz_mt, gzip_member(big), big), (tar_mt, plain, plain), (gz_mt, gzip_member(tiny), tiny)]


def without_platform(desc: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in desc.items() if k != "platform"}


def layout_oci_single(root: Path) -> None:
    lay = Layout(root)
    desc = image(lay, layers_set(1), arch="amd64")
    lay.write({"schemaVersion": 2, "mediaType": MT_OCI_INDEX, "manifests": [
        {**without_platform(desc), "annotations": {"org.opencontainers.image.ref.name": "latest"}}]})  # fmt: skip


def layout_docker_single(root: Path) -> None:
    lay = Layout(root)
    desc = image(lay, layers_set(2, docker=True, xattr=True)[:2], arch="arm64", variant="v8", docker=True)
    lay.write({"schemaVersion": 2, "manifests": [without_platform(desc)]})


def layout_docker_list(root: Path) -> None:
    lay = Layout(root)
    amd = image(lay, layers_set(3, docker=True), arch="amd64", docker=True)
    arm = image(lay, layers_set(3, docker=True)[:1], arch="arm64", variant="v8", docker=True)
    lst = {"schemaVersion": 2, "mediaType": MT_DOCKER_LIST, "manifests": [amd, arm]}
    lst_desc = {"mediaType": MT_DOCKER_LIST, **lay.add(compact(lst))}
    lay.write({"schemaVersion": 2, "mediaType": MT_OCI_INDEX, "manifests": [lst_desc]})


def layout_oci_partial(root: Path) -> None:
    """A nested OCI index one of whose children is missing (as after a single-platform pull)."""
    lay = Layout(root)
    amd = image(lay, layers_set(4), arch="amd64")
    arm = image(lay, layers_set(4)[:2], arch="arm64", variant="v8")
    s390 = image(lay, layers_set(4)[:1], arch="s390x")
    del lay.blobs[s390["digest"]]
    idx = {"schemaVersion": 2, "mediaType": MT_OCI_INDEX, "manifests": [amd, arm, s390]}
    idx_desc = {"mediaType": MT_OCI_INDEX, **lay.add(compact(idx))}
    lay.write({"schemaVersion": 2, "mediaType": MT_OCI_INDEX, "manifests": [idx_desc]})


@dataclass
class LayoutCase:
    name: str
    description: str
    make: Callable[[Path], None]
    convert_args: Sequence[str] | None = None
    create_args: Sequence[str] | None = None


LAYOUT_CASES: list[LayoutCase] = [
    LayoutCase("oci-single", "OCI manifest, gzip + tar + too-small gzip layer, ref-name annotation in index.json",
               layout_oci_single,
               convert_args=["--span-size", "65536", "--min-layer-size", "10000"],
               create_args=["--span-size", "65536", "--min-layer-size", "10000", "--platform", "linux/amd64"]),
    LayoutCase("docker-single", "Docker schema 2 manifest (arm64/v8), xattr optimization, default span",
               layout_docker_single,
               convert_args=["--min-layer-size", "0", "--optimizations", "xattr"],
               create_args=["--min-layer-size", "0", "--optimizations", "xattr", "--platform", "linux/arm64/v8"]),
    LayoutCase("docker-list", "Docker manifest list (amd64, arm64/v8) nested in index.json, --all-platforms",
               layout_docker_list,
               convert_args=["--span-size", "65536", "--min-layer-size", "10000", "--all-platforms"]),
    LayoutCase("oci-partial", "nested OCI index with a missing child manifest, one explicit platform",
               layout_oci_partial,
               convert_args=["--span-size", "65536", "--min-layer-size", "10000", "--platform", "linux/amd64"]),
]  # fmt: skip


def layout_blobs(root: Path) -> dict[str, bytes]:
    return {"sha256:" + p.name: p.read_bytes() for p in sorted((root / "blobs" / "sha256").iterdir())}


def make_layout_case(case: LayoutCase, out: Path, work: Path) -> None:
    case_dir = out / "layout" / case.name
    src = case_dir / "src"
    case.make(src)
    src_blobs = layout_blobs(src)
    meta: dict[str, Any] = {"description": case.description, "src": "src"}

    if case.convert_args is not None:
        dst = work / f"{case.name}-converted"
        res = run_tool([BIN / "soci", "--root", work / f"{case.name}-root", "convert", "--standalone",
                        "--format", "oci-dir", *case.convert_args, src, dst])  # fmt: skip
        expected = case_dir / "convert"
        expected.mkdir()
        shutil.copyfile(dst / "index.json", expected / "index.json")
        out_blobs = layout_blobs(dst)
        new = {d: b for d, b in out_blobs.items() if d not in src_blobs}
        for d, b in new.items():
            (expected / d.removeprefix("sha256:")).write_bytes(b)
        meta["convert"] = {
            "args": list(case.convert_args),
            "expected": "convert",
            "output_blobs": sorted(out_blobs),
            "new_blobs": sorted(new),
            "messages": sorted(res.stdout.splitlines()),  # layers are indexed in parallel: order varies
        }
        print(f"layout/{case.name}: convert wrote {len(new)} new blobs")

    if case.create_args is not None:
        created = work / f"{case.name}-created"
        res = run_tool([BIN / "soci-golden", "create", *case.create_args, src, created])
        expected = case_dir / "create"
        expected.mkdir()
        shutil.copyfile(created / "index-manifest.json", expected / "index-manifest.json")
        blobs = layout_blobs(created)
        for d, b in blobs.items():
            (expected / d.removeprefix("sha256:")).write_bytes(b)
        info = json.loads(res.stdout)
        meta["create"] = {
            "args": list(case.create_args),
            "expected": "create",
            "index_descriptor": info["descriptor"],
            "image_manifest": info["manifest"],
            "blobs": sorted(blobs),
            "messages": sorted(res.stderr.splitlines()),
        }
        print(f"layout/{case.name}: create wrote index {info['descriptor']['digest']}")
    write_json(case_dir / "meta.json", meta)


# ---------------------------------------------------------------------------------------------------------


def tool_versions() -> dict[str, Any]:
    golden = json.loads(run_tool([BIN / "soci-golden", "version"]).stdout)
    go = subprocess.run(["/usr/local/go/bin/go", "version"], capture_output=True, text=True).stdout.strip()
    cli = run_tool([BIN / "soci", "--version"]).stdout.strip()
    return {
        "upstream": golden["upstream"],
        "upstream_cli": cli,
        "go": go,
        "zlib": "static libz.a from Debian zlib1g-dev " + zlib_dev_version(),
        "python_zlib": zlib.ZLIB_RUNTIME_VERSION,
        "tz": "UTC",
    }


def zlib_dev_version() -> str:
    res = subprocess.run(["dpkg-query", "-W", "-f", "${Version}", "zlib1g-dev"], capture_output=True, text=True)
    return res.stdout.strip() or "(unknown version)"


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT, help="vector directory (replaced)")
    ap.add_argument("--no-build", action="store_true", help="do not run interop/build.sh first")
    args = ap.parse_args(argv)

    if not args.no_build:
        subprocess.run([str(HERE / "build.sh"), "soci-golden", "soci"], check=True)
    out: Path = args.out
    for sub in ("ztoc", "layout"):
        shutil.rmtree(out / sub, ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)

    with tempfile.TemporaryDirectory(prefix="soci-vectors-") as tmp:
        work = Path(tmp)
        for i, case in enumerate(ZTOC_CASES):
            case_work = work / f"z{i}"
            case_work.mkdir()
            make_ztoc_case(case, out, case_work)
        for i, lcase in enumerate(LAYOUT_CASES):
            case_work = work / f"l{i}"
            case_work.mkdir()
            make_layout_case(lcase, out, case_work)

    write_json(out / "versions.json", tool_versions())
    total = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    print(f"wrote {out} ({total / 1e6:.2f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Synthetic layers for the lazy filesystem tests: every tar entry type, built with ``tarfile``."""

from __future__ import annotations

import gzip
import hashlib
import io
import random
import tarfile
from dataclasses import dataclass
from pathlib import Path

from soci.formats.ztoc import Ztoc
from soci.formats.ztoc_codec import marshal_ztoc
from soci.index.ztoc_builder import build_ztoc

SPAN_SIZE = 65536
MTIME = 1_700_000_000


@dataclass(frozen=True)
class BuiltLayer:
    tar: bytes
    blob: bytes
    ztoc: Ztoc
    ztoc_bytes: bytes

    @property
    def digest(self) -> str:
        return "sha256:" + hashlib.sha256(self.blob).hexdigest()

    @property
    def ztoc_digest(self) -> str:
        return "sha256:" + hashlib.sha256(self.ztoc_bytes).hexdigest()


class TarWriter:
    """Small wrapper so test layers read as a list of entries."""

    def __init__(self) -> None:
        self._buf = io.BytesIO()
        self._tar = tarfile.open(fileobj=self._buf, mode="w", format=tarfile.PAX_FORMAT)  # noqa: SIM115 (closed by finish)

    def _info(self, name: str, kind: bytes, mode: int, **extra: object) -> tarfile.TarInfo:
        info = tarfile.TarInfo(name)
        info.type = kind
        info.mode = mode
        info.mtime = int(extra.pop("mtime", MTIME))  # type: ignore[call-overload]
        info.uid = int(extra.pop("uid", 0))  # type: ignore[call-overload]
        info.gid = int(extra.pop("gid", 0))  # type: ignore[call-overload]
        info.uname = str(extra.pop("uname", ""))
        info.gname = str(extra.pop("gname", ""))
        pax: dict[str, str] = dict(extra.pop("pax", {}))  # type: ignore[call-overload]
        xattrs: dict[str, str] = dict(extra.pop("xattrs", {}))  # type: ignore[call-overload]
        for key, text in xattrs.items():
            pax[f"SCHILY.xattr.{key}"] = text
        info.pax_headers = pax
        for key, attribute in extra.items():
            setattr(info, key, attribute)
        return info

    def dir(self, name: str, mode: int = 0o755, **extra: object) -> None:
        self._tar.addfile(self._info(name, tarfile.DIRTYPE, mode, **extra))

    def file(self, name: str, data: bytes = b"", mode: int = 0o644, **extra: object) -> None:
        info = self._info(name, tarfile.REGTYPE, mode, **extra)
        info.size = len(data)
        self._tar.addfile(info, io.BytesIO(data))

    def symlink(self, name: str, target: str, **extra: object) -> None:
        self._tar.addfile(self._info(name, tarfile.SYMTYPE, 0o777, linkname=target, **extra))

    def hardlink(self, name: str, target: str, **extra: object) -> None:
        self._tar.addfile(self._info(name, tarfile.LNKTYPE, 0o644, linkname=target, **extra))

    def device(self, name: str, kind: str, major: int, minor: int, mode: int = 0o600) -> None:
        type_flag = tarfile.CHRTYPE if kind == "char" else tarfile.BLKTYPE
        self._tar.addfile(self._info(name, type_flag, mode, devmajor=major, devminor=minor))

    def fifo(self, name: str, mode: int = 0o644) -> None:
        self._tar.addfile(self._info(name, tarfile.FIFOTYPE, mode))

    def finish(self) -> bytes:
        self._tar.close()
        return self._buf.getvalue()


def compressible(rng: random.Random, size: int) -> bytes:
    words = [b"alpha ", b"beta ", b"gamma\n", b"delta ", b"lorem ipsum dolor "]
    return b"".join(rng.choice(words) for _ in range(size // 5 + 1))[:size]


def every_entry_type_tar(seed: int = 1) -> bytes:
    """One layer with every entry type the filesystem must present (soci-format.md §3.5)."""
    rng = random.Random(seed)
    w = TarWriter()
    w.dir("./", mode=0o755, mtime=MTIME - 10)
    w.dir("etc", mtime=MTIME - 5)
    w.file("etc/hostname", b"lazy\n", pax={"mtime": "1700000000.123456789"})
    w.file("etc/empty", b"")
    w.file("etc/shadow", b"root:*:1::::::\n", mode=0o640, gid=42)
    w.dir("usr")
    w.dir("usr/bin")
    w.file("usr/bin/su", rng.randbytes(3000), mode=0o4755)
    w.file("usr/bin/wall", rng.randbytes(100), mode=0o2755, gid=5)
    w.dir("tmp", mode=0o1777)
    # files crossing span boundaries (span 64 KiB): incompressible and compressible
    w.file("data/random.bin", rng.randbytes(300_000))
    w.file("data/text.txt", compressible(rng, 900_000), uid=1000, gid=1000)
    w.file("data/small", rng.randbytes(70_000))
    # long and non-ASCII names
    long_dir = "deep/" + "/".join(f"level-{i:02d}-{'x' * 20}" for i in range(6))
    w.file(long_dir + "/" + "n" * 200 + ".txt", b"long name\n")
    w.file("ünïcødé/файл-文件.txt", "grüße\n".encode())
    w.file("names/with space and 'quotes'", b"q")
    # hard link chain: b -> a, c -> b (a name that is itself a hard link)
    w.file("links/a", b"shared content\n" * 100, mode=0o600, uid=7)
    w.hardlink("links/b", "links/a")
    w.hardlink("links/c", "links/b")
    w.hardlink("links/other-dir-name", "links/a")
    # symlinks: relative, absolute, dangling, to a directory
    w.symlink("links/rel", "a")
    w.symlink("links/abs", "/etc/hostname")
    w.symlink("links/dangling", "../nowhere/at/all")
    w.symlink("usr/lib", "usr/bin")
    # devices and fifos
    w.dir("dev")
    w.device("dev/null", "char", 1, 3, mode=0o666)
    w.device("dev/sda", "block", 8, 0, mode=0o660)
    w.fifo("dev/initctl", mode=0o600)
    # xattrs (user, trusted, security namespaces)
    w.file("xattr/file", b"x", xattrs={"user.color": "blue", "trusted.note": "t", "user.empty": ""})
    w.dir("xattr/dir", xattrs={"user.dirattr": "yes"})
    # whiteouts and an opaque directory (as a diff layer carries them)
    w.file("removed/.wh.gone", b"")
    w.dir("opaque", mode=0o750)
    w.file("opaque/.wh..wh..opq", b"")
    w.file("opaque/kept", b"new content\n")
    w.file(".wh.old-top-level", b"")
    # a repeated directory entry changes the attributes of the first
    w.dir("repeat", mode=0o700, uid=3)
    w.file("repeat/inside", b"i")
    w.dir("repeat", mode=0o711, uid=4, mtime=MTIME + 99)
    # big uid/gid and old/new times
    w.file("owners/big-ids", b"b", uid=2_000_000_000, gid=65534, mtime=0)
    w.file("owners/future", b"f", pax={"mtime": "4102444800.5"})
    w.file("owners/before-1970", b"p", pax={"mtime": "-86400.25"})  # EROFS stores it as u64, the kernel as s64
    w.file("owners/max-ids", b"m", uid=4294967294, gid=4294967294)
    return w.finish()


def build_layer(tar: bytes, *, span_size: int = SPAN_SIZE, level: int = 6) -> BuiltLayer:
    blob = gzip.compress(tar, compresslevel=level, mtime=0)
    ztoc = build_ztoc(io.BytesIO(blob), span_size=span_size, algorithm="gzip")
    return BuiltLayer(tar=tar, blob=blob, ztoc=ztoc, ztoc_bytes=marshal_ztoc(ztoc))


def build_plain_layer(tar: bytes, *, span_size: int = SPAN_SIZE) -> BuiltLayer:
    """An uncompressed (plain tar) layer: fixed-size spans."""
    ztoc = build_ztoc(io.BytesIO(tar), span_size=span_size, algorithm="uncompressed")
    return BuiltLayer(tar=tar, blob=tar, ztoc=ztoc, ztoc_bytes=marshal_ztoc(ztoc))


def upper_layer_tar() -> bytes:
    """A layer on top of ``every_entry_type_tar``: deletes, makes a directory opaque, replaces and adds."""
    rng = random.Random(2)
    w = TarWriter()
    w.dir("etc")
    w.file("etc/.wh.shadow", b"")  # delete a file
    w.file("etc/hostname", b"upper\n", mtime=1_800_000_000)  # replace a file
    w.file("data/.wh.small", b"")
    w.dir("usr", mode=0o750)  # attributes of a lower directory change
    w.dir("usr/bin")
    w.file("usr/bin/.wh..wh..opq", b"")  # hide everything below from the lower layer
    w.file("usr/bin/new-tool", compressible(rng, 200_000), mode=0o755)
    w.file(".wh.deep", b"")  # remove a whole lower directory tree
    w.file("links/.wh.b", b"")  # remove one name of a hard-link group
    w.dir("fresh/sub", mode=0o700, uid=12)
    w.file("fresh/sub/file", rng.randbytes(90_000))
    return w.finish()


def build_from_blob(path: Path, span_size: int = 1 << 20) -> BuiltLayer:
    blob = path.read_bytes()
    with path.open("rb") as f:
        ztoc = build_ztoc(f, span_size=span_size, algorithm="gzip")
    return BuiltLayer(tar=b"", blob=blob, ztoc=ztoc, ztoc_bytes=marshal_ztoc(ztoc))

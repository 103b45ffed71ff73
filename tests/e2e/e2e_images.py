"""Small runnable test images: a shell from the host plus layers that exercise overlay semantics.

Layer 1 (base): ``/bin/sh`` (dash) with its libc and loader, ``/etc/greeting``, a symlink, a hard link,
a set-uid file, an xattr, a device node, files later deleted or hidden. Layer 2 (big, mostly random
bytes): many files, a whiteout and an opaque directory. Layer 3 (small): overrides ``/etc/greeting``.
Each seed gives different bytes, so chain IDs (and snapshots) are never shared between tests.
"""

from __future__ import annotations

import io
import random
import subprocess
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from click.testing import CliRunner

from soci.cli.main import cli
from soci.testing.images import Layer, gzip_layer, write_oci_layout
from soci.testing.registry_server import RegistryServer

HOST_FILES = {
    "bin/sh": Path("/usr/bin/dash"),
    "lib/x86_64-linux-gnu/libc.so.6": Path("/lib/x86_64-linux-gnu/libc.so.6").resolve(),
    "lib64/ld-linux-x86-64.so.2": Path("/lib64/ld-linux-x86-64.so.2").resolve(),
}
SCRIPT = 'while read line; do echo "$line"; done < /etc/greeting; [ -e /data/remove-me.txt ] || echo removed-ok'
EXPECTED_OUTPUT = ["hello from layer 3", "removed-ok"]


class _TarWriter:
    def __init__(self) -> None:
        self.buffer = io.BytesIO()
        self.tar = tarfile.open(fileobj=self.buffer, mode="w", format=tarfile.PAX_FORMAT)  # noqa: SIM115 - closed by close()

    def _info(self, name: str, kind: bytes, mode: int) -> tarfile.TarInfo:
        info = tarfile.TarInfo(name)
        info.type = kind
        info.mode = mode
        info.mtime = 1_700_000_000
        return info

    def dir(self, name: str, mode: int = 0o755) -> None:
        self.tar.addfile(self._info(name, tarfile.DIRTYPE, mode))

    def file(self, name: str, data: bytes, mode: int = 0o644, pax: dict[str, str] | None = None) -> None:
        info = self._info(name, tarfile.REGTYPE, mode)
        info.size = len(data)
        if pax:
            info.pax_headers = dict(pax)
        self.tar.addfile(info, io.BytesIO(data))

    def symlink(self, name: str, target: str) -> None:
        info = self._info(name, tarfile.SYMTYPE, 0o777)
        info.linkname = target
        self.tar.addfile(info)

    def hardlink(self, name: str, target: str) -> None:
        info = self._info(name, tarfile.LNKTYPE, 0o644)
        info.linkname = target
        self.tar.addfile(info)

    def chardev(self, name: str, major: int, minor: int) -> None:
        info = self._info(name, tarfile.CHRTYPE, 0o666)
        info.devmajor, info.devminor = major, minor
        self.tar.addfile(info)

    def close(self) -> bytes:
        self.tar.close()
        return self.buffer.getvalue()


def base_layer(seed: int) -> Layer:
    w = _TarWriter()
    for d in ("bin", "lib", "lib/x86_64-linux-gnu", "lib64", "etc", "data", "data/old", "dev"):
        w.dir(d)
    w.dir("tmp", 0o1777)
    for name, source in HOST_FILES.items():
        w.file(name, source.read_bytes(), 0o755)
    w.file("etc/greeting", b"hello from layer 1\n")
    w.file("etc/seed", f"{seed}\n".encode())
    w.symlink("etc/greeting-link", "greeting")
    w.hardlink("etc/greeting-hard", "etc/greeting")
    w.file("bin/suid-tool", b"#!/bin/sh\n", 0o4755)
    w.file("data/xattr.txt", b"labelled\n", pax={"SCHILY.xattr.user.soci-test": "yes"})
    w.file("data/remove-me.txt", b"deleted by layer 2\n")
    w.file("data/old/hidden.txt", b"hidden by the opaque dir of layer 2\n")
    w.chardev("dev/null-copy", 1, 3)
    return gzip_layer(w.close())


def big_layer(seed: int, megabytes: int = 4) -> Layer:
    rng = random.Random(seed)
    w = _TarWriter()
    w.dir("data")
    w.dir("data/old")
    w.file("data/.wh.remove-me.txt", b"")
    w.file("data/old/.wh..wh..opq", b"")
    w.file("data/old/visible.txt", b"the only file left in data/old\n")
    w.dir("opt")
    w.dir("opt/app")
    remaining = megabytes << 20
    index = 0
    while remaining > 0:
        size = min(remaining, rng.choice([700, 5_000, 60_000, 300_000]))
        data = rng.randbytes(size) if index % 3 else (b"compressible " * (size // 13 + 1))[:size]
        w.file(f"opt/app/file-{seed}-{index}.bin", data, rng.choice([0o644, 0o755, 0o600]))
        remaining -= size
        index += 1
    return gzip_layer(w.close())


def top_layer(seed: int) -> Layer:
    w = _TarWriter()
    w.dir("etc")
    w.file("etc/greeting", b"hello from layer 3\n")
    w.file("etc/motd", f"image seed {seed}\n".encode())
    return gzip_layer(w.close())


def image_layers(seed: int) -> list[Layer]:
    return [base_layer(seed), big_layer(seed), top_layer(seed)]


@dataclass(frozen=True)
class BuiltImage:
    ref: str
    layers: list[Layer]


def push_image(registry: RegistryServer, workdir: Path, repo: str, tag: str, seed: int) -> BuiltImage:
    """Build the three-layer image for ``seed`` and push it with skopeo."""
    layers = image_layers(seed)
    layout = workdir / f"layout-{repo.replace('/', '-')}-{tag}"
    write_oci_layout(layout, layers)
    ref = f"{registry.host}/{repo}:{tag}"
    subprocess.run(
        ["skopeo", "copy", "--quiet", "--dest-tls-verify=false", f"oci:{layout}:latest", f"docker://{ref}"],
        check=True,
    )
    return BuiltImage(ref, layers)


def soci(root: Path, *args: str) -> str:
    """Run the ``soci`` CLI in-process; fail with its output on a non-zero exit."""
    result = CliRunner().invoke(cli, ["--root", str(root), *args])
    assert result.exit_code == 0, result.output
    return result.output


def convert(root: Path, src: BuiltImage, dst_tag: str, min_layer_size: int = 0, span_size: int = 0) -> BuiltImage:
    """``soci convert --remote``: a SOCI-enabled (v2) copy of ``src`` under ``dst_tag`` (``span_size`` 0: the
    default)."""
    dst = src.ref.rsplit(":", 1)[0] + ":" + dst_tag
    spans = ["--span-size", str(span_size)] if span_size else []
    soci(root, "convert", "--remote", "--plain-http", "--min-layer-size", str(min_layer_size), *spans, src.ref, dst)
    return BuiltImage(dst, src.layers)


def create_and_push_v1(root: Path, image: BuiltImage) -> str:
    """A v1 SOCI index for ``image`` (referrers fallback tag); returns the index digest."""
    output = soci(root, "create", "--remote", "--plain-http", "--min-layer-size", "0", image.ref)
    soci(root, "push", "--plain-http", image.ref)
    listed = soci(root, "index", "list", "--ref", image.ref)
    digests = [line.split()[0] for line in listed.splitlines()[1:] if line.strip()]
    assert digests, output + listed
    return digests[0]


def walk_tree(root: Path) -> Iterator[tuple[str, tuple[object, ...]]]:
    """Every entry below ``root`` with what must match between two snapshotters' views of one image."""
    import hashlib
    import os
    import stat

    for directory, dirs, files in os.walk(root):
        dirs.sort()
        for name in sorted(dirs + files):
            path = Path(directory) / name
            st = os.lstat(path)
            relative = str(path.relative_to(root))
            kind = stat.S_IFMT(st.st_mode)
            detail: object = None
            if stat.S_ISREG(st.st_mode):
                detail = hashlib.sha256(path.read_bytes()).hexdigest()
            elif stat.S_ISLNK(st.st_mode):
                detail = os.readlink(path)
            elif stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
                detail = (os.major(st.st_rdev), os.minor(st.st_rdev))
            xattrs: tuple[tuple[str, bytes], ...] = ()
            if not stat.S_ISLNK(st.st_mode):
                names = [a for a in os.listxattr(path, follow_symlinks=False) if a.startswith("user.")]
                xattrs = tuple(sorted((a, os.getxattr(path, a, follow_symlinks=False)) for a in names))
            mtime = st.st_mtime_ns if not stat.S_ISDIR(st.st_mode) else None
            size = 0 if stat.S_ISDIR(st.st_mode) else st.st_size
            yield relative, (kind, stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, size, detail, xattrs, mtime)

"""Deterministic synthetic layers and OCI image layouts for tests and benchmarks."""

from __future__ import annotations

import gzip
import io
import json
import random
import tarfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from soci.formats.digest import sha256_digest
from soci.formats.oci import (
    MEDIA_TYPE_OCI_CONFIG,
    MEDIA_TYPE_OCI_LAYER_GZIP,
    MEDIA_TYPE_OCI_MANIFEST,
    Descriptor,
    Index,
    Manifest,
)
from soci.store.content import ContentStore


@dataclass(frozen=True)
class Layer:
    """A layer blob with its media type and the uncompressed tar (the diff ID source)."""

    blob: bytes
    tar: bytes
    media_type: str = MEDIA_TYPE_OCI_LAYER_GZIP

    def descriptor(self) -> Descriptor:
        return Descriptor(self.media_type, sha256_digest(self.blob), len(self.blob))


def random_tree_tar(seed: int, files: int = 200, max_size: int = 200_000) -> bytes:
    """A PAX tar of directories, files (random and compressible), symlinks and hard links."""
    rng = random.Random(seed)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        dirs = ["etc", "usr", "usr/lib", "usr/share/doc", "opt/app"]
        for d in dirs:
            info = tarfile.TarInfo(d)
            info.type = tarfile.DIRTYPE
            info.mode = 0o755
            info.mtime = 1_700_000_000
            tar.addfile(info)
        regular: list[str] = []
        for i in range(files):
            name = f"{rng.choice(dirs)}/file-{seed}-{i}.{rng.choice(['so', 'py', 'txt', 'bin'])}"
            size = int(rng.paretovariate(1.2) * 500) % max_size
            if rng.random() < 0.5:
                data = rng.randbytes(size)
            else:
                words = [b"alpha", b"beta", b"gamma", b"delta\n", b"lorem ipsum "]
                data = b"".join(rng.choice(words) for _ in range(size // 5 + 1))[:size]
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = rng.choice([0o644, 0o755, 0o4755, 0o600])
            info.uid = rng.choice([0, 1000])
            info.gid = rng.choice([0, 1000])
            info.mtime = 1_700_000_000 + i
            tar.addfile(info, io.BytesIO(data))
            regular.append(name)
        for i in range(files // 20):
            info = tarfile.TarInfo(f"usr/lib/link-{seed}-{i}")
            info.type = tarfile.SYMTYPE
            info.linkname = rng.choice(regular)
            tar.addfile(info)
            info = tarfile.TarInfo(f"opt/app/hard-{seed}-{i}")
            info.type = tarfile.LNKTYPE
            info.linkname = rng.choice(regular)
            tar.addfile(info)
    return buf.getvalue()


def gzip_layer(tar: bytes, level: int = 6) -> Layer:
    return Layer(blob=gzip.compress(tar, compresslevel=level, mtime=0), tar=tar)


def write_oci_layout(
    path: Path,
    layers: Sequence[Layer],
    *,
    tag: str = "latest",
    arch: str = "amd64",
    cmd: Sequence[str] = ("/bin/sh",),
) -> Descriptor:
    """Write a single-manifest OCI image layout; return the manifest descriptor."""
    store = ContentStore(path)
    store.ensure_layout()
    config = {
        "architecture": arch,
        "os": "linux",
        "config": {"Cmd": list(cmd)},
        "rootfs": {"type": "layers", "diff_ids": [sha256_digest(layer.tar) for layer in layers]},
    }
    config_data = json.dumps(config, separators=(",", ":")).encode()
    config_desc = Descriptor(MEDIA_TYPE_OCI_CONFIG, store.write_blob(config_data), len(config_data))
    for layer in layers:
        store.write_blob(layer.blob)
    manifest = Manifest(
        schema_version=2,
        media_type=MEDIA_TYPE_OCI_MANIFEST,
        config=config_desc,
        layers=tuple(layer.descriptor() for layer in layers),
    )
    data = manifest.marshal()
    desc = Descriptor(
        MEDIA_TYPE_OCI_MANIFEST,
        store.write_blob(data),
        len(data),
        annotations={"org.opencontainers.image.ref.name": tag},
    )
    (path / "index.json").write_bytes(Index(schema_version=2, manifests=(desc,)).marshal())
    return desc
